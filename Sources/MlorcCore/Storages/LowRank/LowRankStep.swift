/// One MLorc step of one tensor (paper Alg. 1/2 with the randomized SVD of
/// Alg. 3), organised as the streaming passes of docs/architecture.md ("Low-rank storage"):
///
///   sketch: Ω from (seed, tensor id, step); row pass → Y_k = A_k Ω with the
///           second moment's fix deferred (Y_v = XΩ + β2·c·NΩ); finiteness.
///   update: c; q power iterations (Z = AᵀQ, Y = A·orth(Z)); Q_k = qr(Y_k);
///           column pass → W updated and B_k = Q_kᵀ A_k; B_k = Ũ Σ Ṽᵀ;
///           new factors U = Q Ũ[:, :r], s = Σ[:r], Vt = Ṽᵀ[:r].
/// Only O((rows + cols)·l) scratch; no full-size matrix is ever built.
///
/// A bf16 state's factors are widened into the region by `sketch` and the
/// passes read that fp32 copy; `update` rounds the new factors back into the
/// state (O((rows + cols)·rank) each way, not per element of the tensor).
struct LowRankStep<Rule: MomentRule, A: WeightAccess> {
    let rule: Rule
    let prepared: Optimizer.Prepared
    let tensor: LowRankTensor<A>
    let hyper: Hyperparameters
    let region: UnsafeMutablePointer<Float>  // this tensor's region (regionFloats), kept from sketch to update
    /// The fix constants c when they come from elsewhere (a sharded step sums
    /// the negative-entry statistics over every rank); nil: from this tensor's rows.
    var fixOverride: PerMoment<Float>?

    var mc: Int { Rule.momentCount }
    var m: Int { tensor.rows }
    var n: Int { tensor.cols }
    var l: Int { tensor.sketchWidth }

    /// From the whole matrix's shape: every shard of a matrix sketches alike.
    static func sketchWidth(_ h: StateFormat.Header, _ hyper: Hyperparameters) -> Int {
        RandomizedSVD.sketchWidth(rank: h.rank, oversampling: hyper.oversampling, rows: h.shapeRows, cols: h.cols)
    }

    /// Floats of a tensor's region: its pass-1 results, kept for pass 2, and
    /// the fp32 copy of a bf16 state's factors.
    static func regionFloats(_ h: StateFormat.Header, _ hyper: Hyperparameters) -> Int {
        sketchRegionFloats(h, hyper) + (h.bf16Moments ? (Rule.momentCount * h.floatsPerMoment + 15) / 16 * 16 : 0)
    }

    private static func sketchRegionFloats(_ h: StateFormat.Header, _ hyper: Hyperparameters) -> Int {
        let ml = h.rows * sketchWidth(h, hyper)
        let round = { (x: Int) in (x + 15) / 16 * 16 }
        // y per moment, yNeg, rowSum and rowCount (doubles), inputBits (Int32 pairs).
        return Rule.momentCount * round(ml) + round(ml) + 3 * round(2 * h.rows)
    }

    init(rule: Rule, tensor p: Optimizer.Prepared, hyper: Hyperparameters, region: UnsafeMutablePointer<Float>,
         rounding: WeightRounding = .nearest) {
        self.rule = rule
        prepared = p
        self.hyper = hyper
        let h = p.header
        let factorPayload = h.bf16Moments ? region + Self.sketchRegionFloats(h, hyper) : p.payload
        func factors(_ k: Int) -> Factors { Factors(h, payload: factorPayload, moment: min(k, Rule.momentCount - 1)) }
        tensor = LowRankTensor(rows: h.rows, cols: h.cols, rank: h.rank, sketchWidth: Self.sketchWidth(h, hyper),
                               weights: p.kernelWeights, weightKind: p.elements.kernelParam,
                               grad: p.gradient, gradKind: p.elements.grad, storedKind: p.elements.stored,
                               factors: PerMoment(factors(0), factors(1)),
                               rounding: rounding)
        self.region = region
    }

    // Views into this tensor's region.
    var roundedML: Int { (m * l + 15) / 16 * 16 }
    func y(_ k: Int) -> UnsafeMutablePointer<Float> { region + k * roundedML }
    var yNeg: UnsafeMutablePointer<Float> { region + mc * roundedML }
    var rowSum: UnsafeMutablePointer<Double> {
        UnsafeMutableRawPointer(region + (mc + 1) * roundedML).assumingMemoryBound(to: Double.self)
    }
    var rowCount: UnsafeMutablePointer<Double> {
        UnsafeMutableRawPointer(region + (mc + 1) * roundedML + (2 * m + 15) / 16 * 16).assumingMemoryBound(to: Double.self)
    }
    var ys: PerMoment<UnsafeMutablePointer<Float>> { PerMoment(y(0), y(min(1, mc - 1))) }
    /// Per row, the largest magnitude bits of the raw gradient and the weights, which the sketch pass records.
    var inputBits: UnsafeMutablePointer<SIMD2<Int32>> {
        UnsafeMutableRawPointer(region + (mc + 1) * roundedML + 2 * ((2 * m + 15) / 16 * 16))
            .assumingMemoryBound(to: SIMD2<Int32>.self)
    }

