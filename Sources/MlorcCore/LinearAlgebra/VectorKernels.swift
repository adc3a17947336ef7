/// The level-1 kernels the storages share (fp32, 8 lanes at a time).

/// Calls body(j, count) for the row's 8-element chunks: full chunks with a
/// literal count (so load8/store8 compile to plain vector loads), then the
/// partial last one.
@_transparent
func eachChunk(_ n: Int, _ body: (_ j: Int, _ count: Int) -> Void) {
    let full = n & ~7
    var j = 0
    while j < full { body(j, 8); j &+= 8 }
    if j < n { body(j, n &- j) }
}

/// y[range] += a·x[range], 8 lanes at a time.
@inline(__always)
func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ range: Range<Int>) {
    var j = range.lowerBound
    while j < range.upperBound {
        let c = min(8, range.upperBound - j)
        store8(load8(y + j, c).addingProduct(a, load8(x + j, c)), y + j, c)
        j += 8
    }
}

/// Σ x[j]·y[j] over 0..<count (8 partial sums, then their sum: a fixed order).
@inline(__always)
func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ count: Int) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    var j = 0
    while j < count {
        let c = min(8, count - j)
        acc = acc.addingProduct(load8(x + j, c), load8(y + j, c))
        j += 8
    }
    return acc.sum()
}

