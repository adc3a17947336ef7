#ifndef WIDE_KERNELS_H
#define WIDE_KERNELS_H
/* Kernels compiled for AVX-512 (16 float lanes, 32 vector registers), called
 * only where the CPU and the OS support it (wide_kernels_available).
 * Each computes exactly what the AVX2 Swift kernel it stands in for computes:
 * the same operations on each element in the same order, so results are
 * bit-identical on either path (docs/architecture.md, "Wide kernels"). */
#include <stddef.h>

/* Internal to libmlorc: never exported (only mlorc_* is the ABI). */
#define WIDE_INTERNAL __attribute__((visibility("hidden")))

/* 1 if AVX-512 F/VL/DQ and the OS's zmm state are available and the
 * environment does not set MLORC_KERNELS=avx2; decided once. */
WIDE_INTERNAL int wide_kernels_available(void);

/* How a column kernel loads and stores the weights and the gradient, each
 * fp32 or bf16 (bf16 weights: the parameter itself, no master; fp32 weights
 * with a bf16 gradient: the master of a bf16 parameter). New bf16 weights are
 * rounded as WeightRounding does: stochastically, with the 16 low bits of
 * mlorc_counter_bits8 keyed by (key0, key1) at the element's index in the
 * tensor plus `offset`, or to nearest even. */
typedef struct {
    int weights_bf16, grad_bf16, stochastic;
    unsigned key0, key1;
    long long offset;
} wide_elements;

/* The column pass of a low-rank AdamW step with no option on, rank 4 and
 * sketch width 4, fp32 or bf16 weights and gradient (wide_elements), updating the weights: for the
 * full 8-column blocks of columns [col_begin, col_end) (both multiples of 8)
 * and every row i in order,
 *   m' = β1·rebuild(U_m, s_m, Vt_m) + (1−β1)·g,
 *   v' = β2·fix(rebuild(U_v, s_v, Vt_v)) + (1−β2)·g²   (negative entries → fix),
 *   w ← w − (stepSize·m'/(√v'·invSqrtBC2 + ε) + decayRate·w),
 *   out_m[b, j] += q_m[i, b]·m',  out_v[b, j] += q_v[i, b]·v'.
 * Vt and out are 4 x cols panels (blocks of 8 columns, Panel.swift); u is
 * rows x 4 row-major; q is rows x 4 column-major. */
typedef struct {
    ptrdiff_t rows, cols, col_begin, col_end;
    void *weights;
    const void *grad;
    wide_elements elements;
    const float *u_m, *s_m, *vt_m, *q_m;
    const float *u_v, *s_v, *vt_v, *q_v;
    float *out_m, *out_v;
    float fix;
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float eps, inverse_sqrt_bias_correction2, step_size, decay_rate;
} wide_adamw_columns;

WIDE_INTERNAL void wide_adamw_columns_r4(const wide_adamw_columns *a);

/* The same for Lion (one moment, no option on, fp32 or bf16): for every row i in order,
 *   c = β1·m + (1−β1)·g,  m' = β2·m + (1−β2)·g  (m = rebuild(U, s, Vt)),
 *   w ← w − (stepSize·sign(c) + decayRate·w),  out[b, j] += q[i, b]·m'. */
typedef struct {
    ptrdiff_t rows, cols, col_begin, col_end;
    void *weights;
    const void *grad;
    wide_elements elements;
    const float *u, *s, *vt, *q;
    float *out;
    float beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, decay_rate;
} wide_lion_columns;

WIDE_INTERNAL void wide_lion_columns_r4(const wide_lion_columns *a);

/* The sketch pass of a low-rank AdamW or Lion step with no option on, rank 4
 * and sketch width 4, fp32 or bf16 weights and gradient (each its own), cols
 * a multiple of 8: for
 * rows [row_begin, row_end), with Ω a 4 x cols panel,
 *   grad_sketch[i, b] = Σ_j g[i, j]·Ω[b, j],
 *   input_bits[2i], [2i + 1] = the largest |g[i, :]| and |w[i, :]| as bits;
 * and when u_v is not NULL (AdamW: the non-linear second moment), with
 * R = rebuild(U_v, s_v, Vt_v), R⁺ = R with its negative entries 0 and
 * x = β2·R⁺ + (1−β2)·g²,
 *   y[i, b] = Σ_j x[i, j]·Ω[b, j],  y_neg[i, b] = Σ_j [R < 0]·Ω[b, j],
 *   row_sum[i] = Σ_j |R| over R < 0,  row_count[i] = #{R < 0}.
 * grad_sketch, y and y_neg are rows x 4 column-major; every sum is rounded
 * as the Swift sketch pass rounds it (8 lanes, then the lanes in order). */
typedef struct {
    ptrdiff_t rows, cols, row_begin, row_end;
    const void *weights, *grad;
    int weights_bf16, grad_bf16; /* 0: fp32 elements; 1: bf16 */
    const float *u_v, *s_v, *vt_v;
    const float *omega;
    float beta2, one_minus_beta2;
    float *grad_sketch, *y, *y_neg;
    double *row_sum, *row_count;
    int *input_bits;
} wide_sketch_rows;

WIDE_INTERNAL void wide_sketch_rows_r4(const wide_sketch_rows *a);

#endif
