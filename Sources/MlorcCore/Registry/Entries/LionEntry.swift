extension RuleRegistry {
    /// Lion; MLorc-Lion on low-rank storage.
    static let lion = RuleEntry(
        kind: .lion, name: "Lion",
        defaults: [.beta1: 0.95, .beta2: 0.98, .weightDecay: 0.05],
        keys: keys(common, halfPrecision, stateDtype, gradientOptions, directionOptions),
        momentSlots: LionRule.momentCount, groupState: false,
        halfPrecision: true, shardedHalfPrecision: true, bf16State: true,
        step: { optimizer, tensors, lr, _ throws(MlorcError) in
            let h = optimizer.hyper
            var plan = MomentPlan(hyper: h, lowRank: .factors) { _ in LionRule(h, lr: lr) }
            try optimizer.drive(&plan, tensors)
        },
        shardedStep: { optimizer, batch, lr throws(MlorcError) in
            let h = optimizer.hyper
            try optimizer.driveSharded(batch) { _ in LionRule(h, lr: lr) }
        })
}
