/*
 * sharded_test.c - mlorc_step_sharded with threads playing the ranks.
 *
 * An in-process reducer (a barrier; every rank sums the ranks' buffers in
 * rank order, so all get the same bits) stands in for MPI. The model is an
 * MLP-like set of matrices whose row counts do not divide by the rank count,
 * with a rank holding no rows of some tensors. Checks:
 *  - 2 and 3 ranks, MLorc-AdamW, MLorc-Lion, AdamW + OrthoGrad (+ a dense
 *    bias) and MLorc-ADOPT over 20 steps: the sharded weights equal the
 *    unsharded mlorc_step run within the tolerance derived at TOLERANCE, and
 *    s and V are bit-identical on every rank;
 *  - the values exchanged per step are counted and equal the formula of
 *    mlorc.h (mlorc_step_sharded);
 *  - a whole-matrix shard without a reducer is mlorc_step bit for bit, and
 *    its state is mlorc_state_init's;
 *  - refusals on every rank with every byte unchanged: a mismatched shard
 *    description, shards that overlap across ranks, a shard out of range, a
 *    reducer failing at each of its calls, a non-finite gradient on one
 *    rank only; plus the rules and dtypes without a sharded step (CAME's
 *    and MoFaSGD's sharded steps: sharded_rules_test.c);
 *  - bf16 parameters with fp32 gradients (MLorc-AdamW and dense AdamW with
 *    stochastic rounding, keyed by the element's index in the whole matrix;
 *    MLorc-Lion and dense AdamW with fp32 master weights): the sharded
 *    weights equal the unsharded run's within TOLERANCE plus BF16_FLIPS bf16
 *    ulps, and dense ones bit for bit.
 */
#define _POSIX_C_SOURCE 200809L
#include "mlorc.h"
#include "../support/check.h"
#include "support/half.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RANKS 3
#define NT 4      /* tensors */
#define STEPS 20


/* --------------------------------------------------------------- reducer */

typedef struct world {
    int ranks;
    pthread_barrier_t barrier;
    double *buffers[MAX_RANKS];
    size_t counts[MAX_RANKS];
    long calls;          /* reducer calls so far (rank 0 counts) */
    long fail_at;        /* the call that fails on every rank (-1: none) */
    long values;         /* doubles reduced so far */
} world;

typedef struct rank_ctx { world *w; int rank; } rank_ctx;

static int thread_sum(void *user, double *buffer, size_t count) {
    rank_ctx *c = user;
    world *w = c->w;
    size_t e;
    int r, ok = 1;
    double *sum;
    w->buffers[c->rank] = buffer;
    w->counts[c->rank] = count;
    pthread_barrier_wait(&w->barrier);
    for (r = 0; r < w->ranks; ++r) ok &= w->counts[r] == count;
    sum = xcalloc(count * sizeof(double));
    if (ok) {
        for (e = 0; e < count; ++e) {
            double s = 0;
            for (r = 0; r < w->ranks; ++r) s += w->buffers[r][e];
            sum[e] = s;
        }
    }
    pthread_barrier_wait(&w->barrier);
    if (ok) memcpy(buffer, sum, count * sizeof(double));
    free(sum);
    ok &= w->calls != w->fail_at;
    pthread_barrier_wait(&w->barrier);
    if (c->rank == 0) { w->calls += 1; w->values += (long)count; }
    pthread_barrier_wait(&w->barrier);
    return ok ? 0 : 7;
}

/* ----------------------------------------------------------------- model */

static const int64_t ROWS[NT] = {40, 33, 1, 20};
static const int64_t COLS[NT] = {24, 20, 24, 37};

/* The first row of each rank's shard: uneven, rank 1 has no rows of tensor 3
 * at 3 ranks, the bias lives on rank 0. */
static int64_t row_begin(int ranks, int rank, int t) {
    static const int64_t two[NT][3] = {{0, 17, 40}, {0, 19, 33}, {0, 1, 1}, {0, 9, 20}};
    static const int64_t three[NT][4] = {{0, 13, 27, 40}, {0, 10, 21, 33}, {0, 1, 1, 1}, {0, 7, 7, 20}};
    return ranks == 1 ? (rank == 0 ? 0 : ROWS[t]) : ranks == 2 ? two[t][rank] : three[t][rank];
}

