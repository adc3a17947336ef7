import CVectorMath

/// The two streaming passes of a low-rank (MLorc) step (docs/architecture.md, "Low-rank storage"). Neither
/// materialises a full moment: each rebuilds the previous moments of one 8-wide
/// row segment from their factors in registers, applies the rule, and folds
/// the new moments straight into thin products with the sketch.
///
/// Row passes split rows between threads and column passes split columns, so
/// each output element is accumulated by one thread in one fixed order: the
/// result is bit-identical for any thread count.
///
/// Index arithmetic uses wrapping operators: every index is bounded by sizes
/// validated at the C boundary (rows, cols < 2^31), so overflow checks in the
/// inner loops would only cost time.

/// Two of anything, one per moment slot (rules have one or two moments).
struct PerMoment<T> {
    var first: T
    var second: T
    init(_ first: T, _ second: T) { self.first = first; self.second = second }
    init(repeating value: T) { first = value; second = value }
    @inline(__always) subscript(k: Int) -> T {
        get { k == 0 ? first : second }
        set { if k == 0 { first = newValue } else { second = newValue } }
    }
}

/// One low-rank tensor of a step.
/// How the passes load and store weights and gradients: FP32Access for fp32
/// tensors (plain vector moves, the fast path), AnyElementAccess for the
/// other element types (a predictable branch on each tensor's ElementKind).
protocol WeightAccess {
    static func loadWeights(_ t: LowRankTensor<Self>, _ e: Int, _ count: Int) -> SIMD8<Float>
    static func loadGrad(_ t: LowRankTensor<Self>, _ e: Int, _ count: Int) -> SIMD8<Float>
    static func storeWeights(_ v: SIMD8<Float>, _ t: LowRankTensor<Self>, _ e: Int, _ count: Int)
    /// v as the caller's parameter would hold it (the stored type's rounding).
    static func stored(_ v: SIMD8<Float>, _ t: LowRankTensor<Self>, _ e: Int) -> SIMD8<Float>
    /// Prefetches the gradient and weights ahead of element e (full chunks of the streaming passes).
    static func prefetchInputs(_ t: LowRankTensor<Self>, _ e: Int)

    /// The column pass (update or accumulate only) and the sketch pass of a
    /// rule with no option on (MomentRule.optionsOff) through PlainRule, if
    /// this access has that path for the tensor's shape; false if not.
    /// FP32Access has it for the common ranks and widths, AnyElementAccess
    /// for ranks 4 and 8 only: each is one more compiled copy of the hot loops.
    static func columnPassWithoutOptions<Rule: MomentRule>(
        _ rule: Rule, _ t: LowRankTensor<Self>, _ cols: Range<Int>, _ q: PerMoment<UnsafePointer<Float>>,
        _ c: PerMoment<Float>, _ out: PerMoment<UnsafeMutablePointer<Float>>, updateWeights: Bool,
        _ scratch: UnsafeMutablePointer<Float>, _ kept: UnsafeMutablePointer<Int>) -> Bool
    static func sketchPassWithoutOptions<Rule: MomentRule>(_ rule: Rule, _ t: LowRankTensor<Self>, _ a: SketchRows) -> Bool
}

extension WeightAccess {
    static func columnPassWithoutOptions<Rule: MomentRule>(
        _ rule: Rule, _ t: LowRankTensor<Self>, _ cols: Range<Int>, _ q: PerMoment<UnsafePointer<Float>>,
        _ c: PerMoment<Float>, _ out: PerMoment<UnsafeMutablePointer<Float>>, updateWeights: Bool,
        _ scratch: UnsafeMutablePointer<Float>, _ kept: UnsafeMutablePointer<Int>) -> Bool { false }
    static func sketchPassWithoutOptions<Rule: MomentRule>(_ rule: Rule, _ t: LowRankTensor<Self>, _ a: SketchRows) -> Bool {
        false
    }
}

/// A rule with every option off as a compile-time constant (default
/// modifiers, the rule's own option not tested), so that the kernels' loops
/// hold none of their per-chunk tests. Only for rules whose optionsOff is
/// true: it then computes exactly what the rule does.
struct PlainRule<Base: MomentRule>: MomentRule {
    let base: Base
    init(_ base: Base) { self.base = base }
    static var momentCount: Int { Base.momentCount }
    static func isNonNegative(_ k: Int) -> Bool { Base.isNonNegative(k) }
    func decay(_ k: Int) -> Float { base.decay(k) }
    static func isLinear(_ k: Int) -> Bool { Base.isLinear(k) }
    func gain(_ k: Int) -> Float { base.gain(k) }
    var stepSize: Float { base.stepSize }
    var decayRate: Float { base.decayRate }
    var modifiers: StepModifiers {
        get { StepModifiers() }
        set { preconditionFailure("PlainRule's modifiers are constant") }
    }
    func outputBounds(grad g: Double, moments: PerMoment<Double>) -> (moments: PerMoment<Double>, direction: Double)? {
        base.outputBounds(grad: g, moments: moments)
    }
    @inline(__always)
    func apply(_ m: inout SIMD8<Float>, _ v: inout SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        base.applyWithoutRuleOption(&m, &v, g)
    }
}

enum FP32Access: WeightAccess {
    @_transparent static func loadWeights(_ t: LowRankTensor<Self>, _ e: Int, _ count: Int) -> SIMD8<Float> {
        F32.load8(t.weights.assumingMemoryBound(to: Float.self) + e, count)
    }
    @_transparent static func loadGrad(_ t: LowRankTensor<Self>, _ e: Int, _ count: Int) -> SIMD8<Float> {
        F32.load8(t.grad.assumingMemoryBound(to: Float.self) + e, count)
    }
    @_transparent static func storeWeights(_ v: SIMD8<Float>, _ t: LowRankTensor<Self>, _ e: Int, _ count: Int) {
        F32.store8(v, t.weights.assumingMemoryBound(to: Float.self) + e, count)
    }
    @_transparent static func stored(_ v: SIMD8<Float>, _ t: LowRankTensor<Self>, _ e: Int) -> SIMD8<Float> { v }
    @_transparent static func prefetchInputs(_ t: LowRankTensor<Self>, _ e: Int) {
        prefetchF32(t.grad, e)
        prefetchF32(t.weights, e)
    }

