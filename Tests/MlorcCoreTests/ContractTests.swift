import XCTest
@testable import MlorcCore

/// Determinism, resume, degenerate input and the all-or-nothing error contract.
final class ContractTests: XCTestCase {
    func makeOptimizer(_ rule: RuleKind, threads: Int = 1, p: Int = 2, q: Int = 1) throws -> Optimizer {
        let opt = Optimizer(rule: rule)
        try opt.hyper.set(.threads, Double(threads), rule: rule)
        try opt.hyper.set(.oversampling, Double(p), rule: rule)
        try opt.hyper.set(.powerIterations, Double(q), rule: rule)
        return opt
    }

    /// Large enough (>= 2·32768 elements) that a step really splits across 2 threads.
    func run(_ rule: RuleKind, threads: Int, steps: Int) throws -> TestTensor {
        let opt = try makeOptimizer(rule, threads: threads)
        var rng = TestRandom(21)
        let t = try TestTensor(opt, rows: 301, cols: 233, id: 9, param: rng.matrix(301 * 233))
        XCTAssertEqual(t.header.storage, .lowRank)
        for _ in 0..<steps { t.grad = rng.matrix(301 * 233); try step(opt, [t], lr: 1e-3) }
        return t
    }

    func testThreadCountDoesNotChangeResults() throws {
        for rule in RuleKind.allCases where !rule.adaptsStepSize {  // those: DAdaptationTests
            let one = try run(rule, threads: 1, steps: 3), two = try run(rule, threads: 2, steps: 3)
            XCTAssertEqual(one.param, two.param, "\(rule)")
            XCTAssertEqual(one.state, two.state, "\(rule)")
        }
    }

    func testResumeFromSavedStateIsBitExact() throws {
        for rule in RuleKind.allCases where !rule.adaptsStepSize {  // those: DAdaptationTests
            let opt = try makeOptimizer(rule)
            var rng = TestRandom(5)
            let t = try TestTensor(opt, rows: 64, cols: 40, id: 4, param: rng.matrix(64 * 40))
            for _ in 0..<5 { t.grad = rng.matrix(64 * 40); try step(opt, [t], lr: 1e-2) }
            let savedParam = t.param, savedState = t.state
            let g = rng.matrix(64 * 40)
            t.grad = g
            try step(opt, [t], lr: 1e-2)

            // A new optimizer with the same settings, fed the saved bytes.
            let fresh = try makeOptimizer(rule)
            let resumed = try TestTensor(fresh, rows: 64, cols: 40, id: 4)
            resumed.param = savedParam
            resumed.state = savedState
            resumed.grad = g
            try step(fresh, [resumed], lr: 1e-2)
            XCTAssertEqual(resumed.param, t.param, "\(rule)")
            XCTAssertEqual(resumed.state, t.state, "\(rule)")
        }
    }

    func testSketchDependsOnlyOnSeedTensorAndStep() {
        func draw(_ seed: UInt64, _ id: UInt64, _ step: UInt64) -> [Float] {
            var out = [Float](repeating: 0, count: 40_000)
            SketchGenerator(seed: seed, tensorID: id, step: step).fillNormals(&out, count: out.count)
            return out
        }
        let a = draw(1, 2, 3)
        XCTAssertEqual(a, draw(1, 2, 3))
        XCTAssertNotEqual(a, draw(1, 2, 4))
        XCTAssertNotEqual(a, draw(1, 3, 3))
        XCTAssertNotEqual(a, draw(2, 2, 3))
        // Standard normal: mean 0 and variance 1 within ~5 standard errors (n = 40000).
        let mean = a.reduce(0.0) { $0 + Double($1) } / Double(a.count)
        let variance = a.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(a.count)
        XCTAssertLessThan(abs(mean), 5 / 200.0)
        XCTAssertLessThan(abs(variance - 1), 5 * 1.414 / 200.0)
    }

    func testZeroGradientsGiveNoNaN() throws {
        for rule in [RuleKind.adamW, .lion, .adopt] {  // GaLore's payload is no factor form
            let opt = try makeOptimizer(rule)
            var rng = TestRandom(8)
            let initial = rng.matrix(48 * 36)
            let t = try TestTensor(opt, rows: 48, cols: 36, id: 1, storage: .lowRank, param: initial)
            for _ in 0..<4 { try step(opt, [t], lr: 1e-2) }
            XCTAssertTrue(t.param.allSatisfy(\.isFinite))
            XCTAssertTrue(t.moment(0).allSatisfy { $0 == 0 })
            // Only weight decay acts, four times: w ← w − (lr·λ)·w, in float.
            let rate = Float(1e-2 * opt.hyper.weightDecay)
            let expected = initial.map { w in (0..<4).reduce(w) { x, _ in x - rate * x } }
            XCTAssertEqual(t.param, expected)
        }
    }

