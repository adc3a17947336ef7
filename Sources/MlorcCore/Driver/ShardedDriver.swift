/// mlorc_step_sharded: every rank steps its rows of the same matrices, and
/// the products that span all rows go through the caller's reducer, one
/// call per phase for the whole batch. Phases (docs/architecture.md,
/// "Sharded steps"), each ending in one reduction:
///   1 agreement: each rank's validation verdict, the row partition, the
///     states', settings' and group state's signature, OrthoGrad/clipping
///     sums, and for rules whose first moment is not linear the fix statistics;
///   2 sketch: non-finite verdict, the fix statistics (linear rules), the
///     D-adaptation sums (the step-size estimate, alike on every rank);
///   3 cautious masking's kept count (only with the option);
///   4 verify verdict, with the first Gram matrices YᵀY;
///   QR: the second Gram matrices (CholeskyQR2), a gathered Y where the
///     Cholesky factorisation cannot be trusted; power iterations add AᵀQ
///     and another QR each;
///   B: QᵀA, whose small SVDs every rank computes alike.
/// Nothing is written before the last reduction and the SVDs: a refusal
/// anywhere, on any rank, changes nothing on every rank.
extension Optimizer {
    package func stepSharded(_ args: [TensorArgs], shards: [ShardArgs], lr: Double,
                             group: UnsafeMutableRawPointer?, groupBytes: Int) throws(MlorcError) {
        try checkShardable()
        guard rule.entry.groupState || group == nil else {
            throw MlorcError(.invalidArgument, "rule \(rule.entry.name) keeps no group state: pass NULL")
        }
        guard lr.isFinite, lr >= 0 else {
            throw MlorcError(.invalidArgument, "lr = \(lr) must be finite and >= 0")
        }
        guard reducer != nil else {
            // No reducer: only whole matrices, stepped exactly as mlorc_step does.
            for i in args.indices {
                do throws(MlorcError) {
                    if try Self.checkShard(rows: args[i].rows, cols: args[i].cols, shards[i]) != nil {
                        throw MlorcError(.invalidArgument, "the shard (rows [\(shards[i].rowBegin), \(shards[i].rowBegin + args[i].rows)) of \(shards[i].globalRows)) is not the whole matrix, and no reducer is set (mlorc_set_reducer)")
                    }
                } catch { throw error.inTensor(i) }
            }
            return try step(args, lr: lr, group: group, groupBytes: groupBytes)
        }
        if args.isEmpty { return }
        try rule.entry.shardedStep!(self, ShardedBatch(args: args, shards: shards, group: group, groupBytes: groupBytes), lr)
    }
}

/// The arguments of one mlorc_step_sharded call (validated by the driver,
/// which must still take part in every reduction when they are not valid here).
struct ShardedBatch {
    let args: [TensorArgs]
    let shards: [ShardArgs]
    /// The D-adaptation rules' group state (bound by the driver: a bad one
    /// is a refusal voted like any other).
    var group: UnsafeMutableRawPointer? = nil
    var groupBytes = 0
}

/// One tensor of a sharded step on this rank, through the element access A
/// (low-rank) and D (dense): fp32, or the rule's path for every other type.
struct ShardUnit<Rule: MomentRule, A: WeightAccess, D: DenseAccess> {
    var rule: Rule
    let tensor: Optimizer.Prepared
    let globalRows: Int, rowBegin: Int
    var region: UnsafeMutablePointer<Float>
    var fix = PerMoment<Float>(repeating: 0)

    var lowRank: Bool { tensor.header.storage == .lowRank }
    var elements: Int { tensor.header.rows * tensor.header.cols }
    func step(_ hyper: Hyperparameters) -> LowRankStep<Rule, A> {
        var s = LowRankStep<Rule, A>(rule: rule, tensor: tensor, hyper: hyper, region: region,
                                     rounding: tensor.weightRounding(hyper))
        s.fixOverride = fix
        return s
    }
    func dense(_ hyper: Hyperparameters) -> DenseStep<Rule, D> { DenseStep(rule: rule, tensor: tensor, hyper: hyper) }
}

