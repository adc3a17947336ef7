/// Dense storage: the rule applied element by element to full-size moments
/// held in the state (this is exactly AdamW / Lion).
func denseUpdate<Rule: MomentRule>(
    _ rule: Rule, weights: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>,
    m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>?, range: Range<Int>
) {
    var e = range.lowerBound
    while e < range.upperBound {
        let count = min(8, range.upperBound - e)
        let g = load8(grad + e, count)
        var mv = load8(m + e, count)
        var vv = v.map { load8($0 + e, count) } ?? .zero
        let direction = rule.apply(&mv, &vv, g)
        store8(mv, m + e, count)
        if let v { store8(vv, v + e, count) }
        let w = weights + e
        store8(load8(w, count) * rule.decayFactor - rule.stepSize * direction, w, count)
        e += 8
    }
}

/// Whether every element of p[range] is finite (no NaN, no infinity).
func allFinite(_ p: UnsafePointer<Float>, range: Range<Int>) -> Bool {
    var probe = SIMD8<Float>(repeating: 0)
    var e = range.lowerBound
    while e < range.upperBound {
        let count = min(8, range.upperBound - e)
        probe += nonFiniteProbe(load8(p + e, count))
        e += 8
    }
    return probe.sum() == 0
}
