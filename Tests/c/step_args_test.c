/*
 * step_args_test.c - the arguments of mlorc_step / mlorc_step_group: the
 * tensor count, the learning rate, the alignment and aliasing of the
 * buffers. Every refusal must have the documented status and change nothing
 * (include/mlorc.h).
 */
#include "mlorc.h"
#include "../support/check.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* One small dense tensor with its state, stepped by `opt`. */
typedef struct {
    float param[30], grad[30];
    unsigned char *state;
    mlorc_tensor t;
} tensor;

static void tensor_init(tensor *x, mlorc_optimizer *opt) {
    mlorc_tensor_layout layout = {6, 5, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
    size_t bytes = 0;
    int i;
    CHECK_RC(mlorc_state_size(opt, &layout, &bytes), MLORC_OK);
    x->state = xmalloc(bytes);
    CHECK_RC(mlorc_state_init(opt, &layout, 1, x->state, bytes), MLORC_OK);
    for (i = 0; i < 30; ++i) {
        x->param[i] = (float)i / 30.0f - 0.5f;
        x->grad[i] = (float)((i * 7) % 11) / 11.0f - 0.5f;
    }
    memset(&x->t, 0, sizeof x->t);
    x->t.param = x->param;
    x->t.grad = x->grad;
    x->t.state = x->state;
    x->t.state_bytes = bytes;
    x->t.rows = 6;
    x->t.cols = 5;
}

/* 1 if the tensor's parameters and state equal `saved`'s. */
static int tensor_same(const tensor *x, const tensor *saved) {
    return memcmp(x->param, saved->param, sizeof x->param) == 0 &&
           memcmp(x->state, saved->state, x->t.state_bytes) == 0;
}

static tensor tensor_copy(const tensor *x) {
    tensor c = *x;
    c.state = xmalloc(x->t.state_bytes);
    memcpy(c.state, x->state, x->t.state_bytes);
    return c;
}

static mlorc_optimizer *make(int rule) {
    mlorc_optimizer *opt = NULL;
    CHECK_RC(mlorc_create(&opt, rule), MLORC_OK);
    check_handle = opt;
    return opt;
}

static int adapts_step_size(int rule) { return rule == MLORC_RULE_PRODIGY || rule == MLORC_RULE_DADAPT_LION; }

/* Counts no array of mlorc_tensor can have: refused as INVALID_ARGUMENT
 * whatever else is wrong (NULL array, bad lr, a D-adaptation handle without
 * its group state), before anything is read. */
static void test_count_too_large(int rule) {
    const size_t counts[] = {
        (size_t)-1,                               /* (size_t)-1: a negative count */
        (size_t)0 - sizeof(mlorc_tensor),         /* minus one element's size */
        ((size_t)1 << (sizeof(size_t) * 8 - 1)),  /* the top bit alone */
        SIZE_MAX / sizeof(mlorc_tensor) + 1,      /* more bytes than memory has */
        (size_t)MLORC_MAX_STEP_TENSORS + 1,       /* the first count above the limit */
    };
    const double lrs[] = {1e-3, NAN, -1.0, INFINITY};
    mlorc_optimizer *opt = make(rule);
    unsigned char group[MLORC_GROUP_STATE_BYTES];
    tensor x, saved;
    size_t c, l;

    tensor_init(&x, opt);
    saved = tensor_copy(&x);
    if (adapts_step_size(rule)) CHECK_RC(mlorc_group_state_init(opt, group, sizeof group), MLORC_OK);
    for (c = 0; c < sizeof counts / sizeof counts[0]; ++c)
        for (l = 0; l < sizeof lrs / sizeof lrs[0]; ++l) {
            CHECK_RC(mlorc_step(opt, NULL, counts[c], lrs[l]), MLORC_ERROR_INVALID_ARGUMENT);
            CHECK(strstr(mlorc_last_error(opt), "count") != NULL);
            /* A real array in front: it is not read past its first element
             * (nothing is read at all: the count is checked first). */
            CHECK_RC(mlorc_step(opt, &x.t, counts[c], lrs[l]), MLORC_ERROR_INVALID_ARGUMENT);
            CHECK_RC(mlorc_step_group(opt, &x.t, counts[c], lrs[l], NULL, 0), MLORC_ERROR_INVALID_ARGUMENT);
            if (adapts_step_size(rule))
                CHECK_RC(mlorc_step_group(opt, NULL, counts[c], lrs[l], group, sizeof group),
                         MLORC_ERROR_INVALID_ARGUMENT);
            CHECK(tensor_same(&x, &saved));
        }
    /* The top-bit count is named as such. */
    CHECK_RC(mlorc_step(opt, NULL, (size_t)-1, 1e-3), MLORC_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(mlorc_last_error(opt), "top bit") != NULL);
    /* The limit itself is a valid count: then the NULL array is the problem. */
    CHECK_RC(mlorc_step(opt, NULL, MLORC_MAX_STEP_TENSORS, 1e-3), MLORC_ERROR_NULL_POINTER);
    /* Without a handle there is nowhere to put a message: NULL_POINTER first. */
    CHECK_RC(mlorc_step(NULL, NULL, (size_t)-1, 1e-3), MLORC_ERROR_NULL_POINTER);
    /* The tensor still steps. */
    if (adapts_step_size(rule))
        CHECK_RC(mlorc_step_group(opt, &x.t, 1, 1e-3, group, sizeof group), MLORC_OK);
    else
        CHECK_RC(mlorc_step(opt, &x.t, 1, 1e-3), MLORC_OK);
    CHECK(!tensor_same(&x, &saved));
    free(x.state);
    free(saved.state);
    mlorc_free(opt);
    check_handle = NULL;
}

/* count 0 steps nothing but still checks the handle, the lr and the group
 * state the rule needs; it changes nothing (the group state included). */
static void test_count_zero(int rule) {
    const double bad_lrs[] = {NAN, -NAN, -1e-3, -INFINITY, INFINITY};
    mlorc_optimizer *opt = make(rule), *other = NULL;
    unsigned char group[MLORC_GROUP_STATE_BYTES], saved_group[MLORC_GROUP_STATE_BYTES];
    unsigned char other_group[MLORC_GROUP_STATE_BYTES];
    tensor x;
    size_t l;

    tensor_init(&x, opt);
    for (l = 0; l < sizeof bad_lrs / sizeof bad_lrs[0]; ++l) {
        /* (Checked before the group state: the D-adaptation rules say lr too.) */
        CHECK_RC(mlorc_step(opt, NULL, 0, bad_lrs[l]), MLORC_ERROR_INVALID_ARGUMENT);
        CHECK(strstr(mlorc_last_error(opt), "lr") != NULL);
        CHECK_RC(mlorc_step(opt, &x.t, 0, bad_lrs[l]), MLORC_ERROR_INVALID_ARGUMENT);
    }
    CHECK_RC(mlorc_step(NULL, NULL, 0, 1e-3), MLORC_ERROR_NULL_POINTER);
    if (!adapts_step_size(rule)) {
        CHECK_RC(mlorc_step(opt, NULL, 0, 1e-3), MLORC_OK);
        CHECK_RC(mlorc_step(opt, &x.t, 0, 0.0), MLORC_OK);
        CHECK_RC(mlorc_step_group(opt, NULL, 0, 1e-3, NULL, 0), MLORC_OK);
        /* A group state is refused by the rules without one, count 0 or not. */
        memset(group, 0, sizeof group);
        CHECK_RC(mlorc_step_group(opt, NULL, 0, 1e-3, group, sizeof group), MLORC_ERROR_INVALID_ARGUMENT);
    } else {
        /* The D-adaptation rules need their group state even for no tensors. */
        CHECK_RC(mlorc_step(opt, NULL, 0, 1e-3), MLORC_ERROR_NULL_POINTER);
        CHECK_RC(mlorc_group_state_init(opt, group, sizeof group), MLORC_OK);
        memcpy(saved_group, group, sizeof group);
        CHECK_RC(mlorc_step_group(opt, NULL, 0, 1.0, group, sizeof group), MLORC_OK);
        CHECK(memcmp(group, saved_group, sizeof group) == 0); /* not advanced */
        CHECK_RC(mlorc_step_group(opt, NULL, 0, NAN, group, sizeof group), MLORC_ERROR_INVALID_ARGUMENT);
        CHECK_RC(mlorc_step_group(opt, NULL, 0, 1.0, group, sizeof group - 1), MLORC_ERROR_STATE_TOO_SMALL);
        group[30] ^= 1; /* inside d: the checksum no longer matches */
        CHECK_RC(mlorc_step_group(opt, NULL, 0, 1.0, group, sizeof group), MLORC_ERROR_STATE_CORRUPTED);
        group[30] ^= 1;
        CHECK_RC(mlorc_create(&other, rule == MLORC_RULE_PRODIGY ? MLORC_RULE_DADAPT_LION : MLORC_RULE_PRODIGY),
                 MLORC_OK);
        CHECK_RC(mlorc_group_state_init(other, other_group, sizeof other_group), MLORC_OK);
        CHECK_RC(mlorc_step_group(opt, NULL, 0, 1.0, other_group, sizeof other_group), MLORC_ERROR_STATE_MISMATCH);
        mlorc_free(other);
        CHECK(memcmp(group, saved_group, sizeof group) == 0);
    }
    free(x.state);
    mlorc_free(opt);
    check_handle = NULL;
}

/* A step of `count` tensors refused as INVALID_ARGUMENT with `part` in the
 * message; `watched` (parameters and states) unchanged. */
static void refuse_at(mlorc_optimizer *opt, const mlorc_tensor *t, size_t count, const char *part, tensor *watched,
                      size_t watched_count, int line) {
    tensor saved[4];
    size_t i;
    for (i = 0; i < watched_count; ++i) saved[i] = tensor_copy(&watched[i]);
    check_rc_at(mlorc_step(opt, t, count, 1e-3), MLORC_ERROR_INVALID_ARGUMENT, "mlorc_step", __FILE__, line);
    if (!strstr(mlorc_last_error(opt), part)) fprintf(stderr, "message lacks \"%s\"\n", part);
    check_at(strstr(mlorc_last_error(opt), part) != NULL, "the message names the problem", __FILE__, line);
    for (i = 0; i < watched_count; ++i) {
        check_at(tensor_same(&watched[i], &saved[i]), "refused step changed nothing", __FILE__, line);
        free(saved[i].state);
    }
}
#define REFUSE(opt, t, count, part, watched, watched_count) \
    refuse_at((opt), (t), (count), (part), (watched), (watched_count), __LINE__)

/* Buffers must be 4-byte aligned; written ones must not alias anything. */
static void test_buffers(void) {
    mlorc_optimizer *opt = make(MLORC_RULE_ADAMW);
    tensor x[2];
    mlorc_tensor t[2];
    unsigned char *odd, *odd_state;
    size_t bytes;

    tensor_init(&x[0], opt);
    tensor_init(&x[1], opt);
    bytes = x[0].t.state_bytes;
    odd = xmalloc(4 * 30 + 1);
    odd_state = xmalloc(bytes + 1);
    memcpy(odd + 1, x[0].param, 4 * 30);
    memcpy(odd_state + 1, x[0].state, bytes);

    t[0] = x[0].t;
    t[0].param = odd + 1;
    REFUSE(opt, t, 1, "param pointer is not 4-byte aligned", x, 2);
    t[0] = x[0].t;
    t[0].grad = odd + 1;
    REFUSE(opt, t, 1, "grad pointer is not 4-byte aligned", x, 2);
    t[0] = x[0].t;
    t[0].state = odd_state + 1;
    REFUSE(opt, t, 1, "state pointer is not 4-byte aligned", x, 2);
    CHECK(memcmp(odd_state + 1, x[0].state, bytes) == 0);

    /* param == grad, and a gradient inside the parameters. */
    t[0] = x[0].t;
    t[0].grad = t[0].param;
    REFUSE(opt, t, 1, "overlaps", x, 2);
    t[0].grad = x[0].param + 4;
    REFUSE(opt, t, 1, "overlaps", x, 2);
    /* Two tensors sharing one parameter, or one state. */
    t[0] = x[0].t;
    t[1] = x[1].t;
    t[1].param = x[0].param;
    REFUSE(opt, t, 2, "overlaps", x, 2);
    t[1] = x[1].t;
    t[1].state = x[0].state;
    REFUSE(opt, t, 2, "overlaps", x, 2);
    /* One gradient for two tensors is fine (gradients are only read). */
    t[1] = x[1].t;
    t[1].grad = x[0].grad;
    CHECK_RC(mlorc_step(opt, t, 2, 1e-3), MLORC_OK);
    free(odd);
    free(odd_state);
    free(x[0].state);
    free(x[1].state);
    mlorc_free(opt);
    check_handle = NULL;
}

int main(void) {
    int rule;
    test_buffers();
    for (rule = MLORC_RULE_ADAMW; rule <= MLORC_RULE_MOFASGD; ++rule) {
        test_count_too_large(rule);
        test_count_zero(rule);
    }
    printf("step_args_test: %lu checks passed\n", checks_run);
    return 0;
}
