#include "wide_kernels.h"
#include "wide_vectors.h"

/* One row's constants of a sweep: U_k[i, a]·s_k[a] and q_k[i, b]. */
typedef struct {
    float coef_m[4], coef_v[4], q_m[4], q_v[4];
} RowConstants;

/* The step's scalars, copied out of the arguments so that the compiler keeps
 * them in registers (stores through the weight pointer could alias them). */
typedef struct {
    __m512 fix, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, inverse_sqrt_bc2, step_size, decay_rate;
} Scalars;

/* `rows` consecutive rows from row i over the 16 (or 8) columns at j. */
INLINE void chunk(const wide_adamw_columns *a, const Scalars *s, const RowConstants *k, ptrdiff_t i, int rows,
                  ptrdiff_t j, int wide, int types) {
    const ptrdiff_t n = a->cols;
    float *restrict out_m = a->out_m + j * 4, *restrict out_v = a->out_v + j * 4;
    __m512 vt_m[4], vt_v[4], acc_m[4], acc_v[4];
    for (int r = 0; r < 4; r++) {
        vt_m[r] = load_panel(a->vt_m + j * 4 + r * 8, wide);
        vt_v[r] = load_panel(a->vt_v + j * 4 + r * 8, wide);
        acc_m[r] = load_panel(out_m + r * 8, wide);
        acc_v[r] = load_panel(out_v + r * 8, wide);
    }
    const __m512 zero = _mm512_setzero_ps();
#pragma clang loop unroll(full)
    for (int p = 0; p < rows; p++) {
        const ptrdiff_t e = (i + p) * n + j;
        /* No software prefetch: four rows' streams in flight cover the latency
         * (a 1 KiB-ahead prefetch measured 12.1 -> 13.0 ms over a 4096² matrix). */
        const __m512 g = load_elements(a->grad, e, wide, types & GRAD_BF16);
        __m512 m = rebuild(k[p].coef_m, vt_m);
        __m512 v = rebuild(k[p].coef_v, vt_v);
        v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), v, s->fix);
        /* AdamWRule.apply without its option, as fused there. */
        m = _mm512_fmadd_ps(s->beta1, m, _mm512_mul_ps(s->one_minus_beta1, g));
        v = _mm512_fmadd_ps(_mm512_mul_ps(s->one_minus_beta2, g), g, _mm512_mul_ps(s->beta2, v));
        const __m512 denom = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(v), s->inverse_sqrt_bc2), s->eps);
        const __m512 direction = _mm512_div_ps(m, denom);
        /* MomentRule.updatedWeights: w − (stepSize·d + decayRate·w). */
        const __m512 w = load_elements(a->weights, e, wide, types & WEIGHTS_BF16);
        const __m512 step = _mm512_fmadd_ps(s->decay_rate, w, _mm512_mul_ps(s->step_size, direction));
        store_elements(a->weights, e, _mm512_sub_ps(w, step), wide, types & WEIGHTS_BF16, &a->elements);
#pragma clang loop unroll(full)
        for (int b = 0; b < 4; b++) {
            acc_m[b] = _mm512_fmadd_ps(_mm512_set1_ps(k[p].q_m[b]), m, acc_m[b]);
            acc_v[b] = _mm512_fmadd_ps(_mm512_set1_ps(k[p].q_v[b]), v, acc_v[b]);
        }
    }
    for (int r = 0; r < 4; r++) {
        store_panel(out_m + r * 8, acc_m[r], wide);
        store_panel(out_v + r * 8, acc_v[r], wide);
    }
}

/* Columns [begin, end) (multiples of 8) of `rows` rows from row i. */
INLINE void sweep(const wide_adamw_columns *a, const RowConstants *k, ptrdiff_t i, int rows,
                  ptrdiff_t begin, ptrdiff_t end, int types) {
    const Scalars s = {
        _mm512_set1_ps(a->fix), _mm512_set1_ps(a->beta1), _mm512_set1_ps(a->one_minus_beta1),
        _mm512_set1_ps(a->beta2), _mm512_set1_ps(a->one_minus_beta2), _mm512_set1_ps(a->eps),
        _mm512_set1_ps(a->inverse_sqrt_bias_correction2), _mm512_set1_ps(a->step_size), _mm512_set1_ps(a->decay_rate),
    };
    ptrdiff_t j = begin;
    for (; j + 16 <= end; j += 16) chunk(a, &s, k, i, rows, j, 1, types);
    if (j < end) chunk(a, &s, k, i, rows, j, 0, types);
}

static void row_constants(const wide_adamw_columns *a, ptrdiff_t i, RowConstants *k) {
    for (int r = 0; r < 4; r++) {
        k->coef_m[r] = a->u_m[i * 4 + r] * a->s_m[r];
        k->coef_v[r] = a->u_v[i * 4 + r] * a->s_v[r];
        k->q_m[r] = a->q_m[i + r * a->rows];
        k->q_v[r] = a->q_v[i + r * a->rows];
    }
}

static WIDE void rows_sweep(const void *args, ptrdiff_t i, int rows, ptrdiff_t begin, ptrdiff_t end) {
    const wide_adamw_columns *a = args;
    RowConstants k[4];
    for (int p = 0; p < rows; p++) row_constants(a, i + p, &k[p]);
    /* Each combination a compiled copy: rows, and the element types. */
#define SWEEP(T) (rows == 4 ? sweep(a, k, i, 4, begin, end, T) : sweep(a, k, i, 1, begin, end, T))
    WIDE_FOR_ELEMENT_TYPES(element_types(a->elements.weights_bf16, a->elements.grad_bf16), SWEEP);
#undef SWEEP
}

void wide_adamw_columns_r4(const wide_adamw_columns *a) {
    /* Column blocks whose Vt and out panels (2 moments x 8 rows x 4 B per
     * column) fill half of a 512 KiB L2, as in the Swift pass. */
    wide_drive_columns(a, a->rows, a->col_begin, a->col_end, 4096, rows_sweep);
}
