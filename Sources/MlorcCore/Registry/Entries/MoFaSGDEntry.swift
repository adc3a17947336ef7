extension RuleRegistry {
    /// MoFaSGD (arXiv 2507.08091): the momentum as rank-r factors updated on
    /// the tangent space; its update spans [U | GV], so 2r <= min(rows, cols).
    /// The per-element options do not apply to a spectrally normalised update.
    static let mofasgd = RuleEntry(
        kind: .mofasgd, name: "MoFaSGD",
        // β and ε as in the authors' instruction-tuning configuration; no
        // weight decay in their optimizer (no beta2).
        defaults: [.beta1: 0.9, .beta2: 0, .weightDecay: 0, .eps: 1e-8],
        keys: keys(common, halfPrecision, [.eps: flag, .mofasgdReciprocal: flag, .mofasgdMaxValue: 1e-30...1e30])
            .filter { $0.key != .beta2 },
        momentSlots: 1, groupState: false,
        halfPrecision: true,
        lowRankRankFactor: 2,
        step: { optimizer, tensors, lr, _ throws(MlorcError) in
            var plan = MoFaSGDPlan(hyper: optimizer.hyper, lr: lr)
            try optimizer.drive(&plan, tensors)
        },
        shardedStep: { optimizer, batch, lr throws(MlorcError) in try optimizer.driveMoFaSGDSharded(batch, lr: lr) })
}
