import Foundation
@testable import MlorcCore

/// The plain materialising MLorc step in double precision, kept only as a
/// test oracle for the streaming passes: it builds the full moments, runs the
/// randomized SVD on them (same sketch matrix Ω) and returns the new weights
/// and the rank-r moments. QR is modified Gram–Schmidt and the truncation uses
/// an eigendecomposition of BBᵀ, so the oracle shares no linear algebra with
/// the library; it compares projectors and products, which are independent
/// of the sign and basis choices of either.
struct MaterialisingOracle {
    let rows: Int, cols: Int, rank: Int, sketchWidth: Int, powerIterations: Int

    typealias Matrix = [Double]  // row-major rows x cols

    /// prev: previous moments (rebuilt), g: gradient, w: weights, omega: l x cols row-major.
    /// `rule` maps (prev moments fixed, g) at one element to (new moments, direction);
    /// nonNegative marks moments that get the ReLU fix.
    func step(prev: [Matrix], nonNegative: [Bool], g: [Float], w: [Float], omega: [Float],
              stepSize: Double, decayFactor: Double,
              rule: ([Double], Double) -> ([Double], Double)) -> (weights: [Double], moments: [Matrix]) {
        let count = rows * cols
        // Non-negativity fix: c = mean |R| over negative entries.
        var fixed = prev
        for k in prev.indices where nonNegative[k] {
            let negatives = prev[k].filter { $0 < 0 }
            let c = negatives.isEmpty ? 0 : negatives.map { -$0 }.reduce(0, +) / Double(negatives.count)
            fixed[k] = prev[k].map { $0 < 0 ? c : $0 }
        }
        var newMoments = [Matrix](repeating: Matrix(repeating: 0, count: count), count: prev.count)
        var weights = [Double](repeating: 0, count: count)
        for e in 0..<count {
            let (moments, direction) = rule(fixed.map { $0[e] }, Double(g[e]))
            for k in prev.indices { newMoments[k][e] = moments[k] }
            weights[e] = Double(w[e]) * decayFactor - stepSize * direction
        }
        return (weights, newMoments.map { compress($0, omega: omega) })
    }

    /// Rank-r approximation of a by the randomized SVD with sketch Ω.
    func compress(_ a: Matrix, omega: [Float]) -> Matrix {
        let l = sketchWidth
        // Y = A Ωᵀ-as-stored (omega is l x cols): Y[i, b] = Σ_j A[i, j] Ω[b, j].
        var y = [[Double]](repeating: [Double](repeating: 0, count: rows), count: l)
        for b in 0..<l { for i in 0..<rows { var s = 0.0; for j in 0..<cols { s += a[i * cols + j] * Double(omega[b * cols + j]) }; y[b][i] = s } }
        for _ in 0..<powerIterations {
            let q = gramSchmidt(y)
            var z = [[Double]](repeating: [Double](repeating: 0, count: cols), count: l)
            for b in 0..<l { for j in 0..<cols { var s = 0.0; for i in 0..<rows { s += a[i * cols + j] * q[b][i] }; z[b][j] = s } }
            let zq = gramSchmidt(z)
            for b in 0..<l { for i in 0..<rows { var s = 0.0; for j in 0..<cols { s += a[i * cols + j] * zq[b][j] }; y[b][i] = s } }
        }
        let q = gramSchmidt(y)
        // B = Qᵀ A (l x cols); keep the top-r left singular vectors of B via eig(BBᵀ).
        var bm = [[Double]](repeating: [Double](repeating: 0, count: cols), count: l)
        for b in 0..<l { for j in 0..<cols { var s = 0.0; for i in 0..<rows { s += q[b][i] * a[i * cols + j] }; bm[b][j] = s } }
        var bbt = [Double](repeating: 0, count: l * l)
        for x in 0..<l { for z in 0..<l { var s = 0.0; for j in 0..<cols { s += bm[x][j] * bm[z][j] }; bbt[x * l + z] = s } }
        let (values, vectors) = jacobiEigen(bbt, l)
        let order = (0..<l).sorted { values[$0] > values[$1] }.prefix(rank)
        // Approximation = Q · Ur Urᵀ · B.
        var out = Matrix(repeating: 0, count: rows * cols)
        for e in order {
            let u = (0..<l).map { vectors[$0 * l + e] }           // eigenvector e of BBᵀ
            let left = (0..<rows).map { i in (0..<l).reduce(0.0) { $0 + q[$1][i] * u[$1] } }
            let right = (0..<cols).map { j in (0..<l).reduce(0.0) { $0 + u[$1] * bm[$1][j] } }
            for i in 0..<rows { for j in 0..<cols { out[i * cols + j] += left[i] * right[j] } }
        }
        return out
    }

    /// Orthonormal basis of the span of `vectors` (modified Gram–Schmidt, twice
    /// for stability); columns that vanish are dropped.
    func gramSchmidt(_ vectors: [[Double]]) -> [[Double]] {
        var basis: [[Double]] = []
        for var v in vectors {
            let norm0 = v.map { $0 * $0 }.reduce(0, +).squareRoot()
            for _ in 0..<2 {
                for q in basis {
                    let d = zip(q, v).map(*).reduce(0, +)
                    v = zip(v, q).map { $0 - d * $1 }
                }
            }
            let norm = v.map { $0 * $0 }.reduce(0, +).squareRoot()
            if norm > 1e-10 * max(norm0, 1e-300) && norm > 0 { basis.append(v.map { $0 / norm }) }
        }
        return basis + [[Double]](repeating: [Double](repeating: 0, count: vectors.first?.count ?? 0),
                                  count: vectors.count - basis.count)
    }

    /// Eigenvalues and eigenvectors (columns, row-major n x n) of a symmetric matrix (cyclic Jacobi).
    func jacobiEigen(_ input: [Double], _ n: Int) -> ([Double], [Double]) {
        var a = input
        var v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        for _ in 0..<100 {
            var off = 0.0
            for p in 0..<n { for q in (p + 1)..<n where q < n { off += a[p * n + q] * a[p * n + q] } }
            if off < 1e-30 { break }
            for p in 0..<n {
                for q in (p + 1)..<n where q < n {
                    let apq = a[p * n + q]
                    if abs(apq) < 1e-300 { continue }
                    let theta = (a[q * n + q] - a[p * n + p]) / (2 * apq)
                    let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for k in 0..<n {
                        let akp = a[k * n + p], akq = a[k * n + q]
                        a[k * n + p] = c * akp - s * akq; a[k * n + q] = s * akp + c * akq
                    }
                    for k in 0..<n {
                        let apk = a[p * n + k], aqk = a[q * n + k]
                        a[p * n + k] = c * apk - s * aqk; a[q * n + k] = s * apk + c * aqk
                    }
                    for k in 0..<n {
                        let vkp = v[k * n + p], vkq = v[k * n + q]
                        v[k * n + p] = c * vkp - s * vkq; v[k * n + q] = s * vkp + c * vkq
                    }
                }
            }
        }
        return ((0..<n).map { a[$0 * n + $0] }, v)
    }
}
