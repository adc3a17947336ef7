/// GaLore-AdamW (Zhao et al. 2024, arXiv 2403.03507), the projected-gradient
/// baseline MLorc is compared with. On an m x n matrix with s = min(m, n),
/// L = max(m, n):
///
///   every T steps (T = MLORC_PARAM_GALORE_INTERVAL, first at step 1):
///       P = the top-r singular vectors of G on its short side (left for
///       m <= n, right otherwise), by the randomized SVD with the handle's
///       oversampling and power iterations (the paper uses an exact SVD);
///   R = PᵀG (m <= n) or G P (m > n): r x L;  M, V: AdamW moments of R
///   (kept, not reset, when P changes, as in the authors' code);
///   W ← W·(1 − lr·λ) − α·lr/bc1·P·(M / (√V/√bc2 + ε))  (α = MLORC_PARAM_GALORE_SCALE).
///
/// State payload: Pᵀ (r x s, row-major), then M and V (r x L, row-major;
/// for m > n these hold the transposed m x r matrices).
struct GaLoreStep<Rule: MomentRule> {
    let rule: Rule
    let hyper: Hyperparameters
    let header: StateFormat.Header
    /// The weights (with a master, MomentPlan writes the parameter back
    /// after the step) and the gradient, rows as fp32.
    let weights: WeightRows, grad: ElementRows
    let payload: UnsafeMutablePointer<Float>

    init(rule: Rule, hyper: Hyperparameters, tensor: Optimizer.Prepared) {
        (self.rule, self.hyper, header) = (rule, hyper, tensor.header)
        (weights, grad, payload) = (tensor.weightRows(hyper, writesParam: false), tensor.gradRows, tensor.payload)
        prepared = tensor
    }
    private let prepared: Optimizer.Prepared

    /// Pass 1. The projected moments square sums of up to 2^31 gradient
    /// entries: entries above 1e14 could overflow them, so they are refused
    /// like non-finite ones (the state stays valid).
    func gradientIsWithinBound(_ context: StepContext) -> Bool {
        gradientIsWithin(1e14, grad.kind, prepared.gradient, count: prepared.header.rows * prepared.header.cols, context)
    }

    /// Before the commit: bounds that prove the new weights and projected
    /// moments finite. |P| <= 1.001 (validated, or fresh and orthonormal), so
    /// |R| <= short·1.001·max|g| and |P·D| <= rank·1.001·max|D|. Where the
    /// bound is inconclusive (ε = 0, values near float's limit) the step is
    /// refused: GaLore's projection may be refreshed in the commit, so its
    /// exact outputs are not known before it.
    func verify(_ context: StepContext) -> String? {
        let count = m * n
        let w = weights.kernel.maxMagnitude(count: count, context: context)
        let g = grad.maxMagnitude(count: count, context: context)
        guard w.isFinite else { return "the weights contain NaN or infinity" }
        let modifiers = rule.modifiers
        let gradient = Double(abs(modifiers.gradScale)) * g + Double(abs(modifiers.weightMix)) * w
        let projected = Double(short) * 1.001 * gradient
        let previous = PerMoment(OutputBounds.maxMagnitude(F32.self, moment1, count: r * long, context: context),
                                 OutputBounds.maxMagnitude(F32.self, moment2, count: r * long, context: context))
        if let b = rule.outputBounds(grad: projected, moments: previous) {
            let scale = Double(r) * 1.001 * hyper.galoreScale * Double(rule.stepSize)
            let weights = w * (1 + Double(rule.decayRate)) + scale * b.direction
            // The weights are bounded in the parameter's type (f16: 65504).
            if weights <= self.weights.stored.provenBound,
               max(weights, b.moments[0], b.moments[1], b.direction) <= OutputBounds.proven { return nil }
            // |m|/ε is far too loose for f16's range: Adam's own ratio bound.
            if max(b.moments[0], b.moments[1]) <= OutputBounds.proven, let k = directionBound(),
               w * (1 + Double(rule.decayRate)) + scale * k <= self.weights.stored.provenBound {
                return nil
            }
        }
        return "the new weights or projected moments could exceed \(self.weights.stored.rangeName)'s range (bounds from |w| \(w), |g| \(g), eps \(hyper.eps) and lr are inconclusive)"
    }

