/// The byte layout of one tensor's caller-owned state.
///
/// A 128-byte header, then the payload (fp32). Header fields, native-endian:
///
///     0  magic u64         8  layout version u32, rule u32   16 storage u32, dtype u32
///     24 rows i64          32 cols i64                        40 rank i64 (0 if dense)
///     48 step u64          56 tensor id u64                   64 payload bytes u64
///     72 payload checksum u64 (low-rank only; 0 for dense)
///     80 statistics stride u64 (D-adaptation rules; 0 for the others)
///     88 header checksum u64 over bytes 0..<88
///     96..<128 zero for a state of a whole matrix; for a row shard
///        (mlorc_state_init_sharded): 96 global rows i64, 104 first row i64,
///        112 shard checksum u64 over bytes 0..<112, 120..<128 zero.
///        Read refuses anything else. Old states (all zero) stay valid.
///
/// Payload, per moment in rule order: low-rank U (rows x rank, row-major),
/// s (rank), Vt (rank x cols in Panel layout); dense: rows x cols values.
/// The moments are fp32, or bf16 (dtype bit 9, MLORC_STATE_BF16_MOMENTS: the
/// same elements at 2 bytes each, the moments' bytes padded to a multiple
/// of 4); fp32 master weights (dtype bit 8) end the payload.
/// A rule's registry entry (RuleEntry.payloadFloats) gives its layout: a
/// storage may lay out its low-rank payload its own way and append
/// statistics after the moments (see the storage's and rule's files).
/// Dense payloads are not checksummed: hashing 2mn floats would add a full read
/// of the state to every step.
enum StateFormat {
    /// Step counters stay below 2^53: beyond it step + 1 and the bias
    /// corrections' powers would no longer be exact.
    static let stepLimit: UInt64 = 1 << 53
    static let magic: UInt64 = 0x3154_5343_524F_4C4D  // "MLORCST1" little-endian
    static let layoutVersion: UInt32 = 1
    static let headerBytes = 128
    static let maxDimension: Int64 = 1 << 31 - 1  // LAPACK/BLAS index with 32-bit ints

    enum Storage: UInt32 {
        case dense = 1
        case lowRank = 2
    }

    /// What a header holds.
    struct Header: Equatable {
        var rule: RuleKind
        var storage: Storage
        var dtype: UInt32
        var rows: Int
        var cols: Int
        var rank: Int
        var step: UInt64
        var tensorID: UInt64
        var payloadChecksum: UInt64 = 0
        var statsStride = 0
        /// A row shard: rows [rowBegin, rowBegin + rows) of a globalRows x
        /// cols matrix. 0 (and rowBegin 0) for a whole matrix.
        var globalRows = 0
        var rowBegin = 0

        var momentCount: Int { rule.momentCount }
        /// Whether the state holds a row shard (mlorc_state_init_sharded).
        var isShard: Bool { globalRows != 0 }
        /// The rows of the whole matrix: what decides storage, rank bounds
        /// and the sketch width, on every shard alike.
        var shapeRows: Int { isShard ? globalRows : rows }

        /// Floats in one moment's payload (MLorc and dense storage).
        var floatsPerMoment: Int {
            storage == .dense ? rows * cols : rank * (rows + cols + 1)
        }
        /// The parameter's mlorc_dtype (the low byte of the dtype field).
        var paramDtype: Int32 { Int32(dtype & 0xFF) }
        /// Whether the payload ends with fp32 master weights (dtype bit 8).
        var masterWeights: Bool { dtype & Self.masterFlag != 0 }
        static let masterFlag: UInt32 = 0x100
        /// Whether the moments (factors) are stored bf16 (dtype bit 9).
        var bf16Moments: Bool { dtype & Self.bf16MomentsFlag != 0 }
        static let bf16MomentsFlag: UInt32 = 0x200
        /// The moments' element type.
        var momentKind: ElementKind { bf16Moments ? .bf16 : .f32 }
        /// Bytes of one moment's payload.
        var bytesPerMoment: Int { floatsPerMoment * (bf16Moments ? 2 : 4) }
        /// Where the master weights start in the payload, in floats.
        var masterOffset: Int { (payloadBytes - 4 * rows * cols) / 4 }