    /// max |w| and max |g| over this tensor's rows (infinite if any is NaN or
    /// infinite), after `sketch`: from the sketch pass's reads, or, for the
    /// rules whose sketch takes the row pass instead (a first moment that is
    /// not linear in g), from scans.
    func inputBounds(_ context: StepContext) -> (weights: Double, grad: Double) {
        guard Rule.isLinear(0) else {
            let p = prepared, count = m * n
            return (OutputBounds.maxMagnitude(p.elements.kernelParam, p.kernelWeights, count: count, context: context),
                    OutputBounds.maxMagnitude(p.elements.grad, p.gradient, count: count, context: context))
        }
        var bits = SIMD2<Int32>(repeating: 0)
        for i in 0..<m { bits = pointwiseMax(bits, inputBits[i]) }
        return (OutputBounds.magnitude(ofBits: bits.y), OutputBounds.magnitude(ofBits: bits.x))
    }

    func threadScratch(_ parts: Int, _ workspace: inout Workspace) throws(MlorcError) -> (UnsafeMutablePointer<Float>, Int) {
        let stride = passScratchFloats(rank: tensor.rank, sketchWidth: l)
        return (try workspace.floats(.threadScratch, stride * parts), stride)
    }

    /// Pass 1: reads only. Returns false if the gradient is not finite.
    func sketch(workspace: inout Workspace, pool: ThreadPool, parts: Int) throws(MlorcError) -> Bool {
        if prepared.header.bf16Moments { widenFactors() }
        // Ω[b, j] is normal number b·cols + j of this (seed, tensor, step).
        let staging = try workspace.floats(.staging, l * n), omega = try workspace.floats(.omega, l * n)
        RandomizedSVD.drawTestMatrix(seed: hyper.seed, tensorID: prepared.header.tensorID,
                                     step: prepared.header.step + 1, count: l * n, into: staging)
        Panel.fromRowMajor(staging, into: omega, rows: l, cols: n)
        let (scratch, stride) = try threadScratch(parts, &workspace)
        let t = tensor, negatives = (yNeg, rowSum, rowCount), rule = rule, inputBits = inputBits
        if Rule.isLinear(0) {
            // Linear moments from GΩ; at most the non-negative slot 1 is rebuilt.
            let gradSketch = try workspace.floats(.gradSketch, m * l)
            let nonLinearY = y(mc - 1)
            pool.run(parts: parts) { part in
                sketchPass(rule, t, rows: partition(t.rows, parts: parts, part: part), omega: omega,
                           gradSketch: gradSketch, y: nonLinearY, negatives: negatives, inputBits: inputBits,
                           scratch: scratch + part * stride)
            }
            // A NaN or infinity in the gradient reaches every entry of GΩ in its row.
            guard allWithin(gradSketch, count: m * l, bound: .greatestFiniteMagnitude) else { return false }
            for k in 0..<mc where Rule.isLinear(k) {
                finishLinearSketch(tensor.factors[k], rows: m, cols: n, rank: tensor.rank, sketchWidth: l,
                                   omega: omega, gradSketch: gradSketch, decay: rule.decay(k), gain: rule.gain(k),
                                   into: y(k), vtOmega: staging)
            }
        } else {
            // The first moment is not linear in g (a rule's first moment may read the fixed second
            // moment): c comes first, from the factors alone, then every moment is
            // rebuilt and sketched with it (yNeg stays 0).
            let rowSum = rowSum, rowCount = rowCount
            if fixOverride == nil {
                pool.run(parts: parts) { part in
                    negativeStatistics(t, rows: partition(t.rows, parts: parts, part: part), rowSum: rowSum,
                                       rowCount: rowCount, scratch: scratch + part * stride)
                }
            }
            yNeg.initialize(repeating: 0, count: m * l)
            let c = fixConstants(), sketch = PerMoment(UnsafePointer(omega), UnsafePointer(omega)), ys = ys
            pool.run(parts: parts) { part in
                rowPass(rule, t, rows: partition(t.rows, parts: parts, part: part), sketch: sketch,
                        c: c, y: ys, scratch: scratch + part * stride)
            }
        }
        // Non-finite gradients (or moments) make their rows' sketches non-finite.
        // Moments so large that the step could overflow in QᵀA (whose SVD would
        // then fail after the weights were written) are refused here, with the
        // non-finite ones: |y| ≈ the row norms of A, so |y| <= 1e24 keeps ‖A‖_F,
        // and the singular values this step writes, far below the 1e30 that
        // StateFormat.checkFactors accepts.
        for k in 0..<mc where !allWithin(y(k), count: m * l, bound: 1e24) { return false }
        return true
    }

