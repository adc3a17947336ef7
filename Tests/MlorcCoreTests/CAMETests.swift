import XCTest
@testable import MlorcCore

/// CAME: dense against the double-precision reference, low-rank at full rank
/// against dense, the weights of a low-rank step against the uncompressed
/// moment, training, the state size, and the error contract.
final class CAMETests: XCTestCase {
    func optimizer(_ settings: [ParamKey: Double] = [:]) throws -> Optimizer {
        let opt = Optimizer(rule: .came)
        for (key, value) in settings { try opt.hyper.set(key, value, rule: .came) }
        return opt
    }

    func reference(_ opt: Optimizer, rows: Int, cols: Int) -> ReferenceCAME {
        var ref = ReferenceCAME(rows: rows, cols: cols)
        let h = opt.hyper
        (ref.beta1, ref.beta2, ref.beta3) = (h.beta1, h.beta2, h.beta3)
        (ref.eps1, ref.eps2, ref.clip, ref.weightDecay) = (h.eps, h.eps2, h.cameClip, h.weightDecay)
        return ref
    }

    /// r, c, R, C (R and C empty for a vector) as the state holds them.
    func statistics(_ t: TestTensor) -> (r: [Double], c: [Double], bigR: [Double], bigC: [Double]) {
        let h = t.header
        return t.state.withUnsafeBytes { raw in
            let p = raw.baseAddress!.advanced(by: StateFormat.headerBytes).assumingMemoryBound(to: Float.self)
                + h.floatsPerMoment
            let read = { (o: Int, count: Int) in (0..<count).map { Double(p[o + $0]) } }
            let vector = h.rows == 1 || h.cols == 1
            return (read(0, h.rows), read(h.rows, h.cols),
                    vector ? [] : read(h.rows + h.cols, h.rows), vector ? [] : read(2 * h.rows + h.cols, h.cols))
        }
    }

    func relativeDiff(_ a: [Double], _ b: [Double]) -> Double {
        let scale = max(b.map(abs).max() ?? 0, 1e-300)
        return maxAbsDiff(a, b) / scale
    }

    func testDefaultsAndKeys() throws {
        let opt = try optimizer()
        XCTAssertEqual(opt.hyper.value(.beta1), 0.9)
        XCTAssertEqual(opt.hyper.value(.beta2), 0.999)
        XCTAssertEqual(opt.hyper.value(.beta3), 0.9999)
        XCTAssertEqual(opt.hyper.value(.eps), 1e-30)
        XCTAssertEqual(opt.hyper.value(.eps2), 1e-16)
        XCTAssertEqual(opt.hyper.value(.cameClip), 1)
        XCTAssertEqual(opt.hyper.value(.weightDecay), 0)
        for key in [ParamKey.biasCorrection, .adoptClip, .grams, .atan2, .cautious, .orthograd, .clipNorm,
                    .galoreScale, .galoreInterval] {
            XCTAssertNil(Hyperparameters.bounds(rule: .came, key: key), "\(key)")
        }
        for key in [ParamKey.beta3, .eps2, .cameClip] {
            // β3 is shared with Prodigy (its statistics' EMA).
            for rule in RuleKind.allCases where rule != .came && !(key == .beta3 && rule == .prodigy) {
                XCTAssertNil(Hyperparameters.bounds(rule: rule, key: key), "\(key) \(rule)")
            }
        }
        XCTAssertThrowsError(try opt.hyper.set(.cameClip, 0, rule: .came))
        XCTAssertThrowsError(try opt.hyper.set(.beta3, 1, rule: .came))
    }

