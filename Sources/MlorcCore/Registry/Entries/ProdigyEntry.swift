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
        halfPrecision: true, shardedHalfPrecision: true,
        extraFloats: { rows, cols, stride, rowBegin, _ in
            DAdaptation.statsFloats(.prodigy, first: rowBegin * cols, elements: rows * cols, stride: stride)
        },
        statisticsRows: { h in .init(repeating: .sampled(stride: h.statsStride), count: DAdaptation.blocks(h.rule)) },
        reshapeStatistics: { statistics, _, _ in statistics },  // samples by flat index: the same in any shape
        step: { optimizer, tensors, lr, group throws(MlorcError) in
            guard let group else { preconditionFailure("the driver binds the group state of a group-state rule") }
            let (makeRule, adaptation) = prodigyPlan(optimizer.hyper, group, lr: lr)
            var plan = MomentPlan(hyper: optimizer.hyper, lowRank: .factors, makeRule: makeRule)
            plan.adaptation = adaptation
            try optimizer.drive(&plan, tensors)
        },
        shardedStep: { optimizer, batch, lr throws(MlorcError) in
            try optimizer.driveSharded(batch) { group in prodigyPlan(optimizer.hyper, group, lr: lr) }
        })

    /// Prodigy's rules and estimate for one step from its group state.
    static func prodigyPlan(_ h: Hyperparameters, _ group: GroupBinding, lr: Double)
        -> ((UInt64) -> ProdigyRule, MomentAdaptation<ProdigyRule>) {
        let g = group.state, dlr = DAdaptation.stepSize(g, hyper: h, lr: lr)
        let adaptation = MomentAdaptation<ProdigyRule>(binding: group, lr: lr) { t, _, write in
            DAdaptation.prodigy(t, hyper: h, group: g, dlr: dlr, write: write)
        } refresh: { rule, next in
            // ε scales with the estimate after this step's update.
            var fresh = ProdigyRule(h, d: g.d, dNext: next.d, dlr: dlr)
            fresh.modifiers = rule.modifiers
            return fresh
        }
        return ({ _ in ProdigyRule(h, d: g.d, dNext: g.d, dlr: dlr) }, adaptation)
    }
}
