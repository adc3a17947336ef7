/// MoFaSGD (Mahdavinia & Mahdavi, "Low-rank Momentum Factorization for Memory
/// Efficient Training", arXiv 2507.08091), the baseline that keeps the momentum
/// itself as rank-r factors M = U·diag(σ)·Vᵀ. One step on an m x n matrix:
///
///   Ĝ = UUᵀG + GVVᵀ − UUᵀGVVᵀ          (G projected on the tangent space at M)
///   M ← SVD_r(β·M + Ĝ)                  (no (1 − β) on Ĝ), through
///       [U | GV] = Q_U R_U,  [V | GᵀU] = Q_V R_V,
///       K = [[β·diag(σ) − UᵀGV, I], [I, 0]],  R_U K R_Vᵀ = Ũ Σ̃ Ṽᵀ (2r x 2r),
///       U ← Q_U Ũ[:, :r],  σ ← Σ̃[:r],  V ← Q_V Ṽ[:, :r]
///   W ← W·(1 − lr·λ) − lr·U·diag(f(σ))·Vᵀ
///       f(σ) = 0 for σ <= ε; else 1 (spectrally normalised: U Vᵀ, the default),
///       or min(1/σ, max_value) with MLORC_PARAM_MOFASGD_RECIPROCAL.
///
/// The authors' code (pmahdavi/MoFaSGD, momentum_factorized_sgd.py,
/// MomentumFactorizedSGD._update_momentum_factor and .step) is the source of
/// the recurrence (β·M + Ĝ), the 2r x 2r block update and both update forms
/// (its flag use_ones_for_nonzero_s: true gives U Vᵀ; false, the setting of
/// its experiment configs, gives the clamped U·diag(1/σ)·Vᵀ). Its eta1 only
/// multiplies lr and its eta2 (the complement term) is 0 in every published
/// configuration, so neither is a key. Two deliberate differences:
///   - First step: the code seeds U, σ, V with the top-r SVD of the *weights*;
///     here M₀ = 0, so M₁ = SVD_r(G₁), computed by the randomized SVD
///     (oversampling p, q power iterations, Ω from (seed, tensor id, step)).
///     The same holds whenever the momentum is exactly 0 (all σ = 0).
///   - Decoupled weight decay λ (default 0, as the code has none).
///
/// Low-rank state payload: U (m x r, row-major), σ (r), Vᵀ (r x n, row-major);
/// r(m + n + 1) floats. Needs 2r <= min(m, n). Dense storage keeps the full
/// momentum and applies MoFaSGD at full rank: M ← β·M + G, W ← … −
/// lr·U·diag(f(σ))·Vᵀ from the exact SVD of M (for a vector: M/‖M‖).
///
/// `prepare` (pass 1) only reads the state, weights and gradient: it leaves the
/// SVD of the new momentum in `result` (for dense storage the full one, as big
/// as the tensor twice over); `commit` (pass 2) only writes. A step refused
/// for any tensor (non-finite values, a LAPACK failure) changes nothing.
struct MoFaSGDStep {
    let hyper: Hyperparameters
    let header: StateFormat.Header
    /// The weights (the parameter, or its fp32 master and then the
    /// parameter's rounding) and the gradient, rows as fp32.
    let weights: WeightRows, grad: ElementRows
    let payload: UnsafeMutablePointer<Float>
    /// This tensor's part of the batch's result slot (`resultFloats`).
    let result: UnsafeMutablePointer<Float>

    var m: Int { header.rows }
    var n: Int { header.cols }
    var r: Int { header.rank }

    /// Gradients beyond this are refused: it keeps every product of the step,
    /// and the singular values it stores, within float range.
    static let gradientBound: Float = 1e14
    /// Largest singular value a state may hold (StateFormat.checkFactors).
    static let singularBound: Float = 1e30

    /// Components of the new momentum's SVD: r, or min(m, n) for dense storage.
    static func components(_ h: StateFormat.Header) -> Int {
        h.storage == .lowRank ? h.rank : min(h.shapeRows, h.cols)  // a shard: the whole matrix's
    }

