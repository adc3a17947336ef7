/// The plan of every rule written as a MomentRule (a per-element update of
/// one or two moments; Rules/): per tensor a rule value
/// built from the step's scalars, the options around it (StepModifiers), and
/// the tensor's storage — dense moments, MLorc factors, or a projection.
struct MomentPlan<Rule: MomentRule>: BatchPlan {
    /// What low-rank storage means for the rule.
    enum LowRank { case factors, projection }

    let hyper: Hyperparameters
    let lowRank: LowRank
    /// The rule for the 1-based step number of a tensor.
    let makeRule: (UInt64) -> Rule
    var adaptation: MomentAdaptation<Rule>?

    var regionSlot: Workspace.Slot { .sketches }

    func regionFloats(_ t: Optimizer.Prepared) -> Int {
        t.header.storage == .lowRank && lowRank == .factors ? LowRankStep<Rule, FP32Access>.regionFloats(t.header, hyper) : 0
    }

    func makeStep(_ t: Optimizer.Prepared, region: UnsafeMutablePointer<Float>) -> MomentTensorStep<Rule> {
        var rule = makeRule(t.header.step + 1)
        rule.modifiers.grams = hyper.grams
        let storage: MomentTensorStep<Rule>.Storage =
            t.header.storage == .dense ? .dense : (lowRank == .factors ? .factors : .projection)
        return MomentTensorStep(rule: rule, tensor: t, hyper: hyper, storage: storage, region: region,
                                writeStatistics: adaptation.map { a in { t, rule in a.write(t, rule) } })
    }

    mutating func reduce(_ steps: inout [MomentTensorStep<Rule>]) throws(MlorcError) {
        guard var a = adaptation else { return }
        try a.reduce(&steps, hyper: hyper)
        adaptation = a
    }

    func finish() { adaptation?.finish() }
}

/// One tensor of a MomentPlan. Each phase picks one of two compiled paths:
/// fp32 everywhere (weights, gradient, moments: FP32Dense / FP32Access), or
/// the one path for every other combination of element types, which branches
/// on them at run time (Rule.OtherDense / Rule.OtherWeights: AnyDense /
/// AnyElementAccess for the rules that take them). Compiling a path per
/// combination had multiplied the build time.
struct MomentTensorStep<Rule: MomentRule>: TensorStep {
    enum Storage { case dense, factors, projection }

    var rule: Rule
    let tensor: Optimizer.Prepared
    let hyper: Hyperparameters
    let storage: Storage
    let region: UnsafeMutablePointer<Float>
    /// D-adaptation: stores the tensor's new statistics before its update.
    let writeStatistics: ((Optimizer.Prepared, Rule) -> Void)?

    var refusal: String {
        "gradient contains NaN or infinity (or the new moments overflow float); step refused, nothing was changed"
    }

    private var elements: Int { tensor.header.rows * tensor.header.cols }
    /// The low-rank passes see fp32 factors (bf16 ones are widened into the
    /// region), so only the weights' and gradient's types choose their path.
    private var lowRankFP32: Bool { tensor.elements == .f32 }
    private var denseFP32: Bool { tensor.elements == .f32 && !tensor.header.bf16Moments }

    /// The low-rank passes: the fp32 fast path, or the one for every other
    /// element type (compiled once, not per type).
    private func lowRank<A: WeightAccess>(_: A.Type) -> LowRankStep<Rule, A> {
        LowRankStep<Rule, A>(rule: rule, tensor: tensor, hyper: hyper, region: region,
                             rounding: tensor.weightRounding(hyper))
    }

    private func dense<A: DenseAccess>(_: A.Type) -> DenseStep<Rule, A> {
        DenseStep<Rule, A>(rule: rule, tensor: tensor, hyper: hyper)
    }

