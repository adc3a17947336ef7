/// The pieces of an MLorc step on a row shard (Driver/ShardedDriver.swift):
/// the same passes as LowRankStep.update over this rank's rows, with the
/// products that span every row (YᵀY, QᵀA, AᵀQ) handed out as partial sums
/// for the driver to reduce across ranks. Y, U, W and G are this rank's
/// rows; Ω, s and Vt are replicated.
extension LowRankStep {
    /// Σ|R| and the count over the negative entries of the previous second
    /// moment on this shard's rows (rows added in order). For rules whose first
    /// moment is linear the sketch pass gathered them; the others run the pass here.
    func localNegativeTotals(workspace: inout Workspace, pool: ThreadPool, parts: Int) throws(MlorcError) -> (Double, Double) {
        guard mc > 1, Rule.isNonNegative(1) else { return (0, 0) }
        if !Rule.isLinear(0) {
            let (scratch, stride) = try threadScratch(parts, &workspace)
            let t = tensor, rowSum = rowSum, rowCount = rowCount
            pool.run(parts: parts) { part in
                negativeStatistics(t, rows: partition(t.rows, parts: parts, part: part), rowSum: rowSum,
                                   rowCount: rowCount, scratch: scratch + part * stride)
            }
        }
        var sum = 0.0, count = 0.0
        for i in 0..<m { sum += rowSum[i]; count += rowCount[i] }
        return (sum, count)
    }

    /// Y_k += β_k·c_k·NΩ: the deferred part of the second moment's fix (as update does).
    func applyFixToSketches() {
        guard Rule.isLinear(0) else { return }  // the others sketched with c already
        let c = fixConstants()
        for k in 0..<mc where Rule.isNonNegative(k) {
            let shift = rule.decay(k) * c[k], yk = y(k)
            if shift != 0 { for e in 0..<(m * l) { yk[e] += shift * yNeg[e] } }
        }
    }

    /// The elements of this shard that cautious masking keeps.
    func cautiousKept(workspace: inout Workspace, pool: ThreadPool, parts: Int) throws(MlorcError) -> Int {
        let (scratch, stride) = try threadScratch(parts, &workspace)
        let kept = UnsafeMutablePointer<Int>.allocate(capacity: parts)
        kept.initialize(repeating: 0, count: parts)
        defer { kept.deallocate() }
        let t = tensor, ys = ys, c = fixConstants(), rule = rule
        pool.run(parts: parts) { part in
            columnPass(rule, t, cols: partition(t.cols, parts: parts, part: part, align: 8),
                       q: PerMoment(UnsafePointer(ys.first), UnsafePointer(ys.second)), c: c,
                       out: ys, updateWeights: false, scratch: scratch + part * stride,
                       kept: kept + part, countKept: true)
        }
        return (0..<parts).reduce(0) { $0 + kept[$1] }
    }

    /// Moment k's sketch on this shard's rows, for the sharded QR.
    func shardSketch(_ k: Int, rowBegin: Int, globalRows: Int) -> ShardSketch {
        ShardSketch(y: y(k), m: m, l: l, rowBegin: rowBegin, globalRows: globalRows)
    }

    /// Adds every moment's Q_kᵀA_k over this shard's rows (l x cols, row-major:
    /// Bᵀ, or Z = AᵀQ, as cols x l column-major) at out[k], in fp64.
    func addColumnProducts(into out: PerMoment<UnsafeMutablePointer<Double>>, workspace: inout Workspace, pool: ThreadPool,
                           parts: Int) throws(MlorcError) {
        let (scratch, stride) = try threadScratch(parts, &workspace)
        let panels = try workspace.floats(.panels, mc * l * n)
        let panel = PerMoment(panels, panels + (mc - 1) * l * n)
        panels.initialize(repeating: 0, count: mc * l * n)
        let kept = UnsafeMutablePointer<Int>.allocate(capacity: parts)
        defer { kept.deallocate() }
        let t = tensor, ys = ys, c = fixConstants(), rule = rule
        pool.run(parts: parts) { part in
            columnPass(rule, t, cols: partition(t.cols, parts: parts, part: part, align: 8),
                       q: PerMoment(UnsafePointer(ys.first), UnsafePointer(ys.second)), c: c,
                       out: panel, updateWeights: false, scratch: scratch + part * stride, kept: kept + part)
        }
        let staging = try workspace.floats(.staging, l * n)
        for k in 0..<mc {
            Panel.toRowMajor(panel[k], into: staging, rows: l, cols: n)
            for e in 0..<(l * n) { out[k][e] += Double(staging[e]) }
        }
    }

    /// Y_k ← A_k·Z_k for every moment (a row pass; z[k] is row-major l x cols).
    func resketch(_ z: PerMoment<UnsafePointer<Float>>, workspace: inout Workspace, pool: ThreadPool, parts: Int) throws(MlorcError) {
        let (scratch, stride) = try threadScratch(parts, &workspace)
        let panels = try workspace.floats(.panels, mc * l * n)
        let panel = PerMoment(panels, panels + (mc - 1) * l * n)
        for k in 0..<mc { Panel.fromRowMajor(z[k], into: panel[k], rows: l, cols: n) }
        let t = tensor, ys = ys, c = fixConstants(), rule = rule
        pool.run(parts: parts) { part in
            rowPass(rule, t, rows: partition(t.rows, parts: parts, part: part),
                    sketch: PerMoment(UnsafePointer(panel.first), UnsafePointer(panel.second)), c: c,
                    y: ys, scratch: scratch + part * stride)
        }
    }

    /// The weight update of this shard's rows (the column pass; its QᵀA is discarded).
    func updateWeights(workspace: inout Workspace, pool: ThreadPool, parts: Int) throws(MlorcError) {
        let (scratch, stride) = try threadScratch(parts, &workspace)
        let panels = try workspace.floats(.panels, mc * l * n)
        panels.initialize(repeating: 0, count: mc * l * n)
        let panel = PerMoment(panels, panels + (mc - 1) * l * n)
        let kept = UnsafeMutablePointer<Int>.allocate(capacity: parts)
        defer { kept.deallocate() }
        let t = tensor, ys = ys, c = fixConstants(), rule = rule
        pool.run(parts: parts) { part in
            columnPass(rule, t, cols: partition(t.cols, parts: parts, part: part, align: 8),
                       q: PerMoment(UnsafePointer(ys.first), UnsafePointer(ys.second)), c: c,
                       out: panel, updateWeights: true, scratch: scratch + part * stride, kept: kept + part)
        }
    }

    /// Moment k's new factors from the SVD of the reduced B: Vt = Ṽᵀ[:r] and
    /// s = Σ[:r] (the same on every rank), U = Q·Ũ[:, :r] for this shard's rows.
    func storeFactors(_ k: Int, v: UnsafePointer<Float>, sigma: UnsafePointer<Float>, ut: UnsafePointer<Float>) {
        let f = tensor.factors[k], r = tensor.rank
        Panel.fromRowMajor(v, into: f.vt, rows: r, cols: n)
        f.s.update(from: sigma, count: r)
        RandomizedSVD.leftVectors(q: y(k), rows: m, width: l, ut: ut, rank: r, into: f.u, rowStride: r, columnStride: 1)
    }
}
