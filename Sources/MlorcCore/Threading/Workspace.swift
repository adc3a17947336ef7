#if canImport(Glibc)
import Glibc
#endif

/// Scratch memory owned by an optimizer handle: one growable, 64-byte aligned
/// buffer per purpose, reused across steps (contents are not preserved when a
/// buffer grows). Allocation failure is reported, never trapped.
struct Workspace {
    enum Slot: Int, CaseIterable {
        case tau, lapackWork, lapackIWork
        case sketches      // per-tensor sketches kept from pass 1 to pass 2 of a batch
        case omega         // the random test matrix (l x cols panel)
        case staging       // row-major copies of panels for the generator and LAPACK
        case gradSketch    // GΩ of the tensor being sketched (rows x l)
        case projectionSketch // the sketch of an explicit operator (RandomizedSVD.explicit)
        case panels        // per-moment l x cols accumulators (B = QᵀA, or AᵀQ)
        case svdLeft, svdRight, svdValues
        case threadScratch // per-thread accumulators
        case factorResults // factors computed in prepare and written in commit (per-tensor regions)
        case columnPartials // per-chunk column sums (chunks x cols, or chunks x l x cols)
        case reductions    // the buffer of a sharded step's reduction (fp64)
    }

    private var buffers = [UnsafeMutableRawPointer?](repeating: nil, count: Slot.allCases.count)
    private var capacities = [Int](repeating: 0, count: Slot.allCases.count)

    /// Total bytes currently held.
    var bytes: Int { capacities.reduce(0, +) }

    /// At least `count` bytes for `slot`; nil if memory ran out.
    mutating func raw(_ slot: Slot, _ count: Int) throws(MlorcError) -> UnsafeMutableRawPointer {
        let i = slot.rawValue
        if capacities[i] >= count, let p = buffers[i] { return p }
        free(buffers[i])
        buffers[i] = nil
        capacities[i] = 0
        var p: UnsafeMutableRawPointer?
        let size = max(64, (count + 63) & ~63)
        guard posix_memalign(&p, 64, size) == 0, let p else {
            throw MlorcError(.outOfMemory, "could not allocate \(size) bytes of scratch")
        }
        buffers[i] = p
        capacities[i] = size
        return p
    }

    mutating func floats(_ slot: Slot, _ count: Int) throws(MlorcError) -> UnsafeMutablePointer<Float> {
        try raw(slot, 4 * count).assumingMemoryBound(to: Float.self)
    }

    mutating func ints(_ count: Int) throws(MlorcError) -> UnsafeMutablePointer<Int32> {
        try raw(.lapackIWork, 4 * count).assumingMemoryBound(to: Int32.self)
    }

    func release() {
        for p in buffers { free(p) }
    }
}
