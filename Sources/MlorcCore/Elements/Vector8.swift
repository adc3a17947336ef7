/// Loads and stores of 8 floats that may run past the end of a row: lanes at
/// or beyond `count` read as zero and are never written.
@inline(__always)
func load8(_ p: UnsafePointer<Float>, _ count: Int) -> SIMD8<Float> {
    if count >= 8 { return UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
    var v = SIMD8<Float>(repeating: 0)
    for i in 0..<count { v[i] = p[i] }
    return v
}

@inline(__always)
func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ count: Int) {
    if count >= 8 { UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self); return }
    for i in 0..<count { p[i] = v[i] }
}
