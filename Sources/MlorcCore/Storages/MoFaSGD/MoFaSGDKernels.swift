import CVectorMath

/// The streaming loops of a MoFaSGD step, each reading a gradient or weight
/// row once per 8-column chunk for all k factor columns. Every output element
/// is summed in the same order as a plain loop over rows (i ascending) or
/// columns (8 lanes, then the lane sum), so results do not depend on how rows
/// or columns are split between threads.
enum MoFaSGDKernels {
    /// out[a] = Σ_j g[j]·vt[a·n + j] for a in 0..<k (GV for one row of G):
    /// four factor rows per sweep over g with the sums in registers (a
    /// remainder of 1 to 3 in one more sweep), each summed in j order.
    /// Returns the largest magnitude bits of g[0..<n] (NaN above +inf), taken
    /// in the first sweep: the step's gradient check without a pass of its own.
    @discardableResult
    static func rowTimesFactors(_ g: UnsafePointer<Float>, _ vt: UnsafePointer<Float>, k: Int, n: Int,
                                into out: (Int, Float) -> Void) -> Int32 {
        var bits = SIMD8<Int32>(repeating: 0)
        var a0 = 0
        while a0 + 4 <= k {
            let v = vt + a0 * n
            var s0 = SIMD8<Float>(repeating: 0), s1 = s0, s2 = s0, s3 = s0
            eachChunk(n) { j, c in
                if c == 8 && a0 == 0 { prefetchF32(g, j) }
                let x = load8(g + j, c)  // lanes past c load as 0
                if a0 == 0 { bits = mlorc_max_magnitude_bits8(bits, x) }
                s0 = s0.addingProduct(x, load8(v + j, c))
                s1 = s1.addingProduct(x, load8(v + n + j, c))
                s2 = s2.addingProduct(x, load8(v + 2 * n + j, c))
                s3 = s3.addingProduct(x, load8(v + 3 * n + j, c))
            }
            out(a0, s0.sum()); out(a0 + 1, s1.sum()); out(a0 + 2, s2.sum()); out(a0 + 3, s3.sum())
            a0 += 4
        }
        if a0 < k {
            let w = k - a0, v = vt + a0 * n
            var s = Accumulators4()
            eachChunk(n) { j, c in
                let x = load8(g + j, c)
                if a0 == 0 { bits = mlorc_max_magnitude_bits8(bits, x) }
                for b in 0..<w { s[b] = s[b].addingProduct(x, load8(v + b * n + j, c)) }
            }
            for b in 0..<w { out(a0 + b, s[b].sum()) }
        }
        return bits.max()
    }

    /// x[b·n + j] = Σ_i u[i·k + b]·g[i·n + j] for j in `cols` (GᵀU, k columns
    /// of length n), rows taken four at a time to cut the traffic on x.
    /// With `accumulate`, adds to x instead (half precision calls it per
    /// block of four widened rows: the same order of sums).
    static func transposedProduct(_ g: UnsafePointer<Float>, _ u: UnsafePointer<Float>, rows m: Int, k: Int, n: Int,
                                  cols: Range<Int>, into x: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
        if !accumulate { for b in 0..<k { for j in cols { x[b * n + j] = 0 } } }
        if k == 4 { return transposedProduct4(g, u, rows: m, n: n, cols: cols, into: x) }
        var i = 0
        while i < m {
            let rows = min(4, m - i)
            var j = cols.lowerBound
            while j < cols.upperBound {
                let c = min(8, cols.upperBound - j)
                for b in 0..<k {
                    var acc = load8(x + b * n + j, c)
                    for d in 0..<rows { acc = acc.addingProduct(u[(i + d) * k + b], load8(g + (i + d) * n + j, c)) }
                    store8(acc, x + b * n + j, c)
                }
                j += 8
            }
            i += rows
        }
    }

