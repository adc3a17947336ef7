#if canImport(Glibc)
import Glibc
#endif

/// The step-size estimate of the D-adaptation rules, a reduction over every
/// tensor of a step (the batched call is the group).
///
/// Each tensor keeps its statistics on every `stride`-th element e (flat
/// index, e = 0, stride, 2·stride, …), as prodigyopt's `slice_p` does: stride
/// 1 is the references exactly; larger strides estimate the same sums from a
/// sample, for stride-times less memory. They follow the moments in the
/// payload: s (Prodigy, DAdapt-Lion), then p0 (Prodigy: the weights at the
/// tensor's first step). A row shard keeps the samples of the whole matrix
/// that fall in its rows (flat indices of the whole matrix), so that the
/// shards' sums add up to the whole matrix's and its statistics split and
/// join by rows (samples(first:elements:stride:)).
///
/// Prodigy, with dlr = d·lr·bc and α = (d/d0)·dlr:
///   numerator ← β3·numerator + Σ_e (d/d0)·dlr·g_e·(p0_e − w_e)
///   s_e ← β3·s_e + α·g_e;  denominator = Σ_e |s_e|
///   d̂ = d_coef·numerator/denominator; d ← max(d, d̂) while d = d0;
///   d_max ← max(d_max, d̂); d ← min(d_max, growth_rate·d).
/// DAdapt-Lion, with dlr = d·lr, u = the sign direction, b = √β2:
///   acc = Σ_e dlr·u_e·s_e;  s_e ← b·s_e + (1−b)·dlr·u_e;  sk = Σ_e |s_e|
///   numerator ← b·numerator + (1−b)·acc;  d ← max(d, numerator/((1−b)·sk)).
/// The estimate is updated only for lr > 0 and a positive denominator (the
/// references skip such steps entirely; here the weights still move with the
/// unchanged d). Sums are taken in fp64, in element order, by one thread:
/// the result does not depend on the thread count.
enum DAdaptation {
    static let maxStride = 1 << 20

    /// Samples among flat indices first ..< first + elements (multiples of stride).
    static func samples(first: Int = 0, elements: Int, stride: Int) -> Int {
        sampleIndex(first + elements, stride: stride) - sampleIndex(first, stride: stride)
    }

    /// The number of samples before flat index e: ⌈e / stride⌉.
    static func sampleIndex(_ e: Int, stride: Int) -> Int { e / stride + (e % stride == 0 ? 0 : 1) }

    /// Statistics floats of a tensor (or row shard) whose first element has
    /// flat index `first` in its matrix.
    static func statsFloats(_ rule: RuleKind, first: Int = 0, elements: Int, stride: Int) -> Int {
        guard stride >= 1 else { return 0 }
        return blocks(rule) * samples(first: first, elements: elements, stride: stride)
    }

    /// Arrays of samples a tensor keeps: s, and p0 for Prodigy.
    static func blocks(_ rule: RuleKind) -> Int { rule == .prodigy ? 2 : 1 }

    /// What one tensor contributes, and its new statistics.
    struct Contribution {
        var numerator = 0.0, denominator = 0.0

        static func + (a: Contribution, b: Contribution) -> Contribution {
            Contribution(numerator: a.numerator + b.numerator, denominator: a.denominator + b.denominator)
        }
    }

    /// The sampled view of one tensor: its statistics and how to read the
    /// previous momentum at an element (DAdapt-Lion's direction needs it).
    struct Tensor {
        let header: StateFormat.Header
        /// The weights the rule steps (the parameter, or its fp32 master) and
        /// the gradient, in their element types (read widened).
        let weights: ElementRows, grad: ElementRows
        let payload: UnsafeMutablePointer<Float>
        let modifiers: StepModifiers

        /// Flat index in the whole matrix of this tensor's first element.
        var first: Int { header.rowBegin * header.cols }
        var count: Int { DAdaptation.samples(first: first, elements: header.rows * header.cols, stride: header.statsStride) }
        /// The local element of sample 0 (the first multiple of the stride from `first`).
        var offset: Int { DAdaptation.sampleIndex(first, stride: header.statsStride) * header.statsStride - first }
        var s: UnsafeMutablePointer<Float> { payload + header.momentFloats }
        var p0: UnsafeMutablePointer<Float> { s + count }

