import CVectorMath

/// How far ahead of its loads a streaming pass prefetches each stream it
/// reads: 1 KiB, 16 cache lines. The low-rank passes hold ~100 instructions
/// per 8-column chunk, so the out-of-order window covers only a few chunks
/// and a DRAM miss the hardware prefetcher has not hidden stalls the pass;
/// the hint overlaps those misses with the arithmetic (docs/architecture.md,
/// "Software prefetch": 1 KiB measured best of 1, 4 and 16 KiB).
let prefetchDistanceBytes = 1024

extension ElementKind {
    /// Bytes of one element.
    var byteWidth: Int { self == .f32 ? 4 : 2 }

    /// Prefetches the stream of this element type at p, a fixed distance
    /// ahead of element e (a hint: never faults past the buffer's end).
    @_transparent
    func prefetch(_ p: UnsafeRawPointer, _ e: Int) {
        mlorc_prefetch(p + (e &* byteWidth &+ prefetchDistanceBytes))
    }
}

/// Prefetches the fp32 stream at p, a fixed distance ahead of element e.
@_transparent
func prefetchF32(_ p: UnsafeRawPointer, _ e: Int) {
    mlorc_prefetch(p + (e &* 4 &+ prefetchDistanceBytes))
}
