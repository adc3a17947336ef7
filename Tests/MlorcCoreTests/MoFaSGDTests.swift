import XCTest
@testable import MlorcCore

/// MoFaSGD against the fp64 reference, its exact properties, the error
/// contract and a small training run.
final class MoFaSGDTests: XCTestCase {
    func optimizer(_ settings: [ParamKey: Double] = [:]) throws -> Optimizer {
        let opt = Optimizer(rule: .mofasgd)
        for (key, value) in settings { try opt.hyper.set(key, value, rule: .mofasgd) }
        return opt
    }

    /// A rows x cols matrix of exact rank k (A·B, inner dimension k).
    func lowRankMatrix(_ rows: Int, _ cols: Int, _ k: Int, _ rng: inout TestRandom) -> [Float] {
        let a = rng.matrix(rows * k), b = rng.matrix(k * cols)
        return (0..<(rows * cols)).map { e in (0..<k).reduce(Float(0)) { $0 + a[e / cols * k + $1] * b[$1 * cols + e % cols] } }
    }

    func compareWithReference(rows: Int, cols: Int, rank: Int, settings: [ParamKey: Double], steps: Int,
                              zeroSteps: Int = 0, file: StaticString = #filePath, line: UInt = #line) throws {
        let opt = try optimizer(settings.merging([.rank: Double(rank)]) { a, _ in a })
        var rng = TestRandom(UInt64(rows * 1000 + cols))
        let w0 = rng.matrix(rows * cols, scale: 0.5)
        let t = try TestTensor(opt, rows: rows, cols: cols, id: 5, storage: .lowRank, param: w0)
        XCTAssertEqual(t.state.count, 128 + 4 * rank * (rows + cols + 1), file: file, line: line)
        var ref = ReferenceMoFaSGD(rows: rows, cols: cols, rank: rank, hyper: opt.hyper)
        var w = w0.map(Double.init)
        var worstWeights = 0.0, worstMomentum = 0.0
        for s in 0..<steps {
            // The first non-zero gradient has rank r, so the library's randomized
            // SVD of it is exact (up to rounding); every later one is full rank.
            t.grad = s < zeroSteps ? [Float](repeating: 0, count: rows * cols)
                : s == zeroSteps ? lowRankMatrix(rows, cols, rank, &rng) : rng.matrix(rows * cols)
            try step(opt, [t], lr: 1e-2)
            ref.step(&w, t.grad, lr: 1e-2)
            worstWeights = max(worstWeights, maxAbsDiff(t.param.map(Double.init), w))
            let scale = ref.momentum.map(abs).max()!
            worstMomentum = max(worstMomentum, maxAbsDiff(t.mofasgdMomentum(), ref.momentum) / scale)
        }
        // fp32 sums over ~cols terms and fp32 LAPACK against fp64 Jacobi (random
        // data keeps the r-th and (r+1)-th singular values of β·M + Ĝ apart).
        // Measured worst over all steps and cases: weights 3.6e-7, momentum 5.9e-6
        // of its scale; the bounds leave a ~14x and ~17x margin.
        let label = "\(rows)x\(cols) r=\(rank) \(settings): weights \(worstWeights), momentum \(worstMomentum)"
        XCTAssertLessThan(worstWeights, 5e-6, label, file: file, line: line)
        XCTAssertLessThan(worstMomentum, 1e-4, label, file: file, line: line)
    }

    func testMatchesReferenceTallWideSquare() throws {
        for (rows, cols) in [(40, 24), (24, 40), (32, 32)] {
            try compareWithReference(rows: rows, cols: cols, rank: 4, settings: [:], steps: 24)
        }
    }

    func testMatchesReferenceReciprocalFormWithDecay() throws {
        // σ runs ~9-16 here: max_value 0.09 clamps 1/σ for σ < 11.1 only.
        try compareWithReference(rows: 37, cols: 21, rank: 3,
                                 settings: [.mofasgdReciprocal: 1, .mofasgdMaxValue: 0.09, .weightDecay: 0.1, .beta1: 0.95],
                                 steps: 24)
        try compareWithReference(rows: 21, cols: 37, rank: 5, settings: [.mofasgdReciprocal: 1, .oversampling: 3], steps: 20)
    }

    /// Zero gradients leave the momentum 0, which has no tangent space: the
    /// first non-zero gradient starts it as SVD_r(G), like a first step.
    func testZeroMomentumRestartsFromGradient() throws {
        try compareWithReference(rows: 30, cols: 20, rank: 3, settings: [.weightDecay: 0.1], steps: 20, zeroSteps: 2)
    }