    static func columnPassWithoutOptions<Rule: MomentRule>(
        _ rule: Rule, _ t: LowRankTensor<Self>, _ cols: Range<Int>, _ q: PerMoment<UnsafePointer<Float>>,
        _ c: PerMoment<Float>, _ out: PerMoment<UnsafeMutablePointer<Float>>, updateWeights: Bool,
        _ scratch: UnsafeMutablePointer<Float>, _ kept: UnsafeMutablePointer<Int>
    ) -> Bool {
        if updateWeights && knownShapeUpdate(rule, t, cols, q, c, out, scratch, kept) { return true }
        let plain = PlainRule(rule), l = t.sketchWidth
        // The unrolled widths only; the rare narrower sketches keep the general path.
        switch (l == 8 ? 8 : l >= 4 ? 4 : 0, updateWeights) {
        case (8, true): columnPass(plain, t, cols, q, c, out, Width8.self, UpdateWeights.self, AnyShape.self, scratch, kept)
        case (8, false): columnPass(plain, t, cols, q, c, out, Width8.self, KeepWeights.self, AnyShape.self, scratch, kept)
        case (4, true): columnPass(plain, t, cols, q, c, out, Width4.self, UpdateWeights.self, AnyShape.self, scratch, kept)
        case (4, false): columnPass(plain, t, cols, q, c, out, Width4.self, KeepWeights.self, AnyShape.self, scratch, kept)
        default: return false
        }
        return true
    }

    static func sketchPassWithoutOptions<Rule: MomentRule>(_ rule: Rule, _ t: LowRankTensor<Self>, _ a: SketchRows) -> Bool {
        // Sketch widths that are multiples of 4 only: one sweep width compiled, not four.
        guard t.sketchWidth % 4 == 0 else { return false }
        if knownShapeSketch(rule, t, a) { return true }
        let plain = PlainRule(rule)
        sketchRows(t, a, momentCount: Rule.momentCount) { sweep, _ in sketchSweep(plain, sweep, Width4.self, AnyShape.self) }
        return true
    }
}

enum AnyElementAccess: WeightAccess {
    @_transparent static func loadWeights(_ t: LowRankTensor<Self>, _ e: Int, _ count: Int) -> SIMD8<Float> {
        t.weightKind.load8(UnsafeRawPointer(t.weights), e, count)
    }
    @_transparent static func loadGrad(_ t: LowRankTensor<Self>, _ e: Int, _ count: Int) -> SIMD8<Float> {
        t.gradKind.load8(t.grad, e, count)
    }
    @_transparent static func storeWeights(_ v: SIMD8<Float>, _ t: LowRankTensor<Self>, _ e: Int, _ count: Int) {
        t.weightKind.store8(v, t.weights, e, count, rounding: t.rounding)
    }
    @_transparent static func stored(_ v: SIMD8<Float>, _ t: LowRankTensor<Self>, _ e: Int) -> SIMD8<Float> {
        t.storedKind.roundTrip(v, at: e, rounding: t.rounding)
    }
    @_transparent static func prefetchInputs(_ t: LowRankTensor<Self>, _ e: Int) {
        t.gradKind.prefetch(t.grad, e)
        t.weightKind.prefetch(t.weights, e)
    }

    /// The no-options passes for ranks 4 and 8 without oversampling only,
    /// the common half-precision steps: two more compiled copies of each
    /// pass here, not FP32Access's set of shapes and widths.
    static func columnPassWithoutOptions<Rule: MomentRule>(
        _ rule: Rule, _ t: LowRankTensor<Self>, _ cols: Range<Int>, _ q: PerMoment<UnsafePointer<Float>>,
        _ c: PerMoment<Float>, _ out: PerMoment<UnsafeMutablePointer<Float>>, updateWeights: Bool,
        _ scratch: UnsafeMutablePointer<Float>, _ kept: UnsafeMutablePointer<Int>
    ) -> Bool {
        updateWeights && knownShapeUpdate(rule, t, cols, q, c, out, scratch, kept)
    }

    static func sketchPassWithoutOptions<Rule: MomentRule>(_ rule: Rule, _ t: LowRankTensor<Self>, _ a: SketchRows) -> Bool {
        knownShapeSketch(rule, t, a)
    }
}

/// The no-options column pass updating the weights at rank 4 or 8 without
/// oversampling, both known at compile time (at rank 4 the AVX-512 kernel
/// first, where it covers the rule and element types; the Swift pass for
/// the rest); false for any other shape. Both accesses' no-options paths.
private func knownShapeUpdate<Rule: MomentRule, A: WeightAccess>(
    _ rule: Rule, _ t: LowRankTensor<A>, _ cols: Range<Int>, _ q: PerMoment<UnsafePointer<Float>>,
    _ c: PerMoment<Float>, _ out: PerMoment<UnsafeMutablePointer<Float>>,
    _ scratch: UnsafeMutablePointer<Float>, _ kept: UnsafeMutablePointer<Int>
) -> Bool {
    let plain = PlainRule(rule)
    switch t.rank {
    case 8 where t.sketchWidth == 8:
        columnPass(plain, t, cols, q, c, out, Width8.self, UpdateWeights.self, Shape8.self, scratch, kept)
    case 4 where t.sketchWidth == 4:
        let rest = WideColumnPass.update(rule, t, cols, q, c, out) ?? cols
        if !rest.isEmpty {
            columnPass(plain, t, rest, q, c, out, Width4.self, UpdateWeights.self, Shape4.self, scratch, kept)
        }
    default:
        return false
    }
    return true
}

/// The no-options sketch pass at rank 4 or 8 without oversampling (at rank 4
/// the AVX-512 kernel where it covers the step); false for any other shape.
private func knownShapeSketch<Rule: MomentRule, A: WeightAccess>(_ rule: Rule, _ t: LowRankTensor<A>,
                                                                  _ a: SketchRows) -> Bool {
    let plain = PlainRule(rule)
    switch t.rank {
    case 4 where t.sketchWidth == 4:
        if WideSketchPass.run(rule, t, a) { return true }
        sketchRows(t, a, momentCount: Rule.momentCount) { sweep, _ in sketchSweep(plain, sweep, Width4.self, Shape4.self) }
    case 8 where t.sketchWidth == 8:
        sketchRows(t, a, momentCount: Rule.momentCount) { sweep, _ in sketchSweep(plain, sweep, Width4.self, Shape8.self) }
    default:
        return false
    }
    return true
}

struct LowRankTensor<A: WeightAccess> {
    let rows: Int, cols: Int, rank: Int, sketchWidth: Int
    /// The weights the passes step (the parameter, or its fp32 master) and
    /// the gradient, with their element types: one compiled copy of the
    /// passes serves every type (a predictable branch per 8-lane load).
    let weights: UnsafeMutableRawPointer, weightKind: ElementKind
    let grad: UnsafeRawPointer, gradKind: ElementKind
    /// The caller's parameter type (checks of what a store would write).
    let storedKind: ElementKind
    let factors: PerMoment<Factors>
    /// How new weights (or, with a master, the parameter) are rounded.
    let rounding: WeightRounding
}