static float initial_weight(int t, int64_t i, int64_t j) {
    return (float)(0.1 * sin(0.9 * (double)i + 1.7 * (double)j + (double)t));
}

/* Gradients depend on (tensor, step, element) only, not on the weights: the
 * two runs then differ only by their own rounding (no feedback). */
static float gradient(int t, int step, int64_t i, int64_t j) {
    double x = sin(0.31 * (double)i + 0.17 * (double)j * (double)(t + 1) + 0.5 * step)
             + 0.5 * cos(0.05 * (double)(i * j) - 0.3 * step + t) + 0.2 * (double)((i + 3 * j) % 7) / 7.0;
    return (float)x;
}

typedef struct config {
    const char *name;
    int rule, orthograd, storage;
    int bf16, master;  /* bf16 parameters (fp32 gradients), with fp32 master weights */
} config;

static mlorc_optimizer *make(const config *c) {
    mlorc_optimizer *opt;
    CHECK_OK(mlorc_create(&opt, c->rule));
    CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_RANK, 4));
    if (c->master) CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_MASTER_WEIGHTS, 1));
    if (c->orthograd) CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_ORTHOGRAD, 1));
    return opt;
}

/* One rank's tensors: its rows of every matrix. */
typedef struct shard_set {
    float *w[NT], *g[NT];
    uint16_t *wh[NT];  /* bf16 weights (configs with bf16) */
    unsigned char *state[NT];
    size_t bytes[NT];
    mlorc_tensor t[NT];
    mlorc_shard s[NT];
} shard_set;

static void shard_init(shard_set *z, mlorc_optimizer *opt, const config *c, int ranks, int rank) {
    int t;
    for (t = 0; t < NT; ++t) {
        int64_t b = row_begin(ranks, rank, t), rows = row_begin(ranks, rank + 1, t) - b, i, j;
        mlorc_tensor_layout layout = {rows, COLS[t], c->bf16 ? MLORC_DTYPE_BF16 : MLORC_DTYPE_F32, c->storage};
        z->s[t].global_rows = ROWS[t];
        z->s[t].row_begin = b;
        z->w[t] = rows ? xcalloc((size_t)(rows * COLS[t]) * 4) : NULL;
        z->wh[t] = rows && c->bf16 ? xcalloc((size_t)(rows * COLS[t]) * 2) : NULL;
        z->g[t] = rows ? xcalloc((size_t)(rows * COLS[t]) * 4) : NULL;
        for (i = 0; i < rows; ++i)
            for (j = 0; j < COLS[t]; ++j) {
                z->w[t][i * COLS[t] + j] = initial_weight(t, b + i, j);
                if (c->bf16) z->wh[t][i * COLS[t] + j] = f32_to_bf16_rne(initial_weight(t, b + i, j));
            }
        CHECK_OK(mlorc_state_size_sharded(opt, &layout, &z->s[t], &z->bytes[t]));
        z->state[t] = xcalloc(z->bytes[t]);
        CHECK_OK(mlorc_state_init_sharded(opt, &layout, &z->s[t], 100 + (uint64_t)t, c->master ? z->wh[t] : NULL,
                                          z->state[t], z->bytes[t]));
        memset(&z->t[t], 0, sizeof z->t[t]);
        z->t[t].param = c->bf16 ? (void *)z->wh[t] : (void *)z->w[t];
        z->t[t].dtype = c->bf16 ? MLORC_DTYPE_BF16 | MLORC_DTYPE_GRAD_F32 : MLORC_DTYPE_F32;
        z->t[t].grad = z->g[t];
        z->t[t].state = z->state[t];
        z->t[t].state_bytes = z->bytes[t];
        z->t[t].rows = rows;
        z->t[t].cols = COLS[t];
    }
}

