import Foundation

/// Prodigy over a group of tensors, straight from prodigyopt's prodigy.py
/// (fp64, dense moments), with its slice_p sampling of the statistics.
struct ReferenceProdigy {
    var beta1 = 0.9, beta2 = 0.999, beta3 = 0.999.squareRoot(), eps = 1e-8, weightDecay = 0.0
    var d0 = 1e-6, dCoef = 1.0, growthRate = Double.infinity, slice = 1, biasCorrection = false
    var d = 1e-6, dMax = 1e-6, numerator = 0.0, k = 0
    var m: [[Double]] = [], v: [[Double]] = [], s: [[Double]] = [], p0: [[Double]] = []

    init(sizes: [Int], slice: Int) {
        self.slice = slice
        m = sizes.map { [Double](repeating: 0, count: $0) }
        v = m
        s = sizes.map { [Double](repeating: 0, count: ($0 + slice - 1) / slice) }
        p0 = []
    }

    mutating func step(_ w: inout [[Double]], _ g: [[Float]], lr: Double) {
        if p0.isEmpty { p0 = w.map { x in stride(from: 0, to: x.count, by: slice).map { x[$0] } } }
        let bc = biasCorrection ? (1 - pow(beta2, Double(k + 1))).squareRoot() / (1 - pow(beta1, Double(k + 1))) : 1
        let dlr = d * lr * bc
        var num = numerator * beta3, denom = 0.0
        for t in w.indices {
            for (a, e) in stride(from: 0, to: w[t].count, by: slice).enumerated() {
                let gi = Double(g[t][e])
                num += (d / d0) * dlr * gi * (p0[t][a] - w[t][e])
                s[t][a] = beta3 * s[t][a] + (d / d0) * dlr * gi
                denom += abs(s[t][a])
            }
            for e in w[t].indices {
                let gi = Double(g[t][e])
                m[t][e] = beta1 * m[t][e] + d * (1 - beta1) * gi
                v[t][e] = beta2 * v[t][e] + d * d * (1 - beta2) * gi * gi
            }
        }
        if denom > 0 {
            numerator = num
            if lr > 0 {
                let dHat = dCoef * num / denom
                if d == d0 { d = max(d, dHat) }
                dMax = max(dMax, dHat)
                d = min(dMax, d * growthRate)
            }
        }
        for t in w.indices {
            for e in w[t].indices {
                w[t][e] -= weightDecay * dlr * w[t][e]
                w[t][e] -= dlr * m[t][e] / (v[t][e].squareRoot() + d * eps)
            }
        }
        k += 1
    }
}

/// D-Adapted Lion over a group, straight from dadaptation's dadapt_lion.py
/// (fp64), with the statistics sampled every `slice`-th element.
struct ReferenceDAdaptLion {
    var beta1 = 0.9, beta2 = 0.99, weightDecay = 0.0, slice = 1
    var d = 1e-6, numerator = 0.0
    var m: [[Double]] = [], s: [[Double]] = []

    init(sizes: [Int], slice: Int) {
        self.slice = slice
        m = sizes.map { [Double](repeating: 0, count: $0) }
        s = sizes.map { [Double](repeating: 0, count: ($0 + slice - 1) / slice) }
    }

    mutating func step(_ w: inout [[Double]], _ g: [[Float]], lr: Double) {
        let dlr = d * lr, b = beta2.squareRoot()
        var acc = 0.0, sk = 0.0
        for t in w.indices {
            var u = [Double](repeating: 0, count: w[t].count)
            for e in w[t].indices {
                let c = beta1 * m[t][e] + (1 - beta1) * Double(g[t][e])
                u[e] = c > 0 ? 1 : c < 0 ? -1 : 0
                w[t][e] *= 1 - dlr * weightDecay
                w[t][e] -= dlr * u[e]
                m[t][e] = beta2 * m[t][e] + (1 - beta2) * dlr * Double(g[t][e])
            }
            for (a, e) in stride(from: 0, to: w[t].count, by: slice).enumerated() {
                acc += dlr * u[e] * s[t][a]
                s[t][a] = b * s[t][a] + (1 - b) * dlr * u[e]
                sk += abs(s[t][a])
            }
        }
        guard sk > 0 else { return }
        numerator = b * numerator + (1 - b) * acc
        if lr > 0 { d = max(d, numerator / ((1 - b) * sk)) }
    }
}
