/*
 * fuzz_state.c - libFuzzer target for libmlorc's state validation and the
 * argument checks of mlorc_step, through the public C API only.
 *
 * Input: a 32-byte control block, then the bytes of one tensor's state.
 *   control[0]  flags (FIX_*, THREADS2, PAIR*, CONTROL_SHAPE, MISALIGN below)
 *   control[1]  gradient kind (low 2 bits): finite, one NaN, one +Inf, one
 *               1e30; the step call (bits 2..4, CALL_* below): as usual, with
 *               count 0, with a count no array can have, without a group state
 *   control[2]  rank - 1 (mod 8)
 *   control[3]  oversampling (low 2 bits), rule (the rest, an index into the
 *               rules this build supports, found by probing mlorc_create)
 *   control[4..5] index of the bad gradient value, control[6] lr choice
 *               (low 4 bits: 16 values, odd ones included)
 *   control[7]  storage of the layout passed to state_size/state_init
 *   control[8..31] rows, cols (int64), dtype, reserved (int32)
 * The FIX_* flags re-seal the checksums after mutation, so the fuzzer also
 * reaches the checks behind them (shape, rank, sizes, step counter).
 *
 * Invariants (a violation aborts, and libFuzzer keeps the input):
 * - every call returns a documented status; nothing reads out of bounds
 *   (the library is built with ASan) or hangs (-timeout);
 * - a refused step leaves every parameter and state byte as it was;
 * - an accepted step implies the state inspected fine and advances its step
 *   counter by one; NaN/Inf gradients and bad lr are always refused;
 * - a count above MLORC_MAX_STEP_TENSORS is INVALID_ARGUMENT whatever else is
 *   wrong; count 0 is accepted exactly when lr is valid (and the rule's group
 *   state given) and changes nothing; a D-adaptation rule is never stepped
 *   without its group state;
 * - outputs (issue 14, item 5): an accepted step leaves finite parameters and
 *   finite dense moments. Until the library refuses non-finite results, the
 *   inputs that break this are counted; -DMLORC_FUZZ_FINITE_OUTPUTS makes
 *   them fail the run;
 * - state_init on any layout state_size accepts gives a state that inspects.
 *
 * Known library bugs (reported, see docs/guarantees.md) would stop every run
 * at the first hit; by default the harness steps around exactly those inputs
 * and counts them (printed at exit). Build with -DMLORC_FUZZ_STRICT to let
 * them crash instead.
 */
#include "mlorc.h"
#include "../support/state_checksum.h"
#include "../support/step_any.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    FIX_HEADER = 1,     /* reseal the header checksum */
    FIX_PAYLOAD = 2,    /* reseal the payload checksum (before the header) */
    THREADS2 = 4,       /* the handle steps with 2 threads */
    PAIR = 8,           /* add a valid 4x4 tensor to the batch... */
    PAIR_FIRST = 16,    /* ...in front of the fuzzed one */
    CONTROL_SHAPE = 32, /* rows/cols/dtype/reserved from the control block */
    MISALIGN = 64,      /* state at an odd address */
};
/* How the step is called (control[1] bits 2..4; 0..3 keep the seed corpus's
 * inputs on the ordinary call). */
enum { CALL_COUNT_ZERO = 4, CALL_COUNT_HUGE = 5, CALL_COUNT_ZERO_NULL = 6, CALL_NO_GROUP = 7 };
#define CONTROL_BYTES 32
#define MAX_ELEMENTS 65536 /* larger tensors are stepped with NULL buffers */

static void fail(const char *what, int rc) {
    fprintf(stderr, "fuzz_state invariant broken: %s (status %d: %s)\n", what, rc, mlorc_status_string(rc));
    abort();
}
#define REQUIRE(cond, rc) ((cond) ? (void)0 : fail(#cond, (rc)))

/* Inputs that hit a known bug, by bug (printed at exit). */
static unsigned long known_dtype_trap, known_step_overflow, known_partial_write, known_huge_factors;
static unsigned long known_nonfinite_output;

static void print_known(void) {
    fprintf(stderr, "known-bug inputs: dtype-trap %lu, step-overflow %lu, linalg-partial-write %lu, implausible-factors %lu, "
            "non-finite-output %lu\n",
            known_dtype_trap, known_step_overflow, known_partial_write, known_huge_factors, known_nonfinite_output);
}

#ifndef MLORC_FUZZ_STRICT
/* 1 if `state` has a sealed, version-1 header (what the library trusts). */
static int sealed_header(const unsigned char *state, size_t n) {
    uint64_t magic, sum;
    uint32_t version;
    if (n < 128) return 0;
    memcpy(&magic, state, 8);
    memcpy(&version, state + 8, 4);
    memcpy(&sum, state + 88, 8);
    return magic == 0x31545343524F4C4Dull && version == 1 && sum == mlorc_test_checksum(state, 88);
}
#endif

