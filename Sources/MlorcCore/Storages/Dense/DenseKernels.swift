import CVectorMath

/// Dense storage: the rule applied element by element to full-size moments
/// held in the state (this is exactly AdamW / Lion).
func denseUpdate<Rule: MomentRule>(
    _ rule: Rule, weights: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>,
    m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>?, range: Range<Int>
) {
    let full = range.lowerBound + (range.count / 8) * 8
    if let v {
        var e = range.lowerBound
        while e < full {
            denseChunk(rule, weights + e, grad + e, m + e, v + e)
            e += 8
        }
    } else {
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 8)
        defer { scratch.deallocate() }
        var e = range.lowerBound
        while e < full {
            denseChunk(rule, weights + e, grad + e, m + e, scratch)
            e += 8
        }
    }
    // The last < 8 elements go through the same code on padded copies.
    let tail = range.upperBound - full
    if tail > 0 {
        var w = SIMD8<Float>(repeating: 0), g = w, mm = w, vv = w
        for i in 0..<tail {
            w[i] = weights[full + i]; g[i] = grad[full + i]; mm[i] = m[full + i]; vv[i] = v?[full + i] ?? 0
        }
        withUnsafeMutablePointer(to: &w) { wp in withUnsafeMutablePointer(to: &g) { gp in
            withUnsafeMutablePointer(to: &mm) { mp in withUnsafeMutablePointer(to: &vv) { vp in
                denseChunk(rule, UnsafeMutableRawPointer(wp).assumingMemoryBound(to: Float.self),
                           UnsafeRawPointer(gp).assumingMemoryBound(to: Float.self),
                           UnsafeMutableRawPointer(mp).assumingMemoryBound(to: Float.self),
                           UnsafeMutableRawPointer(vp).assumingMemoryBound(to: Float.self))
            } }
        } }
        for i in 0..<tail {
            weights[full + i] = w[i]; m[full + i] = mm[i]; v?[full + i] = vv[i]
        }
    }
}

/// One 8-element chunk of the dense update (unaligned 256-bit loads and stores).
@inline(__always)
private func denseChunk<Rule: MomentRule>(_ rule: Rule, _ w: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                          _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>) {
    var mv = UnsafeRawPointer(m).loadUnaligned(as: SIMD8<Float>.self)
    var vv = UnsafeRawPointer(v).loadUnaligned(as: SIMD8<Float>.self)
    let wv = UnsafeRawPointer(w).loadUnaligned(as: SIMD8<Float>.self)
    var gv = UnsafeRawPointer(g).loadUnaligned(as: SIMD8<Float>.self)
    if rule.modifiers.transformsGradient { gv = rule.modifiers.gradient(gv, weights: wv) }
    let direction = rule.modifiers.direction(rule.apply(&mv, &vv, gv), gv)
    UnsafeMutableRawPointer(m).storeBytes(of: mv, as: SIMD8<Float>.self)
    UnsafeMutableRawPointer(v).storeBytes(of: vv, as: SIMD8<Float>.self)
    UnsafeMutableRawPointer(w).storeBytes(of: rule.updatedWeights(wv, direction), as: SIMD8<Float>.self)
}


/// How many elements of range cautious masking keeps under `rule` (a
/// read-only rehearsal of denseUpdate: same moments, same direction).
func denseCautiousKept<Rule: MomentRule>(
    _ rule: Rule, weights: UnsafePointer<Float>, grad: UnsafePointer<Float>,
    m: UnsafePointer<Float>, v: UnsafePointer<Float>?, range: Range<Int>
) -> Int {
    var kept = 0
    var e = range.lowerBound
    while e < range.upperBound {
        let count = min(8, range.upperBound - e)
        var g = load8(grad + e, count)
        if rule.modifiers.transformsGradient { g = rule.modifiers.gradient(g, weights: load8(weights + e, count)) }
        var mv = load8(m + e, count)
        var vv = v.map { load8($0 + e, count) } ?? .zero
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
func gradientSums(weights: UnsafePointer<Float>, grad: UnsafePointer<Float>, cols: Int, rows: Range<Int>,
                  into sums: UnsafeMutablePointer<SIMD4<Double>>) {
    for i in rows {
        var gg = SIMD8<Float>(repeating: 0), wg = gg, ww = gg
        var e = i * cols
        let end = e + cols
        while e < end {
            let count = min(8, end - e)
            let g = load8(grad + e, count), w = load8(weights + e, count)
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
