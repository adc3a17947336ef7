import CVectorMath

/// Dense storage: the rule applied element by element to full-size moments
/// held in the state (the rule exactly as its paper states it). Parameters and
/// gradients go through their element type E; moments are fp32.
func denseUpdate<Rule: MomentRule, E: TensorElements>(
    _ rule: Rule, _: E.Type, weights: UnsafeMutablePointer<E.Param.Scalar>, grad: UnsafePointer<E.Grad.Scalar>,
    m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>?, range: Range<Int>, rounding: WeightRounding
) {
    let full = range.lowerBound + (range.count / 8) * 8
    var e = range.lowerBound
    if let v {
        while e < full {
            var mv = F32.load8(m + e, 8), vv = F32.load8(v + e, 8)
            let w = denseLanes(rule, E.Param.load8(weights + e, 8), E.Grad.load8(grad + e, 8), &mv, &vv)
            F32.store8(mv, m + e, 8); F32.store8(vv, v + e, 8); E.Param.store8(w, weights + e, 8, random: E.Param.usesRandomBits ? rounding.random(at: e) : nil)
            e += 8
        }
    } else {
        while e < full {
            var mv = F32.load8(m + e, 8), unused = SIMD8<Float>(repeating: 0)
            let w = denseLanes(rule, E.Param.load8(weights + e, 8), E.Grad.load8(grad + e, 8), &mv, &unused)
            F32.store8(mv, m + e, 8); E.Param.store8(w, weights + e, 8, random: E.Param.usesRandomBits ? rounding.random(at: e) : nil)
            e += 8
        }
    }
    // The last < 8 elements go through the same code on zero-padded lanes.
    let tail = range.upperBound - full
    if tail > 0 {
        var mv = F32.load8(m + full, tail), vv = v.map { F32.load8($0 + full, tail) } ?? .zero
        let w = denseLanes(rule, E.Param.load8(weights + full, tail), E.Grad.load8(grad + full, tail), &mv, &vv)
        F32.store8(mv, m + full, tail); if let v { F32.store8(vv, v + full, tail) }
        E.Param.store8(w, weights + full, tail, random: E.Param.usesRandomBits ? rounding.random(at: full) : nil)
    }
}

/// A read-only rehearsal of denseUpdate over range: the largest magnitude
/// bits of the new weights and moments it would write (NaN above +inf), and
/// of the gradient. The same lane arithmetic, so the verdict is exact.
func denseOutputBits<Rule: MomentRule, E: TensorElements>(
    _ rule: Rule, _: E.Type, weights: UnsafePointer<E.Param.Scalar>, grad: UnsafePointer<E.Grad.Scalar>,
    m: UnsafePointer<Float>, v: UnsafePointer<Float>?, range: Range<Int>, rounding: WeightRounding
) -> (outputs: Int32, grad: Int32) {
    var outputs = SIMD8<Int32>(repeating: 0), gradient = outputs
    var e = range.lowerBound
    while e < range.upperBound {
        let count = min(8, range.upperBound - e)
        var mv = F32.load8(m + e, count), vv = v.map { F32.load8($0 + e, count) } ?? .zero
        let g = E.Grad.load8(grad + e, count)
        let w = denseLanes(rule, E.Param.load8(weights + e, count), g, &mv, &vv)
        gradient = maskedMagnitudeBits(gradient, g, count)
        let stored = E.Stored.roundTrip(w, random: E.Stored.usesRandomBits ? rounding.random(at: e) : nil)
        outputs = maskedMagnitudeBits(outputs, stored, count)
        outputs = maskedMagnitudeBits(outputs, mv, count)
        if v != nil { outputs = maskedMagnitudeBits(outputs, vv, count) }
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
func denseCautiousKept<Rule: MomentRule, E: TensorElements>(
    _ rule: Rule, _: E.Type, weights: UnsafePointer<E.Param.Scalar>, grad: UnsafePointer<E.Grad.Scalar>,
    m: UnsafePointer<Float>, v: UnsafePointer<Float>?, range: Range<Int>
) -> Int {
    var kept = 0
    var e = range.lowerBound
    while e < range.upperBound {
        let count = min(8, range.upperBound - e)
        var g = E.Grad.load8(grad + e, count)
        if rule.modifiers.transformsGradient { g = rule.modifiers.gradient(g, weights: E.Param.load8(weights + e, count)) }
        var mv = F32.load8(m + e, count)
        var vv = v.map { F32.load8($0 + e, count) } ?? .zero
        let u = rule.apply(&mv, &vv, g)
        let keptLanes = rule.modifiers.cautiousKept(u, g)
        for lane in 0..<count { kept += Int(keptLanes[lane]) }
        e += 8
    }
    return kept
}

/// Σg², Σw·g and Σw² over rows of a rows x cols tensor, one entry per row
/// (summed in double; the caller adds rows in order, so the totals do not
/// depend on how rows were split between threads).
func gradientSums<E: TensorElements>(_: E.Type, weights: UnsafePointer<E.Param.Scalar>,
                                     grad: UnsafePointer<E.Grad.Scalar>, cols: Int, rows: Range<Int>,
                                     into sums: UnsafeMutablePointer<SIMD4<Double>>) {
    for i in rows {
        var gg = SIMD8<Float>(repeating: 0), wg = gg, ww = gg
        var e = i * cols
        let end = e + cols
        while e < end {
            let count = min(8, end - e)
            let g = E.Grad.load8(grad + e, count), w = E.Param.load8(weights + e, count)
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
    var e = 0
    while e < count {
        worst = mlorc_max_magnitude_bits8(worst, load8(p + e, min(8, count - e)))
        e += 8
    }
    return worst.max() <= Int32(bitPattern: bound.bitPattern)
}

/// Whether every gradient element of p[0..<count] is finite with |x| <= bound.
func allWithin<G: Element>(_: G.Type, _ p: UnsafePointer<G.Scalar>, count: Int, bound: Float) -> Bool {
    var worst = SIMD8<Int32>(repeating: 0)
    var e = 0
    while e < count {
        worst = mlorc_max_magnitude_bits8(worst, G.load8(p + e, min(8, count - e)))
        e += 8
    }
    return worst.max() <= Int32(bitPattern: bound.bitPattern)
}
