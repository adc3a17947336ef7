/// The two streaming passes of a low-rank (MLorc) step (DESIGN.md §4). Neither
/// materialises a full moment: each rebuilds the previous moments of one 8-wide
/// row segment from their factors in registers, applies the rule, and folds
/// the new moments straight into thin products with the sketch.
///
/// Row passes split rows between threads and column passes split columns, so
/// each output element is accumulated by one thread in one fixed order: the
/// result is bit-identical for any thread count.
///
/// Index arithmetic uses wrapping operators: every index is bounded by sizes
/// validated at the C boundary (rows, cols < 2^31), so overflow checks in the
/// inner loops would only cost time.

/// One moment's factors inside a state: M̃ = U · diag(s) · Vt.
struct Factors {
    let u: UnsafeMutablePointer<Float>   // rows x rank, row-major
    let s: UnsafeMutablePointer<Float>   // rank
    let vt: UnsafeMutablePointer<Float>  // rank x cols, Panel layout
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
/// consecutive threads' blocks stay 64-byte aligned): 2·rank coefficients,
/// then 2·l entries of Q's current row.
func passScratchFloats(rank: Int, sketchWidth l: Int) -> Int {
    (2 * rank + 2 * l + 15) / 16 * 16
}

private struct PassScratch {
    let coef: UnsafeMutablePointer<Float>
    let qRow: UnsafeMutablePointer<Float>
    init(_ base: UnsafeMutablePointer<Float>, rank: Int) {
        coef = base
        qRow = base + 2 * rank
    }
}

/// A sketch-column count known at compile time, so that the accumulators of
/// a block live in registers (the kernels are specialised per width).
protocol BlockWidth { static var value: Int { get } }
enum Width1: BlockWidth { static var value: Int { 1 } }
enum Width2: BlockWidth { static var value: Int { 2 } }
enum Width3: BlockWidth { static var value: Int { 3 } }
enum Width4: BlockWidth { static var value: Int { 4 } }

/// Up to four SIMD accumulators addressed by a constant index.
struct Accumulators4 {
    var a0 = SIMD8<Float>(repeating: 0), a1 = SIMD8<Float>(repeating: 0)
    var a2 = SIMD8<Float>(repeating: 0), a3 = SIMD8<Float>(repeating: 0)
    @inline(__always) subscript(b: Int) -> SIMD8<Float> {
        get { b == 0 ? a0 : b == 1 ? a1 : b == 2 ? a2 : a3 }
        set { if b == 0 { a0 = newValue } else if b == 1 { a1 = newValue } else if b == 2 { a2 = newValue } else { a3 = newValue } }
    }
}

/// 8 floats at p; with `full` false only `count` lanes are read (the rest are 0).
@inline(__always)
private func load(_ p: UnsafePointer<Float>, _ full: Bool, _ count: Int) -> SIMD8<Float> {
    full ? UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) : load8(p, count)
}

@inline(__always)
private func store(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ full: Bool, _ count: Int) {
    if full { UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self) } else { store8(v, p, count) }
}

/// Σ_a coef[a] · Vt[a, j..j+7] for a panel block (rows `stride` apart),
/// four ranks per iteration.
@inline(__always)
private func rebuild(_ coef: UnsafePointer<Float>, _ block: UnsafePointer<Float>, stride: Int, rank: Int,
                     _ full: Bool, _ count: Int) -> SIMD8<Float> {
    var s0 = SIMD8<Float>(repeating: 0), s1 = SIMD8<Float>(repeating: 0)
    var a = 0
    while a &+ 4 <= rank {
        s0 = s0.addingProduct(coef[a], load(block + a &* stride, full, count))
        s1 = s1.addingProduct(coef[a &+ 1], load(block + (a &+ 1) &* stride, full, count))
        s0 = s0.addingProduct(coef[a &+ 2], load(block + (a &+ 2) &* stride, full, count))
        s1 = s1.addingProduct(coef[a &+ 3], load(block + (a &+ 3) &* stride, full, count))
        a &+= 4
    }
    while a < rank {
        s0 = s0.addingProduct(coef[a], load(block + a &* stride, full, count))
        a &+= 1
    }
    return s0 + s1
}