extension Optimizer {
    /// The sharded step of a MomentPlan rule (`makeRule` as MomentPlan's).
    func driveSharded<Rule: MomentRule>(_ batch: ShardedBatch, _ makeRule: (UInt64) -> Rule) throws(MlorcError) {
        try driveSharded(batch, makeRule, adaptation: nil, groupError: nil)
    }

    /// The sharded step of a D-adaptation rule: `plan` gives the rules and
    /// the estimate's adaptation from the group state. Every rank holds the
    /// same group state (checked in the agreement) and advances it alike.
    func driveSharded<Rule: MomentRule>(_ batch: ShardedBatch,
                                        adapting plan: (GroupBinding) -> ((UInt64) -> Rule, MomentAdaptation<Rule>))
        throws(MlorcError) {
        var binding: GroupBinding, groupError: MlorcError?
        // A group state refused here is voted in the agreement, never thrown
        // before it; the rules meanwhile see a fresh stand-in, never written.
        let standIn = UnsafeMutableRawPointer.allocate(byteCount: GroupState.bytes, alignment: 16)
        defer { standIn.deallocate() }
        do throws(MlorcError) {
            binding = try bindGroup(batch.group, bytes: batch.groupBytes)!
        } catch {
            groupError = error
            binding = GroupBinding(state: GroupState(rule: rule, d0: hyper.d0), pointer: standIn)
        }
        let (makeRule, adaptation) = plan(binding)
        try driveSharded(batch, makeRule, adaptation: adaptation, groupError: groupError)
    }

    /// The fp32 path when every tensor is fp32, else the rule's path for
    /// every element type (as MomentTensorStep chooses, per batch here).
    private func driveSharded<Rule: MomentRule>(_ batch: ShardedBatch, _ makeRule: (UInt64) -> Rule,
                                                adaptation: MomentAdaptation<Rule>?,
                                                groupError: MlorcError?) throws(MlorcError) {
        if batch.args.allSatisfy({ $0.dtype == F32.dtype }) {
            try driveSharded(batch, makeRule, FP32Access.self, FP32Dense.self, adaptation: adaptation, groupError: groupError)
        } else {
            try driveSharded(batch, makeRule, Rule.OtherWeights.self, Rule.OtherDense.self, adaptation: adaptation,
                             groupError: groupError)
        }
    }

