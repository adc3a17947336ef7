/*
 * state_split_test.c - mlorc_state_split / mlorc_state_join: states cut into
 * rows and a replicated part, and joined back for any row shard.
 *
 * Checks, for MLorc-AdamW, MLorc-Lion, MLorc-ADOPT, dense AdamW and dense
 * ADOPT states after a few mlorc_step calls, and for bf16 states and fp32
 * master weights:
 *  - split then join of the whole matrix gives the state back bit for bit;
 *  - resharding 1 -> 3 -> 2 -> 1 ranks (uneven shards, one rank without
 *    rows) gives the state back bit for bit, and every shard's replicated
 *    part is the whole state's, bit for bit;
 *  - the shard cut from a fresh whole state is mlorc_state_init_sharded's
 *    state of that shard, bit for bit (the layout the sharded step reads);
 *  - refusals with the output buffer untouched and a reason given: a damaged
 *    record, swapped records, records of another step, a damaged or short
 *    replicated part, other global rows, rows outside the matrix, a wrong
 *    record size, a small output, NULL pointers, and a rule whose state has
 *    no row layout (GaLore); CAME and MoFaSGD states split as the others,
 *    and so do Prodigy's and DAdapt-Lion's, whose sampled statistics (every
 *    stride-th element of the matrix) fall unevenly on the rows: strides 1,
 *    3 and 11 (not dividing the 20 columns) and 64 (rows without samples);
 *  - mlorc_state_reshape: a dense state as the state of another shape of the
 *    same elements and back, bit for bit (a CAME vector's r and c swapped
 *    when it is transposed; Prodigy's samples unchanged); refusals
 *    (low-rank, a shard, a CAME matrix or a CAME vector as a matrix, another
 *    element count) with nothing written.
 */
#include "mlorc.h"
#include "../support/check.h"
#include "support/half.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define ROWS 37
#define COLS 20
#define STEPS 5

/* A state with its bytes. */
typedef struct blob { unsigned char *bytes; size_t size; } blob;

/* A handle's configuration and a state of it after STEPS steps. */
typedef struct config {
    const char *name;
    int rule, storage, dtype, master, bf16_state;
    int stats_stride;  /* D-adaptation rules (they step with a group state); 0 for the others */
} config;

static mlorc_optimizer *make(const config *c) {
    mlorc_optimizer *opt;
    CHECK_OK(mlorc_create(&opt, c->rule));
    CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_RANK, 3));
    if (c->stats_stride) CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_STATS_STRIDE, c->stats_stride));
    if (c->master) CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_MASTER_WEIGHTS, 1));
    if (c->bf16_state) CHECK_OK(mlorc_set_param(opt, MLORC_PARAM_STATE_DTYPE, MLORC_DTYPE_BF16));
    return opt;
}

/* A fresh state (steps = 0) or one after `steps` steps of a fixed gradient
 * sequence. */
