/// Everything rule-specific that the handle, the state format and the driver
/// need, declared once per rule (RuleRegistry): defaults, keys and their
/// bounds, the moment slots and the shape of the state, whether the rule
/// steps with a group state, and how a batch is stepped. Nothing outside a
/// rule's own files and its entry tests which rule it runs.
struct RuleEntry {
    let kind: RuleKind
    /// The rule's name in messages.
    let name: String
    /// Values that differ from Hyperparameters' common defaults.
    let defaults: KeyValuePairs<ParamKey, Double>
    /// The keys that apply to the rule, with their inclusive bounds.
    let keys: [ParamKey: ClosedRange<Double>]
    /// Moments kept per tensor (dense: rows·cols floats each; low-rank: the
    /// factors U, s, Vt, rank·(rows + cols + 1) floats each).
    let momentSlots: Int
    /// Whether the step size is estimated over the batch (D-adaptation): the
    /// rule steps with a group state and keeps sampled statistics per tensor.
    let groupState: Bool
    /// Whether bf16/f16 parameters are stepped (MLORC_PARAM_MASTER_WEIGHTS and
    /// MLORC_PARAM_STOCHASTIC_ROUNDING then apply).
    var halfPrecision = false
    /// Whether the sharded step takes bf16/f16 parameters (with master
    /// weights and stochastic rounding as mlorc_step does).
    var shardedHalfPrecision = false
    /// Whether the moments (dense) and MLorc factors may be stored bf16
    /// (MLORC_PARAM_STATE_DTYPE; the key group RuleRegistry.stateDtype).
    var bf16State = false
    /// Low-rank storage needs rankFactor·rank <= min(rows, cols).
    var lowRankRankFactor = 1
    /// Floats the payload holds after the moments (statistics), for a
    /// tensor of rows x cols that is rows rowBegin ..< rowBegin + rows of a
    /// shapeRows x cols matrix (0 and rows but for a row shard).
    var extraFloats: (_ rows: Int, _ cols: Int, _ statsStride: Int, _ rowBegin: Int, _ shapeRows: Int) -> Int = {
        _, _, _, _, _ in 0
    }
    /// How the statistics after the moments split into rows (StateSplit):
    /// their parts in payload order, for the state's header; nil: a state
    /// with statistics cannot be cut into rows.
    var statisticsRows: ((StateFormat.Header) -> [StatisticsPart])?
    /// The statistics after the moments (`extraFloats` of them) of a dense
    /// state, for the same elements seen as another shape
    /// (mlorc_state_reshape); nil from it, or no function: they cannot follow.
    var reshapeStatistics: ((_ statistics: [Float], _ from: (rows: Int, cols: Int), _ to: (rows: Int, cols: Int)) -> [Float]?)?
    /// Floats of a low-rank payload's moments when they are not MLorc factors
    /// (nil on overflow).
    var lowRankMomentFloats: ((_ rows: Int, _ cols: Int, _ rank: Int) -> Int?)?
    /// Checks a checksummed low-rank payload that no step can have written.
    var checkLowRankPayload: (StateFormat.Header, UnsafePointer<Float>) throws(MlorcError) -> Void = { h, p throws(MlorcError) in
        try StateFormat.checkMomentFactors(h, p)
    }
    /// Steps a validated batch (the rule's plan run by the batch driver).
    let step: (_ optimizer: Optimizer, _ tensors: [Optimizer.Prepared], _ lr: Double,
               _ group: GroupBinding?) throws(MlorcError) -> Void
    /// Steps a batch of row shards (mlorc_step_sharded); nil: the rule has no
    /// sharded step and refuses one.
    var shardedStep: ((_ optimizer: Optimizer, _ batch: ShardedBatch, _ lr: Double) throws(MlorcError) -> Void)?
    var sharded: Bool { shardedStep != nil }

    /// Floats of the payload of a rows x cols tensor, or nil if its bytes
    /// would not fit in memory's address space together with the header.
    func payloadFloats(storage: StateFormat.Storage, rows: Int, cols: Int, rank: Int, statsStride: Int,
                       rowBegin: Int = 0, shapeRows: Int? = nil) -> Int? {
        let moments: Int?
        if storage == .lowRank, let special = lowRankMomentFloats {
            moments = special(rows, cols, rank)
        } else {
            let (perMoment, o1) = storage == .dense ? rows.multipliedReportingOverflow(by: cols)
                                                    : rank.multipliedReportingOverflow(by: rows + cols + 1)
            let (all, o2) = perMoment.multipliedReportingOverflow(by: momentSlots)
            moments = o1 || o2 ? nil : all
        }
        guard let moments else { return nil }
        let (floats, o3) = moments.addingReportingOverflow(extraFloats(rows, cols, statsStride, rowBegin, shapeRows ?? rows))
        let (bytes, o4) = floats.multipliedReportingOverflow(by: 4)
        return o3 || o4 || bytes > Int.max - StateFormat.headerBytes ? nil : floats
    }

    /// The bounds of `key`, or nil when the key does not apply to the rule.
    func bounds(_ key: ParamKey) -> ClosedRange<Double>? { keys[key] }
}

/// A D-adaptation rule's group state, as read and validated for one step.
struct GroupBinding {
    let state: GroupState
    let pointer: UnsafeMutableRawPointer
}

/// A part of a state's statistics, as StateSplit cuts it.
enum StatisticsPart {
    /// `floats` per row of the tensor, row-major: sharded with the rows.
    case perRow(floats: Int)
    /// `floats` the same on every shard of the matrix (column statistics).
    case shared(floats: Int)
    /// The samples of every `stride`-th element of the matrix (flat index),
    /// as many as fall in the state's rows (DAdaptation): a row's record
    /// holds its samples, ⌈cols / stride⌉ floats at most, zero-padded.
    case sampled(stride: Int)
}