/// A rank known at compile time, with a sketch width equal to it (no
/// oversampling, the default), for the no-options path: the factor and output
/// panels' offsets and the rebuild then need neither at run time. AnyShape:
/// both at run time.
protocol KnownShape { static var rank: Int { get } }
enum Shape4: KnownShape { static var rank: Int { 4 } }
enum Shape8: KnownShape { static var rank: Int { 8 } }
enum AnyShape: KnownShape { static var rank: Int { 0 } }

extension LowRankTensor {
    /// This tensor with S's rank and sketch width as constants (the same
    /// values: callers pick S by them), so that the passes fold them.
    @_transparent
    func with<S: KnownShape>(_: S.Type) -> LowRankTensor {
        S.rank == 0 ? self : LowRankTensor(rows: rows, cols: cols, rank: S.rank, sketchWidth: S.rank, weights: weights,
                                           weightKind: weightKind, grad: grad, gradKind: gradKind, storedKind: storedKind,
                                           factors: factors, rounding: rounding)
    }
}

/// Per-thread scratch of the passes, in floats (a multiple of 16, so that
/// consecutive threads' blocks stay 64-byte aligned): for two rows, 2·rank
/// coefficients and 2·l entries of Q's row each.
func passScratchFloats(rank: Int, sketchWidth l: Int) -> Int {
    (2 * rank + 15) / 16 * 16 + 8 * (4 * rank + 4 * l)
}

private struct PassScratch {
    /// One row's coefficients (row and sketch passes).
    let coef: UnsafeMutablePointer<Float>
    /// Two rows' coefficients and Q rows as 8-lane splats (column passes): an
    /// FMA then reads each from memory as its operand instead of a broadcast first.
    let coefSplat: UnsafeMutablePointer<Float>, coefSplat2: UnsafeMutablePointer<Float>
    let qSplat: UnsafeMutablePointer<Float>, qSplat2: UnsafeMutablePointer<Float>
    init(_ base: UnsafeMutablePointer<Float>, rank: Int, sketchWidth l: Int = 0) {
        coef = base
        let splats = base + (2 * rank + 15) / 16 * 16
        coefSplat = splats
        coefSplat2 = splats + 16 * rank
        qSplat = splats + 32 * rank
        qSplat2 = splats + 32 * rank + 16 * l
    }
}

/// A row's coefficients as 8-lane vectors: scalars splat at use, or splats
/// stored 8 floats apart.
protocol CoefficientRow {
    func callAsFunction(_ a: Int) -> SIMD8<Float>
    func advanced(by count: Int) -> Self
}

struct ScalarRow: CoefficientRow {
    let p: UnsafePointer<Float>
    @_transparent func callAsFunction(_ a: Int) -> SIMD8<Float> { SIMD8(repeating: p[a]) }
    @_transparent func advanced(by count: Int) -> ScalarRow { ScalarRow(p: p + count) }
}

struct SplatRow: CoefficientRow {
    let p: UnsafePointer<Float>
    @_transparent func callAsFunction(_ a: Int) -> SIMD8<Float> {
        UnsafeRawPointer(p + a &* 8).loadUnaligned(as: SIMD8<Float>.self)
    }
    @_transparent func advanced(by count: Int) -> SplatRow { SplatRow(p: p + count &* 8) }
}

/// splats[8a ..< 8a + 8] = x.
@_transparent
private func storeSplat(_ x: Float, _ splats: UnsafeMutablePointer<Float>, _ a: Int) {
    UnsafeMutableRawPointer(splats + a &* 8).storeBytes(of: SIMD8<Float>(repeating: x), as: SIMD8<Float>.self)
}

/// A sketch-column count known at compile time, so that the accumulators of
/// a block live in registers (the kernels are specialised per width).
protocol BlockWidth { static var value: Int { get } }
enum Width1: BlockWidth { static var value: Int { 1 } }
enum Width2: BlockWidth { static var value: Int { 2 } }
enum Width3: BlockWidth { static var value: Int { 3 } }
enum Width4: BlockWidth { static var value: Int { 4 } }
enum Width8: BlockWidth { static var value: Int { 8 } }  // column passes only (no register accumulators)
/// No unrolled columns: every sketch column in a loop (row and sketch sweeps:
/// the runtime `width` of their block). Partial chunks and the rare sketches
/// narrower than 4 use it, so that they are compiled once, not once per width.
enum Width0: BlockWidth { static var value: Int { 0 } }

/// Up to four SIMD accumulators addressed by a constant index.
struct Accumulators4 {
    var a0 = SIMD8<Float>(repeating: 0), a1 = SIMD8<Float>(repeating: 0)
    var a2 = SIMD8<Float>(repeating: 0), a3 = SIMD8<Float>(repeating: 0)
    @inline(__always) subscript(b: Int) -> SIMD8<Float> {
        get { b == 0 ? a0 : b == 1 ? a1 : b == 2 ? a2 : a3 }
        set { if b == 0 { a0 = newValue } else if b == 1 { a1 = newValue } else if b == 2 { a2 = newValue } else { a3 = newValue } }
    }
}

/// 8 floats at p; with `full` false only `count` lanes are read (the rest are 0).
@_transparent
private func load(_ p: UnsafePointer<Float>, _ full: Bool, _ count: Int) -> SIMD8<Float> {
    full ? UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) : load8(p, count)
}

@_transparent
private func store(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ full: Bool, _ count: Int) {
    if full { UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self) } else { store8(v, p, count) }
}

/// The gradient at row offset `e` (row·cols + j), after the tensor's gradient
/// transform (OrthoGrad / clipping) when one is set.
@_transparent
private func gradient<Rule: MomentRule, A: WeightAccess>(_ rule: Rule, _ t: LowRankTensor<A>, _ e: Int, _ full: Bool,
                                        _ count: Int) -> SIMD8<Float> {
    let g = A.loadGrad(t, e, full ? 8 : count)
    guard rule.modifiers.transformsGradient else { return g }
    return rule.modifiers.gradient(g, weights: A.loadWeights(t, e, full ? 8 : count))
}