    /// Factors stay orthonormal with sorted non-negative σ: the momentum is a
    /// rank <= r SVD at every step.
    func testFactorsStayAnSVD() throws {
        let opt = try optimizer([.rank: 5])
        var rng = TestRandom(77)
        let t = try TestTensor(opt, rows: 60, cols: 45, id: 1, param: rng.matrix(60 * 45))
        XCTAssertEqual(t.header.storage, .lowRank)
        for _ in 0..<12 {
            t.grad = rng.matrix(60 * 45)
            try step(opt, [t], lr: 1e-2)
            let (u, s, vt) = t.mofasgdFactors(), r = 5
            for a in 0..<r {
                if a > 0 { XCTAssertLessThanOrEqual(s[a], s[a - 1]) }
                XCTAssertGreaterThanOrEqual(s[a], 0)
                for b in 0..<r {
                    let uu = (0..<60).reduce(0.0) { $0 + Double(u[$1 * r + a]) * Double(u[$1 * r + b]) }
                    let vv = (0..<45).reduce(0.0) { $0 + Double(vt[a * 45 + $1]) * Double(vt[b * 45 + $1]) }
                    XCTAssertEqual(uu, a == b ? 1 : 0, accuracy: 1e-5)
                    XCTAssertEqual(vv, a == b ? 1 : 0, accuracy: 1e-5)
                }
            }
        }
    }

    /// Gradients inside one fixed rank-r subspace (G = P·X·Qᵀ): the tangent
    /// projection keeps all of G and β·M + G has rank <= r, so nothing is ever
    /// truncated. The low-rank momentum must be exactly the plain recurrence
    /// M = β·M + G, and the weights must follow the dense (full-rank) storage.
    func testFixedSubspaceGradientsAreTrackedExactly() throws {
        let rows = 48, cols = 30, r = 3
        // ε above the fp32 noise singular values of the dense momentum (~1e-6):
        // at full rank the spectral update would otherwise give them weight 1.
        let settings: [ParamKey: Double] = [.rank: Double(r), .eps: 1e-3, .weightDecay: 0.05]
        let opt = try optimizer(settings)
        var rng = TestRandom(31)
        let w0 = rng.matrix(rows * cols)
        let low = try TestTensor(opt, rows: rows, cols: cols, id: 1, storage: .lowRank, param: w0)
        let dense = try TestTensor(opt, rows: rows, cols: cols, id: 2, storage: .dense, param: w0)
        let p = rng.matrix(rows * r), q = rng.matrix(cols * r)
        var expected = [Double](repeating: 0, count: rows * cols)
        for _ in 0..<20 {
            let x = rng.matrix(r * r)
            var g = [Float](repeating: 0, count: rows * cols)
            for i in 0..<rows { for j in 0..<cols { for a in 0..<r { for b in 0..<r {
                g[i * cols + j] += p[i * r + a] * x[a * r + b] * q[j * r + b]
            } } } }
            for e in expected.indices { expected[e] = 0.9 * expected[e] + Double(g[e]) }
            low.grad = g; dense.grad = g
            try step(opt, [low, dense], lr: 1e-2)
            let scale = expected.map(abs).max()!
            XCTAssertLessThan(maxAbsDiff(low.mofasgdMomentum(), expected), 1e-5 * scale)
            XCTAssertLessThan(maxAbsDiff(dense.mofasgdMomentum(), expected), 1e-5 * scale)
        }
        XCTAssertLessThan(maxAbsDiff(low.param, dense.param), 1e-5)
    }

    /// Dense storage is MoFaSGD at full rank: the reference with r = min(m, n)
    /// (its tangent space is then the whole space: M = β·M + G, exact SVD).
    func testDenseMatchesFullRankReference() throws {
        for (rows, cols) in [(9, 14), (14, 9)] {
            let opt = try optimizer([.weightDecay: 0.02])
            var rng = TestRandom(UInt64(rows * 31 + cols))
            let w0 = rng.matrix(rows * cols)
            let t = try TestTensor(opt, rows: rows, cols: cols, id: 0, param: w0)
            XCTAssertEqual(t.header.storage, .dense)
            var ref = ReferenceMoFaSGD(rows: rows, cols: cols, rank: min(rows, cols), hyper: opt.hyper)
            var w = w0.map(Double.init)
            for _ in 0..<10 {
                t.grad = rng.matrix(rows * cols)
                try step(opt, [t], lr: 1e-2)
                ref.step(&w, t.grad, lr: 1e-2)
            }
            // fp32 LAPACK against fp64 Jacobi; the full polar factor also turns on
            // the smallest singular values. Measured: weights 6.7e-7, momentum
            // (entries of order 1) 5.2e-7; bounds leave a 15-20x margin.
            XCTAssertLessThan(maxAbsDiff(t.param.map(Double.init), w), 1e-5, "\(rows)x\(cols)")
            XCTAssertLessThan(maxAbsDiff(t.mofasgdMomentum(), ref.momentum), 1e-5, "\(rows)x\(cols)")
        }
    }

