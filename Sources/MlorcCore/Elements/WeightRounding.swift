import CVectorMath

/// The random bits of stochastic rounding: element e of a tensor's step gets
/// 16 bits of a keyed integer hash of e (mlorc_counter_bits8: two rounds of a
/// 32-bit mixer, computed 8 lanes at a time), the key drawn by SplitMix64
/// from (seed, tensor id, step) in a domain of its own, apart from the
/// sketches. A pure function of (seed, tensor id, step, e): the same for any
/// thread count, on resume and on every data-parallel rank. nil: round to
/// nearest. (Philox, which draws the sketches, cost ~17 instructions per
/// element here; the hash ~2, and rounding needs no more than unbiased,
/// well-mixed low bits.)
struct WeightRounding {
    /// nil: round to nearest (read by the AVX-512 kernels, which draw the same bits).
    let key: (UInt32, UInt32)?
    /// The flat index in the whole matrix of this tensor's element 0 (a row
    /// shard's first element): every shard rounds an element as the whole
    /// matrix's step would.
    private(set) var offset = 0

    static let nearest = WeightRounding(key: nil)

    private init(key: (UInt32, UInt32)?) { self.key = key }

    init(stochastic: Bool, seed: UInt64, tensorID: UInt64, step: UInt64, offset: Int = 0) {
        // "SROUNDNG": keeps these keys apart from the sketches' of the same tensor.
        self.init(key: stochastic ? Self.key(seed: seed ^ 0x474E_444E_554F_5253, tensorID: tensorID, step: step) : nil)
        self.offset = offset
    }

    /// The bits that round moment k of a bf16 state (dense values, or the
    /// factors U, s, Vt indexed as they lie in the payload): "SRMOMNT0" + k,
    /// a domain apart from the weights' and from the other moment's.
    static func moment(_ k: Int, stochastic: Bool, seed: UInt64, tensorID: UInt64, step: UInt64) -> WeightRounding {
        guard stochastic else { return .nearest }
        let domain: UInt64 = 0x30_544E_4D4F_4D52_53 &+ UInt64(k) << 56
        return WeightRounding(key: key(seed: seed ^ domain, tensorID: tensorID, step: step))
    }

    private static func key(seed: UInt64, tensorID: UInt64, step: UInt64) -> (UInt32, UInt32) {
        let mix = SketchGenerator.splitMix64
        let k = mix(mix(seed ^ mix(tensorID &+ 0x9E37_79B9_7F4A_7C15)) ^ step)
        return (UInt32(truncatingIfNeeded: k), UInt32(truncatingIfNeeded: k >> 32))
    }

    /// The bits of elements e ..< e + 8 (16 random bits in each lane's low half).
    @inline(__always)
    func random(at e: Int) -> SIMD8<UInt32>? {
        guard let key else { return nil }
        let e = e &+ offset
        let bits = mlorc_counter_bits8(UInt32(truncatingIfNeeded: e), UInt32(truncatingIfNeeded: e >> 32), key.0, key.1)
        return bits & 0xFFFF
    }
}
