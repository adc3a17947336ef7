/// IEEE-754 binary32 (MLORC_DTYPE_F32): loads and stores are plain vector moves.
enum F32: Element {
    typealias Scalar = Float
    static var dtype: Int32 { 0 }

    @_transparent
    static func load8(_ p: UnsafePointer<Float>, _ count: Int) -> SIMD8<Float> { MlorcCore.load8(p, count) }

    @_transparent
    static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ count: Int) {
        MlorcCore.store8(v, p, count)
    }
}

/// fp32 parameters with fp32 gradients.
enum F32Tensors: TensorElements {
    typealias Param = F32
    typealias Grad = F32
}