/// Σ_a coef[a] · Vt[a, j..j+7] for a panel block (rows `stride` apart),
/// four ranks per iteration.
@_transparent
private func rebuild<C: CoefficientRow>(_ coef: C, _ block: UnsafePointer<Float>, stride: Int, rank: Int,
                                        _ full: Bool, _ count: Int) -> SIMD8<Float> {
    @_transparent func term(_ a: Int) -> SIMD8<Float> { load(block + a &* stride, full, count) }
    // The common ranks as straight-line code (the branch is loop-invariant, so
    // LLVM hoists it out of the chunk loop).
    if rank == 4 {
        return (term(0) * coef(0)).addingProduct(coef(1), term(1))
            + (term(2) * coef(2)).addingProduct(coef(3), term(3))
    }
    if rank == 8 {
        let s0 = (term(0) * coef(0)).addingProduct(coef(1), term(1)).addingProduct(coef(2), term(2))
            .addingProduct(coef(3), term(3))
        let s1 = (term(4) * coef(4)).addingProduct(coef(5), term(5)).addingProduct(coef(6), term(6))
            .addingProduct(coef(7), term(7))
        return s0 + s1
    }
    var s0 = SIMD8<Float>(repeating: 0), s1 = SIMD8<Float>(repeating: 0)
    var a = 0
    while a &+ 4 <= rank {
        s0 = s0.addingProduct(coef(a), load(block + a &* stride, full, count))
        s1 = s1.addingProduct(coef(a &+ 1), load(block + (a &+ 1) &* stride, full, count))
        s0 = s0.addingProduct(coef(a &+ 2), load(block + (a &+ 2) &* stride, full, count))
        s1 = s1.addingProduct(coef(a &+ 3), load(block + (a &+ 3) &* stride, full, count))
        a &+= 4
    }
    while a < rank {
        s0 = s0.addingProduct(coef(a), load(block + a &* stride, full, count))
        a &+= 1
    }
    return s0 + s1
}

/// The previous moments at columns j..j+7 of one row rebuilt from their
/// factors (coef = U[row, :]·diag(s) per moment), with the non-negative moment
/// fixed: its entries below zero become c. Also returns that moment's raw
/// values (zero for rules without one).
@_transparent
private func previousMoments<Rule: MomentRule, A: WeightAccess, C: CoefficientRow>(_: Rule.Type, _ t: LowRankTensor<A>, _ coef: C,
                                               _ c: PerMoment<Float>, _ j: Int, _ full: Bool, _ count: Int)
    -> (fixed: PerMoment<SIMD8<Float>>, raw: SIMD8<Float>) {
    // Moments written out one by one (not a loop) so each specialisation is straight-line code.
    @_transparent func moment(_ k: Int) -> SIMD8<Float> {
        let (block, stride) = Panel.block(t.factors[k].vt, col: j, rows: t.rank, cols: t.cols, full: full)
        return rebuild(coef.advanced(by: k &* t.rank), block, stride: stride, rank: t.rank, full, count)
    }
    var p = PerMoment<SIMD8<Float>>(repeating: .zero)
    var raw = SIMD8<Float>(repeating: 0)
    p.first = moment(0)
    if Rule.momentCount > 1 {
        p.second = moment(1)
        if Rule.isNonNegative(1) {
            raw = p.second
            p.second = mlorc_replace_negative8(raw, c[1])
        }
    }
    return (p, raw)
}

/// coef[k·rank + a] = U_k[row, a] · s_k[a].
@_transparent
private func loadCoefficients<A: WeightAccess>(_ t: LowRankTensor<A>, momentCount: Int, row: Int, into coef: UnsafeMutablePointer<Float>) {
    for k in 0..<momentCount {
        let f = t.factors[k]
        for a in 0..<t.rank { coef[k &* t.rank &+ a] = f.u[row &* t.rank &+ a] * f.s[a] }
    }
}

/// Row pass: y_k[i, b] = Σ_j A_k[i, j] · sketch_k[b, j] for the rows in
/// `rows`, where A_k is the new moment k built from the previous moments fixed
/// with c (which the caller knows: power iterations, and rules whose first
/// moment reads the second). y is rows x l column-major; sketches are l x cols
/// panels. A non-finite gradient makes the affected y non-finite (every moment
/// takes (1 − β)·g or (1 − β)·g² with β < 1), which is how callers detect it.
func rowPass<Rule: MomentRule, A: WeightAccess>(
    _ rule: Rule, _ t: LowRankTensor<A>, rows: Range<Int>,
    sketch: PerMoment<UnsafePointer<Float>>, c: PerMoment<Float>,
    y: PerMoment<UnsafeMutablePointer<Float>>, scratch: UnsafeMutablePointer<Float>
) {
    let coef = PassScratch(scratch, rank: t.rank).coef
    for i in rows {
        loadCoefficients(t, momentCount: Rule.momentCount, row: i, into: coef)
        // One sweep of the row per moment and per block of up to 4 sketch
        // columns, so that each sweep's accumulators fit in registers (the
        // repeated row reads hit L2).
        for k in 0..<Rule.momentCount {
            var b0 = 0
            while b0 < t.sketchWidth {
                let args = RowSweep<A>(t: t, row: i, b0: b0, coef: coef, sketch: sketch[k], c: c, y: y[k])
                let width = min(4, t.sketchWidth - b0)
                if k == 0 { rowSweep(rule, args, width, Slot0.self) } else { rowSweep(rule, args, width, Slot1.self) }
                b0 += 4
            }
        }
    }
}

/// Dispatches a row sweep to the kernel specialised for its block width.
@_transparent
private func rowSweep<Rule: MomentRule, K: MomentSlot, A: WeightAccess>(_ rule: Rule, _ a: RowSweep<A>, _ width: Int, _: K.Type) {
    switch width {
    case 1: rowSweep(rule, a, Width1.self, K.self)
    case 2: rowSweep(rule, a, Width2.self, K.self)
    case 3: rowSweep(rule, a, Width3.self, K.self)
    default: rowSweep(rule, a, Width4.self, K.self)
    }
}

/// A moment slot known at compile time.
protocol MomentSlot { static var index: Int { get } }
enum Slot0: MomentSlot { static var index: Int { 0 } }
enum Slot1: MomentSlot { static var index: Int { 1 } }

/// Arguments of one row sweep for one moment and sketch columns b0 ..< b0 + W.
private struct RowSweep<A: WeightAccess> {
    let t: LowRankTensor<A>, row: Int, b0: Int
    let coef: UnsafePointer<Float>
    let sketch: UnsafePointer<Float>, c: PerMoment<Float>
    let y: UnsafeMutablePointer<Float>
}

/// One 8-column chunk of a row sweep. A separate function taking the sums
/// inout (not a closure capturing them) keeps them in registers.
@_transparent
private func rowChunk<Rule: MomentRule, W: BlockWidth, K: MomentSlot, A: WeightAccess>(
    _ rule: Rule, _ a: RowSweep<A>, _: W.Type, _: K.Type, _ j: Int, _ full: Bool, _ count: Int,
    _ sums: inout Accumulators4, width: Int = W.value
) {
    let t = a.t, n = t.cols, l = t.sketchWidth
    if full { A.prefetchInputs(t, a.row &* n &+ j) }
    let g = gradient(rule, t, a.row &* n &+ j, full, count)
    var (p, _) = previousMoments(Rule.self, t, ScalarRow(p: a.coef), a.c, j, full, count)
    _ = rule.apply(&p.first, &p.second, g)
    let value = p[K.index]
    let (block, stride) = Panel.block(UnsafeMutablePointer(mutating: a.sketch), col: j, rows: l, cols: n, full: full)
    for b in 0..<(W.value == 0 ? width : W.value) {
        sums[b] = sums[b].addingProduct(value, load(block + (a.b0 &+ b) &* stride, full, count))
    }
}

