#if canImport(Glibc)
import Glibc
#endif
import CVectorMath

/// The per-tensor options shared by every rule, applied around it in this
/// order: the gradient transform (OrthoGrad, norm clipping), the rule, Grams,
/// cautious masking.
struct StepModifiers {
    /// g' = gradScale·g + weightMix·w: OrthoGrad and clipping folded into two
    /// scalars computed from per-tensor sums before the step.
    var gradScale: Float = 1, weightMix: Float = 0
    /// Grams (Cao et al. 2024): direction sign(g)·|u|.
    var grams = false
    /// Cautious masking (Liang et al. 2024): u·[u·g > 0]·scale, scale =
    /// elements / (kept + 1) counted over the tensor before the update; 0 = off.
    var cautiousScale: Float = 0

    var transformsGradient: Bool { gradScale != 1 || weightMix != 0 }

    @_transparent
    func gradient(_ g: SIMD8<Float>, weights w: SIMD8<Float>) -> SIMD8<Float> {
        (gradScale * g).addingProduct(weightMix, w)
    }

    /// The direction after Grams and cautious masking.
    @_transparent
    func direction(_ u: SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        var u = u
        if grams { u = mlorc_grams8(u, g) }
        if cautiousScale != 0 { u = u * mlorc_positive_indicator8(u * g) * cautiousScale }
        return u
    }

    /// The kept-element count of cautious masking for one chunk (before scaling).
    @_transparent
    func cautiousKept(_ u: SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        mlorc_positive_indicator8((grams ? mlorc_grams8(u, g) : u) * g)
    }

    /// Sets gradScale and weightMix from Σg², Σw·g, Σw² of the tensor:
    /// OrthoGrad (Prieto et al. 2025) removes g's component along w and
    /// rescales to ‖g‖; then the result is scaled down to `clipNorm` if longer.
    mutating func setGradientTransform(gg: Double, wg: Double, ww: Double, orthograd: Bool, clipNorm: Double) {
        var scale = 1.0, mix = 0.0
        var norm = gg.squareRoot()
        if orthograd {
            let alpha = wg / (ww + 1e-30)
            let orthogonal = max(gg - 2 * alpha * wg + alpha * alpha * ww, 0).squareRoot()
            scale = norm / (orthogonal + 1e-30)
            mix = -scale * alpha
            norm = scale * orthogonal
        }
        if clipNorm > 0 && norm > clipNorm {
            scale *= clipNorm / norm
            mix *= clipNorm / norm
        }
        gradScale = Float(scale)
        weightMix = Float(mix)
    }
}

/// (4/π)·atan2(y, x) per lane: the atan2 update form (bounded, no ε), in
/// vector code (mlorc_atan2_8) so that the kernels' loops hold no libm calls.
@inline(__always)
func scaledAtan2(_ y: SIMD8<Float>, _ x: SIMD8<Float>) -> SIMD8<Float> {
    mlorc_atan2_8(y, x) * Float(4 / Double.pi)
}