static blob trained(const config *c, int steps) {
    mlorc_optimizer *opt = make(c);
    mlorc_tensor_layout layout = {ROWS, COLS, c->dtype, c->storage};
    size_t elem = c->dtype == MLORC_DTYPE_F32 ? 4 : 2;
    unsigned char *w = xcalloc(ROWS * COLS * elem), *g = xcalloc(ROWS * COLS * elem);
    unsigned char group[MLORC_GROUP_STATE_BYTES];
    blob s;
    int step, e;
    for (e = 0; e < ROWS * COLS; ++e) {
        float x = (float)(0.1 * sin(0.7 * e));
        if (elem == 4) memcpy(w + 4 * e, &x, 4);
        else { uint16_t b = f32_to_bf16_rne(x); memcpy(w + 2 * e, &b, 2); }
    }
    CHECK_OK(mlorc_state_size(opt, &layout, &s.size));
    s.bytes = xcalloc(s.size);
    CHECK_OK(mlorc_state_init_with_param(opt, &layout, 77, w, s.bytes, s.size));
    if (c->stats_stride) CHECK_OK(mlorc_group_state_init(opt, group, sizeof group));
    for (step = 0; step < steps; ++step) {
        mlorc_tensor t;
        for (e = 0; e < ROWS * COLS; ++e) {
            float x = (float)(sin(0.31 * e + step) + 0.3 * cos(0.05 * e * (step + 1)));
            if (elem == 4) memcpy(g + 4 * e, &x, 4);
            else { uint16_t b = f32_to_bf16_rne(x); memcpy(g + 2 * e, &b, 2); }
        }
        memset(&t, 0, sizeof t);
        t.param = w;
        t.grad = g;
        t.state = s.bytes;
        t.state_bytes = s.size;
        t.rows = ROWS;
        t.cols = COLS;
        t.dtype = c->dtype;
        if (c->stats_stride) CHECK_OK(mlorc_step_group(opt, &t, 1, 1.0, group, sizeof group));
        else CHECK_OK(mlorc_step(opt, &t, 1, 1e-2));
    }
    free(w);
    free(g);
    mlorc_free(opt);
    return s;
}

/* A state cut: its records and replicated part. */
typedef struct cut { unsigned char *rows, *shared; size_t row_bytes, shared_bytes; int64_t count; } cut;

static cut split(const blob *s) {
    cut k;
    mlorc_state_info info;
    char why[256];
    CHECK_OK(mlorc_state_inspect(s->bytes, s->size, &info));
    CHECK_OK(mlorc_state_split_size(s->bytes, s->size, &k.row_bytes, &k.shared_bytes, why, sizeof why));
    k.count = info.rows;
    k.rows = xcalloc((size_t)k.count * k.row_bytes);
    k.shared = xcalloc(k.shared_bytes);
    CHECK_OK(mlorc_state_split(s->bytes, s->size, k.count ? k.rows : NULL, (size_t)k.count * k.row_bytes, k.shared,
                               k.shared_bytes, why, sizeof why));
    CHECK(strcmp(why, "") == 0);
    return k;
}

static void cut_free(cut *k) { free(k->rows); free(k->shared); }

/* The state of rows [begin, begin + count) joined from `shared` and `records`. */
static blob join(const unsigned char *shared, size_t shared_bytes, int64_t begin, int64_t count,
                 const unsigned char *records, size_t row_bytes) {
    mlorc_shard shard = {ROWS, begin};
    size_t record_bytes = 0;
    blob s;
    char why[256];
    CHECK_OK(mlorc_state_join_size(shared, shared_bytes, &shard, count, &s.size, &record_bytes, why, sizeof why));
    CHECK(record_bytes == row_bytes);
    s.bytes = xcalloc(s.size);
    CHECK_OK(mlorc_state_join(shared, shared_bytes, &shard, count, count ? records : NULL,
                              (size_t)count * row_bytes, s.bytes, s.size, why, sizeof why));
    return s;
}

/* Reshards `whole` through the shard boundaries of each world in turn (each
 * world's states are split, their records concatenated, and joined for the
 * next world) and back to one state. */
