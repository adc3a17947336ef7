/*
 * state_dtype_test.c - bf16 optimizer state (MLORC_PARAM_STATE_DTYPE):
 *
 *   - sizes: MLORC_STATE_HEADER_BYTES + 4 ceil(F / 2) (+ 4mn master
 *     weights) where the fp32 state has F floats of moments, for AdamW,
 *     Lion and ADOPT, dense and low-rank, fp32 / bf16 / f16 parameters;
 *   - the flag MLORC_STATE_BF16_MOMENTS in mlorc_state_info.dtype; the state,
 *     not the handle, decides (a handle with the key at 0 steps a bf16 state
 *     exactly like one with it at 1); a state of bf16 parameters is refused
 *     by an fp32 tensor;
 *   - the first step from zero moments: the weights equal the fp32 state's
 *     bit for bit (arithmetic is fp32), and every stored moment or factor is
 *     the fp32 state's value rounded to nearest even, or with stochastic
 *     rounding one of its two bf16 neighbours;
 *   - 1 and 2 threads bit-identical; resume from copied bytes bit-exact;
 *   - training reaches the fp32 state's loss within a stated tolerance;
 *   - stochastic rounding lets a bf16 second moment follow a falling
 *     gradient scale (nearest rounding cannot: the reason for the default);
 *   - refusals (the key for CAME, MoFaSGD, GaLore, Prodigy, DAdapt-Lion;
 *     values out of range; a NaN gradient; a corrupted payload) change
 *     nothing.
 * Runs in well under a second.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlorc.h"
#include "support/half.h"

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

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static float uniform(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

static const char *rule_name(int rule) {
    return rule == MLORC_RULE_ADAMW ? "AdamW" : rule == MLORC_RULE_LION ? "Lion" : "ADOPT";
}
static int moments_of(int rule) { return rule == MLORC_RULE_LION ? 1 : 2; }

static mlorc_optimizer *handle(int rule, int state_dtype, int stochastic, int threads) {
    mlorc_optimizer *opt = NULL;
    if (mlorc_create(&opt, rule) != MLORC_OK) return NULL;
    if (mlorc_set_param(opt, MLORC_PARAM_STATE_DTYPE, state_dtype) != MLORC_OK ||
        mlorc_set_param(opt, MLORC_PARAM_STOCHASTIC_ROUNDING, stochastic) != MLORC_OK ||
        mlorc_set_param(opt, MLORC_PARAM_THREADS, threads) != MLORC_OK ||
        mlorc_set_param(opt, MLORC_PARAM_SEED, 11) != MLORC_OK) {
        fprintf(stderr, "set_param: %s\n", mlorc_last_error(opt));
        mlorc_free(opt);
        return NULL;
    }
    return opt;
}

static unsigned char *new_state_with(mlorc_optimizer *opt, int64_t rows, int64_t cols, int dtype, int storage,
                                     const void *param, size_t *bytes) {
    mlorc_tensor_layout layout = {rows, cols, dtype, storage};
    if (mlorc_state_size(opt, &layout, bytes) != MLORC_OK) return NULL;
    unsigned char *s = malloc(*bytes);
    if (mlorc_state_init_with_param(opt, &layout, 5, param, s, *bytes) != MLORC_OK) { free(s); return NULL; }
    return s;
}
static unsigned char *new_state(mlorc_optimizer *opt, int64_t rows, int64_t cols, int dtype, int storage,
                                size_t *bytes) {
    return new_state_with(opt, rows, cols, dtype, storage, NULL, bytes);
}

/* Every (rule, storage, parameter dtype, master): F from the fp32 state, the bf16 state's size from it. */
static void test_sizes(void) {
    const int rules[] = {MLORC_RULE_ADAMW, MLORC_RULE_LION, MLORC_RULE_ADOPT};
    const int64_t shapes[][2] = {{3, 5}, {40, 17}, {1, 9}};
    for (int r = 0; r < 3; r++)
        for (int storage = MLORC_STORAGE_DENSE; storage <= MLORC_STORAGE_LOWRANK; storage++)
            for (int s = 0; s < 3; s++)
                for (int dtype = 0; dtype < 3; dtype++)
                    for (int master = 0; master < (dtype ? 2 : 1); master++) {
                        int64_t m = shapes[s][0], n = shapes[s][1];
                        if (storage == MLORC_STORAGE_LOWRANK && (m < 2 || n < 2)) continue;
                        size_t size32 = 0, size16 = 0;
                        mlorc_tensor_layout layout = {m, n, dtype, storage};
                        mlorc_optimizer *a = handle(rules[r], 0, 1, 1), *b = handle(rules[r], 1, 1, 1);
                        mlorc_set_param(a, MLORC_PARAM_RANK, 2), mlorc_set_param(b, MLORC_PARAM_RANK, 2);
                        mlorc_set_param(a, MLORC_PARAM_MASTER_WEIGHTS, master);
                        mlorc_set_param(b, MLORC_PARAM_MASTER_WEIGHTS, master);
                        int st = mlorc_state_size(a, &layout, &size32) | mlorc_state_size(b, &layout, &size16);
                        size_t extra = master ? 4 * (size_t)(m * n) : 0;
                        size_t floats = (size32 - MLORC_STATE_HEADER_BYTES - extra) / 4;
                        size_t expect_floats = storage == MLORC_STORAGE_DENSE ? (size_t)(moments_of(rules[r]) * m * n)
                                                                              : (size_t)(moments_of(rules[r]) * 2 * (m + n + 1));
                        EXPECT(st == 0 && floats == expect_floats, "%s %s %lldx%lld: fp32 state has %zu floats, table says %zu",
                               rule_name(rules[r]), storage == 1 ? "dense" : "low-rank", (long long)m, (long long)n,
                               floats, expect_floats);
                        EXPECT(size16 == MLORC_STATE_HEADER_BYTES + 4 * ((floats + 1) / 2) + extra,
                               "%s %lldx%lld dtype %d master %d: bf16 state %zu bytes, expected %zu", rule_name(rules[r]),
                               (long long)m, (long long)n, dtype, master, size16,
                               MLORC_STATE_HEADER_BYTES + 4 * ((floats + 1) / 2) + extra);
                        mlorc_free(a), mlorc_free(b);
                    }
}

