/// The two streaming passes of a low-rank (MLorc) step (DESIGN.md §4). Neither
/// materialises a full moment: each rebuilds the previous moments of one row
/// segment from their factors, applies the rule, and folds the new moments
/// straight into thin products with the sketch.
///
/// Row passes split rows between threads and column passes split columns, so
/// each output element is accumulated by one thread in one fixed order: the
/// result is bit-identical for any thread count.

/// One moment's factors inside a state: M̃ = U · diag(s) · Vt.
struct Factors {
    let u: UnsafeMutablePointer<Float>   // rows x rank, row-major
    let s: UnsafeMutablePointer<Float>   // rank
    let vt: UnsafeMutablePointer<Float>  // rank x cols, row-major
}

/// Two of anything, one per moment slot (rules have one or two moments).
struct PerMoment<T> {
    var first: T
    var second: T
    init(_ first: T, _ second: T) { self.first = first; self.second = second }
    init(repeating value: T) { first = value; second = value }
    @inline(__always) subscript(k: Int) -> T {
        get { k == 0 ? first : second }
        set { if k == 0 { first = newValue } else { second = newValue } }
    }
}

/// One low-rank tensor of a step.
struct LowRankTensor {
    let rows: Int, cols: Int, rank: Int, sketchWidth: Int
    let weights: UnsafeMutablePointer<Float>
    let grad: UnsafePointer<Float>
    let factors: PerMoment<Factors>
}

/// Per-thread scratch of the passes, in floats (a multiple of 16, so that
/// consecutive threads' blocks stay 64-byte aligned): 4·l SIMD accumulators,
/// then 2·rank coefficients, then 2·l entries of Q's current row.
func passScratchFloats(rank: Int, sketchWidth l: Int) -> Int {
    (32 * l + 2 * rank + 2 * l + 15) / 16 * 16
}

private struct PassScratch {
    let acc: UnsafeMutablePointer<SIMD8<Float>>
    let coef: UnsafeMutablePointer<Float>
    let qRow: UnsafeMutablePointer<Float>
    init(_ base: UnsafeMutablePointer<Float>, rank: Int, sketchWidth l: Int) {
        acc = UnsafeMutableRawPointer(base).assumingMemoryBound(to: SIMD8<Float>.self)
        coef = base + 32 * l
        qRow = coef + 2 * rank
    }
}

/// Rebuilds the previous value of moment k at row `row`, columns j..j+7, and
/// for non-negative moments applies the fix: negative entries become `c`.
@inline(__always)
private func previousMoment(_ t: LowRankTensor, _ k: Int, coef: UnsafePointer<Float>,
                            _ j: Int, _ count: Int) -> SIMD8<Float> {
    let vt = t.factors[k].vt
    var p = SIMD8<Float>(repeating: 0)
    for a in 0..<t.rank {
        p += coef[a] * load8(vt + a * t.cols + j, count)
    }
    return p
}

/// coef[k·rank + a] = U_k[row, a] · s_k[a].
@inline(__always)
private func loadCoefficients(_ t: LowRankTensor, momentCount: Int, row: Int, into coef: UnsafeMutablePointer<Float>) {
    for k in 0..<momentCount {
        let f = t.factors[k]
        for a in 0..<t.rank { coef[k * t.rank + a] = f.u[row * t.rank + a] * f.s[a] }
    }
}