    // MARK: errors change nothing

    /// Runs `mutate` on a fresh 3-tensor batch, then a step that must fail
    /// with `code`; every param and state must be bit-identical afterwards.
    func expectRefused(_ code: MlorcError.Code, file: StaticString = #filePath, line: UInt = #line,
                       _ mutate: (Optimizer, [TestTensor]) throws -> Void) throws {
        let opt = try makeOptimizer(.adamW)
        var rng = TestRandom(13)
        let tensors = [try TestTensor(opt, rows: 40, cols: 36, id: 0, param: rng.matrix(40 * 36)),
                       try TestTensor(opt, rows: 1, cols: 36, id: 1, param: rng.matrix(36)),
                       try TestTensor(opt, rows: 36, cols: 40, id: 2, storage: .dense, param: rng.matrix(36 * 40))]
        for t in tensors { t.grad = rng.matrix(t.rows * t.cols) }
        try step(opt, tensors, lr: 1e-2)
        for t in tensors { t.grad = rng.matrix(t.rows * t.cols) }
        try mutate(opt, tensors)
        let params = tensors.map(\.param), states = tensors.map(\.state)
        XCTAssertThrowsError(try step(opt, tensors, lr: 1e-2), file: file, line: line) { error in
            XCTAssertEqual((error as? MlorcError)?.code, code, "\(error)", file: file, line: line)
        }
        XCTAssertEqual(tensors.map(\.param), params, file: file, line: line)
        XCTAssertEqual(tensors.map(\.state), states, file: file, line: line)
    }

    func testNonFiniteGradientRefusesWholeBatch() throws {
        for (index, value) in [(0, Float.nan), (1, .infinity), (2, -.infinity)] {
            try expectRefused(.nonFinite) { _, t in t[index].grad[t[index].grad.count - 1] = value }
        }
    }

    func testCorruptedStatesAreRefused() throws {
        try expectRefused(.stateCorrupted) { _, t in t[0].state[0] ^= 1 }                     // magic
        try expectRefused(.stateCorrupted) { _, t in t[1].state[30] ^= 0x10 }                 // header field
        try expectRefused(.stateCorrupted) { _, t in t[0].state[StateFormat.headerBytes + 5] ^= 4 }  // low-rank payload
        try expectRefused(.stateVersion) { _, t in t[2].state[8] = 2 }                        // future layout
        try expectRefused(.stateTooSmall) { _, t in t[0].state.removeLast() }
        try expectRefused(.stateTooSmall) { _, t in t[0].state = Array(t[0].state.prefix(64)) }
    }

    func testMismatchedStatesAreRefused() throws {
        // A Lion state given to an AdamW optimizer.
        try expectRefused(.stateMismatch) { _, t in
            let lion = Optimizer(rule: .lion)
            t[1].state = try TestTensor(lion, rows: 1, cols: 36, id: 1).state
        }
        // A state of another shape (same element count).
        try expectRefused(.stateMismatch) { opt, t in
            t[2].state = try TestTensor(opt, rows: 40, cols: 36, id: 2, storage: .dense).state
        }
    }