    /// A bound of AdamW's direction |m'|/(√v'·√(1/bc2) + ε) <= |m'|/√v' (bc2 <= 1)
    /// from the stored moments, or nil. m and v are EMAs of the same entries
    /// of R, so |m| <= K·√v with K² = (1−β1)² / ((1−β2)(1 − β1²/β2)) holds
    /// from the zero state on (Cauchy–Schwarz over the EMA weights, for
    /// β1² < β2), and it carries over to m', v' whatever R is: if
    /// |m| <= K·√v then |m'| <= β1·K·√v + (1−β1)·|R| <= K·√v' by Cauchy–
    /// Schwarz again. The stored moments are checked against K·1.01 (room
    /// for fp32 rounding over many steps); a state that fails (or ε = 0,
    /// where 0/0 is possible) gets nil. Used for GaLore-AdamW only (its rule
    /// is AdamW's).
    private func directionBound() -> Double? {
        let b1 = hyper.beta1, b2 = hyper.beta2
        guard hyper.eps > 0, b1 * b1 < b2 else { return nil }
        let k = (1 - b1) / ((1 - b2) * (1 - b1 * b1 / b2)).squareRoot() * 1.01
        let m1 = moment1, m2 = moment2, count = r * long
        for e in 0..<count where !(Double(abs(m1[e])) <= k * Double(m2[e]).squareRoot()) { return nil }
        return k * 1.001  // the new moments' fp32 rounding
    }

    var m: Int { header.rows }
    var n: Int { header.cols }
    var r: Int { header.rank }
    var short: Int { min(m, n) }
    var long: Int { max(m, n) }
    var projectsRows: Bool { m <= n }
    var projection: UnsafeMutablePointer<Float> { payload }                // r x s
    var moment1: UnsafeMutablePointer<Float> { payload + r * short }      // r x L
    var moment2: UnsafeMutablePointer<Float> { payload + r * short + r * long }

    /// Floats of the low-rank payload: Pᵀ (rank x short side) and two
    /// rank x long side moments; nil on overflow.
    static func payloadFloats(rows: Int, cols: Int, rank: Int) -> Int? {
        let (floats, o) = rank.multipliedReportingOverflow(by: min(rows, cols) + 2 * max(rows, cols))
        return o ? nil : floats
    }

    /// A payload no step can have written: projection entries beyond an
    /// orthonormal bound, non-finite moments, or a negative second moment
    /// (its square root would make the update NaN).
    static func checkPayload(_ h: StateFormat.Header, _ payload: UnsafePointer<Float>) throws(MlorcError) {
        let projection = h.rank * min(h.rows, h.cols), moments = 2 * h.rank * max(h.rows, h.cols)
        guard allWithin(payload, count: projection, bound: StateFormat.orthonormalBound),
              allWithin(payload + projection, count: moments, bound: .greatestFiniteMagnitude) else {
            throw MlorcError(.stateCorrupted, "state projection or moments are out of range (not written by a step)")
        }
        let second = payload + projection + moments / 2
        for e in 0..<(moments / 2) where second[e] < 0 {
            throw MlorcError(.stateCorrupted, "state second moment is negative (not written by a step)")
        }
    }

    /// Refreshes P when due, projects, runs AdamW on R and writes the weights.
    func update(workspace: inout Workspace, pool: ThreadPool, parts: Int) throws(MlorcError) {
        let t = header.step + 1
        let buffers = try reserveRowBuffers(&workspace, parts: parts)
        if (t - 1) % UInt64(hyper.galoreInterval) == 0 { try refreshProjection(workspace: &workspace, buffers: buffers) }
        let projected = try workspace.floats(.panels, r * long)  // R, then the scaled direction
        project(into: projected, pool: pool, parts: parts, buffers: buffers)
        // AdamW on R: direction·stepSize in place of R.
        eachChunk(r * long) { e, c in
            var mv = load8(moment1 + e, c), vv = load8(moment2 + e, c)
            let u = rule.apply(&mv, &vv, load8(projected + e, c))
            store8(mv, moment1 + e, c)
            store8(vv, moment2 + e, c)
            store8(u * (rule.stepSize * Float(hyper.galoreScale)), projected + e, c)
        }
        applyUpdate(projected, pool: pool, parts: parts, buffers: buffers)
    }

