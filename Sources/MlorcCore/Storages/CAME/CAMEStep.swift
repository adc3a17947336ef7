import CVectorMath

#if canImport(Glibc)
import Glibc
#endif

/// CAME (Luo et al. 2023, arXiv 2307.02047), as the authors' code computes it
/// (github.com/yangluo7/CAME, came_pytorch/CAME.py). For an m x n tensor with
/// gradient G at each step:
///
///   r ← β2·r + (1−β2)·(rowmean(G²) + ε1)      c ← β2·c + (1−β2)·(colmean(G²) + ε1)
///   u = G / √V with V = r cᵀ / mean(r)  (Adafactor's factored second moment:
///       u[i, j] = G[i, j] · (r[i]/mean(r))^−½ · c[j]^−½)
///   û = u / max(1, RMS(u)/d)                   d = MLORC_PARAM_CAME_CLIP
///   M ← β1·M + (1−β1)·û
///   R ← β3·R + (1−β3)·(rowmean((û−M)²) + ε2)  C likewise with column means
///   W ← W·(1 − lr·λ) − lr · M / √S,  S = R Cᵀ / mean(R)
///
/// rowmean is the mean over a row's n entries (r, R have m entries), colmean
/// over a column's m entries; ε is added to the means (= the mean of G² + ε).
/// No bias correction, decoupled weight decay, as in the authors' code.
/// A vector (one row or one column; the Python binding passes 1-D tensors
/// as 1 x n) follows the authors' branch for 1-D parameters: V is the exact
/// per-element EMA of G² + ε1 (the factored formula is exact for one row or
/// column) and the update is lr·M: no confidence factor, no R and C kept.
///
/// Storage of M: dense (m·n floats, updated in place), or MLorc factors
/// (U, s, Vt as MLorc-AdamW's moment) refreshed every step by the randomized
/// SVD of the new M: Y = MΩ, q power iterations, Q = qr(Y), the SVD of QᵀM.
/// The new M is built one row at a time from the factors and G, never as a
/// full matrix; the weights get the uncompressed M of the step.
///
/// Payload: the moment (dense m x n, or U, s, Vt), then r (m), c (n) and,
/// unless a vector, R (m), C (n).
///
/// A step runs in two phases so that a refused batch changes nothing:
/// `prepare` (read-only over caller buffers) computes the new statistics,
/// the clipping scale and the sketch, and reports whether all are finite;
/// `commit` writes the weights and the state.
struct CAMEStep {
    let hyper: Hyperparameters
    let prepared: Optimizer.Prepared
    let region: UnsafeMutablePointer<Float>  // this tensor's region (regionFloats), kept from prepare to commit

    var header: StateFormat.Header { prepared.header }
    var m: Int { header.rows }
    var n: Int { header.cols }
    var lowRank: Bool { header.storage == .lowRank }
    /// Vectors follow the whole matrix (a row shard of a matrix is a matrix).
    var isVector: Bool { Self.isVector(rows: header.shapeRows, cols: n) }
    var l: Int { Self.sketchWidth(header, hyper) }

    static func isVector(rows: Int, cols: Int) -> Bool { rows == 1 || cols == 1 }

    /// Floats of r, c (and R, C for a matrix) in the payload of rows x cols,
    /// rows of a shapeRows x cols matrix: a row shard of a matrix, even of
    /// one row, keeps R and C.
    static func statisticsFloats(rows: Int, cols: Int, shapeRows: Int) -> Int {
        (isVector(rows: shapeRows, cols: cols) ? 1 : 2) * (rows + cols)
    }

