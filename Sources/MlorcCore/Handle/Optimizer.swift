/// What a caller passes to size and initialise a tensor's state.
package struct TensorLayout {
    package var rows: Int64, cols: Int64, dtype: Int32, storage: Int32
    package init(rows: Int64, cols: Int64, dtype: Int32 = 0, storage: Int32 = 0) {
        (self.rows, self.cols, self.dtype, self.storage) = (rows, cols, dtype, storage)
    }
}

/// One tensor of a step, as received at the C boundary (not yet validated).
package struct TensorArgs {
    package var param: UnsafeMutableRawPointer?
    package var grad: UnsafeRawPointer?
    package var state: UnsafeMutableRawPointer?
    package var stateBytes: Int
    package var rows: Int64, cols: Int64
    package var dtype: Int32 = 0, reserved: Int32 = 0
    package init(param: UnsafeMutableRawPointer?, grad: UnsafeRawPointer?, state: UnsafeMutableRawPointer?,
                 stateBytes: Int, rows: Int64, cols: Int64, dtype: Int32 = 0, reserved: Int32 = 0) {
        (self.param, self.grad, self.state, self.stateBytes) = (param, grad, state, stateBytes)
        (self.rows, self.cols, self.dtype, self.reserved) = (rows, cols, dtype, reserved)
    }
}

/// Requested storage, raw values of `mlorc_storage`.
package enum StorageRequest: Int32 {
    case auto = 0, dense = 1, lowRank = 2
}

