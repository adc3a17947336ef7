extension RuleRegistry {
    /// CAME (arXiv 2307.02047, as the authors' came_pytorch): a first moment
    /// (dense or MLorc factors) followed by its factored statistics.
    static let came = RuleEntry(
        kind: .came, name: "CAME",
        defaults: [.beta1: 0.9, .beta2: 0.999, .beta3: 0.9999, .weightDecay: 0, .eps: 1e-30],  // eps is CAME's ε1
        keys: keys(common, halfPrecision, [.eps: flag, .beta3: beta, .eps2: 0...1, .cameClip: 1e-6...1e6]),
        momentSlots: 1, groupState: false,
        halfPrecision: true,
        extraFloats: { rows, cols, _, _, shapeRows in CAMEStep.statisticsFloats(rows: rows, cols: cols, shapeRows: shapeRows) },
        // r (one per row) and c (per column); a matrix adds R and C alike.
        // Shards follow the whole matrix's vector-ness.
        statisticsRows: { h in
            let pair: [StatisticsPart] = [.perRow(floats: 1), .shared(floats: h.cols)]
            return CAMEStep.isVector(rows: h.shapeRows, cols: h.cols) ? pair : pair + pair
        },
        reshapeStatistics: CAMEStep.reshapeStatistics,
        checkLowRankPayload: { h, p throws(MlorcError) in
            try CAMEStep.checkStatistics(h, p)
            try StateFormat.checkMomentFactors(h, p)
        },
        step: { optimizer, tensors, lr, _ throws(MlorcError) in
            var plan = CAMEPlan(hyper: optimizer.hyper, lr: lr)
            try optimizer.drive(&plan, tensors)
        },
        shardedStep: { optimizer, batch, lr throws(MlorcError) in try optimizer.driveCAMESharded(batch, lr: lr) })
}
