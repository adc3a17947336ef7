/// The element-type seam. Parameters and gradients may be stored in any
/// element type; inside the kernels every value is fp32 SIMD8 (moments,
/// factors and arithmetic). The type matters only where a kernel loads 8
/// lanes of a parameter or gradient and where it stores 8 lanes of new
/// weights — the two functions of a conformance. A new element type is one
/// conformance (a file here), its dtype in TensorElementKind and its cases
/// in the dispatch (MomentTensorStep).
protocol Element {
    /// The scalar as it lies in memory.
    associatedtype Scalar
    /// Its `mlorc_dtype`.
    static var dtype: Int32 { get }
    /// p[0..<count] widened to fp32; lanes at or beyond `count` read as 0.
    static func load8(_ p: UnsafePointer<Scalar>, _ count: Int) -> SIMD8<Float>
    /// The first `count` lanes of v, rounded to the element type, into p.
    static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Scalar>, _ count: Int)
}

/// The element types of one tensor's parameter and gradient.
protocol TensorElements {
    associatedtype Param: Element
    associatedtype Grad: Element
}

/// The combinations the library steps, by the dtypes of a tensor.
enum TensorElementKind {
    case f32

    /// Bytes of one parameter and one gradient element.
    var paramBytes: Int {
        switch self { case .f32: MemoryLayout<F32.Scalar>.size }
    }
    var gradBytes: Int {
        switch self { case .f32: MemoryLayout<F32.Scalar>.size }
    }

    init?(param: Int32, grad: Int32) {
        switch (param, grad) {
        case (F32.dtype, F32.dtype): self = .f32
        default: return nil
        }
    }
}
