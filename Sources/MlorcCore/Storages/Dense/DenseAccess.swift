/// One dense tensor of a step as the dense kernels see it: the weights they
/// step (the parameter, or its fp32 master), the gradient, the caller's
/// parameter type, and the moments, each with its element type known at run
/// time. The kernels are compiled twice per rule, through a DenseAccess:
/// FP32Dense (every buffer fp32: plain vector moves, the fast path) and
/// AnyDense (a predictable branch on each buffer's ElementKind at each 8-lane
/// load and store; one kind per buffer and tensor), not once per combination.
struct DenseTensor {
    let weights: UnsafeMutableRawPointer, weightKind: ElementKind
    let grad: UnsafeRawPointer, gradKind: ElementKind
    /// The caller's parameter type (checks of what a store would write).
    let storedKind: ElementKind
    /// Moments 0 and 1 (moment 1 is moment 0 for one-moment rules) and their type.
    let moments: PerMoment<UnsafeMutableRawPointer>, momentKind: ElementKind
    /// How new weights (bf16 without a master) and new bf16 moments are rounded.
    let rounding: WeightRounding
    let momentRounding: PerMoment<WeightRounding>

    /// Whether every buffer is fp32 (the FP32Dense path applies).
    var isFP32: Bool { weightKind == .f32 && gradKind == .f32 && storedKind == .f32 && momentKind == .f32 }
}

protocol DenseAccess {
    static func loadWeights(_ t: DenseTensor, _ e: Int, _ count: Int) -> SIMD8<Float>
    static func loadGrad(_ t: DenseTensor, _ e: Int, _ count: Int) -> SIMD8<Float>
    static func storeWeights(_ v: SIMD8<Float>, _ t: DenseTensor, _ e: Int, _ count: Int)
    /// v as the caller's parameter would hold it.
    static func stored(_ v: SIMD8<Float>, _ t: DenseTensor, _ e: Int) -> SIMD8<Float>
    static func loadMoment(_ t: DenseTensor, _ k: Int, _ e: Int, _ count: Int) -> SIMD8<Float>
    static func storeMoment(_ v: SIMD8<Float>, _ t: DenseTensor, _ k: Int, _ e: Int, _ count: Int)
    /// v as moment k would hold it.
    static func storedMoment(_ v: SIMD8<Float>, _ t: DenseTensor, _ k: Int, _ e: Int) -> SIMD8<Float>
}

enum FP32Dense: DenseAccess {
    @_transparent static func loadWeights(_ t: DenseTensor, _ e: Int, _ count: Int) -> SIMD8<Float> {
        F32.load8(t.weights.assumingMemoryBound(to: Float.self) + e, count)
    }
    @_transparent static func loadGrad(_ t: DenseTensor, _ e: Int, _ count: Int) -> SIMD8<Float> {
        F32.load8(t.grad.assumingMemoryBound(to: Float.self) + e, count)
    }
    @_transparent static func storeWeights(_ v: SIMD8<Float>, _ t: DenseTensor, _ e: Int, _ count: Int) {
        F32.store8(v, t.weights.assumingMemoryBound(to: Float.self) + e, count)
    }
    @_transparent static func stored(_ v: SIMD8<Float>, _ t: DenseTensor, _ e: Int) -> SIMD8<Float> { v }
    @_transparent static func loadMoment(_ t: DenseTensor, _ k: Int, _ e: Int, _ count: Int) -> SIMD8<Float> {
        F32.load8(t.moments[k].assumingMemoryBound(to: Float.self) + e, count)
    }
    @_transparent static func storeMoment(_ v: SIMD8<Float>, _ t: DenseTensor, _ k: Int, _ e: Int, _ count: Int) {
        F32.store8(v, t.moments[k].assumingMemoryBound(to: Float.self) + e, count)
    }
    @_transparent static func storedMoment(_ v: SIMD8<Float>, _ t: DenseTensor, _ k: Int, _ e: Int) -> SIMD8<Float> { v }
}

enum AnyDense: DenseAccess {
    @_transparent static func loadWeights(_ t: DenseTensor, _ e: Int, _ count: Int) -> SIMD8<Float> {
        t.weightKind.load8(UnsafeRawPointer(t.weights), e, count)
    }
    @_transparent static func loadGrad(_ t: DenseTensor, _ e: Int, _ count: Int) -> SIMD8<Float> {
        t.gradKind.load8(t.grad, e, count)
    }
    @_transparent static func storeWeights(_ v: SIMD8<Float>, _ t: DenseTensor, _ e: Int, _ count: Int) {
        t.weightKind.store8(v, t.weights, e, count, rounding: t.rounding)
    }
    @_transparent static func stored(_ v: SIMD8<Float>, _ t: DenseTensor, _ e: Int) -> SIMD8<Float> {
        t.storedKind.roundTrip(v, at: e, rounding: t.rounding)
    }
    @_transparent static func loadMoment(_ t: DenseTensor, _ k: Int, _ e: Int, _ count: Int) -> SIMD8<Float> {
        t.momentKind.load8(UnsafeRawPointer(t.moments[k]), e, count)
    }
    @_transparent static func storeMoment(_ v: SIMD8<Float>, _ t: DenseTensor, _ k: Int, _ e: Int, _ count: Int) {
        t.momentKind.store8(v, t.moments[k], e, count, rounding: t.momentRounding[k])
    }
    @_transparent static func storedMoment(_ v: SIMD8<Float>, _ t: DenseTensor, _ k: Int, _ e: Int) -> SIMD8<Float> {
        t.momentKind.roundTrip(v, at: e, rounding: t.momentRounding[k])
    }
}

extension Optimizer.Prepared {
    /// How a step rounds this tensor's bf16 parameter: stochastically with
    /// MLORC_PARAM_STOCHASTIC_ROUNDING, else to nearest even.
    func weightRounding(_ hyper: Hyperparameters) -> WeightRounding {
        guard elements.stored == .bf16, hyper.stochasticRounding else { return .nearest }
        return WeightRounding(stochastic: true, seed: hyper.seed, tensorID: header.tensorID, step: header.step + 1,
                              offset: header.rowBegin * header.cols)
    }

    /// How a step rounds moment k of a bf16 state (the same key decides).
    func momentRounding(_ k: Int, _ hyper: Hyperparameters) -> WeightRounding {
        guard header.bf16Moments else { return .nearest }
        return .moment(k, stochastic: hyper.stochasticRounding, seed: hyper.seed, tensorID: header.tensorID,
                       step: header.step + 1)
    }

    /// The dense kernels' view (moments only for dense storage).
    func denseTensor(_ hyper: Hyperparameters) -> DenseTensor {
        let dense = header.storage == .dense, mc = header.momentCount
        let m0 = dense ? momentBytes(0) : UnsafeMutableRawPointer(payload)
        let m1 = dense ? momentBytes(min(1, mc - 1)) : m0
        return DenseTensor(weights: kernelWeights, weightKind: elements.kernelParam, grad: gradient,
                           gradKind: elements.grad, storedKind: elements.stored,
                           moments: PerMoment(m0, m1), momentKind: header.momentKind,
                           rounding: weightRounding(hyper),
                           momentRounding: PerMoment(momentRounding(0, hyper), momentRounding(1, hyper)))
    }
}
