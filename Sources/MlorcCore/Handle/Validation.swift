/// Argument validation of the handle's calls: everything is checked before
/// anything is read or written, and a failure names what was wrong.
extension Optimizer {
    static func checkShape(rows: Int64, cols: Int64) throws(MlorcError) {
        guard (1...StateFormat.maxDimension).contains(rows), (1...StateFormat.maxDimension).contains(cols) else {
            throw MlorcError(.invalidShape, "shape \(rows)x\(cols) is invalid: rows and cols must be in [1, \(StateFormat.maxDimension)]")
        }
        // The tensor's bytes must be addressable: 4·rows·cols (and its state) in an Int.
        guard rows * cols <= Int64.max / 16 else {
            throw MlorcError(.invalidShape, "shape \(rows)x\(cols) has more elements than memory can address")
        }
    }

    /// A parameter dtype this handle's rule can step.
    func checkDtype(_ dtype: Int32) throws(MlorcError) {
        guard [F32.dtype, BF16.dtype, F16.dtype].contains(dtype) else {
            throw MlorcError(.unsupportedDtype, "dtype \(dtype) is not an mlorc_dtype (f32 = 0, bf16 = 1, f16 = 2)")
        }
        guard dtype == F32.dtype || rule.entry.halfPrecision else {
            throw MlorcError(.unsupportedDtype, "rule \(rule.entry.name) steps f32 parameters only, not \(dtypeName(dtype))")
        }
    }

    /// Where a shard lies, checked against its matrix: nil for a shard that
    /// is the whole matrix (it is stepped and stored as one).
    static func checkShard(rows: Int64, cols: Int64, _ s: ShardArgs) throws(MlorcError) -> (globalRows: Int, rowBegin: Int)? {
        guard (1...StateFormat.maxDimension).contains(s.globalRows) else {
            throw MlorcError(.invalidArgument, "shard global_rows \(s.globalRows) is out of range [1, \(StateFormat.maxDimension)]")
        }
        guard (0...s.globalRows).contains(rows), (0...s.globalRows - rows).contains(s.rowBegin) else {
            throw MlorcError(.invalidArgument, "shard rows [\(s.rowBegin), \(s.rowBegin) + \(rows)) are out of range of the \(s.globalRows) rows of the matrix")
        }
        return rows == s.globalRows ? nil : (Int(s.globalRows), Int(s.rowBegin))
    }

    /// Whether this handle's rule (and a dtype) can be stepped on row shards.
    func checkShardable(dtype: Int32? = nil) throws(MlorcError) {
        guard rule.entry.sharded else {
            throw MlorcError(.invalidArgument, "rule \(rule.entry.name) has no sharded step (mlorc_step_sharded and mlorc_state_init_sharded take AdamW, Lion, ADOPT, CAME, MoFaSGD, Prodigy and DAdapt-Lion)")
        }
        if let dtype, dtype != F32.dtype, !rule.entry.shardedHalfPrecision {
            throw MlorcError(.unsupportedDtype, "the sharded step of \(rule.entry.name) takes f32 tensors only in this version, not \(dtypeName(dtype))")
        }
    }

    /// A validated tensor of a step.
    struct Prepared {
        let param: UnsafeMutableRawPointer
        let gradient: UnsafeRawPointer
        /// The element types of param and gradient.
        let elements: TensorElementKind
        let state: UnsafeMutableRawPointer
        var header: StateFormat.Header

        /// The weights the kernels step (of type elements.kernelParam): the
        /// fp32 master copy when the state keeps one, else the parameter.
        var kernelWeights: UnsafeMutableRawPointer {
            elements.hasMaster ? UnsafeMutableRawPointer(payload + header.masterOffset) : param
        }
        /// The fp32 views, for the storages whose kernels read fp32 only (their
        /// registry entries refuse other element types).
        var weights: UnsafeMutablePointer<Float> { param.assumingMemoryBound(to: Float.self) }
        var grad: UnsafePointer<Float> { gradient.assumingMemoryBound(to: Float.self) }

        var payload: UnsafeMutablePointer<Float> {
            (state + StateFormat.headerBytes).assumingMemoryBound(to: Float.self)
        }
        func moment(_ k: Int) -> UnsafeMutablePointer<Float> { payload + k * header.floatsPerMoment }
        /// Moment k's values in their element type (header.momentKind).
        func momentBytes(_ k: Int) -> UnsafeMutableRawPointer {
            UnsafeMutableRawPointer(payload) + k * header.bytesPerMoment
        }
    }