    /// Floats of `result`: U (m x k), σ (k), Vᵀ (k x n) with k = components.
    static func resultFloats(_ h: StateFormat.Header) -> Int {
        (components(h) * (h.rows + h.cols + 1) + 15) / 16 * 16
    }

    /// The weight each singular direction gets in the update (before lr).
    func directionWeight(_ sigma: Float) -> Float {
        guard sigma > Float(hyper.eps) else { return 0 }
        return hyper.mofasgdReciprocal ? min(1 / sigma, Float(hyper.mofasgdMaxValue)) : 1
    }

    // MARK: pass 1

    /// Checks the gradient and computes the SVD of the new momentum into
    /// `result`. Returns false when the step must be refused as non-finite.
    func prepare(workspace: inout Workspace, pool: ThreadPool, parts: Int) throws(MlorcError) -> Bool {
        let count = m * n, g = grad
        // Reserved now, so that the commit's request cannot fail.
        let buffers = try rowBuffers(&workspace, parts: parts)
        var ok = [Bool](repeating: true, count: parts)
        if header.storage == .dense {
            let mom = payload, beta = Float(hyper.beta1)
            ok.withUnsafeMutableBufferPointer { okp in
                pool.run(parts: parts) { part in
                    for e in partition(count, parts: parts, part: part, align: 8) where !mofasgdMomentum(beta, mom[e], g[e]).isFinite {
                        okp[part] = false
                        return
                    }
                }
            }
            guard !ok.contains(false) else { return false }
            try denseFactors(workspace: &workspace)
            return resultIsValid()
        }
        // A zero momentum (fresh, or only zero gradients so far) has no tangent
        // space: it restarts as M = SVD_r(G), as at the first step.
        let sigma = Factors(header, payload: payload, moment: 0).s
        if header.step == 0 || (0..<r).allSatisfy({ sigma[$0] == 0 }) {
            ok.withUnsafeMutableBufferPointer { okp in
                pool.run(parts: parts) { part in
                    let range = partition(count, parts: parts, part: part, align: 8)
                    okp[part] = g.allWithin(range, bound: Self.gradientBound)
                }
            }
            guard !ok.contains(false) else { return false }
            try initialFactors(workspace: &workspace, pool: pool, parts: parts, buffers: buffers)
        } else {
            // The gradient is checked by the GV pass, which reads every row first.
            guard try updatedFactors(workspace: &workspace, pool: pool, parts: parts, buffers: buffers) else { return false }
        }
        return resultIsValid()
    }

    /// Whether the new SVD can be used and stored: σ within [0, 1e30] (a
    /// momentum that overflows float, e.g. from a huge dense state, gives inf
    /// or NaN here) and finite singular vectors.
    private func resultIsValid() -> Bool {
        let k = Self.components(header), s = result + m * k
        for a in 0..<k where !(s[a] >= 0 && s[a] <= Self.singularBound) { return false }
        return allWithin(result, count: m * k, bound: 2) && allWithin(s + k, count: k * n, bound: 2)
    }

    /// Each part's row buffers in .threadScratch, for half precision only: 4
    /// widened gradient rows (GᵀU takes rows four at a time), one weight row.
    struct RowBuffers {
        let base: UnsafeMutablePointer<Float>?, gradFloats: Int, weightFloats: Int
        func grad(_ part: Int) -> UnsafeMutablePointer<Float>? { base.map { $0 + part * (4 * gradFloats + weightFloats) } }
        func weights(_ part: Int) -> UnsafeMutablePointer<Float>? { grad(part).map { $0 + 4 * gradFloats } }
    }

    func rowBuffers(_ workspace: inout Workspace, parts: Int) throws(MlorcError) -> RowBuffers {
        let g = grad.bufferFloats, w = weights.bufferFloats, floats = parts * (4 * g + w)
        return RowBuffers(base: floats == 0 ? nil : try workspace.floats(.threadScratch, floats), gradFloats: g, weightFloats: w)
    }