/* Bug 1: mlorc_state_inspect traps on a sealed header whose dtype field
 * (u32 at 20) has bit 31 set. */
static int hits_dtype_trap(const unsigned char *state, size_t n) {
#ifdef MLORC_FUZZ_STRICT
    (void)state, (void)n;
    return 0;
#else
    return sealed_header(state, n) && state[23] >= 0x80 && (++known_dtype_trap, 1);
#endif
}

/* Bug 2: mlorc_step traps on a sealed state whose step counter (u64 at 48)
 * is UINT64_MAX. */
static int hits_step_overflow(const unsigned char *state, size_t n) {
#ifdef MLORC_FUZZ_STRICT
    (void)state, (void)n;
    return 0;
#else
    uint64_t step;
    if (!sealed_header(state, n)) return 0;
    memcpy(&step, state + 48, 8);
    return step == UINT64_MAX && (++known_step_overflow, 1);
#endif
}

/* Bug 3: a step refused with MLORC_ERROR_LINALG may already have written
 * parameters and state (finite but extreme low-rank factors). Called only
 * for a refused step that changed something. */
static int known_partial_write_bug(int rc) {
#ifdef MLORC_FUZZ_STRICT
    (void)rc;
    return 0;
#else
    return rc == MLORC_ERROR_LINALG && (++known_partial_write, 1);
#endif
}

/* Bugs 3 and 4: a sealed low-rank state whose factors the library could not
 * have written (U or Vt entries above 1 in magnitude: they are orthonormal;
 * singular values above 1e15) can make a step fail in LAPACK after writing
 * (bug 3) or never return from sgesdd (bug 4). Such states are inspected but
 * not stepped. */
static int hits_huge_factors(const unsigned char *state, size_t n) {
#ifdef MLORC_FUZZ_STRICT
    (void)state, (void)n;
    return 0;
#else
    uint32_t storage;
    int64_t rows, cols, rank;
    uint64_t payload, per_moment, i, k;
    float x;
    if (!sealed_header(state, n)) return 0;
    memcpy(&storage, state + 16, 4);
    memcpy(&rows, state + 24, 8);
    memcpy(&cols, state + 32, 8);
    memcpy(&rank, state + 40, 8);
    memcpy(&payload, state + 64, 8);
    if (storage != MLORC_STORAGE_LOWRANK || payload > n - 128 || rows < 1 || cols < 1 || rank < 1 ||
        rows > (1 << 20) || cols > (1 << 20) || rank > (1 << 20))
        return 0;
    per_moment = (uint64_t)(rank * (rows + cols + 1));
    if (payload % (4 * per_moment) != 0) return 0; /* not the MLorc layout (GaLore has its own) */
    for (i = 0; 4 * (i + 1) <= payload; ++i) {
        k = i % per_moment; /* U (rows x rank), s (rank), Vt (rank x cols) */
        memcpy(&x, state + 128 + 4 * i, 4);
        if (!isfinite(x)) continue; /* NaN and infinities are refused properly */
        if (fabsf(x) > (k >= (uint64_t)(rows * rank) && k < (uint64_t)((rows + 1) * rank) ? 1e15f : 1.0f + 1e-3f))
            return ++known_huge_factors, 1;
    }
    return 0;
#endif
}

static int documented(int rc) { return rc >= MLORC_OK && rc <= MLORC_ERROR_UNSUPPORTED_DTYPE; }

#define MAX_RULES 16
/* Per supported rule, a 1-thread and a 2-thread handle, kept for the run:
 * changing MLORC_PARAM_THREADS per input would restart worker threads (and,
 * while bug 5 stands, leak the old ones). */
static mlorc_optimizer *handles[MAX_RULES][2];
static int rules[MAX_RULES], rule_count;

/* Finds the rules this build supports (new rules get fuzzed without edits). */
static void setup(void) {
    int r;
    atexit(print_known);
    for (r = 1; r < MAX_RULES; ++r)
        if (mlorc_create(&handles[rule_count][0], r) == MLORC_OK) {
            if (mlorc_create(&handles[rule_count][1], r) != MLORC_OK ||
                mlorc_set_param(handles[rule_count][1], MLORC_PARAM_THREADS, 2) != MLORC_OK)
                fail("a 2-thread handle", -1);
            rules[rule_count++] = r;
        }
    if (rule_count == 0) fail("no rule can be created", -1);
}