    /// A vector is a 1 x n matrix: full-rank MoFaSGD steps along M/‖M‖.
    func testVectorStepsAlongNormalisedMomentum() throws {
        let opt = try optimizer()
        var rng = TestRandom(4)
        let w0 = rng.matrix(37)
        let t = try TestTensor(opt, rows: 1, cols: 37, id: 0, param: w0)
        XCTAssertEqual(t.header.storage, .dense)
        var m = [Double](repeating: 0, count: 37), w = w0.map(Double.init)
        for _ in 0..<5 {
            t.grad = rng.matrix(37)
            try step(opt, [t], lr: 0.1)
            for e in m.indices { m[e] = 0.9 * m[e] + Double(t.grad[e]) }
            let norm = m.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
            for e in w.indices { w[e] -= 0.1 * m[e] / norm }
        }
        XCTAssertLessThan(maxAbsDiff(t.param.map(Double.init), w), 1e-6)
    }

    func testThreadsAndResumeIncludingDense() throws {
        func run(threads: Int, resumeAt: Int?) throws -> [TestTensor] {
            var opt = try optimizer([.threads: Double(threads)])
            var rng = TestRandom(12)
            let tensors = [try TestTensor(opt, rows: 301, cols: 233, id: 0, param: rng.matrix(301 * 233)),
                           try TestTensor(opt, rows: 1, cols: 70_000, id: 1, param: rng.matrix(70_000)),  // split too
                           try TestTensor(opt, rows: 5, cols: 90, id: 2, param: rng.matrix(450))]
            XCTAssertEqual(tensors.map { $0.header.storage }, [.lowRank, .dense, .dense])
            for s in 0..<4 {
                if s == resumeAt { opt = try optimizer([.threads: Double(threads)]) }  // a fresh handle
                for t in tensors { t.grad = rng.matrix(t.rows * t.cols) }
                try step(opt, tensors, lr: 1e-2)
            }
            return tensors
        }
        let one = try run(threads: 1, resumeAt: nil), two = try run(threads: 2, resumeAt: nil)
        let resumed = try run(threads: 1, resumeAt: 2)
        for k in 0..<3 {
            XCTAssertEqual(one[k].param, two[k].param)
            XCTAssertEqual(one[k].state, two[k].state)
            XCTAssertEqual(one[k].param, resumed[k].param)
            XCTAssertEqual(one[k].state, resumed[k].state)
        }
    }

    /// A refused step (non-finite gradient in any tensor, bad lr, another
    /// rule's state) leaves every weight and state byte as it was.
    func testRefusedStepsChangeNothing() throws {
        func expectRefused(_ code: MlorcError.Code, lr: Double = 1e-2, line: UInt = #line,
                           _ mutate: ([TestTensor]) throws -> Void) throws {
            let opt = try optimizer()
            var rng = TestRandom(13)
            let tensors = [try TestTensor(opt, rows: 40, cols: 36, id: 0, param: rng.matrix(40 * 36)),
                           try TestTensor(opt, rows: 1, cols: 36, id: 1, param: rng.matrix(36)),
                           try TestTensor(opt, rows: 36, cols: 40, id: 2, storage: .dense, param: rng.matrix(36 * 40))]
            for _ in 0..<2 {
                for t in tensors { t.grad = rng.matrix(t.rows * t.cols) }
                try step(opt, tensors, lr: 1e-2)
            }
            for t in tensors { t.grad = rng.matrix(t.rows * t.cols) }
            try mutate(tensors)
            let params = tensors.map(\.param), states = tensors.map(\.state)
            XCTAssertThrowsError(try step(opt, tensors, lr: lr), line: line) {
                XCTAssertEqual(($0 as? MlorcError)?.code, code, "\($0)", line: line)
            }
            XCTAssertEqual(tensors.map(\.param), params, line: line)
            XCTAssertEqual(tensors.map(\.state), states, line: line)
        }
        for index in 0..<3 {
            try expectRefused(.nonFinite) { $0[index].grad[7] = .nan }
            try expectRefused(.nonFinite) { $0[index].grad[3] = -.infinity }
            // The last element: the last row's partial chunk (36 = 4·8 + 4), which the
            // tangent-space step checks in its GV pass, not in a scan of its own.
            try expectRefused(.nonFinite) { $0[index].grad[$0[index].rows * $0[index].cols - 1] = .nan }
        }
        try expectRefused(.nonFinite) { $0[0].grad[0] = 1e20 }  // beyond the low-rank bound
        try expectRefused(.nonFinite) { $0[0].grad[40 * 36 - 1] = -1e20 }
        // A dense state near float's limit (dense payloads carry no checksum):
        // β·M + G is finite but its singular values overflow.
        try expectRefused(.nonFinite) { t in
            t[2].state.withUnsafeMutableBytes { raw in
                let m = raw.baseAddress!.advanced(by: StateFormat.headerBytes).assumingMemoryBound(to: Float.self)
                for e in 0..<(36 * 40) { m[e] = 3e38 }
            }
        }
        try expectRefused(.invalidArgument, lr: .nan) { _ in }
        try expectRefused(.invalidArgument, lr: -1) { _ in }
        try expectRefused(.stateMismatch) { t in
            t[0].state = try TestTensor(Optimizer(rule: .lion), rows: 40, cols: 36, id: 0).state
        }
        try expectRefused(.stateMismatch) { t in
            t[1].state = try TestTensor(Optimizer(rule: .adamW), rows: 1, cols: 36, id: 1).state
        }
    }

