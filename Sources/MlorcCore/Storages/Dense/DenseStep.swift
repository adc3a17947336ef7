/// Dense storage of a MomentRule: full-size moments in the state, the rule
/// applied element by element (the rule exactly, no compression).
struct DenseStep<Rule: MomentRule, E: TensorElements> {
    let rule: Rule
    let tensor: Optimizer.Prepared
    var rounding = WeightRounding.nearest

    private var elements: Int { tensor.header.rows * tensor.header.cols }

    /// Pass 1: whether every gradient entry is finite.
    func gradientIsFinite(_ context: StepContext) -> Bool {
        gradientIsWithin(.greatestFiniteMagnitude, tensor, E.self, context)
    }

    /// Cautious masking's scale, elements / (kept + 1), counted over the tensor.
    func cautiousScale(_ context: StepContext) -> Float {
        let n = elements, p = context.parts(for: n), t = tensor, rule = rule
        let m = t.moment(0), v = Rule.momentCount > 1 ? t.moment(1) : nil
        var kept = [Int](repeating: 0, count: p)
        kept.withUnsafeMutableBufferPointer { keptp in
            context.pool.run(parts: p) { part in
                keptp[part] = denseCautiousKept(rule, E.self, weights: t.weights(E.self), grad: t.grad(E.self), m: m, v: v,
                                                range: partition(n, parts: p, part: part, align: 8))
            }
        }
        return Float(Double(n) / Double(kept.reduce(0, +) + 1))
    }

    /// Before the commit, with the final rule (cautious scale included): nil,
    /// or why the step must be refused. Bounds of |w|, |g|, |m|, |v| from one
    /// read-only scan prove the outputs finite where they can; otherwise a
    /// rehearsal of `update` decides exactly.
    func verify(_ context: StepContext) -> String? {
        let n = elements, p = context.parts(for: n), t = tensor
        let m = t.moment(0), v = Rule.momentCount > 1 ? t.moment(1) : nil
        var scans = [SIMD4<Int32>](repeating: .zero, count: p)
        scans.withUnsafeMutableBufferPointer { out in
            context.pool.run(parts: p) { part in
                let range = partition(n, parts: p, part: part, align: 8)
                out[part] = SIMD4(maxMagnitudeBits(E.Param.self, t.weights(E.self), range),
                                  maxMagnitudeBits(E.Grad.self, t.grad(E.self), range),
                                  maxMagnitudeBits(F32.self, m, range),
                                  v.map { maxMagnitudeBits(F32.self, $0, range) } ?? 0)
            }
        }
        let bits = scans.reduce(SIMD4<Int32>.zero) { SIMD4($0.x > $1.x ? $0.x : $1.x, $0.y > $1.y ? $0.y : $1.y,
                                                          $0.z > $1.z ? $0.z : $1.z, $0.w > $1.w ? $0.w : $1.w) }
        let w = OutputBounds.magnitude(ofBits: bits.x), g = OutputBounds.magnitude(ofBits: bits.y)
        let moments = PerMoment(OutputBounds.magnitude(ofBits: bits.z), OutputBounds.magnitude(ofBits: bits.w))
        if !g.isFinite { return "gradient contains NaN or infinity" }
        if !w.isFinite { return "the weights contain NaN or infinity" }
        if !moments[0].isFinite || !moments[1].isFinite { return "the state's moments contain NaN or infinity" }
        // A negative second moment (a dense state is caller memory) is not
        // covered by magnitude bounds: its square root is NaN. Rehearse then.
        if let v, Rule.momentCount > 1, Rule.isNonNegative(1) {
            var negative = [Bool](repeating: false, count: p)
            negative.withUnsafeMutableBufferPointer { out in
                context.pool.run(parts: p) { part in
                    let range = partition(n, parts: p, part: part, align: 8)
                    var e = range.lowerBound
                    while e < range.upperBound && !out[part] {
                        out[part] = any(F32.load8(v + e, min(8, range.upperBound - e)) .< SIMD8(repeating: 0))
                        e += 8
                    }
                }
            }
            if negative.contains(true) { return rehearse(context) }
        }
        let modifiers = rule.modifiers
        let gradient = Double(abs(modifiers.gradScale)) * g + Double(abs(modifiers.weightMix)) * w
        let scale = modifiers.cautiousScale != 0 ? Double(modifiers.cautiousScale) : 1
        if let b = rule.outputBounds(grad: gradient, moments: moments) {
            let weights = w * (1 + Double(rule.decayRate)) + Double(rule.stepSize) * b.direction * scale
            // The direction is an fp32 intermediate too (before the step size scales it).
            if weights <= E.Stored.provenBound, max(b.moments[0], b.moments[1], b.direction * scale) <= OutputBounds.proven {
                return nil
            }
        }
        return rehearse(context)
    }

    /// The exact verdict: the update's arithmetic run without writing.
    private func rehearse(_ context: StepContext) -> String? {
        let n = elements, p = context.parts(for: n), t = tensor, rule = rule
        let m = t.moment(0), v = Rule.momentCount > 1 ? t.moment(1) : nil
        var bits = [(outputs: Int32, grad: Int32)](repeating: (0, 0), count: p)
        bits.withUnsafeMutableBufferPointer { out in
            context.pool.run(parts: p) { part in
                out[part] = denseOutputBits(rule, E.self, weights: t.weights(E.self), grad: t.grad(E.self), m: m, v: v,
                                            range: partition(n, parts: p, part: part, align: 8), rounding: rounding)
            }
        }
        if OutputBounds.magnitude(ofBits: bits.map(\.grad).max()!).isInfinite {
            return "gradient contains NaN or infinity"
        }
        if OutputBounds.magnitude(ofBits: bits.map(\.outputs).max()!).isInfinite {
            return "the new weights or moments would not be finite (check the state, the gradient's scale and lr)"
        }
        return nil
    }

    /// Pass 2: the moments and the weights, in place (the rule carries the
    /// cautious scale, counted in verify).
    func update(_ context: StepContext) {
        let n = elements, p = context.parts(for: n), t = tensor
        let m = t.moment(0), v = Rule.momentCount > 1 ? t.moment(1) : nil
        let updating = rule
        context.pool.run(parts: p) { part in
            denseUpdate(updating, E.self, weights: t.weights(E.self), grad: t.grad(E.self), m: m, v: v,
                        range: partition(n, parts: p, part: part, align: 8), rounding: rounding)
        }
    }
}

/// Whether every gradient entry of `t` has magnitude <= bound (NaN fails),
/// checked in parallel parts.
func gradientIsWithin<E: TensorElements>(_ bound: Float, _ t: Optimizer.Prepared, _: E.Type,
                                         _ context: StepContext) -> Bool {
    let n = t.header.rows * t.header.cols, p = context.parts(for: n)
    var ok = [Bool](repeating: true, count: p)
    ok.withUnsafeMutableBufferPointer { okp in
        context.pool.run(parts: p) { part in
            let range = partition(n, parts: p, part: part, align: 8)
            okp[part] = allWithin(E.Grad.self, t.grad(E.self) + range.lowerBound, count: range.count, bound: bound)
        }
    }
    return !ok.contains(false)
}
