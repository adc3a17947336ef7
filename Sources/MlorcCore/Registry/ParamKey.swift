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
    case masterWeights = 28
    case stochasticRounding = 29
    case stateDtype = 30

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
        case .masterWeights: "master_weights"
        case .stochasticRounding: "stochastic_rounding"
        case .stateDtype: "state_dtype"
        }
    }

    var isInteger: Bool {
        switch self {
        case .rank, .oversampling, .powerIterations, .biasCorrection, .seed, .threads, .adoptClip,
             .grams, .atan2, .cautious, .orthograd, .galoreInterval, .statsStride, .mofasgdReciprocal,
             .masterWeights, .stochasticRounding, .stateDtype: true
        default: false
        }
    }
}

