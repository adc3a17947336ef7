#if canImport(Glibc)
import Glibc
#endif
import CVectorMath

/// AdamW with torch.optim.AdamW's conventions: bias corrections folded into the
/// step size and the denominator, ε added after the square root, decoupled
/// weight decay applied before the update. With the atan2 option the direction
/// is (4/π)·atan2(m̂, √v̂) (no ε).
struct AdamWRule: MomentRule {
    typealias OtherDense = AnyDense  // half precision and bf16 states (its entry)
    typealias OtherWeights = AnyElementAccess
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

    func outputBounds(grad g: Double, moments p: PerMoment<Double>) -> (moments: PerMoment<Double>, direction: Double)? {
        let m = Double(beta1) * p[0] + Double(oneMinusBeta1) * g, v = Double(beta2) * p[1] + Double(oneMinusBeta2) * g * g
        // |m̂ / (√v̂ + ε)| <= |m|·(1/bc1 folded into stepSize) / ε; atan2: <= 2.
        if atan2 { return (PerMoment(m, v), 2) }
        guard eps > 0 else { return nil }
        return (PerMoment(m, v), m / Double(eps))
    }

    var hasRuleOption: Bool { atan2 }

    @inline(__always)
    func apply(_ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        apply(&m, &v, g, atan2: atan2)
    }

    @inline(__always)
    func applyWithoutRuleOption(_ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        apply(&m, &v, g, atan2: false)
    }

    @inline(__always)
    private func apply(_ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>, atan2: Bool) -> SIMD8<Float> {
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
