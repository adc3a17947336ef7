import CVectorMath

/// Dense storage: the rule applied element by element to full-size moments
/// held in the state (the rule exactly as its paper states it). Every load
/// and store goes through A (DenseAccess): the fp32 path or the one for any
/// element types of weights, gradient and moments.
func denseUpdate<Rule: MomentRule, A: DenseAccess>(_ rule: Rule, _: A.Type, _ t: DenseTensor, range: Range<Int>) {
    let full = range.lowerBound + (range.count / 8) * 8
    var e = range.lowerBound
    if Rule.momentCount > 1 {
        while e < full {
            var mv = A.loadMoment(t, 0, e, 8), vv = A.loadMoment(t, 1, e, 8)
            let w = denseLanes(rule, A.loadWeights(t, e, 8), A.loadGrad(t, e, 8), &mv, &vv)
            A.storeMoment(mv, t, 0, e, 8); A.storeMoment(vv, t, 1, e, 8); A.storeWeights(w, t, e, 8)
            e += 8
        }
    } else {
        while e < full {
            var mv = A.loadMoment(t, 0, e, 8), unused = SIMD8<Float>(repeating: 0)
            let w = denseLanes(rule, A.loadWeights(t, e, 8), A.loadGrad(t, e, 8), &mv, &unused)
            A.storeMoment(mv, t, 0, e, 8); A.storeWeights(w, t, e, 8)
            e += 8
        }
    }
    // The last < 8 elements go through the same code on zero-padded lanes.
    let tail = range.upperBound - full
    if tail > 0 {
        var mv = A.loadMoment(t, 0, full, tail), vv = Rule.momentCount > 1 ? A.loadMoment(t, 1, full, tail) : .zero
        let w = denseLanes(rule, A.loadWeights(t, full, tail), A.loadGrad(t, full, tail), &mv, &vv)
        A.storeMoment(mv, t, 0, full, tail); if Rule.momentCount > 1 { A.storeMoment(vv, t, 1, full, tail) }
        A.storeWeights(w, t, full, tail)
    }
}

/// A read-only rehearsal of denseUpdate over range: the largest magnitude
/// bits of the new weights and moments it would write, as stored (NaN above
/// +inf), and of the gradient. The same lane arithmetic, so the verdict is exact.
func denseOutputBits<Rule: MomentRule, A: DenseAccess>(_ rule: Rule, _: A.Type, _ t: DenseTensor,
                                                       range: Range<Int>) -> (outputs: Int32, grad: Int32) {
    var outputs = SIMD8<Int32>(repeating: 0), gradient = outputs
    var e = range.lowerBound
    while e < range.upperBound {
        let count = min(8, range.upperBound - e)
        var mv = A.loadMoment(t, 0, e, count), vv = Rule.momentCount > 1 ? A.loadMoment(t, 1, e, count) : .zero
        let g = A.loadGrad(t, e, count)
        let w = denseLanes(rule, A.loadWeights(t, e, count), g, &mv, &vv)
        gradient = maskedMagnitudeBits(gradient, g, count)
        outputs = maskedMagnitudeBits(outputs, A.stored(w, t, e), count)
        outputs = maskedMagnitudeBits(outputs, A.storedMoment(mv, t, 0, e), count)
        if Rule.momentCount > 1 { outputs = maskedMagnitudeBits(outputs, A.storedMoment(vv, t, 1, e), count) }
        e += 8
    }
    return (outputs.max(), gradient.max())
}

/// One 8-lane step of the dense update: new moments in place, new weights returned.
@inline(__always)
private func denseLanes<Rule: MomentRule>(_ rule: Rule, _ w: SIMD8<Float>, _ g: SIMD8<Float>,
                                          _ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>) -> SIMD8<Float> {
    var g = g
    if rule.modifiers.transformsGradient { g = rule.modifiers.gradient(g, weights: w) }
    let direction = rule.modifiers.direction(rule.apply(&m, &v, g), g)
    return rule.updatedWeights(w, direction)
}

/// How many elements of range cautious masking keeps under `rule` (a
/// read-only rehearsal of denseUpdate: same moments, same direction).
func denseCautiousKept<Rule: MomentRule, A: DenseAccess>(_ rule: Rule, _: A.Type, _ t: DenseTensor,
                                                         range: Range<Int>) -> Int {
    var kept = 0
    var e = range.lowerBound
    while e < range.upperBound {
        let count = min(8, range.upperBound - e)
        var g = A.loadGrad(t, e, count)
        if rule.modifiers.transformsGradient { g = rule.modifiers.gradient(g, weights: A.loadWeights(t, e, count)) }
        var mv = A.loadMoment(t, 0, e, count)
        var vv = Rule.momentCount > 1 ? A.loadMoment(t, 1, e, count) : .zero
        let u = rule.apply(&mv, &vv, g)
        let keptLanes = rule.modifiers.cautiousKept(u, g)
        for lane in 0..<count { kept += Int(keptLanes[lane]) }
        e += 8
    }
    return kept
}

/// Σg², Σw·g and Σw² over rows of a rows x cols tensor, one entry per row
/// (summed in double; the caller adds rows in order, so the totals do not
/// depend on how rows were split between threads). Not generic over the
/// rule: two copies in all (FP32Dense, AnyDense).
func gradientSums<A: DenseAccess>(_: A.Type, _ t: DenseTensor, cols: Int, rows: Range<Int>,
                                  into sums: UnsafeMutablePointer<SIMD4<Double>>) {
    for i in rows {
        var gg = SIMD8<Float>(repeating: 0), wg = gg, ww = gg
        var e = i * cols
        let end = e + cols
        while e < end {
            let count = min(8, end - e)
            let g = A.loadGrad(t, e, count), w = A.loadWeights(t, e, count)
            gg = gg.addingProduct(g, g); wg = wg.addingProduct(w, g); ww = ww.addingProduct(w, w)
            e += 8
        }
        sums[i] = SIMD4(Double(gg.sum()), Double(wg.sum()), Double(ww.sum()), 0)
    }
}

/// Whether every element of p[0..<count] is finite with |x| <= bound (a
/// non-negative, finite bound).
func allWithin(_ p: UnsafePointer<Float>, count: Int, bound: Float) -> Bool {
    var worst = SIMD8<Int32>(repeating: 0)
    eachChunk(count) { e, c in worst = mlorc_max_magnitude_bits8(worst, load8(p + e, c)) }
    return worst.max() <= Int32(bitPattern: bound.bitPattern)
}

/// Whether every gradient element of p[0..<count] is finite with |x| <= bound.
func allWithin<G: Element>(_: G.Type, _ p: UnsafePointer<G.Scalar>, count: Int, bound: Float) -> Bool {
    var worst = SIMD8<Int32>(repeating: 0)
    eachChunk(count) { e, c in worst = mlorc_max_magnitude_bits8(worst, G.load8(p + e, c)) }
    return worst.max() <= Int32(bitPattern: bound.bitPattern)
}