typedef struct {
    unsigned char flags, grad_kind, call, rank, oversampling, rule_index;
    uint16_t bad_index;
    unsigned char lr_choice;
    signed char storage;
    int64_t rows, cols;
    int32_t dtype, reserved;
} control;

static control decode(const uint8_t *data, size_t size) {
    unsigned char raw[CONTROL_BYTES] = {0};
    control c;
    memcpy(raw, data, size < CONTROL_BYTES ? size : CONTROL_BYTES);
    c.flags = raw[0];
    c.grad_kind = raw[1] & 3;
    c.call = (raw[1] >> 2) & 7;
    c.rank = (unsigned char)(1 + raw[2] % 8);
    c.oversampling = raw[3] % 4;
    c.rule_index = raw[3] >> 2;
    memcpy(&c.bad_index, raw + 4, 2);
    c.lr_choice = raw[6];
    c.storage = (signed char)raw[7];
    memcpy(&c.rows, raw + 8, 8);
    memcpy(&c.cols, raw + 16, 8);
    memcpy(&c.dtype, raw + 24, 4);
    memcpy(&c.reserved, raw + 28, 4);
    return c;
}

static double pick_lr(unsigned char choice) {
    static const double table[16] = {1e-3, 0.0, 1.0, 1e30, -1e-3, NAN, INFINITY, -0.0,
                                     1e308, DBL_MAX, 5e-324 /* least subnormal */, -5e-324,
                                     3.4028234663852886e38 /* FLT_MAX */, 1e-300, -INFINITY, -NAN};
    return table[choice % 16];
}

/* A count no array of mlorc_tensor can have: the top bit set, or just above
 * the documented limit. */
static size_t pick_huge_count(uint16_t k) {
    const size_t top = (size_t)1 << (sizeof(size_t) * 8 - 1);
    switch (k % 4) {
    case 0: return SIZE_MAX - k / 4;
    case 1: return top + k / 4;
    case 2: return (size_t)MLORC_MAX_STEP_TENSORS + 1 + k / 4;
    default: return SIZE_MAX / sizeof(mlorc_tensor) + 1 + k / 4;
    }
}

static int adapts_step_size(int rule) { return rule == MLORC_RULE_PRODIGY || rule == MLORC_RULE_DADAPT_LION; }

/* 1 if every float of p[0..n) is finite. */
static int all_finite(const void *p, size_t n) {
    size_t i;
    float x;
    for (i = 0; i < n; ++i) {
        memcpy(&x, (const unsigned char *)p + 4 * i, 4);
        if (!isfinite(x)) return 0;
    }
    return 1;
}

/* After an accepted step: parameters and dense moments are finite (low-rank
 * factors are checked by inspect). Counted until the library refuses such
 * steps (MLORC_FUZZ_FINITE_OUTPUTS: a failure). */
static void check_outputs(const float *param, size_t elements, const unsigned char *state, size_t bytes) {
    mlorc_state_info info;
    int finite = !param || all_finite(param, elements), rc = mlorc_state_inspect(state, bytes, &info);
    REQUIRE(rc == MLORC_OK, rc);
    if (info.storage == MLORC_STORAGE_DENSE)
        finite = finite && all_finite(state + MLORC_STATE_HEADER_BYTES, (size_t)(info.state_bytes - MLORC_STATE_HEADER_BYTES) / 4);
    if (finite) return;
#ifdef MLORC_FUZZ_FINITE_OUTPUTS
    fail("an accepted step wrote a non-finite parameter or moment", MLORC_OK);
#else
    ++known_nonfinite_output;
#endif
}
static int lr_valid(double lr) { return isfinite(lr) && lr >= 0; }

/* Copies `n` bytes into a fresh heap block that ends exactly where they
 * end, so ASan flags any read past the buffer. */
static unsigned char *exact_copy(const void *p, size_t n, size_t lead, unsigned char **block) {
    *block = malloc(n + lead ? n + lead : 1);
    if (!*block) abort();
    if (n) memcpy(*block + lead, p, n);
    return *block + lead;
}