/// The previous moments at columns j..j+7 of one row rebuilt from their
/// factors (coef = U[row, :]·diag(s) per moment), with the non-negative moment
/// fixed: its entries below zero become c. Also returns that moment's raw
/// values and the mask of its negative entries (zero / all-false for rules
/// without one).
@inline(__always)
private func previousMoments<Rule: MomentRule>(_: Rule.Type, _ t: LowRankTensor, _ coef: UnsafePointer<Float>,
                                               _ c: PerMoment<Float>, _ j: Int, _ full: Bool, _ count: Int)
    -> (fixed: PerMoment<SIMD8<Float>>, raw: SIMD8<Float>, negative: SIMDMask<SIMD8<Int32>>) {
    var p = PerMoment<SIMD8<Float>>(repeating: .zero)
    var raw = SIMD8<Float>(repeating: 0)
    var negative = SIMDMask<SIMD8<Int32>>(repeating: false)
    for k in 0..<Rule.momentCount {
        let (block, stride) = Panel.block(t.factors[k].vt, col: j, rows: t.rank, cols: t.cols)
        var sum = rebuild(coef + k &* t.rank, block, stride: stride, rank: t.rank, full, count)
        if Rule.isNonNegative(k) {
            raw = sum
            negative = sum .< 0
            sum = sum.replacing(with: c[k], where: negative)
        }
        p[k] = sum
    }
    return (p, raw, negative)
}

/// coef[k·rank + a] = U_k[row, a] · s_k[a].
@inline(__always)
private func loadCoefficients(_ t: LowRankTensor, momentCount: Int, row: Int, into coef: UnsafeMutablePointer<Float>) {
    for k in 0..<momentCount {
        let f = t.factors[k]
        for a in 0..<t.rank { coef[k &* t.rank &+ a] = f.u[row &* t.rank &+ a] * f.s[a] }
    }
}

/// Row pass: y_k[i, b] = Σ_j A_k[i, j] · sketch_k[b, j] for the rows in
/// `rows`, where A_k is the new moment k built from the fixed previous moment.
/// With `negatives` given (the first pass, c = 0), also accumulates
/// yNeg[i, b] = Σ_j [R < 0] · sketch[b, j] for the non-negative moment and the
/// per-row sum and count of its negative entries. Returns false if a gradient
/// entry is not finite. y, yNeg are rows x l column-major; sketches are l x cols
/// panels.
func rowPass<Rule: MomentRule>(
    _ rule: Rule, _ t: LowRankTensor, rows: Range<Int>,
    sketch: PerMoment<UnsafePointer<Float>>, c: PerMoment<Float>,
    y: PerMoment<UnsafeMutablePointer<Float>>,
    negatives: (yNeg: UnsafeMutablePointer<Float>, rowSum: UnsafeMutablePointer<Double>,
                rowCount: UnsafeMutablePointer<Double>)?,
    scratch: UnsafeMutablePointer<Float>
) -> Bool {
    let coef = PassScratch(scratch, rank: t.rank).coef
    var finite = true
    for i in rows {
        loadCoefficients(t, momentCount: Rule.momentCount, row: i, into: coef)
        // Sketch columns in blocks of up to 4: each block is one sweep of the
        // row with its accumulators in registers.
        var b0 = 0
        while b0 < t.sketchWidth {
            let width = min(4, t.sketchWidth - b0)
            let args = RowBlock(t: t, row: i, b0: b0, coef: coef, sketch: sketch, c: c, y: y,
                                negatives: negatives, firstBlock: b0 == 0)
            let ok: Bool
            switch width {
            case 1: ok = rowBlock(rule, args, Width1.self)
            case 2: ok = rowBlock(rule, args, Width2.self)
            case 3: ok = rowBlock(rule, args, Width3.self)
            default: ok = rowBlock(rule, args, Width4.self)
            }
            finite = finite && ok
            b0 += width
        }
    }
    return finite
}

