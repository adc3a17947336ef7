/// This rank's rows of a sketch Y (m rows x l, column-major) in a sharded
/// randomized SVD: the row-local pieces of CholeskyQR2 and of the gathered
/// Householder fallback (ShardedDriver's `orthonormalize`). Every storage
/// with a sharded randomized SVD (MLorc factors, CAME's first moment) hands
/// its sketches in as these.
struct ShardSketch {
    let y: UnsafeMutablePointer<Float>
    let m: Int, l: Int
    let rowBegin: Int, globalRows: Int

    /// Adds the packed upper triangle of YᵀY over this shard's rows
    /// (fp64, l(l+1)/2 values, row by row of the triangle).
    func addGram(into out: UnsafeMutablePointer<Double>) {
        var e = 0
        for a in 0..<l {
            for b in a..<l {
                var sum = 0.0
                for i in 0..<m { sum += Double(y[i + a * m]) * Double(y[i + b * m]) }
                out[e] += sum
                e += 1
            }
        }
    }

    /// Y ← Y·R⁻¹ for an upper triangular l x l R (row-major, fp64).
    func solveRight(r: UnsafePointer<Double>) {
        let x = UnsafeMutablePointer<Double>.allocate(capacity: max(l, 1))
        defer { x.deallocate() }
        for i in 0..<m {
            for j in 0..<l {
                var v = Double(y[i + j * m])
                for a in 0..<j { v -= x[a] * r[a * l + j] }
                x[j] = v / r[j * l + j]
            }
            for j in 0..<l { y[i + j * m] = Float(x[j]) }
        }
    }

    /// Adds this shard's rows of Y into column-major globalRows x l at rowBegin.
    func addRows(into out: UnsafeMutablePointer<Double>) {
        for b in 0..<l { for i in 0..<m { out[b * globalRows + rowBegin + i] += Double(y[i + b * m]) } }
    }

    /// Y ← this shard's rows of the column-major globalRows x l matrix q.
    func takeRows(from q: UnsafePointer<Float>) {
        for b in 0..<l { for i in 0..<m { y[i + b * m] = q[b * globalRows + rowBegin + i] } }
    }
}