static void reshard(const config *c, const blob *whole) {
    static const int64_t worlds[2][4] = {{0, 13, 13, ROWS}, {0, 20, ROWS, ROWS}};  /* 3 ranks (one empty), 2 */
    cut k = split(whole);
    unsigned char *records = xcalloc(ROWS * k.row_bytes);
    blob back;
    int w, r;
    memcpy(records, k.rows, ROWS * k.row_bytes);
    for (w = 0; w < 2; ++w) {
        int ranks = w == 0 ? 3 : 2;
        for (r = 0; r < ranks; ++r) {
            int64_t begin = worlds[w][r], count = worlds[w][r + 1] - begin;
            blob shard = join(k.shared, k.shared_bytes, begin, count, records + begin * k.row_bytes, k.row_bytes);
            mlorc_state_info info;
            cut piece;
            CHECK_OK(mlorc_state_inspect(shard.bytes, shard.size, &info));
            CHECK(info.rows == count && info.cols == COLS);
            piece = split(&shard);
            /* Every shard's replicated part is the whole state's, bit for bit. */
            CHECK(piece.shared_bytes == k.shared_bytes && memcmp(piece.shared, k.shared, k.shared_bytes) == 0);
            CHECK(piece.row_bytes == k.row_bytes);
            if (count) memcpy(records + begin * k.row_bytes, piece.rows, (size_t)count * k.row_bytes);
            cut_free(&piece);
            free(shard.bytes);
        }
    }
    back = join(k.shared, k.shared_bytes, 0, ROWS, records, k.row_bytes);
    CHECK(back.size == whole->size && memcmp(back.bytes, whole->bytes, whole->size) == 0);
    printf("  %-26s 1 -> 3 -> 2 -> 1 ranks: bit-identical (%zu B per row, %zu B replicated)\n", c->name, k.row_bytes,
           k.shared_bytes);
    free(back.bytes);
    free(records);
    cut_free(&k);
}

/* The shard cut from a fresh whole state is mlorc_state_init_sharded's. */
static void fresh_shard_is_init_sharded(const config *c) {
    blob whole = trained(c, 0);
    cut k = split(&whole);
    mlorc_optimizer *opt = make(c);
    mlorc_tensor_layout layout = {17, COLS, c->dtype, c->storage};
    mlorc_shard shard = {ROWS, 13};
    size_t size;
    unsigned char *init;
    blob joined = join(k.shared, k.shared_bytes, 13, 17, k.rows + 13 * k.row_bytes, k.row_bytes);
    CHECK_OK(mlorc_state_size_sharded(opt, &layout, &shard, &size));
    init = xcalloc(size);
    CHECK_OK(mlorc_state_init_sharded(opt, &layout, &shard, 77, NULL, init, size));
    CHECK(size == joined.size && memcmp(init, joined.bytes, size) == 0);
    free(init);
    free(joined.bytes);
    mlorc_free(opt);
    cut_free(&k);
    free(whole.bytes);
}

