import CVectorMath

/// What dense verification reads, gathered in one pass over a part of a
/// tensor: the largest magnitude bits of the weights, the gradient and the
/// moments (x, y, z, w; NaN's bits are above infinity's), and whether the
/// second moment holds an entry below zero (-0 and NaN are not).
struct DenseScan {
    var bits = SIMD4<Int32>.zero
    var negative = false
}

/// The scan of range: one fused loop when every buffer is fp32 (each element
/// read once, 16 bytes of a two-moment rule), else one loop per buffer.
func denseScan(_ t: DenseTensor, twoMoments: Bool, checkNegative: Bool, _ range: Range<Int>) -> DenseScan {
    if t.weightKind == .f32 && t.gradKind == .f32 && t.momentKind == .f32 {
        return denseScanFP32(t.weights.assumingMemoryBound(to: Float.self), t.grad.assumingMemoryBound(to: Float.self),
                             t.moments[0].assumingMemoryBound(to: Float.self),
                             twoMoments ? t.moments[1].assumingMemoryBound(to: Float.self) : nil,
                             checkNegative: checkNegative, range)
    }
    var scan = DenseScan()
    scan.bits = SIMD4(maxMagnitudeBits(t.weightKind, t.weights, range), maxMagnitudeBits(t.gradKind, t.grad, range),
                      maxMagnitudeBits(t.momentKind, t.moments[0], range),
                      twoMoments ? maxMagnitudeBits(t.momentKind, t.moments[1], range) : 0)
    scan.negative = checkNegative && anyNegative(t.momentKind, UnsafeRawPointer(t.moments[1]), range)
    return scan
}

private func denseScanFP32(_ w: UnsafePointer<Float>, _ g: UnsafePointer<Float>, _ m0: UnsafePointer<Float>,
                           _ m1: UnsafePointer<Float>?, checkNegative: Bool, _ range: Range<Int>) -> DenseScan {
    var bw = SIMD8<Int32>(repeating: 0), bg = bw, b0 = bw, b1 = bw, negative = bw
    @_transparent func chunk(_ e: Int, _ count: Int) {
        bw = mlorc_max_magnitude_bits8(bw, F32.load8(w + e, count))
        bg = mlorc_max_magnitude_bits8(bg, F32.load8(g + e, count))
        b0 = mlorc_max_magnitude_bits8(b0, F32.load8(m0 + e, count))
        if let m1 {
            let v = F32.load8(m1 + e, count)
            b1 = mlorc_max_magnitude_bits8(b1, v)
            if checkNegative { negative = mlorc_or_negative8(negative, v) }
        }
    }
    var e = range.lowerBound
    while e + 8 <= range.upperBound { chunk(e, 8); e += 8 }
    if e < range.upperBound { chunk(e, range.upperBound - e) }  // lanes past the end load as 0
    return DenseScan(bits: SIMD4(bw.max(), bg.max(), b0.max(), b1.max()), negative: negative != SIMD8(repeating: 0))
}