static void shard_gradients(shard_set *z, int step) {
    int t;
    for (t = 0; t < NT; ++t) {
        int64_t i, j;
        for (i = 0; i < z->t[t].rows; ++i)
            for (j = 0; j < COLS[t]; ++j) z->g[t][i * COLS[t] + j] = gradient(t, step, z->s[t].row_begin + i, j);
    }
}

static void shard_free(shard_set *z) {
    int t;
    for (t = 0; t < NT; ++t) { free(z->w[t]); free(z->wh[t]); free(z->g[t]); free(z->state[t]); }
}

/* Weight e of tensor t (bf16 widened). */
static double weight(const shard_set *z, int t, int64_t e) {
    return z->wh[t] ? (double)bf16_to_f32(z->wh[t][e]) : (double)z->w[t][e];
}

/* ------------------------------------------------------------ rank threads */

typedef struct rank_run {
    rank_ctx ctx;
    const config *c;
    int ranks, rank, steps;
    shard_set z;
    mlorc_optimizer *opt;
    int status;           /* the last step's status */
    int keep_grads;       /* 1: step the gradients already in place */
} rank_run;

static void *run_steps(void *arg) {
    rank_run *r = arg;
    int step;
    r->status = MLORC_OK;
    for (step = 0; step < r->steps && r->status == MLORC_OK; ++step) {
        if (!r->keep_grads) shard_gradients(&r->z, step);
        r->status = mlorc_step_sharded(r->opt, r->z.t, r->z.s, NT, 1e-2, NULL, 0);
    }
    return NULL;
}

static void run_ranks(rank_run *runs, int ranks) {
    pthread_t th[MAX_RANKS];
    int r;
    for (r = 0; r < ranks; ++r) CHECK(pthread_create(&th[r], NULL, run_steps, &runs[r]) == 0);
    for (r = 0; r < ranks; ++r) pthread_join(th[r], NULL);
}

static void start_ranks(rank_run *runs, world *w, const config *c, int ranks) {
    int r;
    memset(w, 0, sizeof *w);
    w->ranks = ranks;
    w->fail_at = -1;
    pthread_barrier_init(&w->barrier, NULL, (unsigned)ranks);
    for (r = 0; r < ranks; ++r) {
        runs[r].ctx.w = w;
        runs[r].ctx.rank = r;
        runs[r].c = c;
        runs[r].ranks = ranks;
        runs[r].rank = r;
        runs[r].keep_grads = 0;
        runs[r].opt = make(c);
        CHECK_OK(mlorc_set_reducer(runs[r].opt, thread_sum, &runs[r].ctx));
        shard_init(&runs[r].z, runs[r].opt, c, ranks, r);
    }
}

static void stop_ranks(rank_run *runs, world *w, int ranks) {
    int r;
    for (r = 0; r < ranks; ++r) { shard_free(&runs[r].z); mlorc_free(runs[r].opt); }
    pthread_barrier_destroy(&w->barrier);
}

/* --------------------------------------------------------- the reference */

/* The unsharded run: one rank, whole shards, no reducer (= mlorc_step). */
static void reference(const config *c, shard_set *z, int steps, int through_step) {
    mlorc_optimizer *opt = make(c);
    int step;
    shard_init(z, opt, c, 1, 0);
    for (step = 0; step < steps; ++step) {
        shard_gradients(z, step);
        if (through_step) CHECK_OK(mlorc_step(opt, z->t, NT, 1e-2));
        else CHECK_OK(mlorc_step_sharded(opt, z->t, z->s, NT, 1e-2, NULL, 0));
    }
    mlorc_free(opt);
}

