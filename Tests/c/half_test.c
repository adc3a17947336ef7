/*
 * half_test.c - bf16 and f16 parameters and gradients (MLORC_DTYPE_BF16,
 * MLORC_DTYPE_F16, MLORC_DTYPE_GRAD_F32), fp32 master weights and
 * stochastic rounding, against fp32 steps of the same values, for every
 * rule on dense and low-rank storage (arithmetic is fp32 on widened
 * values, so most properties are exact):
 *
 *   - round to nearest even: one step of a half tensor equals the fp32 step
 *     of its widened values, rounded to nearest even (bit for bit), half
 *     and fp32 gradients;
 *   - master weights: over 8 steps the fp32 master equals the fp32 run
 *     given the same (widened) gradients bit for bit, and the parameter is
 *     its rounding each step;
 *   - stochastic rounding: one of the two neighbours of the fp32 result,
 *     the same for 1 and 2 threads, on resume and on a repeat; unbiased
 *     (the mean of many roundings of one value approaches it);
 *   - training: 150 steps of a least-squares problem in bf16 / f16 end
 *     close to the fp32 run (tolerance derived at train_close_to_fp32);
 *   - refusals: an f16 update beyond 65504, an infinite half gradient;
 *     nothing changes (weights, state, group state).
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

/* One tensor's optimizer, state and (D-adaptation rules) group state. */
typedef struct {
    mlorc_optimizer *opt;
    unsigned char *state;
    size_t bytes;
    int grouped;
    unsigned char group[MLORC_GROUP_STATE_BYTES];
} tensor_state;

static const int all_rules[] = {MLORC_RULE_ADAMW,   MLORC_RULE_LION,    MLORC_RULE_ADOPT,
                                MLORC_RULE_GALORE_ADAMW, MLORC_RULE_CAME, MLORC_RULE_PRODIGY,
                                MLORC_RULE_DADAPT_LION, MLORC_RULE_MOFASGD};
enum { RULES = sizeof all_rules / sizeof all_rules[0] };

static int adapts(int rule) { return rule == MLORC_RULE_PRODIGY || rule == MLORC_RULE_DADAPT_LION; }

/* A learning rate at which each rule moves weights of ~0.5 by several bf16 ulps per step. */
static double rule_lr(int rule) {
    switch (rule) {
    case MLORC_RULE_PRODIGY: case MLORC_RULE_DADAPT_LION: return 1.0; /* the step is d * lr */
    case MLORC_RULE_MOFASGD: return 5e-2;                             /* U V^T has entries ~1/sqrt(n) */
    case MLORC_RULE_GALORE_ADAMW: return 6e-2;                        /* it moves in a rank-4 subspace */
    default: return 1e-2;
    }
}

