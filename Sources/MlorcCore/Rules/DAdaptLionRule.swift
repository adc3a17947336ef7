import CVectorMath

/// D-Adapted Lion (Defazio & Mishchenko 2023) as in facebookresearch's
/// dadaptation/dadapt_lion.py: direction sign(β1·m + (1−β1)·g), then
/// m ← β2·m + (1−β2)·dlr·g (the momentum carries the step size dlr = d·lr,
/// the gradient in the direction does not: the reference's form);
/// W ← W·(1 − dlr·λ) − dlr·direction.
struct DAdaptLionRule: MomentRule {
    typealias OtherDense = AnyDense  // half precision (its entry); bf16 states are refused
    typealias OtherWeights = AnyElementAccess
    static let momentCount = 1
    static func isNonNegative(_ k: Int) -> Bool { false }
    static func isLinear(_ k: Int) -> Bool { true }

    let beta1: Float, oneMinusBeta1: Float, beta2: Float, gain2: Float
    let stepSize: Float, decayRate: Float
    var modifiers = StepModifiers()

    init(_ h: Hyperparameters, dlr: Double) {
        beta1 = Float(h.beta1); oneMinusBeta1 = Float(1 - h.beta1)
        beta2 = Float(h.beta2); gain2 = Float((1 - h.beta2) * dlr)
        stepSize = Float(dlr)
        decayRate = Float(dlr * h.weightDecay)
    }

    func decay(_ k: Int) -> Float { beta2 }
    func gain(_ k: Int) -> Float { gain2 }

    /// The direction from the previous momentum (also used by the estimate).
    @_transparent
    func direction(_ m: SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        mlorc_sign8((oneMinusBeta1 * g).addingProduct(beta1, m))
    }

    func outputBounds(grad g: Double, moments p: PerMoment<Double>) -> (moments: PerMoment<Double>, direction: Double)? {
        (PerMoment(repeating: Double(beta2) * p[0] + Double(gain2) * g), 1)  // a sign
    }

    @inline(__always)
    func apply(_ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        let u = direction(m, g)
        m = (gain2 * g).addingProduct(beta2, m)
        return u
    }
}