    private func driveSharded<Rule: MomentRule, A: WeightAccess, D: DenseAccess>(
        _ batch: ShardedBatch, _ makeRule: (UInt64) -> Rule, _: A.Type, _: D.Type,
        adaptation: MomentAdaptation<Rule>?, groupError: MlorcError?) throws(MlorcError) {
        var adaptation = adaptation
        var context = StepContext(workspace: workspace, pool: pool, threads: hyper.threads)
        defer { workspace = context.workspace }
        var exchange = ShardExchange(reduce: reducer!)
        let count = batch.args.count, hyper = hyper, mc = Rule.momentCount

        // This rank's validation; a refusal here is voted in phase 1, never thrown
        // before it (the other ranks would wait in their reductions).
        var units = [ShardUnit<Rule, A, D>?](repeating: nil, count: count)
        var errors = [MlorcError?](repeating: nil, count: count)
        for i in 0..<count {
            let a = batch.args[i]
            do throws(MlorcError) {
                let place = try Self.checkShard(rows: a.rows, cols: a.cols, batch.shards[i])
                let p = try validate(a, place: place)
                guard p.elements == .f32 || rule.entry.shardedHalfPrecision else {
                    throw MlorcError(.unsupportedDtype, "the sharded step of \(rule.entry.name) takes f32 tensors only in this version")
                }
                // Only the fp32 path when every tensor is fp32 (a half parameter's
                // dtype is never F32.dtype, so it never reaches it).
                precondition(p.elements == .f32 || ObjectIdentifier(A.self) != ObjectIdentifier(FP32Access.self))
                guard !p.header.bf16Moments else {
                    throw MlorcError(.unsupportedDtype, "the sharded step takes fp32 states only in this version, not a bf16 state (MLORC_PARAM_STATE_DTYPE)")
                }
                var rule = makeRule(p.header.step + 1)
                rule.modifiers.grams = hyper.grams
                units[i] = ShardUnit(rule: rule, tensor: p, globalRows: place?.globalRows ?? p.header.rows,
                                     rowBegin: place?.rowBegin ?? 0, region: UnsafeMutablePointer(bitPattern: 64)!)
            } catch { errors[i] = error.inTensor(i) }
        }
        var batchError = groupError
        if batchError == nil && !errors.contains(where: { $0 != nil }) {
            do throws(MlorcError) {
                try Self.checkNoOverlap(units.map { $0!.tensor }, group: adaptation?.binding.pointer)
            } catch { batchError = error }
        }
        var total = 0
        for i in 0..<count where units[i]?.lowRank == true {
            total += LowRankStep<Rule, A>.regionFloats(units[i]!.tensor.header, hyper)
        }
        let regions = try context.workspace.floats(.sketches, max(total, 16))
        total = 0
        for i in 0..<count where units[i]?.lowRank == true {
            units[i]!.region = regions + total
            total += LowRankStep<Rule, A>.regionFloats(units[i]!.tensor.header, hyper)
        }
        func parts(_ u: ShardUnit<Rule, A, D>) -> Int { context.parts(for: u.elements) }

        // Phase 1: agreement.
        let f1 = 14
        let signature = ShardExchange.settingsSignature(hyper, rule: rule,
                                                        extra: adaptation.map { ShardExchange.groupSignature($0.binding.state) } ?? [])
        var b = try exchange.begin(2 + f1 * count, &context.workspace)
        b[0] = 1
        b[1] = batchError.map { Double($0.code.rawValue) } ?? 0  // the status of a refusal of the whole batch
        for i in 0..<count {
            let s = b + 2 + f1 * i
            guard let u = units[i] else {
                ShardExchange.writeRefusal(s, errors[i]!)
                continue
            }
            let h = u.tensor.header
            ShardExchange.writeAgreement(s, h, rowBegin: u.rowBegin, globalRows: u.globalRows, settings: signature)
            if (hyper.orthograd || hyper.clipNorm > 0) && h.rows > 0 {
                let sums = gradientTotals(u.tensor.denseTensor(hyper), rows: h.rows, cols: h.cols, context)
                (s[9], s[10], s[11]) = (sums.x, sums.y, sums.z)
            }
            if u.lowRank && !Rule.isLinear(0) {
                (s[12], s[13]) = try u.step(hyper).localNegativeTotals(workspace: &context.workspace, pool: context.pool,
                                                                        parts: parts(u))
            }
        }
        b = try exchange.reduce("agreement")
        let ranks = try ShardExchange.checkRefusals(b, stride: f1, errors: errors, batchError: batchError)
        for i in 0..<count {
            let s = b + 2 + f1 * i, u = units[i]!
            try ShardExchange.checkAgreement(s, i, u.tensor.header, globalRows: u.globalRows, ranks: ranks, settings: signature)
            if hyper.orthograd || hyper.clipNorm > 0 {
                guard s[9].isFinite, s[10].isFinite, s[11].isFinite else {
                    throw MlorcError(.nonFinite, "tensor \(i): the gradient contains NaN or infinity (on this or another rank), or its norm overflows; step refused, nothing was changed")
                }
                units[i]!.rule.modifiers.setGradientTransform(gg: s[9], wg: s[10], ww: s[11], orthograd: hyper.orthograd,
                                                              clipNorm: hyper.clipNorm)
            }
            if !Rule.isLinear(0) { units[i]!.fix = Self.fixConstants(sum: s[12], count: s[13], Rule.self) }
        }
        var all = units.map { $0! }

        // Phase 2: the sketches (and the fix statistics of linear rules), the
        // D-adaptation sums after them (a non-finite gradient refused first).
        b = try exchange.begin(3 * count + (adaptation != nil ? 2 : 0), &context.workspace)
        var local = DAdaptation.Contribution()
        for i in 0..<count {
            let u = all[i], s = b + 3 * i
            if u.lowRank {
                let st = u.step(hyper)
                let finite = try st.sketch(workspace: &context.workspace, pool: context.pool, parts: parts(u))
                s[0] = finite ? 0 : 1
                if Rule.isLinear(0) {
                    (s[1], s[2]) = try st.localNegativeTotals(workspace: &context.workspace, pool: context.pool, parts: parts(u))
                }
            } else if adaptation != nil {
                s[0] = u.dense(hyper).gradientIsFinite(context) ? 0 : 1
            }
            if let adaptation { local = local + adaptation.localContribution(u.tensor, u.rule) }
        }
        if adaptation != nil { (b[3 * count], b[3 * count + 1]) = (local.numerator, local.denominator) }
        let localSketch = (0..<count).map { b[3 * $0] }
        b = try exchange.reduce("sketch")
        for i in 0..<count {
            guard b[3 * i] == 0 else {
                throw MlorcError(.nonFinite, localSketch[i] != 0
                    ? "tensor \(i): gradient contains NaN or infinity (or the new moments overflow float); step refused on every rank, nothing was changed"
                    : "tensor \(i): refused on another rank: its gradient shard contains NaN or infinity (or the new moments overflow float); nothing was changed")
            }
            if Rule.isLinear(0) && all[i].lowRank { all[i].fix = Self.fixConstants(sum: b[3 * i + 1], count: b[3 * i + 2], Rule.self) }
        }
        if adaptation != nil {
            let next = try adaptation!.advance(DAdaptation.Contribution(numerator: b[3 * count], denominator: b[3 * count + 1]),
                                               hyper: hyper)
            for i in 0..<count { all[i].rule = adaptation!.refresh(all[i].rule, next) }
        }
        for u in all where u.lowRank { u.step(hyper).applyFixToSketches() }

        // Phase 3: cautious masking's kept count over every rank.
        if hyper.cautious {
            b = try exchange.begin(count, &context.workspace)
            for i in 0..<count {
                let u = all[i]
                if u.lowRank {
                    b[i] = Double(try u.step(hyper).cautiousKept(workspace: &context.workspace, pool: context.pool, parts: parts(u)))
                } else if u.elements > 0 {
                    let t = u.tensor
                    b[i] = Double(denseCautiousKept(u.rule, D.self, t.denseTensor(hyper), range: 0..<u.elements))
                }
            }
            b = try exchange.reduce("cautious count")
            for i in 0..<count {
                guard b[i].isFinite, b[i] >= 0 else {
                    throw MlorcError(.reduction, "the reducer's sums are inconsistent (a kept count reads \(b[i])); step refused, nothing was changed")
                }
                all[i].rule.modifiers.cautiousScale = Float(Double(all[i].globalRows * all[i].tensor.header.cols) / (b[i] + 1))
            }
        }

        // Phase 4: the verify verdict, with the first QR's Gram matrices.
        let items = all.indices.filter { all[$0].lowRank }.flatMap { u in (0..<mc).map { ShardItem(unit: u, moment: $0) } }
        let sketches = items.map { it in all[it.unit].step(hyper).shardSketch(it.moment, rowBegin: all[it.unit].rowBegin,
                                                                              globalRows: all[it.unit].globalRows) }
        let gramSizes = sketches.map { CholeskyQR.packedCount($0.l) }
        b = try exchange.begin(count + gramSizes.reduce(0, +), &context.workspace)
        var localProblems = [String?](repeating: nil, count: count)
        for i in 0..<count {
            let u = all[i]
            if u.lowRank {
                guard u.rule.stepSize.isFinite, u.rule.decayRate.isFinite else {
                    localProblems[i] = "the step size \(u.rule.stepSize) or decay rate \(u.rule.decayRate) overflows float (lr too large)"
                    b[i] = 1
                    continue
                }
                let st = u.step(hyper), (w, g) = st.inputBounds(context)
                if !w.isFinite {
                    localProblems[i] = "the weights contain NaN or infinity"
                } else if try !st.outputsAreFinite(weightBound: w, gradBound: g, workspace: &context.workspace,
                                                              pool: context.pool, parts: parts(u)) {
                    localProblems[i] = "the new weights or moments would not be finite (check the state, the gradient's scale and lr)"
                }
            } else {
                localProblems[i] = u.dense(hyper).verify(context)
            }
            b[i] = localProblems[i] == nil ? 0 : 1
        }
        var offset = count
        for (j, sketch) in sketches.enumerated() {
            sketch.addGram(into: b + offset)
            offset += gramSizes[j]
        }
        b = try exchange.reduce("verify")
        for i in 0..<count where b[i] != 0 {
            throw MlorcError(.nonFinite, localProblems[i].map { "tensor \(i): \($0); step refused on every rank, nothing was changed" }
                             ?? "tensor \(i): refused on another rank: the new weights or moments of its shard would not be finite; nothing was changed")
        }
        try orthonormalize(sketches, grams: b + count, &exchange, &context)

        // Power iterations: Z = AᵀQ summed over the ranks, orthonormalised alike
        // on every rank, then Y = A·orth(Z) on each rank's rows and a new QR.
        let lowRank = all.indices.filter { all[$0].lowRank }
        for _ in 0..<hyper.powerIterations {
            let zSizes = lowRank.map { mc * all[$0].step(hyper).l * all[$0].tensor.header.cols }
            b = try exchange.begin(zSizes.reduce(0, +), &context.workspace)
            offset = 0
            for (j, i) in lowRank.enumerated() {
                let st = all[i].step(hyper), seg = st.l * st.n
                try st.addColumnProducts(into: PerMoment(b + offset, b + offset + (mc - 1) * seg), workspace: &context.workspace,
                                         pool: context.pool, parts: parts(all[i]))
                offset += zSizes[j]
            }
            b = try exchange.reduce("power iteration", finite: true)
            offset = 0
            for (j, i) in lowRank.enumerated() {
                let st = all[i].step(hyper), seg = st.l * st.n
                let z = try context.workspace.floats(.columnPartials, mc * seg)
                for e in 0..<(mc * seg) { z[e] = Float(b[offset + e]) }
                for k in 0..<mc { try LinearAlgebra.orthonormalize(z + k * seg, rows: st.n, cols: st.l, workspace: &context.workspace) }
                try st.resketch(PerMoment(UnsafePointer(z), UnsafePointer(z + (mc - 1) * seg)), workspace: &context.workspace,
                                pool: context.pool, parts: parts(all[i]))
                offset += zSizes[j]
            }
            b = try exchange.begin(gramSizes.reduce(0, +), &context.workspace)
            offset = 0
            for (j, sketch) in sketches.enumerated() {
                sketch.addGram(into: b + offset)
                offset += gramSizes[j]
            }
            b = try exchange.reduce("power iteration QR")
            try orthonormalize(sketches, grams: b, &exchange, &context)
        }

        // B = QᵀA over every rank, then every small SVD before anything is written.
        let bSizes = lowRank.map { i -> Int in let st = all[i].step(hyper); return mc * st.l * st.n }
        b = try exchange.begin(bSizes.reduce(0, +), &context.workspace)
        offset = 0
        for (j, i) in lowRank.enumerated() {
            let st = all[i].step(hyper), seg = st.l * st.n
            try st.addColumnProducts(into: PerMoment(b + offset, b + offset + (mc - 1) * seg), workspace: &context.workspace,
                                     pool: context.pool, parts: parts(all[i]))
            offset += bSizes[j]
        }
        b = try exchange.reduce("projection", finite: true)
        let resultSizes = lowRank.map { i -> Int in let st = all[i].step(hyper); return mc * (st.n * st.l + st.l + st.l * st.l) }
        let results = try context.workspace.floats(.factorResults, max(resultSizes.reduce(0, +), 16))
        var resultOffset = 0
        offset = 0
        for (j, i) in lowRank.enumerated() {
            let st = all[i].step(hyper), l = st.l, n = st.n
            for k in 0..<mc {
                let bt = try context.workspace.floats(.staging, l * n)
                for e in 0..<(l * n) { bt[e] = Float(b[offset + k * l * n + e]) }
                let svd = try RandomizedSVD.smallSVD(transposedB: bt, cols: n, width: l, workspace: &context.workspace)
                let out = results + resultOffset + k * (n * l + l + l * l)
                out.update(from: svd.v, count: n * l)
                (out + n * l).update(from: svd.sigma, count: l)
                (out + n * l + l).update(from: svd.ut, count: l * l)
            }
            offset += bSizes[j]
            resultOffset += resultSizes[j]
        }

        // Commit: the weights from the old factors, then the new factors and headers.
        resultOffset = 0
        var lowRankIndex = 0
        for i in 0..<count {
            let u = all[i]
            adaptation?.write(u.tensor, u.rule)  // the statistics, read before the update
            if u.lowRank {
                let st = u.step(hyper), l = st.l, n = st.n
                try st.updateWeights(workspace: &context.workspace, pool: context.pool, parts: parts(u))
                for k in 0..<mc {
                    let out = results + resultOffset + k * (n * l + l + l * l)
                    st.storeFactors(k, v: out, sigma: out + n * l, ut: out + n * l + l)
                }
                resultOffset += resultSizes[lowRankIndex]
                lowRankIndex += 1
            } else {
                u.dense(hyper).update(context)
            }
            if u.tensor.elements.hasMaster { writeBackMaster(u.tensor, rounding: u.tensor.weightRounding(hyper), context) }
            var header = u.tensor.header
            if header.storage == .lowRank {
                header.payloadChecksum = Checksum.of(UnsafeRawPointer(u.tensor.payload), count: header.payloadBytes)
            }
            header.step += 1
            StateFormat.write(header, to: u.tensor.state)
        }
        adaptation?.finish()
    }

