/// All settings of one optimizer handle: the common defaults here, each rule's
/// own in its registry entry (the papers' and the reference implementations').
package struct Hyperparameters {
    package var beta1 = 0.0
    package var beta2 = 0.0
    package var eps: Double = 1e-8
    package var weightDecay = 0.0
    package var rank: Int = 4
    package var oversampling: Int = 0
    package var powerIterations: Int = 0
    package var biasCorrection: Bool = true
    package var seed: UInt64 = 0
    package var threads: Int = 1
    package var adoptClip: Bool = false
    package var grams = false, atan2 = false, cautious = false, orthograd = false
    package var clipNorm: Double = 0
    package var galoreScale = 0.25, galoreInterval = 200
    /// MoFaSGD: U·diag(1/σ)·Vᵀ (true) instead of U·Vᵀ, 1/σ clamped to mofasgdMaxValue.
    package var mofasgdReciprocal = false, mofasgdMaxValue = 1e4
    /// Half-precision parameters: fp32 master weights in new states; how new
    /// bf16 weights are rounded (stochastically, or to nearest even).
    package var masterWeights = false, stochasticRounding = true
    /// New states keep their moments (or factors) in bf16 (MLORC_PARAM_STATE_DTYPE = 1).
    package var bf16State = false
    /// β3: CAME's EMA of the instability; Prodigy's EMA of its statistics
    /// (defaults set per rule below).
    package var beta3 = 0.0
    /// CAME (arXiv 2307.02047): ε2 of the instability, the clipping threshold
    /// d of the normalised update.
    package var eps2 = 1e-16, cameClip = 1.0
    /// D-adaptation (Prodigy, DAdapt-Lion): initial estimate d0, Prodigy's
    /// coefficient and growth cap, and the stride of the per-tensor
    /// statistics (every k-th element; 1 = all).
    package var d0 = 1e-6, dCoef = 1.0, growthRate = Double.infinity
    package var statsStride = 11

    /// The common defaults, then the rule's own (its registry entry).
    package init(rule: RuleKind) {
        for (key, value) in rule.entry.defaults { assign(key, value) }
    }

    /// Inclusive bounds of `key` under `rule`, or nil when the key does not apply.
    package static func bounds(rule: RuleKind, key: ParamKey) -> ClosedRange<Double>? {
        rule.entry.bounds(key)
    }

    package func value(_ key: ParamKey) -> Double {
        switch key {
        case .beta1: beta1
        case .beta2: beta2
        case .eps: eps
        case .weightDecay: weightDecay
        case .rank: Double(rank)
        case .oversampling: Double(oversampling)
        case .powerIterations: Double(powerIterations)
        case .biasCorrection: biasCorrection ? 1 : 0
        case .seed: Double(seed)
        case .threads: Double(threads)
        case .adoptClip: adoptClip ? 1 : 0
        case .grams: grams ? 1 : 0
        case .atan2: atan2 ? 1 : 0
        case .cautious: cautious ? 1 : 0
        case .orthograd: orthograd ? 1 : 0
        case .clipNorm: clipNorm
        case .galoreScale: galoreScale
        case .galoreInterval: Double(galoreInterval)
        case .mofasgdReciprocal: mofasgdReciprocal ? 1 : 0
        case .mofasgdMaxValue: mofasgdMaxValue
        case .masterWeights: masterWeights ? 1 : 0
        case .stochasticRounding: stochasticRounding ? 1 : 0
        case .stateDtype: bf16State ? 1 : 0
        case .beta3: beta3
        case .eps2: eps2
        case .cameClip: cameClip
        case .d0: d0
        case .dCoef: dCoef
        case .growthRate: growthRate
        case .statsStride: Double(statsStride)
        }
    }

    /// Sets `key` after checking it applies to `rule` and lies within bounds;
    /// on error nothing changes.
    package mutating func set(_ key: ParamKey, _ value: Double, rule: RuleKind) throws(MlorcError) {
        guard let range = Self.bounds(rule: rule, key: key) else {
            if key == .stateDtype {
                throw MlorcError(.unknownParam, "parameter state_dtype (bf16 moments) does not apply to \(rule.entry.name): only AdamW, Lion and ADOPT store their state in bf16")
            }
            throw MlorcError(.unknownParam, "parameter \(key.name) does not apply to this rule")
        }
        // growth_rate alone may be +inf (no cap, its default).
        guard value.isFinite || (key == .growthRate && value == .infinity), range.contains(value) else {
            let hint = key == .stateDtype ? " (MLORC_DTYPE_F32 = 0 or MLORC_DTYPE_BF16 = 1)" : ""
            throw MlorcError(.paramOutOfRange,
                             "\(key.name) = \(value) is outside [\(range.lowerBound), \(range.upperBound)]\(hint)")
        }
        if key.isInteger && value.rounded(.towardZero) != value {
            throw MlorcError(.paramOutOfRange, "\(key.name) must be an integer, got \(value)")
        }
        assign(key, value)
    }

    /// Sets `key` without checks (the registry's defaults, checked values).
    private mutating func assign(_ key: ParamKey, _ value: Double) {
        switch key {
        case .beta1: beta1 = value
        case .beta2: beta2 = value
        case .eps: eps = value
        case .weightDecay: weightDecay = value
        case .rank: rank = Int(value)
        case .oversampling: oversampling = Int(value)
        case .powerIterations: powerIterations = Int(value)
        case .biasCorrection: biasCorrection = value != 0
        case .seed: seed = UInt64(value)
        case .threads: threads = Int(value)
        case .adoptClip: adoptClip = value != 0
        case .grams: grams = value != 0
        case .atan2: atan2 = value != 0
        case .cautious: cautious = value != 0
        case .orthograd: orthograd = value != 0
        case .clipNorm: clipNorm = value
        case .galoreScale: galoreScale = value
        case .galoreInterval: galoreInterval = Int(value)
        case .mofasgdReciprocal: mofasgdReciprocal = value != 0
        case .mofasgdMaxValue: mofasgdMaxValue = value
        case .masterWeights: masterWeights = value != 0
        case .stochasticRounding: stochasticRounding = value != 0
        case .stateDtype: bf16State = value != 0
        case .beta3: beta3 = value
        case .eps2: eps2 = value
        case .cameClip: cameClip = value
        case .d0: d0 = value
        case .dCoef: dCoef = value
        case .growthRate: growthRate = value
        case .statsStride: statsStride = Int(value)
        }
    }
}
