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
        t.header.storage == .lowRank && lowRank == .factors ? LowRankStep<Rule, F32Tensors>.regionFloats(t.header, hyper) : 0
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

/// One tensor of a MomentPlan.
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

    mutating func prepare(_ context: inout StepContext) throws(MlorcError) -> Bool {
        if hyper.orthograd || hyper.clipNorm > 0 {
            let sums: SIMD3<Double>
            switch tensor.elements {
            case .f32: sums = Self.gradientTotals(tensor, F32Tensors.self, context)
            }
            rule.modifiers.setGradientTransform(gg: sums.x, wg: sums.y, ww: sums.z,
                                                orthograd: hyper.orthograd, clipNorm: hyper.clipNorm)
            guard sums.x.isFinite && sums.y.isFinite && sums.z.isFinite else { return false }
        }
        switch (storage, tensor.elements) {
        case (.factors, .f32):
            return try LowRankStep<Rule, F32Tensors>(rule: rule, tensor: tensor, hyper: hyper, region: region)
                .sketch(workspace: &context.workspace, pool: context.pool, parts: context.parts(for: elements))
        case (.dense, .f32):
            // verify's rehearsal sees a non-finite gradient too; a reduction
            // over the batch must not see one first.
            return writeStatistics == nil || DenseStep<Rule, F32Tensors>(rule: rule, tensor: tensor).gradientIsFinite(context)
        case (.projection, _):
            return GaLoreStep(rule: rule, hyper: hyper, tensor: tensor).gradientIsWithinBound(context)
        }
    }

    mutating func verify(_ context: inout StepContext) throws(MlorcError) -> String? {
        guard rule.stepSize.isFinite, rule.decayRate.isFinite else {
            return "the step size \(rule.stepSize) or decay rate \(rule.decayRate) overflows float (lr too large)"
        }
        let notFinite = "the new weights or moments would not be finite (check the state, the gradient's scale and lr)"
        switch (storage, tensor.elements) {
        case (.dense, .f32):
            let dense = DenseStep<Rule, F32Tensors>(rule: rule, tensor: tensor)
            if hyper.cautious { rule.modifiers.cautiousScale = dense.cautiousScale(context) }
            return DenseStep<Rule, F32Tensors>(rule: rule, tensor: tensor).verify(context)
        case (.factors, .f32):
            let w = OutputBounds.maxMagnitude(F32.self, tensor.weights, count: elements, context: context)
            let g = OutputBounds.maxMagnitude(F32.self, tensor.grad, count: elements, context: context)
            guard w.isFinite else { return "the weights contain NaN or infinity" }
            let finite = try LowRankStep<Rule, F32Tensors>(rule: rule, tensor: tensor, hyper: hyper, region: region)
                .outputsAreFinite(weightBound: w, gradBound: g, workspace: &context.workspace, pool: context.pool,
                                  parts: context.parts(for: elements))
            return finite ? nil : notFinite
        case (.projection, _):
            return GaLoreStep(rule: rule, hyper: hyper, tensor: tensor).verify(context)
        }
    }

    mutating func commit(_ context: inout StepContext) throws(MlorcError) {
        writeStatistics?(tensor, rule)
        let parts = context.parts(for: elements)
        switch (storage, tensor.elements) {
        case (.factors, .f32):
            try LowRankStep<Rule, F32Tensors>(rule: rule, tensor: tensor, hyper: hyper, region: region)
                .update(workspace: &context.workspace, pool: context.pool, parts: parts)
        case (.projection, _):
            try GaLoreStep(rule: rule, hyper: hyper, tensor: tensor)
                .update(workspace: &context.workspace, pool: context.pool, parts: parts)
        case (.dense, .f32):
            DenseStep<Rule, F32Tensors>(rule: rule, tensor: tensor).update(context)
        }
    }

    /// Σg², Σw·g, Σw² of a tensor (rows summed in order: thread-count independent).
    private static func gradientTotals<E: TensorElements>(_ t: Optimizer.Prepared, _: E.Type,
                                                          _ context: StepContext) -> SIMD3<Double> {
        let rows = t.header.rows, cols = t.header.cols, p = min(context.parts(for: rows * cols), rows)
        var perRow = [SIMD4<Double>](repeating: .zero, count: rows)
        perRow.withUnsafeMutableBufferPointer { sums in
            context.pool.run(parts: p) { part in
                gradientSums(E.self, weights: t.weights(E.self), grad: t.grad(E.self), cols: cols,
                             rows: partition(rows, parts: p, part: part), into: sums.baseAddress!)
            }
        }
        let total = perRow.reduce(SIMD4<Double>.zero, +)
        return SIMD3(total.x, total.y, total.z)
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
        DAdaptation.Tensor(header: t.header, weights: t.weights, grad: t.grad, payload: t.payload, modifiers: rule.modifiers)
    }

    mutating func reduce(_ steps: inout [MomentTensorStep<Rule>], hyper: Hyperparameters) throws(MlorcError) {
        var total = DAdaptation.Contribution()
        for s in steps {
            let c = contribution(Self.statistics(s.tensor, s.rule), s.rule, false)
            total.numerator += c.numerator
            total.denominator += c.denominator
        }
        let next = DAdaptation.update(binding.state, total: total, hyper: hyper, lr: lr)
        guard total.numerator.isFinite, total.denominator.isFinite, next.d.isFinite, next.numerator.isFinite else {
            throw MlorcError(.nonFinite, "the step-size estimate overflows (numerator \(total.numerator), denominator \(total.denominator)); step refused, nothing was changed")
        }
        for i in steps.indices { steps[i].rule = refresh(steps[i].rule, next) }
        self.next = next
    }

    func write(_ t: Optimizer.Prepared, _ rule: Rule) { _ = contribution(Self.statistics(t, rule), rule, true) }

    func finish() { next?.write(to: binding.pointer) }
}