        var payloadBytes: Int {
            StateFormat.payloadBytes(rule: rule, storage: storage, rows: rows, cols: cols, rank: rank, master: masterWeights,
                                     bf16Moments: bf16Moments, statsStride: statsStride, rowBegin: rowBegin,
                                     globalRows: globalRows)!
        }
        /// Floats of all moments, where the statistics of D-adaptation start.
        var momentFloats: Int { momentCount * floatsPerMoment }
        var totalBytes: Int { headerBytes + payloadBytes }
    }

    /// Payload size in bytes, or nil on overflow (the rule's registry entry
    /// gives its layout).
    static func payloadBytes(rule: RuleKind, storage: Storage, rows: Int, cols: Int, rank: Int, master: Bool = false,
                             bf16Moments: Bool = false, statsStride: Int = 0, rowBegin: Int = 0,
                             globalRows: Int = 0) -> Int? {
        let shapeRows = globalRows != 0 ? globalRows : rows  // as Header.shapeRows
        guard var floats = rule.entry.payloadFloats(storage: storage, rows: rows, cols: cols, rank: rank,
                                                    statsStride: statsStride, rowBegin: rowBegin,
                                                    shapeRows: shapeRows) else { return nil }
        if bf16Moments {
            // 2 bytes per moment element, padded to whole floats; the statistics stay fp32.
            let extra = rule.entry.extraFloats(rows, cols, statsStride, rowBegin, shapeRows)
            floats = (floats - extra + 1) / 2 + extra
        }
        // Master weights: rows·cols floats more (rows·cols <= Int64.max / 16: no overflow).
        let (bytes, o) = (4 * (floats + (master ? rows * cols : 0))).addingReportingOverflow(headerBytes)
        return o ? nil : bytes - headerBytes
    }

    static func write(_ h: Header, to state: UnsafeMutableRawPointer) {
        state.initializeMemory(as: UInt8.self, repeating: 0, count: headerBytes)
        state.storeBytes(of: magic, toByteOffset: 0, as: UInt64.self)
        state.storeBytes(of: layoutVersion, toByteOffset: 8, as: UInt32.self)
        state.storeBytes(of: UInt32(h.rule.rawValue), toByteOffset: 12, as: UInt32.self)
        state.storeBytes(of: h.storage.rawValue, toByteOffset: 16, as: UInt32.self)
        state.storeBytes(of: h.dtype, toByteOffset: 20, as: UInt32.self)
        state.storeBytes(of: Int64(h.rows), toByteOffset: 24, as: Int64.self)
        state.storeBytes(of: Int64(h.cols), toByteOffset: 32, as: Int64.self)
        state.storeBytes(of: Int64(h.rank), toByteOffset: 40, as: Int64.self)
        state.storeBytes(of: h.step, toByteOffset: 48, as: UInt64.self)
        state.storeBytes(of: h.tensorID, toByteOffset: 56, as: UInt64.self)
        state.storeBytes(of: UInt64(h.payloadBytes), toByteOffset: 64, as: UInt64.self)
        state.storeBytes(of: h.payloadChecksum, toByteOffset: 72, as: UInt64.self)
        state.storeBytes(of: UInt64(h.statsStride), toByteOffset: 80, as: UInt64.self)
        let sum = Checksum.of(UnsafeRawPointer(state), count: 88)
        state.storeBytes(of: sum, toByteOffset: 88, as: UInt64.self)
        if h.isShard {
            state.storeBytes(of: Int64(h.globalRows), toByteOffset: 96, as: Int64.self)
            state.storeBytes(of: Int64(h.rowBegin), toByteOffset: 104, as: Int64.self)
            state.storeBytes(of: Checksum.of(UnsafeRawPointer(state), count: 112), toByteOffset: 112, as: UInt64.self)
        }
    }