/* TOLERANCE: max |W_sharded - W_ref| over a tensor, relative to the largest
 * movement max |W_ref - W_0| of that tensor. Derivation: both runs compute
 * the same step; they differ by rounding in (a) sums over rows split at the
 * shard boundaries and reassociated (fp32 sums of <= 40 terms: relative
 * error <= 40 u, u = 2^-24 = 6e-8), (b) Q from CholeskyQR2 in fp64 instead of
 * Householder QR (orthonormal to ~u either way; with oversampling 0 the
 * factors QQᵀA do not depend on the basis, so only rounding remains), and
 * (c) the small SVD of a B perturbed by (a). So each step's factors, and the
 * moments rebuilt from them, differ by relative e ~ c·l·40u with c a small
 * constant (QR, SVD backward errors: <= 10), e <= 10·4·40·6e-8 = 1e-4 per
 * step in the worst case, typically sqrt of that count. The momentum carries
 * an error forward with weight beta1 < 1, so after T steps a moment's error
 * is <= T·e. AdamW's direction m/(sqrt(v)+eps) with relative errors e_m, e_v
 * moves by <= e_m + e_v/2; the weights, a sum of T directions times lr,
 * move by <= T·(max step)·(T·e·1.5) while the movement is ~T·(step): the
 * relative difference is <= 1.5·T·e = 1.5·20·1e-4 = 3e-3 in the worst case.
 * Lion's sign direction is discontinuous: an element whose interpolation is
 * within rounding of 0 can flip, moving it by 2·lr for that step (2/T = 0.1
 * of the movement); none do on these inputs, and the check would show it.
 * Measured (printed below): about 1e-6 to 1e-5. */
#define TOLERANCE 3e-3
#define BF16_FLIPS 2

static void compare_with_reference(const config *c, int ranks) {
    rank_run runs[MAX_RANKS];
    world w;
    shard_set ref;
    int t, r, k;
    double worst = 0;
    reference(c, &ref, STEPS, 1);
    start_ranks(runs, &w, c, ranks);
    for (r = 0; r < ranks; ++r) runs[r].steps = STEPS;
    run_ranks(runs, ranks);
    for (r = 0; r < ranks; ++r) CHECK(runs[r].status == MLORC_OK);
    for (t = 0; t < NT; ++t) {
        double diff = 0, moved = 0;
        mlorc_state_info info;
        CHECK_OK(mlorc_state_inspect(ref.state[t], ref.bytes[t], &info));
        double largest = 0;
        for (r = 0; r < ranks; ++r) {
            int64_t i, j, b = runs[r].z.s[t].row_begin;
            for (i = 0; i < runs[r].z.t[t].rows; ++i)
                for (j = 0; j < COLS[t]; ++j) {
                    double x = weight(&runs[r].z, t, i * COLS[t] + j), y = weight(&ref, t, (b + i) * COLS[t] + j);
                    double y0 = c->bf16 ? bf16_to_f32(f32_to_bf16_rne(initial_weight(t, b + i, j)))
                                        : initial_weight(t, b + i, j);
                    if (fabs(x - y) > diff) diff = fabs(x - y);
                    if (fabs(y - y0) > moved) moved = fabs(y - y0);
                    if (fabs(y) > largest) largest = fabs(y);
                }
        }
        CHECK(moved > 0);
        if (diff / moved > worst) worst = diff / moved;
        /* bf16: the two runs round (nearly) the same fp32 values with the same
         * bits; where one lands across a rounding boundary the other does not,
         * they differ by one ulp (at most 2^-7 of the largest weight) there. */
        CHECK(diff <= TOLERANCE * moved + (c->bf16 ? BF16_FLIPS * ldexp(largest, -7) : 0));
        /* Dense steps are elementwise: a shard's is the whole matrix's, bit for
         * bit, stochastic rounding included (keyed by the element's index in
         * the whole matrix, not in the shard). */
        if (c->storage == MLORC_STORAGE_DENSE && !c->orthograd) CHECK(diff == 0);
        /* s and V replicated: bit-identical on every rank. */
        if (info.storage == MLORC_STORAGE_LOWRANK) {
            int moments = c->rule == MLORC_RULE_LION ? 1 : 2;
            int64_t rk = info.rank, n = COLS[t];
            for (k = 0; k < moments; ++k) {
                for (r = 1; r < ranks; ++r) {
                    int64_t m0 = runs[0].z.t[t].rows, mr = runs[r].z.t[t].rows;
                    const unsigned char *a = runs[0].z.state[t] + 128 + 4 * (k * rk * (m0 + n + 1) + m0 * rk);
                    const unsigned char *bb = runs[r].z.state[t] + 128 + 4 * (k * rk * (mr + n + 1) + mr * rk);
                    CHECK(memcmp(a, bb, (size_t)(4 * rk * (n + 1))) == 0);
                }
            }
        }
    }
    printf("  %-22s %d ranks: max |W_sharded - W| / max |W - W0| = %.2e (tolerance %.0e), %ld reducer calls\n",
           c->name, ranks, worst, TOLERANCE, w.calls);
    stop_ranks(runs, &w, ranks);
    shard_free(&ref);
}