    func validate(_ a: TensorArgs, place: (globalRows: Int, rowBegin: Int)? = nil) throws(MlorcError) -> Prepared {
        var a = a
        // A shard without rows has no elements: its pointers are never read.
        if place != nil && a.rows == 0 {
            if a.param == nil { a.param = emptyTensor }
            if a.grad == nil { a.grad = UnsafeRawPointer(emptyTensor) }
        }
        guard let param = a.param else { throw MlorcError(.nullPointer, "param is NULL") }
        guard let grad = a.grad else { throw MlorcError(.nullPointer, "grad is NULL") }
        guard let state = a.state else { throw MlorcError(.nullPointer, "state is NULL") }
        guard a.reserved == 0 else { throw MlorcError(.invalidArgument, "reserved field must be 0") }
        guard a.dtype & ~0x1FF == 0, a.dtype & 0x100 == 0 || a.dtype & 0xFF != F32.dtype else {
            throw MlorcError(.unsupportedDtype, "dtype \(a.dtype) is not an mlorc_dtype, optionally | MLORC_DTYPE_GRAD_F32 for a half-precision parameter")
        }
        try checkDtype(a.dtype & 0xFF)
        try Self.checkShape(rows: place.map { Int64($0.globalRows) } ?? a.rows, cols: a.cols)
        let paramBytes = a.dtype & 0xFF == F32.dtype ? 4 : 2, gradBytes = a.dtype & 0x100 != 0 ? 4 : paramBytes
        for (name, p, bytes) in [("param", UnsafeRawPointer(param), paramBytes), ("grad", grad, gradBytes),
                                 ("state", UnsafeRawPointer(state), 4)]
        where Int(bitPattern: p) % bytes != 0 {
            throw MlorcError(.invalidArgument, "\(name) pointer is not \(bytes)-byte aligned")
        }
        let header = try StateFormat.read(state, bytes: a.stateBytes)
        // The counter this step would write must still read back as plausible.
        guard header.step + 1 < StateFormat.stepLimit else {
            throw MlorcError(.stateCorrupted, "state step counter \(header.step) is at its limit (2^53 - 1)")
        }
        guard header.rule == rule else {
            throw MlorcError(.stateMismatch, "state belongs to rule \(header.rule) but this optimizer is \(rule)")
        }
        guard header.rows == Int(a.rows), header.cols == Int(a.cols) else {
            throw MlorcError(.stateMismatch, "state is for a \(header.rows)x\(header.cols) tensor, not \(a.rows)x\(a.cols)")
        }
        guard header.globalRows == place?.globalRows ?? 0, header.rowBegin == place?.rowBegin ?? 0 else {
            func describe(_ g: Int, _ b: Int, _ r: Int) -> String { g == 0 ? "the whole matrix" : "rows [\(b), \(b + r)) of \(g)" }
            throw MlorcError(.stateMismatch, "state is for \(describe(header.globalRows, header.rowBegin, header.rows)), not \(describe(place?.globalRows ?? 0, place?.rowBegin ?? 0, Int(a.rows)))"
                             + (place == nil ? " (a shard's state is stepped by mlorc_step_sharded with that shard)" : ""))
        }
        guard header.paramDtype == a.dtype & 0xFF else {
            throw MlorcError(.stateMismatch, "state is for \(dtypeName(header.paramDtype)) parameters, not \(dtypeName(a.dtype & 0xFF))")
        }
        guard let elements = TensorElementKind(dtype: a.dtype, master: header.masterWeights) else {
            throw MlorcError(.unsupportedDtype, "dtype \(a.dtype) is not supported")
        }
        return Prepared(param: param, gradient: grad, elements: elements, state: state, header: header)
    }

    /// Refuses a batch in which a written buffer (param, state, group state)
    /// overlaps any other buffer of the batch.
    static func checkNoOverlap(_ tensors: [Prepared], group: UnsafeMutableRawPointer? = nil) throws(MlorcError) {
        struct Span { let start: UInt, end: UInt, writable: Bool, tensor: Int, name: String }
        var spans: [Span] = []
        if let group {
            let start = UInt(bitPattern: group)
            spans.append(Span(start: start, end: start + UInt(GroupState.bytes), writable: true, tensor: -1, name: "group state"))
        }
        for (i, t) in tensors.enumerated() {
            let elements = UInt(t.header.rows * t.header.cols)
            if elements > 0 {
            let paramEnd = UInt(bitPattern: t.param) + elements * UInt(t.elements.paramBytes)
            let gradEnd = UInt(bitPattern: t.gradient) + elements * UInt(t.elements.gradBytes)
            spans.append(Span(start: UInt(bitPattern: t.param), end: paramEnd, writable: true, tensor: i, name: "param"))
            spans.append(Span(start: UInt(bitPattern: t.gradient), end: gradEnd, writable: false, tensor: i, name: "grad"))
            }
            spans.append(Span(start: UInt(bitPattern: t.state), end: UInt(bitPattern: t.state) + UInt(t.header.totalBytes), writable: true, tensor: i, name: "state"))
        }
        spans.sort { $0.start < $1.start }
        var furthestAny: Span?, furthestWritable: Span?
        for s in spans {
            if let f = s.writable ? furthestAny : furthestWritable, s.start < f.end {
                let what = { (s: Span) in s.tensor < 0 ? s.name : "tensor \(s.tensor) \(s.name)" }
                throw MlorcError(.invalidArgument,
                                 "\(what(s)) overlaps \(what(f)); buffers that are written must not alias")
            }
            if furthestAny == nil || s.end > furthestAny!.end { furthestAny = s }
            if s.writable, furthestWritable == nil || s.end > furthestWritable!.end { furthestWritable = s }
        }
    }
}

/// What a shard without rows points at when its param or grad is NULL.
private let emptyTensor = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
