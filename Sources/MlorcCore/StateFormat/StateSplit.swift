/// A state cut into its rows and its replicated part, and joined back for any
/// row shard of the same matrix (mlorc_state_split / mlorc_state_join): what
/// lets a sharded checkpoint load at another world size, the rows being
/// resharded like the weights (torch.distributed.checkpoint does it for
/// DTensors), the replicated part saved once.
///
/// Rows: one record per row, `rowBytes` each: the row's part of every
/// row-sharded array of the payload in payload order (a dense moment's row,
/// a row of U, a row of master weights), then the row's samples of each
/// sampled array (D-adaptation statistics, zero-padded to the most a row
/// can hold), then an 8-byte seal: a checksum of
/// the record mixed with the row's global index and the replicated part's
/// checksum, so that a record moved to another row, or taken from another
/// state or step, is refused.
///
/// Replicated part: a 16-byte prefix (magic "MLORCSH1", total bytes), the
/// 128-byte header of the whole matrix (rows = global rows, no shard fields,
/// payload checksum 0), the payload bytes no row owns (s and Vt of each
/// low-rank moment), and a checksum of all of it. Every shard of a matrix
/// has the same replicated part, bit for bit.
package enum StateSplit {
    static let magic: UInt64 = 0x3148_5343_524F_4C4D  // "MLORCSH1" little-endian
    static let prefixBytes = 16
    static let sealBytes = 8

    /// Where a payload's row-sharded arrays and replicated bytes lie (byte
    /// offsets into the payload, for the header's rows).
    struct Layout {
        var rowArrays: [(offset: Int, bytesPerRow: Int)] = []
        var shared: [(offset: Int, bytes: Int)] = []
        var sampled: [SampledArray] = []

        var rowBytes: Int {
            sampled.reduce(rowArrays.reduce(sealBytes) { $0 + $1.bytesPerRow }) { $0 + 4 * $1.slotFloats }
        }
        var sharedPayloadBytes: Int { shared.reduce(0) { $0 + $1.bytes } }
        var sharedBytes: Int { prefixBytes + StateFormat.headerBytes + sharedPayloadBytes + 8 }
    }

    /// The layout of states of the moment-per-slot format (dense moments,
    /// MLorc factors, statistics as the rule's entry cuts them, master
    /// weights). Storages that lay out their payload their own way, and
    /// statistics no entry describes, are refused.
    static func layout(_ h: StateFormat.Header) throws(MlorcError) -> Layout {
        let entry = h.rule.entry
        let statistics = entry.statisticsRows?(h) ?? (entry.extraFloats(h.rows, h.cols, h.statsStride, h.rowBegin, h.shapeRows) == 0 ? [] : nil)
        guard let statistics, h.storage == .dense || entry.lowRankMomentFloats == nil else {
            throw MlorcError(.invalidArgument, "\(entry.name) states with \(h.storage == .dense ? "dense" : "low-rank") storage cannot be split into rows (their layout is not described by rows yet)")
        }
        let e = h.bf16Moments ? 2 : 4
        var layout = Layout(), offset = 0
        for _ in 0..<h.momentCount {
            if h.storage == .dense {
                layout.rowArrays.append((offset, h.cols * e))
                offset += h.rows * h.cols * e
            } else {
                layout.rowArrays.append((offset, h.rank * e))
                offset += h.rows * h.rank * e
                layout.shared.append((offset, (h.rank + h.rank * h.cols) * e))
                offset += (h.rank + h.rank * h.cols) * e
            }
        }
        offset = (offset + 3) / 4 * 4  // bf16 moments are padded to whole floats (zero bytes, in no part)
        for part in statistics {
            switch part {
            case .perRow(let floats):
                layout.rowArrays.append((offset, 4 * floats))
                offset += 4 * floats * h.rows
            case .shared(let floats):
                layout.shared.append((offset, 4 * floats))
                offset += 4 * floats
            case .sampled(let stride):
                let array = SampledArray(offset: offset, stride: stride, cols: h.cols, rowBegin: h.rowBegin)
                layout.sampled.append(array)
                offset += 4 * DAdaptation.samples(first: h.rowBegin * h.cols, elements: h.rows * h.cols, stride: stride)
            }
        }
        if h.masterWeights {
            layout.rowArrays.append((offset, h.cols * 4))
            offset += h.rows * h.cols * 4
        }
        guard offset == h.payloadBytes else {
            throw MlorcError(.invalidArgument, "\(entry.name) state payload of \(h.payloadBytes) bytes is not in the moment layout (\(offset) bytes): it cannot be split into rows")
        }
        return layout
    }

    /// The seal of row record `record` of global row `row`.
    static func seal(_ record: UnsafeRawPointer, bytes: Int, row: Int, sharedChecksum: UInt64) -> UInt64 {
        var words: (UInt64, UInt64, UInt64) = (Checksum.of(record, count: bytes), sharedChecksum, UInt64(row))
        return withUnsafeBytes(of: &words) { Checksum.of($0.baseAddress!, count: 24) }
    }

    /// (bytes per row record, bytes of the replicated part) of a valid state.
    package static func sizes(_ state: UnsafeRawPointer, bytes: Int) throws(MlorcError) -> (rowBytes: Int, sharedBytes: Int) {
        let l = try layout(try StateFormat.read(state, bytes: bytes))
        return (l.rowBytes, l.sharedBytes)
    }

    /// Cuts a valid state into `rows` (its rows' records) and `shared`.
    package static func split(_ state: UnsafeRawPointer, bytes: Int, rows: UnsafeMutableRawPointer?, rowsBytes: Int,
                      shared: UnsafeMutableRawPointer, sharedBytes: Int) throws(MlorcError) {
        let h = try StateFormat.read(state, bytes: bytes), l = try layout(h)
        guard sharedBytes >= l.sharedBytes else {
            throw MlorcError(.stateTooSmall, "shared has \(sharedBytes) bytes; the replicated part needs \(l.sharedBytes)")
        }
        let (recordBytes, o) = h.rows.multipliedReportingOverflow(by: l.rowBytes)
        guard !o, rowsBytes >= recordBytes else {
            throw MlorcError(.stateTooSmall, "rows has \(rowsBytes) bytes; \(h.rows) rows of \(l.rowBytes) bytes need \(recordBytes)")
        }
        guard h.rows == 0 || rows != nil else { throw MlorcError(.nullPointer, "rows is NULL") }
        var whole = h
        (whole.rows, whole.globalRows, whole.rowBegin, whole.payloadChecksum) = (h.shapeRows, 0, 0, 0)
        let payload = state + StateFormat.headerBytes
        shared.storeBytes(of: magic, toByteOffset: 0, as: UInt64.self)
        shared.storeBytes(of: UInt64(l.sharedBytes), toByteOffset: 8, as: UInt64.self)
        StateFormat.write(whole, to: shared + prefixBytes)
        var at = prefixBytes + StateFormat.headerBytes
        for part in l.shared {
            (shared + at).copyMemory(from: payload + part.offset, byteCount: part.bytes)
            at += part.bytes
        }
        let sharedChecksum = Checksum.of(UnsafeRawPointer(shared), count: at)
        shared.storeBytes(of: sharedChecksum, toByteOffset: at, as: UInt64.self)
        for i in 0..<h.rows {
            let record = rows! + i * l.rowBytes
            var field = 0
            for array in l.rowArrays {
                (record + field).copyMemory(from: payload + array.offset + i * array.bytesPerRow, byteCount: array.bytesPerRow)
                field += array.bytesPerRow
            }
            for array in l.sampled {
                let samples = array.samples(row: i)
                (record + field).initializeMemory(as: UInt8.self, repeating: 0, count: 4 * array.slotFloats)
                (record + field).copyMemory(from: payload + array.offset + 4 * samples.lowerBound, byteCount: 4 * samples.count)
                field += 4 * array.slotFloats
            }
            record.storeBytes(of: seal(record, bytes: field, row: h.rowBegin + i, sharedChecksum: sharedChecksum),
                              toByteOffset: field, as: UInt64.self)
        }
    }

    /// (bytes of the joined state, bytes per row record): mlorc_state_join_size.
    package static func joinSizes(_ shared: UnsafeRawPointer, bytes: Int, globalRows: Int64, rowBegin: Int64,
                                  rows: Int64) throws(MlorcError) -> (stateBytes: Int, rowBytes: Int) {
        let joined = try joinedHeader(shared, bytes: bytes, globalRows: globalRows, rowBegin: rowBegin, rows: rows)
        return (joined.header.totalBytes, joined.layout.rowBytes)
    }

    /// The header of the state that `shared` and rows [rowBegin, rowBegin +
    /// rows) of a globalRows-row matrix join into, after checking `shared`.
    static func joinedHeader(_ shared: UnsafeRawPointer, bytes: Int, globalRows: Int64, rowBegin: Int64,
                             rows: Int64) throws(MlorcError) -> (header: StateFormat.Header, layout: Layout, checksum: UInt64) {
        let least = prefixBytes + StateFormat.headerBytes + 8
        guard bytes >= least else {
            throw MlorcError(.stateTooSmall, "shared has \(bytes) bytes; a replicated part has at least \(least)")
        }
        guard shared.loadUnaligned(fromByteOffset: 0, as: UInt64.self) == magic else {
            throw MlorcError(.stateCorrupted, "shared does not start with the magic of a state's replicated part (mlorc_state_split)")
        }
        let total = shared.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        guard total >= UInt64(least), total <= UInt64(bytes) else {
            throw MlorcError(total < UInt64(least) ? .stateCorrupted : .stateTooSmall,
                             "shared has \(bytes) bytes; its prefix says \(total)")
        }
        let end = Int(total) - 8, checksum = Checksum.of(shared, count: end)
        guard checksum == shared.loadUnaligned(fromByteOffset: end, as: UInt64.self) else {
            throw MlorcError(.stateCorrupted, "shared's checksum does not match (replicated part corrupted)")
        }
        let whole = try StateFormat.readHeader(shared + prefixBytes, bytes: StateFormat.headerBytes)
        guard !whole.isShard, whole.payloadChecksum == 0, Int(total) == (try layout(whole)).sharedBytes else {
            throw MlorcError(.stateCorrupted, "shared's header does not describe the replicated part of a whole matrix")
        }
        guard globalRows == Int64(whole.rows) else {
            throw MlorcError(.stateMismatch, "shared is of a \(whole.rows)x\(whole.cols) matrix, but the shard says \(globalRows) global rows")
        }
        guard rowBegin >= 0, rows >= 0, rowBegin <= globalRows - rows else {
            throw MlorcError(.invalidArgument, "rows [\(rowBegin), \(rowBegin) + \(rows)) are not rows of a \(globalRows)-row matrix")
        }
        var h = whole
        h.rows = Int(rows)
        if !(rowBegin == 0 && rows == globalRows) { (h.globalRows, h.rowBegin) = (Int(globalRows), Int(rowBegin)) }
        let l = try layout(h)
        guard l.sharedBytes == Int(total) else {  // a shard whose layout keeps other replicated parts
            throw MlorcError(.invalidArgument, "rows [\(rowBegin), \(rowBegin) + \(rows)) of this \(whole.rows)x\(whole.cols) \(whole.rule.entry.name) state keep \(l.sharedBytes) replicated bytes, the whole matrix \(total): this shard's layout cannot be joined from it")
        }
        return (h, l, checksum)
    }

    /// Writes the state of the shard into `state`; nothing is written unless
    /// every check passes (sizes, checksums, every row's seal).
    package static func join(_ shared: UnsafeRawPointer, bytes sharedBytes: Int, globalRows: Int64, rowBegin: Int64, rows: Int64,
                     records: UnsafeRawPointer?, recordsBytes: Int, state: UnsafeMutableRawPointer,
                     stateBytes: Int) throws(MlorcError) {
        let (h, l, sharedChecksum) = try joinedHeader(shared, bytes: sharedBytes, globalRows: globalRows,
                                                      rowBegin: rowBegin, rows: rows)
        guard stateBytes >= h.totalBytes else {
            throw MlorcError(.stateTooSmall, "state has \(stateBytes) bytes; the joined state needs \(h.totalBytes)")
        }
        guard recordsBytes == h.rows * l.rowBytes else {
            throw MlorcError(.invalidArgument, "rows has \(recordsBytes) bytes; \(h.rows) rows of \(l.rowBytes) bytes are \(h.rows * l.rowBytes)")
        }
        guard h.rows == 0 || records != nil else { throw MlorcError(.nullPointer, "rows is NULL") }
        let field = l.rowBytes - sealBytes
        for i in 0..<h.rows {
            let record = records! + i * l.rowBytes
            guard record.loadUnaligned(fromByteOffset: field, as: UInt64.self)
                    == seal(record, bytes: field, row: Int(rowBegin) + i, sharedChecksum: sharedChecksum) else {
                throw MlorcError(.stateCorrupted, "row \(Int(rowBegin) + i) (record \(i)) does not belong to this replicated part at this row (corrupted, moved, or from another state or step)")
            }
        }
        let payload = state + StateFormat.headerBytes
        payload.initializeMemory(as: UInt8.self, repeating: 0, count: h.payloadBytes)
        var at = prefixBytes + StateFormat.headerBytes
        for part in l.shared {
            (payload + part.offset).copyMemory(from: shared + at, byteCount: part.bytes)
            at += part.bytes
        }
        for i in 0..<h.rows {
            var from = i * l.rowBytes
            for array in l.rowArrays {
                (payload + array.offset + i * array.bytesPerRow).copyMemory(from: records! + from, byteCount: array.bytesPerRow)
                from += array.bytesPerRow
            }
            for array in l.sampled {
                let samples = array.samples(row: i)
                (payload + array.offset + 4 * samples.lowerBound).copyMemory(from: records! + from, byteCount: 4 * samples.count)
                from += 4 * array.slotFloats
            }
        }
        var header = h
        if h.storage == .lowRank {
            header.payloadChecksum = Checksum.of(UnsafeRawPointer(payload), count: h.payloadBytes)
        }
        StateFormat.write(header, to: state)
        // The parts were checked, so this cannot fail; if it did, leave no usable state behind.
        do throws(MlorcError) { _ = try StateFormat.read(state, bytes: stateBytes) } catch {
            state.storeBytes(of: UInt64(0), toByteOffset: 0, as: UInt64.self)
            throw error
        }
    }

    /// Writes the dense state `state` as the state of the same elements seen
    /// as a rows x cols tensor (a vector kept as 1 x n by one trainer and as
    /// n x 1 row shards by another): dense moments of the moment layout are
    /// elementwise, so only the header changes.
    package static func reshape(_ state: UnsafeRawPointer, bytes: Int, rows: Int64, cols: Int64,
                                out: UnsafeMutableRawPointer, outBytes: Int) throws(MlorcError) {
        var h = try StateFormat.read(state, bytes: bytes)
        guard h.storage == .dense, !h.isShard else {
            throw MlorcError(.invalidArgument, "only a dense state of a whole tensor can be reshaped (this one is \(h.isShard ? "a row shard" : "low-rank"))")
        }
        let entry = h.rule.entry
        let statistics = entry.extraFloats(h.rows, h.cols, h.statsStride, h.rowBegin, h.shapeRows)
        _ = try layout(h)  // the moment layout: elementwise moments
        let (elements, overflow) = rows.multipliedReportingOverflow(by: cols)
        guard rows >= 1, cols >= 1, rows <= StateFormat.maxDimension, cols <= StateFormat.maxDimension, !overflow,
              elements == Int64(h.rows * h.cols) else {
            throw MlorcError(.invalidShape, "a \(rows)x\(cols) tensor does not have the \(h.rows * h.cols) elements of the state's \(h.rows)x\(h.cols) tensor")
        }
        // Statistics shaped by the tensor: the rule says how they follow (or refuses).
        let to = (rows: Int(rows), cols: Int(cols))
        var reshaped: [Float] = []
        if statistics > 0 {
            let old = UnsafeBufferPointer(start: (state + StateFormat.headerBytes).assumingMemoryBound(to: Float.self)
                                              + (h.payloadBytes / 4 - statistics - (h.masterWeights ? h.rows * h.cols : 0)),
                                          count: statistics)
            guard let reshape = entry.reshapeStatistics, let new = reshape(Array(old), (h.rows, h.cols), to),
                  new.count == statistics else {
                throw MlorcError(.invalidArgument, "\(entry.name) states of a \(h.rows)x\(h.cols) tensor keep statistics shaped by the tensor: they cannot be reshaped to \(rows)x\(cols)")
            }
            reshaped = new
        }
        guard outBytes >= h.totalBytes else {
            throw MlorcError(.stateTooSmall, "out has \(outBytes) bytes; the state needs \(h.totalBytes)")
        }
        if UnsafeRawPointer(out) != state {
            (out + StateFormat.headerBytes).copyMemory(from: state + StateFormat.headerBytes, byteCount: h.payloadBytes)
        }
        if statistics > 0 {
            let at = (out + StateFormat.headerBytes).assumingMemoryBound(to: Float.self)
                + (h.payloadBytes / 4 - statistics - (h.masterWeights ? h.rows * h.cols : 0))
            reshaped.withUnsafeBufferPointer { at.update(from: $0.baseAddress!, count: statistics) }
        }
        (h.rows, h.cols) = to
        StateFormat.write(h, to: out)
    }
}

/// A payload array of D-adaptation samples (every `stride`-th element of the
/// matrix, flat index) of a state whose first row is row `rowBegin`.
struct SampledArray {
    let offset: Int, stride: Int, cols: Int, rowBegin: Int

    /// The most samples one row holds (its record's slot): ⌈cols / stride⌉,
    /// as cols consecutive indices hold ⌊cols / stride⌋ or ⌈cols / stride⌉.
    var slotFloats: Int { DAdaptation.sampleIndex(cols, stride: stride) }

    /// The array indices of local row i's samples.
    func samples(row i: Int) -> Range<Int> {
        let base = DAdaptation.sampleIndex(rowBegin * cols, stride: stride)
        let g = rowBegin + i
        return (DAdaptation.sampleIndex(g * cols, stride: stride) - base)..<(DAdaptation.sampleIndex((g + 1) * cols, stride: stride) - base)
    }
}
