import CVectorMath

/// Lion (Chen et al. 2023): direction sign(β1·m + (1−β1)·g), then m ← β2·m + (1−β2)·g.
struct LionRule: MomentRule {
    typealias OtherDense = AnyDense  // half precision and bf16 states (its entry)
    typealias OtherWeights = AnyElementAccess
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

    func outputBounds(grad g: Double, moments p: PerMoment<Double>) -> (moments: PerMoment<Double>, direction: Double)? {
        (PerMoment(repeating: Double(beta2) * p[0] + Double(oneMinusBeta2) * g), 1)  // a sign
    }

    @inline(__always)
    func apply(_ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        let c = (oneMinusBeta1 * g).addingProduct(beta1, m)
        m = (oneMinusBeta2 * g).addingProduct(beta2, m)
        return mlorc_sign8(c)
    }
}
