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
            // MoFaSGD's update spans [U | GV]: 2r columns.
            guard rule != .mofasgd || 2 * r <= min(rows, cols) else {
                throw MlorcError(.invalidRank, "MoFaSGD needs 2 x rank <= min(rows, cols); rank \(r) is too large for a \(rows)x\(cols) tensor")
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
        let weights: UnsafeMutablePointer<Float>
        let grad: UnsafePointer<Float>
        let state: UnsafeMutableRawPointer
        var header: StateFormat.Header
        var sketchOffset = 0  // into the .sketches slot, for low-rank tensors

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
        return Prepared(weights: param.assumingMemoryBound(to: Float.self),
                        grad: grad.assumingMemoryBound(to: Float.self), state: state, header: header)
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

    /// Σg², Σw·g, Σw² of a tensor (rows summed in order: thread-count independent).
    private func gradientTotals(_ t: Prepared) -> SIMD3<Double> {
        let rows = t.header.rows, cols = t.header.cols, p = min(parts(for: rows * cols), rows)
        var perRow = [SIMD4<Double>](repeating: .zero, count: rows)
        perRow.withUnsafeMutableBufferPointer { sums in
            pool.run(parts: p) { part in
                gradientSums(weights: t.weights, grad: t.grad, cols: cols,
                             rows: partition(rows, parts: p, part: part), into: sums.baseAddress!)
            }
        }
        let total = perRow.reduce(SIMD4<Double>.zero, +)
        return SIMD3(total.x, total.y, total.z)
    }

    /// Parts worth splitting `elements` of streaming work into.
    func parts(for elements: Int) -> Int {
        max(1, min(hyper.threads, elements / 32768))
    }

    /// One step of every tensor of `args`. `group` is the group state of the
    /// D-adaptation rules (required by them, refused by the others).
    package func step(_ args: [TensorArgs], lr: Double, group: UnsafeMutableRawPointer? = nil,
                      groupBytes: Int = 0) throws(MlorcError) {
        guard lr.isFinite, lr >= 0 else {
            throw MlorcError(.invalidArgument, "lr = \(lr) must be finite and >= 0")
        }
        var groupState: GroupState?
        if rule.adaptsStepSize {
            guard let group else {
                throw MlorcError(.nullPointer, "rule \(rule) estimates its step size over a group of tensors: step it with a group state (mlorc_step_group)")
            }
            let g = try GroupState.read(group, bytes: groupBytes)
            guard g.rule == rule else {
                throw MlorcError(.stateMismatch, "group state belongs to rule \(g.rule) but this optimizer is \(rule)")
            }
            guard g.step + 1 < StateFormat.stepLimit else {
                throw MlorcError(.stateCorrupted, "group state step counter \(g.step) is at its limit (2^53 - 1)")
            }
            groupState = g
        } else if group != nil {
            throw MlorcError(.invalidArgument, "rule \(rule) keeps no group state: pass NULL")
        }
        // No tensors: the checks above are the whole call (the group state is not advanced).
        if args.isEmpty { return }
        var tensors: [Prepared] = []
        tensors.reserveCapacity(args.count)
        for (i, a) in args.enumerated() {
            do { tensors.append(try validate(a)) } catch { throw error.inTensor(i) }
        }
        try Self.checkNoOverlap(tensors, group: group)
        if let g = groupState, let group {
            let dlr = DAdaptation.stepSize(g, hyper: hyper, lr: lr)
            if rule == .prodigy {
                let adaptation = Adaptation<ProdigyRule>(group: g, pointer: group, lr: lr) { h, t, rule, write in
                    DAdaptation.prodigy(t, hyper: h, group: g, dlr: dlr, write: write)
                } refresh: { h, rule, next in
                    var fresh = ProdigyRule(h, d: g.d, dNext: next.d, dlr: dlr)
                    fresh.modifiers = rule.modifiers
                    return fresh
                }
                try run(tensors, lr: lr, adaptation: adaptation) { h, _ in ProdigyRule(h, d: g.d, dNext: g.d, dlr: dlr) }
            } else {
                let adaptation = Adaptation<DAdaptLionRule>(group: g, pointer: group, lr: lr) { h, t, rule, write in
                    DAdaptation.dadaptLion(t, rule: rule, hyper: h, dlr: dlr, write: write)
                } refresh: { _, rule, _ in rule }
                try run(tensors, lr: lr, adaptation: adaptation) { h, _ in DAdaptLionRule(h, dlr: dlr) }
            }
            return
        }
        switch rule {
        case .adamW:
            try run(tensors, lr: lr) { h, t in AdamWRule(h, lr: lr, step: t) }
        case .lion:
            try run(tensors, lr: lr) { h, _ in LionRule(h, lr: lr) }
        case .adopt:
            try run(tensors, lr: lr) { h, t in AdoptRule(h, lr: lr, step: t) }
        case .galoreAdamW:
            try run(tensors, lr: lr) { h, t in AdamWRule(h, lr: lr, step: t) }
        case .mofasgd:
            try runMoFaSGD(tensors, lr: lr)
        case .prodigy, .dadaptLion:
            preconditionFailure("stepped with their group state above")
        case .came:
            try runCAME(tensors, lr: lr)
        }
    }

    /// CAME: every tensor's read-only phase first, then, if all are finite,
    /// every tensor's writes (CAMEStep).
    private func runCAME(_ input: [Prepared], lr: Double) throws(MlorcError) {
        var tensors = input
        let regions = try CAMEStep.reserve(&tensors, hyper: hyper, workspace: &workspace)
        for (i, t) in tensors.enumerated() {
            guard try CAMEStep(hyper: hyper, tensor: t, regions: regions).prepare(workspace: &workspace, pool: pool) else {
                throw MlorcError(.nonFinite, "tensor \(i): gradient contains NaN or infinity, or CAME's statistics or new moment overflow float (or are zero with eps = 0); step refused, nothing was changed")
            }
        }
        for (i, t) in tensors.enumerated() {
            var header = t.header
            do {
                try CAMEStep(hyper: hyper, tensor: t, regions: regions).commit(lr: lr, workspace: &workspace, pool: pool)
            } catch { throw error.inTensor(i) }
            if header.storage == .lowRank {
                header.payloadChecksum = Checksum.of(UnsafeRawPointer(t.payload), count: header.payloadBytes)
            }
            header.step += 1
            StateFormat.write(header, to: t.state)
        }
    }

    /// The group side of a D-adaptation step: per-tensor sums, and the rule
    /// rebuilt once the new estimate is known.
    struct Adaptation<Rule: MomentRule> {
        let group: GroupState
        let pointer: UnsafeMutableRawPointer
        let lr: Double
        let contribution: (Hyperparameters, DAdaptation.Tensor, Rule, Bool) -> DAdaptation.Contribution
        let refresh: (Hyperparameters, Rule, GroupState) -> Rule
    }

    /// Pass 1 over every tensor (read-only: sketches and finiteness), then, if
    /// every gradient is finite, pass 2 over every tensor (writes).
    private func run<Rule: MomentRule>(_ input: [Prepared], lr: Double, adaptation: Adaptation<Rule>? = nil,
                                       makeRule: (Hyperparameters, UInt64) -> Rule) throws(MlorcError) {
        var tensors = input
        let plan = try LowRankStep<Rule>.reserveSketches(&tensors, hyper: hyper, workspace: &workspace)
        var rules: [Rule] = []
        rules.reserveCapacity(tensors.count)
        for (i, t) in tensors.enumerated() {
            var rule = makeRule(hyper, t.header.step + 1)
            rule.modifiers.grams = hyper.grams
            var finite = true
            if hyper.orthograd || hyper.clipNorm > 0 {
                let sums = gradientTotals(t)
                finite = sums.x.isFinite && sums.y.isFinite && sums.z.isFinite
                rule.modifiers.setGradientTransform(gg: sums.x, wg: sums.y, ww: sums.z,
                                                    orthograd: hyper.orthograd, clipNorm: hyper.clipNorm)
            }
            rules.append(rule)
            if !finite {
                // Reported below like any non-finite gradient.
            } else if t.header.storage == .lowRank && self.rule != .galoreAdamW {
                finite = try LowRankStep(rule: rule, tensor: t, hyper: hyper, sketches: plan)
                    .sketch(workspace: &workspace, pool: pool, parts: parts(for: t.header.rows * t.header.cols))
            } else {
                let n = t.header.rows * t.header.cols, p = parts(for: n)
                // GaLore's projected moments square sums of up to 2^31 gradient
                // entries: entries above 1e14 could overflow them, so they are
                // refused like non-finite ones (the state stays valid).
                let bound: Float = t.header.storage == .lowRank ? 1e14 : .greatestFiniteMagnitude
                var ok = [Bool](repeating: true, count: p)
                ok.withUnsafeMutableBufferPointer { okp in
                    pool.run(parts: p) { part in
                        let range = partition(n, parts: p, part: part, align: 8)
                        okp[part] = allWithin(t.grad + range.lowerBound, count: range.count, bound: bound)
                    }
                }
                finite = !ok.contains(false)
            }
            guard finite else {
                throw MlorcError(.nonFinite, "tensor \(i): gradient contains NaN or infinity (or the new moments overflow float); step refused, nothing was changed")
            }
        }
        var nextGroup: GroupState?
        if let a = adaptation {
            var total = DAdaptation.Contribution()
            for (i, t) in tensors.enumerated() {
                let c = a.contribution(hyper, statistics(t, rules[i]), rules[i], false)
                total.numerator += c.numerator
                total.denominator += c.denominator
            }
            let next = DAdaptation.update(a.group, total: total, hyper: hyper, lr: lr)
            guard total.numerator.isFinite, total.denominator.isFinite, next.d.isFinite, next.numerator.isFinite else {
                throw MlorcError(.nonFinite, "the step-size estimate overflows (numerator \(total.numerator), denominator \(total.denominator)); step refused, nothing was changed")
            }
            for i in rules.indices { rules[i] = a.refresh(hyper, rules[i], next) }
            nextGroup = next
        }
        for (i, t) in tensors.enumerated() {
            var rule = rules[i]
            var header = t.header
            if let a = adaptation { _ = a.contribution(hyper, statistics(t, rule), rule, true) }
            if header.storage == .lowRank {
                do {
                    if let adamW = rule as? AdamWRule, self.rule == .galoreAdamW {
                        try GaLoreStep(rule: adamW, hyper: hyper, header: header, weights: t.weights, grad: t.grad,
                                       payload: t.payload)
                            .update(workspace: &workspace, pool: pool, parts: parts(for: header.rows * header.cols))
                    } else {
                        try LowRankStep(rule: rule, tensor: t, hyper: hyper, sketches: plan)
                            .update(workspace: &workspace, pool: pool, parts: parts(for: header.rows * header.cols))
                    }
                } catch { throw error.inTensor(i) }
                header.payloadChecksum = Checksum.of(UnsafeRawPointer(t.payload), count: header.payloadBytes)
            } else {
                let n = header.rows * header.cols, p = parts(for: n)
                let m = t.moment(0), v = Rule.momentCount > 1 ? t.moment(1) : nil
                if hyper.cautious {
                    // Cautious masking scales by elements / (kept + 1): count first.
                    var kept = [Int](repeating: 0, count: p)
                    let counting = rule
                    kept.withUnsafeMutableBufferPointer { keptp in
                        pool.run(parts: p) { part in
                            keptp[part] = denseCautiousKept(counting, weights: t.weights, grad: t.grad, m: m, v: v,
                                                            range: partition(n, parts: p, part: part, align: 8))
                        }
                    }
                    rule.modifiers.cautiousScale = Float(Double(n) / Double(kept.reduce(0, +) + 1))
                }
                let updating = rule
                pool.run(parts: p) { part in
                    denseUpdate(updating, weights: t.weights, grad: t.grad, m: m, v: v,
                                range: partition(n, parts: p, part: part, align: 8))
                }
            }
            header.step += 1
            StateFormat.write(header, to: t.state)
        }
        if let a = adaptation, let nextGroup { nextGroup.write(to: a.pointer) }
    }

    private func statistics<Rule: MomentRule>(_ t: Prepared, _ rule: Rule) -> DAdaptation.Tensor {
        DAdaptation.Tensor(header: t.header, weights: t.weights, grad: t.grad, payload: t.payload, modifiers: rule.modifiers)
    }
}
