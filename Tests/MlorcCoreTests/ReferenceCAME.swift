import Foundation

/// CAME (arXiv 2307.02047) in double precision, written from the paper's
/// equations with the authors' conventions (came_pytorch): means over rows
/// and columns, ε added to G² and to the instability, RMS clipping of the
/// normalised update, no bias correction, decoupled weight decay. Vectors
/// (one row or column) take the authors' 1-D branch: an unfactored second
/// moment and the update m itself.
struct ReferenceCAME {
    var beta1 = 0.9, beta2 = 0.999, beta3 = 0.9999
    var eps1 = 1e-30, eps2 = 1e-16, clip = 1.0, weightDecay = 0.0
    let rows: Int, cols: Int
    var m: [Double], v: [Double]  // v: the unfactored second moment (vectors only)
    var r: [Double], c: [Double], bigR: [Double], bigC: [Double]

    init(rows: Int, cols: Int) {
        self.rows = rows; self.cols = cols
        m = .init(repeating: 0, count: rows * cols); v = m
        r = .init(repeating: 0, count: rows); c = .init(repeating: 0, count: cols)
        bigR = r; bigC = c
    }

    var isVector: Bool { rows == 1 || cols == 1 }

    mutating func step(_ w: inout [Double], _ gf: [Float], lr: Double) {
        let g = gf.map(Double.init), (mm, nn) = (rows, cols)
        var u = [Double](repeating: 0, count: mm * nn)
        if isVector {
            for e in g.indices {
                v[e] = beta2 * v[e] + (1 - beta2) * (g[e] * g[e] + eps1)
                u[e] = g[e] / v[e].squareRoot()
            }
        } else {
            for i in 0..<mm {
                let mean = (0..<nn).reduce(0.0) { $0 + g[i * nn + $1] * g[i * nn + $1] + eps1 } / Double(nn)
                r[i] = beta2 * r[i] + (1 - beta2) * mean
            }
            for j in 0..<nn {
                let mean = (0..<mm).reduce(0.0) { $0 + g[$1 * nn + j] * g[$1 * nn + j] + eps1 } / Double(mm)
                c[j] = beta2 * c[j] + (1 - beta2) * mean
            }
            let meanR = r.reduce(0, +) / Double(mm)
            for i in 0..<mm { for j in 0..<nn { u[i * nn + j] = g[i * nn + j] / (r[i] * c[j] / meanR).squareRoot() } }
        }
        let rms = (u.reduce(0.0) { $0 + $1 * $1 } / Double(mm * nn)).squareRoot()
        let divisor = max(1, rms / clip)
        for e in u.indices {
            u[e] /= divisor
            m[e] = beta1 * m[e] + (1 - beta1) * u[e]
        }
        var update = m
        if !isVector {
            let res = u.indices.map { (u[$0] - m[$0]) * (u[$0] - m[$0]) + eps2 }
            for i in 0..<mm {
                bigR[i] = beta3 * bigR[i] + (1 - beta3) * (0..<nn).reduce(0.0) { $0 + res[i * nn + $1] } / Double(nn)
            }
            for j in 0..<nn {
                bigC[j] = beta3 * bigC[j] + (1 - beta3) * (0..<mm).reduce(0.0) { $0 + res[$1 * nn + j] } / Double(mm)
            }
            let meanR = bigR.reduce(0, +) / Double(mm)
            for i in 0..<mm { for j in 0..<nn { update[i * nn + j] = m[i * nn + j] / (bigR[i] * bigC[j] / meanR).squareRoot() } }
        }
        for e in w.indices { w[e] = w[e] - lr * weightDecay * w[e] - lr * update[e] }
    }
}
