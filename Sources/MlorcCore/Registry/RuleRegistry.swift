/// One entry per rule (RuleEntry). Bounds common to many rules are named
/// once here; each entry lists the keys that apply to it.
enum RuleRegistry {
    static func entry(_ kind: RuleKind) -> RuleEntry { entries[Int(kind.rawValue) - 1] }

    private static let entries: [RuleEntry] = {
        let all: [RuleEntry] = [adamW, lion, adopt, galoreAdamW, came, prodigy, dadaptLion, mofasgd]
        precondition(all.enumerated().allSatisfy { $0.offset + 1 == Int($0.element.kind.rawValue) })
        return all
    }()

    // MARK: bounds shared by several rules

    static let beta: ClosedRange<Double> = 0...0.999_999_999
    static let flag: ClosedRange<Double> = 0...1
    /// Every rule: the betas it reads, decay, the randomized SVD and threads.
    static let common: [ParamKey: ClosedRange<Double>] = [
        .beta1: beta, .beta2: beta, .weightDecay: 0...1000, .rank: 1...65536, .oversampling: 0...1024,
        .powerIterations: 0...16, .seed: 0...9_007_199_254_740_992,  // 2^53: exact in a double
        .threads: 1...256,
    ]
    /// The options around a MomentRule (StepModifiers).
    static let gradientOptions: [ParamKey: ClosedRange<Double>] = [.orthograd: flag, .clipNorm: 0...1e30]
    static let directionOptions: [ParamKey: ClosedRange<Double>] = [.grams: flag, .cautious: flag]
    static let adaptation: [ParamKey: ClosedRange<Double>] = [.d0: 1e-12...1e6, .statsStride: 1...1_048_576]
    static let halfPrecision: [ParamKey: ClosedRange<Double>] = [.masterWeights: flag, .stochasticRounding: flag]
    /// MLORC_PARAM_STATE_DTYPE: f32 (0) or bf16 (1) moments and factors (entries with bf16State).
    static let stateDtype: [ParamKey: ClosedRange<Double>] = [.stateDtype: flag]

    static func keys(_ groups: [ParamKey: ClosedRange<Double>]...) -> [ParamKey: ClosedRange<Double>] {
        groups.reduce(into: [:]) { all, group in all.merge(group) { _, new in new } }
    }
}