    /// Whether every weight and moment value this step's update computes is
    /// finite (after `sketch`, with the step's final rule): proven from bounds
    /// of the inputs (|w| and |g| from read-only scans, the validated factors)
    /// where they suffice, else checked exactly by a read-only column pass.
    func outputsAreFinite(weightBound w: Double, gradBound g: Double, workspace: inout Workspace,
                          pool: ThreadPool, parts: Int) throws(MlorcError) -> Bool {
        let modifiers = rule.modifiers
        let gradient = Double(abs(modifiers.gradScale)) * g + Double(abs(modifiers.weightMix)) * w
        var moments = PerMoment<Double>(repeating: 0)
        for k in 0..<mc {
            moments[k] = OutputBounds.factorBound(tensor.factors[k], rows: m, cols: n, rank: tensor.rank)
        }
        // Cautious masking scales by at most N / 1, or by the scale a sharded step counted over every rank.
        let preset = rule.modifiers.cautiousScale != 0
        let scale = hyper.cautious ? (preset ? Double(rule.modifiers.cautiousScale) : Double(m * n)) : 1
        if let b = rule.outputBounds(grad: gradient, moments: moments) {
            let weights = w * (1 + Double(rule.decayRate)) + Double(rule.stepSize) * b.direction * scale
            // The direction is an fp32 intermediate too (before the step size scales it).
            if weights <= tensor.storedKind.provenBound,
               max(b.moments[0], b.moments[1], b.direction * scale) <= OutputBounds.proven { return true }
        }
        // Inconclusive: rehearse the update's arithmetic without writing.
        let c = fixConstants()
        var rule = rule
        let (scratch, stride) = try threadScratch(parts, &workspace)
        let t = tensor, ys = ys, q = PerMoment(UnsafePointer(ys.first), UnsafePointer(ys.second))
        let keptBase = UnsafeMutablePointer<Int>.allocate(capacity: parts)
        keptBase.initialize(repeating: 0, count: parts)
        defer { keptBase.deallocate() }
        if hyper.cautious && !preset {
            let counting = rule
            pool.run(parts: parts) { part in
                columnPass(counting, t, cols: partition(t.cols, parts: parts, part: part, align: 8), q: q, c: c,
                           out: ys, updateWeights: false, scratch: scratch + part * stride,
                           kept: keptBase + part, countKept: true)
            }
            let total = (0..<parts).reduce(0) { $0 + keptBase[$1] }
            rule.modifiers.cautiousScale = Float(Double(m * n) / Double(total + 1))
        }
        let checking = rule
        pool.run(parts: parts) { part in
            columnPass(checking, t, cols: partition(t.cols, parts: parts, part: part, align: 8), q: q, c: c,
                       out: ys, updateWeights: false, scratch: scratch + part * stride,
                       kept: keptBase + part, checkOutputs: true)
        }
        let bits = (0..<parts).map { Int32(truncatingIfNeeded: keptBase[$0]) }.max() ?? 0
        return OutputBounds.magnitude(ofBits: bits).isFinite
    }

    /// c_k = mean |R_ij| over the negative entries of the previous second
    /// moment (0 if none), from the per-row statistics summed in row order.
    func fixConstants() -> PerMoment<Float> {
        if let fixOverride { return fixOverride }
        var c = PerMoment<Float>(repeating: 0)
        for k in 0..<mc where Rule.isNonNegative(k) {
            var sum = 0.0, count = 0.0
            for i in 0..<m { sum += rowSum[i]; count += rowCount[i] }
            c[k] = count > 0 ? Float(sum / count) : 0
        }
        return c
    }