    /// M₁ = SVD_r(G) by the randomized SVD: Y = GΩ (q power iterations),
    /// Q = qr(Y), Bᵀ = GᵀQ = L·diag(s)·R, so B = Rᵀ·diag(s)·Lᵀ:
    /// U = Q·Rᵀ[:, :r], σ = s[:r], V = L[:, :r].
    private func initialFactors(workspace: inout Workspace, pool: ThreadPool, parts: Int,
                                buffers: RowBuffers) throws(MlorcError) {
        let l = RandomizedSVD.sketchWidth(rank: r, oversampling: hyper.oversampling, rows: header.shapeRows, cols: n)
        let svd = try RandomizedSVD.explicit(rows: m, cols: n, width: l, powerIterations: hyper.powerIterations,
                                             seed: hyper.seed, tensorID: header.tensorID, step: header.step + 1,
                                             workspace: &workspace,
                                             apply: { x, y in multiplyG(x, into: y, l, pool: pool, parts: parts, buffers: buffers) },
                                             applyT: { y, x in multiplyGT(y, into: x, l, pool: pool, parts: parts, buffers: buffers) })
        let u = result, s = result + m * r, vt = s + r
        RandomizedSVD.leftVectors(q: svd.q, rows: m, width: l, ut: svd.ut, rank: r, into: u, rowStride: r, columnStride: 1)
        for a in 0..<r {
            s[a] = svd.sigma[a]
            for j in 0..<n { vt[a * n + j] = svd.v[j + a * n] }
        }
    }

    /// The tangent-space update of the paper through the 2r x 2r block matrix.
    /// Returns false, before the rest of the update, if the gradient is not
    /// within gradientBound (NaN and infinity included): its GV pass checks it.
    private func updatedFactors(workspace: inout Workspace, pool: ThreadPool, parts: Int,
                                buffers: RowBuffers) throws(MlorcError) -> Bool {
        let m = m, n = n, r = r, k = 2 * r, g = grad
        let f = Factors(header, payload: payload, moment: 0), u = f.u, sigma = f.s, vt = f.vt
        // X_U = [U | GV] (m x 2r) and X_V = [V | GᵀU] (n x 2r), column-major,
        // kept for R = QᵀX; Q_U, Q_V are their orthonormalised copies.
        let xu = try workspace.floats(.panels, k * (m + n)), xv = xu + k * m
        for i in 0..<m { for a in 0..<r { xu[i + a * m] = u[i * r + a] } }
        // Per part: the largest magnitude bits of its gradient rows (widened
        // exactly from half precision, so the check is the stored values').
        var bits = [Int32](repeating: 0, count: parts)
        bits.withUnsafeMutableBufferPointer { bitsp in
            if let g = g.fp32 {  // fp32: the rows in place
                pool.run(parts: parts) { part in  // GV: rows split
                    var worst: Int32 = 0
                    for i in partition(m, parts: parts, part: part) {
                        worst = max(worst, MoFaSGDKernels.rowTimesFactors(g + i * n, vt, k: r, n: n) { a, value in
                            xu[i + (r + a) * m] = value
                        })
                    }
                    bitsp[part] = worst
                }
            } else {
                pool.run(parts: parts) { part in
                    let buffer = buffers.grad(part)
                    var worst: Int32 = 0
                    for i in partition(m, parts: parts, part: part) {
                        worst = max(worst, MoFaSGDKernels.rowTimesFactors(g.row(i, buffer: buffer), vt, k: r, n: n) { a, value in
                            xu[i + (r + a) * m] = value
                        })
                    }
                    bitsp[part] = worst
                }
            }
        }
        guard bits.max()! <= Int32(bitPattern: Self.gradientBound.bitPattern) else { return false }
        xv.update(from: vt, count: r * n)  // V's columns are Vᵀ's rows
        pool.run(parts: parts) { part in  // GᵀU: columns split
            let cols = partition(n, parts: parts, part: part, align: 8)
            if let g32 = g.fp32 {
                MoFaSGDKernels.transposedProduct(g32, u, rows: m, k: r, n: n, cols: cols, into: xv + r * n)
            } else {
                MoFaSGDKernels.transposedProduct(g, u, rows: m, k: r, n: n, cols: cols, into: xv + r * n, buffer: buffers.grad(part)!)
            }
        }
        let qu = try workspace.floats(.gradSketch, k * m), qv = try workspace.floats(.projectionSketch, k * n)
        qu.update(from: xu, count: k * m)
        qv.update(from: xv, count: k * n)
        try LinearAlgebra.orthonormalize(qu, rows: m, cols: k, workspace: &workspace)
        try LinearAlgebra.orthonormalize(qv, rows: n, cols: k, workspace: &workspace)
        // Small matrices in double: R_U, R_V, C = UᵀGV, K, Mid = R_U K R_Vᵀ.
        var ru = [Double](repeating: 0, count: k * k), rv = ru, kb = ru, mid = ru
        for x in 0..<k {
            for c in 0..<k {
                ru[x * k + c] = Double(dot(qu + x * m, xu + c * m, m))
                rv[x * k + c] = Double(dot(qv + x * n, xv + c * n, n))
            }
        }
        for a in 0..<r {
            for b in 0..<r {
                // C[a, b] = U[:, a]·(GV)[:, b]
                let c = Double(dot(xu + a * m, xu + (r + b) * m, m))
                kb[a * k + b] = (a == b ? hyper.beta1 * Double(sigma[a]) : 0) - c
            }
            kb[a * k + r + a] = 1
            kb[(r + a) * k + a] = 1
        }
        var krv = mid  // K·R_Vᵀ, then R_U·(K·R_Vᵀ): O(k³)
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
        for x in 0..<k { for y in 0..<k { a[x + y * k] = Float(mid[x * k + y]) } }  // column-major
        try LinearAlgebra.thinSVD(a, rows: k, cols: k, u: uu, s: values, vt: vv, workspace: &workspace)
        let newU = result, newS = result + m * r, newVt = newS + r
        for i in 0..<m {
            for c in 0..<r {
                var sum: Float = 0
                for x in 0..<k { sum += qu[i + x * m] * uu[x + c * k] }
                newU[i * r + c] = sum
            }
        }
        for c in 0..<r {
            newS[c] = values[c]
            for j in 0..<n { newVt[c * n + j] = 0 }
            for x in 0..<k { axpy(vv[c + x * k], qv + x * n, newVt + c * n, 0..<n) }
        }
        return true
    }

