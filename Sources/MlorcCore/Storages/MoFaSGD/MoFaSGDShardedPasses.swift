/// The pieces of a MoFaSGD step on a row shard (MoFaSGDShardedStep.swift):
/// MoFaSGDStep's products over this rank's rows, with every sum over all rows
/// handed out as a partial sum for the driver to reduce. U, Q_U, W, G and the
/// dense momentum's rows are this rank's; σ, Vᵀ, Q_V, R_U, R_V and the small
/// SVDs are alike on every rank.
extension MoFaSGDStep {
    /// What the step does with this tensor (alike on every rank: σ is replicated).
    enum ShardKind { case dense, initial, update }
    var shardKind: ShardKind {
        if header.storage == .dense { return .dense }
        let sigma = Factors(header, payload: payload, moment: 0).s
        return header.step == 0 || (0..<r).allSatisfy({ sigma[$0] == 0 }) ? .initial : .update
    }
    var sketchWidth: Int {
        RandomizedSVD.sketchWidth(rank: r, oversampling: hyper.oversampling, rows: header.shapeRows, cols: n)
    }

    /// Floats of the scratch a shard keeps across the phases: Y (m x l) for
    /// the initial SVD; X_U, Q_U (m x 2r), X_V and Q_V (n x 2r) for the update.
    static func shardScratchFloats(_ h: StateFormat.Header, _ hyper: Hyperparameters) -> Int {
        guard h.storage == .lowRank else { return 16 }
        let l = RandomizedSVD.sketchWidth(rank: h.rank, oversampling: hyper.oversampling, rows: h.shapeRows, cols: h.cols)
        return (max(h.rows * l, 4 * h.rank * (h.rows + h.cols)) + 15) / 16 * 16
    }

    /// This rank's gradient check (as prepare's): finite and, low-rank, within gradientBound.
    func shardInputsAreValid(pool: ThreadPool, parts: Int) -> Bool {
        let count = m * n, g = grad, mom = payload, beta = Float(hyper.beta1), dense = header.storage == .dense
        var ok = [Bool](repeating: true, count: parts)
        ok.withUnsafeMutableBufferPointer { okp in
            pool.run(parts: parts) { part in
                let range = partition(count, parts: parts, part: part, align: 8)
                if dense {
                    for e in range where !mofasgdMomentum(beta, mom[e], g[e]).isFinite { okp[part] = false; return }
                } else {
                    okp[part] = g.allWithin(range, bound: Self.gradientBound)
                }
            }
        }
        return !ok.contains(false)
    }

    // MARK: dense: the whole new momentum, gathered

    /// Adds this shard's rows of β·M + G into the globalRows x n row-major `out` at rowBegin.
    func addDenseMomentum(into out: UnsafeMutablePointer<Double>, rowBegin: Int) {
        let beta = Float(hyper.beta1), g = grad
        for e in 0..<(m * n) { out[rowBegin * n + e] += Double(mofasgdMomentum(beta, payload[e], g[e])) }
    }

    /// The exact SVD of the gathered momentum (the same on every rank), this
    /// shard's rows of U into `result`.
    func shardDenseFactors(_ gathered: UnsafePointer<Double>, globalRows: Int, rowBegin: Int,
                           workspace: inout Workspace) throws(MlorcError) {
        let gm = globalRows, n = n, k = min(gm, n), tall = gm > n
        let a = try workspace.floats(.staging, gm * n)
        let left = try workspace.floats(.svdLeft, max(gm, n) * k), right = try workspace.floats(.svdRight, k * k)
        let values = try workspace.floats(.svdValues, k)
        if tall {
            for i in 0..<gm { for j in 0..<n { a[i + j * gm] = Float(gathered[i * n + j]) } }
            try LinearAlgebra.thinSVD(a, rows: gm, cols: n, u: left, s: values, vt: right, workspace: &workspace)
        } else {
            for e in 0..<(gm * n) { a[e] = Float(gathered[e]) }
            try LinearAlgebra.thinSVD(a, rows: n, cols: gm, u: left, s: values, vt: right, workspace: &workspace)
        }
        let u = result, s = result + m * k, vt = s + k
        for c in 0..<k {
            s[c] = values[c]
            for i in 0..<m { u[i * k + c] = tall ? left[rowBegin + i + c * gm] : right[c + (rowBegin + i) * k] }
            for j in 0..<n { vt[c * n + j] = tall ? right[c + j * k] : left[j + c * n] }
        }
    }

    // MARK: initial: the randomized SVD of G

