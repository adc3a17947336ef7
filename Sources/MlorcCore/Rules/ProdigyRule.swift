#if canImport(Glibc)
import Glibc
#endif
import CVectorMath

/// Prodigy (Mishchenko & Defazio 2023, arXiv 2306.06101) as in the authors'
/// prodigyopt/prodigy.py: Adam moments of the gradient scaled by the current
/// estimate d,
///   m ← β1·m + d(1−β1)·g,  v ← β2·v + d²(1−β2)·g²,
///   direction m / (√v + d'·ε)   (d' = the estimate after this step's update),
///   W ← W·(1 − dlr·λ) − dlr·direction,  dlr = d·lr·bc,
/// bc = √(1−β2^k)/(1−β1^k) with bias correction (off by default), else 1.
/// With the atan2 option the direction is (4/π)·atan2(m, √v) (no ε).
struct ProdigyRule: MomentRule {
    typealias OtherDense = AnyDense  // half precision (its entry); bf16 states are refused
    typealias OtherWeights = AnyElementAccess
    static let momentCount = 2
    static func isNonNegative(_ k: Int) -> Bool { k == 1 }
    static func isLinear(_ k: Int) -> Bool { k == 0 }

    let beta1: Float, beta2: Float, gain1: Float, gain2: Float, eps: Float
    let atan2: Bool
    let stepSize: Float, decayRate: Float
    var modifiers = StepModifiers()

    /// `d` is the estimate the moments use, `dNext` the one after this step's
    /// update (it scales ε), `dlr` = d·lr·bc.
    init(_ h: Hyperparameters, d: Double, dNext: Double, dlr: Double) {
        beta1 = Float(h.beta1); beta2 = Float(h.beta2)
        gain1 = Float(d * (1 - h.beta1)); gain2 = Float(d * d * (1 - h.beta2))
        eps = Float(dNext * h.eps)
        atan2 = h.atan2
        stepSize = Float(dlr)
        decayRate = Float(dlr * h.weightDecay)
    }

    func decay(_ k: Int) -> Float { k == 0 ? beta1 : beta2 }
    func gain(_ k: Int) -> Float { gain1 }

    func outputBounds(grad g: Double, moments p: PerMoment<Double>) -> (moments: PerMoment<Double>, direction: Double)? {
        let m = Double(beta1) * p[0] + Double(gain1) * g, v = Double(beta2) * p[1] + Double(gain2) * g * g
        if atan2 { return (PerMoment(m, v), 2) }
        guard eps > 0 else { return nil }
        return (PerMoment(m, v), m / Double(eps))
    }

    @inline(__always)
    func apply(_ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        m = (gain1 * g).addingProduct(beta1, m)
        v = (beta2 * v).addingProduct(gain2 * g, g)
        if atan2 { return scaledAtan2(m, mlorc_sqrt8(v)) }
        return m / (mlorc_sqrt8(v) + eps)
    }
}