    func testInvalidLayoutsAndParameters() throws {
        let opt = Optimizer(rule: .adamW)
        func code(_ body: () throws -> Void) -> MlorcError.Code? {
            do { try body(); return nil } catch { return (error as? MlorcError)?.code }
        }
        XCTAssertEqual(code { _ = try opt.stateSize(TensorLayout(rows: 0, cols: 4)) }, .invalidShape)
        XCTAssertEqual(code { _ = try opt.stateSize(TensorLayout(rows: -3, cols: 4)) }, .invalidShape)
        XCTAssertEqual(code { _ = try opt.stateSize(TensorLayout(rows: 1 << 31, cols: 4)) }, .invalidShape)
        XCTAssertEqual(code { _ = try opt.stateSize(TensorLayout(rows: 3, cols: 4, storage: 2)) }, .invalidRank)
        XCTAssertEqual(code { _ = try opt.stateSize(TensorLayout(rows: 3, cols: 4, dtype: 7)) }, .unsupportedDtype)
        XCTAssertEqual(code { _ = try opt.stateSize(TensorLayout(rows: 3, cols: 4, storage: 9)) }, .invalidArgument)
        XCTAssertEqual(code { try opt.hyper.set(.rank, 0, rule: .adamW) }, .paramOutOfRange)
        XCTAssertEqual(code { try opt.hyper.set(.rank, 2.5, rule: .adamW) }, .paramOutOfRange)
        XCTAssertEqual(code { try opt.hyper.set(.beta1, 1, rule: .adamW) }, .paramOutOfRange)
        XCTAssertEqual(code { try opt.hyper.set(.beta2, .nan, rule: .adamW) }, .paramOutOfRange)
        XCTAssertEqual(code { try Optimizer(rule: .lion).hyper.set(.eps, 1e-6, rule: .lion) }, .unknownParam)
        XCTAssertEqual(opt.hyper.rank, 4)
        XCTAssertEqual(opt.hyper.beta1, 0.9)
        // Auto policy: vectors and small matrices dense, large matrices low-rank.
        let auto = { (r: Int64, c: Int64) in try opt.freshHeader(TensorLayout(rows: r, cols: c), tensorID: 0).storage }
        XCTAssertEqual(try auto(1, 4096), .dense)
        XCTAssertEqual(try auto(4096, 1), .dense)
        XCTAssertEqual(try auto(15, 4096), .dense)
        XCTAssertEqual(try auto(16, 16), .lowRank)
        XCTAssertEqual(try auto(768, 3072), .lowRank)
        // State sizes follow 2r(m+n+1) (AdamW) and 2mn floats.
        XCTAssertEqual(try opt.stateSize(TensorLayout(rows: 768, cols: 3072)), 128 + 4 * 2 * 4 * (768 + 3072 + 1))
        XCTAssertEqual(try opt.stateSize(TensorLayout(rows: 768, cols: 3072, storage: 1)), 128 + 4 * 2 * 768 * 3072)
    }

    func testInvalidStepArgumentsAreRefused() throws {
        let opt = Optimizer(rule: .adamW)
        var rng = TestRandom(3)
        let t = try TestTensor(opt, rows: 32, cols: 32, id: 0, param: rng.matrix(32 * 32))
        t.grad = rng.matrix(32 * 32)
        let param = t.param, state = t.state
        try t.param.withUnsafeMutableBytes { p in
            try t.grad.withUnsafeBytes { g in
                try t.state.withUnsafeMutableBytes { s in
                    let good = TensorArgs(param: p.baseAddress, grad: g.baseAddress, state: s.baseAddress,
                                          stateBytes: s.count, rows: 32, cols: 32)
                    func expect(_ code: MlorcError.Code, lr: Double = 1e-2, _ edit: (inout TensorArgs) -> Void) {
                        var args = good
                        edit(&args)
                        XCTAssertThrowsError(try opt.step([args], lr: lr)) { XCTAssertEqual(($0 as? MlorcError)?.code, code, "\($0)") }
                    }
                    expect(.nullPointer) { $0.param = nil }
                    expect(.nullPointer) { $0.grad = nil }
                    expect(.nullPointer) { $0.state = nil }
                    expect(.invalidArgument) { $0.reserved = 1 }
                    expect(.unsupportedDtype) { $0.dtype = 3 }
                    expect(.invalidShape) { $0.rows = 0 }
                    expect(.stateMismatch) { $0.rows = 16; $0.cols = 64 }
                    expect(.invalidArgument, lr: -1) { _ in }
                    expect(.invalidArgument, lr: .nan) { _ in }
                    expect(.invalidArgument, lr: .infinity) { _ in }
                    expect(.invalidArgument) { $0.grad = UnsafeRawPointer(p.baseAddress!) }          // grad aliases param
                    expect(.invalidArgument) { $0.param = s.baseAddress! + 64 }                      // param inside state
                    expect(.invalidArgument) { $0.param = p.baseAddress! + 2 }                       // misaligned
                    // The same tensor twice in one batch writes one buffer twice.
                    XCTAssertThrowsError(try opt.step([good, good], lr: 1e-2)) {
                        XCTAssertEqual(($0 as? MlorcError)?.code, .invalidArgument)
                        XCTAssertTrue(($0 as? MlorcError)?.message.contains("overlaps") ?? false)
                    }
                }
            }
        }
        XCTAssertEqual(t.param, param)
        XCTAssertEqual(t.state, state)
    }
}