    /// Dense CAME against the fp64 reference, on matrices, a row and a column
    /// vector, with clipping active (d = 1: RMS(u) starts near 1/√(1−β2) ≈ 32)
    /// and inactive (d = 1e3), with and without weight decay.
    func testDenseMatchesReference() throws {
        let cases: [(rows: Int, cols: Int, settings: [ParamKey: Double])] = [
            (17, 13, [:]),
            (9, 40, [.cameClip: 1e3, .weightDecay: 0.1]),
            (1, 37, [:]),
            (29, 1, [.weightDecay: 0.1]),
            (6, 6, [.beta1: 0.5, .beta2: 0.9, .beta3: 0.99, .eps: 1e-8, .eps2: 1e-6]),
        ]
        for c in cases {
            let opt = try optimizer(c.settings)
            var rng = TestRandom(UInt64(c.rows * 131 + c.cols))
            let w0 = rng.matrix(c.rows * c.cols)
            let t = try TestTensor(opt, rows: c.rows, cols: c.cols, id: 1, storage: .dense, param: w0)
            var ref = reference(opt, rows: c.rows, cols: c.cols)
            var w = w0.map(Double.init)
            for index in 0..<60 {
                // Gradients whose scale changes over time: the second moment
                // lags, so the clipping and the confidence factor both act.
                let g = rng.matrix(c.rows * c.cols, scale: index % 20 < 10 ? 1 : 0.01)
                t.grad = g
                try step(opt, [t], lr: 1e-3)
                ref.step(&w, g, lr: 1e-3)
            }
            let label = "\(c.rows)x\(c.cols) \(c.settings)"
            let moved = zip(w, w0).map { abs($0 - Double($1)) }.max()!, size = w.map(abs).max()!
            // fp32 against fp64: each step's update carries a few ulp (~1e-6
            // relative), and each fp32 weight write rounds by up to half an
            // ulp of |w| (6e-8·|w|): over 60 steps 1e-5 of the distance moved
            // plus 60·6e-8·|w|. (Measured: 2.5e-7 and 1.1e-6 on the vectors,
            // whose weights move least relative to their size.)
            XCTAssertLessThan(maxAbsDiff(t.param.map(Double.init), w), 1e-5 * moved + 60 * 6e-8 * size, label)
            XCTAssertLessThan(relativeDiff(t.moment(0), ref.m), 1e-5, label)
            let s = statistics(t)
            if c.rows == 1 {
                XCTAssertLessThan(relativeDiff(s.c, ref.v), 1e-5, label)
            } else if c.cols == 1 {
                XCTAssertLessThan(relativeDiff(s.r, ref.v), 1e-5, label)
            } else {
                XCTAssertLessThan(relativeDiff(s.r, ref.r), 1e-5, label)
                XCTAssertLessThan(relativeDiff(s.c, ref.c), 1e-5, label)
                XCTAssertLessThan(relativeDiff(s.bigR, ref.bigR), 1e-5, label)
                XCTAssertLessThan(relativeDiff(s.bigC, ref.bigC), 1e-5, label)
            }
        }
    }

    /// At rank min(m, n) the randomized SVD is exact: low-rank CAME is dense
    /// CAME up to the rounding of the factorisation.
    func testFullRankLowRankMatchesDense() throws {
        for (rows, cols, q) in [(12, 8, 0), (8, 12, 1), (10, 10, 0)] {
            let opt = try optimizer([.rank: Double(min(rows, cols)), .powerIterations: Double(q)])
            var rng = TestRandom(UInt64(rows * 7 + cols))
            let w0 = rng.matrix(rows * cols)
            let low = try TestTensor(opt, rows: rows, cols: cols, id: 5, storage: .lowRank, param: w0)
            let dense = try TestTensor(opt, rows: rows, cols: cols, id: 6, storage: .dense, param: w0)
            XCTAssertEqual(low.header.storage, .lowRank)
            for _ in 0..<50 {
                let g = rng.matrix(rows * cols)
                low.grad = g
                dense.grad = g
                try step(opt, [low, dense], lr: 1e-3)
            }
            let label = "\(rows)x\(cols) q=\(q)"
            let moved = zip(dense.param, w0).map { abs(Double($0) - Double($1)) }.max()!
            XCTAssertLessThan(relativeDiff(low.moment(0), dense.moment(0)), 1e-4, label)
            XCTAssertLessThan(maxAbsDiff(low.param, dense.param), Float(1e-3 * moved), label)
            let a = statistics(low), b = statistics(dense)
            XCTAssertLessThan(relativeDiff(a.bigR, b.bigR), 1e-3, label)
            XCTAssertEqual(a.r, b.r, label)  // r, c do not depend on the moment
        }
    }

