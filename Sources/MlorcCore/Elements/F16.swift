import CVectorMath

/// IEEE-754 binary16 (MLORC_DTYPE_F16), converted with F16C's vcvtph2ps /
/// vcvtps2ph (round to nearest even; stochastic rounding does not apply).
enum F16: Element {
    typealias Scalar = Float16
    static var dtype: Int32 { 2 }
    /// The largest value (65504) less the spacing near it: below this, fp32
    /// arithmetic rounds to a finite half.
    static var provenBound: Double { 65000 }

    @inline(__always)
    static func load8(_ p: UnsafePointer<Float16>, _ count: Int) -> SIMD8<Float> {
        var h = SIMD8<UInt16>(repeating: 0)
        if count >= 8 { h = UnsafeRawPointer(p).loadUnaligned(as: SIMD8<UInt16>.self) } else { for i in 0..<count { h[i] = p[i].bitPattern } }
        return mlorc_f16_widen8(h)
    }

    @inline(__always)
    static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float16>, _ count: Int, random: SIMD8<UInt32>?) {
        let h = mlorc_f16_narrow8(v)
        if count >= 8 { UnsafeMutableRawPointer(p).storeBytes(of: h, as: SIMD8<UInt16>.self); return }
        for i in 0..<count { p[i] = Float16(bitPattern: h[i]) }
    }

    @inline(__always)
    static func roundTrip(_ v: SIMD8<Float>, random: SIMD8<UInt32>?) -> SIMD8<Float> { mlorc_f16_widen8(mlorc_f16_narrow8(v)) }
}
