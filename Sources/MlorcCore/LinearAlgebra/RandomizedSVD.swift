/// The randomized SVD (Halko et al.; MLorc's Alg. 3) shared by every storage
/// that needs one: sketch width, test matrix, power iterations, the small SVD
/// of B = QᵀA, and the leading triplets U = Q·Ũ[:, :r], Σ[:r], Ṽᵀ[:r].
/// How a storage forms the products with its matrix A (streamed from
/// factors, row by row, or from an explicit gradient) is its own business:
/// it hands them in as closures.
enum RandomizedSVD {
    /// l = r + p, capped by the matrix's smaller side.
    static func sketchWidth(rank: Int, oversampling: Int, rows: Int, cols: Int) -> Int {
        min(rank + oversampling, min(rows, cols))
    }

    /// The test matrix: `count` standard normals keyed by (seed, tensor id,
    /// step), the same on every thread count, resume and data-parallel rank.
    static func drawTestMatrix(seed: UInt64, tensorID: UInt64, step: UInt64, count: Int,
                               into out: UnsafeMutablePointer<Float>) {
        SketchGenerator(seed: seed, tensorID: tensorID, step: step).fillNormals(out, count: count)
    }

    /// q power iterations on the sketches Y_k = A_kΩ (each rows x l,
    /// column-major), then Q_k = orth(Y_k) in place:
    ///     repeat q times: Y_k ← A_k·orth(A_kᵀ·orth(Y_k)).
    /// `transposeProducts` forms every Z_k = A_kᵀQ_k (cols x l column-major)
    /// and returns them; `products` writes every A_k·orth(Z_k) back into Y_k.
    static func powerIterations(
        _ ys: [UnsafeMutablePointer<Float>], rows m: Int, cols n: Int, width l: Int, count q: Int,
        workspace: inout Workspace,
        transposeProducts: (inout Workspace) throws(MlorcError) -> [UnsafeMutablePointer<Float>],
        products: ([UnsafeMutablePointer<Float>], inout Workspace) throws(MlorcError) -> Void
    ) throws(MlorcError) {
        for _ in 0..<q {
            for y in ys { try LinearAlgebra.orthonormalize(y, rows: m, cols: l, workspace: &workspace) }
            let zs = try transposeProducts(&workspace)
            for z in zs { try LinearAlgebra.orthonormalize(z, rows: n, cols: l, workspace: &workspace) }
            try products(zs, &workspace)
        }
        for y in ys { try LinearAlgebra.orthonormalize(y, rows: m, cols: l, workspace: &workspace) }
    }

    /// The thin SVD of B (l x cols), given as Bᵀ = AᵀQ (cols x l column-major,
    /// destroyed): Bᵀ = Ṽ·Σ·Ũᵀ. Returns Ṽ (cols x l), Σ (l) and Ũᵀ (l x l),
    /// column-major, in the workspace.
    static func smallSVD(transposedB bt: UnsafeMutablePointer<Float>, cols n: Int, width l: Int,
                         workspace: inout Workspace) throws(MlorcError)
        -> (v: UnsafeMutablePointer<Float>, sigma: UnsafeMutablePointer<Float>, ut: UnsafeMutablePointer<Float>) {
        let v = try workspace.floats(.svdLeft, n * l)
        let ut = try workspace.floats(.svdRight, l * l)
        let sigma = try workspace.floats(.svdValues, l)
        try LinearAlgebra.thinSVD(bt, rows: n, cols: l, u: v, s: sigma, vt: ut, workspace: &workspace)
        return (v, sigma, ut)
    }

    /// The leading left singular vectors of A: U[i, a] = Σ_c Q[i, c]·Ũ[c, a]
    /// for a < r (Q: rows x l column-major, Ũᵀ from smallSVD), written at
    /// out[i·rowStride + a·columnStride].
    static func leftVectors(q: UnsafePointer<Float>, rows m: Int, width l: Int, ut: UnsafePointer<Float>,
                            rank r: Int, into out: UnsafeMutablePointer<Float>, rowStride: Int, columnStride: Int) {
        for i in 0..<m {
            for a in 0..<r {
                var sum: Float = 0
                for c in 0..<l { sum += q[i + c * m] * ut[a + c * l] }
                out[i * rowStride + a * columnStride] = sum
            }
        }
    }

    /// The leading `rank` triplets of B (given as Bᵀ, see smallSVD) as MLorc
    /// factors: U = Q Ũ[:, :r] (row-major), s = Σ[:r], Vt = Ṽᵀ[:r] (Panel
    /// layout).
    static func storeLeadingTriplets(transposedB bt: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>,
                                     rows m: Int, cols n: Int, width l: Int, rank r: Int, into f: Factors,
                                     workspace: inout Workspace) throws(MlorcError) {
        let svd = try smallSVD(transposedB: bt, cols: n, width: l, workspace: &workspace)
        Panel.fromRowMajor(svd.v, into: f.vt, rows: r, cols: n)  // Ṽᵀ[:r] is row-major r x cols
        f.s.update(from: svd.sigma, count: r)
        leftVectors(q: q, rows: m, width: l, ut: svd.ut, rank: r, into: f.u, rowStride: r, columnStride: 1)
    }

    /// The whole randomized SVD of an explicit operator A (rows x cols):
    /// Y = AΩ, q power iterations, Q = orth(Y), Bᵀ = AᵀQ and its small SVD.
    /// `apply(X, Y)` writes Y = A·X (X: cols x l, Y: rows x l), `applyT(Y, X)`
    /// writes X = Aᵀ·Y; all column-major. Returns Q and the small SVD.
    static func explicit(rows m: Int, cols n: Int, width l: Int, powerIterations q: Int,
                         seed: UInt64, tensorID: UInt64, step: UInt64, workspace: inout Workspace,
                         apply: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void,
                         applyT: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) throws(MlorcError)
        -> (q: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, sigma: UnsafeMutablePointer<Float>,
            ut: UnsafeMutablePointer<Float>) {
        let omega = try workspace.floats(.omega, n * l)
        drawTestMatrix(seed: seed, tensorID: tensorID, step: step, count: n * l, into: omega)
        let y = try workspace.floats(.projectionSketch, m * l), z = try workspace.floats(.staging, n * l)
        apply(omega, y)
        try powerIterations([y], rows: m, cols: n, width: l, count: q, workspace: &workspace,
                            transposeProducts: { _ throws(MlorcError) in applyT(y, z); return [z] },
                            products: { _, _ throws(MlorcError) in apply(z, y) })
        applyT(y, z)
        let svd = try smallSVD(transposedB: z, cols: n, width: l, workspace: &workspace)
        return (y, svd.v, svd.sigma, svd.ut)
    }
}