    /// c = Σ|R| / count over the negative entries (0 if none), for the non-negative slot.
    static func fixConstants<Rule: MomentRule>(sum: Double, count: Double, _: Rule.Type) -> PerMoment<Float> {
        var c = PerMoment<Float>(repeating: 0)
        for k in 0..<Rule.momentCount where Rule.isNonNegative(k) { c[k] = count > 0 ? Float(sum / count) : 0 }
        return c
    }

    /// Q = orth(Y) for every sketch from its reduced Gram matrix (at `grams`,
    /// packed, sketch after sketch): CholeskyQR2 in fp64; where the first
    /// factorisation fails or its Q is far from orthonormal (‖QᵀQ − I‖ > 1/2),
    /// Householder QR of the whole Y gathered on every rank.
    func orthonormalize(_ sketches: [ShardSketch], grams: UnsafePointer<Double>, _ exchange: inout ShardExchange,
                        _ context: inout StepContext) throws(MlorcError) {
        var gather = [Bool](repeating: false, count: sketches.count)
        var offset = 0
        for (j, sketch) in sketches.enumerated() {
            // κ(Y)² up to 1e14 keeps the fp64 factorisation meaningful.
            if let r = CholeskyQR.factor(packed: grams + offset, width: sketch.l, relativePivot: 1e-14) {
                r.withUnsafeBufferPointer { sketch.solveRight(r: $0.baseAddress!) }
            } else {
                gather[j] = true
            }
            offset += CholeskyQR.packedCount(sketch.l)
        }
        let second = sketches.indices.filter { !gather[$0] }
        let sizes = second.map { CholeskyQR.packedCount(sketches[$0].l) }
        var b = try exchange.begin(sizes.reduce(0, +), &context.workspace)
        offset = 0
        for (j, index) in second.enumerated() {
            sketches[index].addGram(into: b + offset)
            offset += sizes[j]
        }
        b = try exchange.reduce("QR")
        var r2 = [[Double]?](repeating: nil, count: sketches.count)
        offset = 0
        for (j, index) in second.enumerated() {
            let l = sketches[index].l
            if CholeskyQR.distanceFromIdentity(packed: b + offset, width: l) <= 0.5,
               let r = CholeskyQR.factor(packed: b + offset, width: l, relativePivot: 0) {
                r2[index] = r
            } else {
                gather[index] = true
            }
            offset += sizes[j]
        }
        let gathered = sketches.indices.filter { gather[$0] }
        if !gathered.isEmpty {
            let sizes = gathered.map { sketches[$0].globalRows * sketches[$0].l }
            b = try exchange.begin(sizes.reduce(0, +), &context.workspace)
            offset = 0
            for (j, index) in gathered.enumerated() {
                sketches[index].addRows(into: b + offset)
                offset += sizes[j]
            }
            b = try exchange.reduce("gathered QR", finite: true)
            offset = 0
            for (j, index) in gathered.enumerated() {
                let sketch = sketches[index]
                let y = try context.workspace.floats(.columnPartials, sizes[j])
                for e in 0..<sizes[j] { y[e] = Float(b[offset + e]) }
                try LinearAlgebra.orthonormalize(y, rows: sketch.globalRows, cols: sketch.l, workspace: &context.workspace)
                sketch.takeRows(from: y)
                offset += sizes[j]
            }
        }
        for index in sketches.indices {
            if let r = r2[index], !gather[index] {
                r.withUnsafeBufferPointer { sketches[index].solveRight(r: $0.baseAddress!) }
            }
        }
    }
}