static int make(tensor_state *t, int rule, int storage, int dtype, int64_t rows, int64_t cols, int threads,
                int master, int stochastic, const void *param) {
    memset(t, 0, sizeof *t);
    if (mlorc_create(&t->opt, rule) != MLORC_OK) return 0;
    mlorc_set_param(t->opt, MLORC_PARAM_THREADS, threads);
    if (mlorc_set_param(t->opt, MLORC_PARAM_MASTER_WEIGHTS, master) != MLORC_OK) return 0;
    if (mlorc_set_param(t->opt, MLORC_PARAM_STOCHASTIC_ROUNDING, stochastic) != MLORC_OK) return 0;
    /* d starts at 1e-2 (not 1e-6): the first steps move the weights by more than a bf16 ulp. */
    if (adapts(rule) && mlorc_set_param(t->opt, MLORC_PARAM_D0, 1e-2) != MLORC_OK) return 0;
    /* GaLore: a fresh projection every 10 steps (the default, 200, is beyond the training test). */
    if (rule == MLORC_RULE_GALORE_ADAMW && mlorc_set_param(t->opt, MLORC_PARAM_GALORE_INTERVAL, 10) != MLORC_OK) return 0;
    if (adapts(rule)) {
        if (mlorc_group_state_init(t->opt, t->group, sizeof t->group) != MLORC_OK) return 0;
        t->grouped = 1;
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
    return t->grouped ? mlorc_step_group(t->opt, &x, 1, lr, t->group, sizeof t->group) : mlorc_step(t->opt, &x, 1, lr);
}

static float widen(int half, uint16_t h) { return half == MLORC_DTYPE_BF16 ? bf16_to_f32(h) : f16_to_f32(h); }
static uint16_t narrow(int half, float f) { return half == MLORC_DTYPE_BF16 ? f32_to_bf16_rne(f) : f32_to_f16(f); }

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
    int moved = 0;
    for (int s = 0; s < 3; s++) {
        uint16_t before[N];
        memcpy(before, w16, sizeof before);
        int st1 = step(&h, w16, grad_f32 ? (const void *)g32 : (const void *)g16, dtype, R, C, rule_lr(rule));
        int st2 = step(&f, w32, gwide, MLORC_DTYPE_F32, R, C, rule_lr(rule));
        EXPECT(st1 == MLORC_OK && st2 == MLORC_OK, "steps: %d %d (%s)", st1, st2, mlorc_last_error(h.opt));
        int same = 1;
        for (int i = 0; i < N; i++) {
            uint16_t want = half == MLORC_DTYPE_BF16 ? f32_to_bf16_rne(w32[i]) : f32_to_f16(w32[i]);
            same &= w16[i] == want;
            moved += w16[i] != before[i];
            /* the fp32 run continues from the rounded weights, as the half run does */
            w32[i] = half == MLORC_DTYPE_BF16 ? bf16_to_f32(w16[i]) : f16_to_f32(w16[i]);
        }
        EXPECT(same, "rule %d storage %d dtype %#x step %d: half weights are not the nearest rounding of the fp32 step",
               rule, storage, dtype, s + 1);
    }
    EXPECT(moved > N, "rule %d storage %d dtype %#x: the steps moved %d weights (the comparison needs moving weights)",
           rule, storage, dtype, moved);
    drop(&h), drop(&f);
}

/* Master weights follow the fp32 run bit for bit; the parameter is their rounding. */
static void master_follows_fp32(int rule, int half, int storage) {
    uint16_t w16[N], g16[N];
    float w32[N], gwide[N];
    for (int i = 0; i < N; i++) {
        w16[i] = half == MLORC_DTYPE_BF16 ? f32_to_bf16_rne(0.5f * uniform()) : f32_to_f16(0.5f * uniform());
        w32[i] = half == MLORC_DTYPE_BF16 ? bf16_to_f32(w16[i]) : f16_to_f32(w16[i]);
    }
    tensor_state h, f;
    if (!make(&h, rule, storage, half, R, C, 1, 1, 0, w16) ||
        !make(&f, rule, storage, MLORC_DTYPE_F32, R, C, 1, 0, 0, NULL)) {
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
        double lr = rule_lr(rule) / 10;
        int st1 = step(&h, w16, g16, half, R, C, lr), st2 = step(&f, w32, gwide, MLORC_DTYPE_F32, R, C, lr);
        EXPECT(st1 == MLORC_OK && st2 == MLORC_OK, "master steps: %d %d (%s)", st1, st2, mlorc_last_error(h.opt));
        EXPECT(memcmp(master, w32, sizeof w32) == 0, "rule %d half %d storage %d step %d: master differs from fp32",
               rule, half, storage, s + 1);
        if (h.grouped)
            EXPECT(memcmp(h.group, f.group, sizeof h.group) == 0, "rule %d half %d storage %d step %d: group state differs",
                   rule, half, storage, s + 1);
        int rounded = 1;
        for (int i = 0; i < N; i++)
            rounded &= w16[i] == (half == MLORC_DTYPE_BF16 ? f32_to_bf16_rne(master[i]) : f32_to_f16(master[i]));
        EXPECT(rounded, "rule %d half %d storage %d step %d: parameter is not the rounding of the master", rule, half,
               storage, s + 1);
    }
    /* mlorc_state_init cannot fill master weights. */
    mlorc_tensor_layout layout = {R, C, half, storage};
    EXPECT(mlorc_state_init(h.opt, &layout, 3, h.state, h.bytes) == MLORC_ERROR_NULL_POINTER,
           "mlorc_state_init with master weights must be refused");
    drop(&h), drop(&f);
}