    /// A vector's statistics r (rows), c (cols) as another vector's shape: a
    /// 1 x n vector's c holds what an n x 1 vector's r does (the per-element
    /// EMA), and its one r what that one's c does (the EMA of the mean), so
    /// a transposed vector swaps them. A matrix's cannot follow another shape.
    static func reshapeStatistics(_ stats: [Float], from: (rows: Int, cols: Int), to: (rows: Int, cols: Int)) -> [Float]? {
        guard isVector(rows: from.rows, cols: from.cols), isVector(rows: to.rows, cols: to.cols) else { return nil }
        if from == to { return stats }
        guard from.rows == to.cols, from.cols == to.rows else { return nil }
        return Array(stats[from.rows...] + stats[..<from.rows])
    }

    /// The factored statistics are means of squares plus ε: finite, >= 0.
    static func checkStatistics(_ h: StateFormat.Header, _ payload: UnsafePointer<Float>) throws(MlorcError) {
        let stats = payload + h.floatsPerMoment
        for e in 0..<statisticsFloats(rows: h.rows, cols: h.cols, shapeRows: h.shapeRows) where !(stats[e] >= 0 && stats[e] <= .greatestFiniteMagnitude) {
            throw MlorcError(.stateCorrupted, "state statistics are negative or not finite (not written by a step)")
        }
    }

    static func sketchWidth(_ h: StateFormat.Header, _ hyper: Hyperparameters) -> Int {
        RandomizedSVD.sketchWidth(rank: h.rank, oversampling: hyper.oversampling, rows: h.shapeRows, cols: h.cols)
    }

    /// Row chunks of a tensor: a function of the shape only (never of the
    /// thread count), so column sums, added chunk by chunk, are reproducible.
    static func chunks(rows: Int, cols: Int) -> Int { max(1, min(8, rows, rows * cols / 32768)) }
    var chunks: Int { Self.chunks(rows: m, cols: n) }

    private static func round16(_ x: Int) -> Int { (x + 15) / 16 * 16 }

    /// Region: new r, c, R, C | their factors a, b (of V) and A, B (of S) |
    /// 16 scalars | Y (m x l, column-major; low-rank only) | the rows'
    /// verify inputs (3m: CAMERowBound's fields).
    static func regionFloats(_ h: StateFormat.Header, _ hyper: Hyperparameters) -> Int {
        let side = round16(2 * (h.rows + h.cols))
        return 2 * side + 16 + sketchFloats(h, hyper) + round16(3 * h.rows)
    }

    private static func sketchFloats(_ h: StateFormat.Header, _ hyper: Hyperparameters) -> Int {
        h.storage == .lowRank ? round16(h.rows * sketchWidth(h, hyper)) : 0
    }

    init(hyper: Hyperparameters, tensor: Optimizer.Prepared, region: UnsafeMutablePointer<Float>) {
        self.hyper = hyper
        prepared = tensor
        self.region = region
    }

    // Views into the region.
    var side: Int { Self.round16(2 * (m + n)) }
    var newStats: UnsafeMutablePointer<Float> { region }              // r', c', R', C'
    var rowFactor: UnsafeMutablePointer<Float> { region + side }      // a = (r'/mean r')^−½
    var colFactor: UnsafeMutablePointer<Float> { region + side + m }  // b = c'^−½
    var confidenceRow: UnsafeMutablePointer<Float> { region + side + m + n }      // A = (R'/mean R')^−½
    var confidenceCol: UnsafeMutablePointer<Float> { region + side + 2 * m + n }  // B = C'^−½
    var scalars: UnsafeMutablePointer<Float> { region + 2 * side }    // [0]: clipping scale
    var y: UnsafeMutablePointer<Float> { region + 2 * side + 16 }
    /// Per row: max_j |g|·b_j, then the weights' and the dense moment's magnitude bits (as float bit patterns).
    var rowBounds: UnsafeMutablePointer<Float> { y + Self.sketchFloats(header, hyper) }
    /// Whether `prepare` records rowBounds (it reads every row of G, the
    /// weights and a dense moment in its moment pass): all but dense vectors.
    var preparesRowBounds: Bool { !(isVector && !lowRank) }

