import CWideKernels

/// The AVX-512 column pass (Sources/CWideKernels) for the configurations it
/// covers: AdamW and Lion with no option on, rank 4 and sketch width 4, fp32
/// weights and gradient, updating the weights. It computes exactly what the Swift
/// column pass computes (the golden digests hold on either path); it is
/// faster because 16 lanes and 32 registers let four rows share each load of
/// the factor and output panels, which stay in registers across the rows.
enum WideColumnPass {
    static let available = wide_kernels_available() != 0

    /// Runs the full 8-column blocks of `cols` through the wide kernel if it
    /// covers this step, and returns the columns left to the Swift pass (the
    /// last, partial block); nil if it does not cover the step.
    static func update<Rule: MomentRule>(
        _ rule: Rule, _ t: LowRankTensor<FP32Access>, _ cols: Range<Int>, _ q: PerMoment<UnsafePointer<Float>>,
        _ c: PerMoment<Float>, _ out: PerMoment<UnsafeMutablePointer<Float>>
    ) -> Range<Int>? {
        guard available, t.rank == 4, t.sketchWidth == 4 else { return nil }
        let fullEnd = cols.lowerBound + (cols.count & ~7)
        let weights = t.weights.assumingMemoryBound(to: Float.self), grad = t.grad.assumingMemoryBound(to: Float.self)
        let fm = t.factors.first, fv = t.factors.second
        if let adamw = rule as? AdamWRule {
            guard fullEnd > cols.lowerBound else { return cols }
            var a = wide_adamw_columns(
                rows: t.rows, cols: t.cols, col_begin: cols.lowerBound, col_end: fullEnd, weights: weights, grad: grad,
                u_m: fm.u, s_m: fm.s, vt_m: fm.vt, q_m: q.first,
                u_v: fv.u, s_v: fv.s, vt_v: fv.vt, q_v: q.second,
                out_m: out.first, out_v: out.second, fix: c.second,
                beta1: adamw.beta1, one_minus_beta1: adamw.oneMinusBeta1,
                beta2: adamw.beta2, one_minus_beta2: adamw.oneMinusBeta2,
                eps: adamw.eps, inverse_sqrt_bias_correction2: adamw.inverseSqrtBiasCorrection2,
                step_size: adamw.stepSize, decay_rate: adamw.decayRate)
            wide_adamw_columns_r4(&a)
        } else if let lion = rule as? LionRule {
            guard fullEnd > cols.lowerBound else { return cols }
            var a = wide_lion_columns(
                rows: t.rows, cols: t.cols, col_begin: cols.lowerBound, col_end: fullEnd, weights: weights, grad: grad,
                u: fm.u, s: fm.s, vt: fm.vt, q: q.first, out: out.first,
                beta1: lion.beta1, one_minus_beta1: lion.oneMinusBeta1,
                beta2: lion.beta2, one_minus_beta2: lion.oneMinusBeta2,
                step_size: lion.stepSize, decay_rate: lion.decayRate)
            wide_lion_columns_r4(&a)
        } else {
            return nil
        }
        return fullEnd..<cols.upperBound
    }
}
