/*
 * outputs_test.c - a step whose new weights or state would not be finite is
 * refused with MLORC_ERROR_NON_FINITE and changes nothing, for every rule and
 * storage; a step whose outputs are finite is taken, even where the cheap
 * bounds cannot prove it (eps = 0), because the check is then exact.
 *
 * Cases (each on dense and low-rank storage of every rule that has them):
 *   - lr = 1e308 (finite as a double, infinite as the fp32 step size)
 *   - a weight of 3e38 with weight decay 0.1 and an lr that makes lr·λ > 2
 *     (the decayed weight overflows)
 *   - a weight of -inf (first element) or NaN (last element)
 *   - a gradient of 3e38: g² overflows the second moment of the rules that
 *     square gradients (Lion and DAdapt-Lion may take it: m stays finite)
 *   - a dense state whose first moment holds NaN (passes inspect: dense
 *     payloads carry no checksum)
 *   - AdamW with eps = 0 and a zero gradient on a fresh state (0/0)
 * and, as controls, AdamW / ADOPT with eps = 0 and ordinary gradients.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlorc.h"
#include "../support/step_any.h"

static int failures = 0;
#define EXPECT(cond, ...)                              \
    do {                                               \
        if (!(cond)) {                                 \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);              \
            fprintf(stderr, "\n");                     \
            failures++;                                \
        }                                              \
    } while (0)

enum { ROWS = 24, COLS = 40, N = ROWS * COLS };

typedef struct {
    mlorc_optimizer *opt;
    float w[N], g[N];
    unsigned char *state;
    size_t state_bytes;
} fixture;

static unsigned long long seed = 88172645463325252ULL;
static float uniform(void) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    return (float)((double)(seed >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

/* A handle of `rule`, a state of `storage` after two ordinary steps. */
static int setup(fixture *f, int rule, int storage, double eps) {
    memset(f, 0, sizeof *f);
    if (mlorc_create(&f->opt, rule) != MLORC_OK) return 0;
    if (eps >= 0 && mlorc_set_param(f->opt, MLORC_PARAM_EPS, eps) != MLORC_OK) return 0;
    mlorc_tensor_layout layout = {ROWS, COLS, MLORC_DTYPE_F32, storage};
    if (mlorc_state_size(f->opt, &layout, &f->state_bytes) != MLORC_OK) return 0;
    f->state = malloc(f->state_bytes);
    if (mlorc_state_init(f->opt, &layout, 5, f->state, f->state_bytes) != MLORC_OK) return 0;
    for (int i = 0; i < N; i++) f->w[i] = 0.5f * uniform();
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < N; i++) f->g[i] = uniform();
        mlorc_tensor t = {f->w, f->g, f->state, f->state_bytes, ROWS, COLS, MLORC_DTYPE_F32, 0};
        if (mlorc_test_step_any(f->opt, &t, 1, 1e-3) != MLORC_OK) return 0;
    }
    for (int i = 0; i < N; i++) f->g[i] = uniform();
    return 1;
}

static void teardown(fixture *f) {
    mlorc_free(f->opt);
    free(f->state);
}

/* Either status: accepted with finite outputs, or refused with nothing changed. */
#define ACCEPTED_OR_REFUSED (-1)

/* Steps once with lr and expects `want`; on a refusal, nothing changed. */
static void expect_step(fixture *f, double lr, int want, const char *what, int rule, int storage) {
    float w0[N];
    memcpy(w0, f->w, sizeof w0);
    unsigned char *s0 = malloc(f->state_bytes);
    memcpy(s0, f->state, f->state_bytes);
    mlorc_tensor t = {f->w, f->g, f->state, f->state_bytes, ROWS, COLS, MLORC_DTYPE_F32, 0};
    int st = mlorc_test_step_any(f->opt, &t, 1, lr);
    if (want == ACCEPTED_OR_REFUSED)
        EXPECT(st == MLORC_OK || st == MLORC_ERROR_NON_FINITE, "rule %d storage %d, %s: status %d (%s)", rule, storage,
               what, st, mlorc_last_error(f->opt));
    else
        EXPECT(st == want, "rule %d storage %d, %s: status %d, expected %d (%s)", rule, storage, what, st, want,
               st ? mlorc_last_error(f->opt) : "accepted");
    if (st != MLORC_OK) {
        EXPECT(memcmp(w0, f->w, sizeof w0) == 0, "rule %d storage %d, %s: weights changed by a refused step", rule,
               storage, what);
        EXPECT(memcmp(s0, f->state, f->state_bytes) == 0, "rule %d storage %d, %s: state changed by a refused step",
               rule, storage, what);
    } else {
        for (int i = 0; i < N; i++)
            if (!isfinite(f->w[i])) {
                EXPECT(0, "rule %d storage %d, %s: non-finite weight written", rule, storage, what);
                break;
            }
    }
    free(s0);
}

