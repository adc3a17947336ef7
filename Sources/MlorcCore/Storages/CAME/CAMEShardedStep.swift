/// mlorc_step_sharded for CAME (docs/architecture.md, "Sharded steps"): each
/// rank steps its rows, and every sum over all rows goes through the reducer,
/// one call per phase for the whole batch:
///   1 agreement: validation verdicts, the row partition, the signature;
///   2 Σ r' and the column sums of G² → c', a, b on every rank;
///   3 this rank's verdict on r' and a, with Σ u² → the clipping scale;
///   4 the new M's rows: Σ R', the instability's column sums → C', A, B, and
///     for MLorc storage Y = MΩ with its first Gram matrix;
///   5 the verify verdict;
///   MLorc storage: the QR of Y (CholeskyQR2, as the MomentPlan rules), power
///   iterations (MᵀQ reduced), then B = QᵀM reduced and its small SVD.
/// Nothing is written before the last reduction and the SVDs.
extension Optimizer {
    func driveCAMESharded(_ batch: ShardedBatch, lr: Double) throws(MlorcError) {
        var context = StepContext(workspace: workspace, pool: pool, threads: hyper.threads)
        defer { workspace = context.workspace }
        var exchange = ShardExchange(reduce: reducer!)
        let count = batch.args.count, hyper = hyper

        // This rank's validation, voted in phase 1 (never thrown before it).
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
        var offsets = [Int](repeating: 0, count: count), total = 0
        for i in 0..<count {
            offsets[i] = total
            if let u = units[i] { total += CAMEStep.regionFloats(u.tensor.header, hyper) }
        }
        let regions = try context.workspace.floats(.sketches, max(total, 16))

        // Phase 1: agreement.
        let f1 = ShardExchange.agreementSlots
        let signature = ShardExchange.settingsSignature(hyper, rule: rule, extra: [hyper.beta3.bitPattern, hyper.eps.bitPattern,
                                                                                    hyper.eps2.bitPattern, hyper.cameClip.bitPattern])
        var b = try exchange.begin(2 + f1 * count, &context.workspace)
        b[0] = 1
        b[1] = batchError == nil ? 0 : 1
        for i in 0..<count {
            if let u = units[i] {
                ShardExchange.writeAgreement(b + 2 + f1 * i, u.tensor.header, rowBegin: u.rowBegin, globalRows: u.globalRows,
                                             settings: signature)
            } else {
                ShardExchange.writeRefusal(b + 2 + f1 * i, errors[i]!)
            }
        }
        b = try exchange.reduce("agreement")
        let ranks = try ShardExchange.checkRefusals(b, stride: f1, errors: errors, batchError: batchError)
        for i in 0..<count {
            let u = units[i]!
            try ShardExchange.checkAgreement(b + 2 + f1 * i, i, u.tensor.header, globalRows: u.globalRows, ranks: ranks,
                                             settings: signature)
        }
        let all = units.map { $0! }
        let steps = (0..<count).map { CAMEStep(hyper: hyper, tensor: all[$0].tensor, region: regions + offsets[$0]) }
        let cols = steps.map(\.n)
        var columnOffsets = [Int](repeating: 0, count: count)
        total = 0
        for i in 0..<count { columnOffsets[i] = total; total += cols[i] }
        let columnTotal = total
        func refuse(_ i: Int, local: Bool) -> MlorcError {
            MlorcError(.nonFinite, local
                ? "tensor \(i): gradient contains NaN or infinity, or CAME's statistics or new moment overflow float (or are zero with eps = 0); step refused on every rank, nothing was changed"
                : "tensor \(i): refused on another rank: its gradient shard contains NaN or infinity, or CAME's statistics or new moment overflow float; nothing was changed")
        }

        // Phase 2: Σ r' and the column sums of G².
        b = try exchange.begin(2 * count + columnTotal, &context.workspace)
        for i in 0..<count {
            b[2 * i + 1] = try steps[i].shardSquareSums(into: b + 2 * count + columnOffsets[i], workspace: &context.workspace,
                                                        pool: context.pool)
            b[2 * i] = b[2 * i + 1].isFinite ? 0 : 1
        }
        var local = (0..<count).map { b[2 * $0] != 0 }
        b = try exchange.reduce("CAME statistics")
        var factorsFinite = [Bool](repeating: true, count: count)
        for i in 0..<count {
            guard b[2 * i] == 0, b[2 * i + 1].isFinite else { throw refuse(i, local: local[i]) }
            factorsFinite[i] = steps[i].shardFactors(columnSums: b + 2 * count + columnOffsets[i], rowTotal: b[2 * i + 1],
                                                     globalRows: all[i].globalRows)
        }

        // Phase 3: the verdict on the factors, with Σ u².
        b = try exchange.begin(2 * count, &context.workspace)
        for i in 0..<count {
            b[2 * i] = factorsFinite[i] ? 0 : 1
            if factorsFinite[i] {
                b[2 * i + 1] = try steps[i].shardNormalisedSquareSum(workspace: &context.workspace, pool: context.pool)
            }
        }
        b = try exchange.reduce("CAME clipping")
        for i in 0..<count {
            guard b[2 * i] == 0 else { throw refuse(i, local: !factorsFinite[i]) }
            guard steps[i].shardSetScale(total: b[2 * i + 1], globalRows: all[i].globalRows) else { throw refuse(i, local: true) }
        }

        // Phase 4: the new moment's rows, Σ R', the instability's column sums, Y and its Gram matrix.
        let lowRank = (0..<count).filter { steps[$0].lowRank }
        let sketches = lowRank.map { steps[$0].shardSketch(rowBegin: all[$0].rowBegin, globalRows: all[$0].globalRows) }
        let gramSizes = sketches.map { CholeskyQR.packedCount($0.l) }
        let gramStart = 2 * count + columnTotal
        b = try exchange.begin(gramStart + gramSizes.reduce(0, +), &context.workspace)
        for i in 0..<count {
            let pass = try steps[i].shardMomentPass(into: b + 2 * count + columnOffsets[i], workspace: &context.workspace,
                                                    pool: context.pool)
            (b[2 * i], b[2 * i + 1]) = (pass.ok && pass.rowTotal.isFinite ? 0 : 1, pass.rowTotal)
        }
        var offset = gramStart
        for (j, sketch) in sketches.enumerated() {
            sketch.addGram(into: b + offset)
            offset += gramSizes[j]
        }
        local = (0..<count).map { b[2 * $0] != 0 }
        b = try exchange.reduce("CAME instability")
        var confidenceFinite = [Bool](repeating: true, count: count)
        for i in 0..<count {
            guard b[2 * i] == 0, b[2 * i + 1].isFinite else { throw refuse(i, local: local[i]) }
            confidenceFinite[i] = steps[i].shardConfidence(columnSums: b + 2 * count + columnOffsets[i], rowTotal: b[2 * i + 1],
                                                           globalRows: all[i].globalRows)
        }
        // The Gram matrices outlive the next reduction's buffer: keep a copy.
        let grams = Array(UnsafeBufferPointer(start: b + gramStart, count: gramSizes.reduce(0, +)))

        // Phase 5: the verify verdict.
        b = try exchange.begin(count, &context.workspace)
        var problems = [String?](repeating: nil, count: count)
        for i in 0..<count {
            if confidenceFinite[i] {
                let c = context  // read-only view; the scratch is lent separately
                problems[i] = try steps[i].shardVerify(lr: lr, context: c, workspace: &context.workspace)
            } else {
                problems[i] = "CAME's confidence statistics overflow float (or are zero with eps2 = 0)"
            }
            b[i] = problems[i] == nil ? 0 : 1
        }
        b = try exchange.reduce("verify")
        for i in 0..<count where b[i] != 0 {
            throw MlorcError(.nonFinite, problems[i].map { "tensor \(i): \($0); step refused on every rank, nothing was changed" }
                             ?? "tensor \(i): refused on another rank: the new weights or moment of its shard would not be finite; nothing was changed")
        }

        // MLorc storage: Q = orth(Y), power iterations, B = QᵀM and its small SVD.
        try grams.withUnsafeBufferPointer { g throws(MlorcError) in
            try orthonormalize(sketches, grams: g.baseAddress ?? UnsafePointer(bitPattern: 8)!, &exchange, &context)
        }
        let productSizes = lowRank.map { steps[$0].l * steps[$0].n }
        func reduceProducts(_ phase: String) throws(MlorcError) -> UnsafeMutablePointer<Double> {
            let b = try exchange.begin(productSizes.reduce(0, +), &context.workspace)
            var offset = 0
            for (j, i) in lowRank.enumerated() {
                try steps[i].shardColumnProducts(into: b + offset, workspace: &context.workspace, pool: context.pool)
                offset += productSizes[j]
            }
            return try exchange.reduce(phase, finite: true)
        }
        if !lowRank.isEmpty {
            for _ in 0..<hyper.powerIterations {
                b = try reduceProducts("power iteration")
                offset = 0
                for (j, i) in lowRank.enumerated() {
                    let st = steps[i], z = try context.workspace.floats(.staging, productSizes[j])
                    for e in 0..<productSizes[j] { z[e] = Float(b[offset + e]) }
                    try LinearAlgebra.orthonormalize(z, rows: st.n, cols: st.l, workspace: &context.workspace)
                    try st.shardResketch(z, workspace: &context.workspace, pool: context.pool)
                    offset += productSizes[j]
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
        }
        if !lowRank.isEmpty { b = try reduceProducts("projection") }
        let resultSizes = lowRank.map { i -> Int in let l = steps[i].l, n = steps[i].n; return n * l + l + l * l }
        let results = try context.workspace.floats(.factorResults, max(resultSizes.reduce(0, +), 16))
        var resultOffsets = [Int?](repeating: nil, count: count)
        offset = 0
        var resultOffset = 0
        for (j, i) in lowRank.enumerated() {
            let l = steps[i].l, n = steps[i].n
            let bt = try context.workspace.floats(.staging, l * n)
            for e in 0..<(l * n) { bt[e] = Float(b[offset + e]) }
            let svd = try RandomizedSVD.smallSVD(transposedB: bt, cols: n, width: l, workspace: &context.workspace)
            let out = results + resultOffset
            out.update(from: svd.v, count: n * l)
            (out + n * l).update(from: svd.sigma, count: l)
            (out + n * l + l).update(from: svd.ut, count: l * l)
            resultOffsets[i] = resultOffset
            offset += productSizes[j]
            resultOffset += resultSizes[j]
        }

        // Commit: weights, moments, statistics, headers.
        for i in 0..<count {
            let st = steps[i], l = st.lowRank ? st.l : 0, n = st.n
            let svd = resultOffsets[i].map { o in
                (v: UnsafePointer(results + o), sigma: UnsafePointer(results + o + n * l), ut: UnsafePointer(results + o + n * l + l))
            }
            try st.shardCommit(lr: lr, svd: svd, workspace: &context.workspace, pool: context.pool)
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
