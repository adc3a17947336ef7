import XCTest
@testable import MlorcCore

/// The update options (Grams, atan2, cautious masking, OrthoGrad, gradient
/// clipping): hand-computed single steps, then many steps against a
/// double-precision reference written from their equations, dense and at
/// full rank.
final class OptionTests: XCTestCase {
    func optimizer(_ rule: RuleKind, _ settings: [ParamKey: Double]) throws -> Optimizer {
        let opt = Optimizer(rule: rule)
        for (key, value) in settings { try opt.hyper.set(key, value, rule: rule) }
        return opt
    }

    /// One dense 1 x count tensor, stepped with the given gradients in turn.
    func run(_ opt: Optimizer, w0: [Float], grads: [[Float]], lr: Double) throws -> [Float] {
        let t = try TestTensor(opt, rows: 1, cols: w0.count, id: 0, storage: .dense, param: w0)
        for g in grads { t.grad = g; try step(opt, [t], lr: lr) }
        return t.param
    }

    func testGramsTakesTheSignOfTheGradient() throws {
        // Lion, λ = 0: step 1 with g = 1 leaves m = 0.02; step 2 with g = −0.1
        // gives c = 0.95·0.02 + 0.05·(−0.1) = 0.014 > 0, so Lion moves by −lr,
        // while Grams moves by −lr·sign(g)·|1| = +lr.
        let settings: [ParamKey: Double] = [.weightDecay: 0]
        let lion = try run(optimizer(.lion, settings), w0: [0], grads: [[1], [-0.1]], lr: 0.5)
        let grams = try run(optimizer(.lion, settings.merging([.grams: 1]) { $1 }), w0: [0], grads: [[1], [-0.1]], lr: 0.5)
        XCTAssertEqual(lion, [-1.0])   // −0.5 (step 1) − 0.5
        XCTAssertEqual(grams, [0.0])   // −0.5 (step 1) + 0.5
    }

    func testAtan2IsBoundedAndNeedsNoEps() throws {
        // First AdamW step: m̂ = g, √v̂ = |g|, so (4/π)·atan2(g, |g|) = ±1 exactly
        // in exact arithmetic; ε (set huge here) plays no part.
        let opt = try optimizer(.adamW, [.weightDecay: 0, .atan2: 1, .eps: 1])
        let w = try run(opt, w0: [0, 0, 0], grads: [[3, -0.002, 0]], lr: 0.25)
        XCTAssertEqual(w[0], -0.25, accuracy: 1e-7)
        XCTAssertEqual(w[1], 0.25, accuracy: 1e-7)
        XCTAssertEqual(w[2], 0)  // atan2(0, 0) = 0
        // Without atan2 the huge ε shrinks the step: g/(|g| + 1).
        let plain = try run(optimizer(.adamW, [.weightDecay: 0, .eps: 1]), w0: [0], grads: [[3]], lr: 0.25)
        XCTAssertEqual(plain[0], -0.25 * 3 / 4, accuracy: 1e-7)
    }

    func testCautiousMasksDisagreeingDirectionsAndRescales() throws {
        // Lion, λ = 0, two elements. Step 1: g = (1, 1) → m = (0.02, 0.02).
        // Step 2: g = (−0.1, 1): c = (0.014, 0.069) → u = (1, 1); u·g = (−0.1, 1)
        // keeps only element 1: scale = 2 / (1 + 1) = 1, so element 0 stays and
        // element 1 moves by −lr.
        let opt = try optimizer(.lion, [.weightDecay: 0, .cautious: 1])
        let w = try run(opt, w0: [0, 0], grads: [[1, 1], [-0.1, 1]], lr: 0.5)
        // Step 1 kept both (scale 2/3): −0.5·2/3 each.
        XCTAssertEqual(w[0], -1.0 / 3, accuracy: 1e-7)
        XCTAssertEqual(w[1], -1.0 / 3 - 0.5, accuracy: 1e-7)
    }

    func testOrthoGradRemovesTheComponentAlongTheWeights() throws {
        // w = (1, 0), g = (1, 1): g⊥ = (0, 1) rescaled to ‖g‖ = √2 → (0, √2).
        // First AdamW step with λ = 0 moves each element by −lr·g⊥/(|g⊥| + ε').
        let opt = try optimizer(.adamW, [.weightDecay: 0, .orthograd: 1])
        let w = try run(opt, w0: [1, 0], grads: [[1, 1]], lr: 0.1)
        XCTAssertEqual(w[0], 1)  // g⊥ = 0: m = 0, no move
        XCTAssertEqual(w[1], -0.1, accuracy: 1e-6)
    }

    func testClippingScalesTheGradientToTheNorm() throws {
        // g = (3, 4), ‖g‖ = 5, clip to 1 → g' = (0.6, 0.8). First AdamW step with
        // ε = 1: −lr·g'/(|g'| + 1) = −lr·(0.375, 0.4444…).
        let opt = try optimizer(.adamW, [.weightDecay: 0, .eps: 1, .clipNorm: 1])
        let w = try run(opt, w0: [0, 0], grads: [[3, 4]], lr: 1)
        XCTAssertEqual(w[0], -0.6 / 1.6, accuracy: 1e-6)
        XCTAssertEqual(w[1], -0.8 / 1.8, accuracy: 1e-6)
        // A gradient already shorter than the bound is left alone.
        let short = try run(optimizer(.adamW, [.weightDecay: 0, .eps: 1, .clipNorm: 10]), w0: [0], grads: [[3]], lr: 1)
        XCTAssertEqual(short[0], -0.75, accuracy: 1e-6)
    }