    /// Reads and validates a header and, for low-rank storage, the payload
    /// checksum. Never reads past `bytes`.
    static func read(_ state: UnsafeRawPointer, bytes: Int) throws(MlorcError) -> Header {
        let header = try readHeader(state, bytes: bytes)
        guard bytes >= header.totalBytes else {
            throw MlorcError(.stateTooSmall, "state has \(bytes) bytes; its header says it needs \(header.totalBytes)")
        }
        if header.storage == .lowRank {
            let actual = Checksum.of(state + headerBytes, count: header.payloadBytes)
            guard actual == header.payloadChecksum else {
                throw MlorcError(.stateCorrupted, "state payload checksum does not match (factors corrupted)")
            }
            try checkFactors(header, (state + headerBytes).assumingMemoryBound(to: Float.self))
        }
        return header
    }

    /// Reads and validates the 128 header bytes alone (the payload is not
    /// read: `bytes` only needs to cover the header).
    static func readHeader(_ state: UnsafeRawPointer, bytes: Int) throws(MlorcError) -> Header {
        guard bytes >= headerBytes else {
            throw MlorcError(.stateTooSmall, "state has \(bytes) bytes; the header alone needs \(headerBytes)")
        }
        func u64(_ o: Int) -> UInt64 { state.loadUnaligned(fromByteOffset: o, as: UInt64.self) }
        func u32(_ o: Int) -> UInt32 { state.loadUnaligned(fromByteOffset: o, as: UInt32.self) }
        guard u64(0) == magic else {
            throw MlorcError(.stateCorrupted, "state does not start with the libmlorc magic (not a state, or overwritten)")
        }
        let version = u32(8)
        guard version == layoutVersion else {
            let sealed = Checksum.of(state, count: 88) == u64(88)
            throw MlorcError(.stateVersion, "state layout version \(version) is not supported (this library reads version \(layoutVersion)); "
                             + versionCause(version, current: layoutVersion, sealed: sealed))
        }
        guard Checksum.of(state, count: 88) == u64(88) else {
            throw MlorcError(.stateCorrupted, "state header checksum does not match (header corrupted)")
        }
        // Zero (existing states keep their sums) or a shard description sealed
        // by its own checksum: any other value there is damage.
        var globalRows = 0, rowBegin = 0
        if let bad = (96..<headerBytes).first(where: { state.load(fromByteOffset: $0, as: UInt8.self) != 0 }) {
            let sealed = u64(120) == 0 && Checksum.of(state, count: 112) == u64(112)
            guard sealed else {
                throw MlorcError(.stateCorrupted, "state header reserved byte \(bad) is \(state.load(fromByteOffset: bad, as: UInt8.self)), not 0 (bytes 96..127 must be zero, or a shard description with its checksum: header corrupted)")
            }
            let g = Int64(bitPattern: u64(96)), b = Int64(bitPattern: u64(104)), r = Int64(bitPattern: u64(24))
            guard (1...maxDimension).contains(g), (0...g).contains(b), (0...g - b).contains(r), r != g else {
                throw MlorcError(.stateCorrupted, "state header's shard (rows [\(b), \(b) + \(r)) of \(g)) is inconsistent")
            }
            (globalRows, rowBegin) = (Int(g), Int(b))
        }
        guard let rule = RuleKind(rawValue: Int32(bitPattern: u32(12))),
              let storage = Storage(rawValue: u32(16)) else {
            throw MlorcError(.stateCorrupted, "state header names an unknown rule or storage")
        }
        let rows = Int64(bitPattern: u64(24)), cols = Int64(bitPattern: u64(32)), rank = Int64(bitPattern: u64(40))
        // A shard may hold no rows; the rank is bounded by the whole matrix.
        let shapeRows = globalRows != 0 ? Int64(globalRows) : rows
        guard ((globalRows != 0 ? 0 : 1)...maxDimension).contains(rows), (1...maxDimension).contains(cols),
              shapeRows * cols <= Int64.max / 16,
              storage == .dense ? rank == 0 : (1...min(shapeRows, cols)).contains(rank),
              rule.entry.groupState ? (1...UInt64(DAdaptation.maxStride)).contains(u64(80)) : u64(80) == 0 else {
            throw MlorcError(.stateCorrupted, "state header has inconsistent shape or rank")
        }
        // The parameter's dtype, with the master flag only for a half-precision
        // parameter of a rule that takes one, bf16 moments only for a rule that keeps them.
        let dtype = u32(20), param = Int32(dtype & 0xFF), master = dtype & Header.masterFlag != 0
        let bf16Moments = dtype & Header.bf16MomentsFlag != 0
        guard dtype & ~(0xFF | Header.masterFlag | Header.bf16MomentsFlag) == 0,
              [F32.dtype, BF16.dtype, F16.dtype].contains(param),
              param == F32.dtype || rule.entry.halfPrecision, !master || param != F32.dtype,
              !bf16Moments || rule.entry.bf16State else {
            throw MlorcError(.stateCorrupted, "state header names an unknown dtype \(dtype)")
        }
        // 2^53 steps cannot be reached: a larger counter was not written by a step.
        guard u64(48) < stepLimit else {
            throw MlorcError(.stateCorrupted, "state step counter \(u64(48)) is implausible")
        }
        let header = Header(rule: rule, storage: storage, dtype: u32(20), rows: Int(rows), cols: Int(cols),
                            rank: Int(rank), step: u64(48), tensorID: u64(56), payloadChecksum: u64(72),
                            statsStride: Int(u64(80)), globalRows: globalRows, rowBegin: rowBegin)
        guard let payload = payloadBytes(rule: rule, storage: storage, rows: Int(rows), cols: Int(cols), rank: Int(rank),
                                         master: header.masterWeights, bf16Moments: header.bf16Moments,
                                         statsStride: header.statsStride, rowBegin: header.rowBegin,
                                         globalRows: header.globalRows),
              UInt64(payload) == u64(64) else {
            throw MlorcError(.stateCorrupted, "state header payload size is inconsistent with its shape")
        }
        return header
    }

