/*
 * sharded_rules_test.c - mlorc_step_sharded for the rules outside the
 * MomentPlan family (CAME, MoFaSGD) and for the D-adaptation rules (Prodigy,
 * DAdapt-Lion: a group state every rank holds and advances alike), with
 * threads playing the ranks.
 *
 * The same in-process reducer as sharded_test.c (a barrier; every rank sums
 * the ranks' buffers in rank order, so all get the same bits). The model:
 * matrices whose row counts do not divide by the rank count, one with a rank
 * holding no rows, a row vector (1 x n) on rank 0 only and a column vector
 * (n x 1, as the Python binding passes 1-D parameters) split by rows. Checks:
 *  - 2 and 3 ranks, CAME with MLorc and dense first moments, with a power
 *    iteration, over 20 steps: the sharded weights equal the unsharded
 *    mlorc_step run within TOLERANCE (derived in sharded_test.c; the same
 *    reasoning holds here, see below), and the replicated parts of the state
 *    (s, Vt, the column statistics c and C) are bit-identical on every rank;
 *  - a whole-matrix shard without a reducer is mlorc_step bit for bit;
 *  - refusals on every rank with every byte unchanged: a non-finite gradient
 *    on one rank, the reducer failing at each of its calls, settings that
 *    differ between ranks. A rank holds exactly one row of a matrix at 3
 *    ranks (CAME keeps that shard's R and C: its layout follows the matrix).
 * MoFaSGD likewise (dense storage gathers the new momentum: its exact SVD),
 * with gradients of full numerical rank (see full_rank_gradients).
 * Prodigy and DAdapt-Lion likewise, with statistics strides 1 and 11 (whose
 * samples fall unevenly on the shards): the group states are bit-identical
 * on every rank and their estimate d is the unsharded run's within
 * TOLERANCE; refusals also for a damaged group state on one rank and for
 * ranks whose group states differ.
 */
#define _POSIX_C_SOURCE 200809L
#include "mlorc.h"
#include "../support/check.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RANKS 3
#define NT 5      /* tensors */
#define STEPS 20
#define LR 1e-2


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

static const int64_t ROWS[NT] = {40, 33, 1, 20, 21};
static const int64_t COLS[NT] = {24, 20, 24, 37, 1};

/* The first row of each rank's shard: uneven, rank 1 has no rows of tensor 3
 * and exactly one row of tensor 1 at 3 ranks, the row vector lives on rank 0. */
static int64_t row_begin(int ranks, int rank, int t) {
    static const int64_t two[NT][3] = {{0, 17, 40}, {0, 19, 33}, {0, 1, 1}, {0, 9, 20}, {0, 10, 21}};
    static const int64_t three[NT][4] = {{0, 13, 27, 40}, {0, 10, 11, 33}, {0, 1, 1, 1}, {0, 7, 7, 20}, {0, 7, 14, 21}};
    return ranks == 1 ? (rank == 0 ? 0 : ROWS[t]) : ranks == 2 ? two[t][rank] : three[t][rank];
}

static float initial_weight(int t, int64_t i, int64_t j) {
    return (float)(0.1 * sin(0.9 * (double)i + 1.7 * (double)j + (double)t));
}

/* MoFaSGD's runs add a hashed term, so that the gradients have full
 * numerical rank: its update U·Vᵀ weighs every singular direction above eps
 * alike, and the directions of singular values at rounding level (which a
 * smooth gradient has) are rounding noise, in either run. */
static int full_rank_gradients;

/* Gradients depend on (tensor, step, element) only, not on the weights: the
 * two runs then differ only by their own rounding (no feedback). */
static float gradient(int t, int step, int64_t i, int64_t j) {
    double x = sin(0.31 * (double)i + 0.17 * (double)j * (double)(t + 1) + 0.5 * step)
             + 0.5 * cos(0.05 * (double)(i * j) - 0.3 * step + t) + 0.2 * (double)((i + 3 * j) % 7) / 7.0;
    if (full_rank_gradients) {
        uint64_t h = (uint64_t)(i * 1000003 + j * 7919 + step * 104729 + t * 15485863) * 0x9E3779B97F4A7C15ull;
        x += 0.5 * ((double)(h >> 11) / 9007199254740992.0 - 0.5);
    }
    return (float)x;
}

