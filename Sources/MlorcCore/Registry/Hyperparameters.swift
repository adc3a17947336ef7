/// The update rules. Raw values equal `mlorc_rule`.
package enum RuleKind: Int32, CaseIterable {
    case adamW = 1
    case lion = 2
    case adopt = 3
    case galoreAdamW = 4
    case came = 5
    case prodigy = 6
    case dadaptLion = 7
    case mofasgd = 8

    /// Rules whose step size is estimated over a group of tensors (D-adaptation):
    /// they step with a group state and keep sliced statistics per tensor.
    var adaptsStepSize: Bool { self == .prodigy || self == .dadaptLion }
}

/// Keys of `mlorc_param`.
package enum ParamKey: Int32, CaseIterable {
    case beta1 = 1
    case beta2 = 2
    case eps = 3
    case weightDecay = 4
    case rank = 5
    case oversampling = 6
    case powerIterations = 7
    case biasCorrection = 8
    case seed = 9
    case threads = 10
    case adoptClip = 11
    case grams = 12
    case atan2 = 13
    case cautious = 14
    case orthograd = 15
    case clipNorm = 16
    case galoreScale = 17
    case galoreInterval = 18
    case beta3 = 19
    case eps2 = 20
    case d0 = 21
    case dCoef = 22
    case growthRate = 23
    case statsStride = 24
    case cameClip = 25
    case mofasgdReciprocal = 26
    case mofasgdMaxValue = 27

    var name: String {
        switch self {
        case .beta1: "beta1"
        case .beta2: "beta2"
        case .eps: "eps"
        case .weightDecay: "weight_decay"
        case .rank: "rank"
        case .oversampling: "oversampling"
        case .powerIterations: "power_iterations"
        case .biasCorrection: "bias_correction"
        case .seed: "seed"
        case .threads: "threads"
        case .adoptClip: "adopt_clip"
        case .grams: "grams"
        case .atan2: "atan2"
        case .cautious: "cautious"
        case .orthograd: "orthograd"
        case .clipNorm: "clip_norm"
        case .galoreScale: "galore_scale"
        case .galoreInterval: "galore_interval"
        case .beta3: "beta3"
        case .eps2: "eps2"
        case .d0: "d0"
        case .dCoef: "d_coef"
        case .growthRate: "growth_rate"
        case .statsStride: "stats_stride"
        case .cameClip: "came_clip"
        case .mofasgdReciprocal: "mofasgd_reciprocal"
        case .mofasgdMaxValue: "mofasgd_max_value"
        }
    }

    var isInteger: Bool {
        switch self {
        case .rank, .oversampling, .powerIterations, .biasCorrection, .seed, .threads, .adoptClip,
             .grams, .atan2, .cautious, .orthograd, .galoreInterval, .statsStride, .mofasgdReciprocal: true
        default: false
        }
    }
}

