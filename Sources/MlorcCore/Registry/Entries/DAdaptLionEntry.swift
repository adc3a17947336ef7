extension RuleRegistry {
    /// D-Adapted Lion (facebookresearch/dadaptation): Lion with a step size d
    /// estimated over the batch (DAdaptation), kept in the group state.
    static let dadaptLion = RuleEntry(
        kind: .dadaptLion, name: "DAdapt-Lion",
        defaults: [.beta1: 0.9, .beta2: 0.99, .weightDecay: 0],
        keys: keys(common, halfPrecision, gradientOptions, adaptation),
        momentSlots: DAdaptLionRule.momentCount, groupState: true,
        halfPrecision: true, shardedHalfPrecision: true,
        extraFloats: { rows, cols, stride, rowBegin, _ in
            DAdaptation.statsFloats(.dadaptLion, first: rowBegin * cols, elements: rows * cols, stride: stride)
        },
        statisticsRows: { h in .init(repeating: .sampled(stride: h.statsStride), count: DAdaptation.blocks(h.rule)) },
        reshapeStatistics: { statistics, _, _ in statistics },  // samples by flat index: the same in any shape
        step: { optimizer, tensors, lr, group throws(MlorcError) in
            guard let group else { preconditionFailure("the driver binds the group state of a group-state rule") }
            let (makeRule, adaptation) = dadaptLionPlan(optimizer.hyper, group, lr: lr)
            var plan = MomentPlan(hyper: optimizer.hyper, lowRank: .factors, makeRule: makeRule)
            plan.adaptation = adaptation
            try optimizer.drive(&plan, tensors)
        },
        shardedStep: { optimizer, batch, lr throws(MlorcError) in
            try optimizer.driveSharded(batch) { group in dadaptLionPlan(optimizer.hyper, group, lr: lr) }
        })

    /// DAdapt-Lion's rules and estimate for one step from its group state.
    static func dadaptLionPlan(_ h: Hyperparameters, _ group: GroupBinding, lr: Double)
        -> ((UInt64) -> DAdaptLionRule, MomentAdaptation<DAdaptLionRule>) {
        let dlr = DAdaptation.stepSize(group.state, hyper: h, lr: lr)
        let adaptation = MomentAdaptation<DAdaptLionRule>(binding: group, lr: lr) { t, rule, write in
            DAdaptation.dadaptLion(t, rule: rule, hyper: h, dlr: dlr, write: write)
        } refresh: { rule, _ in rule }
        return ({ _ in DAdaptLionRule(h, dlr: dlr) }, adaptation)
    }
}