    func storeRowBound(_ i: Int, _ bound: CAMERowBound) {
        rowBounds[i] = bound.gradTimesB
        rowBounds[m + i] = Float(bitPattern: UInt32(bitPattern: bound.weightBits))
        rowBounds[2 * m + i] = Float(bitPattern: UInt32(bitPattern: bound.momentBits))
    }

    func recordedRowBound(_ i: Int) -> CAMERowBound {
        CAMERowBound(gradTimesB: rowBounds[i], weightBits: Int32(bitPattern: rowBounds[m + i].bitPattern),
                     momentBits: Int32(bitPattern: rowBounds[2 * m + i].bitPattern))
    }

    // Views into the state.
    var momentFloats: Int { header.floatsPerMoment }
    var oldStats: UnsafeMutablePointer<Float> { prepared.payload + momentFloats }
    var factors: Factors { Factors(header, payload: prepared.payload, moment: 0) }
    var previous: PreviousMomentRows {
        PreviousMomentRows(dense: lowRank ? nil : prepared.payload, factors: lowRank ? factors : nil,
                           rank: header.rank, cols: n)
    }

    /// Whether the moment pass of `prepare` and the update pass of `commit`
    /// take the one-sweep rank-4 kernels (CAMEFusedRows.swift).
    var sweepsRank4: Bool { lowRank && header.rank == 4 && l == 4 && !isVector }

    var beta1: Float { Float(hyper.beta1) }
    var oneMinusBeta1: Float { Float(1 - hyper.beta1) }

    /// The gradient's and the weights' rows as fp32 (in place for fp32;
    /// half-precision rows are widened into buffers of their own).
    var grads: ElementRows { prepared.gradRows }
    var weights: WeightRows { prepared.weightRows(hyper) }

    /// Row buffers per chunk, `chunkStride` floats apart: the previous moment
    /// row (n floats, then the rank coefficients of its rebuild), the new one
    /// (`rowStride` floats apart), then, for half precision, a widened
    /// gradient row and a widened weight row.
    var rowStride: Int { Self.round16(n + header.rank) }
    var chunkStride: Int { 2 * rowStride + grads.bufferFloats + weights.bufferFloats }
    func rowBuffers(_ workspace: inout Workspace) throws(MlorcError) -> UnsafeMutablePointer<Float> {
        try workspace.floats(.threadScratch, chunks * chunkStride)
    }

    /// new = β·old + (1−β)·(sum/count + ε) for each entry, from per-entry sums.
    static func ema(_ old: UnsafePointer<Float>, _ sums: (Int) -> Double, count: Int, over: Int,
                            beta: Double, eps: Double, into out: UnsafeMutablePointer<Float>) {
        for e in 0..<count {
            out[e] = Float(beta * Double(old[e]) + (1 - beta) * (sums(e) / Double(over) + eps))
        }
    }

    /// factor[e] = (x[e] / mean(x))^−½ (or x[e]^−½ without the mean); false if
    /// any factor is not finite (a zero or overflowed statistic).
    private static func inverseRoots(_ x: UnsafePointer<Float>, count: Int, relativeToMean: Bool,
                                     into out: UnsafeMutablePointer<Float>) -> Bool {
        var mean = 1.0
        if relativeToMean {
            var sum = 0.0
            for e in 0..<count { sum += Double(x[e]) }
            mean = sum / Double(count)
        }
        return inverseRoots(x, count: count, mean: mean, into: out)
    }

    /// factor[e] = (x[e] / mean)^−½; false if any factor is not finite.
    static func inverseRoots(_ x: UnsafePointer<Float>, count: Int, mean: Double, into out: UnsafeMutablePointer<Float>) -> Bool {
        for e in 0..<count { out[e] = Float(1 / (Double(x[e]) / mean).squareRoot()) }
        return allWithin(out, count: count, bound: .greatestFiniteMagnitude)
    }