/* The key's refusals at set time; the flag in the header; the state decides. */
static void test_key_and_header(void) {
    const int refusing[] = {MLORC_RULE_GALORE_ADAMW, MLORC_RULE_CAME, MLORC_RULE_PRODIGY, MLORC_RULE_DADAPT_LION,
                            MLORC_RULE_MOFASGD};
    for (int i = 0; i < 5; i++) {
        mlorc_optimizer *opt = NULL;
        mlorc_create(&opt, refusing[i]);
        double lo, hi, value = -1;
        int st = mlorc_set_param(opt, MLORC_PARAM_STATE_DTYPE, 1);
        EXPECT(st == MLORC_ERROR_UNKNOWN_PARAM && strstr(mlorc_last_error(opt), "state_dtype"),
               "rule %d: state_dtype gives %d (%s)", refusing[i], st, mlorc_last_error(opt));
        EXPECT(mlorc_param_bounds(refusing[i], MLORC_PARAM_STATE_DTYPE, &lo, &hi) == MLORC_ERROR_UNKNOWN_PARAM &&
                   mlorc_get_param(opt, MLORC_PARAM_STATE_DTYPE, &value) == MLORC_ERROR_UNKNOWN_PARAM,
               "rule %d: the key has bounds or a value", refusing[i]);
        mlorc_free(opt);
    }
    mlorc_optimizer *opt = handle(MLORC_RULE_ADAMW, 1, 1, 1);
    const double bad[] = {2, -1, 0.5, NAN};
    for (int i = 0; i < 4; i++) {
        double value = -1;
        int st = mlorc_set_param(opt, MLORC_PARAM_STATE_DTYPE, bad[i]);
        mlorc_get_param(opt, MLORC_PARAM_STATE_DTYPE, &value);
        EXPECT(st == MLORC_ERROR_PARAM_OUT_OF_RANGE && value == 1, "state_dtype = %g: status %d, value now %g", bad[i], st,
               value);
    }
    double lo = -1, hi = -1;
    EXPECT(mlorc_param_bounds(MLORC_RULE_LION, MLORC_PARAM_STATE_DTYPE, &lo, &hi) == 0 && lo == 0 && hi == 1,
           "Lion's state_dtype bounds [%g, %g]", lo, hi);

    /* The flag, with and without master weights. */
    const struct { int dtype, master; } cases[] = {{MLORC_DTYPE_F32, 0}, {MLORC_DTYPE_BF16, 0}, {MLORC_DTYPE_BF16, 1}};
    for (int i = 0; i < 3; i++) {
        mlorc_set_param(opt, MLORC_PARAM_MASTER_WEIGHTS, cases[i].master);
        for (int key = 0; key < 2; key++) {
            mlorc_set_param(opt, MLORC_PARAM_STATE_DTYPE, key);
            mlorc_tensor_layout layout = {8, 8, cases[i].dtype, MLORC_STORAGE_DENSE};
            size_t bytes;
            mlorc_state_size(opt, &layout, &bytes);
            unsigned char *s = malloc(bytes);
            uint16_t param[64] = {0};
            mlorc_state_info info;
            int st = mlorc_state_init_with_param(opt, &layout, 1, param, s, bytes);
            st |= mlorc_state_inspect(s, bytes, &info);
            int expect = cases[i].dtype | (cases[i].master ? MLORC_STATE_MASTER_WEIGHTS : 0) |
                         (key ? MLORC_STATE_BF16_MOMENTS : 0);
            EXPECT(st == 0 && info.dtype == expect && info.state_bytes == bytes,
                   "state dtype field %#x, expected %#x (status %d)", info.dtype, expect, st);
            free(s);
        }
    }
    mlorc_free(opt);

    /* A state of bf16 parameters with bf16 moments, stepped as an fp32 tensor: refused, unchanged. */
    opt = handle(MLORC_RULE_ADAMW, 1, 1, 1);
    size_t bytes;
    unsigned char *s = new_state(opt, 4, 8, MLORC_DTYPE_BF16, MLORC_STORAGE_DENSE, &bytes);
    unsigned char *copy = malloc(bytes);
    memcpy(copy, s, bytes);
    float w[32] = {0}, g[32];
    for (int e = 0; e < 32; e++) g[e] = uniform();
    mlorc_tensor t = {w, g, s, bytes, 4, 8, MLORC_DTYPE_F32, 0};
    int st = mlorc_step(opt, &t, 1, 1e-3);
    EXPECT(st == MLORC_ERROR_STATE_MISMATCH && memcmp(s, copy, bytes) == 0, "bf16-parameter state stepped as fp32: %d", st);
    free(s), free(copy), mlorc_free(opt);
}

