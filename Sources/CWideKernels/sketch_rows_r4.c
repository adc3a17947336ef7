#include "wide_kernels.h"
#include "wide_vectors.h"

/* Two rows share each vector: lanes 0-7 hold columns j..j+7 of the pair's
 * first row and lanes 8-15 the same columns of its second. Every lane then
 * accumulates exactly the elements, in exactly the order, of the Swift pass's
 * 8-lane accumulators, so the per-row sums round the same; the panel blocks
 * of Ω and Vt are loaded once for both rows. */

typedef struct {
    __m512 grad[4], x[4], neg[4];
    __m512 neg_sum, neg_count;
    __m512i grad_bits, weight_bits;
} Sums;

/* Elements j..j+7 of rows p (lanes 0-7) and q (lanes 8-15) of an fp32 or,
 * with `bf16`, a bf16 matrix, widened. */
INLINE __m512 load_pair(const void *p, const void *q, ptrdiff_t j, int bf16) {
    if (!bf16)
        return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps((const float *)p + j)),
                                  _mm256_loadu_ps((const float *)q + j), 1);
    return widen_bf16(_mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)((const unsigned short *)p + j))),
        _mm_loadu_si128((const __m128i *)((const unsigned short *)q + j)), 1));
}

/* A hint 1 KiB ahead of element j of row p. */
INLINE void prefetch_ahead(const void *p, ptrdiff_t j, int bf16) {
    _mm_prefetch((const char *)p + j * (bf16 ? 2 : 4) + 1024, _MM_HINT_T0);
}

/* x (8 columns) in both halves. */
INLINE __m512 load_both(const float *p) {
    return _mm512_broadcast_f32x8(_mm256_loadu_ps(p));
}

