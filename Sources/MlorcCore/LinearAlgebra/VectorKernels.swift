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

/// eachChunk over `range`: the chunks from range.lowerBound, full ones with
/// a literal count, then the partial last one.
@_transparent
func eachChunk(in range: Range<Int>, _ body: (_ j: Int, _ count: Int) -> Void) {
    let full = range.lowerBound &+ (range.count & ~7)
    var j = range.lowerBound
    while j < full { body(j, 8); j &+= 8 }
    if j < range.upperBound { body(j, range.upperBound &- j) }
}

/// y[range] += a·x[range], 8 lanes at a time.
@inline(__always)
func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ range: Range<Int>) {
    eachChunk(in: range) { j, c in store8(load8(y + j, c).addingProduct(a, load8(x + j, c)), y + j, c) }
}

/// Σ x[j]·y[j] over 0..<count (8 partial sums, then their sum: a fixed order).
@inline(__always)
func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ count: Int) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    eachChunk(count) { j, c in acc = acc.addingProduct(load8(x + j, c), load8(y + j, c)) }
    return acc.sum()
}


/// out(c, dot(x, panel + c·n, n)) for c in 0..<count (rows of a row-major
/// count x n panel): four rows per sweep over x, each summed exactly as `dot`
/// sums it (the same lanes in the same order).
@inline(__always)
func dots(_ x: UnsafePointer<Float>, _ panel: UnsafePointer<Float>, count: Int, _ n: Int, _ out: (Int, Float) -> Void) {
    var c0 = 0
    while c0 + 4 <= count {
        let p = panel + c0 * n
        var a0 = SIMD8<Float>(repeating: 0), a1 = a0, a2 = a0, a3 = a0
        eachChunk(n) { j, c in
            let v = load8(x + j, c)
            a0 = a0.addingProduct(v, load8(p + j, c))
            a1 = a1.addingProduct(v, load8(p + n + j, c))
            a2 = a2.addingProduct(v, load8(p + 2 * n + j, c))
            a3 = a3.addingProduct(v, load8(p + 3 * n + j, c))
        }
        out(c0, a0.sum()); out(c0 + 1, a1.sum()); out(c0 + 2, a2.sum()); out(c0 + 3, a3.sum())
        c0 += 4
    }
    while c0 < count { out(c0, dot(x, panel + c0 * n, n)); c0 += 1 }
}

/// panel[c·n + j] += a(c)·x[j] for c in 0..<count and j in 0..<n: `axpy` for
/// each row of a row-major count x n panel, four rows per sweep over x. The
/// four rows' loads come before their stores: rows n floats apart share
/// their low address bits when n is a multiple of 1024, and a load after a
/// store 4 KiB away waits for it.
@inline(__always)
func axpys(_ x: UnsafePointer<Float>, into panel: UnsafeMutablePointer<Float>, count: Int, _ n: Int,
           _ a: (Int) -> Float) {
    var c0 = 0
    while c0 + 4 <= count {
        let p = panel + c0 * n
        let s0 = a(c0), s1 = a(c0 + 1), s2 = a(c0 + 2), s3 = a(c0 + 3)
        eachChunk(n) { j, c in
            let v = load8(x + j, c)
            let y0 = load8(p + j, c), y1 = load8(p + n + j, c), y2 = load8(p + 2 * n + j, c), y3 = load8(p + 3 * n + j, c)
            store8(y0.addingProduct(s0, v), p + j, c)
            store8(y1.addingProduct(s1, v), p + n + j, c)
            store8(y2.addingProduct(s2, v), p + 2 * n + j, c)
            store8(y3.addingProduct(s3, v), p + 3 * n + j, c)
        }
        c0 += 4
    }
    while c0 < count { axpy(a(c0), x, panel + c0 * n, 0..<n); c0 += 1 }
}
