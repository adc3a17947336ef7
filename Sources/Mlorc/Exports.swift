import CMlorcHeader
import MlorcCore

// The C API of include/mlorc.h. Each function is checked against its
// declaration there by `@c @implementation`; all validation happens in
// MlorcCore, which reports failures as MlorcError (never traps).

@c @implementation public func mlorc_version_number() -> UInt32 {
    UInt32(MLORC_VERSION_MAJOR * 10000 + MLORC_VERSION_MINOR * 100 + MLORC_VERSION_PATCH)
}

@c @implementation public func mlorc_version_string() -> UnsafePointer<CChar>! {
    cString("0.1.0")
}

@c @implementation public func mlorc_status_string(_ status: Int32) -> UnsafePointer<CChar>! {
    cString(statusText(status))
}

@c @implementation public func mlorc_create(_ out: UnsafeMutablePointer<OpaquePointer?>!, _ rule: Int32) -> Int32 {
    guard let out else { return MlorcError.Code.nullPointer.rawValue }
    out.pointee = nil
    guard let kind = RuleKind(rawValue: rule) else { return MlorcError.Code.invalidArgument.rawValue }
    let handle = Handle(Optimizer(rule: kind))
    out.pointee = OpaquePointer(Unmanaged.passRetained(handle).toOpaque())
    return 0
}

@c @implementation public func mlorc_free(_ opt: OpaquePointer!) {
    guard let opt else { return }
    Unmanaged<Handle>.fromOpaque(UnsafeRawPointer(opt)).release()
}

@c @implementation public func mlorc_last_error(_ opt: OpaquePointer!) -> UnsafePointer<CChar>! {
    guard let handle = Handle.from(opt) else { return cString("mlorc_last_error: handle is NULL") }
    return UnsafePointer(handle.lastError)
}

@c @implementation public func mlorc_get_rule(_ opt: OpaquePointer!, _ outRule: UnsafeMutablePointer<Int32>!) -> Int32 {
    guard let handle = Handle.from(opt) else { return MlorcError.Code.nullPointer.rawValue }
    return status(handle) { () throws(MlorcError) in
        guard let outRule else { throw MlorcError(.nullPointer, "out_rule is NULL") }
        outRule.pointee = handle.optimizer.rule.rawValue
    }
}

func paramKey(_ raw: Int32) throws(MlorcError) -> ParamKey {
    guard let key = ParamKey(rawValue: raw) else { throw MlorcError(.unknownParam, "parameter key \(raw) is not an mlorc_param") }
    return key
}

@c @implementation public func mlorc_set_param(_ opt: OpaquePointer!, _ param: Int32, _ value: Double) -> Int32 {
    guard let handle = Handle.from(opt) else { return MlorcError.Code.nullPointer.rawValue }
    return status(handle) { () throws(MlorcError) in
        let o = handle.optimizer
        try o.hyper.set(try paramKey(param), value, rule: o.rule)
    }
}

@c @implementation public func mlorc_get_param(_ opt: OpaquePointer!, _ param: Int32, _ outValue: UnsafeMutablePointer<Double>!) -> Int32 {
    guard let handle = Handle.from(opt) else { return MlorcError.Code.nullPointer.rawValue }
    return status(handle) { () throws(MlorcError) in
        let o = handle.optimizer, key = try paramKey(param)
        guard Hyperparameters.bounds(rule: o.rule, key: key) != nil else {
            throw MlorcError(.unknownParam, "parameter \(key) does not apply to this rule")
        }
        guard let outValue else { throw MlorcError(.nullPointer, "out_value is NULL") }
        outValue.pointee = o.hyper.value(key)
    }
}

@c @implementation public func mlorc_param_bounds(_ rule: Int32, _ param: Int32, _ outMin: UnsafeMutablePointer<Double>!,
                                                  _ outMax: UnsafeMutablePointer<Double>!) -> Int32 {
    status(nil) { () throws(MlorcError) in
        guard let kind = RuleKind(rawValue: rule) else { throw MlorcError(.invalidArgument, "unknown rule") }
        guard let range = Hyperparameters.bounds(rule: kind, key: try paramKey(param)) else {
            throw MlorcError(.unknownParam, "parameter does not apply to this rule")
        }
        guard let outMin, let outMax else { throw MlorcError(.nullPointer, "out_min or out_max is NULL") }
        outMin.pointee = range.lowerBound
        outMax.pointee = range.upperBound
    }
}

