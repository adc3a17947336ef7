#if canImport(Glibc)
import Glibc
#endif
import CVectorMath

/// ADOPT (Taniguchi et al. 2024, arXiv 2411.02853): the gradient is normalised
/// by the *previous* second moment before it enters the momentum,
///   n = g / max(√v, ε), or (4/π)·atan2(g, √v) with the atan2 option
///   (optionally clipped to ±(t − 1)^{1/4}),
///   m ← β1·m + (1−β1)·n,  direction m,  v ← β2·v + (1−β2)·g².
/// The first step only initialises v = g² (no update, no weight decay).
/// m depends on the previous v, so it is not linear in g.
struct AdoptRule: MomentRule {
    typealias OtherDense = AnyDense  // half precision and bf16 states (its entry)
    typealias OtherWeights = AnyElementAccess
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

    func outputBounds(grad g: Double, moments p: PerMoment<Double>) -> (moments: PerMoment<Double>, direction: Double)? {
        let v = Double(beta2) * p[1] + Double(oneMinusBeta2) * g * g
        if first { return (PerMoment(p[0], v), p[0]) }
        // n = g / max(√v, ε) or the bounded atan2 form, clipped.
        let n: Double
        if atan2 { n = 2 } else if eps > 0 { n = g / Double(eps) } else if clip.isFinite { n = Double(clip) } else { return nil }
        let m = Double(beta1) * p[0] + Double(oneMinusBeta1) * min(n, Double(clip))
        return (PerMoment(m, v), m)
    }

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
