/*
 * state_header_test.c - what include/mlorc.h promises about a tensor's
 * state and its 128-byte header, checked through the C API: the largest
 * shape, forged headers (resealed with the test copy of the checksum).
 */
#include "mlorc.h"
#include "../support/check.h"
#include "../support/state_checksum.h"

#include <stdint.h>
#include <string.h>

static mlorc_optimizer *make(int rule) {
    mlorc_optimizer *opt = NULL;
    CHECK_RC(mlorc_create(&opt, rule), MLORC_OK);
    check_handle = opt;
    return opt;
}

static void put_i64(unsigned char *state, size_t offset, int64_t v) { memcpy(state + offset, &v, 8); }

/* rows * cols must stay below 2^59 (16 bytes per element, the most any
 * rule's state takes, then fit in 63 bits): 2^59 itself is refused by
 * every call that takes a shape, and by inspect in a resealed header. */
static void test_largest_shape(void) {
    const int64_t big = (int64_t)1 << 30, half = (int64_t)1 << 29; /* big * half = 2^59 */
    mlorc_optimizer *opt = make(MLORC_RULE_ADAMW);
    mlorc_tensor_layout at = {big, half, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
    mlorc_tensor_layout flipped = {half, big, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
    mlorc_tensor_layout below = {big - 1, half, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
    mlorc_tensor_layout small = {4, 4, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
    unsigned char state[4096];
    float param[16] = {0}, grad[16] = {0};
    mlorc_state_info info;
    mlorc_tensor t;
    size_t bytes = 0, small_bytes = 0;

    CHECK_RC(mlorc_state_size(opt, &at, &bytes), MLORC_ERROR_INVALID_SHAPE);
    CHECK_RC(mlorc_state_size(opt, &flipped, &bytes), MLORC_ERROR_INVALID_SHAPE);
    CHECK_RC(mlorc_state_init(opt, &at, 1, state, sizeof state), MLORC_ERROR_INVALID_SHAPE);
    /* Just below: sized (not allocated), two moments of 4 bytes per element. */
    CHECK_RC(mlorc_state_size(opt, &below, &bytes), MLORC_OK);
    CHECK(bytes == MLORC_STATE_HEADER_BYTES + 8 * (size_t)((big - 1) * half));

    /* A step names the shape before it reads any buffer. */
    CHECK_RC(mlorc_state_size(opt, &small, &small_bytes), MLORC_OK);
    CHECK_RC(mlorc_state_init(opt, &small, 1, state, small_bytes), MLORC_OK);
    memset(&t, 0, sizeof t);
    t.param = param;
    t.grad = grad;
    t.state = state;
    t.state_bytes = small_bytes;
    t.rows = big;
    t.cols = half;
    CHECK_RC(mlorc_step(opt, &t, 1, 1e-3), MLORC_ERROR_INVALID_SHAPE);

    /* A header claiming 2^59 elements (payload size to match, resealed) is
     * corrupted; one claiming the largest valid shape only lacks its bytes. */
    put_i64(state, 24, big);
    put_i64(state, 32, half);
    put_i64(state, 64, 8 * big * half);
    mlorc_test_fix_header(state);
    CHECK_RC(mlorc_state_inspect(state, small_bytes, &info), MLORC_ERROR_STATE_CORRUPTED);
    put_i64(state, 24, big - 1);
    put_i64(state, 64, 8 * (big - 1) * half);
    mlorc_test_fix_header(state);
    CHECK_RC(mlorc_state_inspect(state, small_bytes, &info), MLORC_ERROR_STATE_TOO_SMALL);
    mlorc_free(opt);
    check_handle = NULL;
}

/* A state of `opt` for a rows x cols tensor of `storage`, stepped once. */
static unsigned char *stepped_state(mlorc_optimizer *opt, int64_t rows, int64_t cols, int storage, size_t *bytes) {
    mlorc_tensor_layout layout = {rows, cols, MLORC_DTYPE_F32, storage};
    float *param = xmalloc(4 * (size_t)(rows * cols)), *grad = xmalloc(4 * (size_t)(rows * cols));
    unsigned char *state;
    mlorc_tensor t;
    int64_t i;
    CHECK_RC(mlorc_state_size(opt, &layout, bytes), MLORC_OK);
    state = xmalloc(*bytes);
    CHECK_RC(mlorc_state_init(opt, &layout, 5, state, *bytes), MLORC_OK);
    for (i = 0; i < rows * cols; ++i) {
        param[i] = (float)(i % 13) / 13.0f - 0.5f;
        grad[i] = (float)(i % 7) / 7.0f - 0.5f;
    }
    memset(&t, 0, sizeof t);
    t.param = param;
    t.grad = grad;
    t.state = state;
    t.state_bytes = *bytes;
    t.rows = rows;
    t.cols = cols;
    CHECK_RC(mlorc_step(opt, &t, 1, 1e-2), MLORC_OK);
    free(param);
    free(grad);
    return state;
}

/* mlorc_state_check on `state`: the status of mlorc_state_inspect, and a
 * reason containing `part` (NULL: success, reason ""). Returns the status. */
static int check_reason_at(const unsigned char *state, size_t bytes, int want, const char *part, const char *absent,
                           int line) {
    char why[MLORC_REASON_BYTES];
    mlorc_state_info info, inspected;
    int rc;
    memset(why, 'x', sizeof why);
    rc = mlorc_state_check(state, bytes, &info, why, sizeof why);
    check_rc_at(rc, want, "mlorc_state_check", __FILE__, line);
    check_rc_at(mlorc_state_inspect(state, bytes, &inspected), want, "mlorc_state_inspect (same status)", __FILE__,
                line);
    check_at(memchr(why, 0, sizeof why) != NULL && strlen(why) < sizeof why - 1, "reason fits MLORC_REASON_BYTES",
             __FILE__, line);
    if (!part) {
        check_at(why[0] == '\0', "success gives the reason \"\"", __FILE__, line);
        check_at(memcmp(&info, &inspected, sizeof info) == 0, "check fills out_info as inspect does", __FILE__, line);
    } else {
        if (!strstr(why, part)) fprintf(stderr, "reason: \"%s\"; expected it to contain \"%s\"\n", why, part);
        check_at(strstr(why, part) != NULL, "the reason names the failed check", __FILE__, line);
    }
    if (absent) check_at(strstr(why, absent) == NULL, "the reason does not say what is not the cause", __FILE__, line);
    return rc;
}
#define CHECK_REASON(state, bytes, want, part) check_reason_at((state), (bytes), (want), (part), NULL, __LINE__)
#define CHECK_REASON_NOT(state, bytes, want, part, absent) \
    check_reason_at((state), (bytes), (want), (part), (absent), __LINE__)

/* mlorc_state_check says why a state is refused, one cause at a time. */
static void test_state_check_reasons(void) {
    mlorc_optimizer *opt = make(MLORC_RULE_ADAMW);
    size_t low_bytes, dense_bytes;
    unsigned char *low = stepped_state(opt, 16, 12, MLORC_STORAGE_LOWRANK, &low_bytes);
    unsigned char *dense = stepped_state(opt, 3, 5, MLORC_STORAGE_DENSE, &dense_bytes);
    unsigned char *copy = xmalloc(low_bytes);
    mlorc_state_info info, sentinel;
    uint32_t version;
    uint64_t payload;
    char why[64];
    float huge = 2.0f;

    CHECK_REASON(low, low_bytes, MLORC_OK, NULL);
    CHECK_REASON(dense, dense_bytes, MLORC_OK, NULL);
    /* NULL why and NULL out_info: validation only. */
    CHECK_RC(mlorc_state_check(low, low_bytes, NULL, NULL, 0), MLORC_OK);
    CHECK_RC(mlorc_state_check(low, low_bytes, NULL, NULL, 100), MLORC_OK);
    CHECK_RC(mlorc_state_check(NULL, low_bytes, &info, why, sizeof why), MLORC_ERROR_NULL_POINTER);
    CHECK(strstr(why, "NULL") != NULL);

    CHECK_REASON(low, 127, MLORC_ERROR_STATE_TOO_SMALL, "128");
    CHECK_REASON(low, low_bytes - 1, MLORC_ERROR_STATE_TOO_SMALL, "needs");

#define TAMPER(state, bytes, edit, want, part)          \
    do {                                                \
        memcpy(copy, (state), (bytes));                 \
        edit;                                           \
        CHECK_REASON(copy, (bytes), (want), (part));    \
    } while (0)
    TAMPER(low, low_bytes, copy[0] ^= 1, MLORC_ERROR_STATE_CORRUPTED, "magic");
    TAMPER(dense, dense_bytes, copy[50] ^= 4, MLORC_ERROR_STATE_CORRUPTED, "header checksum");
    TAMPER(dense, dense_bytes, copy[100] = 7, MLORC_ERROR_STATE_CORRUPTED, "reserved byte 100");
    TAMPER(low, low_bytes, copy[low_bytes / 2] ^= 1, MLORC_ERROR_STATE_CORRUPTED, "payload checksum");
    /* Resealed but inconsistent: the payload size, then a factor beyond 1. */
    TAMPER(dense, dense_bytes, (payload = 4, memcpy(copy + 64, &payload, 8), mlorc_test_fix_header(copy)),
           MLORC_ERROR_STATE_CORRUPTED, "payload size");
    TAMPER(low, low_bytes, (memcpy(copy + 128, &huge, 4), mlorc_test_fix_payload(copy, low_bytes), mlorc_test_fix_header(copy)),
           MLORC_ERROR_STATE_CORRUPTED, "factors");
    TAMPER(dense, dense_bytes, (put_i64(copy, 24, 0), mlorc_test_fix_header(copy)), MLORC_ERROR_STATE_CORRUPTED,
           "shape");

    /* The version: a sealed newer one is a newer writer; a damaged field
     * (checksum no longer matching) may be either; version 0 never existed. */
    memcpy(copy, dense, dense_bytes);
    version = MLORC_STATE_LAYOUT_VERSION + 1;
    memcpy(copy + 8, &version, 4);
    mlorc_test_fix_header(copy);
    CHECK_REASON_NOT(copy, dense_bytes, MLORC_ERROR_STATE_VERSION, "newer libmlorc", "corrupted");
    memcpy(copy, dense, dense_bytes);
    copy[10] ^= 0x40; /* one flipped bit */
    CHECK_REASON(copy, dense_bytes, MLORC_ERROR_STATE_VERSION, "corrupted");
    CHECK_REASON(copy, dense_bytes, MLORC_ERROR_STATE_VERSION, "newer libmlorc");
    version = 0xFFFFFFFFu; /* the longest number: the reason still fits */
    memcpy(copy + 8, &version, 4);
    CHECK_REASON(copy, dense_bytes, MLORC_ERROR_STATE_VERSION, "4294967295");
    version = 0;
    memcpy(copy + 8, &version, 4);
    mlorc_test_fix_header(copy);
    CHECK_REASON_NOT(copy, dense_bytes, MLORC_ERROR_STATE_VERSION, "corrupted", "newer");

    /* The reason is cut to the buffer, NUL included; 0 bytes writes nothing;
     * a refused call leaves out_info alone. */
    memcpy(copy, low, low_bytes);
    copy[0] ^= 1;
    memset(&sentinel, 0x5A, sizeof sentinel);
    info = sentinel;
    memset(why, '#', sizeof why);
    CHECK_RC(mlorc_state_check(copy, low_bytes, &info, why, 8), MLORC_ERROR_STATE_CORRUPTED);
    CHECK(strlen(why) == 7 && why[8] == '#' && strncmp(why, "state d", 7) == 0);
    CHECK(memcmp(&info, &sentinel, sizeof info) == 0);
    memset(why, '#', sizeof why);
    CHECK_RC(mlorc_state_check(copy, low_bytes, &info, why, 1), MLORC_ERROR_STATE_CORRUPTED);
    CHECK(why[0] == '\0' && why[1] == '#');
    memset(why, '#', sizeof why);
    CHECK_RC(mlorc_state_check(copy, low_bytes, &info, why, 0), MLORC_ERROR_STATE_CORRUPTED);
    CHECK(why[0] == '#');
    /* A why_bytes with its top bit set is a large size, not a negative one:
     * the reason is written whole (into a buffer that holds any reason). */
    {
        char whole[MLORC_REASON_BYTES], reference[MLORC_REASON_BYTES];
        CHECK_RC(mlorc_state_check(copy, low_bytes, &info, reference, sizeof reference), MLORC_ERROR_STATE_CORRUPTED);
        CHECK_RC(mlorc_state_check(copy, low_bytes, &info, whole, (size_t)-1), MLORC_ERROR_STATE_CORRUPTED);
        CHECK(strcmp(whole, reference) == 0 && strlen(whole) > sizeof why);
    }
#undef TAMPER
    free(low);
    free(dense);
    free(copy);
    mlorc_free(opt);
    check_handle = NULL;
}

/* mlorc_group_state_check: the same for a group state. */
static void test_group_state_check_reasons(void) {
    mlorc_optimizer *opt = make(MLORC_RULE_PRODIGY);
    unsigned char group[MLORC_GROUP_STATE_BYTES];
    char why[MLORC_REASON_BYTES];
    mlorc_group_info info, inspected;
    uint32_t version = 2;
    double d = -1.7976931348623157e308; /* the longest double there is */
    uint64_t sum;

    CHECK_RC(mlorc_group_state_init(opt, group, sizeof group), MLORC_OK);
    memset(why, 'x', sizeof why);
    CHECK_RC(mlorc_group_state_check(group, sizeof group, &info, why, sizeof why), MLORC_OK);
    CHECK(why[0] == '\0');
    CHECK_RC(mlorc_group_state_inspect(group, sizeof group, &inspected), MLORC_OK);
    CHECK(memcmp(&info, &inspected, sizeof info) == 0);
    CHECK_RC(mlorc_group_state_check(group, sizeof group, NULL, NULL, 0), MLORC_OK);
    CHECK_RC(mlorc_group_state_check(group, sizeof group - 1, NULL, why, sizeof why), MLORC_ERROR_STATE_TOO_SMALL);
    CHECK(strstr(why, "128") != NULL);
    group[30] ^= 1;
    CHECK_RC(mlorc_group_state_check(group, sizeof group, NULL, why, sizeof why), MLORC_ERROR_STATE_CORRUPTED);
    CHECK(strstr(why, "checksum") != NULL);
    group[30] ^= 1;
    /* Values no step writes, resealed, at their longest: the reason fits. */
    memcpy(group + 24, &d, 8);
    memcpy(group + 40, &d, 8);
    sum = mlorc_test_checksum(group, 120);
    memcpy(group + 120, &sum, 8);
    CHECK_RC(mlorc_group_state_check(group, sizeof group, NULL, why, sizeof why), MLORC_ERROR_STATE_CORRUPTED);
    CHECK(strstr(why, "no step can write") != NULL && strlen(why) < sizeof why - 1);
    memcpy(group + 8, &version, 4);
    CHECK_RC(mlorc_group_state_check(group, sizeof group, NULL, why, sizeof why), MLORC_ERROR_STATE_VERSION);
    CHECK(strstr(why, "corrupted") != NULL); /* unsealed: maybe damage */
    CHECK_RC(mlorc_group_state_check(NULL, sizeof group, NULL, why, sizeof why), MLORC_ERROR_NULL_POINTER);
    mlorc_free(opt);
    check_handle = NULL;
}

static size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

/* Floats of a state as the table of mlorc_state_size gives them. */
static size_t documented_floats(int rule, int lowrank, size_t m, size_t n, size_t r, size_t k) {
    const size_t lr_moment = r * (m + n + 1), mn = m * n, stats = (m == 1 || n == 1 ? 1 : 2) * (m + n);
    switch (rule) {
    case MLORC_RULE_ADAMW:
    case MLORC_RULE_ADOPT: return lowrank ? 2 * lr_moment : 2 * mn;
    case MLORC_RULE_LION:
    case MLORC_RULE_MOFASGD: return lowrank ? lr_moment : mn;
    case MLORC_RULE_GALORE_ADAMW: return lowrank ? r * ((m < n ? m : n) + 2 * (m > n ? m : n)) : 2 * mn;
    case MLORC_RULE_CAME: return (lowrank ? lr_moment : mn) + stats;
    case MLORC_RULE_PRODIGY: return (lowrank ? 2 * lr_moment : 2 * mn) + 2 * ceil_div(mn, k);
    case MLORC_RULE_DADAPT_LION: return (lowrank ? lr_moment : mn) + ceil_div(mn, k);
    default: return 0;
    }
}

/* mlorc_state_size of every rule follows the table in mlorc.h, for matrices
 * and vectors, dense and low-rank, several ranks and strides. */
static void test_state_size_formulas(void) {
    static const int64_t shapes[][2] = {{40, 24}, {24, 40}, {7, 5}, {1, 9}, {9, 1}, {33, 33}};
    static const size_t ranks[] = {1, 3}, strides[] = {1, 4, 11};
    int rule;
    for (rule = MLORC_RULE_ADAMW; rule <= MLORC_RULE_MOFASGD; ++rule) {
        mlorc_optimizer *opt = make(rule);
        const int adapts = rule == MLORC_RULE_PRODIGY || rule == MLORC_RULE_DADAPT_LION;
        size_t s, r, k, storage, bytes, checked = 0;
        for (s = 0; s < sizeof shapes / sizeof shapes[0]; ++s)
            for (r = 0; r < 2; ++r)
                for (k = 0; k < (adapts ? 3u : 1u); ++k)
                    for (storage = MLORC_STORAGE_DENSE; storage <= MLORC_STORAGE_LOWRANK; ++storage) {
                        const size_t m = (size_t)shapes[s][0], n = (size_t)shapes[s][1];
                        mlorc_tensor_layout layout = {shapes[s][0], shapes[s][1], MLORC_DTYPE_F32, (int32_t)storage};
                        CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_RANK, (double)ranks[r]), MLORC_OK);
                        if (adapts) CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_STATS_STRIDE, (double)strides[k]), MLORC_OK);
                        /* Low-rank needs rank <= min(m, n) (MoFaSGD: 2 rank). */
                        if (storage == MLORC_STORAGE_LOWRANK &&
                            (rule == MLORC_RULE_MOFASGD ? 2 : 1) * ranks[r] > (m < n ? m : n))
                            continue;
                        CHECK_RC(mlorc_state_size(opt, &layout, &bytes), MLORC_OK);
                        if (bytes != MLORC_STATE_HEADER_BYTES + 4 * documented_floats(rule, storage == MLORC_STORAGE_LOWRANK, m, n, ranks[r], strides[k]))
                            fprintf(stderr, "rule %d, %lux%lu, %s, rank %lu, stride %lu: %lu bytes\n", rule,
                                    (unsigned long)m, (unsigned long)n, storage == MLORC_STORAGE_DENSE ? "dense" : "low-rank",
                                    (unsigned long)ranks[r], (unsigned long)strides[k], (unsigned long)bytes);
                        CHECK(bytes == MLORC_STATE_HEADER_BYTES +
                                           4 * documented_floats(rule, storage == MLORC_STORAGE_LOWRANK, m, n, ranks[r], strides[k]));
                        ++checked;
                    }
        CHECK(checked >= 12);
        mlorc_free(opt);
    }
    check_handle = NULL;
}