static void round_trips(void) {
    static const config configs[] = {
        {"MLorc-AdamW", MLORC_RULE_ADAMW, MLORC_STORAGE_LOWRANK, MLORC_DTYPE_F32, 0, 0, 0},
        {"MLorc-Lion", MLORC_RULE_LION, MLORC_STORAGE_LOWRANK, MLORC_DTYPE_F32, 0, 0, 0},
        {"MLorc-ADOPT", MLORC_RULE_ADOPT, MLORC_STORAGE_LOWRANK, MLORC_DTYPE_F32, 0, 0, 0},
        {"AdamW dense", MLORC_RULE_ADAMW, MLORC_STORAGE_DENSE, MLORC_DTYPE_F32, 0, 0, 0},
        {"ADOPT dense", MLORC_RULE_ADOPT, MLORC_STORAGE_DENSE, MLORC_DTYPE_F32, 0, 0, 0},
        {"MLorc-AdamW bf16, master", MLORC_RULE_ADAMW, MLORC_STORAGE_LOWRANK, MLORC_DTYPE_BF16, 1, 0, 0},
        {"AdamW dense bf16 state", MLORC_RULE_ADAMW, MLORC_STORAGE_DENSE, MLORC_DTYPE_F32, 0, 1, 0},
        {"MLorc-Lion bf16 state", MLORC_RULE_LION, MLORC_STORAGE_LOWRANK, MLORC_DTYPE_BF16, 0, 1, 0},
        {"CAME dense", MLORC_RULE_CAME, MLORC_STORAGE_DENSE, MLORC_DTYPE_F32, 0, 0, 0},
        {"CAME low-rank", MLORC_RULE_CAME, MLORC_STORAGE_LOWRANK, MLORC_DTYPE_F32, 0, 0, 0},
        {"MoFaSGD low-rank", MLORC_RULE_MOFASGD, MLORC_STORAGE_LOWRANK, MLORC_DTYPE_F32, 0, 0, 0},
        {"MoFaSGD dense", MLORC_RULE_MOFASGD, MLORC_STORAGE_DENSE, MLORC_DTYPE_F32, 0, 0, 0},
        {"Prodigy low-rank, stride 1", MLORC_RULE_PRODIGY, MLORC_STORAGE_LOWRANK, MLORC_DTYPE_F32, 0, 0, 1},
        {"Prodigy dense, stride 11", MLORC_RULE_PRODIGY, MLORC_STORAGE_DENSE, MLORC_DTYPE_F32, 0, 0, 11},
        {"Prodigy dense, stride 64", MLORC_RULE_PRODIGY, MLORC_STORAGE_DENSE, MLORC_DTYPE_F32, 0, 0, 64},
        {"Prodigy bf16, master, str. 11", MLORC_RULE_PRODIGY, MLORC_STORAGE_LOWRANK, MLORC_DTYPE_BF16, 1, 0, 11},
        {"DAdapt-Lion low-rank, str. 3", MLORC_RULE_DADAPT_LION, MLORC_STORAGE_LOWRANK, MLORC_DTYPE_F32, 0, 0, 3},
        {"DAdapt-Lion dense, stride 11", MLORC_RULE_DADAPT_LION, MLORC_STORAGE_DENSE, MLORC_DTYPE_F32, 0, 0, 11},
    };
    size_t i;
    for (i = 0; i < sizeof configs / sizeof configs[0]; ++i) {
        blob whole = trained(&configs[i], STEPS);
        cut k = split(&whole);
        blob back = join(k.shared, k.shared_bytes, 0, ROWS, k.rows, k.row_bytes);
        CHECK(back.size == whole.size && memcmp(back.bytes, whole.bytes, whole.size) == 0);
        reshard(&configs[i], &whole);
        if (configs[i].dtype == MLORC_DTYPE_F32 && !configs[i].bf16_state) fresh_shard_is_init_sharded(&configs[i]);
        free(back.bytes);
        cut_free(&k);
        free(whole.bytes);
    }
}

/* A refused join: status `want`, a reason, and `out` untouched. */
static void refused_join(const char *what, int want, const unsigned char *shared, size_t shared_bytes,
                         int64_t global_rows, int64_t begin, int64_t count, const unsigned char *records,
                         size_t records_bytes, size_t out_bytes) {
    mlorc_shard shard = {global_rows, begin};
    unsigned char *out = xcalloc(out_bytes);
    char why[256] = "";
    size_t i;
    int status;
    memset(out, 0xAB, out_bytes);
    status = mlorc_state_join(shared, shared_bytes, &shard, count, records, records_bytes, out, out_bytes, why,
                              sizeof why);
    if (status != want) fprintf(stderr, "%s: status %d, wanted %d (%s)\n", what, status, want, why);
    CHECK(status == want);
    CHECK(strlen(why) > 0);
    for (i = 0; i < out_bytes; ++i) CHECK(out[i] == 0xAB);
    printf("  refused (%s): %s\n", what, why);
    free(out);
}