    /// At low rank, one step's weights follow the *uncompressed* new moment
    /// (built from the stored factors and G in fp64), as in MLorc-AdamW, and
    /// the stored factors are the randomized SVD of that moment with the
    /// step's Ω (the materialising oracle), with and without power iterations.
    func testLowRankStepMatchesTheMaterialisingOracle() throws {
        for (rows, cols, rank, p, q) in [(37, 23, 3, 2, 0), (23, 37, 4, 0, 1), (40, 36, 8, 0, 0)] {
            let opt = try optimizer([.rank: Double(rank), .oversampling: Double(p), .powerIterations: Double(q),
                                     .weightDecay: 0.05, .seed: 99])
            var rng = TestRandom(UInt64(rows * 1000 + cols))
            let t = try TestTensor(opt, rows: rows, cols: cols, id: 3, storage: .lowRank, param: rng.matrix(rows * cols))
            for _ in 0..<5 { t.grad = rng.matrix(rows * cols); try step(opt, [t], lr: 1e-3) }
            var ref = reference(opt, rows: rows, cols: cols)
            ref.m = t.moment(0)
            let s = statistics(t)
            (ref.r, ref.c, ref.bigR, ref.bigC) = (s.r, s.c, s.bigR, s.bigC)
            var w = t.param.map(Double.init)
            let w0 = w, header = t.header
            let g = rng.matrix(rows * cols)
            t.grad = g
            try step(opt, [t], lr: 1e-3)
            ref.step(&w, g, lr: 1e-3)
            let label = "\(rows)x\(cols) r=\(rank) p=\(p) q=\(q)"
            let moved = zip(w, w0).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(maxAbsDiff(t.param.map(Double.init), w), 1e-4 * moved, label)

            let l = min(rank + p, min(rows, cols))
            var omega = [Float](repeating: 0, count: l * cols)
            SketchGenerator(seed: 99, tensorID: 3, step: header.step + 1).fillNormals(&omega, count: omega.count)
            let oracle = MaterialisingOracle(rows: rows, cols: cols, rank: rank, sketchWidth: l, powerIterations: q)
            let compressed = oracle.compress(ref.m, omega: omega)
            // fp32 sums of ~cols terms and fp32 LAPACK against fp64 (the
            // streaming MLorc test measures ~1e-6 of the scale; 2e-5 as there).
            XCTAssertLessThan(relativeDiff(t.moment(0), compressed), 2e-5, label)
            // ... and it is a real compression: not the uncompressed moment.
            XCTAssertGreaterThan(relativeDiff(t.moment(0), ref.m), 1e-3, label)
        }
    }

    func testStateSizeFollowsTheFormula() throws {
        let opt = try optimizer([.rank: 4])
        func bytes(_ rows: Int, _ cols: Int, _ storage: StorageRequest) throws -> Int {
            try opt.stateSize(TensorLayout(rows: Int64(rows), cols: Int64(cols), storage: storage.rawValue))
        }
        // Low-rank: r(m+n+1) for the moment, 2(m+n) for r, c, R, C.
        XCTAssertEqual(try bytes(256, 128, .auto), 128 + 4 * (4 * (256 + 128 + 1) + 2 * (256 + 128)))
        XCTAssertEqual(try bytes(64, 48, .lowRank), 128 + 4 * (4 * (64 + 48 + 1) + 2 * (64 + 48)))
        // Dense: mn + 2(m+n); vectors keep r and c only.
        XCTAssertEqual(try bytes(12, 12, .auto), 128 + 4 * (144 + 2 * 24))
        XCTAssertEqual(try bytes(1, 1000, .auto), 128 + 4 * (1000 + 1001))
        XCTAssertEqual(try bytes(1000, 1, .auto), 128 + 4 * (1000 + 1001))
        let t = try TestTensor(opt, rows: 64, cols: 48, id: 0, storage: .auto)
        XCTAssertEqual(t.header.storage, .lowRank)
        XCTAssertEqual(t.state.count, try bytes(64, 48, .lowRank))
    }

    /// Multi-output least squares (the problem of Tests/c/train_test.c):
    /// y = W*x + b* with W* (64x48) of rank 3; loss 1/(2N) Σ |Wx + b − y|².
    struct LeastSquares {
        static let (n, inputs, outputs) = (128, 48, 64)
        var x: [Float], y: [Float]

        init() {
            var rng = TestRandom(2024)
            let u = rng.matrix(Self.outputs * 3), v = rng.matrix(Self.inputs * 3, scale: 0.5)
            let bias = rng.matrix(Self.outputs)
            x = rng.matrix(Self.n * Self.inputs)
            y = [Float](repeating: 0, count: Self.n * Self.outputs)
            for k in 0..<Self.n { for i in 0..<Self.outputs {
                var sum = Double(bias[i])
                for j in 0..<Self.inputs {
                    let w = (0..<3).reduce(0.0) { $0 + Double(u[i * 3 + $1]) * Double(v[j * 3 + $1]) }
                    sum += w * Double(x[k * Self.inputs + j])
                }
                y[k * Self.outputs + i] = Float(sum)
            } }
        }