    /// Refuses low-rank payloads that no step can have written, even with a
    /// valid checksum: factors that are not finite, orthonormal factors with
    /// entries beyond 1, negative or absurd singular values. Such input would
    /// otherwise reach LAPACK (which can fail or never return on it) after the
    /// weights were written.
    static func checkFactors(_ h: Header, _ payload: UnsafePointer<Float>) throws(MlorcError) {
        let entry = h.rule.entry
        if entry.lowRankRankFactor * h.rank > min(h.shapeRows, h.cols) {
            throw MlorcError(.stateCorrupted, "\(entry.name) state rank \(h.rank) exceeds min(rows, cols) / \(entry.lowRankRankFactor) (not written by this library)")
        }
        try entry.checkLowRankPayload(h, payload)
    }

    /// Bound of the entries of orthonormal factors, with room for rounding.
    static let orthonormalBound: Float = 1.001

    /// The MLorc factors of every moment: singular values in [0, 1e30],
    /// orthonormal factors within ±orthonormalBound.
    static func checkMomentFactors(_ h: Header, _ payload: UnsafePointer<Float>) throws(MlorcError) {
        if h.bf16Moments { return try checkBF16MomentFactors(h, UnsafeRawPointer(payload)) }
        for k in 0..<h.momentCount {
            let f = Factors(h, payload: UnsafeMutablePointer(mutating: payload), moment: k)
            var singularOK = true
            for a in 0..<h.rank where !(f.s[a] >= 0 && f.s[a] <= 1e30) { singularOK = false }  // NaN fails too
            guard singularOK, allWithin(f.u, count: h.rows * h.rank, bound: orthonormalBound),
                  allWithin(f.vt, count: h.rank * h.cols, bound: orthonormalBound) else {
                throw MlorcError(.stateCorrupted, "state factors of moment \(k) are out of range (not written by a step)")
            }
        }
    }
}