/* The betas' documented upper bound is 0.999999999 (1 - 1e-9), inclusive. */
static void test_beta_bounds(void) {
    static const int keys[] = {MLORC_PARAM_BETA1, MLORC_PARAM_BETA2, MLORC_PARAM_BETA3};
    int rule, k, found = 0;
    double lo, hi;
    for (rule = MLORC_RULE_ADAMW; rule <= MLORC_RULE_MOFASGD; ++rule)
        for (k = 0; k < 3; ++k) {
            if (mlorc_param_bounds(rule, keys[k], &lo, &hi) != MLORC_OK) continue;
            CHECK(lo == 0 && hi == 0.999999999);
            ++found;
        }
    CHECK(found == 8 + 7 + 2); /* beta1: every rule; beta2: all but MoFaSGD; beta3: CAME, Prodigy */
}

/* Hyperparameters are not in the state: a state is taken by any handle of
 * its rule, and the result is that handle's; the same settings give the
 * same bits. */
static void test_settings_not_in_state(void) {
    mlorc_optimizer *a = make(MLORC_RULE_ADAMW), *b = make(MLORC_RULE_ADAMW);
    size_t bytes, i;
    unsigned char *saved = stepped_state(a, 16, 12, MLORC_STORAGE_LOWRANK, &bytes);
    unsigned char *sa = xmalloc(bytes), *sb = xmalloc(bytes);
    float pa[16 * 12], pb[16 * 12], grad[16 * 12];
    mlorc_tensor t;

    for (i = 0; i < 16 * 12; ++i) {
        pa[i] = pb[i] = (float)(i % 5) / 5.0f;
        grad[i] = (float)(i % 9) / 9.0f - 0.5f;
    }
    memcpy(sa, saved, bytes);
    memcpy(sb, saved, bytes);
    CHECK_RC(mlorc_set_param(b, MLORC_PARAM_BETA1, 0.5), MLORC_OK);
    memset(&t, 0, sizeof t);
    t.grad = grad;
    t.state_bytes = bytes;
    t.rows = 16;
    t.cols = 12;
    t.param = pa;
    t.state = sa;
    CHECK_RC(mlorc_step(a, &t, 1, 1e-2), MLORC_OK);
    t.param = pb;
    t.state = sb;
    CHECK_RC(mlorc_step(b, &t, 1, 1e-2), MLORC_OK); /* accepted: nothing in the state says 0.9 */
    CHECK(memcmp(pa, pb, sizeof pa) != 0 && memcmp(sa, sb, bytes) != 0);
    /* With the same settings again, the same bits. */
    CHECK_RC(mlorc_set_param(b, MLORC_PARAM_BETA1, 0.9), MLORC_OK);
    for (i = 0; i < 16 * 12; ++i) pb[i] = (float)(i % 5) / 5.0f;
    memcpy(sb, saved, bytes);
    CHECK_RC(mlorc_step(b, &t, 1, 1e-2), MLORC_OK);
    CHECK(memcmp(pa, pb, sizeof pa) == 0 && memcmp(sa, sb, bytes) == 0);
    free(saved);
    free(sa);
    free(sb);
    mlorc_free(a);
    mlorc_free(b);
    check_handle = NULL;
}

int main(void) {
    test_largest_shape();
    test_settings_not_in_state();
    test_state_size_formulas();
    test_beta_bounds();
    test_state_check_reasons();
    test_group_state_check_reasons();
    printf("state_header_test: %lu checks passed\n", checks_run);
    return 0;
}
