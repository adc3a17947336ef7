import XCTest
@testable import MlorcCore

/// GaLore-AdamW against a double-precision implementation written from the
/// paper that takes its projection from an exact eigendecomposition of GGᵀ
/// (or GᵀG): singular vectors are unique up to sign when the singular values
/// differ, and both fix the sign the same way (the moments carry over a
/// refresh, so the sign matters), so both must agree.
final class GaLoreTests: XCTestCase {
    func run(rows: Int, cols: Int, rank: Int, gradientRank: Int?, steps: Int) throws {
        let opt = Optimizer(rule: .galoreAdamW)
        try opt.hyper.set(.rank, Double(rank), rule: .galoreAdamW)
        try opt.hyper.set(.galoreInterval, 3, rule: .galoreAdamW)
        try opt.hyper.set(.oversampling, 2, rule: .galoreAdamW)
        var rng = TestRandom(UInt64(rows * 100 + cols))
        let w0 = rng.matrix(rows * cols, scale: 0.5)
        let t = try TestTensor(opt, rows: rows, cols: cols, id: 2, storage: .lowRank, param: w0)
        XCTAssertEqual(t.state.count, 128 + 4 * rank * (min(rows, cols) + 2 * max(rows, cols)))
        var ref = ReferenceGaLore(rows: rows, cols: cols, rank: rank, interval: 3, hyper: opt.hyper)
        var w = w0.map(Double.init)
        for _ in 0..<steps {
            var g = rng.matrix(rows * cols)
            if let k = gradientRank {  // G = A·B with inner dimension k: rank k exactly
                let a = rng.matrix(rows * k), b = rng.matrix(k * cols)
                g = (0..<(rows * cols)).map { e in (0..<k).reduce(Float(0)) { $0 + a[e / cols * k + $1] * b[$1 * cols + e % cols] } }
            }
            t.grad = g
            try step(opt, [t], lr: 1e-2)
            ref.step(&w, g, lr: 1e-2)
        }
        // fp32 randomized SVD against fp64 eigenvectors: the projection agrees to
        // ~1e-6, so the weights (travel ~lr·steps·α) to well below 1e-4.
        XCTAssertLessThan(maxAbsDiff(t.param.map(Double.init), w), 1e-4, "\(rows)x\(cols) r=\(rank)")
    }

    func testFullRankLeftAndRight() throws {
        try run(rows: 6, cols: 14, rank: 6, gradientRank: nil, steps: 10)   // m <= n: left projection
        try run(rows: 14, cols: 6, rank: 6, gradientRank: nil, steps: 10)   // m > n: right projection
    }

    func testLowRankGradientIsCapturedExactly() throws {
        try run(rows: 20, cols: 33, rank: 3, gradientRank: 3, steps: 10)
        try run(rows: 33, cols: 20, rank: 3, gradientRank: 3, steps: 10)
    }
}

struct ReferenceGaLore {
    let rows: Int, cols: Int, rank: Int, interval: Int
    let hyper: Hyperparameters
    var p: [[Double]] = []  // rank vectors of length min(rows, cols)
    var m: [Double], v: [Double], t = 0

    init(rows: Int, cols: Int, rank: Int, interval: Int, hyper: Hyperparameters) {
        self.rows = rows; self.cols = cols; self.rank = rank; self.interval = interval; self.hyper = hyper
        m = .init(repeating: 0, count: rank * max(rows, cols)); v = m
    }

    mutating func step(_ w: inout [Double], _ gf: [Float], lr: Double) {
        t += 1
        let g = gf.map(Double.init), left = rows <= cols, s = min(rows, cols), long = max(rows, cols)
        func G(_ i: Int, _ j: Int) -> Double { g[i * cols + j] }
        if (t - 1) % interval == 0 {
            // Gram matrix of the short side, its top eigenvectors.
            var gram = [Double](repeating: 0, count: s * s)
            for x in 0..<s { for y in 0..<s {
                var sum = 0.0
                for k in 0..<long { sum += left ? G(x, k) * G(y, k) : G(k, x) * G(k, y) }
                gram[x * s + y] = sum
            } }
            let oracle = MaterialisingOracle(rows: 1, cols: 1, rank: 1, sketchWidth: 1, powerIterations: 0)
            let (values, vectors) = oracle.jacobiEigen(gram, s)
            p = (0..<s).sorted { values[$0] > values[$1] }.prefix(rank).map { e in
                let vector = (0..<s).map { vectors[$0 * s + e] }
                // The library's sign convention: largest entry positive.
                let largest = vector.max { abs($0) < abs($1) }!
                return largest < 0 ? vector.map { -$0 } : vector
            }
        }
        // R (rank x long) = PᵀG or (G P)ᵀ.
        var r = [Double](repeating: 0, count: rank * long)
        for a in 0..<rank { for k in 0..<long {
            var sum = 0.0
            for x in 0..<s { sum += p[a][x] * (left ? G(x, k) : G(k, x)) }
            r[a * long + k] = sum
        } }
        let (b1, b2) = (hyper.beta1, hyper.beta2)
        let bc1 = 1 - pow(b1, Double(t)), bc2 = 1 - pow(b2, Double(t))
        var d = [Double](repeating: 0, count: rank * long)
        for e in r.indices {
            m[e] = b1 * m[e] + (1 - b1) * r[e]
            v[e] = b2 * v[e] + (1 - b2) * r[e] * r[e]
            d[e] = hyper.galoreScale * lr / bc1 * m[e] / ((v[e] / bc2).squareRoot() + hyper.eps)
        }
        for i in 0..<rows { for j in 0..<cols {
            var update = 0.0
            for a in 0..<rank { update += left ? p[a][i] * d[a * long + j] : d[a * long + i] * p[a][j] }
            w[i * cols + j] = w[i * cols + j] * (1 - lr * hyper.weightDecay) - update
        } }
    }
}