/* mlorc_state_size / mlorc_state_init on a layout straight from the input. */
static void fuzz_layout(mlorc_optimizer *opt, const control *c, uint64_t id) {
    mlorc_tensor_layout layout = {c->rows, c->cols, c->dtype, c->storage};
    mlorc_state_info info;
    size_t bytes = 0;
    unsigned char *state;
    int rc = mlorc_state_size(opt, &layout, &bytes);
    REQUIRE(documented(rc), rc);
    if (rc != MLORC_OK || bytes > (1u << 20)) return;
    REQUIRE(bytes >= 128, rc);
    state = malloc(bytes);
    if (!state) abort();
    memset(state, 0xA5, bytes);
    rc = mlorc_state_init(opt, &layout, id, state, bytes - 1);
    REQUIRE(rc == MLORC_ERROR_STATE_TOO_SMALL, rc);
    REQUIRE(state[0] == 0xA5 && state[bytes - 1] == 0xA5, rc);
    rc = mlorc_state_init(opt, &layout, id, state, bytes);
    REQUIRE(rc == MLORC_OK, rc);
    rc = mlorc_state_inspect(state, bytes, &info);
    REQUIRE(rc == MLORC_OK, rc);
    REQUIRE(info.rows == c->rows && info.cols == c->cols && info.step == 0 && info.tensor_id == id, rc);
    REQUIRE(info.state_bytes == bytes, rc);
    free(state);
}

