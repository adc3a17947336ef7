/// The pieces of a CAME step on a row shard (CAMEShardedStep.swift):
/// CAMEStep's passes over this rank's rows, with every sum that spans all
/// rows handed out as a partial sum for the driver to reduce across ranks:
/// the column sums of G² and of the instability (û − M)², Σ r and Σ R (their
/// means), Σ u² (the clipping RMS), and for MLorc storage the products of the
/// randomized SVD. r, R, a, A, the rows of M, U, W and G are this rank's;
/// c, C, b, B, the clipping scale, s and Vt are alike on every rank.
extension CAMEStep {
    /// body(i, G's row i, the chunk's row buffers, the chunk) for each of this
    /// shard's rows; returns the values per row (in .gradSketch).
    private func rowPass(workspace: inout Workspace, pool: ThreadPool,
                         _ body: (Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Double)
        throws(MlorcError) -> UnsafeMutablePointer<Double> {
        let m = m, chunks = chunks, g = grads
        let rowSums = try workspace.raw(.gradSketch, 8 * max(m, 1)).assumingMemoryBound(to: Double.self)
        let buffers = try rowBuffers(&workspace), stride = rowStride, chunkStride = chunkStride
        pool.run(parts: chunks) { k in
            let chunkBuffer = buffers + k * chunkStride, gradBuffer = chunkBuffer + 2 * stride
            for i in partition(m, parts: chunks, part: k) {
                rowSums[i] = body(i, g.row(i, buffer: gradBuffer), chunkBuffer, k)
            }
        }
        return rowSums
    }

    /// r' for this shard's rows (into the region); adds the column sums of G²
    /// into `out` (n values, chunks added in order). Returns Σ r'.
    func shardSquareSums(into out: UnsafeMutablePointer<Double>, workspace: inout Workspace,
                         pool: ThreadPool) throws(MlorcError) -> Double {
        let m = m, n = n, chunks = chunks
        let columns = try workspace.floats(.columnPartials, chunks * n)
        for k in 0..<chunks { (columns + k * n).initialize(repeating: 0, count: n) }
        let rowSums = try rowPass(workspace: &workspace, pool: pool) { _, g, _, chunk in
            cameSquareSums(g, n, columns: columns + chunk * n)
        }
        Self.ema(oldStats, { rowSums[$0] }, count: m, over: n, beta: hyper.beta2, eps: hyper.eps, into: newStats)
        for j in 0..<n { out[j] += columnTotal(columns, j) }
        var total = 0.0
        for i in 0..<m { total += Double(newStats[i]) }
        return total
    }

    /// c' from the reduced column sums, then a (with mean r' = rowTotal / the
    /// global rows) and b. False if any is not finite.
    func shardFactors(columnSums: UnsafePointer<Double>, rowTotal: Double, globalRows: Int) -> Bool {
        Self.ema(oldStats + m, { columnSums[$0] }, count: n, over: globalRows, beta: hyper.beta2, eps: hyper.eps,
                 into: newStats + m)
        return allWithin(newStats, count: m + n, bound: .greatestFiniteMagnitude)
            && Self.inverseRoots(newStats, count: m, mean: rowTotal / Double(globalRows), into: rowFactor)
            && Self.inverseRoots(newStats + m, count: n, mean: 1, into: colFactor)
    }

    /// Σ u² over this shard's rows (the numerator of RMS(u)).
    func shardNormalisedSquareSum(workspace: inout Workspace, pool: ThreadPool) throws(MlorcError) -> Double {
        let n = n, a = rowFactor, b = colFactor
        let rowSums = try rowPass(workspace: &workspace, pool: pool) { i, g, _, _ in cameNormalisedSquareSum(g, b, a[i], n) }
        var total = 0.0
        for i in 0..<m { total += rowSums[i] }
        return total
    }

    /// The clipping scale from the reduced Σ u²; false if RMS(u) is not finite.
    func shardSetScale(total: Double, globalRows: Int) -> Bool {
        let rms = (total / Double(globalRows * n)).squareRoot()
        guard rms.isFinite else { return false }
        scalars[0] = Float(1 / max(1, rms / hyper.cameClip))
        return true
    }

    /// The new M on this shard's rows: R' (matrices), the instability's column
    /// sums added into `out` (n values), Y = MΩ (MLorc storage). Returns Σ R'
    /// and whether R' and Y are within bounds here.
    func shardMomentPass(into out: UnsafeMutablePointer<Double>, workspace: inout Workspace,
                         pool: ThreadPool) throws(MlorcError) -> (rowTotal: Double, ok: Bool) {
        let m = m, n = n, chunks = chunks, l = lowRank ? self.l : 0, vector = isVector
        if vector && !lowRank { return (0, true) }
        let omega = try workspace.floats(.omega, max(l * n, 1))  // Ω as l x n row-major
        if lowRank {
            RandomizedSVD.drawTestMatrix(seed: hyper.seed, tensorID: header.tensorID, step: header.step + 1,
                                         count: l * n, into: omega)
        }
        let columns = try workspace.floats(.columnPartials, chunks * n)
        for k in 0..<chunks { (columns + k * n).initialize(repeating: 0, count: n) }
        let previous = previous, y = y, a = rowFactor, b = colFactor, scale = scalars[0], stride = rowStride
        let (beta1, oneMinusBeta1) = (beta1, oneMinusBeta1)
        let rowSums = try rowPass(workspace: &workspace, pool: pool) { i, g, buffer, chunk in
            let row = buffer + stride, part = columns + chunk * n
            let sum = cameMomentRow(g, b, a[i] * scale, n, prev: previous.row(i, buffer: buffer), beta1: beta1,
                                    oneMinusBeta1: oneMinusBeta1, into: row, residualColumns: vector ? nil : part)
            dots(row, omega, count: l, n) { c, value in y[i + c * m] = value }
            return sum
        }
        var total = 0.0, ok = true
        if !vector {
            let stats = newStats + m + n
            Self.ema(oldStats + m + n, { rowSums[$0] }, count: m, over: n, beta: hyper.beta3, eps: hyper.eps2, into: stats)
            for j in 0..<n { out[j] += columnTotal(columns, j) }
            for i in 0..<m { total += Double(stats[i]) }
            ok = allWithin(stats, count: m, bound: .greatestFiniteMagnitude)
        }
        // As in prepare: |Y| <= 1e24 keeps the new factors far inside checkFactors' bounds.
        return (total, ok && (!lowRank || allWithin(y, count: m * l, bound: 1e24)))
    }

    /// C' from the reduced column sums, then A (mean R' = rowTotal / the global
    /// rows) and B. False if any is not finite.
    func shardConfidence(columnSums: UnsafePointer<Double>, rowTotal: Double, globalRows: Int) -> Bool {
        if isVector { return true }
        let stats = newStats + m + n
        Self.ema(oldStats + 2 * m + n, { columnSums[$0] }, count: n, over: globalRows, beta: hyper.beta3, eps: hyper.eps2,
                 into: stats + m)
        return allWithin(stats + m, count: n, bound: .greatestFiniteMagnitude)
            && Self.inverseRoots(stats, count: m, mean: rowTotal / Double(globalRows), into: confidenceRow)
            && Self.inverseRoots(stats + m, count: n, mean: 1, into: confidenceCol)
    }

    /// The verify bound of this shard's rows (CAMEStep.verify; none without rows).
    func shardVerify(lr: Double, context: StepContext, workspace: inout Workspace) throws(MlorcError) -> String? {
        if m == 0 { return OutputBounds.scalarsProblem(lr: lr, weightDecay: hyper.weightDecay) }
        return try verify(lr: lr, context: context, workspace: &workspace, rowBoundsRecorded: false)
    }

    /// This shard's sketch Y, for the sharded QR.
    func shardSketch(rowBegin: Int, globalRows: Int) -> ShardSketch {
        ShardSketch(y: y, m: m, l: l, rowBegin: rowBegin, globalRows: globalRows)
    }

    /// Adds QᵀM over this shard's rows into `out` (l x n row-major: Bᵀ, or Z =
    /// MᵀQ as n x l column-major), in fp64; M's rows rebuilt as commit does.
    func shardColumnProducts(into out: UnsafeMutablePointer<Double>, workspace: inout Workspace,
                             pool: ThreadPool) throws(MlorcError) {
        let m = m, n = n, chunks = chunks, l = l, y = y
        let partials = try workspace.floats(.columnPartials, max(chunks * l * n, 1))
        for k in 0..<chunks { (partials + k * l * n).initialize(repeating: 0, count: l * n) }
        try forEachNewRow(workspace: &workspace, pool: pool) { i, row, chunk in
            let part = partials + chunk * l * n
            axpys(row, into: part, count: l, n) { y[i + $0 * m] }
        }
        for e in 0..<(l * n) {
            var sum: Float = 0
            for k in 0..<chunks { sum += partials[k * l * n + e] }
            out[e] += Double(sum)
        }
    }

    /// Y ← M·Z on this shard's rows (z: l x n row-major).
    func shardResketch(_ z: UnsafePointer<Float>, workspace: inout Workspace, pool: ThreadPool) throws(MlorcError) {
        let m = m, n = n, l = l, y = y
        try forEachNewRow(workspace: &workspace, pool: pool) { i, row, _ in
            dots(row, z, count: l, n) { c, value in y[i + c * m] = value }
        }
    }

    /// The new M's rows of this shard (into a row buffer), each handed to
    /// `body` with its chunk.
    private func forEachNewRow(workspace: inout Workspace, pool: ThreadPool,
                               _ body: (Int, UnsafeMutablePointer<Float>, Int) -> Void) throws(MlorcError) {
        let m = m, n = n, chunks = chunks, g = grads, a = rowFactor, b = colFactor, scale = scalars[0]
        let previous = previous, (beta1, oneMinusBeta1) = (beta1, oneMinusBeta1)
        let buffers = try rowBuffers(&workspace), stride = rowStride, chunkStride = chunkStride
        pool.run(parts: chunks) { k in
            let prevBuffer = buffers + k * chunkStride, row = prevBuffer + stride, gradBuffer = prevBuffer + 2 * stride
            for i in partition(m, parts: chunks, part: k) {
                _ = cameMomentRow(g.row(i, buffer: gradBuffer), b, a[i] * scale, n, prev: previous.row(i, buffer: prevBuffer),
                                  beta1: beta1, oneMinusBeta1: oneMinusBeta1, into: row, residualColumns: nil)
                body(i, row, k)
            }
        }
    }

    /// Writes this shard's weights, the moment (dense: in place; MLorc: the
    /// new factors from the small SVD of the reduced B) and the statistics.
    func shardCommit(lr: Double, svd: (v: UnsafePointer<Float>, sigma: UnsafePointer<Float>, ut: UnsafePointer<Float>)?,
                     workspace: inout Workspace, pool: ThreadPool) throws(MlorcError) {
        let m = m, n = n, chunks = chunks, g = grads, w = weights, a = rowFactor, b = colFactor, scale = scalars[0]
        let previous = previous, (beta1, oneMinusBeta1) = (beta1, oneMinusBeta1), inPlace = !lowRank
        let buffers = try rowBuffers(&workspace), stride = rowStride, chunkStride = chunkStride
        let decayRate = Float(lr * hyper.weightDecay), step = Float(lr), vector = isVector
        let confidence: UnsafeMutablePointer<Float>? = vector ? nil : confidenceCol, confidenceRow = confidenceRow
        pool.run(parts: chunks) { k in
            let prevBuffer = buffers + k * chunkStride, gradBuffer = prevBuffer + 2 * stride
            let weightBuffer = gradBuffer + g.bufferFloats
            for i in partition(m, parts: chunks, part: k) {
                let prev = previous.row(i, buffer: prevBuffer)
                let row = inPlace ? prev : prevBuffer + stride
                _ = cameMomentRow(g.row(i, buffer: gradBuffer), b, a[i] * scale, n, prev: prev, beta1: beta1,
                                  oneMinusBeta1: oneMinusBeta1, into: row, residualColumns: nil)
                let weightRow = w.row(i, 0..<n, buffer: weightBuffer)
                cameUpdateRow(weightRow, row, n, decayRate: decayRate, step: vector ? step : step * confidenceRow[i],
                              colFactor: confidence)
                w.finish(i, 0..<n, weightRow)
            }
        }
        if let svd {  // after every row: the rows above read the old factors
            let f = factors, r = header.rank
            Panel.fromRowMajor(svd.v, into: f.vt, rows: r, cols: n)
            f.s.update(from: svd.sigma, count: r)
            RandomizedSVD.leftVectors(q: y, rows: m, width: l, ut: svd.ut, rank: r, into: f.u, rowStride: r, columnStride: 1)
        }
        // A vector's shard without rows keeps R, C (its layout's) untouched.
        oldStats.update(from: newStats, count: Self.statisticsFloats(rows: m, cols: n, shapeRows: header.shapeRows))
    }
}
