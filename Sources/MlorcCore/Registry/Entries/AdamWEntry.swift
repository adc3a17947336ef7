extension RuleRegistry {
    /// AdamW (torch.optim.AdamW's conventions); MLorc-AdamW on low-rank storage.
    static let adamW = RuleEntry(
        kind: .adamW, name: "AdamW",
        defaults: [.beta1: 0.9, .beta2: 0.999, .weightDecay: 0.01],
        keys: keys(common, halfPrecision, stateDtype, gradientOptions, directionOptions, [.eps: flag, .biasCorrection: flag, .atan2: flag]),
        momentSlots: AdamWRule.momentCount, groupState: false,
        halfPrecision: true, shardedHalfPrecision: true, bf16State: true,
        step: { optimizer, tensors, lr, _ throws(MlorcError) in
            let h = optimizer.hyper
            var plan = MomentPlan(hyper: h, lowRank: .factors) { t in AdamWRule(h, lr: lr, step: t) }
            try optimizer.drive(&plan, tensors)
        },
        shardedStep: { optimizer, batch, lr throws(MlorcError) in
            let h = optimizer.hyper
            try optimizer.driveSharded(batch) { t in AdamWRule(h, lr: lr, step: t) }
        })
}