/* Fills a gradient with finite values, then plants one bad value. */
static void fill_grad(float *g, size_t n, const control *c) {
    static const float bad[4] = {0.5f, NAN, INFINITY, 1e30f};
    uint32_t s = 0x9E3779B9u ^ c->bad_index;
    size_t i;
    for (i = 0; i < n; ++i) {
        s = s * 1664525u + 1013904223u;
        g[i] = (float)((int32_t)s >> 8) / 8388608.0f;
    }
    if (n) g[c->bad_index % n] = bad[c->grad_kind];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const control c = decode(data, size);
    int rule;
    mlorc_optimizer *opt;
    size_t n = size > CONTROL_BYTES ? size - CONTROL_BYTES : 0;
    unsigned char *block, *state, *before, *before_block;
    mlorc_state_info info, after;
    int rc, inspect_rc;

    if (rule_count == 0) setup();
    rule = rules[c.rule_index % rule_count];
    opt = handles[c.rule_index % rule_count][c.flags & THREADS2 ? 1 : 0];

    /* The whole input (control block included) is also just bytes. */
    if (!hits_dtype_trap(data, size)) {
        rc = mlorc_state_inspect(data, size, &info);
        REQUIRE(documented(rc), rc);
    }

    REQUIRE(mlorc_set_param(opt, MLORC_PARAM_RANK, c.rank) == MLORC_OK, -1);
    REQUIRE(mlorc_set_param(opt, MLORC_PARAM_OVERSAMPLING, c.oversampling) == MLORC_OK, -1);
    fuzz_layout(opt, &c, c.bad_index);

    state = exact_copy(data + (size - n), n, c.flags & MISALIGN ? 1 : 0, &block);
    if (c.flags & FIX_PAYLOAD) mlorc_test_fix_payload(state, n);
    if (c.flags & FIX_HEADER && n >= 96) mlorc_test_fix_header(state);
    if (hits_dtype_trap(state, n)) {
        free(block);
        return 0;
    }
    inspect_rc = mlorc_state_inspect(state, n, &info);
    REQUIRE(documented(inspect_rc), inspect_rc);
    if (inspect_rc == MLORC_OK) {
        REQUIRE(info.state_bytes >= 128 && info.state_bytes <= n, inspect_rc);
        REQUIRE(info.layout_version == MLORC_STATE_LAYOUT_VERSION, inspect_rc);
        REQUIRE(info.rule >= 1 && info.rule < MAX_RULES, inspect_rc);
        REQUIRE(info.storage == MLORC_STORAGE_DENSE || info.storage == MLORC_STORAGE_LOWRANK, inspect_rc);
        REQUIRE(info.rows >= 1 && info.cols >= 1, inspect_rc);
    }

    {
        /* The step: the fuzzed tensor plus, optionally, a valid 4x4 one. */
        mlorc_tensor t[2];
        mlorc_tensor_layout pair_layout = {4, 4, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
        /* Room for any rule's 4x4 dense state (moments plus statistics). */
        unsigned char pair_state[1024], pair_before[sizeof pair_state];
        size_t pair_bytes = 0;
        float pair_param[16], pair_grad[16], pair_param_before[16];
        int64_t rows = c.rows, cols = c.cols;
        int32_t dtype = c.dtype, reserved = c.reserved;
        float *param = NULL, *grad = NULL, *param_before = NULL;
        size_t elements = 0, count = 1, me = 0, step_count;
        const double lr = pick_lr(c.lr_choice);
        int bad_grad;

        if (!(c.flags & CONTROL_SHAPE)) {
            dtype = reserved = 0;
            if (inspect_rc == MLORC_OK) {
                rows = info.rows;
                cols = info.cols;
            } else if (n >= 40) { /* whatever the damaged header claims */
                memcpy(&rows, state + 24, 8);
                memcpy(&cols, state + 32, 8);
            } else {
                rows = cols = 4;
            }
        }
        if (rows >= 1 && cols >= 1 && rows <= MAX_ELEMENTS && cols <= MAX_ELEMENTS / rows) {
            elements = (size_t)(rows * cols);
            param = malloc(elements * 4);
            grad = malloc(elements * 4);
            param_before = malloc(elements * 4);
            if (!param || !grad || !param_before) abort();
            fill_grad(param, elements, &c);
            fill_grad(grad, elements, &c);
            param[c.bad_index % elements] = 0.25f; /* parameters stay finite */
            memcpy(param_before, param, elements * 4);
        }
        bad_grad = grad && (c.grad_kind == 1 || c.grad_kind == 2);
        memset(t, 0, sizeof t);
        t[0].param = param;
        t[0].grad = grad;
        t[0].state = n ? state : NULL;
        t[0].state_bytes = n;
        t[0].rows = rows;
        t[0].cols = cols;
        t[0].dtype = dtype;
        t[0].reserved = reserved;
        if (c.flags & PAIR) {
            REQUIRE(mlorc_state_size(opt, &pair_layout, &pair_bytes) == MLORC_OK && pair_bytes <= sizeof pair_state, -1);
            memset(pair_state, 0, sizeof pair_state);
            REQUIRE(mlorc_state_init(opt, &pair_layout, 7, pair_state, pair_bytes) == MLORC_OK, -1);
            fill_grad(pair_param, 16, &c);
            memset(pair_grad, 0, sizeof pair_grad);
            memcpy(pair_before, pair_state, sizeof pair_state);
            memcpy(pair_param_before, pair_param, sizeof pair_param);
            me = c.flags & PAIR_FIRST ? 1 : 0; /* index of the fuzzed tensor */
            t[me] = t[0];
            t[1 - me].param = pair_param;
            t[1 - me].grad = pair_grad;
            t[1 - me].state = pair_state;
            t[1 - me].state_bytes = pair_bytes;
            t[1 - me].rows = t[1 - me].cols = 4;
            t[1 - me].dtype = t[1 - me].reserved = 0;
            count = 2;
        }
        before = exact_copy(state, n, 0, &before_block);
        /* The high bit of the lr byte passes the huge count a NULL array. */
        step_count = c.call == CALL_COUNT_HUGE ? pick_huge_count(c.bad_index)
                     : c.call == CALL_COUNT_ZERO || c.call == CALL_COUNT_ZERO_NULL ? 0 : count;
        if (hits_step_overflow(state, n) || hits_huge_factors(state, n))
            rc = -1;
        else if (c.call == CALL_NO_GROUP)
            rc = mlorc_step(opt, t, step_count, lr);
        else
            rc = mlorc_test_step_any(opt, c.call == CALL_COUNT_ZERO_NULL || (c.call == CALL_COUNT_HUGE && c.lr_choice & 0x80) ? NULL : t,
                                     step_count, lr);
        if (rc != -1) {
            int changed = (n && memcmp(state, before, n) != 0) || (param && memcmp(param, param_before, elements * 4) != 0) ||
                          (count == 2 && (memcmp(pair_state, pair_before, sizeof pair_state) != 0 ||
                                          memcmp(pair_param, pair_param_before, sizeof pair_param) != 0));
            REQUIRE(documented(rc), rc);
            if (c.call == CALL_COUNT_HUGE) {
                REQUIRE(rc == MLORC_ERROR_INVALID_ARGUMENT, rc);
                REQUIRE(!changed, rc);
            } else if (step_count == 0) {
                REQUIRE(rc == (lr_valid(lr) ? MLORC_OK : MLORC_ERROR_INVALID_ARGUMENT), rc);
                REQUIRE(!changed, rc);
            } else if (rc != MLORC_OK) {
                REQUIRE(mlorc_last_error(opt)[0] != '\0', rc);
                if (changed && !known_partial_write_bug(rc)) fail("a refused step changed a parameter or state", rc);
            } else {
                REQUIRE(inspect_rc == MLORC_OK && info.rule == rule, rc);
                REQUIRE(!bad_grad && lr_valid(lr), rc);
                REQUIRE(!(c.call == CALL_NO_GROUP && adapts_step_size(rule)), rc);
                rc = mlorc_state_inspect(state, n, &after);
                REQUIRE(rc == MLORC_OK && after.step == info.step + 1, rc);
                check_outputs(param, elements, state, n);
                if (count == 2) check_outputs(pair_param, 16, pair_state, pair_bytes);
            }
        }
        free(before_block);
        free(param);
        free(grad);
        free(param_before);
    }
    free(block);
    return 0;
}