/// All settings of one optimizer handle. Defaults are the paper's (arXiv 2506.01897).
package struct Hyperparameters {
    package var beta1: Double
    package var beta2: Double
    package var eps: Double = 1e-8
    package var weightDecay: Double
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

    package init(rule: RuleKind) {
        switch rule {
        case .adamW, .galoreAdamW: (beta1, beta2, weightDecay) = (0.9, 0.999, 0.01)
        case .lion: (beta1, beta2, weightDecay) = (0.95, 0.98, 0.05)
        case .adopt: (beta1, beta2, weightDecay, eps) = (0.9, 0.9999, 0, 1e-6)
        // β and ε as in the authors' instruction-tuning configuration; no weight
        // decay in their optimizer (beta2 is unused).
        case .mofasgd: (beta1, beta2, weightDecay, eps) = (0.9, 0, 0, 1e-8)
        case .came: (beta1, beta2, beta3, weightDecay, eps) = (0.9, 0.999, 0.9999, 0, 1e-30)  // eps is CAME's ε1
        case .prodigy: (beta1, beta2, beta3, weightDecay, biasCorrection) = (0.9, 0.999, 0.999.squareRoot(), 0, false)
        case .dadaptLion: (beta1, beta2, weightDecay) = (0.9, 0.99, 0)
        }
    }

    /// Inclusive bounds of `key` under `rule`, or nil when the key does not apply.
    package static func bounds(rule: RuleKind, key: ParamKey) -> ClosedRange<Double>? {
        if rule == .mofasgd { return mofasgdBounds(key) }
        switch key {
        case .beta1, .beta2: return 0...0.999_999_999
        case .eps: return rule == .lion || rule == .dadaptLion ? nil : 0...1
        case .biasCorrection: return [.adamW, .galoreAdamW, .prodigy].contains(rule) ? 0...1 : nil
        case .adoptClip: return rule == .adopt ? 0...1 : nil
        // CAME has its own direction (m/√S): the options around a MomentRule do not
        // apply; DAdapt-Lion's estimate uses the plain sign direction.
        case .grams, .cautious: return [.galoreAdamW, .came, .dadaptLion].contains(rule) ? nil : 0...1
        case .orthograd: return rule == .came ? nil : 0...1
        case .atan2: return [.lion, .galoreAdamW, .came, .dadaptLion].contains(rule) ? nil : 0...1
        case .clipNorm: return rule == .came ? nil : 0...1e30
        case .galoreScale: return rule == .galoreAdamW ? 0...1e6 : nil
        case .galoreInterval: return rule == .galoreAdamW ? 1...1e9 : nil
        case .beta3: return rule == .came || rule == .prodigy ? 0...0.999_999_999 : nil
        case .eps2: return rule == .came ? 0...1 : nil
        case .cameClip: return rule == .came ? 1e-6...1e6 : nil
        case .dCoef: return rule == .prodigy ? 1e-6...1e6 : nil
        case .growthRate: return rule == .prodigy ? 1...Double.infinity : nil
        case .d0: return rule.adaptsStepSize ? 1e-12...1e6 : nil
        case .statsStride: return rule.adaptsStepSize ? 1...1_048_576 : nil
        case .mofasgdReciprocal, .mofasgdMaxValue: return nil
        case .weightDecay: return 0...1000
        case .rank: return 1...65536
        case .oversampling: return 0...1024
        case .powerIterations: return 0...16
        case .seed: return 0...9_007_199_254_740_992  // 2^53: exact in a double
        case .threads: return 1...256
        }
    }

    /// MoFaSGD's keys: its momentum β (beta1), the singular-value threshold
    /// (eps), decoupled weight decay, the rank, the first step's sketch
    /// (oversampling, power iterations, seed), threads and its update form.
    /// The per-element options do not apply to a spectrally normalised update.
    private static func mofasgdBounds(_ key: ParamKey) -> ClosedRange<Double>? {
        switch key {
        case .beta1: return 0...0.999_999_999
        case .eps: return 0...1
        case .weightDecay: return 0...1000
        case .rank: return 1...65536
        case .oversampling: return 0...1024
        case .powerIterations: return 0...16
        case .seed: return 0...9_007_199_254_740_992
        case .threads: return 1...256
        case .mofasgdReciprocal: return 0...1
        case .mofasgdMaxValue: return 1e-30...1e30
        default: return nil
        }
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
            throw MlorcError(.unknownParam, "parameter \(key.name) does not apply to this rule")
        }
        // growth_rate alone may be +inf (no cap, its default).
        guard value.isFinite || (key == .growthRate && value == .infinity), range.contains(value) else {
            throw MlorcError(.paramOutOfRange,
                             "\(key.name) = \(value) is outside [\(range.lowerBound), \(range.upperBound)]")
        }
        if key.isInteger && value.rounded(.towardZero) != value {
            throw MlorcError(.paramOutOfRange, "\(key.name) must be an integer, got \(value)")
        }
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