/// Row pass: y_k[i, b] = Σ_j A_k[i, j] · sketch_k[b, j] for the rows in
/// `rows`, where A_k is the new moment k built from the fixed previous moment.
/// With `negatives` given (the first pass, c = 0), also accumulates
/// yNeg_k[i, b] = Σ_j [R_k < 0] · sketch_k[b, j] and the per-row sum and count
/// of the negative entries of R_k. Returns false if a gradient entry is not
/// finite. y, yNeg are rows x l column-major; sketch is l x cols row-major.
func rowPass<Rule: MomentRule>(
    _ rule: Rule, _ t: LowRankTensor, rows: Range<Int>,
    sketch: PerMoment<UnsafePointer<Float>>, c: PerMoment<Float>,
    y: PerMoment<UnsafeMutablePointer<Float>>,
    negatives: (yNeg: UnsafeMutablePointer<Float>, rowSum: UnsafeMutablePointer<Double>,
                rowCount: UnsafeMutablePointer<Double>)?,
    scratch: UnsafeMutablePointer<Float>
) -> Bool {
    let mc = Rule.momentCount, l = t.sketchWidth, n = t.cols
    let parts = PassScratch(scratch, rank: t.rank, sketchWidth: l)
    let coef = parts.coef, acc = parts.acc, accNeg = parts.acc + 2 * l
    var finite = true
    for i in rows {
        loadCoefficients(t, momentCount: mc, row: i, into: coef)
        acc.initialize(repeating: .zero, count: 4 * l)
        var probe = SIMD8<Float>(repeating: 0)
        var negSum = SIMD8<Float>(repeating: 0), negCount = SIMD8<Float>(repeating: 0)
        var j = 0
        while j < n {
            let count = min(8, n - j)
            let g = load8(t.grad + i * n + j, count)
            probe += nonFiniteProbe(g)
            var p = PerMoment<SIMD8<Float>>(repeating: .zero)
            var negMask = SIMD8<Float>(repeating: 0)
            for k in 0..<mc {
                p[k] = previousMoment(t, k, coef: coef + k * t.rank, j, count)
                if Rule.isNonNegative(k) {
                    let isNeg = p[k] .< 0
                    if negatives != nil {
                        negSum -= SIMD8<Float>(repeating: 0).replacing(with: p[k], where: isNeg)
                        negMask = negMask.replacing(with: 1, where: isNeg)
                    }
                    p[k] = p[k].replacing(with: c[k], where: isNeg)
                }
            }
            _ = rule.apply(&p.first, &p.second, g)
            negCount += negMask
            for k in 0..<mc {
                let s = sketch[k]
                for b in 0..<l {
                    let sb = load8(s + b * n + j, count)
                    acc[k * l + b] += p[k] * sb
                    if negatives != nil && Rule.isNonNegative(k) {
                        accNeg[k * l + b] += negMask * sb
                    }
                }
            }
            j += 8
        }
        if probe.sum() != 0 || probe.sum().isNaN { finite = false }
        let m = t.rows
        for k in 0..<mc {
            for b in 0..<l { y[k][i + b * m] = acc[k * l + b].sum() }
        }
        if let negatives {
            for k in 0..<mc where Rule.isNonNegative(k) {
                for b in 0..<l { negatives.yNeg[i + b * m] = accNeg[k * l + b].sum() }
            }
            negatives.rowSum[i] = Double(negSum.sum())
            negatives.rowCount[i] = Double(negCount.sum())
        }
    }
    return finite
}

/// Column pass over columns `cols` (a multiple of 8 from its start):
/// out_k[b, j] += Σ_i q_k[i, b] · A_k[i, j] for every row i in order, where A_k
/// is the new moment k built from the previous one fixed with c_k. With
/// `updateWeights` it also writes W ← W·(1 − lr·λ) − stepSize·direction.
/// q is rows x l column-major; out is l x cols row-major.
func columnPass<Rule: MomentRule>(
    _ rule: Rule, _ t: LowRankTensor, cols: Range<Int>,
    q: PerMoment<UnsafePointer<Float>>, c: PerMoment<Float>,
    out: PerMoment<UnsafeMutablePointer<Float>>, updateWeights: Bool,
    scratch: UnsafeMutablePointer<Float>
) {
    let mc = Rule.momentCount, l = t.sketchWidth, n = t.cols, m = t.rows
    let parts = PassScratch(scratch, rank: t.rank, sketchWidth: l)
    let coef = parts.coef, qRow = parts.qRow
    let blockWidth = 256  // keeps the factor, output and weight segments in L1/L2
    var blockStart = cols.lowerBound
    while blockStart < cols.upperBound {
        let blockEnd = min(blockStart + blockWidth, cols.upperBound)
        for i in 0..<m {
            loadCoefficients(t, momentCount: mc, row: i, into: coef)
            for k in 0..<mc { for b in 0..<l { qRow[k * l + b] = q[k][i + b * m] } }
            var j = blockStart
            while j < blockEnd {
                let count = min(8, blockEnd - j)
                let g = load8(t.grad + i * n + j, count)
                var p = PerMoment<SIMD8<Float>>(repeating: .zero)
                for k in 0..<mc {
                    p[k] = previousMoment(t, k, coef: coef + k * t.rank, j, count)
                    if Rule.isNonNegative(k) { p[k] = p[k].replacing(with: c[k], where: p[k] .< 0) }
                }
                let direction = rule.apply(&p.first, &p.second, g)
                if updateWeights {
                    let w = t.weights + i * n + j
                    store8(load8(w, count) * rule.decayFactor - rule.stepSize * direction, w, count)
                }
                for k in 0..<mc {
                    for b in 0..<l {
                        let o = out[k] + b * n + j
                        store8(load8(o, count) + qRow[k * l + b] * p[k], o, count)
                    }
                }
                j += 8
            }
        }
        blockStart = blockEnd
    }
}