/* Moment k's value e of a state, widened (fp32 or bf16 payload). */
static float stored(const unsigned char *state, int bf16, size_t per_moment, int k, size_t e) {
    const unsigned char *payload = state + MLORC_STATE_HEADER_BYTES;
    if (bf16) {
        uint16_t h;
        memcpy(&h, payload + 2 * (k * per_moment + e), 2);
        return bf16_to_f32(h);
    }
    float f;
    memcpy(&f, payload + 4 * (k * per_moment + e), 4);
    return f;
}

/* One step from zero moments with an fp32 and a bf16 state: equal weights, rounded moments. */
static void test_first_step(void) {
    const int rules[] = {MLORC_RULE_ADAMW, MLORC_RULE_LION, MLORC_RULE_ADOPT};
    enum { R = 37, C = 29, RANK = 3 };
    for (int r = 0; r < 3; r++)
        for (int storage = MLORC_STORAGE_DENSE; storage <= MLORC_STORAGE_LOWRANK; storage++)
            for (int stochastic = 0; stochastic < 2; stochastic++) {
                /* (ADOPT's first step only sets v = g^2: its weights stay; its moments are checked.) */
                int steps = 1;
                mlorc_optimizer *a = handle(rules[r], 0, stochastic, 1), *b = handle(rules[r], 1, stochastic, 1);
                mlorc_set_param(a, MLORC_PARAM_RANK, RANK), mlorc_set_param(b, MLORC_PARAM_RANK, RANK);
                size_t bytes32, bytes16;
                unsigned char *s32 = new_state(a, R, C, MLORC_DTYPE_F32, storage, &bytes32);
                unsigned char *s16 = new_state(b, R, C, MLORC_DTYPE_F32, storage, &bytes16);
                static float w32[R * C], w16[R * C], g[R * C];
                for (int e = 0; e < R * C; e++) w32[e] = w16[e] = uniform();
                int st = 0;
                for (int step = 0; step < steps; step++) {
                    for (int e = 0; e < R * C; e++) g[e] = uniform() * (1 + e % 3);
                    mlorc_tensor ta = {w32, g, s32, bytes32, R, C, MLORC_DTYPE_F32, 0};
                    mlorc_tensor tb = {w16, g, s16, bytes16, R, C, MLORC_DTYPE_F32, 0};
                    st |= mlorc_step(a, &ta, 1, 1e-2) | mlorc_step(b, &tb, 1, 1e-2);
                }
                EXPECT(st == 0, "first step: %s / %s", mlorc_last_error(a), mlorc_last_error(b));
                EXPECT(memcmp(w32, w16, sizeof w32) == 0, "%s %s: weights differ between fp32 and bf16 states",
                       rule_name(rules[r]), storage == 1 ? "dense" : "low-rank");
                size_t per = storage == MLORC_STORAGE_DENSE ? (size_t)R * C : (size_t)RANK * (R + C + 1);
                size_t bad = 0;
                for (int k = 0; k < moments_of(rules[r]); k++)
                    for (size_t e = 0; e < per; e++) {
                        float x = stored(s32, 0, per, k, e), y = stored(s16, 1, per, k, e);
                        uint16_t nearest = f32_to_bf16_rne(x);
                        if (!stochastic) {
                            bad += y != bf16_to_f32(nearest);
                        } else {
                            /* One of the two neighbours: x truncated toward zero, or one ulp further. */
                            uint32_t bits;
                            memcpy(&bits, &x, 4);
                            float down = bf16_to_f32((uint16_t)(bits >> 16)), up = bf16_to_f32((uint16_t)((bits >> 16) + 1));
                            bad += !(y == down || (y == up && (bits & 0xffff) != 0));
                        }
                    }
                EXPECT(bad == 0, "%s %s %s: %zu stored values are not the fp32 state's rounding", rule_name(rules[r]),
                       storage == 1 ? "dense" : "low-rank", stochastic ? "stochastic" : "nearest", bad);
                free(s32), free(s16), mlorc_free(a), mlorc_free(b);
            }
}