    /// Each part's row buffers in .threadScratch, for half precision only: a
    /// widened gradient row and weight row.
    struct RowBuffers {
        let base: UnsafeMutablePointer<Float>?, gradFloats: Int, weightFloats: Int
        func grad(_ part: Int) -> UnsafeMutablePointer<Float>? { base.map { $0 + part * (gradFloats + weightFloats) } }
        func weights(_ part: Int) -> UnsafeMutablePointer<Float>? { grad(part).map { $0 + gradFloats } }
    }

    /// The row buffers of `parts` parts; requested in prepare too, so that
    /// the commit's request cannot fail.
    @discardableResult
    func reserveRowBuffers(_ workspace: inout Workspace, parts: Int) throws(MlorcError) -> RowBuffers {
        let g = grad.bufferFloats, w = weights.bufferFloats, floats = parts * (g + w)
        return RowBuffers(base: floats == 0 ? nil : try workspace.floats(.threadScratch, floats), gradFloats: g, weightFloats: w)
    }

    /// R (r x L): Pᵀ G for m <= n (R[a, :] = Σ_i P[i, a]·G[i, :], columns split
    /// between parts so each entry is summed by one part in row order), or
    /// (G P)ᵀ for m > n (R[a, i] = G[i, :]·Pᵀ[a, :], rows split).
    private func project(into out: UnsafeMutablePointer<Float>, pool: ThreadPool, parts: Int, buffers: RowBuffers) {
        let m = m, n = n, r = r, p = projection, g = grad
        if let g = g.fp32 {  // fp32: the rows in place
            if projectsRows {
                pool.run(parts: parts) { part in
                    let cols = partition(n, parts: parts, part: part, align: 8)
                    for a in 0..<r { for j in cols { out[a * n + j] = 0 } }
                    for i in 0..<m {
                        for a in 0..<r { axpy(p[a * m + i], g + i * n, out + a * n, cols) }
                    }
                }
            } else {
                pool.run(parts: parts) { part in
                    for i in partition(m, parts: parts, part: part) {
                        for a in 0..<r { out[a * m + i] = dot(g + i * n, p + a * n, n) }
                    }
                }
            }
        } else if projectsRows {
            pool.run(parts: parts) { part in
                let cols = partition(n, parts: parts, part: part, align: 8), buffer = buffers.grad(part)
                for a in 0..<r { for j in cols { out[a * n + j] = 0 } }
                for i in 0..<m {
                    let row = g.row(i, cols, buffer: buffer)
                    for a in 0..<r { axpy(p[a * m + i], row, out + a * n, cols) }
                }
            }
        } else {
            pool.run(parts: parts) { part in
                let buffer = buffers.grad(part)
                for i in partition(m, parts: parts, part: part) {
                    let row = g.row(i, buffer: buffer)
                    for a in 0..<r { out[a * m + i] = dot(row, p + a * n, n) }
                }
            }
        }
    }