/// One moment of one low-rank tensor in a sharded step.
struct ShardItem {
    let unit: Int, moment: Int
}

/// The reducer calls of a sharded step: one buffer (a workspace slot) per phase.
struct ShardExchange {
    let reduce: Reducer
    private var buffer: UnsafeMutablePointer<Double>?
    private var count = 0

    init(reduce: @escaping Reducer) { self.reduce = reduce }

    /// A zeroed buffer of `count` doubles for the next reduction.
    mutating func begin(_ count: Int, _ workspace: inout Workspace) throws(MlorcError) -> UnsafeMutablePointer<Double> {
        let p = try workspace.raw(.reductions, 8 * max(count, 1)).assumingMemoryBound(to: Double.self)
        p.initialize(repeating: 0, count: max(count, 1))
        (buffer, self.count) = (p, count)
        return p
    }

    /// Sums the buffer across ranks (no call for an empty one: every rank
    /// knows it is empty). With `finite`, non-finite sums refuse the step.
    mutating func reduce(_ phase: String, finite: Bool = false) throws(MlorcError) -> UnsafeMutablePointer<Double> {
        let p = buffer!
        if count > 0 {
            let status = reduce(p, count)
            guard status == 0 else {
                throw MlorcError(.reduction, "the reducer returned \(status) in the \(phase) reduction (\(count) values); step refused, nothing was changed")
            }
            if finite, let bad = (0..<count).first(where: { !p[$0].isFinite }) {
                throw MlorcError(.reduction, "the \(phase) reduction returned a non-finite value at \(bad); step refused, nothing was changed")
            }
        }
        return p
    }

