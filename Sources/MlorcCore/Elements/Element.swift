/// The element-type seam. Parameters, gradients and (bf16 states) moments
/// may be stored in any element type; inside the kernels every value is fp32
/// SIMD8. The type matters only where a kernel loads or stores 8 lanes. A
/// new element type is one conformance (a file here), its cases in
/// TensorElementKind and in ElementKind, which the kernels' one non-fp32
/// path branches on.
protocol Element {
    /// The scalar as it lies in memory.
    associatedtype Scalar
    /// Its `mlorc_dtype`.
    static var dtype: Int32 { get }
    /// A bound of fp32 results below which storing them gives finite values.
    static var provenBound: Double { get }
    /// Whether stores take random bits (stochastic rounding).
    static var usesRandomBits: Bool { get }
    /// p[0..<count] widened to fp32; lanes at or beyond `count` read as 0.
    static func load8(_ p: UnsafePointer<Scalar>, _ count: Int) -> SIMD8<Float>
    /// The first `count` lanes of v, rounded to the element type (to nearest
    /// even, or stochastically with `random`'s low 16 bits), into p.
    static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Scalar>, _ count: Int, random: SIMD8<UInt32>?)
    /// v as store8 would store it, widened back.
    static func roundTrip(_ v: SIMD8<Float>, random: SIMD8<UInt32>?) -> SIMD8<Float>
}

extension Element {
    static var usesRandomBits: Bool { false }

    /// store8 rounding to nearest even.
    @_transparent
    static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Scalar>, _ count: Int) {
        store8(v, p, count, random: nil)
    }
}

/// The combinations the library steps, from a tensor's dtype field and its
/// state (master weights).
enum TensorElementKind: Equatable {
    case f32, bf16, bf16WithF32Grad, f16, f16WithF32Grad
    case masterBF16, masterBF16WithF32Grad, masterF16, masterF16WithF32Grad

    /// `dtype` is mlorc_tensor.dtype: the parameter's dtype, optionally
    /// | MLORC_DTYPE_GRAD_F32 (0x100) for an fp32 gradient.
    init?(dtype: Int32, master: Bool) {
        let gradF32 = dtype & 0x100 != 0
        guard dtype & ~0x1FF == 0 else { return nil }
        switch (dtype & 0xFF, gradF32, master) {
        case (F32.dtype, false, false): self = .f32
        case (BF16.dtype, false, false): self = .bf16
        case (BF16.dtype, true, false): self = .bf16WithF32Grad
        case (F16.dtype, false, false): self = .f16
        case (F16.dtype, true, false): self = .f16WithF32Grad
        case (BF16.dtype, false, true): self = .masterBF16
        case (BF16.dtype, true, true): self = .masterBF16WithF32Grad
        case (F16.dtype, false, true): self = .masterF16
        case (F16.dtype, true, true): self = .masterF16WithF32Grad
        default: return nil
        }
    }

    /// Bytes of one parameter and one gradient element (as the caller holds them).
    var paramBytes: Int { self == .f32 ? 4 : 2 }
    var gradBytes: Int {
        switch self {
        case .f32, .bf16WithF32Grad, .f16WithF32Grad, .masterBF16WithF32Grad, .masterF16WithF32Grad: 4
        default: 2
        }
    }
    var hasMaster: Bool {
        switch self {
        case .masterBF16, .masterBF16WithF32Grad, .masterF16, .masterF16WithF32Grad: true
        default: false
        }
    }
}

/// Names of dtypes in messages.
func dtypeName(_ dtype: Int32) -> String {
    let names = [F32.dtype: "f32", BF16.dtype: "bf16", F16.dtype: "f16"]
    let base = names[dtype & 0xFF] ?? "unknown dtype \(dtype & 0xFF)"
    return dtype & 0x100 != 0 ? "\(base) with f32 gradient" : base
}

/// An element type known at run time: what the kernels' non-fp32 paths
/// (AnyDense, AnyElementAccess), compiled once per rule, branch on
/// (predictably: one type per buffer) at each 8-lane load and store.
enum ElementKind {
    case f32, bf16, f16

    @_transparent
    func load8(_ p: UnsafeRawPointer, _ e: Int, _ count: Int) -> SIMD8<Float> {
        switch self {
        case .f32: F32.load8(p.assumingMemoryBound(to: Float.self) + e, count)
        case .bf16: BF16.load8(p.assumingMemoryBound(to: UInt16.self) + e, count)
        case .f16: F16.load8(p.assumingMemoryBound(to: Float16.self) + e, count)
        }
    }

    @_transparent
    func store8(_ v: SIMD8<Float>, _ p: UnsafeMutableRawPointer, _ e: Int, _ count: Int, rounding: WeightRounding) {
        switch self {
        case .f32: F32.store8(v, p.assumingMemoryBound(to: Float.self) + e, count)
        case .bf16: BF16.store8(v, p.assumingMemoryBound(to: UInt16.self) + e, count, random: rounding.random(at: e))
        case .f16: F16.store8(v, p.assumingMemoryBound(to: Float16.self) + e, count)
        }
    }

    /// v as store8 would store it, widened back.
    @_transparent
    func roundTrip(_ v: SIMD8<Float>, at e: Int, rounding: WeightRounding) -> SIMD8<Float> {
        switch self {
        case .f32: v
        case .bf16: BF16.roundTrip(v, random: rounding.random(at: e))
        case .f16: F16.roundTrip(v, random: nil)
        }
    }

    var provenBound: Double {
        switch self {
        case .f32: F32.provenBound
        case .bf16: BF16.provenBound
        case .f16: F16.provenBound
        }
    }
}

extension TensorElementKind {
    /// What the low-rank passes step as the weights (fp32 with a master).
    var kernelParam: ElementKind { hasMaster ? .f32 : stored }
    /// The caller's parameter.
    var stored: ElementKind {
        switch self {
        case .f32: .f32
        case .bf16, .bf16WithF32Grad, .masterBF16, .masterBF16WithF32Grad: .bf16
        case .f16, .f16WithF32Grad, .masterF16, .masterF16WithF32Grad: .f16
        }
    }
    var grad: ElementKind {
        switch self {
        case .bf16, .masterBF16: .bf16
        case .f16, .masterF16: .f16
        default: .f32
        }
    }
}
