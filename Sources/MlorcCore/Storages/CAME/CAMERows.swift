import CVectorMath

/// The row kernels of a CAME step (CAMEStep): each handles one row of n
/// elements, 8 lanes at a time (lanes past the row read as zero and are never
/// written), prefetching its streams ahead (Elements/Prefetch.swift). Row
/// sums are returned, column sums added into a chunk's own
/// accumulator row, so that every reduction has a fixed order (CAMEStep sums
/// the chunks in order): results do not depend on the thread count.

/// Σ_j g[j]² of the row; adds g[j]² to columns[j].
func cameSquareSums(_ g: UnsafePointer<Float>, _ n: Int, columns: UnsafeMutablePointer<Float>) -> Double {
    var acc = SIMD8<Float>(repeating: 0)
    eachChunk(n) { j, c in
        if c == 8 { prefetchF32(g, j) }
        let x = load8(g + j, c), sq = x * x
        acc += sq
        store8(load8(columns + j, c) + sq, columns + j, c)
    }
    return Double(acc.sum())
}

/// Σ_j u[j]² of the normalised row u[j] = g[j]·b[j]·a (a = the row's factor).
func cameNormalisedSquareSum(_ g: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ a: Float, _ n: Int) -> Double {
    var acc = SIMD8<Float>(repeating: 0)
    eachChunk(n) { j, c in
        if c == 8 { prefetchF32(g, j) }
        let u = load8(g + j, c) * load8(b + j, c) * a
        acc = acc.addingProduct(u, u)
    }
    return Double(acc.sum())
}

/// The new first moment of one row, out[j] = β1·prev[j] + (1−β1)·û[j] with
/// û[j] = g[j]·b[j]·a (a = the row's factor times the clipping scale). out may
/// be prev (dense storage updates in place). With `residualColumns` it also
/// returns Σ_j (û[j] − out[j])² and adds each term to residualColumns[j].
@inline(__always)
func cameMomentRow(_ g: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ a: Float, _ n: Int,
                   prev: UnsafePointer<Float>, beta1: Float, oneMinusBeta1: Float,
                   into out: UnsafeMutablePointer<Float>, residualColumns: UnsafeMutablePointer<Float>?) -> Double {
    @_transparent func moment(_ j: Int, _ c: Int) -> (u: SIMD8<Float>, m: SIMD8<Float>) {
        if c == 8 { prefetchF32(g, j); prefetchF32(prev, j) }
        let (u, mv) = cameMomentChunk(g, b, a, prev: load8(prev + j, c), j, c, beta1: beta1, oneMinusBeta1: oneMinusBeta1)
        store8(mv, out + j, c)
        return (u, mv)
    }
    guard let columns = residualColumns else {
        eachChunk(n) { j, c in _ = moment(j, c) }
        return 0
    }
    var acc = SIMD8<Float>(repeating: 0)
    eachChunk(n) { j, c in
        let (u, mv) = moment(j, c)
        let d = u - mv, d2 = d * d
        acc += d2
        store8(load8(columns + j, c) + d2, columns + j, c)
    }
    return Double(acc.sum())
}

/// Chunk j of the new moment: û = g·b·a and β1·prev + (1−β1)·û.
@_transparent
func cameMomentChunk(_ g: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ a: Float, prev: SIMD8<Float>,
                     _ j: Int, _ c: Int, beta1: Float, oneMinusBeta1: Float) -> (u: SIMD8<Float>, m: SIMD8<Float>) {
    let u = load8(g + j, c) * load8(b + j, c) * a
    return (u, (oneMinusBeta1 * u).addingProduct(beta1, prev))
}

/// w[j] ← w[j] − (decayRate·w[j] + step·colFactor[j]·m[j]) (colFactor nil:
/// step·m[j]); the decay as a rate, not a factor 1 − lr·λ rounded to float
/// (see MomentRule.updatedWeights).
func cameUpdateRow(_ w: UnsafeMutablePointer<Float>, _ m: UnsafePointer<Float>, _ n: Int, decayRate: Float,
                   step: Float, colFactor: UnsafePointer<Float>?) {
    if let colFactor {
        eachChunk(n) { j, c in
            if c == 8 { prefetchF32(w, j) }
            let wv = load8(w + j, c)
            store8(wv - (load8(m + j, c) * step * load8(colFactor + j, c)).addingProduct(decayRate, wv), w + j, c)
        }
    } else {
        eachChunk(n) { j, c in
            let wv = load8(w + j, c)
            store8(wv - (load8(m + j, c) * step).addingProduct(decayRate, wv), w + j, c)
        }
    }
}

/// Row i of the previous first moment: a row of the dense moment, or rebuilt
/// from the MLorc factors, Σ_a U[i, a]·s[a]·Vt[a, :], into a row buffer.
struct PreviousMomentRows {
    let dense: UnsafeMutablePointer<Float>?
    let factors: Factors?
    let rank: Int, cols: Int

    @inline(__always)
    func row(_ i: Int, buffer: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
        if let dense { return dense + i * cols }
        let f = factors!, r = rank, n = cols
        // coef[a] = U[i, a]·s[a], kept at the end of the buffer's row (n + r floats).
        let coef = buffer + n
        for a in 0..<r { coef[a] = f.u[i * r + a] * f.s[a] }
        if r == 4 {
            // The loop below with the ranks written out: the same fused
            // multiply-adds in the same order.
            let coef4 = SIMD4(coef[0], coef[1], coef[2], coef[3])
            eachChunk(n) { j, c in store8(rank4Rebuild(f.vt, coef4, n, j, c), buffer + j, c) }
            return buffer
        }
        eachChunk(n) { j, c in
            let (block, stride) = Panel.block(f.vt, col: j, rows: r, cols: n, full: c == 8)
            var acc = SIMD8<Float>(repeating: 0)
            for a in 0..<r { acc = acc.addingProduct(coef[a], load8(block + a * stride, c)) }
            store8(acc, buffer + j, c)
        }
        return buffer
    }
}

/// One row's inputs to CAMEStep.verify's bound: max_j |g[j]|·b[j], and the
/// largest magnitude bits of the weights and of a dense moment row (integer
/// bits put NaN above +inf, where a float max would drop it).
struct CAMERowBound {
    var gradTimesB: Float = 0
    var weightBits: Int32 = 0, momentBits: Int32 = 0
}

func cameRowBound(_ g: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                  dense: UnsafePointer<Float>?, _ n: Int) -> CAMERowBound {
    var gb = SIMD8<Float>(repeating: 0), wBits = SIMD8<Int32>(repeating: 0), mBits = wBits
    eachChunk(n) { j, c in
        if c == 8 { prefetchF32(w, j) }
        gb = mlorc_max8(gb, magnitude8(load8(g + j, c)) * load8(b + j, c))
        wBits = mlorc_max_magnitude_bits8(wBits, load8(w + j, c))
        if let dense { mBits = mlorc_max_magnitude_bits8(mBits, load8(dense + j, c)) }
    }
    return CAMERowBound(gradTimesB: gb.max(), weightBits: wBits.max(), momentBits: mBits.max())
}