/* steps steps of a rows x cols tensor from fixed inputs; weights and state out. */
static int run(mlorc_optimizer *opt, int dtype, int storage, int64_t rows, int64_t cols, int first, int steps,
               float *w, unsigned char *state, size_t bytes) {
    float *g = malloc(sizeof(float) * rows * cols);
    uint16_t *w16 = malloc(2 * rows * cols), *g16 = malloc(2 * rows * cols);
    int st = 0;
    (void)storage;
    for (int step = first; step < first + steps && st == 0; step++) {
        uint64_t saved = rng;
        rng = 0x1234567ULL + (uint64_t)step * 0x9e3779b97f4a7c15ULL;
        for (int64_t e = 0; e < rows * cols; e++) g[e] = uniform() * (1 + e % 7) * 0.1f;
        rng = saved;
        mlorc_tensor t = {w, g, state, bytes, rows, cols, MLORC_DTYPE_F32, 0};
        if (dtype == MLORC_DTYPE_BF16)
            for (int64_t e = 0; e < rows * cols; e++) w16[e] = f32_to_bf16_rne(w[e]), g16[e] = f32_to_bf16_rne(g[e]);
        if (dtype == MLORC_DTYPE_F16)
            for (int64_t e = 0; e < rows * cols; e++) w16[e] = f32_to_f16(w[e]), g16[e] = f32_to_f16(g[e]);
        if (dtype != MLORC_DTYPE_F32) t.param = w16, t.grad = g16, t.dtype = dtype;
        st = mlorc_step(opt, &t, 1, 3e-3);
        for (int64_t e = 0; dtype != MLORC_DTYPE_F32 && e < rows * cols; e++)
            w[e] = dtype == MLORC_DTYPE_BF16 ? bf16_to_f32(w16[e]) : f16_to_f32(w16[e]);
    }
    free(g), free(w16), free(g16);
    return st;
}

/* 1 vs 2 threads, resume from copied bytes, and the state deciding over the handle, for fp32,
 * bf16 and f16 parameters and bf16 with fp32 master weights (dtype 3 here). */
