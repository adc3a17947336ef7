import CVectorMath

/// What proves, before a step writes anything, that it writes only finite
/// values: bounds of its inputs gathered by read-only scans, pushed through
/// the rule's `outputBounds`. Where a bound is inconclusive (ε = 0, values
/// near float's limit) a storage checks its outputs exactly instead.
enum OutputBounds {
    /// Bounds above this are too close to float's largest value (3.4e38) to
    /// prove that fp32 arithmetic stays finite.
    static let proven = 1e38

    /// max |p[e]| over count elements of an element type, in parallel parts
    /// (+inf if any is NaN or infinite).
    static func maxMagnitude<E: Element>(_: E.Type, _ p: UnsafePointer<E.Scalar>, count: Int,
                                         context: StepContext) -> Double {
        let parts = context.parts(for: count)
        var worst = [Int32](repeating: 0, count: parts)
        worst.withUnsafeMutableBufferPointer { out in
            context.pool.run(parts: parts) { part in
                let range = partition(count, parts: parts, part: part, align: 8)
                out[part] = maxMagnitudeBits(E.self, p, range)
            }
        }
        return magnitude(ofBits: worst.max() ?? 0)
    }

    /// maxMagnitude of a buffer whose element type is known at run time.
    static func maxMagnitude(_ kind: ElementKind, _ p: UnsafeRawPointer, count: Int, context: StepContext) -> Double {
        switch kind {
        case .f32: maxMagnitude(F32.self, p.assumingMemoryBound(to: Float.self), count: count, context: context)
        case .bf16: maxMagnitude(BF16.self, p.assumingMemoryBound(to: UInt16.self), count: count, context: context)
        case .f16: maxMagnitude(F16.self, p.assumingMemoryBound(to: Float16.self), count: count, context: context)
        }
    }

    /// The magnitude whose bit pattern `bits` is (NaN reads as +inf).
    static func magnitude(ofBits bits: Int32) -> Double {
        let x = Float(bitPattern: UInt32(bitPattern: bits))
        return x.isNaN ? .infinity : Double(x)
    }

    /// max over rows of Σ_a |U[i, a]|·s[a], times max |Vt|: a bound of
    /// |U diag(s) Vt| entrywise.
    static func factorBound(_ f: Factors, rows m: Int, cols n: Int, rank r: Int) -> Double {
        var rowMax = 0.0
        for i in 0..<m {
            var sum = 0.0
            for a in 0..<r { sum += abs(Double(f.u[i * r + a])) * Double(f.s[a]) }
            rowMax = max(rowMax, sum)
        }
        var vtMax: Float = 0
        for e in 0..<(r * n) { vtMax = max(vtMax, abs(f.vt[e])) }
        return rowMax * Double(vtMax)
    }

    /// Why lr and the decay rate lr·λ cannot be used as fp32 scalars, or nil.
    static func scalarsProblem(lr: Double, weightDecay: Double) -> String? {
        Float(lr).isFinite && Float(lr * weightDecay).isFinite
            ? nil : "lr = \(lr) overflows float (as the step size or the decay rate lr·λ)"
    }
}

/// The largest magnitude bits of p[range] (full chunks, then the tail).
@inline(__always)
func maxMagnitudeBits<E: Element>(_: E.Type, _ p: UnsafePointer<E.Scalar>, _ range: Range<Int>) -> Int32 {
    var a = SIMD8<Int32>(repeating: 0), b = a
    var e = range.lowerBound
    while e + 16 <= range.upperBound {
        a = mlorc_max_magnitude_bits8(a, E.load8(p + e, 8))
        b = mlorc_max_magnitude_bits8(b, E.load8(p + e + 8, 8))
        e += 16
    }
    while e < range.upperBound {
        a = mlorc_max_magnitude_bits8(a, E.load8(p + e, min(8, range.upperBound - e)))
        e += 8
    }
    return max(a.max(), b.max())
}

/// maxMagnitudeBits of a buffer whose element type is known at run time
/// (one branch, outside the loop).
func maxMagnitudeBits(_ kind: ElementKind, _ p: UnsafeRawPointer, _ range: Range<Int>) -> Int32 {
    switch kind {
    case .f32: maxMagnitudeBits(F32.self, p.assumingMemoryBound(to: Float.self), range)
    case .bf16: maxMagnitudeBits(BF16.self, p.assumingMemoryBound(to: UInt16.self), range)
    case .f16: maxMagnitudeBits(F16.self, p.assumingMemoryBound(to: Float16.self), range)
    }
}

/// Whether any of p[range] is below zero (-0 and NaN are not), for a
/// buffer whose element type is known at run time (one branch, outside the loop).
func anyNegative(_ kind: ElementKind, _ p: UnsafeRawPointer, _ range: Range<Int>) -> Bool {
    switch kind {
    case .f32: anyNegative(F32.self, p.assumingMemoryBound(to: Float.self), range)
    case .bf16: anyNegative(BF16.self, p.assumingMemoryBound(to: UInt16.self), range)
    case .f16: anyNegative(F16.self, p.assumingMemoryBound(to: Float16.self), range)
    }
}

@inline(__always)
private func anyNegative<E: Element>(_: E.Type, _ p: UnsafePointer<E.Scalar>, _ range: Range<Int>) -> Bool {
    // One read pass, no early exit: a branch per chunk on any(x .< 0), which
    // Swift compiled to scalar code, made this scan half of a dense step.
    var negative = SIMD8<Int32>(repeating: 0)
    var e = range.lowerBound
    while e + 8 <= range.upperBound {  // full chunks: no partial-load branch
        negative = mlorc_or_negative8(negative, E.load8(p + e, 8))
        e += 8
    }
    if e < range.upperBound { negative = mlorc_or_negative8(negative, E.load8(p + e, range.upperBound - e)) }
    return negative != SIMD8(repeating: 0)
}

/// The lanes of an 8-lane chunk below `count` (the rest, padding, read as 0).
@_transparent
func maskedMagnitudeBits(_ acc: SIMD8<Int32>, _ x: SIMD8<Float>, _ count: Int) -> SIMD8<Int32> {
    if count >= 8 { return mlorc_max_magnitude_bits8(acc, x) }
    var y = SIMD8<Float>(repeating: 0)
    for lane in 0..<count { y[lane] = x[lane] }
    return mlorc_max_magnitude_bits8(acc, y)
}

/// |x| lane by lane (the sign bit cleared; NaN stays NaN).
@_transparent
func magnitude8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    unsafeBitCast(unsafeBitCast(x, to: SIMD8<UInt32>.self) & SIMD8(repeating: 0x7fff_ffff), to: SIMD8<Float>.self)
}