    /// transposedProduct for k = 4 (rank 4), adding to x: per 8 columns the
    /// four rows of x are loaded before any is stored (rows n floats apart
    /// share their low address bits when n is a multiple of 1024, and a load
    /// after a store 4 KiB away waits for it), and each block of four rows'
    /// u entries is kept as 8-lane splats, read as FMA operands. The sums
    /// are the general loop's, in the same order.
    private static func transposedProduct4(_ g: UnsafePointer<Float>, _ u: UnsafePointer<Float>, rows m: Int, n: Int,
                                           cols: Range<Int>, into x: UnsafeMutablePointer<Float>) {
        withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 16) { splat in
            let x0 = x, x1 = x + n, x2 = x + 2 * n, x3 = x + 3 * n
            // Rows d < rows of the block at row i into x's columns j..<j + c.
            @inline(__always) func chunk(_ i: Int, _ rows: Int, _ j: Int, _ c: Int) {
                var y0 = load8(x0 + j, c), y1 = load8(x1 + j, c), y2 = load8(x2 + j, c), y3 = load8(x3 + j, c)
                for d in 0..<rows {
                    let row = g + (i + d) * n
                    if c == 8 { prefetchF32(row, j) }
                    let gv = load8(row + j, c)
                    y0 = y0.addingProduct(splat[d * 4], gv)
                    y1 = y1.addingProduct(splat[d * 4 + 1], gv)
                    y2 = y2.addingProduct(splat[d * 4 + 2], gv)
                    y3 = y3.addingProduct(splat[d * 4 + 3], gv)
                }
                store8(y0, x0 + j, c); store8(y1, x1 + j, c); store8(y2, x2 + j, c); store8(y3, x3 + j, c)
            }
            // Full chunks with literal counts (plain vector moves, no per-load
            // test), then the partial last one; blocks of four rows with a
            // literal row count, then the last 1 to 3 rows.
            let fullEnd = cols.lowerBound + (cols.count & ~7)
            var i = 0
            while i < m {
                let rows = min(4, m - i)
                for d in 0..<rows { for b in 0..<4 { splat[d * 4 + b] = SIMD8(repeating: u[(i + d) * 4 + b]) } }
                var j = cols.lowerBound
                if rows == 4 {
                    while j < fullEnd { chunk(i, 4, j, 8); j &+= 8 }
                } else {
                    while j < fullEnd { chunk(i, rows, j, 8); j &+= 8 }
                }
                if j < cols.upperBound { chunk(i, rows, j, cols.upperBound - j) }
                i += rows
            }
        }
    }

    /// transposedProduct of a gradient in another element type: blocks of
    /// four rows widened into `buffer` (4·n floats).
    static func transposedProduct(_ grad: ElementRows, _ u: UnsafePointer<Float>, rows m: Int, k: Int, n: Int,
                                  cols: Range<Int>, into x: UnsafeMutablePointer<Float>, buffer: UnsafeMutablePointer<Float>) {
        for b in 0..<k { for j in cols { x[b * n + j] = 0 } }
        var i = 0
        while i < m {
            let rows = min(4, m - i)
            for d in 0..<rows { _ = grad.row(i + d, cols, buffer: buffer + d * n) }
            transposedProduct(buffer, u + i * k, rows: rows, k: k, n: n, cols: cols, into: x, accumulate: true)
            i += rows
        }
    }

    /// row ← row − (decayRate·row + Σ_a coef[a]·vt[a·n + :]) (the weight update
    /// of one row; the decay as a rate, see MomentRule.updatedWeights).
    static func updateRow(_ row: UnsafeMutablePointer<Float>, decayRate: Float, coef: UnsafePointer<Float>,
                          _ vt: UnsafePointer<Float>, k: Int, n: Int) {
        @inline(__always) func chunk(_ j: Int, _ c: Int) {
            let w = load8(row + j, c)
            var step = w * decayRate
            for a in 0..<k where coef[a] != 0 { step = step.addingProduct(coef[a], load8(vt + a * n + j, c)) }
            store8(w - step, row + j, c)
        }
        // Full chunks with a literal count (plain vector moves), then the partial last one.
        eachChunk(n, chunk)
    }
}
