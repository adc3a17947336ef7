import Foundation
@testable import MlorcCore

/// MoFaSGD (arXiv 2507.08091) in double precision, written from the paper's
/// equations with full-size matrices and none of the library's algebra (no QR,
/// no 2r x 2r block matrix): with U, V the singular vectors kept from the last
/// truncation,
///   Ĝ = UUᵀG + GVVᵀ − UUᵀGVVᵀ,  M ← SVD_r(β·M + Ĝ)  (M = 0: M ← SVD_r(G)),
///   W ← W·(1 − lr·λ) − lr·Σ_a f(σ_a)·u_a v_aᵀ.
/// The truncated SVD comes from a Jacobi eigendecomposition of XᵀX.
struct ReferenceMoFaSGD {
    let rows: Int, cols: Int, rank: Int
    var beta = 0.9, eps = 1e-8, weightDecay = 0.0, reciprocal = false, maxValue = 1e4
    var momentum: [Double]
    var u: [[Double]] = [], v: [[Double]] = []  // rank columns of length rows / cols
    var t = 0

    init(rows: Int, cols: Int, rank: Int, hyper: Hyperparameters) {
        (self.rows, self.cols, self.rank) = (rows, cols, rank)
        beta = hyper.beta1; eps = hyper.eps; weightDecay = hyper.weightDecay
        reciprocal = hyper.mofasgdReciprocal; maxValue = hyper.mofasgdMaxValue
        momentum = .init(repeating: 0, count: rows * cols)
    }

    mutating func step(_ w: inout [Double], _ gf: [Float], lr: Double) {
        t += 1
        let g = gf.map(Double.init), m = rows, n = cols
        var x = g
        if momentum.contains(where: { $0 != 0 }) {  // M = 0: M' = SVD_r(G)
            // P_U G, G P_V and P_U G P_V, element by element.
            func projectLeft(_ a: [Double]) -> [Double] {
                var out = [Double](repeating: 0, count: m * n)
                for c in u {
                    for j in 0..<n {
                        var dotCol = 0.0
                        for i in 0..<m { dotCol += c[i] * a[i * n + j] }
                        for i in 0..<m { out[i * n + j] += c[i] * dotCol }
                    }
                }
                return out
            }
            func projectRight(_ a: [Double]) -> [Double] {
                var out = [Double](repeating: 0, count: m * n)
                for c in v {
                    for i in 0..<m {
                        var dotRow = 0.0
                        for j in 0..<n { dotRow += a[i * n + j] * c[j] }
                        for j in 0..<n { out[i * n + j] += dotRow * c[j] }
                    }
                }
                return out
            }
            let left = projectLeft(g), right = projectRight(g), both = projectRight(left)
            for e in x.indices { x[e] = beta * momentum[e] + left[e] + right[e] - both[e] }
        }
        let (us, sigma, vs) = Self.truncatedSVD(x, m, n, rank)
        (u, v) = (us, vs)
        momentum = .init(repeating: 0, count: m * n)
        for e in w.indices { w[e] *= 1 - lr * weightDecay }
        for a in 0..<rank {
            let f = sigma[a] <= eps ? 0 : reciprocal ? min(1 / sigma[a], maxValue) : 1
            for i in 0..<m {
                for j in 0..<n {
                    momentum[i * n + j] += us[a][i] * sigma[a] * vs[a][j]
                    w[i * n + j] -= lr * f * us[a][i] * vs[a][j]
                }
            }
        }
    }

    /// Top-`rank` singular triplets of the m x n matrix x (row-major).
    static func truncatedSVD(_ x: [Double], _ m: Int, _ n: Int, _ rank: Int) -> ([[Double]], [Double], [[Double]]) {
        var gram = [Double](repeating: 0, count: n * n)
        for p in 0..<n { for q in 0..<n {
            var sum = 0.0
            for i in 0..<m { sum += x[i * n + p] * x[i * n + q] }
            gram[p * n + q] = sum
        } }
        let oracle = MaterialisingOracle(rows: 1, cols: 1, rank: 1, sketchWidth: 1, powerIterations: 0)
        let (values, vectors) = oracle.jacobiEigen(gram, n)
        let order = (0..<n).sorted { values[$0] > values[$1] }.prefix(rank)
        var us: [[Double]] = [], sigma: [Double] = [], vs: [[Double]] = []
        for e in order {
            let v = (0..<n).map { vectors[$0 * n + e] }
            let s = max(values[e], 0).squareRoot()
            var u = (0..<m).map { i in (0..<n).reduce(0.0) { $0 + x[i * n + $1] * v[$1] } }
            let norm = u.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
            u = u.map { norm > 0 ? $0 / norm : 0 }
            us.append(u); sigma.append(s); vs.append(v)
        }
        return (us, sigma, vs)
    }
}

extension TestTensor {
    /// The MoFaSGD momentum U·diag(σ)·Vᵀ rebuilt from a low-rank state (Vᵀ row-major).
    func mofasgdMomentum() -> [Double] {
        let h = header
        return state.withUnsafeBytes { raw in
            let base = raw.baseAddress!.advanced(by: StateFormat.headerBytes).assumingMemoryBound(to: Float.self)
            if h.storage == .dense { return (0..<(rows * cols)).map { Double(base[$0]) } }
            let r = h.rank, u = base, s = base + rows * r, vt = s + r
            var out = [Double](repeating: 0, count: rows * cols)
            for i in 0..<rows { for j in 0..<cols { for a in 0..<r {
                out[i * cols + j] += Double(u[i * r + a]) * Double(s[a]) * Double(vt[a * cols + j])
            } } }
            return out
        }
    }

    /// The low-rank factors of a MoFaSGD state.
    func mofasgdFactors() -> (u: [Float], s: [Float], vt: [Float]) {
        let h = header, r = h.rank
        return state.withUnsafeBytes { raw in
            let base = raw.baseAddress!.advanced(by: StateFormat.headerBytes).assumingMemoryBound(to: Float.self)
            return (Array(UnsafeBufferPointer(start: base, count: rows * r)),
                    Array(UnsafeBufferPointer(start: base + rows * r, count: r)),
                    Array(UnsafeBufferPointer(start: base + rows * r + r, count: r * cols)))
        }
    }
}