/// Arguments of one row sweep for sketch columns b0 ..< b0 + W.
private struct RowBlock {
    let t: LowRankTensor, row: Int, b0: Int
    let coef: UnsafePointer<Float>
    let sketch: PerMoment<UnsafePointer<Float>>, c: PerMoment<Float>
    let y: PerMoment<UnsafeMutablePointer<Float>>
    let negatives: (yNeg: UnsafeMutablePointer<Float>, rowSum: UnsafeMutablePointer<Double>,
                    rowCount: UnsafeMutablePointer<Double>)?
    let firstBlock: Bool
}

private func rowBlock<Rule: MomentRule, W: BlockWidth>(_ rule: Rule, _ a: RowBlock, _: W.Type) -> Bool {
    let t = a.t, n = t.cols, l = t.sketchWidth
    let gradRow = t.grad + a.row &* n
    let hasNonNegative = Rule.momentCount > 1 && Rule.isNonNegative(1)
    let trackNegatives = hasNonNegative && a.negatives != nil
    let countNegatives = trackNegatives && a.firstBlock
    let sharedSketch = a.sketch[0] == a.sketch[1]
    var acc = PerMoment(Accumulators4(), Accumulators4())
    var accNeg = Accumulators4()
    var probe = SIMD8<Float>(repeating: 0)
    var negSum = SIMD8<Float>(repeating: 0), negCount = SIMD8<Float>(repeating: 0)
    let zero = SIMD8<Float>(repeating: 0)

    @inline(__always) func chunk(_ j: Int, _ full: Bool, _ count: Int) {
        let g = load(gradRow + j, full, count)
        if a.firstBlock { probe += nonFiniteProbe(g) }
        var (p, raw, negative) = previousMoments(Rule.self, t, a.coef, a.c, j, full, count)
        // Lanes past `count` hold 0: never negative, and they meet zero sketch entries.
        if countNegatives {
            negSum -= zero.replacing(with: raw, where: negative)
            negCount += zero.replacing(with: 1, where: negative)
        }
        _ = rule.apply(&p.first, &p.second, g)
        let (s0Block, stride) = Panel.block(UnsafeMutablePointer(mutating: a.sketch[0]), col: j, rows: l, cols: n)
        let (s1Block, _) = Panel.block(UnsafeMutablePointer(mutating: a.sketch[1]), col: j, rows: l, cols: n)
        for b in 0..<W.value {
            let row = a.b0 &+ b
            let s0 = load(s0Block + row &* stride, full, count)
            acc[0][b] = acc[0][b].addingProduct(p[0], s0)
            if Rule.momentCount > 1 {
                let s1 = sharedSketch ? s0 : load(s1Block + row &* stride, full, count)
                acc[1][b] = acc[1][b].addingProduct(p[1], s1)
                if trackNegatives { accNeg[b] += zero.replacing(with: s1, where: negative) }
            }
        }
    }

    let fullEnd = n & ~7
    var j = 0
    while j < fullEnd { chunk(j, true, 8); j &+= 8 }
    if j < n { chunk(j, false, n &- j) }

    let m = t.rows, i = a.row
    for k in 0..<Rule.momentCount {
        for b in 0..<W.value { a.y[k][i + (a.b0 + b) * m] = acc[k][b].sum() }
    }
    if trackNegatives, let negatives = a.negatives {
        for b in 0..<W.value { negatives.yNeg[i + (a.b0 + b) * m] = accNeg[b].sum() }
        if countNegatives {
            negatives.rowSum[i] = Double(negSum.sum())
            negatives.rowCount[i] = Double(negCount.sum())
        }
    }
    return probe.sum() == 0
}

/// Whether a column pass writes the weights, as a type (specialised away).
protocol WeightMode { static var updates: Bool { get } }
enum UpdateWeights: WeightMode { static var updates: Bool { true } }
enum KeepWeights: WeightMode { static var updates: Bool { false } }

