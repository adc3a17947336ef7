import CWideKernels

/// The AVX-512 column pass (Sources/CWideKernels) for the configurations it
/// covers: AdamW and Lion with no option on, rank 4 and sketch width 4,
/// weights and gradient each fp32 or bf16 (so fp32 tensors, a bf16 parameter
/// with or without fp32 master weights, and a bf16 one with an fp32
/// gradient), updating the weights. It computes exactly what the Swift
/// column pass computes, rounding and stochastic bits included (the golden
/// digests hold on either path); it is faster because 16 lanes and 32
/// registers let four rows share each load of the factor and output panels,
/// which stay in registers across the rows.
enum WideColumnPass {
    static let available = wide_kernels_available() != 0

    /// How the kernel reads and writes this tensor's elements; nil if it does not cover them.
    /// Weights and gradient are each fp32 or bf16; bf16 weights (a parameter without a master)
    /// are rounded as `t.rounding` says, fp32 weights (the parameter or its master) are stored as
    /// they are (a master's parameter is rounded after the step, as on the Swift path).
    static func elements<A: WeightAccess>(_ t: LowRankTensor<A>) -> wide_elements? {
        guard let weightsBF16 = bf16Flag(t.weightKind), let gradBF16 = bf16Flag(t.gradKind) else { return nil }
        let key = weightsBF16 == 1 ? t.rounding.key : nil
        return wide_elements(weights_bf16: weightsBF16, grad_bf16: gradBF16, stochastic: key == nil ? 0 : 1,
                             key0: key?.0 ?? 0, key1: key?.1 ?? 0, offset: Int64(t.rounding.offset))
    }

    /// The wide kernels' flag for an element type: 0 for fp32, 1 for bf16; nil for one they do not read.
    static func bf16Flag(_ kind: ElementKind) -> Int32? {
        switch kind {
        case .f32: 0
        case .bf16: 1
        default: nil
        }
    }

    /// Runs the full 8-column blocks of `cols` through the wide kernel if it
    /// covers this step, and returns the columns left to the Swift pass (the
    /// last, partial block); nil if it does not cover the step.
    static func update<Rule: MomentRule, A: WeightAccess>(
        _ rule: Rule, _ t: LowRankTensor<A>, _ cols: Range<Int>, _ q: PerMoment<UnsafePointer<Float>>,
        _ c: PerMoment<Float>, _ out: PerMoment<UnsafeMutablePointer<Float>>
    ) -> Range<Int>? {
        guard available, t.rank == 4, t.sketchWidth == 4, let elements = elements(t) else { return nil }
        let fullEnd = cols.lowerBound + (cols.count & ~7)
        let fm = t.factors.first, fv = t.factors.second
        if let adamw = rule as? AdamWRule {
            guard fullEnd > cols.lowerBound else { return cols }
            var a = wide_adamw_columns(
                rows: t.rows, cols: t.cols, col_begin: cols.lowerBound, col_end: fullEnd, weights: t.weights,
                grad: t.grad, elements: elements,
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
                rows: t.rows, cols: t.cols, col_begin: cols.lowerBound, col_end: fullEnd, weights: t.weights,
                grad: t.grad, elements: elements,
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