    /// Values 0 ..< agreementSlots of a tensor's segment in the agreement
    /// reduction: this rank's refusal (flag, status), its rows, their hashes,
    /// and the state's and settings' signature (and its square).
    static let agreementSlots = 9

    static func writeRefusal(_ s: UnsafeMutablePointer<Double>, _ error: MlorcError) {
        s[0] = 1
        s[1] = Double(error.code.rawValue)
    }

    static func writeAgreement(_ s: UnsafeMutablePointer<Double>, _ h: StateFormat.Header, rowBegin: Int, globalRows: Int,
                               settings: UInt64) {
        s[2] = Double(h.rows)
        (s[3], s[4]) = rowHashes(rowBegin..<(rowBegin + h.rows))
        let sig = signature(h, globalRows: globalRows, settings: settings)
        (s[5], s[6], s[7], s[8]) = (sig.0, sig.0 * sig.0, sig.1, sig.1 * sig.1)
    }

    /// After the agreement reduction (b[0]: ranks, b[1]: the summed statuses
    /// of refusals of a whole batch (overlapping buffers, a bad group state),
    /// then `stride` values per tensor): this rank's own refusals, then those
    /// of the other ranks. Returns the rank count.
    static func checkRefusals(_ b: UnsafePointer<Double>, stride: Int, errors: [MlorcError?],
                              batchError: MlorcError?) throws(MlorcError) -> Double {
        let ranks = b[0]
        guard ranks >= 1, ranks == ranks.rounded(), ranks < Double(1 << 21) else {
            throw MlorcError(.reduction, "the reducer's sums are inconsistent (the rank count reads \(ranks)); step refused, nothing was changed")
        }
        for i in errors.indices {
            if let e = errors[i] { throw e }
            let s = b + 2 + stride * i
            if s[0] != 0 {
                let code = s[0] == 1 ? MlorcError.Code(rawValue: Int32(exactly: s[1]) ?? 0) ?? .invalidArgument : .invalidArgument
                throw MlorcError(code, "tensor \(i): refused on another rank (status \(code.rawValue), its arguments or state); nothing was changed")
            }
        }
        if let batchError { throw batchError }
        if b[1] != 0 {
            // One refusing rank gives its status; several may sum to another.
            let code = MlorcError.Code(rawValue: Int32(exactly: b[1]) ?? 0) ?? .invalidArgument
            throw MlorcError(code, "another rank refused the batch (status \(code.rawValue): its group state, or buffers that overlap); nothing was changed")
        }
        return ranks
    }

