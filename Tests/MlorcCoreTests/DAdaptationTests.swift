import XCTest
@testable import MlorcCore

/// Prodigy and DAdapt-Lion: the group-wide step-size estimate, against fp64
/// transcriptions of the reference implementations, and its state contract.
final class DAdaptationTests: XCTestCase {
    /// A group: tensors plus the group state bytes.
    struct Group {
        let opt: Optimizer
        var tensors: [TestTensor]
        var state: [UInt8]

        init(_ opt: Optimizer, shapes: [(Int, Int)], storage: StorageRequest, initial rng: inout TestRandom) throws {
            self.opt = opt
            tensors = try shapes.enumerated().map { i, s in
                try TestTensor(opt, rows: s.0, cols: s.1, id: UInt64(i), storage: storage,
                               param: rng.matrix(s.0 * s.1, scale: 1e-3))
            }
            state = [UInt8](repeating: 0, count: GroupState.bytes)
            try state.withUnsafeMutableBytes { try opt.initGroupState($0.baseAddress, bytes: $0.count) }
        }

        var info: GroupState { state.withUnsafeBytes { try! GroupState.read($0.baseAddress!, bytes: $0.count) } }

        mutating func step(lr: Double) throws {
            let opt = opt, tensors = tensors
            try state.withUnsafeMutableBytes { try MlorcCoreTests.step(opt, tensors, lr: lr, group: $0) }
        }

        /// Gradients of ½‖W − target‖² at the current weights.
        func setQuadraticGradients(_ targets: [[Float]]) {
            for (t, target) in zip(tensors, targets) { t.grad = zip(t.param, target).map { $0 - $1 } }
        }
    }

    static let shapes = [(12, 10), (1, 9), (7, 1)]

    func targets(_ rng: inout TestRandom) -> [[Float]] { Self.shapes.map { rng.matrix($0.0 * $0.1) } }

    func makeOptimizer(_ rule: RuleKind, stride: Int, threads: Int = 1) throws -> Optimizer {
        let opt = Optimizer(rule: rule)
        try opt.hyper.set(.statsStride, Double(stride), rule: rule)
        try opt.hyper.set(.threads, Double(threads), rule: rule)
        return opt
    }

    // MARK: agreement with the references

    /// Same gradients into the library (fp32 state) and the fp64 reference;
    /// the weights start at 1e-3 scale so that p0 − w, which the estimate's
    /// numerator is made of, is not swamped by fp32 rounding of the weights.
    /// Tolerances: d relative 1e-3 (it is a ratio of sums of ~40 rounded
    /// terms each step, compounded through max/min over 40 steps), weights
    /// 1e-4 absolute (their updates are O(d·lr) ≈ 1e-2 per step, each exact
    /// to ~1e-7 relative in fp32).
    func testProdigyDenseMatchesReference() throws {
        for (stride, weightDecay, growth) in [(1, 0.0, Double.infinity), (3, 0.1, 1.5)] {
            var rng = TestRandom(7)
            let opt = try makeOptimizer(.prodigy, stride: stride)
            try opt.hyper.set(.weightDecay, weightDecay, rule: .prodigy)
            try opt.hyper.set(.growthRate, growth, rule: .prodigy)
            var group = try Group(opt, shapes: Self.shapes, storage: .dense, initial: &rng)
            var reference = ReferenceProdigy(sizes: group.tensors.map { $0.param.count }, slice: stride)
            reference.weightDecay = weightDecay
            reference.growthRate = growth
            var w = group.tensors.map { $0.param.map(Double.init) }
            let target = targets(&rng)
            var grew = false
            for k in 0..<40 {
                group.setQuadraticGradients(target)
                reference.step(&w, group.tensors.map(\.grad), lr: 1)
                try group.step(lr: 1)
                let d = group.info.d
                XCTAssertEqual(d, reference.d, accuracy: 1e-3 * reference.d, "stride \(stride) step \(k)")
                XCTAssertEqual(group.info.dMax, reference.dMax, accuracy: 1e-3 * reference.dMax)
                XCTAssertEqual(group.info.step, UInt64(k + 1))
                grew = grew || d > 1e3 * reference.d0
            }
            XCTAssertTrue(grew, "the estimate never left d0: the test would not exercise it")
            for (t, ref) in zip(group.tensors, w) {
                XCTAssertLessThan(maxAbsDiff(t.param.map(Double.init), ref), 1e-4, "stride \(stride)")
            }
        }
    }