/// An optimizer handle: a rule, its hyperparameters and scratch. The state of
/// each tensor lives in caller-owned bytes (StateFormat).
package final class Optimizer {
    package let rule: RuleKind
    package var hyper: Hyperparameters
    var workspace = Workspace()
    /// Worker threads, started at the first step that can use them and
    /// restarted when MLORC_PARAM_THREADS changes.
    private var threadPool: ThreadPool?

    var pool: ThreadPool {
        if let p = threadPool, p.workerCount == hyper.threads - 1 { return p }
        threadPool = nil  // joins the old workers first
        let p = ThreadPool(workers: hyper.threads - 1)
        threadPool = p
        return p
    }

    package init(rule: RuleKind) {
        self.rule = rule
        hyper = Hyperparameters(rule: rule)
    }

    deinit { workspace.release() }

    package var scratchBytes: Int { workspace.bytes }

    // MARK: state

    static func checkShape(rows: Int64, cols: Int64) throws(MlorcError) {
        guard (1...StateFormat.maxDimension).contains(rows), (1...StateFormat.maxDimension).contains(cols) else {
            throw MlorcError(.invalidShape, "shape \(rows)x\(cols) is invalid: rows and cols must be in [1, \(StateFormat.maxDimension)]")
        }
        // The tensor's bytes must be addressable: 4·rows·cols (and its state) in an Int.
        guard rows * cols <= Int64.max / 16 else {
            throw MlorcError(.invalidShape, "shape \(rows)x\(cols) has more elements than memory can address")
        }
    }

    static func checkDtype(_ dtype: Int32) throws(MlorcError) {
        guard dtype == 0 else {
            throw MlorcError(.unsupportedDtype, "dtype \(dtype) is not supported (only MLORC_DTYPE_F32 = 0)")
        }
    }

    /// The header a fresh state for `layout` gets, after the storage policy.
    func freshHeader(_ layout: TensorLayout, tensorID: UInt64) throws(MlorcError) -> StateFormat.Header {
        try Self.checkShape(rows: layout.rows, cols: layout.cols)
        try Self.checkDtype(layout.dtype)
        guard let request = StorageRequest(rawValue: layout.storage) else {
            throw MlorcError(.invalidArgument, "storage \(layout.storage) is not an mlorc_storage value")
        }
        let rows = Int(layout.rows), cols = Int(layout.cols), r = hyper.rank
        let storage: StateFormat.Storage
        switch request {
        case .dense: storage = .dense
        case .lowRank:
            guard r <= min(rows, cols) else {
                throw MlorcError(.invalidRank, "rank \(r) exceeds min(rows, cols) = \(min(rows, cols)) of a \(rows)x\(cols) tensor")
            }
            let factor = rule.entry.lowRankRankFactor
            guard factor * r <= min(rows, cols) else {
                throw MlorcError(.invalidRank, "\(rule.entry.name) needs \(factor) x rank <= min(rows, cols); rank \(r) is too large for a \(rows)x\(cols) tensor")
            }
            storage = .lowRank
        case .auto:
            let lowRank = rows > 1 && cols > 1 && min(rows, cols) >= 4 * (r + hyper.oversampling)
            storage = lowRank ? .lowRank : .dense
        }
        let stride = rule.adaptsStepSize ? hyper.statsStride : 0
        guard StateFormat.payloadBytes(rule: rule, storage: storage, rows: rows, cols: cols, rank: r,
                                       statsStride: stride) != nil else {
            throw MlorcError(.invalidShape, "state of a \(rows)x\(cols) tensor would overflow the address space")
        }
        return StateFormat.Header(rule: rule, storage: storage, dtype: UInt32(layout.dtype), rows: rows, cols: cols,
                                  rank: storage == .lowRank ? r : 0, step: 0, tensorID: tensorID, statsStride: stride)
    }

    package func stateSize(_ layout: TensorLayout) throws(MlorcError) -> Int {
        try freshHeader(layout, tensorID: 0).totalBytes
    }

    package func initState(_ layout: TensorLayout, tensorID: UInt64, state: UnsafeMutableRawPointer?,
                           bytes: Int) throws(MlorcError) {
        var header = try freshHeader(layout, tensorID: tensorID)
        guard let state else { throw MlorcError(.nullPointer, "state is NULL") }
        guard bytes >= header.totalBytes else {
            throw MlorcError(.stateTooSmall, "state has \(bytes) bytes; a \(header.rows)x\(header.cols) tensor needs \(header.totalBytes)")
        }
        let payload = state + StateFormat.headerBytes
        payload.initializeMemory(as: UInt8.self, repeating: 0, count: header.payloadBytes)
        if header.storage == .lowRank {
            header.payloadChecksum = Checksum.of(UnsafeRawPointer(payload), count: header.payloadBytes)
        }
        StateFormat.write(header, to: state)
    }

    /// Writes a fresh group state for the D-adaptation rules (d = d0).
    package func initGroupState(_ group: UnsafeMutableRawPointer?, bytes: Int) throws(MlorcError) {
        guard rule.adaptsStepSize else {
            throw MlorcError(.invalidArgument, "rule \(rule) keeps no group state")
        }
        guard let group else { throw MlorcError(.nullPointer, "group is NULL") }
        guard bytes >= GroupState.bytes else {
            throw MlorcError(.stateTooSmall, "group state has \(bytes) bytes; it needs \(GroupState.bytes)")
        }
        GroupState(rule: rule, d0: hyper.d0).write(to: group)
    }

    // MARK: step

    /// A validated tensor of a step.
    struct Prepared {
        let param: UnsafeMutableRawPointer
        let gradient: UnsafeRawPointer
        /// The element types of param and gradient.
        let elements: TensorElementKind
        let state: UnsafeMutableRawPointer
        var header: StateFormat.Header

        func weights<E: TensorElements>(_: E.Type) -> UnsafeMutablePointer<E.Param.Scalar> {
            param.assumingMemoryBound(to: E.Param.Scalar.self)
        }
        func grad<E: TensorElements>(_: E.Type) -> UnsafePointer<E.Grad.Scalar> {
            gradient.assumingMemoryBound(to: E.Grad.Scalar.self)
        }
        /// The fp32 views, for the storages whose kernels read fp32 only (their
        /// registry entries refuse other element types).
        var weights: UnsafeMutablePointer<Float> { weights(F32Tensors.self) }
        var grad: UnsafePointer<Float> { grad(F32Tensors.self) }

        var payload: UnsafeMutablePointer<Float> {
            (state + StateFormat.headerBytes).assumingMemoryBound(to: Float.self)
        }
        func moment(_ k: Int) -> UnsafeMutablePointer<Float> { payload + k * header.floatsPerMoment }
    }

    func validate(_ a: TensorArgs) throws(MlorcError) -> Prepared {
        guard let param = a.param else { throw MlorcError(.nullPointer, "param is NULL") }
        guard let grad = a.grad else { throw MlorcError(.nullPointer, "grad is NULL") }
        guard let state = a.state else { throw MlorcError(.nullPointer, "state is NULL") }
        guard a.reserved == 0 else { throw MlorcError(.invalidArgument, "reserved field must be 0") }
        try Self.checkDtype(a.dtype)
        try Self.checkShape(rows: a.rows, cols: a.cols)
        for (name, p) in [("param", UnsafeRawPointer(param)), ("grad", grad), ("state", UnsafeRawPointer(state))]
        where Int(bitPattern: p) % 4 != 0 {
            throw MlorcError(.invalidArgument, "\(name) pointer is not 4-byte aligned")
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
        guard header.dtype == UInt32(a.dtype) else {
            throw MlorcError(.stateMismatch, "state dtype \(header.dtype) differs from tensor dtype \(a.dtype)")
        }
        guard let elements = TensorElementKind(param: a.dtype, grad: a.dtype) else {
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
            let bytes = UInt(4 * t.header.rows * t.header.cols)
            spans.append(Span(start: UInt(bitPattern: t.weights), end: UInt(bitPattern: t.weights) + bytes, writable: true, tensor: i, name: "param"))
            spans.append(Span(start: UInt(bitPattern: t.grad), end: UInt(bitPattern: t.grad) + bytes, writable: false, tensor: i, name: "grad"))
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