    /// Column sums of the chunks' partial rows, added in chunk order.
    func columnTotal(_ partials: UnsafePointer<Float>, _ j: Int) -> Double {
        var sum = 0.0
        for k in 0..<chunks { sum += Double(partials[k * n + j]) }
        return sum
    }

    // MARK: prepare (reads only)

    /// New statistics, factors, clipping scale and (low-rank) sketch MΩ.
    /// Returns false if the gradient or anything derived from it is not finite.
    func prepare(workspace: inout Workspace, pool: ThreadPool) throws(MlorcError) -> Bool {
        let m = m, n = n, chunks = chunks, g = grads
        let rowSums = try workspace.raw(.gradSketch, 8 * m).assumingMemoryBound(to: Double.self)
        let columns = try workspace.floats(.columnPartials, chunks * n)
        let buffers = try rowBuffers(&workspace), stride = rowStride, chunkStride = chunkStride

        // r', c' from the squares of G; a, b.
        pool.run(parts: chunks) { k in
            let part = columns + k * n
            part.initialize(repeating: 0, count: n)
            let gradBuffer = buffers + k * chunkStride + 2 * stride
            for i in partition(m, parts: chunks, part: k) {
                rowSums[i] = cameSquareSums(g.row(i, buffer: gradBuffer), n, columns: part)
            }
        }
        Self.ema(oldStats, { rowSums[$0] }, count: m, over: n, beta: hyper.beta2, eps: hyper.eps, into: newStats)
        Self.ema(oldStats + m, { columnTotal(columns, $0) }, count: n, over: m, beta: hyper.beta2, eps: hyper.eps,
                 into: newStats + m)
        guard allWithin(newStats, count: m + n, bound: .greatestFiniteMagnitude),
              Self.inverseRoots(newStats, count: m, relativeToMean: true, into: rowFactor),
              Self.inverseRoots(newStats + m, count: n, relativeToMean: false, into: colFactor) else { return false }

        // RMS(u) → the clipping scale 1 / max(1, RMS(u)/d).
        let a = rowFactor, b = colFactor
        pool.run(parts: chunks) { k in
            let gradBuffer = buffers + k * chunkStride + 2 * stride
            for i in partition(m, parts: chunks, part: k) {
                rowSums[i] = cameNormalisedSquareSum(g.row(i, buffer: gradBuffer), b, a[i], n)
            }
        }
        var total = 0.0
        for i in 0..<m { total += rowSums[i] }
        let rms = (total / Double(m * n)).squareRoot()
        guard rms.isFinite else { return false }
        let scale = Float(1 / max(1, rms / hyper.cameClip))
        scalars[0] = scale

        // The new M row by row: the instability's sums and, low-rank, Y = MΩ.
        let l = lowRank ? self.l : 0
        if isVector && !lowRank { return true }  // neither instability nor sketch
        let omega = try workspace.floats(.omega, max(l * n, 1))  // Ω as l x n row-major
        if lowRank {
            RandomizedSVD.drawTestMatrix(seed: hyper.seed, tensorID: header.tensorID, step: header.step + 1,
                                         count: l * n, into: omega)
        }
        let previous = previous, y = y, vector = isVector, w = weights, lowRank = lowRank
        let (beta1, oneMinusBeta1) = (beta1, oneMinusBeta1)
        let oneSweep = sweepsRank4, f = factors
        pool.run(parts: chunks) { k in
            let prevBuffer = buffers + k * chunkStride, row = prevBuffer + stride, part = columns + k * n
            let gradBuffer = prevBuffer + 2 * stride, weightBuffer = gradBuffer + g.bufferFloats
            part.initialize(repeating: 0, count: n)
            for i in partition(m, parts: chunks, part: k) {
                if oneSweep {
                    let swept = cameSketchRowRank4(f, row: i, g.row(i, buffer: gradBuffer), b, a[i] * scale, n,
                                                   beta1: beta1, oneMinusBeta1: oneMinusBeta1, omega: omega,
                                                   residualColumns: part,
                                                   weights: w.row(i, 0..<n, buffer: weightBuffer))
                    rowSums[i] = swept.residual
                    for c in 0..<4 { y[i + c * m] = swept.sketch[c] }
                    storeRowBound(i, swept.bound)
                    continue
                }
                let prev = previous.row(i, buffer: prevBuffer), gRow = g.row(i, buffer: gradBuffer)
                rowSums[i] = cameMomentRow(gRow, b, a[i] * scale, n, prev: prev, beta1: beta1,
                                           oneMinusBeta1: oneMinusBeta1, into: row,
                                           residualColumns: vector ? nil : part)
                dots(row, omega, count: l, n) { c, value in y[i + c * m] = value }
                // verify's inputs while the row is in cache (G and M were just read).
                storeRowBound(i, cameRowBound(gRow, b, w.row(i, 0..<n, buffer: weightBuffer),
                                              dense: lowRank ? nil : prev, n))
            }
        }
        if !vector {
            let stats = newStats + m + n
            Self.ema(oldStats + m + n, { rowSums[$0] }, count: m, over: n, beta: hyper.beta3, eps: hyper.eps2,
                     into: stats)
            Self.ema(oldStats + 2 * m + n, { columnTotal(columns, $0) }, count: n, over: m, beta: hyper.beta3,
                     eps: hyper.eps2, into: stats + m)
            guard allWithin(stats, count: m + n, bound: .greatestFiniteMagnitude),
                  Self.inverseRoots(stats, count: m, relativeToMean: true, into: confidenceRow),
                  Self.inverseRoots(stats + m, count: n, relativeToMean: false, into: confidenceCol) else { return false }
        }
        // As in LowRankStep: |Y| <= 1e24 keeps the factors this step writes far
        // below what StateFormat.checkFactors accepts.
        return !lowRank || allWithin(y, count: m * l, bound: 1e24)
    }