    // MARK: many steps against the reference

    let combinations: [[ParamKey: Double]] = [
        [.grams: 1], [.atan2: 1], [.cautious: 1], [.orthograd: 1], [.clipNorm: 0.5],
        [.grams: 1, .cautious: 1, .orthograd: 1, .clipNorm: 0.5],
    ]

    func testDenseOptionsMatchReference() throws {
        for rule in [RuleKind.adamW, .lion] {
            for settings in combinations where !(rule == .lion && settings[.atan2] != nil) {
                let opt = try optimizer(rule, settings)
                var rng = TestRandom(77)
                let w0 = rng.matrix(60, scale: 0.5)
                let t = try TestTensor(opt, rows: 6, cols: 10, id: 0, storage: .dense, param: w0)
                var ref = ReferenceWithOptions(rule: rule, count: 60, settings: settings, hyper: opt.hyper)
                var w = w0.map(Double.init)
                for _ in 0..<50 {
                    let g = rng.matrix(60)
                    t.grad = g
                    try step(opt, [t], lr: 1e-2)
                    ref.step(&w, g, lr: 1e-2)
                }
                // fp32 vs fp64 over 50 steps of size ~lr (Lion's signs do not flip on
                // rounding with these random gradients): ~1e-6.
                XCTAssertLessThan(maxAbsDiff(t.param.map(Double.init), w), 2e-5, "\(rule) \(settings)")
            }
        }
    }

    func testLowRankAtFullRankMatchesDenseWithOptions() throws {
        let settings: [ParamKey: Double] = [.grams: 1, .cautious: 1, .orthograd: 1, .clipNorm: 0.5, .rank: 8]
        for rule in [RuleKind.adamW, .lion] {
            let opt = try optimizer(rule, settings)
            var rng = TestRandom(78)
            let w0 = rng.matrix(96, scale: 0.5)
            let low = try TestTensor(opt, rows: 12, cols: 8, id: 0, storage: .lowRank, param: w0)
            let dense = try TestTensor(opt, rows: 12, cols: 8, id: 1, storage: .dense, param: w0)
            for _ in 0..<40 {
                let g = rng.matrix(96)
                low.grad = g
                dense.grad = g
                try step(opt, [low, dense], lr: 1e-2)
            }
            // As in the option-free full-rank tests: factorisation rounding only.
            XCTAssertLessThan(maxAbsDiff(low.param, dense.param), 1e-3, "\(rule)")
        }
    }
}

/// AdamW / Lion with the options, in double precision, from their equations:
/// g' = OrthoGrad/clip(g); rule on g'; Grams u = sign(g')·|u|; cautious
/// u = u·[u·g' > 0]·N/(kept + 1); w ← w·(1 − lr·λ) − lr·u (AdamW: lr/bc1 in u).
struct ReferenceWithOptions {
    let rule: RuleKind
    let settings: [ParamKey: Double]
    let hyper: Hyperparameters
    var m: [Double], v: [Double], t = 0

    init(rule: RuleKind, count: Int, settings: [ParamKey: Double], hyper: Hyperparameters) {
        self.rule = rule; self.settings = settings; self.hyper = hyper
        m = .init(repeating: 0, count: count); v = m
    }

    func transformed(_ w: [Double], _ g: [Double]) -> [Double] {
        var g = g
        let norm = { (x: [Double]) in x.map { $0 * $0 }.reduce(0, +).squareRoot() }
        if settings[.orthograd] != nil {
            let wg = zip(w, g).map(*).reduce(0, +), ww = w.map { $0 * $0 }.reduce(0, +)
            let original = norm(g)
            g = zip(g, w).map { $0 - wg / (ww + 1e-30) * $1 }
            let scale = original / (norm(g) + 1e-30)
            g = g.map { $0 * scale }
        }
        if let bound = settings[.clipNorm], norm(g) > bound {
            let scale = bound / norm(g)
            g = g.map { $0 * scale }
        }
        return g
    }

    mutating func step(_ w: inout [Double], _ gf: [Float], lr: Double) {
        t += 1
        let g = transformed(w, gf.map(Double.init))
        var u = [Double](repeating: 0, count: w.count)
        let (b1, b2) = (hyper.beta1, hyper.beta2)
        for i in w.indices {
            switch rule {
            case .adamW:
                m[i] = b1 * m[i] + (1 - b1) * g[i]
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
                let mh = m[i] / (1 - pow(b1, Double(t))), vh = v[i] / (1 - pow(b2, Double(t)))
                u[i] = settings[.atan2] != nil ? 4 / Double.pi * atan2(mh, vh.squareRoot()) : mh / (vh.squareRoot() + hyper.eps)
            default:
                let c = b1 * m[i] + (1 - b1) * g[i]
                u[i] = c > 0 ? 1 : c < 0 ? -1 : 0
                m[i] = b2 * m[i] + (1 - b2) * g[i]
            }
            if settings[.grams] != nil { u[i] = (g[i] > 0 ? 1 : g[i] < 0 ? -1 : 0) * abs(u[i]) }
        }
        if settings[.cautious] != nil {
            let kept = zip(u, g).filter { $0 * $1 > 0 }.count
            let scale = Double(w.count) / Double(kept + 1)
            u = zip(u, g).map { $0 * $1 > 0 ? $0 * scale : 0 }
        }
        for i in w.indices { w[i] = w[i] * (1 - lr * hyper.weightDecay) - lr * u[i] }
    }
}
