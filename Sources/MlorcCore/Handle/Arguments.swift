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

/// Where a tensor lies in a matrix split by rows between ranks (mlorc_shard):
/// rows [rowBegin, rowBegin + rows) of a globalRows x cols matrix.
package struct ShardArgs {
    package var globalRows: Int64, rowBegin: Int64
    package init(globalRows: Int64, rowBegin: Int64) { (self.globalRows, self.rowBegin) = (globalRows, rowBegin) }
}

/// A reducer (mlorc_set_reducer): sums `count` doubles in place across the
/// ranks of a sharded step; nonzero refuses the step.
package typealias Reducer = (_ buffer: UnsafeMutablePointer<Double>, _ count: Int) -> Int32