typedef struct config {
    const char *name;
    int rule, storage, power_iterations;
    int stats_stride;  /* D-adaptation rules (lr 1, d0 1e-3, a group state); 0 for the others */
} config;

static int adapts(const config *c) { return c->stats_stride > 0; }
static double lr_of(const config *c) { return adapts(c) ? 1.0 : LR; }

static mlorc_optimizer *make(const config *c) {
    mlorc_optimizer *opt;
    CHECK_OK(mlorc_create(&opt, c->rule));
    CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_RANK, 4));
    if (adapts(c)) {
        CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_STATS_STRIDE, c->stats_stride));
        CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_D0, 1e-3));
    }
    CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_POWER_ITERATIONS, c->power_iterations));
    CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_WEIGHT_DECAY, 0.01));
    full_rank_gradients = c->rule == MLORC_RULE_MOFASGD;
    return opt;
}

/* One rank's tensors: its rows of every matrix. */
typedef struct shard_set {
    float *w[NT], *g[NT];
    unsigned char *state[NT];
    size_t bytes[NT];
    mlorc_tensor t[NT];
    mlorc_shard s[NT];
} shard_set;

static void shard_init(shard_set *z, mlorc_optimizer *opt, const config *c, int ranks, int rank) {
    int t;
    for (t = 0; t < NT; ++t) {
        int64_t b = row_begin(ranks, rank, t), rows = row_begin(ranks, rank + 1, t) - b, i, j;
        mlorc_tensor_layout layout = {rows, COLS[t], MLORC_DTYPE_F32, c->storage};
        z->s[t].global_rows = ROWS[t];
        z->s[t].row_begin = b;
        CHECK_OK(mlorc_state_size_sharded(opt, &layout, &z->s[t], &z->bytes[t]));
        z->state[t] = xcalloc(z->bytes[t]);
        CHECK_OK(mlorc_state_init_sharded(opt, &layout, &z->s[t], 100 + (uint64_t)t, NULL, z->state[t], z->bytes[t]));
        z->w[t] = rows ? xcalloc((size_t)(rows * COLS[t]) * 4) : NULL;
        z->g[t] = rows ? xcalloc((size_t)(rows * COLS[t]) * 4) : NULL;
        for (i = 0; i < rows; ++i)
            for (j = 0; j < COLS[t]; ++j) z->w[t][i * COLS[t] + j] = initial_weight(t, b + i, j);
        memset(&z->t[t], 0, sizeof z->t[t]);
        z->t[t].param = z->w[t];
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
    for (t = 0; t < NT; ++t) { free(z->w[t]); free(z->g[t]); free(z->state[t]); }
}

/* ------------------------------------------------------------ rank threads */

typedef struct rank_run {
    rank_ctx ctx;
    const config *c;
    unsigned char group[MLORC_GROUP_STATE_BYTES];  /* D-adaptation rules */
    int steps;
    shard_set z;
    mlorc_optimizer *opt;
    int status;           /* the last step's status */
    int keep_grads;       /* 1: step the gradients already in place */
    int first_step;       /* the gradients' step index of the first step */
} rank_run;

static void *run_steps(void *arg) {
    rank_run *r = arg;
    int step;
    r->status = MLORC_OK;
    for (step = 0; step < r->steps && r->status == MLORC_OK; ++step) {
        if (!r->keep_grads) shard_gradients(&r->z, r->first_step + step);
        r->status = mlorc_step_sharded(r->opt, r->z.t, r->z.s, NT, lr_of(r->c), adapts(r->c) ? r->group : NULL,
                                       adapts(r->c) ? sizeof r->group : 0);
    }
    r->first_step += step;
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
        memset(&runs[r], 0, sizeof runs[r]);
        runs[r].ctx.w = w;
        runs[r].ctx.rank = r;
        runs[r].c = c;
        runs[r].opt = make(c);
        if (adapts(c)) CHECK_OK(mlorc_group_state_init(runs[r].opt, runs[r].group, sizeof runs[r].group));
        CHECK_OK(mlorc_set_reducer(runs[r].opt, thread_sum, &runs[r].ctx));
        shard_init(&runs[r].z, runs[r].opt, c, ranks, r);
    }
}

