/*
 * train_test.c - trains a small real problem with MLorc-AdamW, MLorc-Lion and
 * MoFaSGD through the C API and checks that it learns, deterministically.
 *
 * Problem: multi-output least squares. Inputs x in R^48, targets
 * y = W* x + b* in R^64, where W* (64x48) has rank 3 and b* is a random bias.
 * The model is W (64x48, random init) and b (1x64, zero init); the loss is
 * L = 1/(2N) * sum_samples |W x + b - y|^2 over N = 128 fixed samples.
 * W gets low-rank (MLorc) moments under the AUTO policy (min(64,48) >= 16),
 * b dense ones; both go through one batched mlorc_step per iteration.
 *
 * Checks:
 *  - the final loss is below LOSS_RATIO * initial loss for every rule;
 *  - the same training run twice gives bit-identical weights and states;
 *  - threads = 1 and threads = 2 give bit-identical weights and states (on
 *    this problem and on tensors large enough that threads are really used);
 *  - saving the states mid-run and resuming with a fresh handle is bit-exact.
 */
#include "mlorc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long checks_run;
static const mlorc_optimizer *current; /* whose mlorc_last_error a failure prints */

static void check_at(int ok, const char *what, const char *file, int line) {
    ++checks_run;
    if (!ok) {
        fprintf(stderr, "%s:%d: check failed: %s\n  mlorc_last_error: \"%s\"\n", file, line, what,
                mlorc_last_error(current));
        exit(1);
    }
}
#define CHECK(cond) check_at((cond) != 0, #cond, __FILE__, __LINE__)
#define CHECK_OK(call) check_at((call) == MLORC_OK, #call " == MLORC_OK", __FILE__, __LINE__)

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* splitmix64 uniform in [-1, 1): reproducible data independent of libc. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float rng_uniform(uint64_t *s) {
    return (float)((double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

/* ------------------------------------------------------------- problem */

enum { N = 128, IN = 48, OUT = 64, TRUE_RANK = 3 };

static float X[N][IN], Y[N][OUT];

static void make_data(void) {
    float u[OUT][TRUE_RANK], v[IN][TRUE_RANK], bias[OUT];
    uint64_t s = 2024;
    int i, j, k, a;
    for (i = 0; i < OUT; ++i)
        for (a = 0; a < TRUE_RANK; ++a) u[i][a] = rng_uniform(&s);
    for (j = 0; j < IN; ++j)
        for (a = 0; a < TRUE_RANK; ++a) v[j][a] = rng_uniform(&s) * 0.5f;
    for (i = 0; i < OUT; ++i) bias[i] = rng_uniform(&s);
    for (k = 0; k < N; ++k)
        for (j = 0; j < IN; ++j) X[k][j] = rng_uniform(&s);
    for (k = 0; k < N; ++k)
        for (i = 0; i < OUT; ++i) {
            double y = bias[i];
            for (j = 0; j < IN; ++j) {
                double w = 0;
                for (a = 0; a < TRUE_RANK; ++a) w += (double)u[i][a] * v[j][a];
                y += w * X[k][j];
            }
            Y[k][i] = (float)y;
        }
}

/* Loss and, if gw/gb are given, its gradients (row-major like W). */
static double loss_grad(const float *w, const float *b, float *gw, float *gb) {
    static double r[N][OUT];
    double loss = 0;
    int i, j, k;
    for (k = 0; k < N; ++k)
        for (i = 0; i < OUT; ++i) {
            double p = b[i];
            for (j = 0; j < IN; ++j) p += (double)w[i * IN + j] * X[k][j];
            r[k][i] = p - Y[k][i];
            loss += r[k][i] * r[k][i];
        }
    if (gw && gb) {
        for (i = 0; i < OUT; ++i) {
            double sb = 0;
            for (k = 0; k < N; ++k) sb += r[k][i];
            gb[i] = (float)(sb / N);
            for (j = 0; j < IN; ++j) {
                double s = 0;
                for (k = 0; k < N; ++k) s += r[k][i] * X[k][j];
                gw[i * IN + j] = (float)(s / N);
            }
        }
    }
    return loss / (2.0 * N);
}

/* ------------------------------------------------------------ training */

/* Everything a run owns: parameters, gradients, per-tensor states. */
typedef struct {
    float w[OUT * IN], b[OUT], gw[OUT * IN], gb[OUT];
    unsigned char *state[2];
    size_t bytes[2];
    mlorc_tensor t[2];
} model;

static void model_init(model *m, const mlorc_optimizer *opt) {
    mlorc_tensor_layout lw = {OUT, IN, MLORC_DTYPE_F32, MLORC_STORAGE_AUTO};
    mlorc_tensor_layout lb = {1, OUT, MLORC_DTYPE_F32, MLORC_STORAGE_AUTO};
    mlorc_state_info info;
    uint64_t s = 77;
    int i;
    for (i = 0; i < OUT * IN; ++i) m->w[i] = 0.1f * rng_uniform(&s); /* full-rank init */
    for (i = 0; i < OUT; ++i) m->b[i] = 0;
    CHECK_OK(mlorc_state_size(opt, &lw, &m->bytes[0]));
    CHECK_OK(mlorc_state_size(opt, &lb, &m->bytes[1]));
    m->state[0] = xmalloc(m->bytes[0]);
    m->state[1] = xmalloc(m->bytes[1]);
    CHECK_OK(mlorc_state_init(opt, &lw, 1, m->state[0], m->bytes[0])); /* tensor ids 1, 2 */
    CHECK_OK(mlorc_state_init(opt, &lb, 2, m->state[1], m->bytes[1]));
    CHECK_OK(mlorc_state_inspect(m->state[0], m->bytes[0], &info));
    CHECK(info.storage == MLORC_STORAGE_LOWRANK && info.rank == 4);
    CHECK_OK(mlorc_state_inspect(m->state[1], m->bytes[1], &info));
    CHECK(info.storage == MLORC_STORAGE_DENSE);
    memset(m->t, 0, sizeof m->t);
    m->t[0].param = m->w;
    m->t[0].grad = m->gw;
    m->t[0].rows = OUT;
    m->t[0].cols = IN;
    m->t[1].param = m->b;
    m->t[1].grad = m->gb;
    m->t[1].rows = 1;
    m->t[1].cols = OUT;
    for (i = 0; i < 2; ++i) {
        m->t[i].state = m->state[i];
        m->t[i].state_bytes = m->bytes[i];
        m->t[i].dtype = MLORC_DTYPE_F32;
    }
}

static void model_free(model *m) {
    free(m->state[0]);
    free(m->state[1]);
}

/* A deep copy with the tensor descriptors pointing at the copy's buffers. */
static void model_copy(model *dst, const model *src) {
    int i;
    memcpy(dst, src, sizeof *dst);
    for (i = 0; i < 2; ++i) {
        dst->state[i] = xmalloc(src->bytes[i]);
        memcpy(dst->state[i], src->state[i], src->bytes[i]);
        dst->t[i].state = dst->state[i];
    }
    dst->t[0].param = dst->w;
    dst->t[0].grad = dst->gw;
    dst->t[1].param = dst->b;
    dst->t[1].grad = dst->gb;
}

static int model_same(const model *a, const model *b) {
    return memcmp(a->w, b->w, sizeof a->w) == 0 && memcmp(a->b, b->b, sizeof a->b) == 0 &&
           memcmp(a->state[0], b->state[0], a->bytes[0]) == 0 && memcmp(a->state[1], b->state[1], a->bytes[1]) == 0;
}

enum { STEPS = 300 };

/* Peak learning rates, picked from a sweep over {0.005, 0.01, 0.02, 0.05}
 * (AdamW) and {0.002, 0.005, 0.01, 0.02} (Lion): the best of each. */
/* MoFaSGD: {0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1}, best 0.2 (its steps
 * have spectral norm lr, so it needs larger rates). */
static double base_lr(int rule) {
    return rule == MLORC_RULE_ADAMW ? 0.05 : rule == MLORC_RULE_LION ? 0.02 : 0.2;
}

/* Linear warm-up over 10 steps, then cosine decay to 5% of the base rate:
 * the caller passes the scheduled lr to every step. */
static double lr_at(int rule, int step) {
    const double pi = 3.14159265358979323846;
    double base = base_lr(rule);
    if (step < 10) return base * (step + 1) / 10.0;
    return base * (0.05 + 0.95 * 0.5 * (1 + cos(pi * (step - 10) / (STEPS - 10))));
}

/* Frees a handle and forgets it as the one failures report on. */
static void release(mlorc_optimizer *opt) {
    if (current == opt) current = NULL;
    mlorc_free(opt);
}

static mlorc_optimizer *make(int rule, int threads) {
    mlorc_optimizer *opt = NULL;
    CHECK_OK(mlorc_create(&opt, rule));
    current = opt;
    CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_RANK, 4));
    CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_THREADS, threads));
    return opt;
}

