/* Vector operations that Swift's SIMD types lower poorly (a scalar libm call
 * per lane, or mask conversions through shuffles), written as clang vector
 * expressions on 8-lane floats (Swift's SIMD8<Float>). The importer inlines
 * them into the Swift kernels as one or two AVX instructions each. */
#ifndef MLORC_VECTOR_MATH_H
#define MLORC_VECTOR_MATH_H

typedef float mlorc_float8 __attribute__((ext_vector_type(8)));
typedef int mlorc_int8 __attribute__((ext_vector_type(8)));

/* Correctly rounded square root of each lane (vsqrtps). */
static inline mlorc_float8 mlorc_sqrt8(mlorc_float8 x) {
    return __builtin_elementwise_sqrt(x);
}

/* c where x < 0, x elsewhere: the second-moment fix (vcmpps + a blend). */
static inline mlorc_float8 mlorc_replace_negative8(mlorc_float8 x, float c) {
    mlorc_int8 negative = (mlorc_int8)(x < 0.0f);  /* all ones where x < 0 */
    mlorc_float8 cv = c;
    return (mlorc_float8)((negative & (mlorc_int8)cv) | (~negative & (mlorc_int8)x));
}

/* 1.0 where x < 0, 0.0 elsewhere (vcmpps + vandps). */
static inline mlorc_float8 mlorc_negative_indicator8(mlorc_float8 x) {
    mlorc_int8 bits = (mlorc_int8)(x < 0.0f) & (mlorc_int8)0x3f800000;
    return (mlorc_float8)bits;
}

/* sign(x): 1, -1 or 0 per lane (0 for ±0 and NaN), as torch.sign for finite x. */
static inline mlorc_float8 mlorc_sign8(mlorc_float8 x) {
    mlorc_int8 pos = (mlorc_int8)(x > 0.0f) & (mlorc_int8)0x3f800000;  /* +1.0f */
    mlorc_int8 neg = (mlorc_int8)(x < 0.0f) & (mlorc_int8)0xbf800000;  /* -1.0f */
    return (mlorc_float8)(pos | neg);
}

/* 1.0 where x > 0, 0.0 elsewhere (vcmpps + vandps). */
static inline mlorc_float8 mlorc_positive_indicator8(mlorc_float8 x) {
    mlorc_int8 bits = (mlorc_int8)(x > 0.0f) & (mlorc_int8)0x3f800000;
    return (mlorc_float8)bits;
}

/* Grams: the magnitude of u with the sign of g (0 where g is 0). */
static inline mlorc_float8 mlorc_grams8(mlorc_float8 u, mlorc_float8 g) {
    mlorc_int8 magnitude = (mlorc_int8)u & (mlorc_int8)0x7fffffff;
    return (mlorc_float8)magnitude * mlorc_sign8(g);
}

/* max(acc, |x| as bits) per lane. For non-negative floats the bit patterns
 * order like the values, and NaN's pattern is above infinity's, so the
 * result's largest lane compared with a bound's bits tells whether every x
 * was finite and within the bound (vpand + vpmaxsd). */
static inline mlorc_int8 mlorc_max_magnitude_bits8(mlorc_int8 acc, mlorc_float8 x) {
    mlorc_int8 magnitude = (mlorc_int8)x & (mlorc_int8)0x7fffffff;
    return __builtin_elementwise_max(acc, magnitude);
}

typedef unsigned mlorc_uint8 __attribute__((ext_vector_type(8)));

/* acc | (all ones where x < 0) per lane (-0 and NaN are not below zero):
 * vcmpps + vorps, where Swift's any(x .< 0) compiled to scalar code. */
static inline mlorc_int8 mlorc_or_negative8(mlorc_int8 acc, mlorc_float8 x) {
    return acc | (mlorc_int8)(x < 0.0f);
}

/* A binary32's bits rounded to bfloat16 (the top 16 bits, in each lane's low
 * half): bits + increment, truncated, where increment is 0x7fff plus the
 * lowest kept bit (nearest even) or 16 random bits (stochastic). NaN stays
 * a quiet NaN (the addition could carry it into infinity); the signed
 * compare is right because the sign bit is masked off. In C because Swift's
 * SIMD comparisons of unsigned lanes compile to scalar code. */
static inline mlorc_uint8 mlorc_bf16_round8(mlorc_uint8 bits, mlorc_uint8 increment) {
    mlorc_int8 nan = (mlorc_int8)(bits & 0x7fffffffu) > (mlorc_int8)0x7f800000;
    mlorc_uint8 rounded = bits + increment;
    mlorc_uint8 kept = ((mlorc_uint8)nan & (bits | 0x00400000u)) | (~(mlorc_uint8)nan & rounded);
    return kept >> 16;
}

typedef unsigned short mlorc_ushort8 __attribute__((ext_vector_type(8)));

/* bfloat16 bits widened to binary32 (vpmovzxwd + vpslld). In C because
 * Swift's SIMD8<UInt32>(truncatingIfNeeded:) of 16-bit lanes compiled to an
 * out-of-line call per 8 lanes. */
static inline mlorc_float8 mlorc_bf16_widen8(mlorc_ushort8 h) {
    return (mlorc_float8)(__builtin_convertvector(h, mlorc_uint8) << 16);
}

/* The low 16 bits of each lane (a shuffle), for the same reason. */
static inline mlorc_ushort8 mlorc_low_halves8(mlorc_uint8 x) {
    return __builtin_convertvector(x, mlorc_ushort8);
}

typedef _Float16 mlorc_half8 __attribute__((ext_vector_type(8)));