    /// Tensor i's partition and signature checks from its reduced segment `s`.
    static func checkAgreement(_ s: UnsafePointer<Double>, _ i: Int, _ h: StateFormat.Header, globalRows: Int, ranks: Double,
                               settings: UInt64) throws(MlorcError) {
        let expected = rowHashes(0..<globalRows)
        guard s[2] == Double(globalRows), s[3] == expected.0, s[4] == expected.1 else {
            throw MlorcError(.invalidArgument, "tensor \(i): the ranks' shards do not partition the \(globalRows) rows of the matrix (\(s[2]) rows in all over \(Int(ranks)) ranks: rows overlap or are missing); nothing was changed")
        }
        let sig = signature(h, globalRows: globalRows, settings: settings)
        guard s[5] == ranks * sig.0, s[6] == ranks * sig.0 * sig.0, s[7] == ranks * sig.1, s[8] == ranks * sig.1 * sig.1 else {
            throw MlorcError(.stateMismatch, "tensor \(i): the ranks' states or settings differ (step count, storage, rank, tensor id, shape, statistics stride, the handle's settings, or the group state); every rank must step its shard of the same state with the same settings; nothing was changed")
        }
    }

    /// Two 16-bit hashes of a row, summed over a shard: every partition of the
    /// rows gives the totals of 0 ..< globalRows; a gap or overlap misses them
    /// (unless both hashes collide: about 2^-32). Sums below 2^47: exact.
    static func rowHashes(_ rows: Range<Int>) -> (Double, Double) {
        var a: UInt64 = 0, b: UInt64 = 0
        for x in rows {
            let h = mix(UInt64(x) &+ 0x5348_4152_4452_4F57)
            a &+= h & 0xFFFF
            b &+= h >> 48
        }
        return (Double(a), Double(b))
    }