static void test_threads_and_resume(void) {
    enum { R = 70, C = 45 };
    const int rules[] = {MLORC_RULE_ADAMW, MLORC_RULE_LION, MLORC_RULE_ADOPT};
    for (int r = 0; r < 3; r++)
        for (int storage = MLORC_STORAGE_DENSE; storage <= MLORC_STORAGE_LOWRANK; storage++)
            for (int types = 0; types < 4; types++) {
                const char *what = storage == 1 ? "dense" : "low-rank";
                int dtype = types == 3 ? MLORC_DTYPE_BF16 : types, master = types == 3;
                mlorc_optimizer *one = handle(rules[r], 1, 1, 1), *two = handle(rules[r], 1, 1, 2);
                mlorc_optimizer *zero = handle(rules[r], 0, 1, 1); /* the key at 0: the state decides */
                mlorc_set_param(one, MLORC_PARAM_MASTER_WEIGHTS, master);
                static float w1[R * C], w2[R * C], w3[R * C], wmid[R * C];
                static uint16_t param16[R * C];
                /* Values every dtype holds exactly (bf16 values of magnitude in [1/256, 1]). */
                for (int e = 0; e < R * C; e++) {
                    float x = bf16_to_f32(f32_to_bf16_rne(uniform()));
                    w1[e] = fabsf(x) < 1.0f / 256 ? 0.5f : x;
                    param16[e] = dtype == MLORC_DTYPE_F16 ? f32_to_f16(w1[e]) : f32_to_bf16_rne(w1[e]);
                }
                size_t bytes;
                unsigned char *s1 = new_state_with(one, R, C, dtype, storage, param16, &bytes);
                if (!s1) {
                    EXPECT(0, "state init: %s", mlorc_last_error(one));
                    continue;
                }
                unsigned char *s2 = malloc(bytes), *s3 = malloc(bytes), *mid = malloc(bytes);
                memcpy(s2, s1, bytes), memcpy(s3, s1, bytes);
                memcpy(w2, w1, sizeof w1), memcpy(w3, w1, sizeof w1);
                int st = run(one, dtype, storage, R, C, 0, 3, w1, s1, bytes);
                memcpy(mid, s1, bytes), memcpy(wmid, w1, sizeof w1);
                st |= run(one, dtype, storage, R, C, 3, 3, w1, s1, bytes);
                st |= run(two, dtype, storage, R, C, 0, 6, w2, s2, bytes);
                st |= run(zero, dtype, storage, R, C, 0, 6, w3, s3, bytes);
                EXPECT(st == 0, "%s %s types %d: a step failed: %s / %s / %s", rule_name(rules[r]), what, types,
                       mlorc_last_error(one), mlorc_last_error(two), mlorc_last_error(zero));
                EXPECT(memcmp(w1, w2, sizeof w1) == 0 && memcmp(s1, s2, bytes) == 0,
                       "%s %s types %d: 1 and 2 threads differ", rule_name(rules[r]), what, types);
                EXPECT(memcmp(w1, w3, sizeof w1) == 0 && memcmp(s1, s3, bytes) == 0,
                       "%s %s types %d: a handle with state_dtype 0 steps the bf16 state differently", rule_name(rules[r]),
                       what, types);
                /* Resume: the bytes saved after step 3, continued by a fresh handle. */
                mlorc_optimizer *fresh = handle(rules[r], 1, 1, 1);
                st = run(fresh, dtype, storage, R, C, 3, 3, wmid, mid, bytes);
                EXPECT(st == 0 && memcmp(w1, wmid, sizeof w1) == 0 && memcmp(s1, mid, bytes) == 0,
                       "%s %s types %d: resume is not bit-exact", rule_name(rules[r]), what, types);
                mlorc_state_info info;
                int expect = dtype | MLORC_STATE_BF16_MOMENTS | (master ? MLORC_STATE_MASTER_WEIGHTS : 0);
                EXPECT(mlorc_state_inspect(s1, bytes, &info) == 0 && info.step == 6 && info.dtype == expect,
                       "%s %s: after 6 steps the state reads step %llu dtype %#x", rule_name(rules[r]), what,
                       (unsigned long long)info.step, info.dtype);
                free(s1), free(s2), free(s3), free(mid);
                mlorc_free(one), mlorc_free(two), mlorc_free(zero), mlorc_free(fresh);
            }
}