/* Steps [from, to) of the schedule; returns the loss after the last one. */
static double train_steps(mlorc_optimizer *opt, model *m, int rule, int from, int to) {
    int s;
    for (s = from; s < to; ++s) {
        loss_grad(m->w, m->b, m->gw, m->gb);
        CHECK_OK(mlorc_step(opt, m->t, 2, lr_at(rule, s))); /* all tensors in one batched step */
    }
    return loss_grad(m->w, m->b, NULL, NULL);
}

/* A complete run from scratch; the trained model is left in *m. */
static double train(int rule, int threads, model *m, double *initial) {
    mlorc_optimizer *opt = make(rule, threads);
    double final;
    model_init(m, opt);
    *initial = loss_grad(m->w, m->b, NULL, NULL);
    final = train_steps(opt, m, rule, 0, STEPS);
    release(opt);
    return final;
}

/* Large tensors, where a step really splits its work between threads
 * (the library parallelises only over chunks of at least 32768 elements, so
 * the 64x48 problem above runs on one thread whatever the setting). */
static void check_threads_large(int rule) {
    enum { R = 384, C = 320, V = 70000, STEPS_L = 4 };
    const int thread_counts[3] = {1, 2, 3};
    float *ref_w = NULL, *ref_v = NULL;
    unsigned char *ref_s[2] = {NULL, NULL};
    int tc;
    for (tc = 0; tc < 3; ++tc) {
        mlorc_optimizer *opt = make(rule, thread_counts[tc]);
        mlorc_tensor_layout lw = {R, C, MLORC_DTYPE_F32, MLORC_STORAGE_AUTO};
        mlorc_tensor_layout lv = {1, V, MLORC_DTYPE_F32, MLORC_STORAGE_AUTO};
        float *w = xmalloc(4 * R * C), *gw = xmalloc(4 * R * C), *v = xmalloc(4 * V), *gv = xmalloc(4 * V);
        size_t bw, bv;
        unsigned char *sw, *sv;
        mlorc_tensor t[2];
        uint64_t seed = 5;
        int i, s;
        CHECK_OK(mlorc_state_size(opt, &lw, &bw));
        CHECK_OK(mlorc_state_size(opt, &lv, &bv));
        sw = xmalloc(bw);
        sv = xmalloc(bv);
        CHECK_OK(mlorc_state_init(opt, &lw, 10, sw, bw));
        CHECK_OK(mlorc_state_init(opt, &lv, 11, sv, bv));
        for (i = 0; i < R * C; ++i) w[i] = rng_uniform(&seed);
        for (i = 0; i < V; ++i) v[i] = rng_uniform(&seed);
        memset(t, 0, sizeof t);
        t[0].param = w;
        t[0].grad = gw;
        t[0].state = sw;
        t[0].state_bytes = bw;
        t[0].rows = R;
        t[0].cols = C;
        t[1].param = v;
        t[1].grad = gv;
        t[1].state = sv;
        t[1].state_bytes = bv;
        t[1].rows = 1;
        t[1].cols = V;
        for (s = 0; s < STEPS_L; ++s) {
            for (i = 0; i < R * C; ++i) gw[i] = rng_uniform(&seed) + 0.01f * w[i];
            for (i = 0; i < V; ++i) gv[i] = rng_uniform(&seed);
            CHECK_OK(mlorc_step(opt, t, 2, 1e-3));
        }
        if (tc == 0) {
            ref_w = w;
            ref_v = v;
            ref_s[0] = sw;
            ref_s[1] = sv;
        } else {
            CHECK(memcmp(w, ref_w, 4 * R * C) == 0);
            CHECK(memcmp(v, ref_v, 4 * V) == 0);
            CHECK(memcmp(sw, ref_s[0], bw) == 0);
            CHECK(memcmp(sv, ref_s[1], bv) == 0);
            free(w);
            free(v);
            free(sw);
            free(sv);
        }
        free(gw);
        free(gv);
        release(opt);
    }
    free(ref_w);
    free(ref_v);
    free(ref_s[0]);
    free(ref_s[1]);
}