    // MARK: verify (reads)

    /// Before the commit: a bound, row by row, that proves the new moment
    /// and weights finite. With û = g·a_i·b_j·scale, M' = β1·M + (1−β1)·û and
    /// the update lr·M'·A_i·B_j (lr·M' for a vector), row i's bound takes
    /// max_j |g_ij|·b_j (small even where b_j is huge: b_j is large only
    /// where column j's gradients are tiny), max_j |M_ij| and max_j |w_ij|
    /// recorded by `prepare` (rowBoundsRecorded), else from one read-only
    /// scan of the row. An inconclusive bound (values near float's limit) refuses.
    func verify(lr: Double, context: StepContext, workspace: inout Workspace,
                rowBoundsRecorded: Bool) throws(MlorcError) -> String? {
        if let problem = OutputBounds.scalarsProblem(lr: lr, weightDecay: hyper.weightDecay) { return problem }
        let m = m, n = n, g = grads, w = weights, b = colFactor, a = rowFactor
        let scale = Double(scalars[0]), vector = isVector, lowRank = lowRank, f = lowRank ? factors : nil
        let r = header.rank, dense = prepared.payload
        var maxB: Float = 0
        if !vector { for j in 0..<n { maxB = max(maxB, confidenceCol[j]) } }
        let confidenceRow = confidenceRow, beta1 = hyper.beta1, decay = lr * hyper.weightDecay
        let parts = min(context.parts(for: m * n), m)
        let partStride = g.bufferFloats + w.bufferFloats
        let buffers = try workspace.floats(.threadScratch, max(parts * partStride, 1))
        // Per part: the bounds of the new weights and of the new moment.
        var worst = [SIMD2<Double>](repeating: .zero, count: parts)
        worst.withUnsafeMutableBufferPointer { out in
            context.pool.run(parts: parts) { part in
                var bound = SIMD2<Double>.zero
                let gradBuffer = buffers + part * partStride, weightBuffer = gradBuffer + g.bufferFloats
                for i in partition(m, parts: parts, part: part) {
                    let row = rowBoundsRecorded ? recordedRowBound(i)
                        : cameRowBound(g.row(i, buffer: gradBuffer), b, w.row(i, 0..<n, buffer: weightBuffer),
                                       dense: lowRank ? nil : dense + i * n, n)
                    let wmax = OutputBounds.magnitude(ofBits: row.weightBits)
                    var previous = OutputBounds.magnitude(ofBits: row.momentBits)
                    if let f {
                        var sum = 0.0
                        for k in 0..<r { sum += abs(Double(f.u[i * r + k])) * Double(f.s[k]) }
                        previous = sum * 1.001  // |Vt| <= 1.001 (validated)
                    }
                    let u = Double(row.gradTimesB) * Double(a[i]) * scale
                    let moment = beta1 * previous + (1 - beta1) * u
                    let confidence = vector ? 1 : Double(confidenceRow[i]) * Double(maxB)
                    let weights = wmax * (1 + decay) + lr * moment * confidence
                    // NaN compares false: a non-finite input leaves the bound infinite.
                    bound = max(weights, moment) <= .greatestFiniteMagnitude
                        ? SIMD2(max(bound.x, weights), max(bound.y, moment)) : SIMD2(repeating: .infinity)
                }
                out[part] = bound
            }
        }
        let bound = worst.reduce(SIMD2<Double>.zero) { SIMD2(max($0.x, $1.x), max($0.y, $1.y)) }
        // The weights are bounded in the parameter's type (f16: 65504).
        return bound.x <= w.stored.provenBound && max(bound.x, bound.y) <= OutputBounds.proven
            ? nil : "the new weights or moment could exceed \(w.stored.rangeName)'s range (row bound \(max(bound.x, bound.y)), lr \(lr))"
    }

