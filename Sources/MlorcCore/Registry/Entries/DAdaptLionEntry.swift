extension RuleRegistry {
    /// D-Adapted Lion (facebookresearch/dadaptation): Lion with a step size d
    /// estimated over the batch (DAdaptation), kept in the group state.
    static let dadaptLion = RuleEntry(
        kind: .dadaptLion, name: "DAdapt-Lion",
        defaults: [.beta1: 0.9, .beta2: 0.99, .weightDecay: 0],
        keys: keys(common, halfPrecision, gradientOptions, adaptation),
        momentSlots: DAdaptLionRule.momentCount, groupState: true,
        halfPrecision: true,
        extraFloats: { rows, cols, stride in DAdaptation.statsFloats(.dadaptLion, elements: rows * cols, stride: stride) },
        step: { optimizer, tensors, lr, group throws(MlorcError) in
            guard let group else { preconditionFailure("the driver binds the group state of a group-state rule") }
            let h = optimizer.hyper, dlr = DAdaptation.stepSize(group.state, hyper: h, lr: lr)
            var plan = MomentPlan(hyper: h, lowRank: .factors) { _ in DAdaptLionRule(h, dlr: dlr) }
            plan.adaptation = MomentAdaptation(binding: group, lr: lr) { t, rule, write in
                DAdaptation.dadaptLion(t, rule: rule, hyper: h, dlr: dlr, write: write)
            } refresh: { rule, _ in rule }
            try optimizer.drive(&plan, tensors)
        })
}
