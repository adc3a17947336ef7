/// An optimizer handle: a rule, its hyperparameters and scratch. The state of
/// each tensor lives in caller-owned bytes (StateFormat).
package final class Optimizer {
    package let rule: RuleKind
    package var hyper: Hyperparameters
    var workspace = Workspace()
    /// Sums the sharded step's reductions across ranks (nil: none set).
    package var reducer: Reducer?
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

    /// The header a fresh state for `layout` gets, after the storage policy.
    func freshHeader(_ layout: TensorLayout, tensorID: UInt64, shard: ShardArgs? = nil) throws(MlorcError) -> StateFormat.Header {
        // A shard: storage and rank bounds follow the whole matrix (every rank agrees).
        let place = try shard.flatMap { s throws(MlorcError) in try Self.checkShard(rows: layout.rows, cols: layout.cols, s) }
        if shard != nil { try checkShardable(dtype: place != nil ? layout.dtype & ~0x100 : nil) }
        if place != nil && hyper.bf16State && rule.entry.bf16State {
            throw MlorcError(.unsupportedDtype, "sharded states are fp32 in this version: set MLORC_PARAM_STATE_DTYPE to 0 for them")
        }
        try Self.checkShape(rows: place.map { Int64($0.globalRows) } ?? layout.rows, cols: layout.cols)
        // The layout's dtype is the parameter's (a GRAD_F32 flag is ignored here).
        let paramDtype = layout.dtype & ~0x100
        try checkDtype(paramDtype)
        guard let request = StorageRequest(rawValue: layout.storage) else {
            throw MlorcError(.invalidArgument, "storage \(layout.storage) is not an mlorc_storage value")
        }
        let localRows = Int(layout.rows), rows = place?.globalRows ?? localRows, cols = Int(layout.cols), r = hyper.rank
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
        // fp32 master weights for a half-precision parameter (an fp32 one needs none).
        let master = hyper.masterWeights && paramDtype != F32.dtype
        let bf16Moments = hyper.bf16State && rule.entry.bf16State
        guard StateFormat.payloadBytes(rule: rule, storage: storage, rows: localRows, cols: cols, rank: r, master: master,
                                       bf16Moments: bf16Moments, statsStride: stride,
                                       rowBegin: place?.rowBegin ?? 0, globalRows: place?.globalRows ?? 0) != nil else {
            throw MlorcError(.invalidShape, "state of a \(localRows)x\(cols) tensor would overflow the address space")
        }
        let dtype = UInt32(paramDtype) | (master ? StateFormat.Header.masterFlag : 0)
            | (bf16Moments ? StateFormat.Header.bf16MomentsFlag : 0)
        return StateFormat.Header(rule: rule, storage: storage, dtype: dtype, rows: localRows, cols: cols,
                                  rank: storage == .lowRank ? r : 0, step: 0, tensorID: tensorID, statsStride: stride,
                                  globalRows: place?.globalRows ?? 0, rowBegin: place?.rowBegin ?? 0)
    }

    package func stateSize(_ layout: TensorLayout, shard: ShardArgs? = nil) throws(MlorcError) -> Int {
        try freshHeader(layout, tensorID: 0, shard: shard).totalBytes
    }

    /// A fresh state: zero moments, step 0; with master weights, `param`'s
    /// values widened into them (required then, not read otherwise).
    package func initState(_ layout: TensorLayout, tensorID: UInt64, state: UnsafeMutableRawPointer?,
                           bytes: Int, param: UnsafeRawPointer? = nil, shard: ShardArgs? = nil) throws(MlorcError) {
        var header = try freshHeader(layout, tensorID: tensorID, shard: shard)
        guard let state else { throw MlorcError(.nullPointer, "state is NULL") }
        guard bytes >= header.totalBytes else {
            throw MlorcError(.stateTooSmall, "state has \(bytes) bytes; a \(header.rows)x\(header.cols) tensor needs \(header.totalBytes)")
        }
        if header.masterWeights && header.rows > 0 {  // a shard without rows has no master weights to fill
            guard let param else {
                throw MlorcError(.nullPointer, "the state keeps fp32 master weights (MLORC_PARAM_MASTER_WEIGHTS): initialise it with the parameter's values (mlorc_state_init_with_param)")
            }
            guard Int(bitPattern: param) % 2 == 0 else {
                throw MlorcError(.invalidArgument, "param pointer is not 2-byte aligned")
            }
        }
        let payload = state + StateFormat.headerBytes
        payload.initializeMemory(as: UInt8.self, repeating: 0, count: header.payloadBytes)
        if header.masterWeights, let param {
            let master = payload.assumingMemoryBound(to: Float.self) + header.masterOffset, n = header.rows * header.cols
            if header.paramDtype == BF16.dtype {
                let p = param.assumingMemoryBound(to: UInt16.self)
                for e in 0..<n { master[e] = Float(bitPattern: UInt32(p[e]) << 16) }
            } else {
                let p = param.assumingMemoryBound(to: Float16.self)
                for e in 0..<n { master[e] = Float(p[e]) }
            }
        }
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
}
