/// The layout of the wide, short matrices of a low-rank step (the factor Vt,
/// the sketch Ω, the accumulators QᵀA): an R x n matrix kept in blocks of 8
/// columns, each block holding its R rows of 8 contiguously. Element (b, j)
/// of a full block lives at j·R + b·8 + j mod 8; the last, partial block (when
/// n is not a multiple of 8) holds rows of `n mod 8` contiguously. Total size
/// is exactly R·n.
///
/// Row-major storage puts the R rows of one column block n floats apart, which
/// at n = 4096 maps them to the same cache sets and makes stores alias loads
/// 4 KiB apart; this layout reads and writes one contiguous R x 8 tile per
/// block instead.
enum Panel {
    @inline(__always)
    static func offset(row b: Int, col j: Int, rows: Int, cols n: Int) -> Int {
        let fullEnd = n & ~7
        if j < fullEnd { return (j & ~7) &* rows &+ b &* 8 &+ (j & 7) }
        return fullEnd &* rows &+ b &* (n &- fullEnd) &+ (j &- fullEnd)
    }

    /// Start of the block holding column j (a multiple of 8), and the stride
    /// between its rows: 8 for a full block (`full`, a constant in the kernels),
    /// else the width of the last partial block.
    @_transparent
    static func block(_ base: UnsafeMutablePointer<Float>, col j: Int, rows: Int, cols n: Int,
                      full: Bool) -> (UnsafeMutablePointer<Float>, Int) {
        (base + j &* rows, full ? 8 : n &- j)
    }

    /// Copies a row-major R x n matrix into panel layout.
    static func fromRowMajor(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, rows: Int, cols n: Int) {
        for b in 0..<rows {
            for j in 0..<n { dst[offset(row: b, col: j, rows: rows, cols: n)] = src[b * n + j] }
        }
    }

    /// Copies a panel into a row-major R x n matrix (= column-major n x R, LAPACK's layout).
    static func toRowMajor(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, rows: Int, cols n: Int) {
        for b in 0..<rows {
            for j in 0..<n { dst[b * n + j] = src[offset(row: b, col: j, rows: rows, cols: n)] }
        }
    }
}