/* max(acc, |x| as bits) per lane, as mlorc_max_magnitude_bits8. */
INLINE __m512i max_magnitude_bits(__m512i acc, __m512 x) {
    return _mm512_max_epi32(acc, _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
}

/* Swift's SIMD8<Float>.sum(): lanes added in order from -0. */
static inline float sum8(const float *lanes) {
    float s = -0.0f;
    for (int k = 0; k < 8; k++) s += lanes[k];
    return s;
}

static inline int max8(const int *lanes) {
    int s = lanes[0];
    for (int k = 1; k < 8; k++) s = lanes[k] > s ? lanes[k] : s;
    return s;
}

/* Rows i0 and i1 (equal for a lone last row) over all columns; `moment` and
 * `types` are compile-time constants: moment 1 rebuilds and sketches the
 * non-linear second moment, types are the element-type flags. */
INLINE void row_pair(const wide_sketch_rows *a, ptrdiff_t i0, ptrdiff_t i1, int moment, int types) {
    const ptrdiff_t n = a->cols, m = a->rows;
    const int grad_bf16 = types & GRAD_BF16, weights_bf16 = types & WEIGHTS_BF16;
    const size_t g_size = grad_bf16 ? 2 : 4, w_size = weights_bf16 ? 2 : 4;
    const char *g0 = (const char *)a->grad + i0 * n * g_size, *g1 = (const char *)a->grad + i1 * n * g_size;
    const char *w0 = (const char *)a->weights + i0 * n * w_size, *w1 = (const char *)a->weights + i1 * n * w_size;
    __m512 coef[4];
    if (moment) {
        for (int r = 0; r < 4; r++) {
            const float c0 = a->u_v[i0 * 4 + r] * a->s_v[r], c1 = a->u_v[i1 * 4 + r] * a->s_v[r];
            coef[r] = _mm512_insertf32x8(_mm512_set1_ps(c0), _mm256_set1_ps(c1), 1);
        }
    }
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
    const __m512 beta2 = _mm512_set1_ps(a->beta2), one_minus_beta2 = _mm512_set1_ps(a->one_minus_beta2);
    Sums s;
    for (int b = 0; b < 4; b++) s.grad[b] = s.x[b] = s.neg[b] = zero;
    s.neg_sum = s.neg_count = zero;
    s.grad_bits = s.weight_bits = _mm512_setzero_si512();
    for (ptrdiff_t j = 0; j < n; j += 8) {
        /* 1 KiB ahead on each of the four streams, as the Swift pass
         * (Elements/Prefetch.swift): measured 12.3 -> 9.8 ms for this kernel
         * alone over a 4096² matrix at one thread. */
        prefetch_ahead(g0, j, grad_bf16);
        prefetch_ahead(g1, j, grad_bf16);
        prefetch_ahead(w0, j, weights_bf16);
        prefetch_ahead(w1, j, weights_bf16);
        const __m512 g = load_pair(g0, g1, j, grad_bf16);
        s.grad_bits = max_magnitude_bits(s.grad_bits, g);
        s.weight_bits = max_magnitude_bits(s.weight_bits, load_pair(w0, w1, j, weights_bf16));
        __m512 x = zero, negative = zero;
        __mmask16 below = 0;
        if (moment) {
            const float *vt = a->vt_v + j * 4;
            /* rebuild's order: (t0·c0 + c1·t1) + (t2·c2 + c3·t3). */
            const __m512 s01 = _mm512_fmadd_ps(coef[1], load_both(vt + 8), _mm512_mul_ps(load_both(vt), coef[0]));
            const __m512 s23 = _mm512_fmadd_ps(coef[3], load_both(vt + 24), _mm512_mul_ps(load_both(vt + 16), coef[2]));
            const __m512 raw = _mm512_add_ps(s01, s23);
            below = _mm512_cmp_ps_mask(raw, zero, _CMP_LT_OQ);
            negative = _mm512_maskz_mov_ps(below, one);
            s.neg_sum = _mm512_fmadd_ps(raw, negative, s.neg_sum);
            s.neg_count = _mm512_add_ps(s.neg_count, negative);
            /* The previous moment clipped at 0, then AdamWRule.apply's second moment. */
            x = _mm512_mask_blend_ps(below, raw, zero);
            x = _mm512_fmadd_ps(_mm512_mul_ps(one_minus_beta2, g), g, _mm512_mul_ps(beta2, x));
        }
        const float *omega = a->omega + j * 4;
#pragma clang loop unroll(full)
        for (int b = 0; b < 4; b++) {
            const __m512 w = load_both(omega + b * 8);
            s.grad[b] = _mm512_fmadd_ps(g, w, s.grad[b]);
            if (moment) {
                s.x[b] = _mm512_fmadd_ps(x, w, s.x[b]);
                /* The Swift pass's FMA with the 0/1 indicator, as a masked add
                 * (the add pipes, not the FMA pipes): the same result, as Ω is
                 * finite and a sum that starts at +0 never becomes -0. */
                s.neg[b] = _mm512_mask_add_ps(s.neg[b], below, s.neg[b], w);
            }
        }
    }
    /* Each half's sums as the Swift pass finishes a row (both halves are the
     * same row's when i0 == i1: the second write repeats the first). */
    const ptrdiff_t rows_of[2] = {i0, i1};
    float lanes[16];
    int bits[16];
    for (int b = 0; b < 4; b++) {
        _mm512_storeu_ps(lanes, s.grad[b]);
        for (int h = 0; h < 2; h++) a->grad_sketch[rows_of[h] + b * m] = sum8(lanes + 8 * h);
        if (moment) {
            _mm512_storeu_ps(lanes, s.x[b]);
            for (int h = 0; h < 2; h++) a->y[rows_of[h] + b * m] = sum8(lanes + 8 * h);
            _mm512_storeu_ps(lanes, s.neg[b]);
            for (int h = 0; h < 2; h++) a->y_neg[rows_of[h] + b * m] = sum8(lanes + 8 * h);
        }
    }
    _mm512_storeu_si512(bits, s.grad_bits);
    for (int h = 0; h < 2; h++) a->input_bits[2 * rows_of[h]] = max8(bits + 8 * h);
    _mm512_storeu_si512(bits, s.weight_bits);
    for (int h = 0; h < 2; h++) a->input_bits[2 * rows_of[h] + 1] = max8(bits + 8 * h);
    if (moment) {
        _mm512_storeu_ps(lanes, s.neg_sum);
        for (int h = 0; h < 2; h++) a->row_sum[rows_of[h]] = -(double)sum8(lanes + 8 * h);
        _mm512_storeu_ps(lanes, s.neg_count);
        for (int h = 0; h < 2; h++) a->row_count[rows_of[h]] = (double)sum8(lanes + 8 * h);
    }
}

/* The rows with compile-time flags (each combination a compiled copy). */
INLINE void pairs(const wide_sketch_rows *a, int moment, int types) {
    ptrdiff_t i = a->row_begin;
    for (; i + 2 <= a->row_end; i += 2) row_pair(a, i, i + 1, moment, types);
    if (i < a->row_end) row_pair(a, i, i, moment, types);
}

static WIDE void pairs_of_types(const wide_sketch_rows *a, int moment) {
#define PAIRS(T) (moment ? pairs(a, 1, T) : pairs(a, 0, T))
    WIDE_FOR_ELEMENT_TYPES(element_types(a->weights_bf16, a->grad_bf16), PAIRS);
#undef PAIRS
}

void wide_sketch_rows_r4(const wide_sketch_rows *a) {
    pairs_of_types(a, a->u_v != NULL);
}