    /// y (m x l, column-major) = G·x (x: n x l, column-major); rows split.
    func multiplyG(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ l: Int,
                           pool: ThreadPool, parts: Int, buffers: RowBuffers) {
        let m = m, n = n, g = grad
        pool.run(parts: parts) { part in
            let buffer = buffers.grad(part)
            for i in partition(m, parts: parts, part: part) {
                let row = g.row(i, buffer: buffer)
                for b in 0..<l { y[i + b * m] = dot(row, x + b * n, n) }
            }
        }
    }

    /// x (n x l, column-major) = Gᵀ·y (y: m x l, column-major); columns split.
    func multiplyGT(_ y: UnsafePointer<Float>, into x: UnsafeMutablePointer<Float>, _ l: Int,
                             pool: ThreadPool, parts: Int, buffers: RowBuffers) {
        let m = m, n = n, g = grad
        pool.run(parts: parts) { part in
            let cols = partition(n, parts: parts, part: part, align: 8), buffer = buffers.grad(part)
            for b in 0..<l { for j in cols { x[j + b * n] = 0 } }
            for i in 0..<m {
                let row = g.row(i, cols, buffer: buffer)
                for b in 0..<l { axpy(y[i + b * m], row, x + b * n, cols) }
            }
        }
    }

    /// The exact thin SVD of the new dense momentum β·M + G (k = min(m, n)).
    /// Row-major M is column-major Mᵀ (n x m): LAPACK decomposes the tall one.
    private func denseFactors(workspace: inout Workspace) throws(MlorcError) {
        let m = m, n = n, k = min(m, n), beta = Float(hyper.beta1), mom = payload, g = grad
        let a = try workspace.floats(.staging, m * n)
        let left = try workspace.floats(.svdLeft, max(m, n) * k), right = try workspace.floats(.svdRight, k * k)
        let values = try workspace.floats(.svdValues, k)
        let tall = m > n
        if tall {
            for i in 0..<m { for j in 0..<n { a[i + j * m] = mofasgdMomentum(beta, mom[i * n + j], g[i * n + j]) } }
            try LinearAlgebra.thinSVD(a, rows: m, cols: n, u: left, s: values, vt: right, workspace: &workspace)
        } else {
            for e in 0..<(m * n) { a[e] = mofasgdMomentum(beta, mom[e], g[e]) }
            try LinearAlgebra.thinSVD(a, rows: n, cols: m, u: left, s: values, vt: right, workspace: &workspace)
        }
        // M = Σ_c σ_c x_c y_cᵀ: for M itself x = left, y = rightᵀ; for Mᵀ the reverse.
        let u = result, s = result + m * k, vt = s + k
        for c in 0..<k {
            s[c] = values[c]
            for i in 0..<m { u[i * k + c] = tall ? left[i + c * m] : right[c + i * k] }
            for j in 0..<n { vt[c * n + j] = tall ? right[c + j * k] : left[j + c * n] }
        }
    }

