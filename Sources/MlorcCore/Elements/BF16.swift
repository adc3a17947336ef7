import CVectorMath

/// bfloat16 (MLORC_DTYPE_BF16): the top half of a binary32, so widening is
/// a 16-bit shift and rounding works on the binary32's bits.
enum BF16: Element {
    typealias Scalar = UInt16
    static var dtype: Int32 { 1 }
    static var provenBound: Double { 1e38 }
    static var usesRandomBits: Bool { true }

    @inline(__always)
    static func load8(_ p: UnsafePointer<UInt16>, _ count: Int) -> SIMD8<Float> {
        var h = SIMD8<UInt16>(repeating: 0)
        if count >= 8 { h = UnsafeRawPointer(p).loadUnaligned(as: SIMD8<UInt16>.self) } else { for i in 0..<count { h[i] = p[i] } }
        return mlorc_bf16_widen8(h)
    }

    /// Round to nearest even: add 0x7FFF plus the lowest kept bit, truncate;
    /// or stochastically: add 16 random bits (`random`'s low halves). NaN
    /// stays a (quiet) NaN; ±inf stays ±inf.
    @inline(__always)
    static func rounded(_ v: SIMD8<Float>, random: SIMD8<UInt32>?) -> SIMD8<UInt16> {
        let bits = unsafeBitCast(v, to: SIMD8<UInt32>.self)
        let increment = random.map { $0 & 0xFFFF } ?? (0x7FFF &+ ((bits &>> 16) & 1))
        return mlorc_low_halves8(mlorc_bf16_round8(bits, increment))
    }

    @inline(__always)
    static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<UInt16>, _ count: Int, random: SIMD8<UInt32>?) {
        let h = rounded(v, random: random)
        if count >= 8 { UnsafeMutableRawPointer(p).storeBytes(of: h, as: SIMD8<UInt16>.self); return }
        for i in 0..<count { p[i] = h[i] }
    }

    @inline(__always)
    static func roundTrip(_ v: SIMD8<Float>, random: SIMD8<UInt32>?) -> SIMD8<Float> {
        mlorc_bf16_widen8(rounded(v, random: random))
    }
}
