#include "wide_kernels.h"
#include "wide_vectors.h"

/* One row's constants of a sweep: U[i, a]·s[a] and q[i, b]. */
typedef struct {
    float coef[4], q[4];
} RowConstants;

typedef struct {
    __m512 beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, decay_rate;
} Scalars;

/* `rows` consecutive rows from row i over the 16 (or 8) columns at j. */
INLINE void chunk(const wide_lion_columns *a, const Scalars *s, const RowConstants *k, ptrdiff_t i, int rows,
                  ptrdiff_t j, int wide, int types) {
    const ptrdiff_t n = a->cols;
    float *restrict out = a->out + j * 4;
    __m512 vt[4], acc[4];
    for (int r = 0; r < 4; r++) {
        vt[r] = load_panel(a->vt + j * 4 + r * 8, wide);
        acc[r] = load_panel(out + r * 8, wide);
    }
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f), minus_one = _mm512_set1_ps(-1.0f);
#pragma clang loop unroll(full)
    for (int p = 0; p < rows; p++) {
        const ptrdiff_t e = (i + p) * n + j;
        const __m512 g = load_elements(a->grad, e, wide, types & GRAD_BF16);
        __m512 m = rebuild(k[p].coef, vt);
        /* LionRule.apply: c = β1·m + (1−β1)·g, m ← β2·m + (1−β2)·g, direction sign(c)
         * (mlorc_sign8: +1, −1, or +0 for ±0 and NaN). */
        const __m512 c = _mm512_fmadd_ps(s->beta1, m, _mm512_mul_ps(s->one_minus_beta1, g));
        m = _mm512_fmadd_ps(s->beta2, m, _mm512_mul_ps(s->one_minus_beta2, g));
        const __m512 direction = _mm512_mask_mov_ps(_mm512_maskz_mov_ps(_mm512_cmp_ps_mask(c, zero, _CMP_GT_OQ), one),
                                                    _mm512_cmp_ps_mask(c, zero, _CMP_LT_OQ), minus_one);
        /* MomentRule.updatedWeights: w − (stepSize·d + decayRate·w). */
        const __m512 w = load_elements(a->weights, e, wide, types & WEIGHTS_BF16);
        const __m512 step = _mm512_fmadd_ps(s->decay_rate, w, _mm512_mul_ps(s->step_size, direction));
        store_elements(a->weights, e, _mm512_sub_ps(w, step), wide, types & WEIGHTS_BF16, &a->elements);
#pragma clang loop unroll(full)
        for (int b = 0; b < 4; b++) acc[b] = _mm512_fmadd_ps(_mm512_set1_ps(k[p].q[b]), m, acc[b]);
    }
    for (int r = 0; r < 4; r++) store_panel(out + r * 8, acc[r], wide);
}

INLINE void sweep(const wide_lion_columns *a, const RowConstants *k, ptrdiff_t i, int rows, ptrdiff_t begin,
                  ptrdiff_t end, int types) {
    const Scalars s = {
        _mm512_set1_ps(a->beta1), _mm512_set1_ps(a->one_minus_beta1), _mm512_set1_ps(a->beta2),
        _mm512_set1_ps(a->one_minus_beta2), _mm512_set1_ps(a->step_size), _mm512_set1_ps(a->decay_rate),
    };
    ptrdiff_t j = begin;
    for (; j + 16 <= end; j += 16) chunk(a, &s, k, i, rows, j, 1, types);
    if (j < end) chunk(a, &s, k, i, rows, j, 0, types);
}

static WIDE void rows_sweep(const void *args, ptrdiff_t i, int rows, ptrdiff_t begin, ptrdiff_t end) {
    const wide_lion_columns *a = args;
    RowConstants k[4];
    for (int p = 0; p < rows; p++) {
        for (int r = 0; r < 4; r++) {
            k[p].coef[r] = a->u[(i + p) * 4 + r] * a->s[r];
            k[p].q[r] = a->q[i + p + r * a->rows];
        }
    }
    /* Each combination a compiled copy: rows, and the element types. */
#define SWEEP(T) (rows == 4 ? sweep(a, k, i, 4, begin, end, T) : sweep(a, k, i, 1, begin, end, T))
    WIDE_FOR_ELEMENT_TYPES(element_types(a->elements.weights_bf16, a->elements.grad_bf16), SWEEP);
#undef SWEEP
}

void wide_lion_columns_r4(const wide_lion_columns *a) {
    /* Column blocks whose Vt and out panels (8 rows x 4 B per column) fill
     * half of a 512 KiB L2, as in the Swift pass. */
    wide_drive_columns(a, a->rows, a->col_begin, a->col_end, 8192, rows_sweep);
}