/* Thresholds on final / initial loss (initial is about 56.7).
 * Measured with this schedule and 300 steps (threads 2, default settings):
 *   MLorc-AdamW (rank 4): 1.7e-5 for the data below; 1.1e-5 .. 3.0e-5 over
 *                         12 other data/init seeds (dense AdamW: 1.2e-6);
 *   MLorc-Lion  (rank 4): 5.9e-6 here; 5.2e-6 .. 1.1e-5 over the same seeds
 *                         (9.3e-6 here on an earlier build of the kernels).
 * 1e-3 (0.1%) leaves a margin of 30x or more over the worst seed, so another
 * BLAS/LAPACK build or a harmless change of rounding still passes, while it is
 * 50x below the 5% a subtly broken update can still reach: weights stuck at
 * their init give 1, a bias-only fit about 0.8, and even correct updates
 * that are merely less effective miss it: AdamW at 0.4x this learning rate
 * ends at 1.1e-3, Lion at 0.25x at 1.6e-2. */
#define LOSS_RATIO_ADAMW 1e-3
#define LOSS_RATIO_LION 1e-3
/* MoFaSGD (rank 4) moves W by rank-4 steps of unit singular values, so 300
 * steps fit less: 1.4e-3 here (lr 0.1: 2.1e-3, 0.05: 5.7e-2, 0.3: 1.6e-3).
 * 1e-2 leaves a 7x margin and still fails at a quarter of the rate. */
