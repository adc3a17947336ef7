/// IEEE-754 binary32 (MLORC_DTYPE_F32): loads and stores are plain vector moves.
enum F32: Element {
    typealias Scalar = Float
    static var dtype: Int32 { 0 }
    static var provenBound: Double { 1e38 }

    @_transparent
    static func load8(_ p: UnsafePointer<Float>, _ count: Int) -> SIMD8<Float> { MlorcCore.load8(p, count) }

    @_transparent
    static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ count: Int, random: SIMD8<UInt32>?) {
        MlorcCore.store8(v, p, count)
    }

    @_transparent
    static func roundTrip(_ v: SIMD8<Float>, random: SIMD8<UInt32>?) -> SIMD8<Float> { v }
}