int main(void) {
    int cases = 0;
    for (int rule = 1; rule <= 8; rule++) {
        for (int storage = MLORC_STORAGE_DENSE; storage <= MLORC_STORAGE_LOWRANK; storage++) {
            fixture f;
            if (!setup(&f, rule, storage, -1)) {
                fprintf(stderr, "FAIL set-up of rule %d storage %d: %s\n", rule, storage,
                        f.opt ? mlorc_last_error(f.opt) : "no handle");
                failures++;
                teardown(&f);
                continue;
            }
            int adaptive = rule == MLORC_RULE_PRODIGY || rule == MLORC_RULE_DADAPT_LION;
            expect_step(&f, 1e308, MLORC_ERROR_NON_FINITE, "lr 1e308", rule, storage);
            /* lr·λ > 2 (the D-adaptation rules scale lr by d >= d0 = 1e-6). */
            EXPECT(mlorc_set_param(f.opt, MLORC_PARAM_WEIGHT_DECAY, 0.1) == MLORC_OK, "weight decay");
            float w0 = f.w[5];
            f.w[5] = 3e38f;
            expect_step(&f, adaptive ? 1e8 : 100, MLORC_ERROR_NON_FINITE, "weight 3e38, lr*decay > 2", rule, storage);
            f.w[5] = w0;
            /* Non-finite weights, first and last element (the low-rank step
             * takes max |w| from its sketch pass's reads of every row). */
            for (int k = 0; k < 2; k++) {
                int at = k ? N - 1 : 0;
                float kept = f.w[at];
                f.w[at] = k ? NAN : -INFINITY;
                expect_step(&f, 1e-3, MLORC_ERROR_NON_FINITE, k ? "NaN last weight" : "-inf first weight", rule,
                            storage);
                f.w[at] = kept;
            }
            int squares = rule != MLORC_RULE_LION && rule != MLORC_RULE_DADAPT_LION;
            float g0 = f.g[7];
            f.g[7] = 3e38f;
            expect_step(&f, 1e-3, squares ? MLORC_ERROR_NON_FINITE : ACCEPTED_OR_REFUSED, "gradient 3e38", rule,
                        storage);
            f.g[7] = g0;
            if (storage == MLORC_STORAGE_DENSE) {
                float *moment = (float *)(f.state + 128);
                float m0 = moment[3];
                moment[3] = NAN;
                mlorc_state_info info;
                EXPECT(mlorc_state_inspect(f.state, f.state_bytes, &info) == MLORC_OK,
                       "a dense NaN moment is expected to pass inspect (no payload checksum)");
                expect_step(&f, 1e-3, MLORC_ERROR_NON_FINITE, "NaN in a dense moment", rule, storage);
                moment[3] = m0;
            }
            /* The same state and gradient, ordinary lr: taken. */
            expect_step(&f, 1e-3, MLORC_OK, "control", rule, storage);
            teardown(&f);
            cases += 7;
        }
    }
    /* eps = 0: bounds are inconclusive, the exact check decides. */
    int eps_rules[] = {MLORC_RULE_ADAMW, MLORC_RULE_ADOPT};
    for (int r = 0; r < 2; r++) {
        for (int storage = MLORC_STORAGE_DENSE; storage <= MLORC_STORAGE_LOWRANK; storage++) {
            fixture f;
            if (!setup(&f, eps_rules[r], storage, 0)) {
                fprintf(stderr, "FAIL set-up eps 0 rule %d: %s\n", eps_rules[r], mlorc_last_error(f.opt));
                failures++;
                teardown(&f);
                continue;
            }
            expect_step(&f, 1e-3, MLORC_OK, "eps 0, ordinary gradient", eps_rules[r], storage);
            teardown(&f);
            cases++;
        }
    }
    /* AdamW, eps = 0, a zero gradient on a fresh state: m = v = 0 gives 0/0. */
    for (int storage = MLORC_STORAGE_DENSE; storage <= MLORC_STORAGE_LOWRANK; storage++) {
        mlorc_optimizer *opt = NULL;
        mlorc_create(&opt, MLORC_RULE_ADAMW);
        mlorc_set_param(opt, MLORC_PARAM_EPS, 0);
        mlorc_tensor_layout layout = {ROWS, COLS, MLORC_DTYPE_F32, storage};
        size_t bytes = 0;
        mlorc_state_size(opt, &layout, &bytes);
        unsigned char *state = malloc(bytes);
        mlorc_state_init(opt, &layout, 1, state, bytes);
        static float w[N], g[N];
        for (int i = 0; i < N; i++) w[i] = 0.25f, g[i] = 0;
        mlorc_tensor t = {w, g, state, bytes, ROWS, COLS, MLORC_DTYPE_F32, 0};
        int st = mlorc_step(opt, &t, 1, 1e-3);
        EXPECT(st == MLORC_ERROR_NON_FINITE, "AdamW eps 0, zero gradient, storage %d: status %d (%s)", storage, st,
               mlorc_last_error(opt));
        int unchanged = 1;
        for (int i = 0; i < N; i++) unchanged &= w[i] == 0.25f;
        EXPECT(unchanged, "AdamW eps 0, zero gradient: weights changed");
        free(state);
        mlorc_free(opt);
        cases++;
    }
    printf("%d cases, %d failures\n", cases, failures);
    return failures ? 1 : 0;
}