static void refusals(void) {
    const config adamw = {"MLorc-AdamW", MLORC_RULE_ADAMW, MLORC_STORAGE_LOWRANK, MLORC_DTYPE_F32, 0, 0, 0};
    blob whole = trained(&adamw, STEPS), later = trained(&adamw, STEPS + 1);
    cut k = split(&whole), next = split(&later);
    size_t rb = k.row_bytes, full = whole.size, n = ROWS * rb;
    unsigned char *records = xcalloc(n), *shared = xcalloc(k.shared_bytes + 8);
    char why[256];
    size_t a, b;

    memcpy(records, k.rows, n);
    records[5 * rb + 3] ^= 1;
    refused_join("a damaged record", MLORC_ERROR_STATE_CORRUPTED, k.shared, k.shared_bytes, ROWS, 0, ROWS, records, n,
                 full);
    memcpy(records, k.rows, n);
    memcpy(records + 2 * rb, k.rows + 3 * rb, rb);
    memcpy(records + 3 * rb, k.rows + 2 * rb, rb);
    refused_join("swapped records", MLORC_ERROR_STATE_CORRUPTED, k.shared, k.shared_bytes, ROWS, 0, ROWS, records, n,
                 full);
    refused_join("records shifted to other rows", MLORC_ERROR_STATE_CORRUPTED, k.shared, k.shared_bytes, ROWS, 1, 10,
                 k.rows, 10 * rb, full);
    refused_join("records of another step", MLORC_ERROR_STATE_CORRUPTED, next.shared, next.shared_bytes, ROWS, 0, ROWS,
                 k.rows, n, full);
    memcpy(shared, k.shared, k.shared_bytes);
    shared[16 + 128 + 5] ^= 4;  /* a byte of s */
    refused_join("a damaged replicated part", MLORC_ERROR_STATE_CORRUPTED, shared, k.shared_bytes, ROWS, 0, ROWS,
                 k.rows, n, full);
    refused_join("a short replicated part", MLORC_ERROR_STATE_TOO_SMALL, k.shared, k.shared_bytes - 1, ROWS, 0, ROWS,
                 k.rows, n, full);
    refused_join("not a replicated part", MLORC_ERROR_STATE_CORRUPTED, whole.bytes, k.shared_bytes, ROWS, 0, ROWS,
                 k.rows, n, full);
    refused_join("other global rows", MLORC_ERROR_STATE_MISMATCH, k.shared, k.shared_bytes, ROWS + 1, 0, ROWS,
                 k.rows, n, full);
    refused_join("rows outside the matrix", MLORC_ERROR_INVALID_ARGUMENT, k.shared, k.shared_bytes, ROWS, 30, 8,
                 k.rows, 8 * rb, full);
    refused_join("a negative row count", MLORC_ERROR_INVALID_ARGUMENT, k.shared, k.shared_bytes, ROWS, 0, -1,
                 k.rows, 0, full);
    refused_join("a wrong record size", MLORC_ERROR_INVALID_ARGUMENT, k.shared, k.shared_bytes, ROWS, 0, ROWS,
                 k.rows, n - 1, full);
    refused_join("a small state", MLORC_ERROR_STATE_TOO_SMALL, k.shared, k.shared_bytes, ROWS, 0, ROWS, k.rows, n,
                 full - 1);
    refused_join("NULL records", MLORC_ERROR_NULL_POINTER, k.shared, k.shared_bytes, ROWS, 0, ROWS, NULL, n, full);

    /* Split: a damaged state, small outputs, NULL. */
    whole.bytes[200] ^= 1;
    CHECK(mlorc_state_split_size(whole.bytes, whole.size, &a, &b, why, sizeof why) == MLORC_ERROR_STATE_CORRUPTED);
    CHECK(strlen(why) > 0);
    whole.bytes[200] ^= 1;
    CHECK(mlorc_state_split(whole.bytes, whole.size, records, n - 1, shared, k.shared_bytes, why, sizeof why)
          == MLORC_ERROR_STATE_TOO_SMALL);
    CHECK(mlorc_state_split(whole.bytes, whole.size, records, n, shared, k.shared_bytes - 1, why, sizeof why)
          == MLORC_ERROR_STATE_TOO_SMALL);
    CHECK(mlorc_state_split(whole.bytes, whole.size, NULL, n, shared, k.shared_bytes, why, sizeof why)
          == MLORC_ERROR_NULL_POINTER);
    CHECK(mlorc_state_split_size(NULL, 0, &a, &b, NULL, 0) == MLORC_ERROR_NULL_POINTER);
    CHECK(mlorc_state_join_size(k.shared, k.shared_bytes, NULL, ROWS, &a, &b, NULL, 0) == MLORC_ERROR_NULL_POINTER);

    /* A rule whose state has no row layout. */
    {
        const config galore = {"GaLore", MLORC_RULE_GALORE_ADAMW, MLORC_STORAGE_LOWRANK, MLORC_DTYPE_F32, 0, 0, 0};
        blob s = trained(&galore, 1);
        CHECK(mlorc_state_split_size(s.bytes, s.size, &a, &b, why, sizeof why) == MLORC_ERROR_INVALID_ARGUMENT);
        printf("  refused (GaLore state): %s\n", why);
        free(s.bytes);
    }
    free(records);
    free(shared);
    cut_free(&k);
    cut_free(&next);
    free(whole.bytes);
    free(later.bytes);
}

