extension RuleRegistry {
    /// GaLore-AdamW (arXiv 2403.03507): AdamW on the gradient projected by
    /// GaLoreStep's projection on low-rank storage; plain AdamW on dense.
    static let galoreAdamW = RuleEntry(
        kind: .galoreAdamW, name: "GaLore-AdamW",
        defaults: [.beta1: 0.9, .beta2: 0.999, .weightDecay: 0.01],
        keys: keys(common, halfPrecision, gradientOptions,
                   [.eps: flag, .biasCorrection: flag, .galoreScale: 0...1e6, .galoreInterval: 1...1e9]),
        momentSlots: AdamWRule.momentCount, groupState: false,
        halfPrecision: true,
        lowRankMomentFloats: GaLoreStep<AdamWRule>.payloadFloats,
        checkLowRankPayload: GaLoreStep<AdamWRule>.checkPayload,
        step: { optimizer, tensors, lr, _ throws(MlorcError) in
            let h = optimizer.hyper
            var plan = MomentPlan(hyper: h, lowRank: .projection) { t in AdamWRule(h, lr: lr, step: t) }
            try optimizer.drive(&plan, tensors)
        })
}