/// The last, partial chunk of a row, out of line so that the main loop is
/// compiled for full chunks only (and for any block width: `width`).
@inline(never)
private func rowTail<Rule: MomentRule, K: MomentSlot, A: WeightAccess>(
    _ rule: Rule, _ a: RowSweep<A>, _: K.Type, _ j: Int, _ count: Int, width: Int, _ sums: inout Accumulators4
) {
    rowChunk(rule, a, Width0.self, K.self, j, false, count, &sums, width: width)
}

private func rowSweep<Rule: MomentRule, W: BlockWidth, K: MomentSlot, A: WeightAccess>(
    _ rule: Rule, _ a: RowSweep<A>, _: W.Type, _: K.Type
) {
    let n = a.t.cols
    var sums = Accumulators4()
    let fullEnd = n & ~7
    var j = 0
    while j < fullEnd { rowChunk(rule, a, W.self, K.self, j, true, 8, &sums); j &+= 8 }
    if j < n { rowTail(rule, a, K.self, j, n &- j, width: W.value, &sums) }
    for b in 0..<W.value { a.y[a.row + (a.b0 + b) * a.t.rows] = sums[b].sum() }
}

/// The first row pass of a step, using linearity: every linear moment's
/// sketch follows from GΩ (y_k = gain·GΩ + decay·U diag(s) (VᵀΩ), see
/// finishLinearSketches), so one sweep per row accumulates GΩ and, for a
/// non-linear non-negative moment, XΩ with X the new moment built from the
/// previous one clipped at 0, NΩ with N = [R < 0], and the row's sum of |R|
/// and count over R < 0. gradSketch, y and yNeg are rows x l column-major.
func sketchPass<Rule: MomentRule, A: WeightAccess>(
    _ rule: Rule, _ t: LowRankTensor<A>, rows: Range<Int>, omega: UnsafePointer<Float>,
    gradSketch: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>,
    negatives: (yNeg: UnsafeMutablePointer<Float>, rowSum: UnsafeMutablePointer<Double>,
                rowCount: UnsafeMutablePointer<Double>),
    inputBits: UnsafeMutablePointer<SIMD2<Int32>>, scratch: UnsafeMutablePointer<Float>
) {
    let a = SketchRows(rows: rows, omega: omega, gradSketch: gradSketch, y: y, negatives: negatives,
                       inputBits: inputBits, scratch: scratch)
    if rule.optionsOff && A.sketchPassWithoutOptions(rule, t, a) { return }
    sketchRows(t, a, momentCount: Rule.momentCount) { sweep, width in
        switch width {
        case 1: sketchSweep(rule, sweep, Width1.self, AnyShape.self)
        case 2: sketchSweep(rule, sweep, Width2.self, AnyShape.self)
        case 3: sketchSweep(rule, sweep, Width3.self, AnyShape.self)
        default: sketchSweep(rule, sweep, Width4.self, AnyShape.self)
        }
    }
}

/// The arguments of a sketch pass.
struct SketchRows {
    let rows: Range<Int>, omega: UnsafePointer<Float>
    let gradSketch: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>
    let negatives: (yNeg: UnsafeMutablePointer<Float>, rowSum: UnsafeMutablePointer<Double>,
                    rowCount: UnsafeMutablePointer<Double>)
    /// Per row: the largest magnitude bits of the raw gradient and of the
    /// weights (NaN above +inf), for the step's output bounds.
    let inputBits: UnsafeMutablePointer<SIMD2<Int32>>
    let scratch: UnsafeMutablePointer<Float>
}

/// Calls `sweep` for each row and block of up to 4 sketch columns (with
/// the block's width), the row's coefficients loaded.
@inline(__always)
private func sketchRows<A: WeightAccess>(_ t: LowRankTensor<A>, _ a: SketchRows, momentCount: Int,
                                         _ sweep: (SketchSweep<A>, Int) -> Void) {
    let coef = PassScratch(a.scratch, rank: t.rank).coef
    for i in a.rows {
        loadCoefficients(t, momentCount: momentCount, row: i, into: coef)
        var b0 = 0
        while b0 < t.sketchWidth {
            sweep(SketchSweep<A>(t: t, row: i, b0: b0, coef: coef, omega: a.omega, gradSketch: a.gradSketch,
                                 y: a.y, negatives: a.negatives, inputBits: a.inputBits), min(4, t.sketchWidth - b0))
            b0 += 4
        }
    }
}

private struct SketchSweep<A: WeightAccess> {
    let t: LowRankTensor<A>, row: Int, b0: Int
    let coef: UnsafePointer<Float>
    let omega: UnsafePointer<Float>
    let gradSketch: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>
    let negatives: (yNeg: UnsafeMutablePointer<Float>, rowSum: UnsafeMutablePointer<Double>,
                    rowCount: UnsafeMutablePointer<Double>)
    let inputBits: UnsafeMutablePointer<SIMD2<Int32>>
}

private struct SketchSums {
    var grad = Accumulators4(), x = Accumulators4(), neg = Accumulators4()
    var negSum = SIMD8<Float>(repeating: 0), negCount = SIMD8<Float>(repeating: 0)
    var gradBits = SIMD8<Int32>(repeating: 0), weightBits = SIMD8<Int32>(repeating: 0)
}