/* ------------------------------------------------------ bytes exchanged */

static void count_values(void) {
    static const config c = {"MLorc-AdamW", MLORC_RULE_ADAMW, 0, MLORC_STORAGE_AUTO, 0, 0};
    rank_run runs[MAX_RANKS];
    world w;
    long expected = 2 + 18 * NT, calls;
    int t, r;
    start_ranks(runs, &w, &c, 2);
    for (r = 0; r < 2; ++r) runs[r].steps = 1;
    run_ranks(runs, 2);
    for (t = 0; t < NT; ++t) {
        mlorc_state_info info;
        CHECK_OK(mlorc_state_inspect(runs[0].z.state[t], runs[0].z.bytes[t], &info));
        if (info.storage == MLORC_STORAGE_LOWRANK) {
            long l = 4, n = (long)COLS[t];
            expected += 2 * (l * (l + 1) + l * n);  /* two moments: 2 packed Grams + QᵀA each */
        }
    }
    calls = w.calls;
    printf("  one MLorc-AdamW step of %d tensors: %ld reducer calls, %ld doubles (formula %ld)\n", NT, calls,
           w.values, expected);
    CHECK(w.values == expected);
    CHECK(calls == 5);
    stop_ranks(runs, &w, 2);
    {
        /* The formula at r = 4, oversampling 0 (l = 4), two moments, no power iterations. */
        long sizes[2][2] = {{4096, 4096}, {4096, 11008}}, k;
        for (k = 0; k < 2; ++k) {
            long l = 4, n = sizes[k][1];
            printf("  per step, MLorc-AdamW r4 %ldx%ld: %ld bytes (plus 144 per tensor)\n", sizes[k][0], n,
                   8 * 2 * (l * (l + 1) + l * n));
        }
    }
}

/* ------------------------------------------------------------ whole shard */

static void whole_matrix_is_mlorc_step(void) {
    static const config cs[3] = {{"MLorc-AdamW", MLORC_RULE_ADAMW, 0, MLORC_STORAGE_AUTO, 0, 0},
                                 {"MLorc-Lion", MLORC_RULE_LION, 0, MLORC_STORAGE_AUTO, 0, 0},
                                 {"AdamW+orthograd", MLORC_RULE_ADAMW, 1, MLORC_STORAGE_AUTO, 0, 0}};
    int k, t;
    for (k = 0; k < 1; ++k) {
        shard_set a, b;
        unsigned char *plain;
        mlorc_optimizer *opt = make(&cs[k]);
        reference(&cs[k], &a, 5, 1);
        reference(&cs[k], &b, 5, 0);
        for (t = 0; t < NT; ++t) {
            mlorc_tensor_layout layout = {ROWS[t], COLS[t], MLORC_DTYPE_F32, cs[k].storage};
            CHECK(memcmp(a.w[t], b.w[t], (size_t)(ROWS[t] * COLS[t]) * 4) == 0);
            CHECK(a.bytes[t] == b.bytes[t] && memcmp(a.state[t], b.state[t], a.bytes[t]) == 0);
            /* a whole-matrix shard's fresh state is mlorc_state_init's */
            plain = xcalloc(a.bytes[t]);
            CHECK_OK(mlorc_state_init(opt, &layout, 100 + (uint64_t)t, plain, a.bytes[t]));
            CHECK_OK(mlorc_state_init_sharded(opt, &layout, &a.s[t], 100 + (uint64_t)t, NULL, a.state[t], a.bytes[t]));
            CHECK(memcmp(plain, a.state[t], a.bytes[t]) == 0);
            free(plain);
        }
        shard_free(&a);
        shard_free(&b);
        mlorc_free(opt);
    }
}