        /// The loss; fills gw, gb when given.
        func loss(_ w: [Float], _ b: [Float], _ gw: inout [Float], _ gb: inout [Float]) -> Double {
            let (n, din, dout) = (Self.n, Self.inputs, Self.outputs)
            var total = 0.0
            var rw = [Double](repeating: 0, count: dout * din), rb = [Double](repeating: 0, count: dout)
            for k in 0..<n { for i in 0..<dout {
                var p = Double(b[i])
                for j in 0..<din { p += Double(w[i * din + j]) * Double(x[k * din + j]) }
                let r = p - Double(y[k * dout + i])
                total += r * r
                rb[i] += r
                for j in 0..<din { rw[i * din + j] += r * Double(x[k * din + j]) }
            } }
            gw = rw.map { Float($0 / Double(n)) }
            gb = rb.map { Float($0 / Double(n)) }
            return total / Double(2 * n)
        }
    }

    func train(_ storage: StorageRequest, lr: Double, steps: Int) throws -> (initial: Double, final: Double) {
        let problem = LeastSquares()
        let opt = try optimizer([.rank: 4])
        var rng = TestRandom(77)
        let w = try TestTensor(opt, rows: 64, cols: 48, id: 1, storage: storage, param: rng.matrix(64 * 48, scale: 0.1))
        let b = try TestTensor(opt, rows: 1, cols: 64, id: 2, storage: .auto)
        XCTAssertEqual(w.header.storage, storage == .lowRank ? .lowRank : .dense)
        var gw: [Float] = [], gb: [Float] = []
        let initial = problem.loss(w.param, b.param, &gw, &gb)
        for s in 0..<steps {
            _ = problem.loss(w.param, b.param, &gw, &gb)
            w.grad = gw
            b.grad = gb
            // Linear warm-up over 10 steps, then cosine decay to 5%.
            let rate = s < 10 ? lr * Double(s + 1) / 10
                : lr * (0.05 + 0.95 * 0.5 * (1 + cos(Double.pi * Double(s - 10) / Double(steps - 10))))
            try step(opt, [w, b], lr: rate)
        }
        return (initial, problem.loss(w.param, b.param, &gw, &gb))
    }

    func testLeastSquaresTrains() throws {
        for storage in [StorageRequest.dense, .lowRank] {
            let (initial, final) = try train(storage, lr: 0.02, steps: 120)
            print("CAME \(storage) least squares: initial \(initial), final \(final), ratio \(final / initial)")
            XCTAssertTrue(final.isFinite)
            // Measured final/initial after 120 steps: 1.3e-5 dense, 8.3e-6 at
            // rank 4; weights stuck at their init give 1, a bias-only fit ~0.8.
            XCTAssertLessThan(final, 1e-3 * initial, "\(storage)")
        }
    }

    // MARK: contract

    func batch(_ opt: Optimizer, seed: UInt64) throws -> [TestTensor] {
        var rng = TestRandom(seed)
        let tensors = [try TestTensor(opt, rows: 40, cols: 36, id: 0, param: rng.matrix(40 * 36)),
                       try TestTensor(opt, rows: 1, cols: 36, id: 1, param: rng.matrix(36)),
                       try TestTensor(opt, rows: 36, cols: 40, id: 2, storage: .dense, param: rng.matrix(36 * 40)),
                       try TestTensor(opt, rows: 300, cols: 250, id: 3, storage: .dense, param: rng.matrix(300 * 250))]
        XCTAssertEqual(tensors[0].header.storage, .lowRank)
        return tensors
    }

    func fillGradients(_ tensors: [TestTensor], _ rng: inout TestRandom) {
        for t in tensors { t.grad = rng.matrix(t.rows * t.cols) }
    }

    func testRefusedStepsChangeNothing() throws {
        let opt = try optimizer([.oversampling: 2, .powerIterations: 1])
        let tensors = try batch(opt, seed: 3)
        var rng = TestRandom(4)
        fillGradients(tensors, &rng)
        try step(opt, tensors, lr: 1e-3)
        fillGradients(tensors, &rng)
        func refused(_ code: MlorcError.Code, lr: Double = 1e-3, _ label: String) {
            let params = tensors.map(\.param), states = tensors.map(\.state)
            XCTAssertThrowsError(try step(opt, tensors, lr: lr), label) { error in
                XCTAssertEqual((error as? MlorcError)?.code, code, "\(label): \(error)")
            }
            XCTAssertEqual(tensors.map(\.param), params, label)
            XCTAssertEqual(tensors.map(\.state), states, label)
        }
        for (index, value) in [(0, Float.nan), (1, .infinity), (2, -.infinity), (3, .nan), (3, 1e20), (0, 3e38)] {
            let saved = tensors[index].grad[7]
            tensors[index].grad[7] = value
            refused(.nonFinite, "tensor \(index) gradient \(value)")
            tensors[index].grad[7] = saved
        }
        refused(.invalidArgument, lr: .nan, "lr NaN")
        refused(.invalidArgument, lr: -1, "lr -1")
        // Zero statistics (ε1 = 0 and an all-zero row at the first step) would
        // divide 0 by 0: refused, not stepped into NaN.
        let zeroEps = try optimizer([.eps: 0])
        let fresh = try TestTensor(zeroEps, rows: 4, cols: 5, id: 9, storage: .dense)
        fresh.grad = (0..<20).map { $0 < 5 ? 0 : 1 }
        let state = fresh.state
        XCTAssertThrowsError(try step(zeroEps, [fresh], lr: 1e-3))
        XCTAssertEqual(fresh.state, state)
        // And the batch still steps after all that.
        try step(opt, tensors, lr: 1e-3)
    }