        /// The gradient the rule sees at element e (after OrthoGrad / clipping).
        func gradient(_ e: Int) -> Float {
            modifiers.gradScale * grad[e] + modifiers.weightMix * weights[e]
        }

        /// The previous first moment at element e.
        func momentum(_ e: Int) -> Float {
            guard header.storage == .lowRank else { return payload[e] }
            let r = header.rank, i = e / header.cols, j = e % header.cols
            let f = Factors(header, payload: payload, moment: 0)
            var x: Float = 0
            for k in 0..<r {
                x += f.u[i * r + k] * f.s[k] * f.vt[Panel.offset(row: k, col: j, rows: r, cols: header.cols)]
            }
            return x
        }
    }

    /// Prodigy's per-tensor sums (read-only unless `write`, which stores the
    /// new s and, at the tensor's first step, p0).
    static func prodigy(_ t: Tensor, hyper: Hyperparameters, group: GroupState, dlr: Double,
                        write: Bool) -> Contribution {
        let stride = t.header.statsStride, first = t.header.step == 0, offset = t.offset
        let ratio = group.d / group.d0, alpha = ratio * dlr, beta3 = hyper.beta3
        var c = Contribution()
        for k in 0..<t.count {
            let e = offset + k * stride
            let g = Double(t.gradient(e)), w = t.weights[e]
            if !first { c.numerator += ratio * dlr * g * Double(t.p0[k] - w) }
            let s = Float(beta3 * Double(t.s[k]) + alpha * g)
            c.denominator += Double(abs(s))
            if write {
                t.s[k] = s
                if first { t.p0[k] = w }
            }
        }
        return c
    }

    /// DAdapt-Lion's per-tensor sums (read-only unless `write`).
    static func dadaptLion(_ t: Tensor, rule: DAdaptLionRule, hyper: Hyperparameters, dlr: Double,
                           write: Bool) -> Contribution {
        let stride = t.header.statsStride, offset = t.offset, b = hyper.beta2.squareRoot()
        var c = Contribution()
        for k in 0..<t.count {
            let e = offset + k * stride
            let u = rule.direction(SIMD8(repeating: t.momentum(e)), SIMD8(repeating: t.gradient(e)))[0]
            c.numerator += dlr * Double(u) * Double(t.s[k])
            let s = Float(b * Double(t.s[k]) + (1 - b) * dlr * Double(u))
            c.denominator += Double(abs(s))
            if write { t.s[k] = s }
        }
        return c
    }

    /// The step size of this step and the group state after it, from the
    /// tensors' summed contributions.
    static func update(_ group: GroupState, total: Contribution, hyper: Hyperparameters, lr: Double) -> GroupState {
        var g = group
        g.step += 1
        switch group.rule {
        case .prodigy:
            guard total.denominator > 0 else { return g }
            g.numerator = hyper.beta3 * group.numerator + total.numerator
            guard lr > 0 else { return g }
            let dHat = hyper.dCoef * g.numerator / total.denominator
            if g.d == g.d0 { g.d = max(g.d, dHat) }
            g.dMax = max(g.dMax, dHat)
            g.d = min(g.dMax, g.d * hyper.growthRate)
        default:
            guard total.denominator > 0 else { return g }
            let b = hyper.beta2.squareRoot()
            g.numerator = b * group.numerator + (1 - b) * total.numerator
            guard lr > 0 else { return g }
            g.d = max(g.d, g.numerator / ((1 - b) * total.denominator))
            g.dMax = g.d
        }
        return g
    }

    /// d·lr·bc of the coming step (bc: Prodigy's optional Adam bias correction).
    static func stepSize(_ group: GroupState, hyper: Hyperparameters, lr: Double) -> Double {
        guard group.rule == .prodigy, hyper.biasCorrection else { return group.d * lr }
        let k = Double(group.step + 1)
        return group.d * lr * (1 - pow(hyper.beta2, k)).squareRoot() / (1 - pow(hyper.beta1, k))
    }
}
