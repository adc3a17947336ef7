/// The small dense algebra of the distributed QR of a row-sharded sketch Y
/// (CholeskyQR2, in fp64): R from chol(Σ_ranks Y_iᵀY_i), Q_i = Y_i·R⁻¹, twice.
/// Its inputs are reduced sums, the same on every rank, so every rank makes
/// the same decisions.
enum CholeskyQR {
    /// Values of a packed upper triangle of an l x l symmetric matrix.
    static func packedCount(_ l: Int) -> Int { l * (l + 1) / 2 }

    /// R (upper, row-major l x l, zeros below) with RᵀR = the packed matrix g,
    /// or nil when a pivot is not positive, not finite, or below
    /// `relativePivot` times its diagonal entry (Y then too close to rank
    /// deficient for fp64 Cholesky: κ(Y)² beyond 1 / relativePivot).
    static func factor(packed g: UnsafePointer<Double>, width l: Int, relativePivot: Double) -> [Double]? {
        var full = [Double](repeating: 0, count: l * l)
        var e = 0
        for a in 0..<l { for b in a..<l { full[a * l + b] = g[e]; e += 1 } }
        var r = [Double](repeating: 0, count: l * l)
        for j in 0..<l {
            var d = full[j * l + j]
            for i in 0..<j { d -= r[i * l + j] * r[i * l + j] }
            guard d.isFinite, d > 0, d > relativePivot * full[j * l + j] else { return nil }
            let rjj = d.squareRoot()
            r[j * l + j] = rjj
            for k in (j + 1)..<max(j + 1, l) {
                var v = full[j * l + k]
                for i in 0..<j { v -= r[i * l + j] * r[i * l + k] }
                r[j * l + k] = v / rjj
            }
        }
        return r
    }

    /// l · max |g − I| over a packed matrix: a bound of ‖QᵀQ − I‖₂ (NaN: infinity).
    static func distanceFromIdentity(packed g: UnsafePointer<Double>, width l: Int) -> Double {
        var worst = 0.0, e = 0
        for a in 0..<l {
            for b in a..<l {
                let d = abs(g[e] - (a == b ? 1 : 0))
                if !(d <= worst) { worst = d.isNaN ? .infinity : d }
                e += 1
            }
        }
        return Double(l) * worst
    }
}
