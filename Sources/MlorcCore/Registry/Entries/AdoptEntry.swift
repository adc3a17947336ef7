extension RuleRegistry {
    /// ADOPT (arXiv 2411.02853); MLorc-ADOPT on low-rank storage.
    static let adopt = RuleEntry(
        kind: .adopt, name: "ADOPT",
        defaults: [.beta1: 0.9, .beta2: 0.9999, .weightDecay: 0, .eps: 1e-6],
        keys: keys(common, halfPrecision, stateDtype, gradientOptions, directionOptions, [.eps: flag, .adoptClip: flag, .atan2: flag]),
        momentSlots: AdoptRule.momentCount, groupState: false,
        halfPrecision: true, shardedHalfPrecision: true, bf16State: true,
        step: { optimizer, tensors, lr, _ throws(MlorcError) in
            let h = optimizer.hyper
            var plan = MomentPlan(hyper: h, lowRank: .factors) { t in AdoptRule(h, lr: lr, step: t) }
            try optimizer.drive(&plan, tensors)
        },
        shardedStep: { optimizer, batch, lr throws(MlorcError) in
            let h = optimizer.hyper
            try optimizer.driveSharded(batch) { t in AdoptRule(h, lr: lr, step: t) }
        })
}