/* ------------------------------------------------------------- refusals */

typedef struct snapshot { unsigned char *bytes[MAX_RANKS][2 * NT]; } snapshot;

static void take(snapshot *s, rank_run *runs, int ranks) {
    int r, t;
    for (r = 0; r < ranks; ++r)
        for (t = 0; t < NT; ++t) {
            size_t wb = (size_t)(runs[r].z.t[t].rows * COLS[t]) * 4;
            s->bytes[r][t] = xcalloc(runs[r].z.bytes[t]);
            memcpy(s->bytes[r][t], runs[r].z.state[t], runs[r].z.bytes[t]);
            s->bytes[r][NT + t] = xcalloc(wb);
            if (wb) memcpy(s->bytes[r][NT + t], runs[r].z.w[t], wb);
        }
}

static int unchanged(snapshot *s, rank_run *runs, int ranks) {
    int r, t, same = 1;
    for (r = 0; r < ranks; ++r)
        for (t = 0; t < NT; ++t) {
            size_t wb = (size_t)(runs[r].z.t[t].rows * COLS[t]) * 4;
            same &= memcmp(s->bytes[r][t], runs[r].z.state[t], runs[r].z.bytes[t]) == 0;
            same &= wb == 0 || memcmp(s->bytes[r][NT + t], runs[r].z.w[t], wb) == 0;
            free(s->bytes[r][t]);
            free(s->bytes[r][NT + t]);
        }
    return same;
}

/* Runs one step on every rank and checks that all refused with `want`
 * (want_other on the ranks that learn of it from the reductions; 0: any
 * refusal) and changed nothing. */
static void refused(rank_run *runs, int ranks, int want, int want_other, int culprit, const char *what) {
    snapshot s;
    int r;
    take(&s, runs, ranks);
    for (r = 0; r < ranks; ++r) runs[r].steps = 1;
    run_ranks(runs, ranks);
    for (r = 0; r < ranks; ++r) {
        int expect = r == culprit || culprit < 0 ? want : want_other;
        if (runs[r].status != expect) {
            fprintf(stderr, "%s: rank %d returned %d, expected %d: %s\n", what, r, runs[r].status, expect,
                    mlorc_last_error(runs[r].opt));
        }
        CHECK(runs[r].status == expect);
    }
    CHECK(unchanged(&s, runs, ranks));
}

