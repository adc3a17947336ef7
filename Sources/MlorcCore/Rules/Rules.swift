#if canImport(Glibc)
import Glibc
#endif
import CVectorMath

/// Update rules: the per-element math of an optimizer, independent of how its
/// moments are stored. A rule reads the previous moments and the gradient,
/// replaces the moments with the new ones and returns the update direction;
/// the storage applies `W ← W·(1 − lr·λ) − stepSize·direction`.
///
/// Every rule here is affine in each previous moment (new = decay·prev + f(g)).
/// Low-rank storage relies on that to sketch the second moment before the
/// non-negativity correction is known (DESIGN.md §4).
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
}

extension MomentRule {
    /// W·(1 − lr·λ) − stepSize·direction, computed as W − (lr·λ·W +
    /// stepSize·direction): 1 − lr·λ rounded to float would lose any lr·λ
    /// below 6e-8 and skew it by up to 2x near there, which small learning
    /// rates and D-adaptation's early steps (d·lr ≈ 1e-6) reach.
    @_transparent
    func updatedWeights(_ w: SIMD8<Float>, _ direction: SIMD8<Float>) -> SIMD8<Float> {
        w - (stepSize * direction).addingProduct(decayRate, w)
    }
}

/// AdamW with torch.optim.AdamW's conventions: bias corrections folded into the
/// step size and the denominator, ε added after the square root, decoupled
/// weight decay applied before the update. With the atan2 option the direction
/// is (4/π)·atan2(m̂, √v̂) (no ε).
struct AdamWRule: MomentRule {
    static let momentCount = 2
    static func isNonNegative(_ k: Int) -> Bool { k == 1 }

    let beta1: Float, beta2: Float, oneMinusBeta1: Float, oneMinusBeta2: Float
    let eps: Float, inverseSqrtBiasCorrection2: Float
    let atan2: Bool, inverseBiasCorrection1: Float
    let stepSize: Float, decayRate: Float
    var modifiers = StepModifiers()

    /// `step` is the 1-based number of the step being taken.
    init(_ h: Hyperparameters, lr: Double, step: UInt64) {
        beta1 = Float(h.beta1); beta2 = Float(h.beta2)
        oneMinusBeta1 = Float(1 - h.beta1); oneMinusBeta2 = Float(1 - h.beta2)
        eps = Float(h.eps)
        var bc1 = 1.0, bc2 = 1.0
        if h.biasCorrection {
            bc1 = 1 - pow(h.beta1, Double(step))
            bc2 = 1 - pow(h.beta2, Double(step))
        }
        inverseSqrtBiasCorrection2 = Float(1 / bc2.squareRoot())
        atan2 = h.atan2
        inverseBiasCorrection1 = Float(1 / bc1)
        // With atan2 the bias correction of m sits inside the atan2.
        stepSize = Float(h.atan2 ? lr : lr / bc1)
        decayRate = Float(lr * h.weightDecay)
    }

    func decay(_ k: Int) -> Float { k == 0 ? beta1 : beta2 }
    static func isLinear(_ k: Int) -> Bool { k == 0 }
    func gain(_ k: Int) -> Float { oneMinusBeta1 }

    @inline(__always)
    func apply(_ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        // Written as fused multiply-adds: one rounding each, and it keeps LLVM's
        // SLP vectoriser from shuffling lanes between the two moments.
        m = (oneMinusBeta1 * g).addingProduct(beta1, m)
        v = (beta2 * v).addingProduct(oneMinusBeta2 * g, g)
        if atan2 { return scaledAtan2(m * inverseBiasCorrection1, mlorc_sqrt8(v) * inverseSqrtBiasCorrection2) }
        // A multiply by 1/sqrt(bc2) instead of torch's division: one vdivps less per
        // 8 elements; the results differ only in the last bit of the denominator.
        let denom = mlorc_sqrt8(v) * inverseSqrtBiasCorrection2 + eps
        return m / denom
    }
}

/// Lion (Chen et al. 2023): direction sign(β1·m + (1−β1)·g), then m ← β2·m + (1−β2)·g.
struct LionRule: MomentRule {
    static let momentCount = 1
    static func isNonNegative(_ k: Int) -> Bool { false }

    let beta1: Float, beta2: Float, oneMinusBeta1: Float, oneMinusBeta2: Float
    let stepSize: Float, decayRate: Float
    var modifiers = StepModifiers()

    init(_ h: Hyperparameters, lr: Double) {
        beta1 = Float(h.beta1); beta2 = Float(h.beta2)
        oneMinusBeta1 = Float(1 - h.beta1); oneMinusBeta2 = Float(1 - h.beta2)
        stepSize = Float(lr)
        decayRate = Float(lr * h.weightDecay)
    }

    func decay(_ k: Int) -> Float { beta2 }
    static func isLinear(_ k: Int) -> Bool { true }
    func gain(_ k: Int) -> Float { oneMinusBeta2 }

    @inline(__always)
    func apply(_ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        let c = (oneMinusBeta1 * g).addingProduct(beta1, m)
        m = (oneMinusBeta2 * g).addingProduct(beta2, m)
        return mlorc_sign8(c)
    }
}

/// ADOPT (Taniguchi et al. 2024, arXiv 2411.02853): the gradient is normalised
/// by the *previous* second moment before it enters the momentum,
///   n = g / max(√v, ε), or (4/π)·atan2(g, √v) with the atan2 option
///   (optionally clipped to ±(t − 1)^{1/4}),
///   m ← β1·m + (1−β1)·n,  direction m,  v ← β2·v + (1−β2)·g².
/// The first step only initialises v = g² (no update, no weight decay).
/// m depends on the previous v, so it is not linear in g.
struct AdoptRule: MomentRule {
    static let momentCount = 2
    static func isNonNegative(_ k: Int) -> Bool { k == 1 }
    static func isLinear(_ k: Int) -> Bool { false }

    let beta1: Float, beta2: Float, oneMinusBeta1: Float, oneMinusBeta2: Float
    let eps: Float, clip: Float  // clip = +inf when off
    let first: Bool, atan2: Bool
    let stepSize: Float, decayRate: Float
    var modifiers = StepModifiers()

    /// `step` is the 1-based number of the step being taken.
    init(_ h: Hyperparameters, lr: Double, step: UInt64) {
        first = step == 1
        beta1 = Float(h.beta1); beta2 = first ? 0 : Float(h.beta2)
        oneMinusBeta1 = Float(1 - h.beta1); oneMinusBeta2 = first ? 1 : Float(1 - h.beta2)
        eps = Float(h.eps)
        clip = h.adoptClip ? Float(pow(Double(step - 1), 0.25)) : .infinity
        atan2 = h.atan2
        stepSize = first ? 0 : Float(lr)
        decayRate = first ? 0 : Float(lr * h.weightDecay)
    }

    func decay(_ k: Int) -> Float { k == 0 ? (first ? 1 : beta1) : beta2 }
    func gain(_ k: Int) -> Float { 0 }  // not linear: unused

    @inline(__always)
    func apply(_ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        if !first {
            let root = mlorc_sqrt8(v)
            var n = atan2 ? scaledAtan2(g, root) : g / root.replacing(with: eps, where: root .< eps)
            n = n.clamped(lowerBound: SIMD8(repeating: -clip), upperBound: SIMD8(repeating: clip))
            m = (oneMinusBeta1 * n).addingProduct(beta1, m)
        }
        v = (beta2 * v).addingProduct(oneMinusBeta2 * g, g)
        return m
    }
}