extension StateFormat {
    /// checkMomentFactors for bf16 factors (the same elements at 2 bytes each).
    static func checkBF16MomentFactors(_ h: Header, _ payload: UnsafeRawPointer) throws(MlorcError) {
        let p = payload.assumingMemoryBound(to: UInt16.self), u = h.rows * h.rank
        @inline(__always) func value(_ e: Int) -> Float { Float(bitPattern: UInt32(p[e]) << 16) }
        for k in 0..<h.momentCount {
            let base = k * h.floatsPerMoment
            var ok = true
            for a in 0..<h.rank where !(value(base + u + a) >= 0 && value(base + u + a) <= 1e30) { ok = false }
            for e in 0..<u where !(abs(value(base + e)) <= orthonormalBound) { ok = false }
            for e in 0..<(h.rank * h.cols) where !(abs(value(base + u + h.rank + e)) <= orthonormalBound) { ok = false }
            guard ok else {
                throw MlorcError(.stateCorrupted, "state factors of moment \(k) are out of range (not written by a step)")
            }
        }
    }
}

/// Why a state carries a version this library does not read. A newer writer
/// that still seals its header as version 1 does leaves a matching checksum;
/// a damaged version field does not. Only a hint: a later layout may seal
/// its header differently.
func versionCause(_ version: UInt32, current: UInt32, sealed: Bool) -> String {
    if version < current { return "no libmlorc writes it: the header is corrupted" }
    return sealed ? "it was written by a newer libmlorc"
                  : "it was written by a newer libmlorc, or the header is corrupted (its checksum does not match either)"
}

/// A fast 64-bit checksum (four multiply-rotate lanes over 8-byte words,
/// byte tail, avalanche). Detects corruption; not cryptographic.
enum Checksum {
    static func of(_ p: UnsafeRawPointer, count: Int) -> UInt64 {
        let prime1: UInt64 = 0x9E37_79B1_85EB_CA87, prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
        var lanes = SIMD4<UInt64>(0x6A09_E667_F3BC_C908, 0xBB67_AE85_84CA_A73B,
                                  0x3C6E_F372_FE94_F82B, 0xA54F_F53A_5F1D_36F1)
        var i = 0
        while i + 32 <= count {
            let w = p.loadUnaligned(fromByteOffset: i, as: SIMD4<UInt64>.self)
            lanes = lanes &+ w &* prime2
            lanes = (lanes &<< 31) | (lanes &>> 33)
            lanes = lanes &* prime1
            i += 32
        }
        var h = UInt64(count) &* prime1
        for lane in 0..<4 { h = (h ^ lanes[lane]) &* prime2; h = (h << 27) | (h >> 37) }
        while i < count {
            h = (h ^ UInt64(p.load(fromByteOffset: i, as: UInt8.self))) &* prime1
            i += 1
        }
        h ^= h >> 33; h = h &* prime2; h ^= h >> 29; h = h &* prime1; h ^= h >> 32
        return h
    }
}

/// A validated state header as the C API reports it (mlorc_state_inspect).
package struct StateDescription {
    package let layoutVersion: UInt32, rule: Int32, storage: Int32, dtype: Int32
    package let rows: Int64, cols: Int64, rank: Int64
    package let step: UInt64, tensorID: UInt64, stateBytes: UInt64

    package init(_ state: UnsafeRawPointer, bytes: Int) throws(MlorcError) {
        let h = try StateFormat.read(state, bytes: bytes)
        layoutVersion = StateFormat.layoutVersion
        rule = h.rule.rawValue
        storage = Int32(h.storage.rawValue)
        dtype = Int32(bitPattern: h.dtype)
        rows = Int64(h.rows); cols = Int64(h.cols); rank = Int64(h.rank)
        step = h.step; tensorID = h.tensorID; stateBytes = UInt64(h.totalBytes)
    }
}