/* A NaN gradient and a corrupted payload: refused, nothing changes. */
static void test_refusals_change_nothing(void) {
    enum { R = 24, C = 40 };
    for (int storage = MLORC_STORAGE_DENSE; storage <= MLORC_STORAGE_LOWRANK; storage++) {
        mlorc_optimizer *opt = handle(MLORC_RULE_ADAMW, 1, 1, 2);
        size_t bytes;
        unsigned char *s = new_state(opt, R, C, MLORC_DTYPE_F32, storage, &bytes);
        static float w[R * C], before_w[R * C];
        for (int e = 0; e < R * C; e++) w[e] = uniform();
        int st = run(opt, MLORC_DTYPE_F32, storage, R, C, 0, 2, w, s, bytes);
        unsigned char *before = malloc(bytes);
        memcpy(before, s, bytes), memcpy(before_w, w, sizeof w);
        static float g[R * C];
        for (int e = 0; e < R * C; e++) g[e] = uniform();
        g[R * C - 3] = NAN;
        mlorc_tensor t = {w, g, s, bytes, R, C, MLORC_DTYPE_F32, 0};
        int refused = mlorc_step(opt, &t, 1, 1e-3);
        EXPECT(st == 0 && refused == MLORC_ERROR_NON_FINITE && memcmp(s, before, bytes) == 0 &&
                   memcmp(w, before_w, sizeof w) == 0,
               "%s: NaN gradient gives %d and changes something", storage == 1 ? "dense" : "low-rank", refused);
        if (storage == MLORC_STORAGE_LOWRANK) {
            s[bytes - 1] ^= 0x40; /* a factor's bits: the payload checksum no longer matches */
            memcpy(before, s, bytes);
            g[R * C - 3] = 0.5f;
            refused = mlorc_step(opt, &t, 1, 1e-3);
            EXPECT(refused == MLORC_ERROR_STATE_CORRUPTED && memcmp(s, before, bytes) == 0 &&
                       memcmp(w, before_w, sizeof w) == 0,
                   "corrupted bf16 factors give %d and change something", refused);
        }
        free(s), free(before), mlorc_free(opt);
    }
}

/* Least squares (W: 16 x 64, 512 samples in batches of 32), 300 steps, fp32 against bf16 states. */
enum { LM = 16, LN = 64, LS = 512, LB = 32 };
static float LX[LS * LN], LY[LS * LM];
static double ls_loss_grad(const float *w, int batch, float *grad) {
    if (grad) memset(grad, 0, sizeof(float) * LM * LN);
    double total = 0;
    for (int s = grad ? batch * LB : 0; s < (grad ? (batch + 1) * LB : LS); s++)
        for (int i = 0; i < LM; i++) {
            double pred = 0;
            for (int j = 0; j < LN; j++) pred += w[i * LN + j] * LX[s * LN + j];
            double err = pred - LY[s * LM + i];
            total += err * err;
            if (grad)
                for (int j = 0; j < LN; j++) grad[i * LN + j] += (float)(2 * err * LX[s * LN + j] / LB);
        }
    return total / (grad ? LB * LM : (double)LS * LM);
}
static double ls_train(int rule, int storage, int state_dtype, double lr) {
    mlorc_optimizer *opt = handle(rule, state_dtype, 1, 1);
    mlorc_set_param(opt, MLORC_PARAM_WEIGHT_DECAY, 0);
    size_t bytes;
    unsigned char *s = new_state(opt, LM, LN, MLORC_DTYPE_F32, storage, &bytes);
    static float w[LM * LN], g[LM * LN];
    uint64_t saved = rng;
    rng = 77;
    for (int e = 0; e < LM * LN; e++) w[e] = 0.02f * uniform();
    rng = saved;
    for (int t = 0; t < 300; t++) {
        ls_loss_grad(w, t % (LS / LB), g);
        mlorc_tensor x = {w, g, s, bytes, LM, LN, MLORC_DTYPE_F32, 0};
        if (mlorc_step(opt, &x, 1, lr) != MLORC_OK) { free(s); mlorc_free(opt); return NAN; }
    }
    free(s), mlorc_free(opt);
    return ls_loss_grad(w, 0, NULL);
}
static void test_training(void) {
    rng = 4242;
    float truth[LM * LN];
    for (int e = 0; e < LM * LN; e++) truth[e] = uniform() * 0.4f;
    for (int s = 0; s < LS; s++) {
        for (int j = 0; j < LN; j++) LX[s * LN + j] = uniform();
        for (int i = 0; i < LM; i++) {
            double y = 0;
            for (int j = 0; j < LN; j++) y += truth[i * LN + j] * LX[s * LN + j];
            LY[s * LM + i] = (float)y;
        }
    }
    const struct { int rule; double lr; } rules[] = {{MLORC_RULE_ADAMW, 1e-2}, {MLORC_RULE_LION, 2e-3}};
    for (int r = 0; r < 2; r++)
        for (int storage = MLORC_STORAGE_DENSE; storage <= MLORC_STORAGE_LOWRANK; storage++) {
            double initial = 0;
            {
                static float w0[LM * LN];
                uint64_t saved = rng;
                rng = 77;
                for (int e = 0; e < LM * LN; e++) w0[e] = 0.02f * uniform();
                rng = saved;
                initial = ls_loss_grad(w0, 0, NULL);
            }
            double full = ls_train(rules[r].rule, storage, 0, rules[r].lr);
            double half = ls_train(rules[r].rule, storage, 1, rules[r].lr);
            /* Both runs must train (loss below half the initial one), and the bf16 state's final
             * loss may differ from the fp32 state's by 1% of the loss reduction. Why that much: the
             * stored moments carry a relative error of at most 2^-8 per step (unbiased with stochastic
             * rounding), which perturbs the trajectory but not where it goes; measured here 0.0000%
             * (dense AdamW), 0.04% (low-rank AdamW), 0.0005% (dense Lion) and 0.03% (low-rank Lion) of
             * the reduction, and benchmarks/bf16_state.c shows the same on a larger problem. */
            double tolerance = 0.01 * (initial - full);
            EXPECT(full < 0.5 * initial && fabs(half - full) <= tolerance,
                   "%s %s: loss %.6f with an fp32 state, %.6f with bf16 (initial %.6f, tolerance %.6f)",
                   rule_name(rules[r].rule), storage == 1 ? "dense" : "low-rank", full, half, initial, tolerance);
        }
}

