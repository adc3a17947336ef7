import XCTest
@testable import MlorcCore

/// A tensor with its own parameter, gradient and state buffers, for tests.
final class TestTensor {
    let rows: Int, cols: Int
    var param: [Float]
    var grad: [Float]
    var state: [UInt8]

    init(_ opt: Optimizer, rows: Int, cols: Int, id: UInt64, storage: StorageRequest = .auto,
         param initial: [Float]? = nil) throws {
        self.rows = rows
        self.cols = cols
        param = initial ?? [Float](repeating: 0, count: rows * cols)
        grad = [Float](repeating: 0, count: rows * cols)
        let layout = TensorLayout(rows: Int64(rows), cols: Int64(cols), storage: storage.rawValue)
        state = [UInt8](repeating: 0, count: try opt.stateSize(layout))
        try state.withUnsafeMutableBytes { try opt.initState(layout, tensorID: id, state: $0.baseAddress, bytes: $0.count) }
    }

    var header: StateFormat.Header {
        state.withUnsafeBytes { try! StateFormat.read($0.baseAddress!, bytes: $0.count) }
    }

    /// Moment k rebuilt as a full rows x cols matrix (from factors, or copied if dense).
    func moment(_ k: Int) -> [Double] {
        let h = header
        return state.withUnsafeBytes { raw in
            let base = raw.baseAddress!.advanced(by: StateFormat.headerBytes).assumingMemoryBound(to: Float.self)
                + k * h.floatsPerMoment
            if h.storage == .dense { return (0..<(rows * cols)).map { Double(base[$0]) } }
            let r = h.rank, u = base, s = base + rows * r, vt = base + rows * r + r
            var out = [Double](repeating: 0, count: rows * cols)
            for i in 0..<rows { for j in 0..<cols { for a in 0..<r {
                out[i * cols + j] += Double(u[i * r + a]) * Double(s[a])
                    * Double(vt[Panel.offset(row: a, col: j, rows: r, cols: cols)])
            } } }
            return out
        }
    }
}

/// Runs one step over `tensors` with their current gradients; `group` is the
/// group state of the D-adaptation rules.
func step(_ opt: Optimizer, _ tensors: [TestTensor], lr: Double,
          group: UnsafeMutableRawBufferPointer? = nil) throws {
    // The arrays' storage is pinned for the duration of the call by nesting.
    func go(_ i: Int, _ args: [TensorArgs]) throws {
        if i == tensors.count { return try opt.step(args, lr: lr, group: group?.baseAddress, groupBytes: group?.count ?? 0) }
        let t = tensors[i]
        try t.param.withUnsafeMutableBytes { p in
            try t.grad.withUnsafeBytes { g in
                try t.state.withUnsafeMutableBytes { s in
                    try go(i + 1, args + [TensorArgs(param: p.baseAddress, grad: g.baseAddress, state: s.baseAddress,
                                                     stateBytes: s.count, rows: Int64(t.rows), cols: Int64(t.cols))])
                }
            }
        }
    }
    try go(0, [])
}

/// Deterministic pseudo-random floats in [-1, 1) for test data (SplitMix64).
struct TestRandom {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> Float {
        state = state &+ 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Float(z >> 40) / Float(1 << 23) - 1
    }
    mutating func matrix(_ count: Int, scale: Float = 1) -> [Float] { (0..<count).map { _ in scale * next() } }
}

func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).map { abs($0 - $1) }.max() ?? 0
}
func maxAbsDiff(_ a: [Double], _ b: [Double]) -> Double {
    zip(a, b).map { abs($0 - $1) }.max() ?? 0
}

extension TestTensor {
    /// Overwrites moment k's low-rank factors with random ones (so the
    /// rebuilt second moment has many negative entries) and reseals the state.
    func randomizeFactors(_ k: Int, rng: inout TestRandom, scale: Float) {
        var h = header
        precondition(h.storage == .lowRank)
        state.withUnsafeMutableBytes { raw in
            let payload = raw.baseAddress!.advanced(by: StateFormat.headerBytes)
            let base = payload.assumingMemoryBound(to: Float.self) + k * h.floatsPerMoment
            // Within what the library accepts: |U|, |Vt| <= 1 and s >= 0 (not
            // orthonormal, so the rebuilt second moment has negative entries).
            for e in 0..<h.floatsPerMoment { base[e] = scale * rng.next() }
            let s = base + h.rows * h.rank
            for a in 0..<h.rank { s[a] = abs(s[a]) * 4 }
            h.payloadChecksum = Checksum.of(UnsafeRawPointer(payload), count: h.payloadBytes)
            StateFormat.write(h, to: raw.baseAddress!)
        }
    }
}
