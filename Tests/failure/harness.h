/*
 * harness.h - checks and a small batched model for failure_test.c.
 *
 * A model is a batch of tensors (dense and low-rank, AdamW or Lion) with
 * caller-owned parameters, gradients and states, as a training loop holds
 * them. A snapshot copies every parameter and state byte so a refused call
 * can be shown to have changed nothing.
 */
#ifndef MLORC_FAILURE_HARNESS_H
#define MLORC_FAILURE_HARNESS_H

#include "mlorc.h"
#include "../support/step_any.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long checks_run; /* counted atomically: worker threads check too */

static void check_at(int ok, const char *what, const char *file, int line, const mlorc_optimizer *opt) {
    __atomic_fetch_add(&checks_run, 1, __ATOMIC_RELAXED);
    if (!ok) {
        fprintf(stderr, "%s:%d: check failed: %s\n  mlorc_last_error: \"%s\"\n", file, line, what,
                mlorc_last_error(opt));
        exit(1);
    }
}
/* Not <assert.h>: these must hold under NDEBUG too. */
#define CHECK(cond) check_at((cond) != 0, #cond, __FILE__, __LINE__, NULL)
/* A call on `opt` returning `want`; a failure prints the handle's message. */
#define CHECK_RC(opt, call, want)                                                                     \
    do {                                                                                              \
        int rc_ = (call);                                                                             \
        if (rc_ != (want)) fprintf(stderr, "%s returned %d (%s)\n", #call, rc_, mlorc_status_string(rc_)); \
        check_at(rc_ == (want), #call " == " #want, __FILE__, __LINE__, (opt));                       \
    } while (0)

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%lu bytes)\n", (unsigned long)n);
        exit(2);
    }
    return p;
}

/* splitmix64: the same data on every platform and libc. */
static float rng_uniform(uint64_t *s) { /* [-1, 1) */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

static mlorc_optimizer *make(int rule, int threads) {
    mlorc_optimizer *opt = NULL;
    CHECK_RC(NULL, mlorc_create(&opt, rule), MLORC_OK);
    CHECK_RC(opt, mlorc_set_param(opt, MLORC_PARAM_RANK, 2), MLORC_OK);
    CHECK_RC(opt, mlorc_set_param(opt, MLORC_PARAM_OVERSAMPLING, 2), MLORC_OK);
    CHECK_RC(opt, mlorc_set_param(opt, MLORC_PARAM_POWER_ITERATIONS, 1), MLORC_OK);
    CHECK_RC(opt, mlorc_set_param(opt, MLORC_PARAM_THREADS, threads), MLORC_OK);
    return opt;
}

#define MAX_TENSORS 8
typedef struct {
    int64_t rows, cols;
    int storage;
} shape;

typedef struct {
    size_t count;
    mlorc_tensor t[MAX_TENSORS];
    float *param[MAX_TENSORS], *grad[MAX_TENSORS];
    unsigned char *state[MAX_TENSORS];
    size_t elements[MAX_TENSORS];
} model;

/* The default batch: a low-rank matrix, a dense matrix, a vector. */
static const shape small_model[3] = {{24, 20, MLORC_STORAGE_LOWRANK}, {6, 5, MLORC_STORAGE_DENSE}, {1, 9, MLORC_STORAGE_AUTO}};

static void model_init(model *m, mlorc_optimizer *opt, const shape *shapes, size_t count, uint64_t seed) {
    size_t i, j;
    memset(m, 0, sizeof *m);
    m->count = count;
    for (i = 0; i < count; ++i) {
        mlorc_tensor_layout layout = {shapes[i].rows, shapes[i].cols, MLORC_DTYPE_F32, shapes[i].storage};
        size_t bytes = 0, n = (size_t)(shapes[i].rows * shapes[i].cols);
        CHECK_RC(opt, mlorc_state_size(opt, &layout, &bytes), MLORC_OK);
        m->elements[i] = n;
        m->param[i] = xmalloc(4 * n);
        m->grad[i] = xmalloc(4 * n);
        m->state[i] = xmalloc(bytes);
        for (j = 0; j < n; ++j) m->param[i][j] = rng_uniform(&seed);
        CHECK_RC(opt, mlorc_state_init(opt, &layout, i, m->state[i], bytes), MLORC_OK);
        m->t[i].param = m->param[i];
        m->t[i].grad = m->grad[i];
        m->t[i].state = m->state[i];
        m->t[i].state_bytes = bytes;
        m->t[i].rows = shapes[i].rows;
        m->t[i].cols = shapes[i].cols;
        m->t[i].dtype = MLORC_DTYPE_F32;
    }
}

static void model_grads(model *m, uint64_t seed) {
    size_t i, j;
    for (i = 0; i < m->count; ++i)
        for (j = 0; j < m->elements[i]; ++j) m->grad[i][j] = rng_uniform(&seed);
}

/* `steps` steps with fresh gradients each (seeded by step number). */
static void model_train(model *m, mlorc_optimizer *opt, int steps, uint64_t seed) {
    int s;
    for (s = 0; s < steps; ++s) {
        model_grads(m, seed * 1000003u + (uint64_t)s);
        CHECK_RC(opt, mlorc_test_step_any(opt, m->t, m->count, 1e-2), MLORC_OK);
    }
}

static void model_free(model *m) {
    size_t i;
    for (i = 0; i < m->count; ++i) {
        free(m->param[i]);
        free(m->grad[i]);
        free(m->state[i]);
    }
    memset(m, 0, sizeof *m);
}

/* 1 if a and b hold bit-identical parameters and states. */
static int model_same(const model *a, const model *b) {
    size_t i;
    if (a->count != b->count) return 0;
    for (i = 0; i < a->count; ++i)
        if (a->t[i].state_bytes != b->t[i].state_bytes || memcmp(a->param[i], b->param[i], 4 * a->elements[i]) != 0 ||
            memcmp(a->state[i], b->state[i], a->t[i].state_bytes) != 0)
            return 0;
    return 1;
}

/* A deep copy of parameters, gradients and states (pointers rewired). */
static void model_copy(model *dst, const model *src) {
    size_t i;
    *dst = *src;
    for (i = 0; i < src->count; ++i) {
        dst->param[i] = memcpy(xmalloc(4 * src->elements[i]), src->param[i], 4 * src->elements[i]);
        dst->grad[i] = memcpy(xmalloc(4 * src->elements[i]), src->grad[i], 4 * src->elements[i]);
        dst->state[i] = memcpy(xmalloc(src->t[i].state_bytes), src->state[i], src->t[i].state_bytes);
        dst->t[i].param = dst->param[i];
        dst->t[i].grad = dst->grad[i];
        dst->t[i].state = dst->state[i];
    }
}

#endif