    /// Zero gradients with the default ε1, ε2: the statistics stay positive
    /// (ε1·(1−β2) = 1e-33 is a normal float), nothing is refused, no NaN, and
    /// only weight decay moves the weights.
    func testZeroGradientsGiveNoNaN() throws {
        let opt = try optimizer([.weightDecay: 0.1])
        var rng = TestRandom(8)
        for (rows, cols, storage) in [(48, 36, StorageRequest.lowRank), (7, 5, .dense), (1, 9, .dense)] {
            let initial = rng.matrix(rows * cols)
            let t = try TestTensor(opt, rows: rows, cols: cols, id: 1, storage: storage, param: initial)
            for _ in 0..<4 { try step(opt, [t], lr: 1e-2) }
            let rate = Float(1e-2 * 0.1)  // w ← w − (lr·λ)·w, four times, in float
            XCTAssertEqual(t.param, initial.map { w in (0..<4).reduce(w) { x, _ in x - rate * x } }, "\(rows)x\(cols)")
            XCTAssertTrue(t.moment(0).allSatisfy { $0 == 0 })
            let s = statistics(t)
            XCTAssertTrue((s.r + s.c + s.bigR + s.bigC).allSatisfy { $0 > 0 && $0.isFinite })
        }
    }

    func testStatesOfOtherRulesAreRefused() throws {
        let came = try optimizer(), adamW = Optimizer(rule: .adamW)
        for storage in [StorageRequest.dense, .lowRank] {
            let mine = try TestTensor(came, rows: 20, cols: 16, id: 0, storage: storage)
            let theirs = try TestTensor(adamW, rows: 20, cols: 16, id: 0, storage: storage)
            for (opt, t) in [(came, theirs), (adamW, mine)] {
                t.grad = [Float](repeating: 0.5, count: 320)
                let state = t.state
                XCTAssertThrowsError(try step(opt, [t], lr: 1e-3)) { error in
                    XCTAssertEqual((error as? MlorcError)?.code, .stateMismatch, "\(error)")
                }
                XCTAssertEqual(t.state, state)
            }
        }
    }

    /// A batch with low-rank, vector, small and multi-chunk dense tensors:
    /// 1 and 2 threads bit-identical; resuming from copied bytes bit-exact.
    func testThreadsAndResumeAreBitExact() throws {
        func run(threads: Int, steps: Int, resumeAt: Int?) throws -> [TestTensor] {
            let settings: [ParamKey: Double] = [.threads: Double(threads), .oversampling: 2, .powerIterations: 1,
                                                .weightDecay: 0.01]
            var opt = try optimizer(settings)
            let tensors = try batch(opt, seed: 8)
            var rng = TestRandom(9)
            for s in 0..<steps {
                if s == resumeAt {
                    // A fresh handle fed the saved bytes.
                    opt = try optimizer(settings)
                    for t in tensors { t.state = Array(t.state); t.param = Array(t.param) }
                }
                fillGradients(tensors, &rng)
                try step(opt, tensors, lr: 1e-3)
            }
            return tensors
        }
        let one = try run(threads: 1, steps: 6, resumeAt: nil)
        let two = try run(threads: 2, steps: 6, resumeAt: nil)
        let resumed = try run(threads: 2, steps: 6, resumeAt: 3)
        XCTAssertEqual(CAMEStep.chunks(rows: 300, cols: 250), 2)  // the big tensor really splits
        for (i, t) in one.enumerated() {
            XCTAssertEqual(t.param, two[i].param, "tensor \(i)")
            XCTAssertEqual(t.state, two[i].state, "tensor \(i)")
            XCTAssertEqual(t.param, resumed[i].param, "tensor \(i)")
            XCTAssertEqual(t.state, resumed[i].state, "tensor \(i)")
        }
    }
}