@_transparent
private func sketchChunk<Rule: MomentRule, W: BlockWidth, A: WeightAccess>(
    _ rule: Rule, _ a: SketchSweep<A>, _: W.Type, _ j: Int, _ full: Bool, _ count: Int, _ sums: inout SketchSums,
    width: Int = W.value
) {
    let t = a.t, n = t.cols, l = t.sketchWidth
    let nonLinear = Rule.momentCount > 1 && !Rule.isLinear(1)
    let e = a.row &* n &+ j
    if full { A.prefetchInputs(t, e) }
    let g = gradient(rule, t, e, full, count)
    if a.b0 == 0 {
        // The output bounds' inputs, from this pass's reads (lanes past `count` load as 0):
        // the raw gradient (before any transform) and the weights.
        sums.gradBits = mlorc_max_magnitude_bits8(sums.gradBits, A.loadGrad(t, e, full ? 8 : count))
        sums.weightBits = mlorc_max_magnitude_bits8(sums.weightBits, A.loadWeights(t, e, full ? 8 : count))
    }
    var x = SIMD8<Float>(repeating: 0), negative = SIMD8<Float>(repeating: 0)
    if nonLinear {
        // The previous second moment, clipped at 0 (c is added later through NΩ).
        let (block, stride) = Panel.block(t.factors[1].vt, col: j, rows: t.rank, cols: n, full: full)
        let raw = rebuild(ScalarRow(p: a.coef + t.rank), block, stride: stride, rank: t.rank, full, count)
        negative = mlorc_negative_indicator8(raw)  // lanes past `count` are 0: not negative
        if a.b0 == 0 {
            sums.negSum = sums.negSum.addingProduct(raw, negative)
            sums.negCount += negative
        }
        var m = SIMD8<Float>(repeating: 0)
        x = mlorc_replace_negative8(raw, 0)
        _ = rule.apply(&m, &x, g)
    }
    let (block, stride) = Panel.block(UnsafeMutablePointer(mutating: a.omega), col: j, rows: l, cols: n, full: full)
    for b in 0..<(W.value == 0 ? width : W.value) {
        let s = load(block + (a.b0 &+ b) &* stride, full, count)
        sums.grad[b] = sums.grad[b].addingProduct(g, s)
        if nonLinear {
            sums.x[b] = sums.x[b].addingProduct(x, s)
            sums.neg[b] = sums.neg[b].addingProduct(negative, s)
        }
    }
}

@inline(never)
private func sketchTail<Rule: MomentRule, A: WeightAccess>(
    _ rule: Rule, _ a: SketchSweep<A>, _ j: Int, _ count: Int, width: Int, _ sums: inout SketchSums
) {
    sketchChunk(rule, a, Width0.self, j, false, count, &sums, width: width)
}

private func sketchSweep<Rule: MomentRule, W: BlockWidth, A: WeightAccess, S: KnownShape>(
    _ rule: Rule, _ a: SketchSweep<A>, _: W.Type, _: S.Type
) {
    let a = S.rank == 0 ? a : SketchSweep<A>(t: a.t.with(S.self), row: a.row, b0: a.b0, coef: a.coef, omega: a.omega,
                                             gradSketch: a.gradSketch, y: a.y, negatives: a.negatives,
                                             inputBits: a.inputBits)
    let n = a.t.cols, m = a.t.rows, i = a.row
    var sums = SketchSums()
    let fullEnd = n & ~7
    var j = 0
    while j < fullEnd { sketchChunk(rule, a, W.self, j, true, 8, &sums); j &+= 8 }
    if j < n { sketchTail(rule, a, j, n &- j, width: W.value, &sums) }
    for b in 0..<W.value { a.gradSketch[i + (a.b0 + b) * m] = sums.grad[b].sum() }
    if a.b0 == 0 { a.inputBits[i] = SIMD2(sums.gradBits.max(), sums.weightBits.max()) }
    if Rule.momentCount > 1 && !Rule.isLinear(1) {
        for b in 0..<W.value {
            a.y[i + (a.b0 + b) * m] = sums.x[b].sum()
            a.negatives.yNeg[i + (a.b0 + b) * m] = sums.neg[b].sum()
        }
        if a.b0 == 0 {
            a.negatives.rowSum[i] = -Double(sums.negSum.sum())
            a.negatives.rowCount[i] = Double(sums.negCount.sum())
        }
    }
}

/// Per-row sum of |R| and count over the negative entries of the previous
/// moment 1, R = U diag(s) Vt, from the factors alone (no gradient): the fix's
/// constant c for rules that must know it before sketching.
func negativeStatistics<A: WeightAccess>(_ t: LowRankTensor<A>, rows: Range<Int>, rowSum: UnsafeMutablePointer<Double>,
                        rowCount: UnsafeMutablePointer<Double>, scratch: UnsafeMutablePointer<Float>) {
    let coef = PassScratch(scratch, rank: t.rank).coef, n = t.cols
    for i in rows {
        loadCoefficients(t, momentCount: 2, row: i, into: coef)
        var sum = SIMD8<Float>(repeating: 0), count = SIMD8<Float>(repeating: 0)
        var j = 0
        while j < n {
            let c = min(8, n &- j), full = c == 8
            let (block, stride) = Panel.block(t.factors[1].vt, col: j, rows: t.rank, cols: n, full: full)
            let raw = rebuild(ScalarRow(p: coef + t.rank), block, stride: stride, rank: t.rank, full, c)
            let negative = mlorc_negative_indicator8(raw)
            sum = sum.addingProduct(raw, negative)
            count += negative
            j &+= 8
        }
        rowSum[i] = -Double(sum.sum())
        rowCount[i] = Double(count.sum())
    }
}

/// y = gain·GΩ + decay·U diag(s) (VᵀΩ) for a linear moment: its exact sketch
/// by linearity, at O((rows + cols)·rank·l) cost. omega is an l x cols panel.
func finishLinearSketch(_ f: Factors, rows m: Int, cols n: Int, rank r: Int, sketchWidth l: Int,
                        omega: UnsafePointer<Float>, gradSketch: UnsafePointer<Float>,
                        decay: Float, gain: Float, into y: UnsafeMutablePointer<Float>,
                        vtOmega: UnsafeMutablePointer<Float>) {
    // vtOmega[a·l + b] = Σ_j Vt[a, j] · Ω[b, j] (both panels share the column blocking).
    for a in 0..<r {
        for b in 0..<l {
            var sum: Float = 0
            for j in 0..<n {
                sum += f.vt[Panel.offset(row: a, col: j, rows: r, cols: n)] * omega[Panel.offset(row: b, col: j, rows: l, cols: n)]
            }
            vtOmega[a * l + b] = sum * f.s[a] * decay
        }
    }
    for i in 0..<m {
        for b in 0..<l {
            var sum = gain * gradSketch[i + b * m]
            for a in 0..<r { sum += f.u[i * r + a] * vtOmega[a * l + b] }
            y[i + b * m] = sum
        }
    }
}

/// What a column pass does besides reading, as a type (specialised away):
/// update the weights and accumulate QᵀA, only accumulate, only count the
/// elements cautious masking keeps, or only check that the new weights and
/// moments are finite (the largest magnitude bits go to `kept`).
protocol WeightMode { static var updates: Bool { get }; static var counts: Bool { get }; static var checks: Bool { get } }
extension WeightMode { static var checks: Bool { false } }
enum UpdateWeights: WeightMode { static var updates: Bool { true }; static var counts: Bool { false } }
enum KeepWeights: WeightMode { static var updates: Bool { false }; static var counts: Bool { false } }
enum CountKept: WeightMode { static var updates: Bool { false }; static var counts: Bool { true } }
enum CheckOutputs: WeightMode {
    static var updates: Bool { false }; static var counts: Bool { false }; static var checks: Bool { true }
}