/// Column pass over columns `cols` (starting at a multiple of 8):
/// out_k[b, j] += Σ_i q_k[i, b] · A_k[i, j] for every row i in order, where A_k
/// is the new moment k built from the previous one fixed with c_k. With
/// `updateWeights` it also writes W ← W·(1 − lr·λ) − stepSize·direction.
/// q is rows x l column-major; out is an l x cols panel.
func columnPass<Rule: MomentRule>(
    _ rule: Rule, _ t: LowRankTensor, cols: Range<Int>,
    q: PerMoment<UnsafePointer<Float>>, c: PerMoment<Float>,
    out: PerMoment<UnsafeMutablePointer<Float>>, updateWeights: Bool,
    scratch: UnsafeMutablePointer<Float>
) {
    switch (min(t.sketchWidth, 4), updateWeights) {
    case (1, true): columnPass(rule, t, cols, q, c, out, Width1.self, UpdateWeights.self, scratch)
    case (2, true): columnPass(rule, t, cols, q, c, out, Width2.self, UpdateWeights.self, scratch)
    case (3, true): columnPass(rule, t, cols, q, c, out, Width3.self, UpdateWeights.self, scratch)
    case (_, true): columnPass(rule, t, cols, q, c, out, Width4.self, UpdateWeights.self, scratch)
    case (1, false): columnPass(rule, t, cols, q, c, out, Width1.self, KeepWeights.self, scratch)
    case (2, false): columnPass(rule, t, cols, q, c, out, Width2.self, KeepWeights.self, scratch)
    case (3, false): columnPass(rule, t, cols, q, c, out, Width3.self, KeepWeights.self, scratch)
    default: columnPass(rule, t, cols, q, c, out, Width4.self, KeepWeights.self, scratch)
    }
}

/// The column pass with the first W sketch columns unrolled (W = l when
/// l <= 4); wider sketches handle the remaining columns in a loop.
private func columnPass<Rule: MomentRule, W: BlockWidth, Mode: WeightMode>(
    _ rule: Rule, _ t: LowRankTensor, _ cols: Range<Int>,
    _ q: PerMoment<UnsafePointer<Float>>, _ c: PerMoment<Float>,
    _ out: PerMoment<UnsafeMutablePointer<Float>>, _: W.Type, _: Mode.Type,
    _ scratch: UnsafeMutablePointer<Float>
) {
    let l = t.sketchWidth, n = t.cols, m = t.rows
    let parts = PassScratch(scratch, rank: t.rank)
    let coef = parts.coef, qRow = parts.qRow
    let blockWidth = 512  // columns per sweep over the rows: factor and output tiles stay in L1/L2
    var blockStart = cols.lowerBound
    while blockStart < cols.upperBound {
        let blockEnd = min(blockStart + blockWidth, cols.upperBound)
        for i in 0..<m {
            loadCoefficients(t, momentCount: Rule.momentCount, row: i, into: coef)
            for k in 0..<Rule.momentCount { for b in 0..<l { qRow[k &* l &+ b] = q[k][i &+ b &* m] } }
            let gradRow = t.grad + i &* n, weightRow = t.weights + i &* n

            @inline(__always) func chunk(_ j: Int, _ full: Bool, _ count: Int) {
                let g = load(gradRow + j, full, count)
                var (p, _, _) = previousMoments(Rule.self, t, coef, c, j, full, count)
                let direction = rule.apply(&p.first, &p.second, g)
                if Mode.updates {
                    let w = weightRow + j
                    store(load(w, full, count) * rule.decayFactor - rule.stepSize * direction, w, full, count)
                }
                for k in 0..<Rule.momentCount {
                    let (o, stride) = Panel.block(out[k], col: j, rows: l, cols: n)
                    let qk = qRow + k &* l
                    for b in 0..<W.value {
                        let ob = o + b &* stride
                        store(load(ob, full, count).addingProduct(qk[b], p[k]), ob, full, count)
                    }
                    var b = W.value
                    while b < l {
                        let ob = o + b &* stride
                        store(load(ob, full, count).addingProduct(qk[b], p[k]), ob, full, count)
                        b &+= 1
                    }
                }
            }

            let fullEnd = blockStart + (blockEnd - blockStart) & ~7
            var j = blockStart
            while j < fullEnd { chunk(j, true, 8); j &+= 8 }
            if j < blockEnd { chunk(j, false, blockEnd &- j) }
        }
        blockStart = blockEnd
    }
}
