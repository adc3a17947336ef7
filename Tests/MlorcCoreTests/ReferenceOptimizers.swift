import Foundation

/// Straightforward dense AdamW and Lion in double precision, written from the
/// equations (torch.optim.AdamW conventions), independent of the library's code.
struct ReferenceAdamW {
    var beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.01
    var m: [Double], v: [Double], t = 0

    init(count: Int) { m = .init(repeating: 0, count: count); v = m }

    mutating func step(_ w: inout [Double], _ g: [Float], lr: Double) {
        t += 1
        let bc1 = 1 - pow(beta1, Double(t)), bc2 = 1 - pow(beta2, Double(t))
        for i in w.indices {
            let gi = Double(g[i])
            w[i] *= 1 - lr * weightDecay
            m[i] = beta1 * m[i] + (1 - beta1) * gi
            v[i] = beta2 * v[i] + (1 - beta2) * gi * gi
            w[i] -= lr / bc1 * m[i] / ((v[i] / bc2).squareRoot() + eps)
        }
    }
}

struct ReferenceLion {
    var beta1 = 0.95, beta2 = 0.98, weightDecay = 0.05
    var m: [Double]

    init(count: Int) { m = .init(repeating: 0, count: count) }

    mutating func step(_ w: inout [Double], _ g: [Float], lr: Double) {
        for i in w.indices {
            let gi = Double(g[i])
            let c = beta1 * m[i] + (1 - beta1) * gi
            w[i] = w[i] * (1 - lr * weightDecay) - lr * (c > 0 ? 1 : c < 0 ? -1 : 0)
            m[i] = beta2 * m[i] + (1 - beta2) * gi
        }
    }
}

/// ADOPT (arXiv 2411.02853) in double precision: the first step sets v = g²;
/// then n = g / max(√v, ε) (clipped to ±(t−1)^{1/4} if asked), m = β1·m + (1−β1)·n,
/// w ← w·(1 − lr·λ) − lr·m, v = β2·v + (1−β2)·g².
struct ReferenceAdopt {
    var beta1 = 0.9, beta2 = 0.9999, eps = 1e-6, weightDecay = 0.0
    let clip: Bool
    var m: [Double], v: [Double], t = 0

    init(count: Int, clip: Bool) { m = .init(repeating: 0, count: count); v = m; self.clip = clip }

    mutating func step(_ w: inout [Double], _ g: [Float], lr: Double) {
        t += 1
        if t == 1 {
            v = g.map { Double($0) * Double($0) }
            return
        }
        let bound = clip ? pow(Double(t - 1), 0.25) : .infinity
        for i in w.indices {
            let gi = Double(g[i])
            let n = min(max(gi / max(v[i].squareRoot(), eps), -bound), bound)
            m[i] = beta1 * m[i] + (1 - beta1) * n
            w[i] = w[i] * (1 - lr * weightDecay) - lr * m[i]
            v[i] = beta2 * v[i] + (1 - beta2) * gi * gi
        }
    }
}