static void stop_ranks(rank_run *runs, world *w, int ranks) {
    int r;
    for (r = 0; r < ranks; ++r) { shard_free(&runs[r].z); mlorc_free(runs[r].opt); }
    pthread_barrier_destroy(&w->barrier);
}

/* The unsharded run: one rank, whole shards, no reducer (= mlorc_step, or
 * mlorc_step_group with the D-adaptation rules' group state `group`). */
static void reference(const config *c, shard_set *z, int steps, int through_step, unsigned char *group) {
    mlorc_optimizer *opt = make(c);
    unsigned char own[MLORC_GROUP_STATE_BYTES];
    void *g = adapts(c) ? (group ? group : own) : NULL;
    size_t gb = g ? MLORC_GROUP_STATE_BYTES : 0;
    int step;
    shard_init(z, opt, c, 1, 0);
    if (g) CHECK_OK(mlorc_group_state_init(opt, g, gb));
    for (step = 0; step < steps; ++step) {
        shard_gradients(z, step);
        if (through_step) CHECK_OK(mlorc_step_group(opt, z->t, NT, lr_of(c), g, gb));
        else CHECK_OK(mlorc_step_sharded(opt, z->t, z->s, NT, lr_of(c), g, gb));
    }
    mlorc_free(opt);
}

static double estimate(const unsigned char *group) {
    mlorc_group_info info;
    CHECK_OK(mlorc_group_state_inspect(group, MLORC_GROUP_STATE_BYTES, &info));
    return info.d;
}

/* ---------------------------------------------------- the state's parts */

static int info_rule_is_came(const shard_set *z, int t) {
    mlorc_state_info info;
    CHECK_OK(mlorc_state_inspect(z->state[t], z->bytes[t], &info));
    return info.rule == MLORC_RULE_CAME;
}

/* MoFaSGD's payload: the momentum (dense, or U, s, Vt). CAME's: the first moment (dense rows x cols, or U rows x r, s, Vt),
 * then r (rows), c (cols) and, for a matrix, R (rows), C (cols). Prodigy's: two moments, then its statistics. */
typedef struct parts { const unsigned char *replicated_factors, *second_factors, *c, *big_c; size_t factor_bytes; } parts;

static parts state_parts(const shard_set *z, int t) {
    mlorc_state_info info;
    parts p;
    int64_t m = z->t[t].rows, n = COLS[t], moment;
    int vector = ROWS[t] == 1 || n == 1, came = info_rule_is_came(z, t);
    CHECK_OK(mlorc_state_inspect(z->state[t], z->bytes[t], &info));
    moment = info.storage == MLORC_STORAGE_LOWRANK ? info.rank * (m + n + 1) : m * n;
    p.replicated_factors = info.storage == MLORC_STORAGE_LOWRANK ? z->state[t] + 128 + 4 * m * info.rank : NULL;
    p.factor_bytes = info.storage == MLORC_STORAGE_LOWRANK ? (size_t)(4 * info.rank * (n + 1)) : 0;
    p.second_factors = info.storage == MLORC_STORAGE_LOWRANK && info.rule == MLORC_RULE_PRODIGY
        ? p.replicated_factors + 4 * moment : NULL;
    p.c = came ? z->state[t] + 128 + 4 * (moment + m) : NULL;
    p.big_c = vector || !came ? NULL : z->state[t] + 128 + 4 * (moment + 2 * m + n);
    return p;
}