    mutating func prepare(_ context: inout StepContext) throws(MlorcError) -> Bool {
        // An fp32-only rule's "other" path is its fp32 one (MomentRule.OtherDense): only fp32 may reach it.
        precondition(ObjectIdentifier(Rule.OtherDense.self) != ObjectIdentifier(FP32Dense.self) || tensor.elements == .f32
                         && !tensor.header.bf16Moments, "a non-fp32 tensor reached an fp32-only rule")
        if hyper.orthograd || hyper.clipNorm > 0 {
            let sums = gradientTotals(tensor.denseTensor(hyper), rows: tensor.header.rows,
                                      cols: tensor.header.cols, context)
            rule.modifiers.setGradientTransform(gg: sums.x, wg: sums.y, ww: sums.z,
                                                orthograd: hyper.orthograd, clipNorm: hyper.clipNorm)
            guard sums.x.isFinite && sums.y.isFinite && sums.z.isFinite else { return false }
        }
        switch storage {
        case .factors:
            let parts = context.parts(for: elements)
            return lowRankFP32
                ? try lowRank(FP32Access.self).sketch(workspace: &context.workspace, pool: context.pool, parts: parts)
                : try lowRank(Rule.OtherWeights.self).sketch(workspace: &context.workspace, pool: context.pool, parts: parts)
        case .dense:
            // verify's scan sees a non-finite gradient too; a reduction over
            // the batch must not see one first.
            return writeStatistics == nil || dense(FP32Dense.self).gradientIsFinite(context)
        case .projection:
            let galore = GaLoreStep(rule: rule, hyper: hyper, tensor: tensor)
            try galore.reserveRowBuffers(&context.workspace, parts: context.parts(for: elements))
            return galore.gradientIsWithinBound(context)
        }
    }

    mutating func verify(_ context: inout StepContext) throws(MlorcError) -> String? {
        guard rule.stepSize.isFinite, rule.decayRate.isFinite else {
            return "the step size \(rule.stepSize) or decay rate \(rule.decayRate) overflows float (lr too large)"
        }
        let notFinite = "the new weights or moments would not be finite in \(dtypeName(tensor.header.paramDtype)) (check the state, the gradient's scale and lr)"
        switch storage {
        case .dense:
            if denseFP32 {
                if hyper.cautious { rule.modifiers.cautiousScale = dense(FP32Dense.self).cautiousScale(context) }
                return dense(FP32Dense.self).verify(context)
            }
            if hyper.cautious { rule.modifiers.cautiousScale = dense(Rule.OtherDense.self).cautiousScale(context) }
            return dense(Rule.OtherDense.self).verify(context)
        case .factors:
            let (w, g) = lowRankFP32 ? lowRank(FP32Access.self).inputBounds(context)
                                     : lowRank(Rule.OtherWeights.self).inputBounds(context)
            guard w.isFinite else { return "the weights contain NaN or infinity" }
            let parts = context.parts(for: elements)
            let finite = lowRankFP32
                ? try lowRank(FP32Access.self).outputsAreFinite(weightBound: w, gradBound: g, workspace: &context.workspace,
                                                              pool: context.pool, parts: parts)
                : try lowRank(Rule.OtherWeights.self).outputsAreFinite(weightBound: w, gradBound: g,
                                                                    workspace: &context.workspace,
                                                                    pool: context.pool, parts: parts)
            return finite ? nil : notFinite
        case .projection:
            return GaLoreStep(rule: rule, hyper: hyper, tensor: tensor).verify(context)
        }
    }

    mutating func commit(_ context: inout StepContext) throws(MlorcError) {
        writeStatistics?(tensor, rule)
        let parts = context.parts(for: elements)
        switch storage {
        case .factors:
            if lowRankFP32 {
                try lowRank(FP32Access.self).update(workspace: &context.workspace, pool: context.pool, parts: parts)
            } else {
                try lowRank(Rule.OtherWeights.self).update(workspace: &context.workspace, pool: context.pool, parts: parts)
            }
        case .projection:
            try GaLoreStep(rule: rule, hyper: hyper, tensor: tensor)
                .update(workspace: &context.workspace, pool: context.pool, parts: parts)
        case .dense:
            if denseFP32 { dense(FP32Dense.self).update(context) } else { dense(Rule.OtherDense.self).update(context) }
        }
        if tensor.elements.hasMaster { writeBackMaster(tensor, rounding: tensor.weightRounding(hyper), context) }
    }

}