    /// Y = GΩ on this shard's rows (into `scratch`, m x l column-major).
    func shardSketchGradient(_ scratch: UnsafeMutablePointer<Float>, workspace: inout Workspace, pool: ThreadPool,
                             parts: Int) throws(MlorcError) {
        let l = sketchWidth, omega = try workspace.floats(.omega, n * l)
        RandomizedSVD.drawTestMatrix(seed: hyper.seed, tensorID: header.tensorID, step: header.step + 1, count: n * l,
                                     into: omega)
        let buffers = try rowBuffers(&workspace, parts: parts)
        multiplyG(omega, into: scratch, l, pool: pool, parts: parts, buffers: buffers)
    }

    /// Adds GᵀY over this shard's rows (n x l column-major) into `out`, in fp64.
    func addGradientTransposeProduct(_ y: UnsafePointer<Float>, into out: UnsafeMutablePointer<Double>,
                                     workspace: inout Workspace, pool: ThreadPool, parts: Int) throws(MlorcError) {
        let l = sketchWidth, x = try workspace.floats(.staging, n * l)
        let buffers = try rowBuffers(&workspace, parts: parts)
        multiplyGT(y, into: x, l, pool: pool, parts: parts, buffers: buffers)
        for e in 0..<(n * l) { out[e] += Double(x[e]) }
    }

    /// Y ← G·Z on this shard's rows (z: n x l column-major).
    func shardResketch(_ z: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, workspace: inout Workspace,
                       pool: ThreadPool, parts: Int) throws(MlorcError) {
        let buffers = try rowBuffers(&workspace, parts: parts)
        multiplyG(z, into: y, sketchWidth, pool: pool, parts: parts, buffers: buffers)
    }

    /// U = QŨ[:, :r] (this shard's rows), σ, Vᵀ from the small SVD of the reduced Bᵀ = GᵀQ.
    func shardInitialFactors(q: UnsafePointer<Float>, transposedB bt: UnsafeMutablePointer<Float>,
                             workspace: inout Workspace) throws(MlorcError) {
        let l = sketchWidth, n = n, r = r
        let svd = try RandomizedSVD.smallSVD(transposedB: bt, cols: n, width: l, workspace: &workspace)
        let u = result, s = result + m * r, vt = s + r
        RandomizedSVD.leftVectors(q: q, rows: m, width: l, ut: svd.ut, rank: r, into: u, rowStride: r, columnStride: 1)
        for a in 0..<r {
            s[a] = svd.sigma[a]
            for j in 0..<n { vt[a * n + j] = svd.v[j + a * n] }
        }
    }

    // MARK: update: the tangent-space step

    /// X_U = [U | GV] and its copy Q_U (this shard's rows) and X_V's V part, in
    /// `scratch` (xu, qu: m x 2r, xv: n x 2r, column-major); adds GᵀU (n x r,
    /// column-major) into `gtu` and C = UᵀGV (r x r, row-major) into `c`.
    func shardTangentProducts(_ scratch: UnsafeMutablePointer<Float>, gtu: UnsafeMutablePointer<Double>,
                              c: UnsafeMutablePointer<Double>, workspace: inout Workspace, pool: ThreadPool,
                              parts: Int) throws(MlorcError) {
        let m = m, n = n, r = r, k = 2 * r, g = grad
        let f = Factors(header, payload: payload, moment: 0), u = f.u, vt = f.vt
        let xu = scratch, qu = xu + k * m, xv = qu + k * m
        let buffers = try rowBuffers(&workspace, parts: parts)
        for i in 0..<m { for a in 0..<r { xu[i + a * m] = u[i * r + a] } }
        pool.run(parts: parts) { part in  // GV: rows split
            let buffer = buffers.grad(part)
            for i in partition(m, parts: parts, part: part) {
                MoFaSGDKernels.rowTimesFactors(g.row(i, buffer: buffer), vt, k: r, n: n) { a, value in xu[i + (r + a) * m] = value }
            }
        }
        xv.update(from: vt, count: r * n)  // V's columns are Vᵀ's rows
        let part = try workspace.floats(.staging, n * r)
        pool.run(parts: parts) { p in  // GᵀU: columns split
            let cols = partition(n, parts: parts, part: p, align: 8)
            if let g32 = g.fp32 {
                MoFaSGDKernels.transposedProduct(g32, u, rows: m, k: r, n: n, cols: cols, into: part)
            } else {
                MoFaSGDKernels.transposedProduct(g, u, rows: m, k: r, n: n, cols: cols, into: part, buffer: buffers.grad(p)!)
            }
        }
        for e in 0..<(n * r) { gtu[e] += Double(part[e]) }
        for a in 0..<r { for b in 0..<r { c[a * r + b] += Double(dot(xu + a * m, xu + (r + b) * m, m)) } }
        qu.update(from: xu, count: k * m)
    }

