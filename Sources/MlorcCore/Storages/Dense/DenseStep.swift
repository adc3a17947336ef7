/// Dense storage of a MomentRule: full-size moments in the state, the rule
/// applied element by element (the rule exactly, no compression). A is the
/// fp32 path or the one for every other element type (DenseAccess.swift).
struct DenseStep<Rule: MomentRule, A: DenseAccess> {
    let rule: Rule
    let tensor: DenseTensor
    let elements: Int

    init(rule: Rule, tensor: Optimizer.Prepared, hyper: Hyperparameters) {
        self.rule = rule
        self.tensor = tensor.denseTensor(hyper)
        elements = tensor.header.rows * tensor.header.cols
    }

    /// Pass 1: whether every gradient entry is finite.
    func gradientIsFinite(_ context: StepContext) -> Bool {
        gradientIsWithin(.greatestFiniteMagnitude, tensor.gradKind, tensor.grad, count: elements, context)
    }

    /// Cautious masking's scale, elements / (kept + 1), counted over the tensor.
    func cautiousScale(_ context: StepContext) -> Float {
        let n = elements, p = context.parts(for: n), t = tensor, rule = rule
        var kept = [Int](repeating: 0, count: p)
        kept.withUnsafeMutableBufferPointer { keptp in
            context.pool.run(parts: p) { part in
                keptp[part] = denseCautiousKept(rule, A.self, t, range: partition(n, parts: p, part: part, align: 8))
            }
        }
        return Float(Double(n) / Double(kept.reduce(0, +) + 1))
    }

    /// Before the commit, with the final rule (cautious scale included): nil,
    /// or why the step must be refused. Bounds of |w|, |g|, |m|, |v| from one
    /// read-only scan (which also looks for a negative second moment) prove
    /// the outputs finite where they can; otherwise a rehearsal of `update`
    /// decides exactly.
    func verify(_ context: StepContext) -> String? {
        let n = elements, p = context.parts(for: n), t = tensor, two = Rule.momentCount > 1
        let checkNegative = two && Rule.isNonNegative(1)
        var scans = [DenseScan](repeating: DenseScan(), count: p)
        scans.withUnsafeMutableBufferPointer { out in
            context.pool.run(parts: p) { part in
                out[part] = denseScan(t, twoMoments: two, checkNegative: checkNegative,
                                      partition(n, parts: p, part: part, align: 8))
            }
        }
        let bits = scans.reduce(SIMD4<Int32>.zero) { SIMD4($0.x > $1.bits.x ? $0.x : $1.bits.x, $0.y > $1.bits.y ? $0.y : $1.bits.y,
                                                          $0.z > $1.bits.z ? $0.z : $1.bits.z, $0.w > $1.bits.w ? $0.w : $1.bits.w) }
        let w = OutputBounds.magnitude(ofBits: bits.x), g = OutputBounds.magnitude(ofBits: bits.y)
        let moments = PerMoment(OutputBounds.magnitude(ofBits: bits.z), OutputBounds.magnitude(ofBits: bits.w))
        if !g.isFinite { return "gradient contains NaN or infinity" }
        if !w.isFinite { return "the weights contain NaN or infinity" }
        if !moments[0].isFinite || !moments[1].isFinite { return "the state's moments contain NaN or infinity" }
        // A negative second moment (a dense state is caller memory) is not
        // covered by magnitude bounds: its square root is NaN. Rehearse then.
        if scans.contains(where: \.negative) { return rehearse(context) }
        let modifiers = rule.modifiers
        let gradient = Double(abs(modifiers.gradScale)) * g + Double(abs(modifiers.weightMix)) * w
        let scale = modifiers.cautiousScale != 0 ? Double(modifiers.cautiousScale) : 1
        if let b = rule.outputBounds(grad: gradient, moments: moments) {
            let weights = w * (1 + Double(rule.decayRate)) + Double(rule.stepSize) * b.direction * scale
            // The direction is an fp32 intermediate too (before the step size
            // scales it). bf16 moments share fp32's range: the same bound holds.
            if weights <= t.storedKind.provenBound, max(b.moments[0], b.moments[1], b.direction * scale) <= OutputBounds.proven {
                return nil
            }
        }
        return rehearse(context)
    }

    /// The exact verdict: the update's arithmetic run without writing.
    private func rehearse(_ context: StepContext) -> String? {
        let n = elements, p = context.parts(for: n), t = tensor, rule = rule
        var bits = [(outputs: Int32, grad: Int32)](repeating: (0, 0), count: p)
        bits.withUnsafeMutableBufferPointer { out in
            context.pool.run(parts: p) { part in
                out[part] = denseOutputBits(rule, A.self, t, range: partition(n, parts: p, part: part, align: 8))
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
        let updating = rule
        context.pool.run(parts: p) { part in
            denseUpdate(updating, A.self, t, range: partition(n, parts: p, part: part, align: 8))
        }
    }
}

/// Whether every gradient entry (n of `kind` at `grad`) has magnitude <= bound
/// (NaN fails), checked in parallel parts.
func gradientIsWithin(_ bound: Float, _ kind: ElementKind, _ grad: UnsafeRawPointer, count n: Int,
                      _ context: StepContext) -> Bool {
    let p = context.parts(for: n)
    var ok = [Bool](repeating: true, count: p)
    ok.withUnsafeMutableBufferPointer { okp in
        context.pool.run(parts: p) { part in
            let range = partition(n, parts: p, part: part, align: 8)
            okp[part] = maxMagnitudeBits(kind, grad, range) <= Int32(bitPattern: bound.bitPattern)
        }
    }
    return !ok.contains(false)
}