@c @implementation public func mlorc_scratch_bytes(_ opt: OpaquePointer!, _ outBytes: UnsafeMutablePointer<Int>!) -> Int32 {
    guard let handle = Handle.from(opt) else { return MlorcError.Code.nullPointer.rawValue }
    return status(handle) { () throws(MlorcError) in
        guard let outBytes else { throw MlorcError(.nullPointer, "out_bytes is NULL") }
        outBytes.pointee = handle.optimizer.scratchBytes
    }
}

func coreLayout(_ layout: UnsafePointer<mlorc_tensor_layout>?) throws(MlorcError) -> TensorLayout {
    guard let l = layout?.pointee else { throw MlorcError(.nullPointer, "layout is NULL") }
    return TensorLayout(rows: l.rows, cols: l.cols, dtype: l.dtype, storage: l.storage)
}

@c @implementation public func mlorc_state_size(_ opt: OpaquePointer!, _ layout: UnsafePointer<mlorc_tensor_layout>!,
                                                _ outBytes: UnsafeMutablePointer<Int>!) -> Int32 {
    guard let handle = Handle.from(opt) else { return MlorcError.Code.nullPointer.rawValue }
    return status(handle) { () throws(MlorcError) in
        let size = try handle.optimizer.stateSize(try coreLayout(layout))
        guard let outBytes else { throw MlorcError(.nullPointer, "out_bytes is NULL") }
        outBytes.pointee = size
    }
}

@c @implementation public func mlorc_state_init(_ opt: OpaquePointer!, _ layout: UnsafePointer<mlorc_tensor_layout>!,
                                                _ tensorID: UInt64, _ state: UnsafeMutableRawPointer!,
                                                _ stateBytes: Int) -> Int32 {
    guard let handle = Handle.from(opt) else { return MlorcError.Code.nullPointer.rawValue }
    return status(handle) { () throws(MlorcError) in
        try handle.optimizer.initState(try coreLayout(layout), tensorID: tensorID, state: state, bytes: stateBytes)
    }
}

@c @implementation public func mlorc_state_init_with_param(
    _ opt: OpaquePointer!, _ layout: UnsafePointer<mlorc_tensor_layout>!, _ tensorID: UInt64,
    _ param: UnsafeRawPointer!, _ state: UnsafeMutableRawPointer!, _ stateBytes: Int
) -> Int32 {
    guard let handle = Handle.from(opt) else { return MlorcError.Code.nullPointer.rawValue }
    return status(handle) { () throws(MlorcError) in
        try handle.optimizer.initState(try coreLayout(layout), tensorID: tensorID, state: state, bytes: stateBytes,
                                       param: param)
    }
}

func stateInfo(_ d: StateDescription) -> mlorc_state_info {
    mlorc_state_info(layout_version: d.layoutVersion, rule: d.rule, storage: d.storage, dtype: d.dtype,
                     rows: d.rows, cols: d.cols, rank: d.rank, step: d.step, tensor_id: d.tensorID, state_bytes: d.stateBytes)
}

@c @implementation public func mlorc_state_inspect(_ state: UnsafeRawPointer!, _ stateBytes: Int,
                                                   _ outInfo: UnsafeMutablePointer<mlorc_state_info>!) -> Int32 {
    status(nil) { () throws(MlorcError) in
        guard let state else { throw MlorcError(.nullPointer, "state is NULL") }
        guard let outInfo else { throw MlorcError(.nullPointer, "out_info is NULL") }
        outInfo.pointee = stateInfo(try StateDescription(state, bytes: stateBytes))
    }
}

@c @implementation public func mlorc_state_check(_ state: UnsafeRawPointer!, _ stateBytes: Int,
                                                 _ outInfo: UnsafeMutablePointer<mlorc_state_info>!,
                                                 _ why: UnsafeMutablePointer<CChar>!, _ whyBytes: Int) -> Int32 {
    status(why: why, bytes: whyBytes) { () throws(MlorcError) in
        guard let state else { throw MlorcError(.nullPointer, "state is NULL") }
        let info = stateInfo(try StateDescription(state, bytes: stateBytes))
        outInfo?.pointee = info
    }
}