    /// Pass 2 and the factor refresh: writes the weights and the state's factors.
    func update(workspace: inout Workspace, pool: ThreadPool, parts: Int) throws(MlorcError) {
        let c = fixConstants()
        for k in 0..<mc where Rule.isNonNegative(k) {
            let shift = rule.decay(k) * c[k], yk = y(k)
            if shift != 0 { for e in 0..<(m * l) { yk[e] += shift * yNeg[e] } }
        }
        let (scratch, stride) = try threadScratch(parts, &workspace)
        let panels = try workspace.floats(.panels, mc * l * n)
        let panel = PerMoment(panels, panels + (mc - 1) * l * n)
        let t = tensor, ys = ys
        var rule = rule
        // One counter per part for cautious masking (the passes need a place either way).
        let keptBase = UnsafeMutablePointer<Int>.allocate(capacity: parts)
        keptBase.initialize(repeating: 0, count: parts)
        defer { keptBase.deallocate() }

        // Z_k = A_kᵀQ_k is formed in panel layout by a column pass and
        // orthonormalised as a cols x l column-major matrix (= row-major
        // l x cols); back in panel layout it is the next row pass's sketch.
        let zStride = (l * n + 15) / 16 * 16
        try RandomizedSVD.powerIterations(
            (0..<mc).map(y), rows: m, cols: n, width: l, count: hyper.powerIterations, workspace: &workspace,
            transposeProducts: { workspace throws(MlorcError) in
                panels.initialize(repeating: 0, count: mc * l * n)
                pool.run(parts: parts) { part in
                    columnPass(rule, t, cols: partition(t.cols, parts: parts, part: part, align: 8),
                               q: PerMoment(UnsafePointer(ys.first), UnsafePointer(ys.second)), c: c,
                               out: panel, updateWeights: false, scratch: scratch + part * stride, kept: keptBase + part)
                }
                let staging = try workspace.floats(.staging, mc * zStride)
                return (0..<mc).map { k in
                    Panel.toRowMajor(panel[k], into: staging + k * zStride, rows: l, cols: n)
                    return staging + k * zStride
                }
            },
            products: { zs, _ throws(MlorcError) in
                for k in 0..<mc { Panel.fromRowMajor(zs[k], into: panel[k], rows: l, cols: n) }
                pool.run(parts: parts) { part in
                    rowPass(rule, t, rows: partition(t.rows, parts: parts, part: part),
                            sketch: PerMoment(UnsafePointer(panel.first), UnsafePointer(panel.second)), c: c,
                            y: ys, scratch: scratch + part * stride)
                }
            })
        if hyper.cautious {
            // Cautious masking scales by elements / (kept + 1): count first.
            let counting = rule
            pool.run(parts: parts) { part in
                columnPass(counting, t, cols: partition(t.cols, parts: parts, part: part, align: 8),
                           q: PerMoment(UnsafePointer(ys.first), UnsafePointer(ys.second)), c: c,
                           out: panel, updateWeights: false, scratch: scratch + part * stride,
                           kept: keptBase + part, countKept: true)
            }
            let total = (0..<parts).reduce(0) { $0 + keptBase[$1] }
            rule.modifiers.cautiousScale = Float(Double(m * n) / Double(total + 1))
        }
        panels.initialize(repeating: 0, count: mc * l * n)
        let updating = rule
        pool.run(parts: parts) { part in
            columnPass(updating, t, cols: partition(t.cols, parts: parts, part: part, align: 8),
                       q: PerMoment(UnsafePointer(ys.first), UnsafePointer(ys.second)), c: c,
                       out: panel, updateWeights: true, scratch: scratch + part * stride, kept: keptBase + part)
        }
        for k in 0..<mc { try refreshFactors(k, b: panel[k], workspace: &workspace) }
        if prepared.header.bf16Moments { roundFactors() }
    }

    /// A bf16 state's factors, widened (exactly) into their fp32 copy.
    private func widenFactors() {
        let h = prepared.header, copy = tensor.factors.first.u
        let stored = UnsafeRawPointer(prepared.payload).assumingMemoryBound(to: UInt16.self)
        for e in 0..<(mc * h.floatsPerMoment) { copy[e] = Float(bitPattern: UInt32(stored[e]) << 16) }
    }

    /// The new factors rounded into the bf16 state: moment k's element e (U,
    /// s, Vt as they lie in the payload) takes the bits of element e of
    /// moment k's rounding stream.
    private func roundFactors() {
        let h = prepared.header, n = h.floatsPerMoment
        for k in 0..<mc {
            let copy = UnsafePointer(tensor.factors[k].u), stored = prepared.momentBytes(k)
            let rounding = prepared.momentRounding(k, hyper)
            var e = 0
            while e < n {
                let count = min(8, n - e)
                ElementKind.bf16.store8(F32.load8(copy + e, count), stored, e, count, rounding: rounding)
                e += 8
            }
        }
    }

    /// B_k (an l x cols panel; row-major it is B_kᵀ as cols x l column-major)
    /// = Ũ Σ Ṽᵀ: keeps the leading `rank` triplets as the new factors of moment k.
    private func refreshFactors(_ k: Int, b panel: UnsafeMutablePointer<Float>, workspace: inout Workspace) throws(MlorcError) {
        let b = try workspace.floats(.staging, l * n)
        Panel.toRowMajor(panel, into: b, rows: l, cols: n)
        try RandomizedSVD.storeLeadingTriplets(transposedB: b, q: y(k), rows: m, cols: n, width: l, rank: tensor.rank,
                                               into: tensor.factors[k], workspace: &workspace)
    }
}