#define LOSS_RATIO_MOFASGD 1e-2

int main(void) {
    const int rules[3] = {MLORC_RULE_ADAMW, MLORC_RULE_LION, MLORC_RULE_MOFASGD};
    int r;
    make_data();
    for (r = 0; r < 3; ++r) {
        const int rule = rules[r];
        const char *name = rule == MLORC_RULE_ADAMW ? "MLorc-AdamW" : rule == MLORC_RULE_LION ? "MLorc-Lion" : "MoFaSGD";
        const double threshold = rule == MLORC_RULE_ADAMW ? LOSS_RATIO_ADAMW
                                 : rule == MLORC_RULE_LION ? LOSS_RATIO_LION : LOSS_RATIO_MOFASGD;
        model a, b, c, half, resumed;
        double initial, final, again, one_thread;
        mlorc_optimizer *opt;

        /* threads = 2, as a user with a multi-core machine would run it. */
        final = train(rule, 2, &a, &initial);
        printf("%s: initial loss %.6g, final loss %.6g (ratio %.3g, threshold %.3g)\n", name, initial, final,
               final / initial, threshold);
        CHECK(isfinite(final));
        CHECK(final < threshold * initial);

        /* Determinism: the same run again. */
        again = train(rule, 2, &b, &initial);
        CHECK(again == final);
        CHECK(model_same(&a, &b));
        /* Thread count never changes the result. */
        one_thread = train(rule, 1, &c, &initial);
        CHECK(one_thread == final);
        CHECK(model_same(&a, &c));

        /* Resume: run half, copy every byte (as if saved and reloaded), then
         * finish both the original and the copy, the copy on a fresh handle. */
        opt = make(rule, 2);
        model_init(&half, opt);
        train_steps(opt, &half, rule, 0, STEPS / 2);
        model_copy(&resumed, &half);
        train_steps(opt, &half, rule, STEPS / 2, STEPS);
        release(opt);
        opt = make(rule, 1);
        train_steps(opt, &resumed, rule, STEPS / 2, STEPS);
        release(opt);
        CHECK(model_same(&half, &resumed));
        CHECK(model_same(&half, &a));

        model_free(&a);
        model_free(&b);
        model_free(&c);
        model_free(&half);
        model_free(&resumed);
        check_threads_large(rule);
    }
    printf("train_test: %lu checks passed\n", checks_run);
    return 0;
}
