import CVectorMath

/// One-sweep row kernels of a low-rank CAME step at rank 4 with a sketch of
/// width 4 (no oversampling): the row of the previous moment rebuilt from the
/// factors, the new moment row, and what the step does with it, per 8-column
/// chunk while the chunk is in registers. They replace a sweep per operation
/// (CAMERows.swift: the rebuild, cameMomentRow, the sketch's dots,
/// cameRowBound, cameUpdateRow, the axpys), each of which streamed the row's
/// buffers, Vt and Ω or the partial panel through the cache again. Every lane
/// computes the same operations in the same order as those kernels, so the
/// results are the same bits.

/// The rebuilt previous moment's coefficients U[i, a]·s[a] of row i.
@inline(__always)
func cameRank4Coefficients(_ f: Factors, row i: Int) -> SIMD4<Float> {
    SIMD4(f.u[i * 4] * f.s[0], f.u[i * 4 + 1] * f.s[1], f.u[i * 4 + 2] * f.s[2], f.u[i * 4 + 3] * f.s[3])
}

/// Chunk j of row i: the previous moment rebuilt (Σ_a coef[a]·Vt[a, j]),
/// û = g·b·a and the new moment β1·prev + (1−β1)·û.
@_transparent
func cameRank4Moment(_ vt: UnsafeMutablePointer<Float>, _ coef: SIMD4<Float>, _ g: UnsafePointer<Float>,
                     _ b: UnsafePointer<Float>, _ a: Float, _ n: Int, _ j: Int, _ c: Int,
                     beta1: Float, oneMinusBeta1: Float) -> (u: SIMD8<Float>, m: SIMD8<Float>) {
    cameMomentChunk(g, b, a, prev: rank4Rebuild(vt, coef, n, j, c), j, c, beta1: beta1, oneMinusBeta1: oneMinusBeta1)
}

/// Chunk j of a rank-4 rebuild Σ_a coef[a]·Vt[a, j] (Vt in Panel layout),
/// the fused multiply-adds in rank order.
@_transparent
func rank4Rebuild(_ vt: UnsafeMutablePointer<Float>, _ coef: SIMD4<Float>, _ n: Int, _ j: Int, _ c: Int) -> SIMD8<Float> {
    let (block, stride) = Panel.block(vt, col: j, rows: 4, cols: n, full: c == 8)
    return SIMD8<Float>(repeating: 0).addingProduct(coef[0], load8(block, c))
        .addingProduct(coef[1], load8(block + stride, c)).addingProduct(coef[2], load8(block + 2 * stride, c))
        .addingProduct(coef[3], load8(block + 3 * stride, c))
}

/// What `prepare` takes from row i of the new moment: Σ_j (û − M)² (each
/// term also added to residualColumns[j]), the sketch Y[i, :] = M[i, :]·Ωᵀ
/// (Ω 4 x n row-major) and verify's row bound (weights w).
struct CAMESketchRow {
    var residual: Double
    var sketch: SIMD4<Float>
    var bound: CAMERowBound
}

func cameSketchRowRank4(_ f: Factors, row i: Int, _ g: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ a: Float,
                        _ n: Int, beta1: Float, oneMinusBeta1: Float, omega: UnsafePointer<Float>,
                        residualColumns: UnsafeMutablePointer<Float>, weights w: UnsafePointer<Float>) -> CAMESketchRow {
    let coef = cameRank4Coefficients(f, row: i)
    var acc = SIMD8<Float>(repeating: 0), y0 = acc, y1 = acc, y2 = acc, y3 = acc, gb = acc
    var wBits = SIMD8<Int32>(repeating: 0)
    eachChunk(n) { j, c in
        if c == 8 { prefetchF32(g, j); prefetchF32(w, j) }
        let (u, mv) = cameRank4Moment(f.vt, coef, g, b, a, n, j, c, beta1: beta1, oneMinusBeta1: oneMinusBeta1)
        let d = u - mv, d2 = d * d
        acc += d2
        store8(load8(residualColumns + j, c) + d2, residualColumns + j, c)
        y0 = y0.addingProduct(mv, load8(omega + j, c))
        y1 = y1.addingProduct(mv, load8(omega + n + j, c))
        y2 = y2.addingProduct(mv, load8(omega + 2 * n + j, c))
        y3 = y3.addingProduct(mv, load8(omega + 3 * n + j, c))
        gb = mlorc_max8(gb, magnitude8(load8(g + j, c)) * load8(b + j, c))
        wBits = mlorc_max_magnitude_bits8(wBits, load8(w + j, c))
    }
    return CAMESketchRow(residual: Double(acc.sum()), sketch: SIMD4(y0.sum(), y1.sum(), y2.sum(), y3.sum()),
                         bound: CAMERowBound(gradTimesB: gb.max(), weightBits: wBits.max(), momentBits: 0))
}

/// `commit`'s sweep of row i: w[j] ← w[j] − (decayRate·w[j] + step·colFactor[j]·M[i, j])
/// in place, and panel[c·n + j] += q[c]·M[i, j] (the partial QᵀM, 4 x n row-major).
func cameUpdateRowRank4(_ f: Factors, row i: Int, _ g: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ a: Float,
                        _ n: Int, beta1: Float, oneMinusBeta1: Float, weights w: UnsafeMutablePointer<Float>,
                        decayRate: Float, step: Float, colFactor: UnsafePointer<Float>,
                        q: SIMD4<Float>, panel p: UnsafeMutablePointer<Float>) {
    let coef = cameRank4Coefficients(f, row: i)
    let s0 = q[0], s1 = q[1], s2 = q[2], s3 = q[3]
    eachChunk(n) { j, c in
        if c == 8 { prefetchF32(g, j); prefetchF32(w, j) }
        let (_, mv) = cameRank4Moment(f.vt, coef, g, b, a, n, j, c, beta1: beta1, oneMinusBeta1: oneMinusBeta1)
        let wv = load8(w + j, c)
        store8(wv - (mv * step * load8(colFactor + j, c)).addingProduct(decayRate, wv), w + j, c)
        let y0 = load8(p + j, c), y1 = load8(p + n + j, c), y2 = load8(p + 2 * n + j, c), y3 = load8(p + 3 * n + j, c)
        store8(y0.addingProduct(s0, mv), p + j, c)
        store8(y1.addingProduct(s1, mv), p + n + j, c)
        store8(y2.addingProduct(s2, mv), p + 2 * n + j, c)
        store8(y3.addingProduct(s3, mv), p + 3 * n + j, c)
    }
}
