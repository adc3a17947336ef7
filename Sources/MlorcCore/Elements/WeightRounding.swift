/// The random bits of stochastic rounding: element e of a tensor's step gets
/// 16 bits of Philox block e/8 (SketchGenerator, keyed by (seed, tensor id,
/// step) with its own domain, so they are independent of the sketches). A
/// pure function of (seed, tensor id, step, e): the same for any thread
/// count, on resume and on every data-parallel rank. nil: round to nearest.
struct WeightRounding {
    private let generator: SketchGenerator?

    static let nearest = WeightRounding(generator: nil)

    private init(generator: SketchGenerator?) { self.generator = generator }

    init(stochastic: Bool, seed: UInt64, tensorID: UInt64, step: UInt64) {
        // "SROUNDNG": keeps these keys apart from the sketches' of the same tensor.
        generator = stochastic ? SketchGenerator(seed: seed ^ 0x474E_444E_554F_5253, tensorID: tensorID, step: step) : nil
    }

    /// The bits that round moment k of a bf16 state (dense values, or the
    /// factors U, s, Vt indexed as they lie in the payload): "SRMOMNT0" + k,
    /// a domain apart from the weights' and from the other moment's.
    static func moment(_ k: Int, stochastic: Bool, seed: UInt64, tensorID: UInt64, step: UInt64) -> WeightRounding {
        guard stochastic else { return .nearest }
        let domain: UInt64 = 0x30_544E_4D4F_4D52_53 &+ UInt64(k) << 56
        return WeightRounding(generator: SketchGenerator(seed: seed ^ domain, tensorID: tensorID, step: step))
    }

    /// The bits of elements e ..< e + 8.
    @inline(__always)
    func random(at e: Int) -> SIMD8<UInt32>? {
        guard let generator else { return nil }
        let first = e >> 3, offset = e & 7
        let a = Self.lanes(generator.block(UInt64(first)))
        if offset == 0 { return a }
        let b = Self.lanes(generator.block(UInt64(first + 1)))
        var out = SIMD8<UInt32>(repeating: 0)
        for k in 0..<8 { out[k] = offset + k < 8 ? a[offset + k] : b[offset + k - 8] }
        return out
    }

    @inline(__always)
    private static func lanes(_ b: (UInt32, UInt32, UInt32, UInt32)) -> SIMD8<UInt32> {
        SIMD8(b.0 & 0xFFFF, b.0 >> 16, b.1 & 0xFFFF, b.1 >> 16, b.2 & 0xFFFF, b.2 >> 16, b.3 & 0xFFFF, b.3 >> 16)
    }
}
