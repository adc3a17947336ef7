/// Rows of a caller's parameter or gradient as fp32, for the storages whose
/// kernels read and write fp32 rows (CAME, MoFaSGD, GaLore): an fp32
/// tensor's rows are used in place, so its path is the fp32 kernels as they
/// are; any other element type is widened into a row buffer first and, for
/// weights, rounded back after the update. One compiled path serves every
/// type (a branch on ElementKind per row, not per element), so the kernels
/// are not specialised per type.
struct ElementRows {
    let base: UnsafeMutableRawPointer
    let kind: ElementKind
    let cols: Int

    /// Whether rows are used in place (fp32): no buffers are needed.
    var inPlace: Bool { kind == .f32 }

    /// The rows as fp32 in place, or nil: the storages run their fp32 loops
    /// on it exactly as they were (a per-row branch inside them cost up to
    /// 6% instructions at fp32).
    var fp32: UnsafeMutablePointer<Float>? { kind == .f32 ? base.assumingMemoryBound(to: Float.self) : nil }

    /// Floats of one row buffer (a multiple of 16: buffers of consecutive
    /// parts stay 64-byte aligned); 0 for fp32.
    var bufferFloats: Int { inPlace ? 0 : (cols + 15) / 16 * 16 }

    /// Row i's entries `range` as fp32, indexed like the row (entry j at
    /// [j]): the row itself for fp32, else widened into `buffer`.
    @inline(__always)
    func row(_ i: Int, _ range: Range<Int>, buffer: UnsafeMutablePointer<Float>?) -> UnsafeMutablePointer<Float> {
        let start = i &* cols
        if kind == .f32 { return base.assumingMemoryBound(to: Float.self) + start }
        let out = buffer!
        eachChunk(in: range) { j, c in store8(kind.load8(UnsafeRawPointer(base), start &+ j, c), out + j, c) }
        return out
    }

    @inline(__always)
    func row(_ i: Int, buffer: UnsafeMutablePointer<Float>?) -> UnsafeMutablePointer<Float> {
        row(i, 0..<cols, buffer: buffer)
    }

    /// Writes row i's entries `range` from a widened buffer, rounded to the
    /// element type (nothing to do in place).
    @inline(__always)
    func store(_ i: Int, _ range: Range<Int>, from values: UnsafePointer<Float>, rounding: WeightRounding) {
        guard kind != .f32 else { return }
        let start = i &* cols
        eachChunk(in: range) { j, c in kind.store8(load8(values + j, c), base, start &+ j, c, rounding: rounding) }
    }

    /// max |x| over the tensor's count elements (+inf if any is not finite).
    func maxMagnitude(count: Int, context: StepContext) -> Double {
        switch kind {
        case .f32: OutputBounds.maxMagnitude(F32.self, UnsafePointer(base.assumingMemoryBound(to: Float.self)), count: count, context: context)
        case .bf16: OutputBounds.maxMagnitude(BF16.self, UnsafePointer(base.assumingMemoryBound(to: UInt16.self)), count: count, context: context)
        case .f16: OutputBounds.maxMagnitude(F16.self, UnsafePointer(base.assumingMemoryBound(to: Float16.self)), count: count, context: context)
        }
    }

    /// Whether every element of `range` (flat indices) is finite with |x| <= bound.
    func allWithin(_ range: Range<Int>, bound: Float) -> Bool {
        switch kind {
        case .f32: MlorcCore.allWithin(base.assumingMemoryBound(to: Float.self) + range.lowerBound, count: range.count, bound: bound)
        case .bf16: MlorcCore.allWithin(BF16.self, base.assumingMemoryBound(to: UInt16.self) + range.lowerBound, count: range.count, bound: bound)
        case .f16: MlorcCore.allWithin(F16.self, base.assumingMemoryBound(to: Float16.self) + range.lowerBound, count: range.count, bound: bound)
        }
    }

    /// Element e (flat index) widened, for scalar loops.
    @inline(__always)
    subscript(e: Int) -> Float {
        switch kind {
        case .f32: base.assumingMemoryBound(to: Float.self)[e]
        case .bf16: Float(bitPattern: UInt32(base.assumingMemoryBound(to: UInt16.self)[e]) << 16)
        case .f16: Float(base.assumingMemoryBound(to: Float16.self)[e])
        }
    }
}

extension ElementKind {
    /// The type in messages about its range ("float" for fp32).
    var rangeName: String {
        switch self {
        case .f32: "float"
        case .bf16: "bf16"
        case .f16: "f16"
        }
    }
}

/// The weights a row-wise storage steps: the parameter, or its fp32 master
/// (then `param`, when the storage writes it, gets the master's rounding row
/// by row).
struct WeightRows {
    let kernel: ElementRows
    let param: ElementRows?
    let rounding: WeightRounding
    /// The type the caller's parameter is stored in (bounds of the outputs).
    let stored: ElementKind

    var bufferFloats: Int { kernel.bufferFloats }

    /// fp32 weights updated in place with nothing else to write (no master), or nil.
    var fp32: UnsafeMutablePointer<Float>? { param == nil ? kernel.fp32 : nil }

    @inline(__always)
    func row(_ i: Int, _ range: Range<Int>, buffer: UnsafeMutablePointer<Float>?) -> UnsafeMutablePointer<Float> {
        kernel.row(i, range, buffer: buffer)
    }

    /// After row i's update in `values` (the row itself, or its buffer).
    @inline(__always)
    func finish(_ i: Int, _ range: Range<Int>, _ values: UnsafePointer<Float>) {
        kernel.store(i, range, from: values, rounding: rounding)
        param?.store(i, range, from: values, rounding: rounding)
    }
}

extension Optimizer.Prepared {
    /// The gradient's rows as fp32.
    var gradRows: ElementRows {
        ElementRows(base: UnsafeMutableRawPointer(mutating: gradient), kind: elements.grad, cols: header.cols)
    }

    /// How a bf16 parameter is rounded: stochastically with
    /// MLORC_PARAM_STOCHASTIC_ROUNDING (keyed as MomentPlan's), else to nearest.
    func rounding(_ hyper: Hyperparameters) -> WeightRounding {
        guard elements.stored == .bf16, hyper.stochasticRounding else { return .nearest }
        return WeightRounding(stochastic: true, seed: hyper.seed, tensorID: header.tensorID, step: header.step + 1)
    }

    /// The weights the kernels step; with a master, `writesParam` says
    /// whether the rows also write the parameter's rounding (false where the
    /// caller writes it back after the step).
    /// The weights the kernels step (the parameter, or its fp32 master).
    var kernelWeightRows: ElementRows {
        ElementRows(base: kernelWeights, kind: elements.kernelParam, cols: header.cols)
    }

    func weightRows(_ hyper: Hyperparameters, writesParam: Bool = true) -> WeightRows {
        let kernel = kernelWeightRows
        let param = elements.hasMaster && writesParam ? ElementRows(base: self.param, kind: elements.stored, cols: header.cols) : nil
        return WeightRows(kernel: kernel, param: param, rounding: rounding(hyper), stored: elements.stored)
    }
}