    func testDAdaptLionDenseMatchesReference() throws {
        for (stride, weightDecay) in [(1, 0.0), (4, 0.5)] {
            var rng = TestRandom(11)
            let opt = try makeOptimizer(.dadaptLion, stride: stride)
            try opt.hyper.set(.weightDecay, weightDecay, rule: .dadaptLion)
            var group = try Group(opt, shapes: Self.shapes, storage: .dense, initial: &rng)
            var reference = ReferenceDAdaptLion(sizes: group.tensors.map { $0.param.count }, slice: stride)
            reference.weightDecay = weightDecay
            var w = group.tensors.map { $0.param.map(Double.init) }
            let target = targets(&rng)
            for k in 0..<40 {
                group.setQuadraticGradients(target)
                reference.step(&w, group.tensors.map(\.grad), lr: 1)
                try group.step(lr: 1)
                XCTAssertEqual(group.info.d, reference.d, accuracy: 1e-3 * reference.d, "stride \(stride) step \(k)")
            }
            XCTAssertGreaterThan(reference.d, 1e3 * 1e-6, "the estimate never grew: the test would not exercise it")
            for (t, ref) in zip(group.tensors, w) {
                XCTAssertLessThan(maxAbsDiff(t.param.map(Double.init), ref), 1e-4 * max(1, reference.d * 40))
            }
        }
    }

    // MARK: storage

    /// MLorc moments at full rank hold the dense moments exactly up to the
    /// SVD's rounding, so the runs agree closely (the vectors stay dense).
    func testFullRankLowRankMatchesDense() throws {
        for rule in [RuleKind.prodigy, .dadaptLion] {
            var rng = TestRandom(3), rng2 = TestRandom(3)
            let dense = try makeOptimizer(rule, stride: 2), lowRank = try makeOptimizer(rule, stride: 2)
            try lowRank.hyper.set(.rank, 10, rule: rule)
            var a = try Group(dense, shapes: Self.shapes, storage: .dense, initial: &rng)
            var b = try Group(lowRank, shapes: Self.shapes, storage: .auto, initial: &rng2)
            b.tensors[0] = try TestTensor(lowRank, rows: 12, cols: 10, id: 0, storage: .lowRank, param: a.tensors[0].param)
            XCTAssertEqual(b.tensors[0].header.storage, .lowRank)
            let target = targets(&rng)
            for _ in 0..<15 {
                a.setQuadraticGradients(target)
                for (x, y) in zip(a.tensors, b.tensors) { y.grad = x.grad }  // same gradients
                try a.step(lr: 1)
                try b.step(lr: 1)
            }
            XCTAssertEqual(b.info.d, a.info.d, accuracy: 1e-3 * a.info.d, "\(rule)")
            XCTAssertLessThan(maxAbsDiff(a.tensors[0].param, b.tensors[0].param), 2e-3, "\(rule)")
        }
    }