/* Dense AdamW (beta2 = 0.999), gradients whose scale falls 100x over 2000 steps: the median of
 * v_bf16 / v_fp32 over the tensor. */
static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}
static float tracking_ratio(int stochastic) {
    enum { TM = 8, TN = 64, TSTEPS = 2000 };
    mlorc_optimizer *opt[2] = {handle(MLORC_RULE_ADAMW, 0, stochastic, 1), handle(MLORC_RULE_ADAMW, 1, stochastic, 1)};
    unsigned char *state[2];
    size_t bytes[2];
    static float w[2][TM * TN], g[TM * TN], ratio[TM * TN];
    for (int k = 0; k < 2; k++) {
        state[k] = new_state(opt[k], TM, TN, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE, &bytes[k]);
        memset(w[k], 0, sizeof w[k]);
    }
    int st = 0;
    for (int t = 0; t < TSTEPS; t++) {
        float scale = (float)pow(0.01, (double)t / (TSTEPS - 1));
        for (int e = 0; e < TM * TN; e++) g[e] = scale * uniform();
        for (int k = 0; k < 2; k++) {
            mlorc_tensor x = {w[k], g, state[k], bytes[k], TM, TN, MLORC_DTYPE_F32, 0};
            st |= mlorc_step(opt[k], &x, 1, 1e-6);
        }
    }
    for (int e = 0; e < TM * TN; e++)
        ratio[e] = stored(state[1], 1, TM * TN, 1, (size_t)e) / stored(state[0], 0, TM * TN, 1, (size_t)e);
    qsort(ratio, TM * TN, sizeof ratio[0], cmp_float);
    for (int k = 0; k < 2; k++) free(state[k]), mlorc_free(opt[k]);
    return st ? NAN : ratio[TM * TN / 2];
}
static void test_second_moment_tracking(void) {
    /* Stochastic: v's rounding is unbiased, so it follows fp32's v; benchmarks/bf16_state.c measured a
     * median ratio of 0.994 after 3000 steps; 3% allows for the smaller tensor's sampling. Nearest: v's
     * decrement (1 - beta2)(v - g^2) < 2^-9 v is half an ulp, so v cannot fall (measured 8.6 there). */
    float stochastic = tracking_ratio(1), nearest = tracking_ratio(0);
    EXPECT(fabsf(stochastic - 1) <= 0.03f, "bf16 v with stochastic rounding: median ratio to fp32 %.4f", stochastic);
    EXPECT(nearest > 1.5f, "bf16 v rounded to nearest: median ratio to fp32 %.4f (expected stuck high)", nearest);
}

int main(void) {
    test_sizes();
    test_key_and_header();
    test_first_step();
    test_threads_and_resume();
    test_refusals_change_nothing();
    test_training();
    test_second_moment_tracking();
    printf("state_dtype_test: %d checks, %d failed\n", checks, failures);
    return failures != 0;
}