/// Column pass over columns `cols` (starting at a multiple of 8):
/// out_k[b, j] += Σ_i q_k[i, b] · A_k[i, j] for every row i in order, where A_k
/// is the new moment k built from the previous one fixed with c_k. With
/// `updateWeights` it also writes W ← W·(1 − lr·λ) − stepSize·direction.
/// With `countKept` it only stores in `kept` how many elements of its
/// columns cautious masking keeps. q is rows x l column-major; out is an
/// l x cols panel.
func columnPass<Rule: MomentRule, A: WeightAccess>(
    _ rule: Rule, _ t: LowRankTensor<A>, cols: Range<Int>,
    q: PerMoment<UnsafePointer<Float>>, c: PerMoment<Float>,
    out: PerMoment<UnsafeMutablePointer<Float>>, updateWeights: Bool,
    scratch: UnsafeMutablePointer<Float>, kept: UnsafeMutablePointer<Int>, countKept: Bool = false,
    checkOutputs: Bool = false
) {
    if checkOutputs {
        kept.pointee = 0
        columnPass(rule, t, cols, q, c, out, Width0.self, CheckOutputs.self, AnyShape.self, scratch, kept)
        return
    }
    if countKept {
        kept.pointee = 0
        columnPass(rule, t, cols, q, c, out, Width0.self, CountKept.self, AnyShape.self, scratch, kept)
        return
    }
    if rule.optionsOff && A.columnPassWithoutOptions(rule, t, cols, q, c, out, updateWeights: updateWeights, scratch, kept) {
        return
    }
    // Unrolled for the common sketch widths (8, and 4 or more); the rare
    // narrower sketches take the loop (Width0), compiled once for all of them.
    switch (t.sketchWidth == 8 ? 8 : t.sketchWidth >= 4 ? 4 : 0, updateWeights) {
    case (8, true): columnPass(rule, t, cols, q, c, out, Width8.self, UpdateWeights.self, AnyShape.self, scratch, kept)
    case (8, false): columnPass(rule, t, cols, q, c, out, Width8.self, KeepWeights.self, AnyShape.self, scratch, kept)
    case (4, true): columnPass(rule, t, cols, q, c, out, Width4.self, UpdateWeights.self, AnyShape.self, scratch, kept)
    case (4, false): columnPass(rule, t, cols, q, c, out, Width4.self, KeepWeights.self, AnyShape.self, scratch, kept)
    case (_, true): columnPass(rule, t, cols, q, c, out, Width0.self, UpdateWeights.self, AnyShape.self, scratch, kept)
    default: columnPass(rule, t, cols, q, c, out, Width0.self, KeepWeights.self, AnyShape.self, scratch, kept)
    }
}

/// The column pass with the first W sketch columns unrolled; the remaining
/// columns (all of them for Width0) go through a loop. S: the rank and sketch
/// width as constants (KnownShape), or AnyShape.
private func columnPass<Rule: MomentRule, W: BlockWidth, Mode: WeightMode, A: WeightAccess, S: KnownShape>(
    _ rule: Rule, _ t: LowRankTensor<A>, _ cols: Range<Int>,
    _ q: PerMoment<UnsafePointer<Float>>, _ c: PerMoment<Float>,
    _ out: PerMoment<UnsafeMutablePointer<Float>>, _: W.Type, _: Mode.Type, _: S.Type,
    _ scratch: UnsafeMutablePointer<Float>, _ kept: UnsafeMutablePointer<Int>
) {
    let t = t.with(S.self)
    let l = t.sketchWidth, n = t.cols, m = t.rows
    let parts = PassScratch(scratch, rank: t.rank, sketchWidth: l)
    // Columns per sweep over the rows: as wide as possible (long contiguous row
    // segments stream well) while the factor and output panels of the block,
    // 4·mc·(rank + l) bytes per column, stay within half of a 512 KiB L2.
    let panelBytesPerColumn = 4 * Rule.momentCount * (t.rank + l)
    let blockWidth = max(64, (256 * 1024 / panelBytesPerColumn) & ~7)
    var blockStart = cols.lowerBound
    while blockStart < cols.upperBound {
        let blockEnd = min(blockStart + blockWidth, cols.upperBound)
        @_transparent func rowView(_ i: Int, _ coefSplat: UnsafeMutablePointer<Float>,
                                   _ qSplat: UnsafeMutablePointer<Float>) -> ColumnRow<A> {
            // The products of loadCoefficients, splatted.
            for k in 0..<Rule.momentCount {
                let f = t.factors[k]
                for a in 0..<t.rank { storeSplat(f.u[i &* t.rank &+ a] * f.s[a], coefSplat, k &* t.rank &+ a) }
                for b in 0..<l { storeSplat(q[k][i &+ b &* m], qSplat, k &* l &+ b) }
            }
            return ColumnRow<A>(t: t, coef: SplatRow(p: coefSplat), qRow: SplatRow(p: qSplat), c: c, out: out,
                                rowOffset: i &* n, kept: kept)
        }
        let fullEnd = blockStart + (blockEnd - blockStart) & ~7
        // Two rows per sweep share the factor loads and the output panel's
        // load/store; they are added in row order, as one row at a time would.
        var i = 0
        while i &+ 2 <= m {
            let first = rowView(i, parts.coefSplat, parts.qSplat), second = rowView(i &+ 1, parts.coefSplat2, parts.qSplat2)
            var j = blockStart
            while j < fullEnd { columnChunk2(rule, first, second, W.self, Mode.self, j); j &+= 8 }
            if j < blockEnd {
                columnTail(rule, first, Mode.self, j, blockEnd &- j)
                columnTail(rule, second, Mode.self, j, blockEnd &- j)
            }
            i &+= 2
        }
        if i < m {
            let row = rowView(i, parts.coefSplat, parts.qSplat)
            var j = blockStart
            while j < fullEnd { columnChunk(rule, row, W.self, Mode.self, j, true, 8); j &+= 8 }
            if j < blockEnd { columnTail(rule, row, Mode.self, j, blockEnd &- j) }
        }
        blockStart = blockEnd
    }
}

/// What one row of a column sweep needs.
private struct ColumnRow<A: WeightAccess> {
    let t: LowRankTensor<A>
    let coef: SplatRow, qRow: SplatRow
    let c: PerMoment<Float>
    let out: PerMoment<UnsafeMutablePointer<Float>>
    let rowOffset: Int  // row · cols
    let kept: UnsafeMutablePointer<Int>  // cautious counting only
}