    /// W ← W − lr·λ·W − P·D (m <= n) or − Dᵀ Pᵀ (m > n), D the scaled direction.
    private func applyUpdate(_ d: UnsafeMutablePointer<Float>, pool: ThreadPool, parts: Int, buffers: RowBuffers) {
        let m = m, n = n, r = r, p = projection, w = weights, decay = rule.decayRate, rowsSide = projectsRows
        if let w = w.fp32 {  // fp32: the rows in place
            pool.run(parts: parts) { part in
                for i in partition(m, parts: parts, part: part) {
                    let row = w + i * n
                    if decay != 0 { axpy(-decay, row, row, 0..<n) }
                    for a in 0..<r {
                        if rowsSide {
                            axpy(-p[a * m + i], d + a * n, row, 0..<n)
                        } else {
                            axpy(-d[a * m + i], p + a * n, row, 0..<n)
                        }
                    }
                }
            }
            return
        }
        pool.run(parts: parts) { part in
            let buffer = buffers.weights(part)
            for i in partition(m, parts: parts, part: part) {
                let row = w.row(i, 0..<n, buffer: buffer)
                if decay != 0 { axpy(-decay, row, row, 0..<n) }
                for a in 0..<r {
                    if rowsSide {
                        axpy(-p[a * m + i], d + a * n, row, 0..<n)
                    } else {
                        axpy(-d[a * m + i], p + a * n, row, 0..<n)
                    }
                }
                w.finish(i, 0..<n, row)
            }
        }
    }

    /// P ← the top-r singular vectors of G on its short side, by the
    /// randomized SVD of A = G (m <= n) or Gᵀ, stored as Pᵀ (r x s).
    private func refreshProjection(workspace: inout Workspace, buffers: RowBuffers) throws(MlorcError) {
        let buffer = buffers.grad(0)  // single-threaded products: part 0's row
        let s = short, l = RandomizedSVD.sketchWidth(rank: r, oversampling: hyper.oversampling, rows: m, cols: n)
        // A is s x long: apply(A, X long x l) and applyT(A, Y s x l), column-major.
        let svd = try RandomizedSVD.explicit(rows: s, cols: long, width: l, powerIterations: hyper.powerIterations,
                                             seed: hyper.seed, tensorID: header.tensorID, step: header.step + 1,
                                             workspace: &workspace,
                                             apply: { x, y in applyA(x, into: y, l, buffer: buffer) },
                                             applyT: { y, x in applyAT(y, into: x, l, buffer: buffer) })
        // P = Q Ũ[:, :r], stored as Pᵀ (r x s).
        RandomizedSVD.leftVectors(q: svd.q, rows: s, width: l, ut: svd.ut, rank: r, into: projection,
                                  rowStride: 1, columnStride: s)
        // Each vector's sign is fixed (largest entry positive): the moments
        // outlive a refresh, and an arbitrary sign flip would negate them.
        for a in 0..<r {
            let vector = projection + a * s
            var largest: Float = 0
            for x in 0..<s where abs(vector[x]) > abs(largest) { largest = vector[x] }
            if largest < 0 { for x in 0..<s { vector[x] = -vector[x] } }
        }
    }

    /// y (s x l) = A·x (x: other x l), A = G or Gᵀ.
    /// (Half-precision gradient rows are widened into `buffer` at each use.)
    private func applyA(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ l: Int,
                        buffer: UnsafeMutablePointer<Float>?) {
        if projectsRows {  // A = G: y[i, b] = G[i, :]·x[:, b]
            for b in 0..<l { for i in 0..<m { y[i + b * m] = dot(grad.row(i, buffer: buffer), x + b * n, n) } }
        } else {           // A = Gᵀ: y[j, b] = Σ_i G[i, j] x[i, b]
            y.initialize(repeating: 0, count: n * l)
            for b in 0..<l { for i in 0..<m { axpy(x[i + b * m], grad.row(i, buffer: buffer), y + b * n, 0..<n) } }
        }
    }

    /// x (other x l) = Aᵀ·y (y: s x l).
    private func applyAT(_ y: UnsafePointer<Float>, into x: UnsafeMutablePointer<Float>, _ l: Int,
                         buffer: UnsafeMutablePointer<Float>?) {
        if projectsRows {  // Aᵀ = Gᵀ: x[j, b] = Σ_i G[i, j] y[i, b]
            x.initialize(repeating: 0, count: n * l)
            for b in 0..<l { for i in 0..<m { axpy(y[i + b * m], grad.row(i, buffer: buffer), x + b * n, 0..<n) } }
        } else {           // Aᵀ = G: x[i, b] = G[i, :]·y[:, b]
            for b in 0..<l { for i in 0..<m { x[i + b * m] = dot(grad.row(i, buffer: buffer), y + b * n, n) } }
        }
    }
}