/* TOLERANCE: max |W_sharded - W_ref| over a tensor, relative to the largest
 * movement max |W_ref - W_0| of that tensor: the 3e-3 of sharded_test.c,
 * whose derivation carries over. Both runs compute the same step and differ
 * by rounding only: (a) the sums over rows (column sums of G² and of the
 * instability, Σ r, Σ R, Σ u², YᵀY, QᵀM) split at shard boundaries and
 * reassociated, fp32 partial sums of <= 40 terms, relative error <= 40 u
 * (u = 2^-24); the factored statistics enter as inverse square roots, which
 * halve relative errors; (b) Q from CholeskyQR2 instead of Householder QR
 * (the truncated SVD of QQᵀM does not depend on the basis, only rounding
 * remains) and (c) the small SVD of a perturbed B: per step a relative error
 * e <= 10·l·40u = 1e-4 in the worst case (l = 4), carried by the momentum
 * (weight beta1 < 1) to <= T·e after T steps, so the weights, a sum of T
 * steps of lr·M·A·B, differ by <= 1.5·T·e = 3e-3 of their movement. The
 * clipping scale is continuous in RMS(u) (a max), so no flip as for Lion's
 * sign. Measured (printed below). */
#define TOLERANCE 3e-3

static void compare_with_reference(const config *c, int ranks) {
    rank_run runs[MAX_RANKS];
    world w;
    shard_set ref;
    int t, r;
    double worst = 0;
    unsigned char ref_group[MLORC_GROUP_STATE_BYTES];
    reference(c, &ref, STEPS, 1, ref_group);
    start_ranks(runs, &w, c, ranks);
    for (r = 0; r < ranks; ++r) runs[r].steps = STEPS;
    run_ranks(runs, ranks);
    for (r = 0; r < ranks; ++r) {
        if (runs[r].status != MLORC_OK) fprintf(stderr, "rank %d: %s\n", r, mlorc_last_error(runs[r].opt));
        CHECK(runs[r].status == MLORC_OK);
    }
    for (t = 0; t < NT; ++t) {
        double diff = 0, moved = 0;
        parts p0 = state_parts(&runs[0].z, t);
        for (r = 0; r < ranks; ++r) {
            int64_t i, j, b = runs[r].z.s[t].row_begin;
            parts pr = state_parts(&runs[r].z, t);
            for (i = 0; i < runs[r].z.t[t].rows; ++i)
                for (j = 0; j < COLS[t]; ++j) {
                    double x = runs[r].z.w[t][i * COLS[t] + j], y = ref.w[t][(b + i) * COLS[t] + j];
                    double y0 = initial_weight(t, b + i, j);
                    if (fabs(x - y) > diff) diff = fabs(x - y);
                    if (fabs(y - y0) > moved) moved = fabs(y - y0);
                }
            /* s, Vt, c and C: bit-identical on every rank (a row vector's
             * shards without rows hold c too). */
            if (p0.c) CHECK(memcmp(p0.c, pr.c, (size_t)(4 * COLS[t])) == 0);
            if (p0.big_c)
                CHECK(memcmp(p0.big_c, pr.big_c, (size_t)(4 * COLS[t])) == 0);
            if (p0.replicated_factors) CHECK(memcmp(p0.replicated_factors, pr.replicated_factors, p0.factor_bytes) == 0);
            if (p0.second_factors) CHECK(memcmp(p0.second_factors, pr.second_factors, p0.factor_bytes) == 0);
            /* The group state: the same bits on every rank. */
            if (adapts(c)) CHECK(memcmp(runs[0].group, runs[r].group, MLORC_GROUP_STATE_BYTES) == 0);
        }
        CHECK(moved > 0);
        if (diff / moved > worst) worst = diff / moved;
        if (diff > TOLERANCE * moved) fprintf(stderr, "tensor %d: %.3e of %.3e\n", t, diff, moved);
        CHECK(diff <= TOLERANCE * moved);
    }
    if (adapts(c)) {
        /* The estimate: sums over the same samples, reassociated, of inputs
         * that differ by the weights' rounding (above): within TOLERANCE. */
        double d = estimate(runs[0].group), d_ref = estimate(ref_group);
        printf("  %-26s %d ranks: d = %.6e, unsharded %.6e (relative %.1e)\n", c->name, ranks, d, d_ref,
               fabs(d - d_ref) / d_ref);
        CHECK(d > 1e-3);  /* it moved from d0 */
        CHECK(fabs(d - d_ref) <= TOLERANCE * d_ref);
    }
    printf("  %-26s %d ranks: max |W_sharded - W| / max |W - W0| = %.2e (tolerance %.0e), %ld reducer calls\n",
           c->name, ranks, worst, TOLERANCE, w.calls);
    stop_ranks(runs, &w, ranks);
    shard_free(&ref);
}