/* binary16 bits widened to binary32 (vcvtph2ps) and binary32 rounded to
 * binary16 bits, to nearest even (vcvtps2ph): inline, where Swift's
 * SIMD8<Float16> conversions compiled to a call per 8 lanes (which also
 * clobbers every vector register of the calling kernel). */
static inline mlorc_float8 mlorc_f16_widen8(mlorc_ushort8 h) {
    return __builtin_convertvector((mlorc_half8)h, mlorc_float8);
}

static inline mlorc_ushort8 mlorc_f16_narrow8(mlorc_float8 v) {
    return (mlorc_ushort8)__builtin_convertvector(v, mlorc_half8);
}

/* One round of a 32-bit integer mixer (xor-shift-multiply; constants of
 * Chris Wellons' "lowbias32"): a bijection with full avalanche. */
static inline mlorc_uint8 mlorc_mix32x8(mlorc_uint8 x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* 32 random bits for each of the elements e, e+1, ..., e+7 (e = hi * 2^32 +
 * lo) under the 64-bit key (k0, k1): a pure function of the key and the
 * element index, two mixer rounds, computed in lanes (about 2 instructions
 * per element). Lanes past a 2^32 boundary carry into hi. */
static inline mlorc_uint8 mlorc_counter_bits8(unsigned lo, unsigned hi, unsigned k0, unsigned k1) {
    mlorc_uint8 lanes = {0, 1, 2, 3, 4, 5, 6, 7};
    mlorc_uint8 index = lo + lanes;
    mlorc_uint8 high = hi - (mlorc_uint8)(index < lo); /* a true compare is all ones: hi + 1 */
    mlorc_uint8 x = mlorc_mix32x8(index ^ k0);
    return mlorc_mix32x8(x ^ high ^ k1);
}

/* A hint to bring the 64-byte line at p into the caches (prefetcht0; never
 * faults, so p may lie past the end of a buffer): the streaming passes issue
 * it a fixed distance ahead of their loads (Elements/Prefetch.swift). */
static inline void mlorc_prefetch(const void *p) {
    __builtin_prefetch(p, 0, 3);
}

/* The larger of a and b per lane, b where a is NaN and a where b is
 * (as Swift's pointwiseMax, which the optimiser left as a call per chunk). */
static inline mlorc_float8 mlorc_max8(mlorc_float8 a, mlorc_float8 b) {
    return __builtin_elementwise_max(a, b);
}

/* mask ? a : b per lane (mask lanes all ones or all zeros). */
static inline mlorc_float8 mlorc_select8(mlorc_int8 mask, mlorc_float8 a, mlorc_float8 b) {
    return (mlorc_float8)((mask & (mlorc_int8)a) | (~mask & (mlorc_int8)b));
}

/* atan2(y, x) per lane in straight-line vector code, within 2.5 ulp of the
 * exact value (Tests/MlorcCoreTests/Atan2Tests.swift): a libm call per lane
 * inside a kernel loop forces every vector live across it onto the stack,
 * and atan2f's errno keeps even an unused result's calls alive. The special
 * cases are atan2f's: ±0 and ±inf in either argument, a negative-signed x
 * (-0 included) giving ±π, NaN in either giving NaN.
 * Reduction: t = min(|x|,|y|) / max(|x|,|y|) in [0, 1]; above tan(π/8),
 * atan t = π/4 + atan r with r = (t - 1) / (t + 1) (one division: numerator
 * and denominator chosen first); atan r = r + r·r²·P(r²) on |r| <= tan(π/8),
 * P a degree-4 least-squares fit to atan's relative error (0.63 ulp in
 * binary32); π/4, π/2 and π are added as two floats each (head + tail). */
static inline mlorc_float8 mlorc_atan2_8(mlorc_float8 y, mlorc_float8 x) {
    const mlorc_int8 magnitudeMask = 0x7fffffff;
    const mlorc_float8 zero = 0.0f;
    mlorc_float8 ax = (mlorc_float8)((mlorc_int8)x & magnitudeMask);
    mlorc_float8 ay = (mlorc_float8)((mlorc_int8)y & magnitudeMask);
    mlorc_int8 swap = ay > ax;
    mlorc_float8 num = mlorc_select8(swap, ax, ay), den = mlorc_select8(swap, ay, ax);
    /* t >= tan(π/8); den == 0 means 0/0 (atan 0); inf/inf lands here with r = 0. */
    mlorc_int8 upper = (num >= 0.41421356237309503f * den) & (den != 0.0f);
    mlorc_float8 r = mlorc_select8(upper, num - den, num) / mlorc_select8(upper, num + den, den);
    r = mlorc_select8(num == den, zero, r);
    mlorc_float8 z = r * r;
    mlorc_float8 p = -0.060792941600084305f;
    p = p * z + 0.10594228655099869f;
    p = p * z - 0.14243587851524353f;
    p = p * z + 0.19998474419116974f;
    p = p * z - 0.33333316445350647f;
    mlorc_float8 a = r + (r * z * p + mlorc_select8(upper, (mlorc_float8)-2.1855694e-08f, zero));
    a = a + mlorc_select8(upper, (mlorc_float8)0.78539818525314331f, zero);
    a = mlorc_select8(swap, (1.5707963705062866f - a) - 4.3711388e-08f, a);
    /* x's sign bit set: π - a, except for x = -0 beside a nonzero y (±π/2). */
    mlorc_int8 negativeX = ((mlorc_int8)x < 0) & ((x != 0.0f) | (y == 0.0f));
    a = mlorc_select8(negativeX, (3.1415927410125732f - a) - 8.7422777e-08f, a);
    a = (mlorc_float8)(((mlorc_int8)a & magnitudeMask) | ((mlorc_int8)y & ~magnitudeMask));
    return mlorc_select8((x != x) | (y != y), x + y, a);
}

#endif