/* Stochastic rounding: a neighbour of the fp32 result; reproducible; unbiased. */
static void stochastic_rounding(int rule, int storage) {
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
    if (!make(&a, rule, storage, MLORC_DTYPE_BF16, RR, CC, 1, 0, 1, NULL) ||
        !make(&b, rule, storage, MLORC_DTYPE_BF16, RR, CC, 2, 0, 1, NULL) ||
        !make(&f, rule, storage, MLORC_DTYPE_F32, RR, CC, 1, 0, 0, NULL)) {
        EXPECT(0, "SR set-up rule %d storage %d: %s", rule, storage, mlorc_last_error(a.opt));
        return;
    }
    double lr = rule_lr(rule);
    if (rule == MLORC_RULE_ADOPT) { /* ADOPT's first step only sets v (the weights do not move) */
        EXPECT(step(&a, wa, g16, MLORC_DTYPE_BF16, RR, CC, lr) == MLORC_OK && memcmp(wa, w0, sizeof wa) == 0 &&
                   step(&b, wb, g16, MLORC_DTYPE_BF16, RR, CC, lr) == MLORC_OK &&
                   step(&f, w32, gwide, MLORC_DTYPE_F32, RR, CC, lr) == MLORC_OK,
               "ADOPT's first step");
    }
    unsigned char *saved = malloc(a.bytes), group[MLORC_GROUP_STATE_BYTES];
    memcpy(saved, a.state, a.bytes), memcpy(group, a.group, sizeof group);
    EXPECT(step(&a, wa, g16, MLORC_DTYPE_BF16, RR, CC, lr) == MLORC_OK, "SR step 1 thread: %s", mlorc_last_error(a.opt));
    EXPECT(step(&b, wb, g16, MLORC_DTYPE_BF16, RR, CC, lr) == MLORC_OK, "SR step 2 threads");
    EXPECT(step(&f, w32, gwide, MLORC_DTYPE_F32, RR, CC, lr) == MLORC_OK, "fp32 step");
    EXPECT(memcmp(wa, wb, sizeof wa) == 0 && memcmp(a.state, b.state, a.bytes) == 0,
           "rule %d storage %d: stochastic rounding or state differs between 1 and 2 threads", rule, storage);
    int neighbours = 1, up = 0, down = 0;
    for (int i = 0; i < NN; i++) {
        uint32_t bits;
        memcpy(&bits, &w32[i], 4);
        uint16_t lo = (uint16_t)(bits >> 16), hi = (uint16_t)(lo + ((bits & 0xffff) != 0));
        neighbours &= wa[i] == lo || wa[i] == hi;
        up += wa[i] == hi && hi != lo;
        down += wa[i] == lo && hi != lo;
    }
    EXPECT(neighbours, "rule %d storage %d: a stochastic rounding is not one of the two neighbours", rule, storage);
    EXPECT(up > NN / 10 && down > NN / 10, "rule %d storage %d: both neighbours occur (%d up, %d down)", rule, storage,
           up, down);
    /* Resume: the saved state (and group state) and weights step to the same bits. */
    uint16_t *again = malloc(sizeof w0);
    memcpy(again, w0, sizeof w0);
    memcpy(a.state, saved, a.bytes), memcpy(a.group, group, sizeof group);
    EXPECT(step(&a, again, g16, MLORC_DTYPE_BF16, RR, CC, lr) == MLORC_OK, "SR resume step");
    EXPECT(memcmp(again, wb, sizeof w0) == 0 && memcmp(a.state, b.state, a.bytes) == 0,
           "rule %d storage %d: resumed stochastic rounding differs", rule, storage);
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


/* Least squares: L(W) = |(W - T) X|^2 / (2K) over an R x C weight, its
 * gradient G = (W - T) X X^T / K, evaluated in double on the widened weights. */
enum { K = 48, TRAIN_STEPS = 150 };
static float train_x[C * K], train_t[N];

static double loss_and_grad(const float *w, float *g) {
    static double d[N], dx[R * K];
    for (int i = 0; i < N; i++) d[i] = (double)w[i] - train_t[i];
    double loss = 0;
    for (int i = 0; i < R; i++)
        for (int k = 0; k < K; k++) {
            double sum = 0;
            for (int j = 0; j < C; j++) sum += d[i * C + j] * train_x[j * K + k];
            dx[i * K + k] = sum;
            loss += sum * sum;
        }
    if (g)
        for (int i = 0; i < R; i++)
            for (int j = 0; j < C; j++) {
                double sum = 0;
                for (int k = 0; k < K; k++) sum += dx[i * K + k] * train_x[j * K + k];
                g[i * C + j] = (float)(sum / K);
            }
    return loss / (2.0 * K);
}

/* The final loss of TRAIN_STEPS steps from w0 (R x C floats) in `dtype`
 * (MLORC_DTYPE_F32, or a half type | optionally GRAD_F32), bf16 with
 * stochastic rounding; *final gets the final weights widened. */
static double train(int rule, int storage, int dtype, const float *w0, float *final) {
    int half = dtype & 0xff;
    static uint16_t w16[N], g16[N];
    static float w32[N], g32[N];
    tensor_state t;
    for (int i = 0; i < N; i++) w16[i] = half ? narrow(half, w0[i]) : 0, w32[i] = half ? widen(half, w16[i]) : w0[i];
    if (!make(&t, rule, storage, dtype, R, C, 1, 0, 1, NULL)) {
        EXPECT(0, "train set-up rule %d storage %d dtype %#x: %s", rule, storage, dtype, mlorc_last_error(t.opt));
        drop(&t);
        return INFINITY;
    }
    double lr = rule_lr(rule);
    for (int s = 0; s < TRAIN_STEPS; s++) {
        loss_and_grad(w32, g32);
        if (half && !(dtype & MLORC_DTYPE_GRAD_F32))
            for (int i = 0; i < N; i++) g16[i] = narrow(half, g32[i]);
        const void *g = half && !(dtype & MLORC_DTYPE_GRAD_F32) ? (const void *)g16 : (const void *)g32;
        int st = step(&t, half ? (void *)w16 : (void *)w32, g, dtype, R, C, lr);
        if (st != MLORC_OK) {
            EXPECT(0, "train rule %d storage %d dtype %#x step %d: %s", rule, storage, dtype, s + 1, mlorc_last_error(t.opt));
            break;
        }
        if (half)
            for (int i = 0; i < N; i++) w32[i] = widen(half, w16[i]);
    }
    drop(&t);
    memcpy(final, w32, sizeof w32);
    return loss_and_grad(w32, NULL);
}

/* Half-precision training stays close to fp32 training.
 *
 * Tolerance: a half run cannot be closer to the fp32 run than the grid of its
 * type allows. `grid` is the loss change caused by rounding the fp32 run's
 * final weights to the half type once (nearest); each step of a half run
 * adds at most one such rounding (stochastic rounding: up to one ulp, twice
 * nearest's half ulp) and the optimizer contracts earlier ones, so the
 * final losses may differ by a few grid errors: 16 x grid. The runs also
 * take different paths (each rounding changes the next gradient, and the
 * sign-based rules, Lion and DAdapt-Lion, turn tiny differences into whole
 * steps), which the grid does not bound: 10% of the fp32 run's progress
 * L0 - L_f is allowed for that. The problem must train (L_f < L0 / 2),
 * else the comparison says nothing. */
static void train_close_to_fp32(int rule, int storage) {
    static float w0[N], wf[N], wh[N], rounded[N];
    for (int i = 0; i < N; i++) w0[i] = 0.5f * uniform(), train_t[i] = 0.5f * uniform();
    for (int i = 0; i < C * K; i++) train_x[i] = uniform();
    double l0 = loss_and_grad(w0, NULL);
    double lf = train(rule, storage, MLORC_DTYPE_F32, w0, wf);
    EXPECT(lf < l0 / 2, "rule %d storage %d: the fp32 run does not train (loss %g -> %g)", rule, storage, l0, lf);
    for (int half = MLORC_DTYPE_BF16; half <= MLORC_DTYPE_F16; half++) {
        for (int i = 0; i < N; i++) rounded[i] = widen(half, narrow(half, wf[i]));
        double grid = fabs(loss_and_grad(rounded, NULL) - lf);
        double tolerance = 16 * grid + 0.1 * (l0 - lf);
        for (int grad_f32 = 0; grad_f32 <= 1; grad_f32++) {
            int dtype = half | (grad_f32 ? MLORC_DTYPE_GRAD_F32 : 0);
            double lh = train(rule, storage, dtype, w0, wh);
            EXPECT(fabs(lh - lf) <= tolerance,
                   "rule %d storage %d dtype %#x: final loss %g, fp32 %g (from %g; tolerance %g, grid %g)", rule,
                   storage, dtype, lh, lf, l0, tolerance, grid);
        }
    }
}

/* Refused steps change nothing: weights, state and group state. */
static int unchanged(const tensor_state *t, const unsigned char *state0, const unsigned char *group0, const uint16_t *w,
                     const uint16_t *w0) {
    return memcmp(w, w0, sizeof(uint16_t) * N) == 0 && memcmp(state0, t->state, t->bytes) == 0 &&
           memcmp(group0, t->group, sizeof t->group) == 0;
}

static void refusals(int rule, int storage) {
    /* f16: an update beyond 65504 (w[11] = 64992 moved up by about lr). */
    uint16_t w[N], g[N], w0[N];
    unsigned char group0[MLORC_GROUP_STATE_BYTES];
    for (int i = 0; i < N; i++) w[i] = f32_to_f16(0.5f * uniform()), g[i] = f32_to_f16(uniform());
    w[11] = f32_to_f16(65000.0f);
    tensor_state t;
    if (make(&t, rule, storage, MLORC_DTYPE_F16, R, C, 1, 0, 0, NULL)) {
        unsigned char *s0 = malloc(t.bytes);
        if (rule == MLORC_RULE_ADOPT) /* its first step does not move the weights */
            EXPECT(step(&t, w, g, MLORC_DTYPE_F16, R, C, 1e-3) == MLORC_OK, "ADOPT's first step");
        memcpy(s0, t.state, t.bytes), memcpy(w0, w, sizeof w), memcpy(group0, t.group, sizeof group0);
        g[11] = f32_to_f16(-1.0f); /* descent moves w[11] up */
        int st = step(&t, w, g, MLORC_DTYPE_F16, R, C, 1e6 * rule_lr(rule));
        EXPECT(st == MLORC_ERROR_NON_FINITE, "rule %d storage %d f16 overflow: status %d", rule, storage, st);
        EXPECT(unchanged(&t, s0, group0, w, w0), "rule %d storage %d: f16 overflow changed something", rule, storage);
        st = step(&t, w, g, MLORC_DTYPE_F16, R, C, rule_lr(rule) / 1000);
        EXPECT(st == MLORC_OK, "rule %d storage %d f16 ordinary step: %s", rule, storage, mlorc_last_error(t.opt));
        /* An infinite f16 gradient. */
        memcpy(s0, t.state, t.bytes), memcpy(w0, w, sizeof w), memcpy(group0, t.group, sizeof group0);
        g[5] = 0x7c00; /* f16 +inf */
        st = step(&t, w, g, MLORC_DTYPE_F16, R, C, rule_lr(rule));
        EXPECT(st == MLORC_ERROR_NON_FINITE, "rule %d storage %d f16 infinite gradient: status %d", rule, storage, st);
        EXPECT(unchanged(&t, s0, group0, w, w0), "rule %d storage %d: refused step changed something", rule, storage);
        free(s0);
    } else {
        EXPECT(0, "f16 set-up rule %d storage %d: %s", rule, storage, mlorc_last_error(t.opt));
    }
    drop(&t);
    /* A NaN bf16 gradient. */
    for (int i = 0; i < N; i++) w[i] = f32_to_bf16_rne(0.5f * uniform()), g[i] = f32_to_bf16_rne(uniform());
    if (make(&t, rule, storage, MLORC_DTYPE_BF16, R, C, 1, 0, 1, NULL)) {
        unsigned char *s0 = malloc(t.bytes);
        memcpy(s0, t.state, t.bytes), memcpy(w0, w, sizeof w), memcpy(group0, t.group, sizeof group0);
        g[N - 1] = 0x7fc0; /* bf16 NaN */
        int st = step(&t, w, g, MLORC_DTYPE_BF16, R, C, rule_lr(rule));
        EXPECT(st == MLORC_ERROR_NON_FINITE, "rule %d storage %d bf16 NaN gradient: status %d", rule, storage, st);
        EXPECT(unchanged(&t, s0, group0, w, w0), "rule %d storage %d: refused bf16 step changed something", rule, storage);
        free(s0);
    } else {
        EXPECT(0, "bf16 set-up rule %d storage %d: %s", rule, storage, mlorc_last_error(t.opt));
    }
    drop(&t);
}

static void dtype_refusals(void) {
    /* An unknown dtype, and a state of another dtype. */
    uint16_t w[N] = {0}, g[N] = {0};
    mlorc_optimizer *opt = NULL;
    mlorc_create(&opt, MLORC_RULE_CAME);
    mlorc_tensor_layout layout = {R, C, 3, MLORC_STORAGE_DENSE};
    size_t bytes = 0;
    EXPECT(mlorc_state_size(opt, &layout, &bytes) == MLORC_ERROR_UNSUPPORTED_DTYPE, "dtype 3 state size");
    mlorc_free(opt);
    tensor_state f32;
    if (make(&f32, MLORC_RULE_CAME, MLORC_STORAGE_DENSE, MLORC_DTYPE_F32, R, C, 1, 0, 0, NULL)) {
        int st = step(&f32, w, g, MLORC_DTYPE_BF16, R, C, 1e-3);
        EXPECT(st == MLORC_ERROR_STATE_MISMATCH, "bf16 tensor with an f32 state: status %d", st);
        st = step(&f32, w, g, MLORC_DTYPE_F32 | MLORC_DTYPE_GRAD_F32, R, C, 1e-3);
        EXPECT(st == MLORC_ERROR_UNSUPPORTED_DTYPE, "GRAD_F32 on an f32 parameter: status %d", st);
    }
    drop(&f32);
}

int main(int argc, char **argv) {
    /* half_test [RULE]: all rules, or only rule RULE (while debugging). */
    int only = argc > 1 ? atoi(argv[1]) : 0;
    for (int r = 0; r < RULES; r++) {
        int rule = all_rules[r];
        if (only && rule != only) continue;
        for (int storage = MLORC_STORAGE_DENSE; storage <= MLORC_STORAGE_LOWRANK; storage++) {
            for (int half = MLORC_DTYPE_BF16; half <= MLORC_DTYPE_F16; half++) {
                for (int grad_f32 = 0; grad_f32 <= 1; grad_f32++) nearest_matches_fp32(rule, storage, half, grad_f32);
                master_follows_fp32(rule, half, storage);
            }
            stochastic_rounding(rule, storage);
            train_close_to_fp32(rule, storage);
            refusals(rule, storage);
        }
    }
    stochastic_rounding_is_unbiased();
    dtype_refusals();
    printf("half_test: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
