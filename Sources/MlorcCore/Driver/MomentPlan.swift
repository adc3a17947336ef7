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

/// One tensor of a MomentPlan. Each phase dispatches once on the tensor's
/// element types to code generic over them (TensorElements).
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
        switch tensor.elements {
        case .f32: try prepare(F32Tensors.self, &context)
        case .bf16: try prepare(BF16Tensors.self, &context)
        case .bf16WithF32Grad: try prepare(BF16WithF32Grad.self, &context)
        case .f16: try prepare(F16Tensors.self, &context)
        case .f16WithF32Grad: try prepare(F16WithF32Grad.self, &context)
        case .masterBF16: try prepare(MasterBF16.self, &context)
        case .masterBF16WithF32Grad: try prepare(MasterBF16WithF32Grad.self, &context)
        case .masterF16: try prepare(MasterF16.self, &context)
        case .masterF16WithF32Grad: try prepare(MasterF16WithF32Grad.self, &context)
        }
    }

    mutating func verify(_ context: inout StepContext) throws(MlorcError) -> String? {
        switch tensor.elements {
        case .f32: try verify(F32Tensors.self, &context)
        case .bf16: try verify(BF16Tensors.self, &context)
        case .bf16WithF32Grad: try verify(BF16WithF32Grad.self, &context)
        case .f16: try verify(F16Tensors.self, &context)
        case .f16WithF32Grad: try verify(F16WithF32Grad.self, &context)
        case .masterBF16: try verify(MasterBF16.self, &context)
        case .masterBF16WithF32Grad: try verify(MasterBF16WithF32Grad.self, &context)
        case .masterF16: try verify(MasterF16.self, &context)
        case .masterF16WithF32Grad: try verify(MasterF16WithF32Grad.self, &context)
        }
    }

    mutating func commit(_ context: inout StepContext) throws(MlorcError) {
        switch tensor.elements {
        case .f32: try commit(F32Tensors.self, &context)
        case .bf16: try commit(BF16Tensors.self, &context)
        case .bf16WithF32Grad: try commit(BF16WithF32Grad.self, &context)
        case .f16: try commit(F16Tensors.self, &context)
        case .f16WithF32Grad: try commit(F16WithF32Grad.self, &context)
        case .masterBF16: try commit(MasterBF16.self, &context)
        case .masterBF16WithF32Grad: try commit(MasterBF16WithF32Grad.self, &context)
        case .masterF16: try commit(MasterF16.self, &context)
        case .masterF16WithF32Grad: try commit(MasterF16WithF32Grad.self, &context)
        }
    }

    /// How the caller's parameter is rounded: stochastically for bf16 with
    /// MLORC_PARAM_STOCHASTIC_ROUNDING, else to nearest even.
    private func rounding<E: TensorElements>(_: E.Type) -> WeightRounding {
        guard E.Stored.usesRandomBits, hyper.stochasticRounding else { return .nearest }
        return WeightRounding(stochastic: true, seed: hyper.seed, tensorID: tensor.header.tensorID,
                              step: tensor.header.step + 1)
    }

    /// The low-rank passes: the fp32 fast path, or the one for every other
    /// element type (compiled once, not per type).
    private func lowRank<E: TensorElements, A: WeightAccess>(_: E.Type, _: A.Type) -> LowRankStep<Rule, A> {
        LowRankStep<Rule, A>(rule: rule, tensor: tensor, hyper: hyper, region: region, rounding: rounding(E.self))
    }

    private func dense<E: TensorElements>(_: E.Type) -> DenseStep<Rule, E> {
        DenseStep<Rule, E>(rule: rule, tensor: tensor, rounding: rounding(E.self))
    }

    private mutating func prepare<E: TensorElements>(_: E.Type, _ context: inout StepContext) throws(MlorcError) -> Bool {
        if hyper.orthograd || hyper.clipNorm > 0 {
            let sums = Self.gradientTotals(tensor, E.self, context)
            rule.modifiers.setGradientTransform(gg: sums.x, wg: sums.y, ww: sums.z,
                                                orthograd: hyper.orthograd, clipNorm: hyper.clipNorm)
            guard sums.x.isFinite && sums.y.isFinite && sums.z.isFinite else { return false }
        }
        switch storage {
        case .factors:
            let parts = context.parts(for: elements)
            return tensor.elements == .f32
                ? try lowRank(E.self, FP32Access.self).sketch(workspace: &context.workspace, pool: context.pool, parts: parts)
                : try lowRank(E.self, AnyElementAccess.self).sketch(workspace: &context.workspace, pool: context.pool, parts: parts)
        case .dense:
            // verify's scan sees a non-finite gradient too; a reduction over
            // the batch must not see one first.
            return writeStatistics == nil || dense(E.self).gradientIsFinite(context)
        case .projection:
            let galore = GaLoreStep(rule: rule, hyper: hyper, tensor: tensor)
            try galore.reserveRowBuffers(&context.workspace, parts: context.parts(for: elements))
            return galore.gradientIsWithinBound(context)
        }
    }

    private mutating func verify<E: TensorElements>(_: E.Type, _ context: inout StepContext) throws(MlorcError) -> String? {
        guard rule.stepSize.isFinite, rule.decayRate.isFinite else {
            return "the step size \(rule.stepSize) or decay rate \(rule.decayRate) overflows float (lr too large)"
        }
        let notFinite = "the new weights or moments would not be finite in \(dtypeName(E.Stored.dtype)) (check the state, the gradient's scale and lr)"
        switch storage {
        case .dense:
            if hyper.cautious { rule.modifiers.cautiousScale = dense(E.self).cautiousScale(context) }
            return dense(E.self).verify(context)
        case .factors:
            let w = OutputBounds.maxMagnitude(E.Param.self, tensor.weights(E.self), count: elements, context: context)
            let g = OutputBounds.maxMagnitude(E.Grad.self, tensor.grad(E.self), count: elements, context: context)
            guard w.isFinite else { return "the weights contain NaN or infinity" }
            let parts = context.parts(for: elements)
            let finite = tensor.elements == .f32
                ? try lowRank(E.self, FP32Access.self).outputsAreFinite(weightBound: w, gradBound: g, workspace: &context.workspace,
                                                                      pool: context.pool, parts: parts)
                : try lowRank(E.self, AnyElementAccess.self).outputsAreFinite(weightBound: w, gradBound: g,
                                                                            workspace: &context.workspace,
                                                                            pool: context.pool, parts: parts)
            return finite ? nil : notFinite
        case .projection:
            return GaLoreStep(rule: rule, hyper: hyper, tensor: tensor).verify(context)
        }
    }

    private mutating func commit<E: TensorElements>(_: E.Type, _ context: inout StepContext) throws(MlorcError) {
        writeStatistics?(tensor, rule)
        let parts = context.parts(for: elements)
        switch storage {
        case .factors:
            if tensor.elements == .f32 {
                try lowRank(E.self, FP32Access.self).update(workspace: &context.workspace, pool: context.pool, parts: parts)
            } else {
                try lowRank(E.self, AnyElementAccess.self).update(workspace: &context.workspace, pool: context.pool, parts: parts)
            }
        case .projection:
            try GaLoreStep(rule: rule, hyper: hyper, tensor: tensor)
                .update(workspace: &context.workspace, pool: context.pool, parts: parts)
        case .dense:
            dense(E.self).update(context)
        }
        if E.hasMaster { writeBackMaster(E.self, context) }
    }

    /// The parameter ← the rounding of the updated master weights.
    private func writeBackMaster<E: TensorElements>(_: E.Type, _ context: StepContext) {
        let n = elements, p = context.parts(for: n), rounding = rounding(E.self)
        let master = UnsafePointer(tensor.weights(E.self)), param = tensor.stored(E.self)
        context.pool.run(parts: p) { part in
            let range = partition(n, parts: p, part: part, align: 8)
            var e = range.lowerBound
            while e < range.upperBound {
                let count = min(8, range.upperBound - e)
                E.Stored.store8(E.Param.load8(master + e, count), param + e, count,
                                random: E.Stored.usesRandomBits ? rounding.random(at: e) : nil)
                e += 8
            }
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
        DAdaptation.Tensor(header: t.header, weights: t.kernelWeightRows, grad: t.gradRows, payload: t.payload,
                           modifiers: rule.modifiers)
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
