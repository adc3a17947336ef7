extension RuleRegistry {
    /// Prodigy (arXiv 2306.06101): AdamW with a step size d estimated over the
    /// batch (DAdaptation), kept in the group state.
    static let prodigy = RuleEntry(
        kind: .prodigy, name: "Prodigy",
        defaults: [.beta1: 0.9, .beta2: 0.999, .beta3: 0.999.squareRoot(), .weightDecay: 0, .biasCorrection: 0],
        keys: keys(common, halfPrecision, gradientOptions, directionOptions, adaptation,
                   [.eps: flag, .biasCorrection: flag, .atan2: flag, .beta3: beta, .dCoef: 1e-6...1e6,
                    .growthRate: 1...Double.infinity]),
        momentSlots: ProdigyRule.momentCount, groupState: true,
        halfPrecision: true,
        extraFloats: { rows, cols, stride in DAdaptation.statsFloats(.prodigy, elements: rows * cols, stride: stride) },
        step: { optimizer, tensors, lr, group throws(MlorcError) in
            guard let group else { preconditionFailure("the driver binds the group state of a group-state rule") }
            let h = optimizer.hyper, g = group.state, dlr = DAdaptation.stepSize(g, hyper: h, lr: lr)
            var plan = MomentPlan(hyper: h, lowRank: .factors) { _ in ProdigyRule(h, d: g.d, dNext: g.d, dlr: dlr) }
            plan.adaptation = MomentAdaptation(binding: group, lr: lr) { t, _, write in
                DAdaptation.prodigy(t, hyper: h, group: g, dlr: dlr, write: write)
            } refresh: { rule, next in
                // ε scales with the estimate after this step's update.
                var fresh = ProdigyRule(h, d: g.d, dNext: next.d, dlr: dlr)
                fresh.modifiers = rule.modifiers
                return fresh
            }
            try optimizer.drive(&plan, tensors)
        })
}