/* ------------------------------------------------------ values exchanged */

/* One step at 2 ranks: the values reduced equal the formula of mlorc.h
 * (mlorc_step_sharded): 16 + 2n per CAME tensor, (1 + q)(l(l+1) + l n) more
 * per MLorc first moment, 2 per step. */
static void count_values(const config *c) {
    rank_run runs[MAX_RANKS];
    world w;
    long expected = 2, l = 4, q = c->power_iterations, calls = 5;
    int t, r;
    start_ranks(runs, &w, c, 2);
    for (r = 0; r < 2; ++r) runs[r].steps = 1;
    run_ranks(runs, 2);
    if (adapts(c)) expected += 2;  /* the estimate's numerator and denominator */
    for (t = 0; t < NT; ++t) {
        mlorc_state_info info;
        CHECK_OK(mlorc_state_inspect(runs[0].z.state[t], runs[0].z.bytes[t], &info));
        if (adapts(c)) {
            /* as AdamW/Lion (mlorc.h): 18 values per tensor, k moments of sketch products */
            long k = c->rule == MLORC_RULE_PRODIGY ? 2 : 1;
            expected += 18 + (info.storage == MLORC_STORAGE_LOWRANK ? k * (1 + q) * (l * (l + 1) + l * COLS[t]) : 0);
            if (info.storage == MLORC_STORAGE_LOWRANK) calls = 5 + 3 * q;
            else if (t == 0) calls = 3;
            continue;
        }
        if (c->rule == MLORC_RULE_MOFASGD) {
            /* the first step: the randomized SVD of G, or the gathered dense momentum */
            expected += 11 + (info.storage == MLORC_STORAGE_LOWRANK ? (1 + q) * (l * (l + 1) + l * COLS[t])
                                                                     : ROWS[t] * COLS[t]);
            /* 3 calls (agreement, products, verify), 5 + 3q with a low-rank tensor */
            if (info.storage == MLORC_STORAGE_LOWRANK) calls = 5 + 3 * q;
            else if (t == 0) calls = 3;
            continue;
        }
        expected += 16 + 2 * COLS[t];
        if (info.storage == MLORC_STORAGE_LOWRANK) {
            expected += (1 + q) * (l * (l + 1) + l * COLS[t]);
            calls = 7 + 3 * q;
        }
    }
    printf("  one %s step of %d tensors: %ld reducer calls, %ld doubles (formula %ld)\n", c->name, NT, w.calls,
           w.values, expected);
    if (w.calls != calls) fprintf(stderr, "%ld calls, expected %ld\n", w.calls, calls);
    CHECK(w.calls == calls);
    CHECK(w.values == expected);
    stop_ranks(runs, &w, 2);
}

/* ------------------------------------------------------------ whole shard */

static void whole_matrix_is_mlorc_step(const config *c) {
    shard_set a, b;
    int t;
    unsigned char ga[MLORC_GROUP_STATE_BYTES], gb[MLORC_GROUP_STATE_BYTES];
    reference(c, &a, 5, 1, ga);
    reference(c, &b, 5, 0, gb);
    if (adapts(c)) CHECK(memcmp(ga, gb, sizeof ga) == 0);
    for (t = 0; t < NT; ++t) {
        CHECK(memcmp(a.w[t], b.w[t], (size_t)(ROWS[t] * COLS[t]) * 4) == 0);
        CHECK(a.bytes[t] == b.bytes[t] && memcmp(a.state[t], b.state[t], a.bytes[t]) == 0);
    }
    shard_free(&a);
    shard_free(&b);
}

