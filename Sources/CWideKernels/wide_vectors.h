#ifndef WIDE_VECTORS_H
#define WIDE_VECTORS_H
/* The 16-lane loads, stores and rebuild the AVX-512 column kernels share
 * (internal to Sources/CWideKernels). */
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