@c @implementation public func mlorc_step(_ opt: OpaquePointer!, _ tensors: UnsafePointer<mlorc_tensor>!,
                                          _ count: Int, _ lr: Double) -> Int32 {
    mlorc_step_group(opt, tensors, count, lr, nil, 0)
}

@c @implementation public func mlorc_step_group(_ opt: OpaquePointer!, _ tensors: UnsafePointer<mlorc_tensor>!,
                                                _ count: Int, _ lr: Double, _ group: UnsafeMutableRawPointer!,
                                                _ groupBytes: Int) -> Int32 {
    guard let handle = Handle.from(opt) else { return MlorcError.Code.nullPointer.rawValue }
    return status(handle) { () throws(MlorcError) in
        // size_t arrives as Int: a count with the top bit set (a negative
        // value converted to size_t) is negative here. Checked first, so no
        // other argument can make such a call look empty.
        let requested = UInt(bitPattern: count)
        guard requested <= UInt(MLORC_MAX_STEP_TENSORS) else {
            throw MlorcError(.invalidArgument, "count \(requested) is above MLORC_MAX_STEP_TENSORS (\(MLORC_MAX_STEP_TENSORS))"
                             + (count < 0 ? "; its top bit is set (a negative value converted to size_t?)" : ""))
        }
        // count 0 still has its lr and group state checked (Optimizer.step).
        guard count == 0 || tensors != nil else { throw MlorcError(.nullPointer, "tensors is NULL with count \(count)") }
        let args = UnsafeBufferPointer(start: tensors, count: count).map { t in
            TensorArgs(param: t.param, grad: t.grad, state: t.state, stateBytes: t.state_bytes,
                       rows: t.rows, cols: t.cols, dtype: t.dtype, reserved: t.reserved)
        }
        try handle.optimizer.step(args, lr: lr, group: group, groupBytes: groupBytes)
    }
}

@c @implementation public func mlorc_group_state_init(_ opt: OpaquePointer!, _ group: UnsafeMutableRawPointer!,
                                                      _ groupBytes: Int) -> Int32 {
    guard let handle = Handle.from(opt) else { return MlorcError.Code.nullPointer.rawValue }
    return status(handle) { () throws(MlorcError) in
        try handle.optimizer.initGroupState(group, bytes: groupBytes)
    }
}

func groupInfo(_ g: GroupDescription) -> mlorc_group_info {
    mlorc_group_info(layout_version: g.layoutVersion, rule: g.rule, step: g.step, d: g.d, d0: g.d0, d_max: g.dMax,
                     numerator: g.numerator)
}

@c @implementation public func mlorc_group_state_inspect(_ group: UnsafeRawPointer!, _ groupBytes: Int,
                                                         _ outInfo: UnsafeMutablePointer<mlorc_group_info>!) -> Int32 {
    status(nil) { () throws(MlorcError) in
        guard let group else { throw MlorcError(.nullPointer, "group is NULL") }
        guard let outInfo else { throw MlorcError(.nullPointer, "out_info is NULL") }
        outInfo.pointee = groupInfo(try GroupDescription(group, bytes: groupBytes))
    }
}

@c @implementation public func mlorc_group_state_check(_ group: UnsafeRawPointer!, _ groupBytes: Int,
                                                       _ outInfo: UnsafeMutablePointer<mlorc_group_info>!,
                                                       _ why: UnsafeMutablePointer<CChar>!, _ whyBytes: Int) -> Int32 {
    status(why: why, bytes: whyBytes) { () throws(MlorcError) in
        guard let group else { throw MlorcError(.nullPointer, "group is NULL") }
        let info = groupInfo(try GroupDescription(group, bytes: groupBytes))
        outInfo?.pointee = info
    }
}

// MARK: sharded steps