static void refusals(void) {
    static const config c = {"MLorc-AdamW", MLORC_RULE_ADAMW, 1, MLORC_STORAGE_AUTO, 0, 0};
    rank_run runs[MAX_RANKS];
    world w;
    int r;
    long call, calls_per_step;
    start_ranks(runs, &w, &c, 2);
    for (r = 0; r < 2; ++r) runs[r].steps = 3;
    run_ranks(runs, 2);
    for (r = 0; r < 2; ++r) CHECK(runs[r].status == MLORC_OK);
    calls_per_step = w.calls / 3;

    /* A shard description that does not match the state (rank 1, tensor 0). */
    runs[1].z.s[0].row_begin -= 1;
    refused(runs, 2, MLORC_ERROR_STATE_MISMATCH, MLORC_ERROR_STATE_MISMATCH, 1, "mismatched shard");
    CHECK(strstr(mlorc_last_error(runs[1].opt), "tensor 0") != NULL);
    CHECK(strstr(mlorc_last_error(runs[0].opt), "another rank") != NULL);
    runs[1].z.s[0].row_begin += 1;

    /* A shard out of range (rank 0, tensor 1). */
    runs[0].z.s[1].global_rows = 10;
    refused(runs, 2, MLORC_ERROR_INVALID_ARGUMENT, MLORC_ERROR_INVALID_ARGUMENT, 0, "shard out of range");
    runs[0].z.s[1].global_rows = ROWS[1];

    /* The reducer fails at each call of a step, on every rank. */
    for (call = 0; call < calls_per_step; ++call) {
        w.fail_at = w.calls + call;
        refused(runs, 2, MLORC_ERROR_REDUCTION, MLORC_ERROR_REDUCTION, -1, "reducer failure");
        w.fail_at = -1;
    }

    /* A non-finite gradient on rank 1 only (tensor 3, which rank 1 holds rows of;
     * OrthoGrad's sums see it in the first reduction). */
    {
        int step;
        snapshot s;
        take(&s, runs, 2);
        for (r = 0; r < 2; ++r) runs[r].steps = 1;
        {
            pthread_t th[2];
            for (r = 0; r < 2; ++r) {
                shard_gradients(&runs[r].z, 3);
            }
            runs[1].z.g[3][5] = NAN;
            (void)step;
            runs[0].keep_grads = runs[1].keep_grads = 1;
            for (r = 0; r < 2; ++r) CHECK(pthread_create(&th[r], NULL, run_steps, &runs[r]) == 0);
            for (r = 0; r < 2; ++r) pthread_join(th[r], NULL);
        }
        for (r = 0; r < 2; ++r) CHECK(runs[r].status == MLORC_ERROR_NON_FINITE);
        CHECK(unchanged(&s, runs, 2));
        /* Without OrthoGrad the sketch phase finds it. */
        for (r = 0; r < 2; ++r) CHECK_OK(mlorc_set_param(runs[r].opt, MLORC_PARAM_ORTHOGRAD, 0));
        refused(runs, 2, MLORC_ERROR_NON_FINITE, MLORC_ERROR_NON_FINITE, -1, "non-finite gradient on one rank");
        CHECK(strstr(mlorc_last_error(runs[0].opt), "another rank") != NULL);
        runs[0].keep_grads = runs[1].keep_grads = 0;
    }
    /* The state of a shard is refused by mlorc_step. */
    CHECK(mlorc_step(runs[0].opt, runs[0].z.t, NT, 1e-2) == MLORC_ERROR_STATE_MISMATCH);
    CHECK(strstr(mlorc_last_error(runs[0].opt), "mlorc_step_sharded") != NULL);
    /* Without a reducer, a shard that is not the whole matrix is refused. */
    CHECK_OK(mlorc_set_reducer(runs[0].opt, NULL, NULL));
    CHECK(mlorc_step_sharded(runs[0].opt, runs[0].z.t, runs[0].z.s, NT, 1e-2, NULL, 0) == MLORC_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(mlorc_last_error(runs[0].opt), "no reducer") != NULL);
    stop_ranks(runs, &w, 2);

    /* Shards that overlap across ranks: rows [0, 20) and [15, 40) of 40. */
    {
        mlorc_optimizer *opt[2];
        rank_run rr[2];
        world w2;
        start_ranks(rr, &w2, &c, 2);
        for (r = 0; r < 2; ++r) {
            mlorc_tensor_layout layout = {r == 0 ? 20 : 25, COLS[0], MLORC_DTYPE_F32, MLORC_STORAGE_AUTO};
            opt[r] = rr[r].opt;
            rr[r].z.s[0].row_begin = r == 0 ? 0 : 15;
            free(rr[r].z.state[0]);
            free(rr[r].z.w[0]);
            free(rr[r].z.g[0]);
            CHECK_OK(mlorc_state_size_sharded(opt[r], &layout, &rr[r].z.s[0], &rr[r].z.bytes[0]));
            rr[r].z.state[0] = xcalloc(rr[r].z.bytes[0]);
            CHECK_OK(mlorc_state_init_sharded(opt[r], &layout, &rr[r].z.s[0], 100, NULL, rr[r].z.state[0], rr[r].z.bytes[0]));
            rr[r].z.w[0] = xcalloc((size_t)(layout.rows * COLS[0]) * 4);
            rr[r].z.g[0] = xcalloc((size_t)(layout.rows * COLS[0]) * 4);
            rr[r].z.t[0].param = rr[r].z.w[0];
            rr[r].z.t[0].grad = rr[r].z.g[0];
            rr[r].z.t[0].state = rr[r].z.state[0];
            rr[r].z.t[0].state_bytes = rr[r].z.bytes[0];
            rr[r].z.t[0].rows = layout.rows;
        }
        refused(rr, 2, MLORC_ERROR_INVALID_ARGUMENT, MLORC_ERROR_INVALID_ARGUMENT, -1, "overlapping shards");
        CHECK(strstr(mlorc_last_error(opt[0]), "partition") != NULL);
        stop_ranks(rr, &w2, 2);
    }
}