/* ------------------------------------------------------------- refusals */

typedef struct snapshot {
    unsigned char *bytes[MAX_RANKS][2 * NT];
    unsigned char group[MAX_RANKS][MLORC_GROUP_STATE_BYTES];
} snapshot;

static void take(snapshot *s, rank_run *runs, int ranks) {
    int r, t;
    for (r = 0; r < ranks; ++r) memcpy(s->group[r], runs[r].group, MLORC_GROUP_STATE_BYTES);
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
    for (r = 0; r < ranks; ++r) same &= memcmp(s->group[r], runs[r].group, MLORC_GROUP_STATE_BYTES) == 0;
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

/* One step on every rank: all refuse with `want` (want_other on the ranks
 * that learn of it from the reductions) and nothing changes. */
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
        runs[r].first_step -= 1;  /* the same gradients next time */
    }
    CHECK(unchanged(&s, runs, ranks));
}

static void refusals(const config *c, int ranks) {
    rank_run runs[MAX_RANKS];
    world w;
    int r;
    long call, calls_per_step;
    start_ranks(runs, &w, c, ranks);
    for (r = 0; r < ranks; ++r) runs[r].steps = 3;
    run_ranks(runs, ranks);
    for (r = 0; r < ranks; ++r) CHECK(runs[r].status == MLORC_OK);
    calls_per_step = w.calls / 3;

    /* The reducer fails at each call of a step, on every rank. */
    for (call = 0; call < calls_per_step; ++call) {
        w.fail_at = w.calls + call;
        refused(runs, ranks, MLORC_ERROR_REDUCTION, MLORC_ERROR_REDUCTION, -1, "reducer failure");
        w.fail_at = -1;
    }

    /* A non-finite gradient on the last rank only (tensor 0's last rows). */
    for (r = 0; r < ranks; ++r) {
        shard_gradients(&runs[r].z, runs[r].first_step);
        runs[r].keep_grads = 1;
    }
    runs[ranks - 1].z.g[0][5] = NAN;
    refused(runs, ranks, MLORC_ERROR_NON_FINITE, MLORC_ERROR_NON_FINITE, ranks - 1, "non-finite gradient on one rank");
    CHECK(strstr(mlorc_last_error(runs[0].opt), "another rank") != NULL);
    CHECK(strstr(mlorc_last_error(runs[ranks - 1].opt), "another rank") == NULL);
    /* ... and in the column vector, which the first rank holds rows of. */
    runs[ranks - 1].z.g[0][5] = 0.5f;
    runs[0].z.g[4][2] = INFINITY;
    refused(runs, ranks, MLORC_ERROR_NON_FINITE, MLORC_ERROR_NON_FINITE, 0, "infinite gradient on one rank");
    runs[0].z.g[4][2] = 0.5f;
    for (r = 0; r < ranks; ++r) runs[r].keep_grads = 0;

    /* Settings that decide replicated results differ on one rank. */
    CHECK_OK(mlorc_set_param(runs[1].opt, MLORC_PARAM_SEED, 7));
    refused(runs, ranks, MLORC_ERROR_STATE_MISMATCH, MLORC_ERROR_STATE_MISMATCH, -1, "settings differ");
    CHECK_OK(mlorc_set_param(runs[1].opt, MLORC_PARAM_SEED, 0));

    if (adapts(c)) {
        unsigned char saved[MLORC_GROUP_STATE_BYTES];
        memcpy(saved, runs[1].group, sizeof saved);
        /* A damaged group state on one rank: its status there and everywhere. */
        runs[1].group[30] ^= 1;
        refused(runs, ranks, MLORC_ERROR_STATE_CORRUPTED, MLORC_ERROR_STATE_CORRUPTED, 1, "damaged group state");
        CHECK(strstr(mlorc_last_error(runs[0].opt), "another rank") != NULL);
        /* Valid group states that differ (one rank's is fresh). */
        CHECK_OK(mlorc_group_state_init(runs[1].opt, runs[1].group, sizeof runs[1].group));
        refused(runs, ranks, MLORC_ERROR_STATE_MISMATCH, MLORC_ERROR_STATE_MISMATCH, -1, "group states differ");
        memcpy(runs[1].group, saved, sizeof saved);
    }

    /* Still steps after the refusals. */
    for (r = 0; r < ranks; ++r) runs[r].steps = 1;
    run_ranks(runs, ranks);
    for (r = 0; r < ranks; ++r) CHECK(runs[r].status == MLORC_OK);
    printf("  %-26s %d ranks: refusals leave every byte unchanged (%ld reducer calls per step)\n", c->name, ranks,
           calls_per_step);
    stop_ranks(runs, &w, ranks);
}