@c @implementation public func mlorc_set_reducer(_ opt: OpaquePointer!, _ reduce: mlorc_reduce_fn!,
                                                 _ user: UnsafeMutableRawPointer!) -> Int32 {
    guard let handle = Handle.from(opt) else { return MlorcError.Code.nullPointer.rawValue }
    guard let reduce else {
        handle.optimizer.reducer = nil
        return 0
    }
    handle.optimizer.reducer = { buffer, count in reduce(user, buffer, count) }
    return 0
}

func coreShard(_ shard: UnsafePointer<mlorc_shard>?) throws(MlorcError) -> ShardArgs {
    guard let s = shard?.pointee else { throw MlorcError(.nullPointer, "shard is NULL") }
    return ShardArgs(globalRows: s.global_rows, rowBegin: s.row_begin)
}

@c @implementation public func mlorc_state_size_sharded(_ opt: OpaquePointer!, _ layout: UnsafePointer<mlorc_tensor_layout>!,
                                                        _ shard: UnsafePointer<mlorc_shard>!,
                                                        _ outBytes: UnsafeMutablePointer<Int>!) -> Int32 {
    guard let handle = Handle.from(opt) else { return MlorcError.Code.nullPointer.rawValue }
    return status(handle) { () throws(MlorcError) in
        let size = try handle.optimizer.stateSize(try coreLayout(layout), shard: try coreShard(shard))
        guard let outBytes else { throw MlorcError(.nullPointer, "out_bytes is NULL") }
        outBytes.pointee = size
    }
}

@c @implementation public func mlorc_state_init_sharded(
    _ opt: OpaquePointer!, _ layout: UnsafePointer<mlorc_tensor_layout>!, _ shard: UnsafePointer<mlorc_shard>!,
    _ tensorID: UInt64, _ param: UnsafeRawPointer!, _ state: UnsafeMutableRawPointer!, _ stateBytes: Int
) -> Int32 {
    guard let handle = Handle.from(opt) else { return MlorcError.Code.nullPointer.rawValue }
    return status(handle) { () throws(MlorcError) in
        try handle.optimizer.initState(try coreLayout(layout), tensorID: tensorID, state: state, bytes: stateBytes,
                                       param: param, shard: try coreShard(shard))
    }
}

@c @implementation public func mlorc_step_sharded(_ opt: OpaquePointer!, _ tensors: UnsafePointer<mlorc_tensor>!,
                                                  _ shards: UnsafePointer<mlorc_shard>!, _ count: Int, _ lr: Double,
                                                  _ group: UnsafeMutableRawPointer!, _ groupBytes: Int) -> Int32 {
    guard let handle = Handle.from(opt) else { return MlorcError.Code.nullPointer.rawValue }
    return status(handle) { () throws(MlorcError) in
        let requested = UInt(bitPattern: count)
        guard requested <= UInt(MLORC_MAX_STEP_TENSORS) else {
            throw MlorcError(.invalidArgument, "count \(requested) is above MLORC_MAX_STEP_TENSORS (\(MLORC_MAX_STEP_TENSORS))"
                             + (count < 0 ? "; its top bit is set (a negative value converted to size_t?)" : ""))
        }
        guard count == 0 || tensors != nil else { throw MlorcError(.nullPointer, "tensors is NULL with count \(count)") }
        guard count == 0 || shards != nil else { throw MlorcError(.nullPointer, "shards is NULL with count \(count)") }
        let args = UnsafeBufferPointer(start: tensors, count: count).map { t in
            TensorArgs(param: t.param, grad: t.grad, state: t.state, stateBytes: t.state_bytes,
                       rows: t.rows, cols: t.cols, dtype: t.dtype, reserved: t.reserved)
        }
        let places = UnsafeBufferPointer(start: shards, count: count).map { s in
            ShardArgs(globalRows: s.global_rows, rowBegin: s.row_begin)
        }
        try handle.optimizer.stepSharded(args, shards: places, lr: lr, group: group, groupBytes: groupBytes)
    }
}

// ------------------------------------------------ states across world sizes

