import CWideKernels

/// The AVX-512 sketch pass (Sources/CWideKernels/sketch_rows_r4.c) for the
/// configurations it covers: AdamW and Lion with no option on, rank 4 and
/// sketch width 4, fp32 or bf16 weights and gradient (each either, so bf16
/// with an fp32 master or gradient too), columns a multiple of 8. It
/// computes exactly what the Swift sketch pass computes (the golden digests
/// hold on either path): each 16-lane vector holds the same 8 columns of two
/// rows, so every lane sums what an 8-lane accumulator sums, in the same order,
/// and each load of Ω and Vt serves both rows.
enum WideSketchPass {
    /// True if the wide kernel ran the pass over `a.rows`.
    static func run<Rule: MomentRule, A: WeightAccess>(_ rule: Rule, _ t: LowRankTensor<A>, _ a: SketchRows) -> Bool {
        guard WideColumnPass.available, t.rank == 4, t.sketchWidth == 4, t.cols % 8 == 0,
              let weightsBF16 = WideColumnPass.bf16Flag(t.weightKind), let gradBF16 = WideColumnPass.bf16Flag(t.gradKind)
        else { return false }
        let fv = t.factors[Rule.momentCount - 1]
        var args = wide_sketch_rows(
            rows: t.rows, cols: t.cols, row_begin: a.rows.lowerBound, row_end: a.rows.upperBound,
            weights: t.weights, grad: t.grad, weights_bf16: weightsBF16, grad_bf16: gradBF16,
            u_v: nil, s_v: nil, vt_v: nil, omega: a.omega, beta2: 0, one_minus_beta2: 0,
            grad_sketch: a.gradSketch, y: a.y, y_neg: a.negatives.yNeg,
            row_sum: a.negatives.rowSum, row_count: a.negatives.rowCount,
            input_bits: UnsafeMutableRawPointer(a.inputBits).assumingMemoryBound(to: Int32.self))
        if let adamw = rule as? AdamWRule {
            args.u_v = UnsafePointer(fv.u)
            args.s_v = UnsafePointer(fv.s)
            args.vt_v = UnsafePointer(fv.vt)
            args.beta2 = adamw.beta2
            args.one_minus_beta2 = adamw.oneMinusBeta2
        } else if !(rule is LionRule) {
            return false
        }
        wide_sketch_rows_r4(&args)
        return true
    }
}