/// The last, partial chunk of a row segment, out of line (see rowTail), for
/// any sketch width.
@inline(never)
private func columnTail<Rule: MomentRule, Mode: WeightMode, A: WeightAccess>(
    _ rule: Rule, _ r: ColumnRow<A>, _: Mode.Type, _ j: Int, _ count: Int
) {
    columnChunk(rule, r, Width0.self, Mode.self, j, false, count)
}

/// One 8-column chunk of one row in a column sweep.
@_transparent
private func columnChunk<Rule: MomentRule, W: BlockWidth, Mode: WeightMode, A: WeightAccess>(
    _ rule: Rule, _ r: ColumnRow<A>, _: W.Type, _: Mode.Type, _ j: Int, _ full: Bool, _ count: Int
) {
    let t = r.t
    if full { A.prefetchInputs(t, r.rowOffset &+ j) }
    let g = gradient(rule, t, r.rowOffset &+ j, full, count)
    var (p, _) = previousMoments(Rule.self, t, r.coef, r.c, j, full, count)
    let direction = rule.modifiers.direction(rule.apply(&p.first, &p.second, g), g)
    if Mode.counts {
        r.kept.pointee &+= Int(rule.modifiers.cautiousKept(direction, g).sum())
        return
    }
    if Mode.checks {
        let e = r.rowOffset &+ j
        let w = A.stored(rule.updatedWeights(A.loadWeights(t, e, full ? 8 : count), direction), t, e)
        var bits = maskedMagnitudeBits(SIMD8(repeating: 0), w, full ? 8 : count)
        bits = maskedMagnitudeBits(bits, p.first, full ? 8 : count)
        if Rule.momentCount > 1 { bits = maskedMagnitudeBits(bits, p.second, full ? 8 : count) }
        r.kept.pointee = max(r.kept.pointee, Int(bits.max()))
        return
    }
    if Mode.updates {
        let e = r.rowOffset &+ j, c = full ? 8 : count
        A.storeWeights(rule.updatedWeights(A.loadWeights(t, e, c), direction), t, e, c)
    }
    accumulate(r, W.self, 0, p.first, j, full, count)
    if Rule.momentCount > 1 { accumulate(r, W.self, 1, p.second, j, full, count) }
}

/// One full 8-column chunk of two consecutive rows in a column sweep.
@_transparent
private func columnChunk2<Rule: MomentRule, W: BlockWidth, Mode: WeightMode, A: WeightAccess>(
    _ rule: Rule, _ r1: ColumnRow<A>, _ r2: ColumnRow<A>, _: W.Type, _: Mode.Type, _ j: Int
) {
    let t = r1.t, l = t.sketchWidth, n = t.cols
    A.prefetchInputs(t, r1.rowOffset &+ j)
    A.prefetchInputs(t, r2.rowOffset &+ j)
    let g1 = gradient(rule, t, r1.rowOffset &+ j, true, 8), g2 = gradient(rule, t, r2.rowOffset &+ j, true, 8)
    var (p1, _) = previousMoments(Rule.self, t, r1.coef, r1.c, j, true, 8)
    var (p2, _) = previousMoments(Rule.self, t, r2.coef, r2.c, j, true, 8)
    let d1 = rule.modifiers.direction(rule.apply(&p1.first, &p1.second, g1), g1)
    let d2 = rule.modifiers.direction(rule.apply(&p2.first, &p2.second, g2), g2)
    if Mode.counts {
        r1.kept.pointee &+= Int((rule.modifiers.cautiousKept(d1, g1) + rule.modifiers.cautiousKept(d2, g2)).sum())
        return
    }
    if Mode.checks {
        let e1 = r1.rowOffset &+ j, e2 = r2.rowOffset &+ j
        let w1 = A.stored(rule.updatedWeights(A.loadWeights(t, e1, 8), d1), t, e1)
        let w2 = A.stored(rule.updatedWeights(A.loadWeights(t, e2, 8), d2), t, e2)
        var bits = maskedMagnitudeBits(SIMD8(repeating: 0), w1, 8)
        bits = maskedMagnitudeBits(bits, w2, 8)
        bits = maskedMagnitudeBits(bits, p1.first, 8)
        bits = maskedMagnitudeBits(bits, p2.first, 8)
        if Rule.momentCount > 1 {
            bits = maskedMagnitudeBits(bits, p1.second, 8)
            bits = maskedMagnitudeBits(bits, p2.second, 8)
        }
        r1.kept.pointee = max(r1.kept.pointee, Int(bits.max()))
        return
    }
    if Mode.updates {
        let e1 = r1.rowOffset &+ j, e2 = r2.rowOffset &+ j
        A.storeWeights(rule.updatedWeights(A.loadWeights(t, e1, 8), d1), t, e1, 8)
        A.storeWeights(rule.updatedWeights(A.loadWeights(t, e2, 8), d2), t, e2, 8)
    }
    // The moments written out (not a loop over k): each moment's panel and
    // coefficients are then constants of the chunk, not selected at run time.
    @_transparent func accumulate2(_ out: UnsafeMutablePointer<Float>, _ k: Int, _ v1: SIMD8<Float>, _ v2: SIMD8<Float>) {
        let (o, stride) = Panel.block(out, col: j, rows: l, cols: n, full: true)
        let q1 = r1.qRow.advanced(by: k &* l), q2 = r2.qRow.advanced(by: k &* l)
        for b in 0..<W.value {
            let ob = o + b &* stride
            store(load(ob, true, 8).addingProduct(q1(b), v1).addingProduct(q2(b), v2), ob, true, 8)
        }
        var b = W.value
        while b < l {
            let ob = o + b &* stride
            store(load(ob, true, 8).addingProduct(q1(b), v1).addingProduct(q2(b), v2), ob, true, 8)
            b &+= 1
        }
    }
    accumulate2(r1.out.first, 0, p1.first, p2.first)
    if Rule.momentCount > 1 { accumulate2(r1.out.second, 1, p1.second, p2.second) }
}

/// out_k[b, j..j+7] += q_k[i, b] · A_k[i, j..j+7] for every sketch column b.
@_transparent
private func accumulate<W: BlockWidth, A: WeightAccess>(_ r: ColumnRow<A>, _: W.Type, _ k: Int, _ value: SIMD8<Float>,
                                       _ j: Int, _ full: Bool, _ count: Int) {
    let l = r.t.sketchWidth
    let (o, stride) = Panel.block(r.out[k], col: j, rows: l, cols: r.t.cols, full: full)
    let qk = r.qRow.advanced(by: k &* l)
    for b in 0..<W.value {
        let ob = o + b &* stride
        store(load(ob, full, count).addingProduct(qk(b), value), ob, full, count)
    }
    var b = W.value
    while b < l {
        let ob = o + b &* stride
        store(load(ob, full, count).addingProduct(qk(b), value), ob, full, count)
        b &+= 1
    }
}
