import CLinearAlgebra

/// Column-major QR and thin SVD of small dense panels through LAPACKE's `_work`
/// entry points (no hidden transposes or allocations), with workspace owned
/// by the caller's `Workspace`.
enum LinearAlgebra {
    /// Replaces the m x k column-major matrix `a` (leading dimension m, m >= k)
    /// by the Q factor of its QR decomposition.
    static func orthonormalize(_ a: UnsafeMutablePointer<Float>, rows m: Int, cols k: Int,
                               workspace: inout Workspace) throws(MlorcError) {
        let tau = try workspace.floats(.tau, k)
        try BLASThreads.single { () throws(MlorcError) in try qr(a, rows: m, cols: k, tau: tau, workspace: &workspace) }
    }

    private static func qr(_ a: UnsafeMutablePointer<Float>, rows m: Int, cols k: Int, tau: UnsafeMutablePointer<Float>,
                           workspace: inout Workspace) throws(MlorcError) {
        var query: Float = 0
        var info = LAPACKE_sgeqrf_work(LAPACK_COL_MAJOR, Int32(m), Int32(k), a, Int32(m), tau, &query, -1)
        var lwork = Int(query)
        info = LAPACKE_sorgqr_work(LAPACK_COL_MAJOR, Int32(m), Int32(k), Int32(k), a, Int32(m), tau, &query, -1)
        lwork = max(lwork, Int(query), 1)
        let work = try workspace.floats(.lapackWork, lwork)
        info = LAPACKE_sgeqrf_work(LAPACK_COL_MAJOR, Int32(m), Int32(k), a, Int32(m), tau, work, Int32(lwork))
        guard info == 0 else { throw MlorcError(.linearAlgebra, "sgeqrf failed (info \(info)) on a \(m)x\(k) sketch") }
        info = LAPACKE_sorgqr_work(LAPACK_COL_MAJOR, Int32(m), Int32(k), Int32(k), a, Int32(m), tau, work, Int32(lwork))
        guard info == 0 else { throw MlorcError(.linearAlgebra, "sorgqr failed (info \(info)) on a \(m)x\(k) sketch") }
    }

    /// Thin SVD of the n x k column-major matrix `a` (n >= k, destroyed):
    /// a = u · diag(s) · vt with u n x k, s k, vt k x k (all column-major).
    static func thinSVD(_ a: UnsafeMutablePointer<Float>, rows n: Int, cols k: Int,
                        u: UnsafeMutablePointer<Float>, s: UnsafeMutablePointer<Float>,
                        vt: UnsafeMutablePointer<Float>, workspace: inout Workspace) throws(MlorcError) {
        let iwork = try workspace.ints(8 * k)
        try BLASThreads.single { () throws(MlorcError) in
            try gesdd(a, rows: n, cols: k, u: u, s: s, vt: vt, iwork: iwork, workspace: &workspace)
        }
    }

    private static func gesdd(_ a: UnsafeMutablePointer<Float>, rows n: Int, cols k: Int,
                              u: UnsafeMutablePointer<Float>, s: UnsafeMutablePointer<Float>,
                              vt: UnsafeMutablePointer<Float>, iwork: UnsafeMutablePointer<Int32>,
                              workspace: inout Workspace) throws(MlorcError) {
        var query: Float = 0
        var info = LAPACKE_sgesdd_work(LAPACK_COL_MAJOR, CChar(UInt8(ascii: "S")), Int32(n), Int32(k), a, Int32(n),
                                       s, u, Int32(n), vt, Int32(k), &query, -1, iwork)
        let lwork = max(Int(query), 1)
        let work = try workspace.floats(.lapackWork, lwork)
        info = LAPACKE_sgesdd_work(LAPACK_COL_MAJOR, CChar(UInt8(ascii: "S")), Int32(n), Int32(k), a, Int32(n),
                                   s, u, Int32(n), vt, Int32(k), work, Int32(lwork), iwork)
        guard info == 0 else { throw MlorcError(.linearAlgebra, "sgesdd failed (info \(info)) on a \(n)x\(k) panel") }
    }
}