static void reshapes(void) {
    const config dense = {"AdamW dense", MLORC_RULE_ADAMW, MLORC_STORAGE_DENSE, MLORC_DTYPE_F32, 0, 0, 0};
    const config lowrank = {"MLorc-AdamW", MLORC_RULE_ADAMW, MLORC_STORAGE_LOWRANK, MLORC_DTYPE_F32, 0, 0, 0};
    const config came = {"CAME", MLORC_RULE_CAME, MLORC_STORAGE_DENSE, MLORC_DTYPE_F32, 0, 0, 0};
    blob s = trained(&dense, STEPS), l = trained(&lowrank, STEPS), c = trained(&came, 1);
    unsigned char *column = xcalloc(s.size), *back = xcalloc(s.size), *copy = xcalloc(s.size);
    mlorc_state_info info;
    char why[256];
    size_t i;
    CHECK_OK(mlorc_state_reshape(s.bytes, s.size, ROWS * COLS, 1, column, s.size, why, sizeof why));
    CHECK_OK(mlorc_state_inspect(column, s.size, &info));
    CHECK(info.rows == ROWS * COLS && info.cols == 1);
    CHECK(memcmp(column + MLORC_STATE_HEADER_BYTES, s.bytes + MLORC_STATE_HEADER_BYTES, s.size - MLORC_STATE_HEADER_BYTES) == 0);
    CHECK_OK(mlorc_state_reshape(column, s.size, ROWS, COLS, back, s.size, why, sizeof why));
    CHECK(memcmp(back, s.bytes, s.size) == 0);
    memcpy(copy, column, s.size);
    CHECK_OK(mlorc_state_reshape(copy, s.size, ROWS, COLS, copy, s.size, why, sizeof why));  /* in place */
    CHECK(memcmp(copy, s.bytes, s.size) == 0);
    memset(back, 0xAB, s.size);
    CHECK(mlorc_state_reshape(s.bytes, s.size, 10, 10, back, s.size, why, sizeof why) == MLORC_ERROR_INVALID_SHAPE);
    CHECK(mlorc_state_reshape(s.bytes, s.size, ROWS * COLS, 1, back, s.size - 1, why, sizeof why)
          == MLORC_ERROR_STATE_TOO_SMALL);
    CHECK(mlorc_state_reshape(l.bytes, l.size, ROWS * COLS, 1, back, s.size, why, sizeof why)
          == MLORC_ERROR_INVALID_ARGUMENT);
    printf("  refused (reshape of a low-rank state): %s\n", why);
    CHECK(mlorc_state_reshape(c.bytes, c.size, ROWS * COLS, 1, back, s.size, why, sizeof why)
          == MLORC_ERROR_INVALID_ARGUMENT);
    {  /* a shard */
        cut k = split(&s);
        blob shard = join(k.shared, k.shared_bytes, 3, 5, k.rows + 3 * k.row_bytes, k.row_bytes);
        CHECK(mlorc_state_reshape(shard.bytes, shard.size, 5 * COLS, 1, back, s.size, why, sizeof why)
              == MLORC_ERROR_INVALID_ARGUMENT);
        free(shard.bytes);
        cut_free(&k);
    }
    for (i = 0; i < s.size; ++i) CHECK(back[i] == 0xAB);
    {  /* A CAME vector: 1 x n <-> n x 1 swaps r (1 x n: one value) and c (n values) */
        enum { N = 40 };
        mlorc_optimizer *opt;
        mlorc_tensor_layout layout = {1, N, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
        float w[N], g[N];
        size_t size;
        unsigned char *row, *col, *again;
        const float *stats_row, *stats_col;
        int step, e;
        mlorc_tensor t;
        CHECK_OK(mlorc_create(&opt, MLORC_RULE_CAME));
        CHECK_OK(mlorc_state_size(opt, &layout, &size));
        row = xcalloc(size);
        col = xcalloc(size);
        again = xcalloc(size);
        CHECK_OK(mlorc_state_init(opt, &layout, 5, row, size));
        for (e = 0; e < N; ++e) w[e] = (float)(0.1 * e);
        for (step = 0; step < 3; ++step) {
            for (e = 0; e < N; ++e) g[e] = (float)sin(0.4 * e + step);
            memset(&t, 0, sizeof t);
            t.param = w;
            t.grad = g;
            t.state = row;
            t.state_bytes = size;
            t.rows = 1;
            t.cols = N;
            CHECK_OK(mlorc_step(opt, &t, 1, 1e-2));
        }
        CHECK_OK(mlorc_state_reshape(row, size, N, 1, col, size, why, sizeof why));
        stats_row = (const float *)(row + MLORC_STATE_HEADER_BYTES) + N;  /* after the moment: r (1), c (N) */
        stats_col = (const float *)(col + MLORC_STATE_HEADER_BYTES) + N;  /* r (N), c (1) */
        CHECK(memcmp(stats_col, stats_row + 1, 4 * N) == 0 && memcmp(stats_col + N, stats_row, 4) == 0);
        CHECK(stats_row[0] > 0);
        CHECK_OK(mlorc_state_reshape(col, size, 1, N, again, size, why, sizeof why));
        CHECK(memcmp(again, row, size) == 0);
        CHECK(mlorc_state_reshape(row, size, 4, N / 4, again, size, why, sizeof why) == MLORC_ERROR_INVALID_ARGUMENT);
        printf("  refused (a CAME vector reshaped to a matrix): %s\n", why);
        free(row);
        free(col);
        free(again);
        mlorc_free(opt);
    }
    {  /* D-adaptation samples go by flat index: a dense state reshapes, bit for bit back */
        const config prodigy = {"Prodigy dense", MLORC_RULE_PRODIGY, MLORC_STORAGE_DENSE, MLORC_DTYPE_F32, 0, 0, 11};
        blob p = trained(&prodigy, STEPS);
        unsigned char *flat = xcalloc(p.size), *again = xcalloc(p.size);
        CHECK_OK(mlorc_state_reshape(p.bytes, p.size, ROWS * COLS, 1, flat, p.size, why, sizeof why));
        CHECK_OK(mlorc_state_inspect(flat, p.size, &info));
        CHECK(info.rows == ROWS * COLS && info.cols == 1);
        CHECK_OK(mlorc_state_reshape(flat, p.size, ROWS, COLS, again, p.size, why, sizeof why));
        CHECK(memcmp(again, p.bytes, p.size) == 0);
        free(flat);
        free(again);
        free(p.bytes);
    }
    free(column);
    free(back);
    free(copy);
    free(s.bytes);
    free(l.bytes);
    free(c.bytes);
}

int main(void) {
    round_trips();
    refusals();
    reshapes();
    printf("state_split_test: %lu checks passed\n", checks_run);
    return 0;
}