/// Σg², Σw·g, Σw² of a tensor (rows summed in order: thread-count
/// independent), through the fp32 path when weights and gradient are fp32.
func gradientTotals(_ t: DenseTensor, rows: Int, cols: Int, _ context: StepContext) -> SIMD3<Double> {
    let p = min(context.parts(for: rows * cols), rows)
    let fp32 = t.weightKind == .f32 && t.gradKind == .f32
    var perRow = [SIMD4<Double>](repeating: .zero, count: rows)
    perRow.withUnsafeMutableBufferPointer { sums in
        context.pool.run(parts: p) { part in
            let range = partition(rows, parts: p, part: part)
            if fp32 {
                gradientSums(FP32Dense.self, t, cols: cols, rows: range, into: sums.baseAddress!)
            } else {
                gradientSums(AnyDense.self, t, cols: cols, rows: range, into: sums.baseAddress!)
            }
        }
    }
    let total = perRow.reduce(SIMD4<Double>.zero, +)
    return SIMD3(total.x, total.y, total.z)
}

/// The parameter ← the rounding of the updated fp32 master weights.
func writeBackMaster(_ tensor: Optimizer.Prepared, rounding: WeightRounding, _ context: StepContext) {
    let n = tensor.header.rows * tensor.header.cols, p = context.parts(for: n), kind = tensor.elements.stored
    let master = UnsafePointer(tensor.kernelWeights.assumingMemoryBound(to: Float.self)), param = tensor.param
    context.pool.run(parts: p) { part in
        let range = partition(n, parts: p, part: part, align: 8)
        eachChunk(in: range) { e, count in kind.store8(F32.load8(master + e, count), param, e, count, rounding: rounding) }
    }
}

/// The group side of a D-adaptation step: per-tensor sums reduced over the
/// batch into the new estimate, the rules rebuilt with it, the group state
/// written after the tensors.
struct MomentAdaptation<Rule: MomentRule> {
    let binding: GroupBinding
    let lr: Double
    let contribution: (DAdaptation.Tensor, Rule, _ write: Bool) -> DAdaptation.Contribution
    let refresh: (Rule, _ next: GroupState) -> Rule
    private var next: GroupState?

    init(binding: GroupBinding, lr: Double,
         contribution: @escaping (DAdaptation.Tensor, Rule, Bool) -> DAdaptation.Contribution,
         refresh: @escaping (Rule, GroupState) -> Rule) {
        (self.binding, self.lr, self.contribution, self.refresh) = (binding, lr, contribution, refresh)
    }

    static func statistics(_ t: Optimizer.Prepared, _ rule: Rule) -> DAdaptation.Tensor {
        DAdaptation.Tensor(header: t.header, weights: t.kernelWeightRows, grad: t.gradRows, payload: t.payload,
                           modifiers: rule.modifiers)
    }

    mutating func reduce(_ steps: inout [MomentTensorStep<Rule>], hyper: Hyperparameters) throws(MlorcError) {
        let total = steps.reduce(DAdaptation.Contribution()) { $0 + localContribution($1.tensor, $1.rule) }
        let next = try advance(total, hyper: hyper)
        for i in steps.indices { steps[i].rule = refresh(steps[i].rule, next) }
    }

    /// What a tensor (or row shard) adds to the estimate's sums, read-only.
    func localContribution(_ t: Optimizer.Prepared, _ rule: Rule) -> DAdaptation.Contribution {
        contribution(Self.statistics(t, rule), rule, false)
    }

    /// The group state after this step, from the sums over every tensor
    /// (of every rank); kept for finish().
    mutating func advance(_ total: DAdaptation.Contribution, hyper: Hyperparameters) throws(MlorcError) -> GroupState {
        let next = DAdaptation.update(binding.state, total: total, hyper: hyper, lr: lr)
        guard total.numerator.isFinite, total.denominator.isFinite, next.d.isFinite, next.numerator.isFinite else {
            throw MlorcError(.nonFinite, "the step-size estimate overflows (numerator \(total.numerator), denominator \(total.denominator)); step refused, nothing was changed")
        }
        self.next = next
        return next
    }

    func write(_ t: Optimizer.Prepared, _ rule: Rule) { _ = contribution(Self.statistics(t, rule), rule, true) }

    func finish() { next?.write(to: binding.pointer) }
}
