/// mlorc_step_sharded for MoFaSGD (docs/architecture.md, "Sharded steps"):
/// each rank steps its rows, and the sums over all rows go through the
/// reducer, one call per phase for the whole batch:
///   1 agreement (validation, partition, signature) with each rank's
///     gradient check;
///   2 dense storage: the new momentum gathered (its exact SVD is computed
///     alike on every rank); low-rank, first step (or a zero momentum): the
///     Gram matrix of Y = GΩ; low-rank update: GᵀU, C = UᵀGV and the Gram
///     matrix of [U | GV];
///   the sharded QR of those sketches (CholeskyQR2), power iterations for the
///   first steps (GᵀQ reduced);
///   3 GᵀQ (first steps) or R_U = Q_Uᵀ[U | GV] (updates), then every small SVD;
///   4 the verify verdict.
/// Nothing is written before the last reduction.
extension Optimizer {
    func driveMoFaSGDSharded(_ batch: ShardedBatch, lr: Double) throws(MlorcError) {
        var context = StepContext(workspace: workspace, pool: pool, threads: hyper.threads)
        defer { workspace = context.workspace }
        var exchange = ShardExchange(reduce: reducer!)
        let count = batch.args.count, hyper = hyper

        var units = [(tensor: Prepared, globalRows: Int, rowBegin: Int)?](repeating: nil, count: count)
        var errors = [MlorcError?](repeating: nil, count: count)
        for i in 0..<count {
            let a = batch.args[i]
            do throws(MlorcError) {
                let place = try Self.checkShard(rows: a.rows, cols: a.cols, batch.shards[i])
                let p = try validate(a, place: place)
                guard p.elements == .f32 else {
                    throw MlorcError(.unsupportedDtype, "the sharded step takes f32 tensors only in this version")
                }
                units[i] = (p, place?.globalRows ?? p.header.rows, place?.rowBegin ?? 0)
            } catch { errors[i] = error.inTensor(i) }
        }
        var batchError: MlorcError?
        if !errors.contains(where: { $0 != nil }) {
            do throws(MlorcError) { try Self.checkNoOverlap(units.map { $0!.tensor }) } catch { batchError = error }
        }
        // Regions: each tensor's result (the new SVD), then its scratch.
        var offsets = [Int](repeating: 0, count: count), total = 0
        for i in 0..<count {
            offsets[i] = total
            if let u = units[i] {
                total += MoFaSGDStep.resultFloats(u.tensor.header) + MoFaSGDStep.shardScratchFloats(u.tensor.header, hyper)
            }
        }
        let regions = try context.workspace.floats(.factorResults, max(total, 16))
        func makeStep(_ i: Int) -> MoFaSGDStep {
            let t = units[i]!.tensor
            return MoFaSGDStep(hyper: hyper, header: t.header, weights: t.weightRows(hyper), grad: t.gradRows, payload: t.payload,
                               result: regions + offsets[i])
        }
        func scratch(_ i: Int) -> UnsafeMutablePointer<Float> {
            regions + offsets[i] + MoFaSGDStep.resultFloats(units[i]!.tensor.header)
        }

        // Phase 1: agreement, with the gradient checks.
        let f1 = ShardExchange.agreementSlots + 1
        let signature = ShardExchange.settingsSignature(hyper, rule: rule, extra: [hyper.eps.bitPattern, hyper.mofasgdReciprocal ? 1 : 0,
                                                                                    hyper.mofasgdMaxValue.bitPattern])
        var b = try exchange.begin(2 + f1 * count, &context.workspace)
        b[0] = 1
        b[1] = batchError == nil ? 0 : 1
        var localBad = [Bool](repeating: false, count: count)
        for i in 0..<count {
            let s = b + 2 + f1 * i
            guard let u = units[i] else { ShardExchange.writeRefusal(s, errors[i]!); continue }
            ShardExchange.writeAgreement(s, u.tensor.header, rowBegin: u.rowBegin, globalRows: u.globalRows, settings: signature)
            let st = makeStep(i)
            localBad[i] = !st.shardInputsAreValid(pool: context.pool, parts: context.parts(for: st.m * st.n))
            s[ShardExchange.agreementSlots] = localBad[i] ? 1 : 0
        }
        b = try exchange.reduce("agreement")
        let ranks = try ShardExchange.checkRefusals(b, stride: f1, errors: errors, batchError: batchError)
        for i in 0..<count {
            let s = b + 2 + f1 * i, u = units[i]!
            try ShardExchange.checkAgreement(s, i, u.tensor.header, globalRows: u.globalRows, ranks: ranks, settings: signature)
            guard s[ShardExchange.agreementSlots] == 0 else {
                throw MlorcError(.nonFinite, localBad[i]
                    ? "tensor \(i): gradient contains NaN or infinity (or entries beyond 1e14, or the new momentum overflows float); step refused on every rank, nothing was changed"
                    : "tensor \(i): refused on another rank: its gradient shard contains NaN or infinity (or entries beyond 1e14, or the new momentum overflows float); nothing was changed")
            }
        }
        let all = units.map { $0! }
        let steps = (0..<count).map(makeStep)
        let kinds = steps.map(\.shardKind)
        func parts(_ i: Int) -> Int { context.parts(for: steps[i].m * steps[i].n) }

        // Phase 2: the gathered dense momenta; the sketches' Gram matrices, GᵀU and C.
        let initial = (0..<count).filter { kinds[$0] == .initial }, update = (0..<count).filter { kinds[$0] == .update }
        var sketches: [Int: ShardSketch] = [:]
        for i in initial {
            try steps[i].shardSketchGradient(scratch(i), workspace: &context.workspace, pool: context.pool, parts: parts(i))
            sketches[i] = ShardSketch(y: scratch(i), m: steps[i].m, l: steps[i].sketchWidth, rowBegin: all[i].rowBegin,
                                      globalRows: all[i].globalRows)
        }
        for i in update {
            sketches[i] = ShardSketch(y: scratch(i) + 2 * steps[i].r * steps[i].m, m: steps[i].m, l: 2 * steps[i].r,
                                      rowBegin: all[i].rowBegin, globalRows: all[i].globalRows)
        }
        let order = initial + update  // the sketches' order in every reduction
        func segment(_ i: Int) -> Int {
            let st = steps[i]
            switch kinds[i] {
            case .dense: return all[i].globalRows * st.n
            case .initial: return CholeskyQR.packedCount(st.sketchWidth)
            case .update: return st.n * st.r + st.r * st.r + CholeskyQR.packedCount(2 * st.r)
            }
        }
        var segments = [Int](repeating: 0, count: count)
        total = 0
        for i in 0..<count { segments[i] = total; total += segment(i) }
        b = try exchange.begin(total, &context.workspace)
        for i in 0..<count {
            let st = steps[i], out = b + segments[i]
            switch kinds[i] {
            case .dense: st.addDenseMomentum(into: out, rowBegin: all[i].rowBegin)
            case .initial: sketches[i]!.addGram(into: out)
            case .update:
                try st.shardTangentProducts(scratch(i), gtu: out, c: out + st.n * st.r, workspace: &context.workspace,
                                            pool: context.pool, parts: parts(i))
                sketches[i]!.addGram(into: out + st.n * st.r + st.r * st.r)
            }
        }
        b = try exchange.reduce("MoFaSGD products", finite: true)
        var grams: [Double] = [], cs: [Int: [Double]] = [:], qvs: [Int: UnsafeMutablePointer<Float>] = [:]
        for i in 0..<count where kinds[i] == .dense {
            try steps[i].shardDenseFactors(b + segments[i], globalRows: all[i].globalRows, rowBegin: all[i].rowBegin,
                                           workspace: &context.workspace)
        }
        for i in order {
            let st = steps[i], out = b + segments[i]
            if kinds[i] == .initial {
                grams += UnsafeBufferPointer(start: out, count: segment(i))
            } else {
                cs[i] = Array(UnsafeBufferPointer(start: out + st.n * st.r, count: st.r * st.r))
                qvs[i] = try st.shardFinishXV(scratch(i), gtu: out, workspace: &context.workspace)
                grams += UnsafeBufferPointer(start: out + st.n * st.r + st.r * st.r, count: CholeskyQR.packedCount(2 * st.r))
            }
        }
        let ordered = order.map { sketches[$0]! }
        try grams.withUnsafeBufferPointer { g throws(MlorcError) in
            try orthonormalize(ordered, grams: g.baseAddress ?? UnsafePointer(bitPattern: 8)!, &exchange, &context)
        }

        // Power iterations of the first steps' randomized SVDs.
        func reduceGradientProducts(_ phase: String, extra: (UnsafeMutablePointer<Double>) -> Void = { _ in },
                                    extraCount: Int = 0) throws(MlorcError) -> UnsafeMutablePointer<Double> {
            let b = try exchange.begin(initial.reduce(0) { $0 + steps[$1].n * steps[$1].sketchWidth } + extraCount,
                                       &context.workspace)
            var offset = 0
            for i in initial {
                try steps[i].addGradientTransposeProduct(scratch(i), into: b + offset, workspace: &context.workspace,
                                                         pool: context.pool, parts: parts(i))
                offset += steps[i].n * steps[i].sketchWidth
            }
            extra(b + offset)
            return try exchange.reduce(phase, finite: true)
        }
        if !initial.isEmpty {
            let initialSketches = initial.map { sketches[$0]! }
            for _ in 0..<hyper.powerIterations {
                b = try reduceGradientProducts("power iteration")
                var offset = 0
                for i in initial {
                    let st = steps[i], size = st.n * st.sketchWidth, z = try context.workspace.floats(.staging, size)
                    for e in 0..<size { z[e] = Float(b[offset + e]) }
                    try LinearAlgebra.orthonormalize(z, rows: st.n, cols: st.sketchWidth, workspace: &context.workspace)
                    let zc = try context.workspace.floats(.panels, size)
                    zc.update(from: z, count: size)
                    try st.shardResketch(zc, into: scratch(i), workspace: &context.workspace, pool: context.pool, parts: parts(i))
                    offset += size
                }
                let sizes = initialSketches.map { CholeskyQR.packedCount($0.l) }
                b = try exchange.begin(sizes.reduce(0, +), &context.workspace)
                offset = 0
                for (j, sketch) in initialSketches.enumerated() {
                    sketch.addGram(into: b + offset)
                    offset += sizes[j]
                }
                b = try exchange.reduce("power iteration QR")
                try orthonormalize(initialSketches, grams: b, &exchange, &context)
            }
        }

        // Phase 3: GᵀQ of the first steps, R_U of the updates; every small SVD.
        let ruSizes = update.map { 4 * steps[$0].r * steps[$0].r }
        b = try reduceGradientProducts("projection", extra: { out in
            var offset = 0
            for (j, i) in update.enumerated() {
                steps[i].addRU(scratch(i), into: out + offset)
                offset += ruSizes[j]
            }
        }, extraCount: ruSizes.reduce(0, +))
        var offset = 0
        for i in initial {
            let st = steps[i], size = st.n * st.sketchWidth, bt = try context.workspace.floats(.staging, size)
            for e in 0..<size { bt[e] = Float(b[offset + e]) }
            try st.shardInitialFactors(q: scratch(i), transposedB: bt, workspace: &context.workspace)
            offset += size
        }
        for (j, i) in update.enumerated() {
            try cs[i]!.withUnsafeBufferPointer { c throws(MlorcError) in
                try steps[i].shardUpdatedFactors(scratch(i), qv: qvs[i]!, ru: b + offset, c: c.baseAddress!,
                                                 workspace: &context.workspace)
            }
            offset += ruSizes[j]
        }

        // Phase 4: the verify verdict.
        b = try exchange.begin(count, &context.workspace)
        var problems = [String?](repeating: nil, count: count)
        for i in 0..<count {
            problems[i] = steps[i].shardVerify(lr: lr, context: context)
            b[i] = problems[i] == nil ? 0 : 1
        }
        b = try exchange.reduce("verify")
        for i in 0..<count where b[i] != 0 {
            throw MlorcError(.nonFinite, problems[i].map { "tensor \(i): \($0); step refused on every rank, nothing was changed" }
                             ?? "tensor \(i): refused on another rank: the new weights or momentum of its shard would not be finite; nothing was changed")
        }

        // Commit: weights and states, then headers.
        for i in 0..<count {
            try steps[i].commit(lr: lr, workspace: &context.workspace, pool: context.pool, parts: parts(i))
            let t = all[i].tensor
            var header = t.header
            if header.storage == .lowRank {
                header.payloadChecksum = Checksum.of(UnsafeRawPointer(t.payload), count: header.payloadBytes)
            }
            header.step += 1
            StateFormat.write(header, to: t.state)
        }
    }
}
