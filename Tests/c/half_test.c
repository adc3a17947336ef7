/*
 * half_test.c - bf16 and f16 parameters and gradients (MLORC_DTYPE_BF16,
 * MLORC_DTYPE_F16, MLORC_DTYPE_GRAD_F32), fp32 master weights and
 * stochastic rounding, against fp32 steps of the same values:
 *
 *   - round to nearest even: one step of a half tensor equals the fp32 step
 *     of its widened values, rounded to nearest even (bit for bit), for
 *     AdamW, Lion and ADOPT on dense and low-rank storage, half and fp32
 *     gradients;
 *   - master weights: over 8 steps the fp32 master equals fp32 AdamW given
 *     the same (widened) gradients bit for bit, and the parameter is its
 *     rounding each step;
 *   - stochastic rounding: one of the two neighbours of the fp32 result,
 *     the same for 1 and 2 threads, on resume and on a repeat; unbiased
 *     (the mean of many roundings of one value approaches it);
 *   - refusals: an f16 update beyond 65504, a bf16 infinite gradient, CAME
 *     with a bf16 tensor; nothing changes.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlorc.h"

static int failures = 0, checks = 0;
#define EXPECT(cond, ...)                                         \
    do {                                                          \
        checks++;                                                 \
        if (!(cond)) {                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);  \
            fprintf(stderr, __VA_ARGS__);                         \
            fprintf(stderr, "\n");                                \
            failures++;                                           \
        }                                                         \
    } while (0)

/* Reference conversions, scalar. */
static float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
static uint16_t f32_to_bf16_rne(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}
/* The compiler's binary16 (gcc and clang on x86-64): conversions round to nearest even. */
__extension__ typedef _Float16 binary16;
static float f16_to_f32(uint16_t h) {
    binary16 x;
    memcpy(&x, &h, 2);
    return (float)x;
}
static uint16_t f32_to_f16(float f) {
    binary16 x = (binary16)f;
    uint16_t h;
    memcpy(&h, &x, 2);
    return h;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static float uniform(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

typedef struct {
    mlorc_optimizer *opt;
    unsigned char *state;
    size_t bytes;
} tensor_state;

static int make(tensor_state *t, int rule, int storage, int dtype, int64_t rows, int64_t cols, int threads,
                int master, int stochastic, const void *param) {
    memset(t, 0, sizeof *t);
    if (mlorc_create(&t->opt, rule) != MLORC_OK) return 0;
    mlorc_set_param(t->opt, MLORC_PARAM_THREADS, threads);
    if (rule <= MLORC_RULE_ADOPT) {
        if (mlorc_set_param(t->opt, MLORC_PARAM_MASTER_WEIGHTS, master) != MLORC_OK) return 0;
        if (mlorc_set_param(t->opt, MLORC_PARAM_STOCHASTIC_ROUNDING, stochastic) != MLORC_OK) return 0;
    }
    mlorc_tensor_layout layout = {rows, cols, dtype, storage};
    if (mlorc_state_size(t->opt, &layout, &t->bytes) != MLORC_OK) return 0;
    t->state = malloc(t->bytes);
    return mlorc_state_init_with_param(t->opt, &layout, 3, param, t->state, t->bytes) == MLORC_OK;
}

static void drop(tensor_state *t) {
    mlorc_free(t->opt);
    free(t->state);
}

static int step(tensor_state *t, void *param, const void *grad, int dtype, int64_t rows, int64_t cols, double lr) {
    mlorc_tensor x = {param, grad, t->state, t->bytes, rows, cols, dtype, 0};
    return mlorc_step(t->opt, &x, 1, lr);
}

enum { R = 40, C = 36, N = R * C };

/* One half step == the fp32 step of the widened values, rounded to nearest. */
static void nearest_matches_fp32(int rule, int storage, int half, int grad_f32) {
    uint16_t w16[N], g16[N];
    float w32[N], g32[N], gwide[N];
    for (int i = 0; i < N; i++) {
        float w = 0.5f * uniform(), g = uniform();
        w16[i] = half == MLORC_DTYPE_BF16 ? f32_to_bf16_rne(w) : f32_to_f16(w);
        g16[i] = half == MLORC_DTYPE_BF16 ? f32_to_bf16_rne(g) : f32_to_f16(g);
        w32[i] = half == MLORC_DTYPE_BF16 ? bf16_to_f32(w16[i]) : f16_to_f32(w16[i]);
        gwide[i] = half == MLORC_DTYPE_BF16 ? bf16_to_f32(g16[i]) : f16_to_f32(g16[i]);
        g32[i] = gwide[i];
    }
    tensor_state h, f;
    int dtype = half | (grad_f32 ? MLORC_DTYPE_GRAD_F32 : 0);
    if (!make(&h, rule, storage, dtype, R, C, 1, 0, 0, NULL) ||
        !make(&f, rule, storage, MLORC_DTYPE_F32, R, C, 1, 0, 0, NULL)) {
        EXPECT(0, "set-up rule %d storage %d dtype %d: %s", rule, storage, dtype, mlorc_last_error(h.opt));
        drop(&h), drop(&f);
        return;
    }
    for (int s = 0; s < 3; s++) {
        int st1 = step(&h, w16, grad_f32 ? (const void *)g32 : (const void *)g16, dtype, R, C, 1e-2);
        int st2 = step(&f, w32, gwide, MLORC_DTYPE_F32, R, C, 1e-2);
        EXPECT(st1 == MLORC_OK && st2 == MLORC_OK, "steps: %d %d (%s)", st1, st2, mlorc_last_error(h.opt));
        int same = 1;
        for (int i = 0; i < N; i++) {
            uint16_t want = half == MLORC_DTYPE_BF16 ? f32_to_bf16_rne(w32[i]) : f32_to_f16(w32[i]);
            same &= w16[i] == want;
            /* the fp32 run continues from the rounded weights, as the half run does */
            w32[i] = half == MLORC_DTYPE_BF16 ? bf16_to_f32(w16[i]) : f16_to_f32(w16[i]);
        }
        EXPECT(same, "rule %d storage %d dtype %#x step %d: half weights are not the nearest rounding of the fp32 step",
               rule, storage, dtype, s + 1);
    }
    drop(&h), drop(&f);
}

/* Master weights follow fp32 AdamW bit for bit; the parameter is their rounding. */
static void master_follows_fp32(int half, int storage) {
    uint16_t w16[N], g16[N];
    float w32[N], gwide[N];
    for (int i = 0; i < N; i++) {
        w16[i] = half == MLORC_DTYPE_BF16 ? f32_to_bf16_rne(0.5f * uniform()) : f32_to_f16(0.5f * uniform());
        w32[i] = half == MLORC_DTYPE_BF16 ? bf16_to_f32(w16[i]) : f16_to_f32(w16[i]);
    }
    tensor_state h, f;
    if (!make(&h, MLORC_RULE_ADAMW, storage, half, R, C, 1, 1, 0, w16) ||
        !make(&f, MLORC_RULE_ADAMW, storage, MLORC_DTYPE_F32, R, C, 1, 0, 0, NULL)) {
        EXPECT(0, "master set-up: %s", mlorc_last_error(h.opt));
        drop(&h), drop(&f);
        return;
    }
    mlorc_state_info info;
    EXPECT(mlorc_state_inspect(h.state, h.bytes, &info) == MLORC_OK && info.dtype == (half | MLORC_STATE_MASTER_WEIGHTS),
           "master state dtype %#x", info.dtype);
    EXPECT(h.bytes == f.bytes + 4 * N, "master state holds 4 bytes per element more (%zu vs %zu)", h.bytes, f.bytes);
    const float *master = (const float *)(h.state + info.state_bytes - 4 * N);
    for (int s = 0; s < 8; s++) {
        for (int i = 0; i < N; i++) {
            g16[i] = half == MLORC_DTYPE_BF16 ? f32_to_bf16_rne(uniform()) : f32_to_f16(uniform());
            gwide[i] = half == MLORC_DTYPE_BF16 ? bf16_to_f32(g16[i]) : f16_to_f32(g16[i]);
        }
        int st1 = step(&h, w16, g16, half, R, C, 1e-3), st2 = step(&f, w32, gwide, MLORC_DTYPE_F32, R, C, 1e-3);
        EXPECT(st1 == MLORC_OK && st2 == MLORC_OK, "master steps: %d %d (%s)", st1, st2, mlorc_last_error(h.opt));
        EXPECT(memcmp(master, w32, sizeof w32) == 0, "half %d storage %d step %d: master differs from fp32 AdamW", half,
               storage, s + 1);
        int rounded = 1;
        for (int i = 0; i < N; i++)
            rounded &= w16[i] == (half == MLORC_DTYPE_BF16 ? f32_to_bf16_rne(master[i]) : f32_to_f16(master[i]));
        EXPECT(rounded, "half %d storage %d step %d: parameter is not the rounding of the master", half, storage, s + 1);
    }
    /* mlorc_state_init cannot fill master weights. */
    mlorc_tensor_layout layout = {R, C, half, storage};
    EXPECT(mlorc_state_init(h.opt, &layout, 3, h.state, h.bytes) == MLORC_ERROR_NULL_POINTER,
           "mlorc_state_init with master weights must be refused");
    drop(&h), drop(&f);
}

/* Stochastic rounding: a neighbour of the fp32 result; reproducible; unbiased. */
static void stochastic_rounding(int storage) {
    enum { RR = 300, CC = 260, NN = RR * CC }; /* >= 2 x 32768 elements: 2 threads split it */
    static uint16_t w0[NN], wa[NN], wb[NN], g16[NN];
    static float w32[NN], gwide[NN];
    for (int i = 0; i < NN; i++) {
        w0[i] = f32_to_bf16_rne(0.5f * uniform());
        g16[i] = f32_to_bf16_rne(uniform());
        w32[i] = bf16_to_f32(w0[i]);
        gwide[i] = bf16_to_f32(g16[i]);
    }
    tensor_state a, b, f;
    memcpy(wa, w0, sizeof wa), memcpy(wb, w0, sizeof wb);
    if (!make(&a, MLORC_RULE_ADAMW, storage, MLORC_DTYPE_BF16, RR, CC, 1, 0, 1, NULL) ||
        !make(&b, MLORC_RULE_ADAMW, storage, MLORC_DTYPE_BF16, RR, CC, 2, 0, 1, NULL) ||
        !make(&f, MLORC_RULE_ADAMW, storage, MLORC_DTYPE_F32, RR, CC, 1, 0, 0, NULL)) {
        EXPECT(0, "SR set-up");
        return;
    }
    unsigned char *saved = malloc(a.bytes);
    memcpy(saved, a.state, a.bytes);
    EXPECT(step(&a, wa, g16, MLORC_DTYPE_BF16, RR, CC, 1e-3) == MLORC_OK, "SR step 1 thread");
    EXPECT(step(&b, wb, g16, MLORC_DTYPE_BF16, RR, CC, 1e-3) == MLORC_OK, "SR step 2 threads");
    EXPECT(step(&f, w32, gwide, MLORC_DTYPE_F32, RR, CC, 1e-3) == MLORC_OK, "fp32 step");
    EXPECT(memcmp(wa, wb, sizeof wa) == 0, "storage %d: stochastic rounding differs between 1 and 2 threads", storage);
    int neighbours = 1, up = 0, down = 0;
    for (int i = 0; i < NN; i++) {
        uint32_t bits;
        memcpy(&bits, &w32[i], 4);
        uint16_t lo = (uint16_t)(bits >> 16), hi = (uint16_t)(lo + ((bits & 0xffff) != 0));
        neighbours &= wa[i] == lo || wa[i] == hi;
        up += wa[i] == hi && hi != lo;
        down += wa[i] == lo && hi != lo;
    }
    EXPECT(neighbours, "storage %d: a stochastic rounding is not one of the two neighbours", storage);
    EXPECT(up > NN / 10 && down > NN / 10, "storage %d: both neighbours occur (%d up, %d down)", storage, up, down);
    /* Resume: the saved state and weights step to the same bits. */
    uint16_t *again = malloc(sizeof w0);
    memcpy(again, w0, sizeof w0);
    memcpy(a.state, saved, a.bytes);
    EXPECT(step(&a, again, g16, MLORC_DTYPE_BF16, RR, CC, 1e-3) == MLORC_OK, "SR resume step");
    EXPECT(memcmp(again, wb, sizeof w0) == 0, "storage %d: resumed stochastic rounding differs", storage);
    free(again), free(saved);
    drop(&a), drop(&b), drop(&f);
}

/* Unbiased: a value 1/4 of the way between two bf16 neighbours, stepped by
 * lr = 0 (the weights only round) many times over fresh elements... instead
 * round a constant through weight decay: w' = w(1 - lr*lambda) is exact to
 * fp32, and the mean of its SR roundings over n elements approaches it with
 * standard deviation ulp * sqrt(p(1-p)/n). */
static void stochastic_rounding_is_unbiased(void) {
    enum { NN = 65536 };
    static uint16_t w[NN], g[NN];
    for (int i = 0; i < NN; i++) w[i] = f32_to_bf16_rne(1.0f), g[i] = 0;
    tensor_state t;
    if (!make(&t, MLORC_RULE_LION, MLORC_STORAGE_DENSE, MLORC_DTYPE_BF16, 1, NN, 1, 0, 1, NULL)) {
        EXPECT(0, "unbiased set-up");
        return;
    }
    /* Lion with g = 0: direction sign(0) = 0, so w' = w - lr*lambda*w exactly in fp32. */
    mlorc_set_param(t.opt, MLORC_PARAM_WEIGHT_DECAY, 1.0);
    double lr = 1e-3; /* w' = 0.999: between the bf16 neighbours 0.99609375 and 1.0 */
    EXPECT(step(&t, w, g, MLORC_DTYPE_BF16, 1, NN, lr) == MLORC_OK, "unbiased step: %s", mlorc_last_error(t.opt));
    double mean = 0;
    for (int i = 0; i < NN; i++) mean += bf16_to_f32(w[i]);
    mean /= NN;
    float exact = 1.0f - (float)(lr * 1.0) * 1.0f;
    double ulp = 1.0 - 0.99609375, p = (exact - 0.99609375) / ulp;
    double sigma = ulp * sqrt(p * (1 - p) / NN);
    EXPECT(fabs(mean - exact) < 6 * sigma, "SR mean %.9f, exact %.9f, 6 sigma %.2e", mean, (double)exact, 6 * sigma);
    /* Round to nearest would give 1.0 everywhere: the bias SR removes. */
    EXPECT(fabs(1.0 - exact) > 100 * sigma, "the test separates SR from nearest rounding");
    drop(&t);
}

static void refusals(void) {
    /* f16: an update beyond 65504. */
    uint16_t w[N], g[N], w0[N];
    for (int i = 0; i < N; i++) w[i] = f32_to_f16(0.5f * uniform()), g[i] = f32_to_f16(uniform());
    w[11] = f32_to_f16(65000.0f);
    tensor_state t;
    if (make(&t, MLORC_RULE_LION, MLORC_STORAGE_DENSE, MLORC_DTYPE_F16, R, C, 1, 0, 0, NULL)) {
        unsigned char *s0 = malloc(t.bytes);
        memcpy(s0, t.state, t.bytes), memcpy(w0, w, sizeof w);
        g[11] = f32_to_f16(-1.0f); /* Lion moves w[11] up by lr */
        int st = step(&t, w, g, MLORC_DTYPE_F16, R, C, 1000.0);
        EXPECT(st == MLORC_ERROR_NON_FINITE, "f16 overflow: status %d", st);
        EXPECT(memcmp(w, w0, sizeof w) == 0 && memcmp(s0, t.state, t.bytes) == 0, "f16 overflow changed something");
        EXPECT(step(&t, w, g, MLORC_DTYPE_F16, R, C, 1e-3) == MLORC_OK, "f16 ordinary step: %s", mlorc_last_error(t.opt));
        /* bf16/f16 infinite gradient */
        memcpy(s0, t.state, t.bytes), memcpy(w0, w, sizeof w);
        g[5] = 0x7c00; /* f16 +inf */
        st = step(&t, w, g, MLORC_DTYPE_F16, R, C, 1e-3);
        EXPECT(st == MLORC_ERROR_NON_FINITE, "f16 infinite gradient: status %d", st);
        EXPECT(memcmp(w, w0, sizeof w) == 0 && memcmp(s0, t.state, t.bytes) == 0, "refused step changed something");
        free(s0);
    } else {
        EXPECT(0, "f16 set-up: %s", mlorc_last_error(t.opt));
    }
    drop(&t);
    /* Rules without half precision, and a state of another dtype. */
    mlorc_optimizer *opt = NULL;
    mlorc_create(&opt, MLORC_RULE_CAME);
    mlorc_tensor_layout layout = {R, C, MLORC_DTYPE_BF16, MLORC_STORAGE_DENSE};
    size_t bytes = 0;
    EXPECT(mlorc_state_size(opt, &layout, &bytes) == MLORC_ERROR_UNSUPPORTED_DTYPE, "CAME bf16 state size");
    EXPECT(strstr(mlorc_last_error(opt), "bf16") != NULL, "message names the dtype: %s", mlorc_last_error(opt));
    mlorc_free(opt);
    tensor_state f32;
    if (make(&f32, MLORC_RULE_ADAMW, MLORC_STORAGE_DENSE, MLORC_DTYPE_F32, R, C, 1, 0, 0, NULL)) {
        int st = step(&f32, w, g, MLORC_DTYPE_BF16, R, C, 1e-3);
        EXPECT(st == MLORC_ERROR_STATE_MISMATCH, "bf16 tensor with an f32 state: status %d", st);
        st = step(&f32, w, g, MLORC_DTYPE_F32 | MLORC_DTYPE_GRAD_F32, R, C, 1e-3);
        EXPECT(st == MLORC_ERROR_UNSUPPORTED_DTYPE, "GRAD_F32 on an f32 parameter: status %d", st);
    }
    drop(&f32);
}

int main(void) {
    int rules[] = {MLORC_RULE_ADAMW, MLORC_RULE_LION, MLORC_RULE_ADOPT};
    for (int r = 0; r < 3; r++)
        for (int storage = MLORC_STORAGE_DENSE; storage <= MLORC_STORAGE_LOWRANK; storage++)
            for (int half = MLORC_DTYPE_BF16; half <= MLORC_DTYPE_F16; half++)
                for (int grad_f32 = 0; grad_f32 <= 1; grad_f32++) nearest_matches_fp32(rules[r], storage, half, grad_f32);
    for (int half = MLORC_DTYPE_BF16; half <= MLORC_DTYPE_F16; half++)
        for (int storage = MLORC_STORAGE_DENSE; storage <= MLORC_STORAGE_LOWRANK; storage++)
            master_follows_fp32(half, storage);
    for (int storage = MLORC_STORAGE_DENSE; storage <= MLORC_STORAGE_LOWRANK; storage++) stochastic_rounding(storage);
    stochastic_rounding_is_unbiased();
    refusals();
    printf("half_test: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
