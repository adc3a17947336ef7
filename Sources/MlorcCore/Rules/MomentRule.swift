/// Update rules: the per-element math of an optimizer, independent of how its
/// moments are stored. A rule reads the previous moments and the gradient,
/// replaces the moments with the new ones and returns the update direction;
/// the storage applies `W ← W·(1 − lr·λ) − stepSize·direction`.
///
/// Every rule here is affine in each previous moment (new = decay·prev + f(g)).
/// Low-rank storage relies on that to sketch the second moment before the
/// non-negativity correction is known (docs/architecture.md, "Low-rank storage").
protocol MomentRule {
    /// Moments in use (1 or 2): slot 0 is `m`, slot 1 is `v`.
    static var momentCount: Int { get }
    /// Whether moment k is non-negative by construction (gets the ReLU fix on low-rank storage).
    static func isNonNegative(_ k: Int) -> Bool
    /// The coefficient of the previous moment k in its recurrence.
    func decay(_ k: Int) -> Float
    /// Whether moment k is linear in the gradient, new = decay·prev + gain·g:
    /// its sketch then follows from GΩ and the factors, with no rebuild.
    /// Every non-linear moment must be non-negative (slot 1).
    static func isLinear(_ k: Int) -> Bool
    /// The gain of a linear moment k.
    func gain(_ k: Int) -> Float

    /// Multiplier of the direction in the weight update.
    var stepSize: Float { get }
    /// The decoupled weight-decay rate lr·λ (the weights shrink by 1 − lr·λ).
    var decayRate: Float { get }
    /// The options applied around the rule for the tensor being stepped.
    var modifiers: StepModifiers { get set }
    func apply(_ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float>
    /// Whether an option of the rule itself that `apply` tests per chunk
    /// (AdamW's atan2) is on.
    var hasRuleOption: Bool { get }
    /// `apply` for `hasRuleOption` false, without the test (the kernels'
    /// no-options path, PlainRule).
    func applyWithoutRuleOption(_ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float>

    /// Upper bounds (in fp64) of |new moment k| and of |direction| (before
    /// the options and the step size) from bounds of |g| and |previous moment
    /// k|, or nil when the rule has none (e.g. ε = 0): the step's outputs are
    /// then checked exactly. Used to prove, before anything is written, that
    /// a step writes only finite values.
    func outputBounds(grad g: Double, moments: PerMoment<Double>) -> (moments: PerMoment<Double>, direction: Double)?

    /// The kernels' path for tensors that are not fp32 throughout: AnyDense
    /// and AnyElementAccess for the rules whose entries take half precision
    /// or a bf16 state; by default the fp32 paths again, so that no second
    /// copy of the kernels is compiled for rules that step fp32 only
    /// (validation refuses other tensors before they reach a kernel).
    associatedtype OtherDense: DenseAccess = FP32Dense
    associatedtype OtherWeights: WeightAccess = FP32Access
}

extension MomentRule {
    var hasRuleOption: Bool { false }
    @inline(__always)
    func applyWithoutRuleOption(_ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        apply(&m, &v, g)
    }

    /// Whether no option is on for this tensor: the kernels may then take
    /// their no-options path (PlainRule), which computes the same bits.
    var optionsOff: Bool {
        !modifiers.grams && modifiers.cautiousScale == 0 && !modifiers.transformsGradient && !hasRuleOption
    }

    /// W·(1 − lr·λ) − stepSize·direction, computed as W − (lr·λ·W +
    /// stepSize·direction): 1 − lr·λ rounded to float would lose any lr·λ
    /// below 6e-8 and skew it by up to 2x near there, which small learning
    /// rates and D-adaptation's early steps (d·lr ≈ 1e-6) reach.
    @_transparent
    func updatedWeights(_ w: SIMD8<Float>, _ direction: SIMD8<Float>) -> SIMD8<Float> {
        w - (stepSize * direction).addingProduct(decayRate, w)
    }
}
