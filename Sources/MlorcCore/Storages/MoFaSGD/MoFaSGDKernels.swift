/// The streaming loops of a MoFaSGD step, each reading a gradient or weight
/// row once per 8-column chunk for all k factor columns. Every output element
/// is summed in the same order as a plain loop over rows (i ascending) or
/// columns (8 lanes, then the lane sum), so results do not depend on how rows
/// or columns are split between threads.
enum MoFaSGDKernels {
    /// out[a] = Σ_j g[j]·vt[a·n + j] for a in 0..<k (GV for one row of G).
    static func rowTimesFactors(_ g: UnsafePointer<Float>, _ vt: UnsafePointer<Float>, k: Int, n: Int,
                                into out: (Int, Float) -> Void) {
        withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: k) { acc in
            for a in 0..<k { acc[a] = .zero }
            var j = 0
            while j < n {
                let c = min(8, n - j), x = load8(g + j, c)
                for a in 0..<k { acc[a] = acc[a].addingProduct(x, load8(vt + a * n + j, c)) }
                j += 8
            }
            for a in 0..<k { out(a, acc[a].sum()) }
        }
    }

    /// x[b·n + j] = Σ_i u[i·k + b]·g[i·n + j] for j in `cols` (GᵀU, k columns
    /// of length n), rows taken four at a time to cut the traffic on x.
    /// With `accumulate`, adds to x instead (half precision calls it per
    /// block of four widened rows: the same order of sums).
    static func transposedProduct(_ g: UnsafePointer<Float>, _ u: UnsafePointer<Float>, rows m: Int, k: Int, n: Int,
                                  cols: Range<Int>, into x: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
        if !accumulate { for b in 0..<k { for j in cols { x[b * n + j] = 0 } } }
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
        var j = 0
        while j < n {
            let c = min(8, n - j)
            let w = load8(row + j, c)
            var step = w * decayRate
            for a in 0..<k where coef[a] != 0 { step = step.addingProduct(coef[a], load8(vt + a * n + j, c)) }
            store8(w - step, row + j, c)
            j += 8
        }
    }
}