/* One row of a matrix on a rank: CAME's state keeps a matrix's statistics
 * (r, c, R, C: 2 (1 + n) floats after the moment), not a vector's. */
static void one_row_shard(void) {
    mlorc_optimizer *opt;
    mlorc_tensor_layout layout = {1, 24, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
    mlorc_shard s = {40, 39};
    size_t bytes;
    CHECK_OK(mlorc_create(&opt, MLORC_RULE_CAME));
    CHECK_OK(mlorc_state_size_sharded(opt, &layout, &s, &bytes));
    CHECK(bytes == MLORC_STATE_HEADER_BYTES + 4 * (24 + 2 * (1 + 24)));
    mlorc_free(opt);
}

int main(void) {
    static const config cs[10] = {{"CAME (MLorc first moment)", MLORC_RULE_CAME, MLORC_STORAGE_AUTO, 0, 0},
                                 {"CAME dense", MLORC_RULE_CAME, MLORC_STORAGE_DENSE, 0, 0},
                                 {"CAME MLorc, 1 power it.", MLORC_RULE_CAME, MLORC_STORAGE_AUTO, 1, 0},
                                 {"MoFaSGD (auto storage)", MLORC_RULE_MOFASGD, MLORC_STORAGE_AUTO, 0, 0},
                                 {"MoFaSGD dense", MLORC_RULE_MOFASGD, MLORC_STORAGE_DENSE, 0, 0},
                                 {"MoFaSGD, 1 power it.", MLORC_RULE_MOFASGD, MLORC_STORAGE_AUTO, 1, 0},
                                 {"Prodigy (auto), stride 1", MLORC_RULE_PRODIGY, MLORC_STORAGE_AUTO, 0, 1},
                                 {"Prodigy dense, stride 11", MLORC_RULE_PRODIGY, MLORC_STORAGE_DENSE, 0, 11},
                                 {"DAdapt-Lion, stride 11", MLORC_RULE_DADAPT_LION, MLORC_STORAGE_AUTO, 0, 11},
                                 {"DAdapt-Lion, 1 power it.", MLORC_RULE_DADAPT_LION, MLORC_STORAGE_AUTO, 1, 1}};
    int k;
    printf("sharded steps of CAME, MoFaSGD, Prodigy and DAdapt-Lion, threads as ranks:\n");
    for (k = 0; k < 10; ++k) {
        compare_with_reference(&cs[k], 2);
        compare_with_reference(&cs[k], 3);
        whole_matrix_is_mlorc_step(&cs[k]);
        count_values(&cs[k]);
    }
    refusals(&cs[0], 2);
    refusals(&cs[2], 3);
    refusals(&cs[1], 3);
    refusals(&cs[3], 2);
    refusals(&cs[4], 3);
    refusals(&cs[6], 3);
    refusals(&cs[7], 2);
    refusals(&cs[8], 2);
    one_row_shard();
    printf("sharded_rules_test: %lu checks passed\n", checks_run);
    return 0;
}