    /// What every rank must agree on for a tensor (its state and the
    /// handle's settings), as two 16-bit values: equal everywhere exactly when
    /// Σ x = R·x and Σ x² = R·x² on a rank (exact below 2^53 for R < 2^21).
    static func signature(_ h: StateFormat.Header, globalRows: Int, settings: UInt64) -> (Double, Double) {
        var s = settings
        for v in [UInt64(h.rule.rawValue), UInt64(h.storage.rawValue), UInt64(h.dtype), UInt64(h.rank), h.step, h.tensorID,
                  UInt64(h.cols), UInt64(globalRows), UInt64(h.statsStride)] { s = mix(s ^ v) }
        return (Double(s & 0xFFFF), Double((s >> 16) & 0xFFFF))
    }

    /// The settings that decide a sharded step's reductions and results.
    /// `extra`: rule-specific settings that decide replicated results.
    static func settingsSignature(_ h: Hyperparameters, rule: RuleKind, extra: [UInt64] = []) -> UInt64 {
        var s = mix(UInt64(rule.rawValue))
        for v in [h.seed, UInt64(h.oversampling), UInt64(h.powerIterations), h.cautious ? 1 : 0, h.orthograd ? 1 : 0,
                  h.grams ? 1 : 0, h.clipNorm.bitPattern, h.beta1.bitPattern, h.beta2.bitPattern] + extra { s = mix(s ^ v) }
        return s
    }

    /// A D-adaptation group state as settings: every rank must hold it bit for bit.
    static func groupSignature(_ g: GroupState) -> [UInt64] {
        [g.step, g.d.bitPattern, g.d0.bitPattern, g.dMax.bitPattern, g.numerator.bitPattern]
    }

    private static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