@c @implementation public func mlorc_state_split_size(_ state: UnsafeRawPointer!, _ stateBytes: Int,
                                                      _ outRowBytes: UnsafeMutablePointer<Int>!,
                                                      _ outSharedBytes: UnsafeMutablePointer<Int>!,
                                                      _ why: UnsafeMutablePointer<CChar>!, _ whyBytes: Int) -> Int32 {
    status(why: why, bytes: whyBytes) { () throws(MlorcError) in
        guard let state else { throw MlorcError(.nullPointer, "state is NULL") }
        guard let outRowBytes, let outSharedBytes else { throw MlorcError(.nullPointer, "an out pointer is NULL") }
        let sizes = try StateSplit.sizes(state, bytes: stateBytes)
        (outRowBytes.pointee, outSharedBytes.pointee) = (sizes.rowBytes, sizes.sharedBytes)
    }
}

@c @implementation public func mlorc_state_split(_ state: UnsafeRawPointer!, _ stateBytes: Int,
                                                 _ rows: UnsafeMutableRawPointer!, _ rowsBytes: Int,
                                                 _ shared: UnsafeMutableRawPointer!, _ sharedBytes: Int,
                                                 _ why: UnsafeMutablePointer<CChar>!, _ whyBytes: Int) -> Int32 {
    status(why: why, bytes: whyBytes) { () throws(MlorcError) in
        guard let state else { throw MlorcError(.nullPointer, "state is NULL") }
        guard let shared else { throw MlorcError(.nullPointer, "shared is NULL") }
        try StateSplit.split(state, bytes: stateBytes, rows: rows, rowsBytes: rowsBytes, shared: shared,
                             sharedBytes: sharedBytes)
    }
}

@c @implementation public func mlorc_state_join_size(_ shared: UnsafeRawPointer!, _ sharedBytes: Int,
                                                     _ shard: UnsafePointer<mlorc_shard>!, _ rows: Int64,
                                                     _ outStateBytes: UnsafeMutablePointer<Int>!,
                                                     _ outRowBytes: UnsafeMutablePointer<Int>!,
                                                     _ why: UnsafeMutablePointer<CChar>!, _ whyBytes: Int) -> Int32 {
    status(why: why, bytes: whyBytes) { () throws(MlorcError) in
        guard let shared else { throw MlorcError(.nullPointer, "shared is NULL") }
        guard let outStateBytes else { throw MlorcError(.nullPointer, "out_state_bytes is NULL") }
        let s = try coreShard(shard)
        let sizes = try StateSplit.joinSizes(shared, bytes: sharedBytes, globalRows: s.globalRows,
                                             rowBegin: s.rowBegin, rows: rows)
        outStateBytes.pointee = sizes.stateBytes
        outRowBytes?.pointee = sizes.rowBytes
    }
}

@c @implementation public func mlorc_state_join(_ shared: UnsafeRawPointer!, _ sharedBytes: Int,
                                                _ shard: UnsafePointer<mlorc_shard>!, _ rows: Int64,
                                                _ records: UnsafeRawPointer!, _ recordsBytes: Int,
                                                _ state: UnsafeMutableRawPointer!, _ stateBytes: Int,
                                                _ why: UnsafeMutablePointer<CChar>!, _ whyBytes: Int) -> Int32 {
    status(why: why, bytes: whyBytes) { () throws(MlorcError) in
        guard let shared else { throw MlorcError(.nullPointer, "shared is NULL") }
        guard let state else { throw MlorcError(.nullPointer, "state is NULL") }
        let s = try coreShard(shard)
        try StateSplit.join(shared, bytes: sharedBytes, globalRows: s.globalRows, rowBegin: s.rowBegin, rows: rows,
                            records: records, recordsBytes: recordsBytes, state: state, stateBytes: stateBytes)
    }
}

@c @implementation public func mlorc_state_reshape(_ state: UnsafeRawPointer!, _ stateBytes: Int, _ rows: Int64,
                                                   _ cols: Int64, _ out: UnsafeMutableRawPointer!, _ outBytes: Int,
                                                   _ why: UnsafeMutablePointer<CChar>!, _ whyBytes: Int) -> Int32 {
    status(why: why, bytes: whyBytes) { () throws(MlorcError) in
        guard let state else { throw MlorcError(.nullPointer, "state is NULL") }
        guard let out else { throw MlorcError(.nullPointer, "out is NULL") }
        try StateSplit.reshape(state, bytes: stateBytes, rows: rows, cols: cols, out: out, outBytes: outBytes)
    }
}