static void unsupported(void) {
    static const int rules[1] = {MLORC_RULE_GALORE_ADAMW};
    static const char *names[1] = {"GaLore"};
    int k;
    for (k = 0; k < 1; ++k) {
        mlorc_optimizer *opt;
        mlorc_tensor_layout layout = {20, 24, MLORC_DTYPE_F32, MLORC_STORAGE_AUTO};
        mlorc_shard s = {40, 0};
        size_t bytes;
        unsigned char state[16];
        mlorc_tensor t;
        CHECK_OK(mlorc_create(&opt, rules[k]));
        CHECK(mlorc_state_size_sharded(opt, &layout, &s, &bytes) == MLORC_ERROR_INVALID_ARGUMENT);
        CHECK(strstr(mlorc_last_error(opt), names[k]) != NULL);
        CHECK(mlorc_state_init_sharded(opt, &layout, &s, 1, NULL, state, sizeof state) == MLORC_ERROR_INVALID_ARGUMENT);
        memset(&t, 0, sizeof t);
        CHECK(mlorc_step_sharded(opt, &t, &s, 1, 1e-3, NULL, 0) == MLORC_ERROR_INVALID_ARGUMENT);
        CHECK(strstr(mlorc_last_error(opt), names[k]) != NULL);
        mlorc_free(opt);
    }
    {
        mlorc_optimizer *opt;
        mlorc_tensor_layout layout = {20, 24, MLORC_DTYPE_BF16, MLORC_STORAGE_AUTO};
        mlorc_shard s = {40, 0};
        size_t bytes;
        CHECK_OK(mlorc_create(&opt, MLORC_RULE_CAME));  /* its sharded step is fp32 only */
        CHECK(mlorc_state_size_sharded(opt, &layout, &s, &bytes) == MLORC_ERROR_UNSUPPORTED_DTYPE);
        mlorc_free(opt);
    }
}

int main(void) {
    static const config cs[4] = {{"MLorc-AdamW", MLORC_RULE_ADAMW, 0, MLORC_STORAGE_AUTO, 0, 0},
                                 {"MLorc-Lion", MLORC_RULE_LION, 0, MLORC_STORAGE_AUTO, 0, 0},
                                 {"AdamW+orthograd", MLORC_RULE_ADAMW, 1, MLORC_STORAGE_AUTO, 0, 0},
                                 {"MLorc-ADOPT", MLORC_RULE_ADOPT, 0, MLORC_STORAGE_AUTO, 0, 0}};
    static const config half[4] = {{"MLorc-AdamW bf16", MLORC_RULE_ADAMW, 0, MLORC_STORAGE_AUTO, 1, 0},
                                   {"MLorc-Lion bf16, master", MLORC_RULE_LION, 0, MLORC_STORAGE_AUTO, 1, 1},
                                   {"AdamW dense bf16", MLORC_RULE_ADAMW, 0, MLORC_STORAGE_DENSE, 1, 0},
                                   {"AdamW dense bf16, master", MLORC_RULE_ADAMW, 0, MLORC_STORAGE_DENSE, 1, 1}};
    int k;
    printf("sharded steps, threads as ranks:\n");
    for (k = 0; k < 4; ++k) {
        compare_with_reference(&cs[k], 2);
        compare_with_reference(&cs[k], 3);
    }
    for (k = 0; k < 4; ++k) {
        compare_with_reference(&half[k], 2);
        compare_with_reference(&half[k], 3);
    }
    count_values();
    whole_matrix_is_mlorc_step();
    refusals();
    unsupported();
    printf("sharded_test: %lu checks passed\n", checks_run);
    return 0;
}
