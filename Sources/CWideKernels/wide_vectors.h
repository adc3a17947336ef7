#ifndef WIDE_VECTORS_H
#define WIDE_VECTORS_H
/* The 16-lane loads, stores and rebuild the AVX-512 column kernels share
 * (internal to Sources/CWideKernels). */
#include "wide_kernels.h"

#include <immintrin.h>
#include <stddef.h>

/* Compiled for AVX-512 function by function, so that nothing else in the
 * library can pick up zmm code; callers check wide_kernels_available. */
#define WIDE __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma")))
#define INLINE static inline __attribute__((always_inline)) WIDE

/* Columns j..j+15 of a panel row (two 8-column blocks 32 floats apart), or
 * j..j+7 (upper lanes 0) when `wide` is 0. */
INLINE __m512 load_panel(const float *p, int wide) {
    __m512 lo = _mm512_zextps256_ps512(_mm256_loadu_ps(p));
    return wide ? _mm512_insertf32x8(lo, _mm256_loadu_ps(p + 32), 1) : lo;
}

INLINE void store_panel(float *p, __m512 v, int wide) {
    _mm256_storeu_ps(p, _mm512_castps512_ps256(v));
    if (wide) _mm256_storeu_ps(p + 32, _mm512_extractf32x8_ps(v, 1));
}

INLINE __m512 load_row(const float *p, int wide) {
    return wide ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(0x00FF, p);
}

INLINE void store_row(float *p, __m512 v, int wide) {
    if (wide) _mm512_storeu_ps(p, v); else _mm512_mask_storeu_ps(p, 0x00FF, v);
}

/* 16 bf16 values (their bits) widened to fp32. */
INLINE __m512 widen_bf16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Weights or gradient elements e..e+15 (e..e+7, upper lanes 0, when `wide`
 * is 0) of a row-major fp32 or bf16 matrix, widened to fp32. */
INLINE __m512 load_elements(const void *base, ptrdiff_t e, int wide, int bf16) {
    if (!bf16) return load_row((const float *)base + e, wide);
    const unsigned short *p = (const unsigned short *)base + e;
    return widen_bf16(wide ? _mm256_loadu_si256((const __m256i *)p)
                           : _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)p)));
}

/* A kernel's element types as flags. */
enum { WEIGHTS_BF16 = 1, GRAD_BF16 = 2 };

static inline int element_types(int weights_bf16, int grad_bf16) {
    return (weights_bf16 ? WEIGHTS_BF16 : 0) | (grad_bf16 ? GRAD_BF16 : 0);
}

/* CALL(T) with T the element-type flags `types` as a compile-time constant:
 * one compiled copy of an inlined kernel per combination. */
#define WIDE_FOR_ELEMENT_TYPES(types, CALL)                              \
    do {                                                                \
        switch (types) {                                                \
        case 0: CALL(0); break;                                         \
        case WEIGHTS_BF16: CALL(WEIGHTS_BF16); break;                   \
        case GRAD_BF16: CALL(GRAD_BF16); break;                         \
        default: CALL(WEIGHTS_BF16 | GRAD_BF16); break;                 \
        }                                                               \
    } while (0)

/* mlorc_mix32x8 on 16 lanes. */
INLINE __m512i mix32(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846ca68bu));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

/* mlorc_counter_bits8 for the 16 elements from index e (64-bit): lanes whose
 * low word wraps carry into the high word. */
INLINE __m512i counter_bits(long long e, unsigned key0, unsigned key1) {
    const __m512i lo = _mm512_set1_epi32((int)(unsigned)e), hi = _mm512_set1_epi32((int)(unsigned)((unsigned long long)e >> 32));
    const __m512i index = _mm512_add_epi32(lo, _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m512i high = _mm512_mask_add_epi32(hi, _mm512_cmplt_epu32_mask(index, lo), hi, _mm512_set1_epi32(1));
    const __m512i x = mix32(_mm512_xor_si512(index, _mm512_set1_epi32((int)key0)));
    return mix32(_mm512_xor_si512(_mm512_xor_si512(x, high), _mm512_set1_epi32((int)key1)));
}

/* v rounded to bf16 as BF16.rounded does (mlorc_bf16_round8): + 16 random
 * bits, or + 0x7fff and the lowest kept bit; NaN stays a quiet NaN. */
INLINE __m256i round_bf16(__m512 v, const wide_elements *el, long long e) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i increment =
        el->stochastic ? _mm512_and_si512(counter_bits(e + el->offset, el->key0, el->key1), _mm512_set1_epi32(0xffff))
                       : _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                                          _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1)));
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)),
                                                  _mm512_set1_epi32(0x7f800000));
    const __m512i kept = _mm512_mask_or_epi32(_mm512_add_epi32(bits, increment), nan, bits, _mm512_set1_epi32(0x00400000));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(kept, 16));
}

/* New weights e..e+15 (e..e+7 when `wide` is 0) stored as fp32 or rounded to bf16. */
INLINE void store_elements(void *base, ptrdiff_t e, __m512 v, int wide, int bf16, const wide_elements *el) {
    if (!bf16) {
        store_row((float *)base + e, v, wide);
        return;
    }
    const __m256i h = round_bf16(v, el, e);
    unsigned short *p = (unsigned short *)base + e;
    if (wide) _mm256_storeu_si256((__m256i *)p, h); else _mm_storeu_si128((__m128i *)p, _mm256_castsi256_si128(h));
}

/* Σ_a coef[a]·Vt[a] in the Swift rebuild's order: (t0·c0 + c1·t1) + (t2·c2 + c3·t3). */
INLINE __m512 rebuild(const float *coef, const __m512 *vt) {
    __m512 s01 = _mm512_fmadd_ps(_mm512_set1_ps(coef[1]), vt[1], _mm512_mul_ps(vt[0], _mm512_set1_ps(coef[0])));
    __m512 s23 = _mm512_fmadd_ps(_mm512_set1_ps(coef[3]), vt[3], _mm512_mul_ps(vt[2], _mm512_set1_ps(coef[2])));
    return _mm512_add_ps(s01, s23);
}

/* One sweep of a kernel: `rows` (4 or 1) rows from row i over the full
 * 8-column blocks [begin, end). */
typedef void (*WideSweep)(const void *args, ptrdiff_t i, int rows, ptrdiff_t begin, ptrdiff_t end);

/* Columns [col_begin, col_end) in blocks of `block` columns (their panels
 * stay in L2), each swept by groups of four rows and then the last rows one
 * by one: every output entry accumulates its rows in row order. */
static inline void wide_drive_columns(const void *args, ptrdiff_t rows, ptrdiff_t col_begin, ptrdiff_t col_end,
                                      ptrdiff_t block, WideSweep sweep) {
    for (ptrdiff_t start = col_begin; start < col_end; start += block) {
        const ptrdiff_t end = start + block < col_end ? start + block : col_end;
        ptrdiff_t i = 0;
        for (; i + 4 <= rows; i += 4) sweep(args, i, 4, start, end);
        for (; i < rows; i++) sweep(args, i, 1, start, end);
    }
}

#endif