    // MARK: pass 2

    /// Writes the weights, W ← W − lr·λ·W − lr·U·diag(f(σ))·Vᵀ, and the state.
    /// Before the commit: a bound that proves the new weights finite. The
    /// new factors' entries are within ±2 (checked in prepare), so
    /// |U·diag(f(σ))·Vᵀ| <= 4·Σ f(σ_a); the momentum was checked in prepare.
    /// An inconclusive bound (lr or weights near float's limit) refuses.
    func verify(lr: Double, context: StepContext) -> String? {
        if let problem = OutputBounds.scalarsProblem(lr: lr, weightDecay: hyper.weightDecay) { return problem }
        let w = weights.kernel.maxMagnitude(count: m * n, context: context)
        guard w.isFinite else { return "the weights contain NaN or infinity" }
        let k = Self.components(header), s = result + m * k
        var weightSum = 0.0
        for a in 0..<k { weightSum += Double(directionWeight(s[a])) }
        let bound = w * (1 + lr * hyper.weightDecay) + lr * 4 * weightSum
        // Bounded in the parameter's type (f16: 65504).
        return bound <= min(OutputBounds.proven, weights.stored.provenBound)
            ? nil : "the new weights could exceed \(weights.stored.rangeName)'s range (|w| \(w), lr \(lr))"
    }

    /// (The row buffers were reserved in prepare: their request cannot fail here.)
    func commit(lr: Double, workspace: inout Workspace, pool: ThreadPool, parts: Int) throws(MlorcError) {
        let m = m, n = n, k = Self.components(header), w = weights, decayRate = Float(lr * hyper.weightDecay)
        let u = result, s = result + m * k, vt = s + k
        let coef = (0..<k).map { Float(lr) * directionWeight(s[$0]) }
        let buffers = try rowBuffers(&workspace, parts: parts)
        if let w = w.fp32 {
            pool.run(parts: parts) { part in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { rowCoef in
                    for i in partition(m, parts: parts, part: part) {
                        for a in 0..<k { rowCoef[a] = coef[a] * u[i * k + a] }
                        MoFaSGDKernels.updateRow(w + i * n, decayRate: decayRate, coef: rowCoef.baseAddress!, vt, k: k, n: n)
                    }
                }
            }
        } else { pool.run(parts: parts) { part in
            let buffer = buffers.weights(part)
            withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { rowCoef in
                for i in partition(m, parts: parts, part: part) {
                    for a in 0..<k { rowCoef[a] = coef[a] * u[i * k + a] }
                    let row = w.row(i, 0..<n, buffer: buffer)
                    MoFaSGDKernels.updateRow(row, decayRate: decayRate, coef: rowCoef.baseAddress!, vt, k: k, n: n)
                    w.finish(i, 0..<n, row)
                }
            }
        } }
        if header.storage == .lowRank {
            payload.update(from: result, count: k * (m + n + 1))
        } else {
            let beta = Float(hyper.beta1), mom = payload, g = grad
            for e in 0..<(m * n) { mom[e] = mofasgdMomentum(beta, mom[e], g[e]) }
        }
    }
}

/// The dense momentum recurrence, one expression so that pass 1's check and
/// pass 2's write round identically.
@inline(__always)
func mofasgdMomentum(_ beta: Float, _ m: Float, _ g: Float) -> Float { beta * m + g }