    // MARK: commit (writes)

    /// Writes the weights, the moment (in place, or new factors) and the statistics.
    func commit(lr: Double, workspace: inout Workspace, pool: ThreadPool) throws(MlorcError) {
        let m = m, n = n, chunks = chunks, l = lowRank ? self.l : 0, g = grads, w = weights
        let a = rowFactor, b = colFactor, scale = scalars[0], previous = previous, y = y
        let (beta1, oneMinusBeta1) = (beta1, oneMinusBeta1)
        let buffers = try rowBuffers(&workspace), stride = rowStride, chunkStride = chunkStride
        let partials = try workspace.floats(.columnPartials, max(chunks * l * n, 1))
        let reduced = try workspace.floats(.staging, max(l * n, 1))  // Σ_k partials, l x n row-major

        /// For each row i in order: its new M row (in place for dense storage),
        /// handed to `body` with the chunk's partial panel (l x n) and its
        /// weight row buffer (half precision).
        func forEachRow(inPlace: Bool,
                        _ body: (Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void) {
            pool.run(parts: chunks) { k in
                let prevBuffer = buffers + k * chunkStride, part = partials + k * l * n
                let gradBuffer = prevBuffer + 2 * stride, weightBuffer = gradBuffer + g.bufferFloats
                part.initialize(repeating: 0, count: l * n)
                for i in partition(m, parts: chunks, part: k) {
                    let prev = previous.row(i, buffer: prevBuffer)
                    let row = inPlace ? prev : prevBuffer + stride
                    _ = cameMomentRow(g.row(i, buffer: gradBuffer), b, a[i] * scale, n, prev: prev, beta1: beta1,
                                      oneMinusBeta1: oneMinusBeta1, into: row, residualColumns: nil)
                    body(i, row, part, weightBuffer)
                }
            }
            reducePartials()
        }

        /// reduced = Σ_k partials of chunk k, in chunk order.
        func reducePartials() {
            for e in 0..<(l * n) {
                var sum: Float = 0
                for k in 0..<chunks { sum += partials[k * l * n + e] }
                reduced[e] = sum
            }
        }

        if lowRank {
            // Power iterations: Z = MᵀQ (n x l column-major = l x n row-major), Y = M·orth(Z).
            try RandomizedSVD.powerIterations(
                [y], rows: m, cols: n, width: l, count: hyper.powerIterations, workspace: &workspace,
                transposeProducts: { _ throws(MlorcError) in
                    forEachRow(inPlace: false) { i, row, part, _ in
                        axpys(row, into: part, count: l, n) { y[i + $0 * m] }
                    }
                    return [reduced]
                },
                products: { _, _ throws(MlorcError) in
                    pool.run(parts: chunks) { k in
                        let prevBuffer = buffers + k * chunkStride, row = prevBuffer + stride
                        let gradBuffer = prevBuffer + 2 * stride
                        for i in partition(m, parts: chunks, part: k) {
                            _ = cameMomentRow(g.row(i, buffer: gradBuffer), b, a[i] * scale, n, prev: previous.row(i, buffer: prevBuffer),
                                              beta1: beta1, oneMinusBeta1: oneMinusBeta1, into: row, residualColumns: nil)
                            dots(row, reduced, count: l, n) { c, value in y[i + c * m] = value }
                        }
                    }
                })
        }

        // The update pass: W, the dense moment, or B = QᵀM for the factors.
        let decayRate = Float(lr * hyper.weightDecay), step = Float(lr)
        let confidence: UnsafeMutablePointer<Float>? = isVector ? nil : confidenceCol
        let confidenceRow = confidenceRow, vector = isVector
        if sweepsRank4, let colFactor = confidence {
            let f = factors
            pool.run(parts: chunks) { k in
                let gradBuffer = buffers + k * chunkStride + 2 * stride, weightBuffer = gradBuffer + g.bufferFloats
                let part = partials + k * l * n
                part.initialize(repeating: 0, count: l * n)
                for i in partition(m, parts: chunks, part: k) {
                    let weightRow = w.fp32.map { $0 + i * n } ?? w.row(i, 0..<n, buffer: weightBuffer)
                    cameUpdateRowRank4(f, row: i, g.row(i, buffer: gradBuffer), b, a[i] * scale, n, beta1: beta1,
                                       oneMinusBeta1: oneMinusBeta1, weights: weightRow, decayRate: decayRate,
                                       step: step * confidenceRow[i], colFactor: colFactor,
                                       q: SIMD4(y[i], y[i + m], y[i + 2 * m], y[i + 3 * m]), panel: part)
                    if w.fp32 == nil { w.finish(i, 0..<n, weightRow) }
                }
            }
            reducePartials()
        } else if let w = w.fp32 {  // fp32: the rows in place
            forEachRow(inPlace: !lowRank) { i, row, part, _ in
                cameUpdateRow(w + i * n, row, n, decayRate: decayRate, step: vector ? step : step * confidenceRow[i],
                              colFactor: confidence)
                axpys(row, into: part, count: l, n) { y[i + $0 * m] }
            }
        } else {
            forEachRow(inPlace: !lowRank) { i, row, part, weightBuffer in
                let weightRow = w.row(i, 0..<n, buffer: weightBuffer)
                cameUpdateRow(weightRow, row, n, decayRate: decayRate, step: vector ? step : step * confidenceRow[i],
                              colFactor: confidence)
                w.finish(i, 0..<n, weightRow)
                axpys(row, into: part, count: l, n) { y[i + $0 * m] }
            }
        }
        if lowRank {
            try RandomizedSVD.storeLeadingTriplets(transposedB: reduced, q: y, rows: m, cols: n, width: l,
                                                   rank: header.rank, into: factors, workspace: &workspace)
        }
        oldStats.update(from: newStats, count: Self.statisticsFloats(rows: m, cols: n, shapeRows: header.shapeRows))
    }
}