    func testStorageAndKeys() throws {
        let opt = try optimizer()
        func storage(_ r: Int64, _ c: Int64, _ s: StorageRequest = .auto) throws -> StateFormat.Storage {
            try opt.freshHeader(TensorLayout(rows: r, cols: c, storage: s.rawValue), tensorID: 0).storage
        }
        XCTAssertEqual(try storage(768, 3072), .lowRank)
        XCTAssertEqual(try storage(1, 3072), .dense)
        XCTAssertEqual(try storage(12, 12), .dense)
        XCTAssertEqual(try storage(8, 40, .lowRank), .lowRank)  // 2r = 8 = min(rows, cols)
        XCTAssertThrowsError(try storage(7, 40, .lowRank)) { XCTAssertEqual(($0 as? MlorcError)?.code, .invalidRank) }
        XCTAssertEqual(try opt.stateSize(TensorLayout(rows: 768, cols: 3072)), 128 + 4 * 4 * (768 + 3072 + 1))
        XCTAssertEqual(try opt.stateSize(TensorLayout(rows: 1, cols: 3072)), 128 + 4 * 3072)
        for key in ParamKey.allCases {
            let applies = [ParamKey.beta1, .eps, .weightDecay, .rank, .oversampling, .powerIterations, .seed, .threads,
                           .mofasgdReciprocal, .mofasgdMaxValue, .masterWeights, .stochasticRounding].contains(key)
            XCTAssertEqual(Hyperparameters.bounds(rule: .mofasgd, key: key) != nil, applies, "\(key)")
        }
        XCTAssertEqual(opt.hyper.beta1, 0.9)
        XCTAssertEqual(opt.hyper.eps, 1e-8)
        XCTAssertEqual(opt.hyper.weightDecay, 0)
        XCTAssertFalse(opt.hyper.mofasgdReciprocal)
        XCTAssertEqual(opt.hyper.mofasgdMaxValue, 1e4)
        // MoFaSGD's keys belong to no other rule.
        XCTAssertNil(Hyperparameters.bounds(rule: .adamW, key: .mofasgdReciprocal))
        XCTAssertNil(Hyperparameters.bounds(rule: .galoreAdamW, key: .mofasgdMaxValue))
    }

    /// Multi-output least squares (targets from a rank-3 teacher plus a full-rank
    /// part): a 24 x 40 weight matrix at rank 4 with a linearly decaying lr
    /// (spectrally normalised steps have a fixed length, so lr must decay).
    func testTrainsLeastSquares() throws {
        let inputs = 40, outputs = 24, samples = 96
        var rng = TestRandom(2024)
        let x = rng.matrix(samples * inputs)
        let teacher = lowRankMatrix(outputs, inputs, 3, &rng).map { $0 * 0.5 }
        func lossAndGradient(_ w: [Float], _ grad: inout [Float]) -> Double {
            var loss = 0.0
            grad = [Float](repeating: 0, count: outputs * inputs)
            for s in 0..<samples {
                for o in 0..<outputs {
                    var residual: Float = 0
                    for i in 0..<inputs { residual += (w[o * inputs + i] - teacher[o * inputs + i]) * x[s * inputs + i] }
                    loss += Double(residual * residual) / Double(2 * samples)
                    for i in 0..<inputs { grad[o * inputs + i] += residual * x[s * inputs + i] / Float(samples) }
                }
            }
            return loss
        }
        let opt = try optimizer([.rank: 4])
        let t = try TestTensor(opt, rows: outputs, cols: inputs, id: 0, storage: .lowRank)
        var grad: [Float] = []
        let initial = lossAndGradient(t.param, &grad)
        let steps = 300
        for s in 0..<steps {
            _ = lossAndGradient(t.param, &grad)
            t.grad = grad
            try step(opt, [t], lr: 0.2 * (1 - Double(s) / Double(steps)))
        }
        let final = lossAndGradient(t.param, &grad)
        XCTAssertLessThan(final, 1e-3 * initial, "initial \(initial), final \(final)")
    }
}