    /// Low-rank Prodigy and DAdapt-Lion fit a least-squares problem, d grows
    /// from d0 on its own (no learning rate to tune: lr = 1, decayed linearly
    /// to 0 as usual with D-adaptation: sign descent needs it to settle).
    func testTrainsLeastSquares() throws {
        for rule in [RuleKind.prodigy, .dadaptLion] {
            var rng = TestRandom(5)
            let n = 32, samples = 64
            let x = rng.matrix(samples * n), truth = rng.matrix(n * n, scale: 0.3)
            let y = product(x, truth, samples, n, n)
            let opt = try makeOptimizer(rule, stride: 11)
            var group = try Group(opt, shapes: [(n, n)], storage: .auto, initial: &rng)
            XCTAssertEqual(group.tensors[0].header.storage, .lowRank)
            func loss() -> Double {
                let p = product(x, group.tensors[0].param, samples, n, n)
                return zip(p, y).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +) / Double(samples)
            }
            let initial = loss()
            let steps = 300
            for k in 0..<steps {
                // ∇ of (1/N)‖XW − Y‖²: (2/N) Xᵀ(XW − Y)
                let r = zip(product(x, group.tensors[0].param, samples, n, n), y).map { $0 - $1 }
                group.tensors[0].grad = product(transpose(x, samples, n), r, n, samples, n).map { 2 * $0 / Float(samples) }
                try group.step(lr: 1 - Double(k) / Double(steps))
            }
            let final = loss()
            XCTAssertLessThan(final, 0.05 * initial, "\(rule): loss \(initial) -> \(final)")
            XCTAssertGreaterThan(group.info.d, 1e2 * 1e-6, "\(rule)")
        }
    }

    // MARK: contract

    /// Resuming from copies of every state (tensors and group) continues bit
    /// for bit; a 2-thread handle gives the same bits as a 1-thread one.
    func testResumeAndThreadsAreBitExact() throws {
        for rule in [RuleKind.prodigy, .dadaptLion] {
            for storage in [StorageRequest.dense, .lowRank] {
                var rng = TestRandom(9), rng2 = TestRandom(9)
                let shapes = [(256, 160), (12, 16)]  // 40960 elements: split between 2 threads
                let one = try makeOptimizer(rule, stride: 3), two = try makeOptimizer(rule, stride: 3, threads: 2)
                try one.hyper.set(.rank, 3, rule: rule)
                try two.hyper.set(.rank, 3, rule: rule)
                var a = try Group(one, shapes: shapes, storage: storage, initial: &rng)
                var b = try Group(two, shapes: shapes, storage: storage, initial: &rng2)
                let target = shapes.map { rng.matrix($0.0 * $0.1) }
                for k in 0..<12 {
                    if k == 6 {  // b resumes from copies of a's states on the 2-thread handle
                        for (x, y) in zip(a.tensors, b.tensors) { y.state = x.state; y.param = x.param }
                        b.state = a.state
                    }
                    a.setQuadraticGradients(target)
                    b.setQuadraticGradients(target)
                    try a.step(lr: 0.5)
                    try b.step(lr: 0.5)
                    XCTAssertEqual(a.state, b.state, "\(rule) \(storage) step \(k)")
                    for (x, y) in zip(a.tensors, b.tensors) {
                        XCTAssertEqual(x.param, y.param)
                        XCTAssertEqual(x.state, y.state)
                    }
                }
            }
        }
    }

    func testGroupStateIsRequiredAndValidated() throws {
        var rng = TestRandom(1)
        let opt = try makeOptimizer(.prodigy, stride: 2)
        var group = try Group(opt, shapes: [(4, 5)], storage: .dense, initial: &rng)
        group.setQuadraticGradients([rng.matrix(20)])
        try group.step(lr: 1)
        let t = group.tensors[0]
        let before = (t.param, t.state, group.state)
        func unchanged(_ what: String) {
            XCTAssertEqual(t.param, before.0, what)
            XCTAssertEqual(t.state, before.1, what)
        }
        func expect(_ code: MlorcError.Code, _ what: String, _ body: () throws -> Void) {
            XCTAssertThrowsError(try body(), what) { XCTAssertEqual(($0 as? MlorcError)?.code, code, what) }
            unchanged(what)
        }
        // No group state for Prodigy; a group state for AdamW.
        expect(.nullPointer, "no group") { try MlorcCoreTests.step(opt, [t], lr: 1) }
        let adamW = Optimizer(rule: .adamW)
        var spare = [UInt8](repeating: 0, count: GroupState.bytes)
        XCTAssertThrowsError(try spare.withUnsafeMutableBytes { try adamW.initGroupState($0.baseAddress, bytes: $0.count) })
        expect(.invalidArgument, "group for AdamW") {
            try spare.withUnsafeMutableBytes { try MlorcCoreTests.step(adamW, [t], lr: 1, group: $0) }
        }
        // Every single-byte corruption of the group state is refused, changing nothing.
        for offset in [0, 8, 12, 16, 24, 40, 48, 60, 120] {
            group.state[offset] ^= 0x10
            let corrupted = group.state
            XCTAssertThrowsError(try group.step(lr: 1), "byte \(offset)")
            XCTAssertEqual(group.state, corrupted, "byte \(offset)")
            unchanged("byte \(offset)")
            group.state[offset] ^= 0x10
        }
        // Too small, and a DAdapt-Lion group state on a Prodigy handle.
        let saved = group.state
        group.state = Array(saved.prefix(100))
        expect(.stateTooSmall, "short group") { try group.step(lr: 1) }
        let lion = Optimizer(rule: .dadaptLion)
        group.state = spare
        try group.state.withUnsafeMutableBytes { try lion.initGroupState($0.baseAddress, bytes: $0.count) }
        expect(.stateMismatch, "DAdapt-Lion group") { try group.step(lr: 1) }
        // A NaN gradient: nothing changes, the group state included.
        group.state = saved
        t.grad[3] = .nan
        expect(.nonFinite, "NaN gradient") { try group.step(lr: 1) }
        XCTAssertEqual(group.state, saved)
        // The group state must not alias a tensor's buffers: a valid one inside
        // the tensor's payload is refused, changing nothing.
        t.grad[3] = 0
        var holder = t.state
        holder.replaceSubrange(128..<256, with: saved)
        let held = holder
        expect(.invalidArgument, "aliasing") {
            try t.param.withUnsafeMutableBytes { p in try t.grad.withUnsafeBytes { gr in try holder.withUnsafeMutableBytes { s in
                try opt.step([TensorArgs(param: p.baseAddress, grad: gr.baseAddress, state: s.baseAddress, stateBytes: s.count,
                                         rows: 4, cols: 5)], lr: 1, group: s.baseAddress! + 128, groupBytes: 128)
            } } }
        }
        XCTAssertEqual(holder, held)
        try group.step(lr: 1)
        XCTAssertEqual(group.info.step, 2)
    }

    /// The statistics follow the moments: Prodigy 2·⌈N/k⌉ floats, DAdapt-Lion ⌈N/k⌉.
    func testStateSizes() throws {
        for (rule, per) in [(RuleKind.prodigy, 2), (.dadaptLion, 1)] {
            let opt = try makeOptimizer(rule, stride: 11)
            let dense = try opt.stateSize(TensorLayout(rows: 30, cols: 20, storage: StorageRequest.dense.rawValue))
            XCTAssertEqual(dense, 128 + 4 * (rule.momentCount * 600 + per * 55))
            let lowRank = try opt.stateSize(TensorLayout(rows: 30, cols: 20, storage: StorageRequest.lowRank.rawValue))
            XCTAssertEqual(lowRank, 128 + 4 * (rule.momentCount * 4 * 51 + per * 55))
        }
    }
}

/// Row-major (a x b)·(b x c).
func product(_ x: [Float], _ y: [Float], _ a: Int, _ b: Int, _ c: Int) -> [Float] {
    var out = [Float](repeating: 0, count: a * c)
    for i in 0..<a { for k in 0..<b { let xik = x[i * b + k]; for j in 0..<c { out[i * c + j] += xik * y[k * c + j] } } }
    return out
}

func transpose(_ x: [Float], _ rows: Int, _ cols: Int) -> [Float] {
    var out = [Float](repeating: 0, count: rows * cols)
    for i in 0..<rows { for j in 0..<cols { out[j * rows + i] = x[i * cols + j] } }
    return out
}