    /// X_V's GᵀU part from the reduced sums, then Q_V = orth(X_V) (alike on
    /// every rank), kept in the scratch after X_V.
    func shardFinishXV(_ scratch: UnsafeMutablePointer<Float>, gtu: UnsafePointer<Double>,
                       workspace: inout Workspace) throws(MlorcError) -> UnsafeMutablePointer<Float> {
        let n = n, r = r, k = 2 * r, xv = scratch + 2 * k * m
        for e in 0..<(n * r) { xv[r * n + e] = Float(gtu[e]) }
        let qv = xv + k * n
        qv.update(from: xv, count: k * n)
        try LinearAlgebra.orthonormalize(qv, rows: n, cols: k, workspace: &workspace)
        return qv
    }

    /// This shard's part of R_U = Q_UᵀX_U (2r x 2r, row-major), added into `out`.
    func addRU(_ scratch: UnsafePointer<Float>, into out: UnsafeMutablePointer<Double>) {
        let m = m, k = 2 * r, xu = scratch, qu = xu + k * m
        for x in 0..<k { for c in 0..<k { out[x * k + c] += Double(dot(qu + x * m, xu + c * m, m)) } }
    }

    /// The new factors from R_U, R_V = Q_VᵀX_V, C and K (as updatedFactors).
    func shardUpdatedFactors(_ scratch: UnsafeMutablePointer<Float>, qv: UnsafePointer<Float>, ru: UnsafePointer<Double>,
                             c: UnsafePointer<Double>, workspace: inout Workspace) throws(MlorcError) {
        let m = m, n = n, r = r, k = 2 * r
        let sigma = Factors(header, payload: payload, moment: 0).s
        let qu = scratch + k * m, xv = scratch + 2 * k * m
        var rv = [Double](repeating: 0, count: k * k), kb = rv, krv = rv, mid = rv
        for x in 0..<k { for y in 0..<k { rv[x * k + y] = Double(dot(qv + x * n, xv + y * n, n)) } }
        for a in 0..<r {
            for b in 0..<r { kb[a * k + b] = (a == b ? hyper.beta1 * Double(sigma[a]) : 0) - c[a * r + b] }
            kb[a * k + r + a] = 1
            kb[(r + a) * k + a] = 1
        }
        for a in 0..<k { for y in 0..<k {
            var sum = 0.0
            for b in 0..<k { sum += kb[a * k + b] * rv[y * k + b] }
            krv[a * k + y] = sum
        } }
        for x in 0..<k { for y in 0..<k {
            var sum = 0.0
            for a in 0..<k { sum += ru[x * k + a] * krv[a * k + y] }
            mid[x * k + y] = sum
        } }
        let small = try workspace.floats(.svdRight, 3 * k * k), values = try workspace.floats(.svdValues, k)
        let a = small, uu = small + k * k, vv = small + 2 * k * k
        for x in 0..<k { for y in 0..<k { a[x + y * k] = Float(mid[x * k + y]) } }
        try LinearAlgebra.thinSVD(a, rows: k, cols: k, u: uu, s: values, vt: vv, workspace: &workspace)
        let newU = result, newS = result + m * r, newVt = newS + r
        for i in 0..<m {
            for col in 0..<r {
                var sum: Float = 0
                for x in 0..<k { sum += qu[i + x * m] * uu[x + col * k] }
                newU[i * r + col] = sum
            }
        }
        for col in 0..<r {
            newS[col] = values[col]
            for j in 0..<n { newVt[col * n + j] = 0 }
            for x in 0..<k { axpy(vv[col + x * k], qv + x * n, newVt + col * n, 0..<n) }
        }
    }

    /// The verify bound and the validity of this shard's new factors.
    func shardVerify(lr: Double, context: StepContext) -> String? {
        let k = Self.components(header), s = result + m * k
        for a in 0..<k where !(s[a] >= 0 && s[a] <= Self.singularBound) {
            return "the new momentum's singular values overflow float"
        }
        guard allWithin(result, count: m * k, bound: 2), allWithin(s + k, count: k * n, bound: 2) else {
            return "the new momentum's singular vectors are not finite"
        }
        return verify(lr: lr, context: context)
    }
}
