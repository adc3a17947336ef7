/*
 * api_test.c - exercises every function of include/mlorc.h through the C ABI.
 *
 * The checks follow the header's contract, not the implementation: statuses
 * are the documented ones, and every refused call must leave parameters,
 * states and handle settings bit for bit as they were ("a call that fails
 * changes nothing"). A failed check prints file:line, the expression and the
 * library's mlorc_last_error(), then exits 1.
 */
#include "mlorc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ harness */

static unsigned long checks_run;
/* The handle whose mlorc_last_error() a failing check prints (NULL is fine:
 * the library then returns a static message). */
static const mlorc_optimizer *current;

static void fail_at(const char *file, int line, const char *what) {
    fprintf(stderr, "%s:%d: check failed: %s\n  mlorc_last_error: \"%s\"\n", file, line, what,
            mlorc_last_error(current));
    exit(1);
}

static void check_at(int ok, const char *what, const char *file, int line) {
    ++checks_run;
    if (!ok) fail_at(file, line, what);
}

static void check_rc_at(int rc, int want, const char *call, const char *file, int line) {
    ++checks_run;
    if (rc != want) {
        fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", file, line, call, rc,
                mlorc_status_string(rc), want, mlorc_status_string(want));
        fail_at(file, line, call);
    }
}

/* Not <assert.h>: these must run under NDEBUG too. */
#define CHECK(cond) check_at((cond) != 0, #cond, __FILE__, __LINE__)
#define CHECK_RC(call, want) check_rc_at((call), (want), #call, __FILE__, __LINE__)

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%lu bytes)\n", (unsigned long)n);
        exit(2);
    }
    return p;
}

/* splitmix64: reproducible test data without depending on rand(). */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float rng_uniform(uint64_t *s) { /* [-1, 1) */
    return (float)((double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}
static void fill(float *p, size_t n, uint64_t seed) {
    uint64_t s = seed;
    size_t i;
    for (i = 0; i < n; ++i) p[i] = rng_uniform(&s);
}

/* Frees a handle and forgets it as the one failures report on. */
static void release(mlorc_optimizer *opt) {
    if (current == opt) current = NULL;
    mlorc_free(opt);
}

static mlorc_optimizer *make(int rule) {
    mlorc_optimizer *opt = NULL;
    CHECK_RC(mlorc_create(&opt, rule), MLORC_OK);
    CHECK(opt != NULL);
    current = opt;
    return opt;
}

static mlorc_tensor_layout layout_of(int64_t rows, int64_t cols, int storage) {
    mlorc_tensor_layout l;
    memset(&l, 0, sizeof l);
    l.rows = rows;
    l.cols = cols;
    l.dtype = MLORC_DTYPE_F32;
    l.storage = storage;
    return l;
}

static size_t moments_of(int rule) { return rule == MLORC_RULE_ADAMW ? 2 : 1; }
/* The sizes documented in the header: 128-byte header + fp32 payload. */
static size_t lowrank_bytes(int rule, size_t m, size_t n, size_t r) {
    return 128 + 4 * moments_of(rule) * r * (m + n + 1);
}
static size_t dense_bytes(int rule, size_t m, size_t n) { return 128 + 4 * moments_of(rule) * m * n; }

/* ------------------------------------------------ "changes nothing" watch */

/* A set of memory regions copied before a call that must be refused, and
 * compared byte for byte afterwards. */
typedef struct {
    const void *p[16];
    size_t n[16];
    unsigned char *copy[16];
    int count;
} watch;

static void watch_add(watch *w, const void *p, size_t n) {
    if (w->count == 16) {
        fprintf(stderr, "watch full\n");
        exit(2);
    }
    w->p[w->count] = p;
    w->n[w->count] = n;
    w->copy[w->count] = xmalloc(n);
    memcpy(w->copy[w->count], p, n);
    w->count++;
}
static int watch_same(const watch *w) {
    int i;
    for (i = 0; i < w->count; ++i)
        if (memcmp(w->p[i], w->copy[i], w->n[i]) != 0) return 0;
    return 1;
}
static void watch_free(watch *w) {
    int i;
    for (i = 0; i < w->count; ++i) free(w->copy[i]);
    w->count = 0;
}

#define PARAM_KEYS 19    /* rows of specs[] */
#define MAX_PARAM_KEY 30 /* keys 1..30 are read back (unassigned ones are unknown) */
/* Every hyperparameter of a handle (NAN where the key does not apply), so a
 * refused call can be shown not to have touched the handle's settings. */
static void read_params(const mlorc_optimizer *opt, double out[MAX_PARAM_KEY]) {
    int k;
    for (k = 1; k <= MAX_PARAM_KEY; ++k) {
        double v = NAN;
        if (mlorc_get_param(opt, k, &v) != MLORC_OK) v = -12345.0;
        out[k - 1] = v;
    }
}

/* --------------------------------------------------------------- tests */

static void test_version(void) {
    char expect[64];
    current = NULL;
    CHECK(mlorc_version_number() == (unsigned)MLORC_VERSION_NUMBER);
    CHECK(MLORC_VERSION_NUMBER == MLORC_VERSION_MAJOR * 10000 + MLORC_VERSION_MINOR * 100 + MLORC_VERSION_PATCH);
    CHECK(mlorc_version_number() / 10000 == MLORC_VERSION_MAJOR);
    sprintf(expect, "%d.%d.%d", MLORC_VERSION_MAJOR, MLORC_VERSION_MINOR, MLORC_VERSION_PATCH);
    CHECK(mlorc_version_string() != NULL);
    CHECK(strcmp(mlorc_version_string(), expect) == 0);
    /* Static string: the same pointer every call. */
    CHECK(mlorc_version_string() == mlorc_version_string());
}

static void test_status_strings(void) {
    const int unknown[] = {-1, 16, 17, 100, -2147483647 - 1, 2147483647};
    const char *known[16];
    int i, j;
    current = NULL;
    for (i = MLORC_OK; i <= MLORC_ERROR_REDUCTION; ++i) {
        known[i] = mlorc_status_string(i);
        CHECK(known[i] != NULL);
        CHECK(known[i][0] != '\0');
        CHECK(strcmp(known[i], "unknown status") != 0);
        for (j = 0; j < i; ++j) CHECK(strcmp(known[i], known[j]) != 0); /* distinct texts */
    }
    for (i = 0; i < (int)(sizeof unknown / sizeof unknown[0]); ++i) {
        CHECK(mlorc_status_string(unknown[i]) != NULL);
        CHECK(strcmp(mlorc_status_string(unknown[i]), "unknown status") == 0);
    }
}

static void test_create_free(void) {
    mlorc_optimizer *opt;
    const int bad_rules[] = {0, 99, -1, 1000};
    int i, rule = 0;

    current = NULL;
    for (i = 0; i < (int)(sizeof bad_rules / sizeof bad_rules[0]); ++i) {
        opt = (mlorc_optimizer *)&rule; /* non-NULL garbage: must be reset to NULL */
        CHECK_RC(mlorc_create(&opt, bad_rules[i]), MLORC_ERROR_INVALID_ARGUMENT);
        CHECK(opt == NULL);
    }
    CHECK_RC(mlorc_create(NULL, MLORC_RULE_ADAMW), MLORC_ERROR_NULL_POINTER);
    mlorc_free(NULL); /* documented no-op */

    opt = make(MLORC_RULE_ADAMW);
    CHECK_RC(mlorc_get_rule(opt, &rule), MLORC_OK);
    CHECK(rule == MLORC_RULE_ADAMW);
    CHECK(mlorc_last_error(opt) != NULL && strcmp(mlorc_last_error(opt), "") == 0); /* nothing failed yet */
    CHECK_RC(mlorc_get_rule(opt, NULL), MLORC_ERROR_NULL_POINTER);
    CHECK(strlen(mlorc_last_error(opt)) > 0); /* a failure leaves a message */
    release(opt);

    opt = make(MLORC_RULE_LION);
    CHECK_RC(mlorc_get_rule(opt, &rule), MLORC_OK);
    CHECK(rule == MLORC_RULE_LION);
    release(opt);

    current = NULL;
    CHECK_RC(mlorc_get_rule(NULL, &rule), MLORC_ERROR_NULL_POINTER);
    CHECK(mlorc_last_error(NULL) != NULL); /* static message for a NULL handle */
}

/* One row per key: defaults and documented bounds. */
typedef struct {
    int key;
    const char *name;
    int integer;
    int adamw_has, lion_has, adopt_has;
    double adamw_default, lion_default, adopt_default;
    double lo, hi; /* documented inclusive bounds; hi < 0 means "[lo, 1)" */
    int came_has;
    double came_default;
} param_spec;

static const param_spec specs[PARAM_KEYS] = {
    /* key, name, integer, adamw/lion/adopt have it, their defaults, bounds, CAME has it, its default */
    {MLORC_PARAM_BETA1, "beta1", 0, 1, 1, 1, 0.9, 0.95, 0.9, 0, -1, 1, 0.9},
    {MLORC_PARAM_BETA2, "beta2", 0, 1, 1, 1, 0.999, 0.98, 0.9999, 0, -1, 1, 0.999},
    {MLORC_PARAM_EPS, "eps", 0, 1, 0, 1, 1e-8, 0, 1e-6, 0, 1, 1, 1e-30},
    {MLORC_PARAM_WEIGHT_DECAY, "weight_decay", 0, 1, 1, 1, 0.01, 0.05, 0, 0, 1e3, 1, 0},
    {MLORC_PARAM_RANK, "rank", 1, 1, 1, 1, 4, 4, 4, 1, 65536, 1, 4},
    {MLORC_PARAM_OVERSAMPLING, "oversampling", 1, 1, 1, 1, 0, 0, 0, 0, 1024, 1, 0},
    {MLORC_PARAM_POWER_ITERATIONS, "power_iterations", 1, 1, 1, 1, 0, 0, 0, 0, 16, 1, 0},
    {MLORC_PARAM_BIAS_CORRECTION, "bias_correction", 1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0},
    {MLORC_PARAM_SEED, "seed", 1, 1, 1, 1, 0, 0, 0, 0, 9007199254740992.0 /* 2^53 */, 1, 0},
    {MLORC_PARAM_THREADS, "threads", 1, 1, 1, 1, 1, 1, 1, 1, 256, 1, 1},
    {MLORC_PARAM_ADOPT_CLIP, "adopt_clip", 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0},
    {MLORC_PARAM_GRAMS, "grams", 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0},
    {MLORC_PARAM_ATAN2, "atan2", 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0},
    {MLORC_PARAM_CAUTIOUS, "cautious", 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0},
    {MLORC_PARAM_ORTHOGRAD, "orthograd", 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0},
    {MLORC_PARAM_CLIP_NORM, "clip_norm", 0, 1, 1, 1, 0, 0, 0, 0, 1e30, 0, 0},
    /* CAME's own keys. */
    {MLORC_PARAM_BETA3, "beta3", 0, 0, 0, 0, 0, 0, 0, 0, -1, 1, 0.9999},
    {MLORC_PARAM_EPS2, "eps2", 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1e-16},
    {MLORC_PARAM_CAME_CLIP, "came_clip", 0, 0, 0, 0, 0, 0, 0, 1e-6, 1e6, 1, 1.0},
};

/* Sets an invalid value and checks it is refused and nothing changed. */
static void refuse_param(mlorc_optimizer *opt, int key, double value, int want, int line) {
    double before[MAX_PARAM_KEY], after[MAX_PARAM_KEY];
    read_params(opt, before);
    check_rc_at(mlorc_set_param(opt, key, value), want, "mlorc_set_param(invalid value)", __FILE__, line);
    read_params(opt, after);
    check_at(memcmp(before, after, sizeof before) == 0, "old parameter values kept", __FILE__, line);
}

static void test_params(int rule) {
    mlorc_optimizer *opt = make(rule);
    double v, lo, hi;
    int i;

    for (i = 0; i < PARAM_KEYS; ++i) {
        const param_spec *s = &specs[i];
        int applies = rule == MLORC_RULE_ADAMW ? s->adamw_has
                      : rule == MLORC_RULE_LION ? s->lion_has
                      : rule == MLORC_RULE_CAME ? s->came_has : s->adopt_has;
        double default_value = rule == MLORC_RULE_ADAMW ? s->adamw_default
                               : rule == MLORC_RULE_LION ? s->lion_default
                               : rule == MLORC_RULE_CAME ? s->came_default : s->adopt_default;
        if (!applies) {
            /* Keys of other rules (EPS for Lion, BIAS_CORRECTION, ADOPT_CLIP) are unknown. */
            refuse_param(opt, s->key, 0.5, MLORC_ERROR_UNKNOWN_PARAM, __LINE__);
            refuse_param(opt, s->key, 0.0, MLORC_ERROR_UNKNOWN_PARAM, __LINE__);
            CHECK_RC(mlorc_get_param(opt, s->key, &v), MLORC_ERROR_UNKNOWN_PARAM);
            CHECK_RC(mlorc_param_bounds(rule, s->key, &lo, &hi), MLORC_ERROR_UNKNOWN_PARAM);
            continue;
        }
        /* Default. */
        CHECK_RC(mlorc_get_param(opt, s->key, &v), MLORC_OK);
        CHECK(v == default_value);

        /* Bounds as documented. */
        CHECK_RC(mlorc_param_bounds(rule, s->key, &lo, &hi), MLORC_OK);
        CHECK(lo == s->lo);
        if (s->hi < 0) {
            CHECK(hi < 1.0 && hi >= 0.999); /* [0, 1): 1 itself excluded, the defaults included */
        } else {
            CHECK(hi == s->hi);
        }
        CHECK(v >= lo && v <= hi);

        /* Both ends are inclusive and round-trip exactly. */
        CHECK_RC(mlorc_set_param(opt, s->key, lo), MLORC_OK);
        CHECK_RC(mlorc_get_param(opt, s->key, &v), MLORC_OK);
        CHECK(v == lo);
        CHECK_RC(mlorc_set_param(opt, s->key, hi), MLORC_OK);
        CHECK_RC(mlorc_get_param(opt, s->key, &v), MLORC_OK);
        CHECK(v == hi);

        /* Out of range, non-finite, and non-integral values are refused and
         * the old value (hi, just set) stays. */
        /* (Next integer above 2^53 that a double can hold is 2^53 + 2.) */
        refuse_param(opt, s->key, s->hi < 0 ? 1.0 : hi + (s->integer ? (hi > 1e6 ? 2.0 : 1.0) : hi * 1e-6 + 1e-9),
                     MLORC_ERROR_PARAM_OUT_OF_RANGE, __LINE__);
        refuse_param(opt, s->key, lo - (s->integer ? 1.0 : 1e-9), MLORC_ERROR_PARAM_OUT_OF_RANGE, __LINE__);
        refuse_param(opt, s->key, -1e300, MLORC_ERROR_PARAM_OUT_OF_RANGE, __LINE__);
        refuse_param(opt, s->key, NAN, MLORC_ERROR_PARAM_OUT_OF_RANGE, __LINE__);
        refuse_param(opt, s->key, INFINITY, MLORC_ERROR_PARAM_OUT_OF_RANGE, __LINE__);
        refuse_param(opt, s->key, -INFINITY, MLORC_ERROR_PARAM_OUT_OF_RANGE, __LINE__);
        if (s->integer) {
            refuse_param(opt, s->key, lo + 0.5, MLORC_ERROR_PARAM_OUT_OF_RANGE, __LINE__);
            /* (2^53 - 0.25 is not a double; use a representable fraction there.) */
            refuse_param(opt, s->key, hi > 1e6 ? 1e6 + 0.5 : hi - 0.25, MLORC_ERROR_PARAM_OUT_OF_RANGE, __LINE__);
        }
        CHECK_RC(mlorc_get_param(opt, s->key, &v), MLORC_OK);
        CHECK(v == hi);

        /* Back to the default. */
        CHECK_RC(mlorc_set_param(opt, s->key, default_value),
                 MLORC_OK);
    }

    /* A value strictly inside the range is stored exactly. */
    CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_BETA1, 0.875), MLORC_OK);
    CHECK_RC(mlorc_get_param(opt, MLORC_PARAM_BETA1, &v), MLORC_OK);
    CHECK(v == 0.875);
    CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_SEED, 123456789.0), MLORC_OK);
    CHECK_RC(mlorc_get_param(opt, MLORC_PARAM_SEED, &v), MLORC_OK);
    CHECK(v == 123456789.0);

    /* Keys that are no mlorc_param at all. */
    refuse_param(opt, 0, 1.0, MLORC_ERROR_UNKNOWN_PARAM, __LINE__);
    refuse_param(opt, 1000, 1.0, MLORC_ERROR_UNKNOWN_PARAM, __LINE__);
    refuse_param(opt, -5, 1.0, MLORC_ERROR_UNKNOWN_PARAM, __LINE__);
    CHECK_RC(mlorc_get_param(opt, 99, &v), MLORC_ERROR_UNKNOWN_PARAM);

    /* NULL pointers. */
    CHECK_RC(mlorc_get_param(opt, MLORC_PARAM_BETA1, NULL), MLORC_ERROR_NULL_POINTER);
    CHECK_RC(mlorc_get_param(NULL, MLORC_PARAM_BETA1, &v), MLORC_ERROR_NULL_POINTER);
    CHECK_RC(mlorc_set_param(NULL, MLORC_PARAM_BETA1, 0.5), MLORC_ERROR_NULL_POINTER);
    CHECK_RC(mlorc_param_bounds(rule, MLORC_PARAM_BETA1, NULL, &hi), MLORC_ERROR_NULL_POINTER);
    CHECK_RC(mlorc_param_bounds(rule, MLORC_PARAM_BETA1, &lo, NULL), MLORC_ERROR_NULL_POINTER);
    release(opt);
}

static void test_param_bounds_misc(void) {
    double lo = -7, hi = -7;
    current = NULL;
    CHECK_RC(mlorc_param_bounds(0, MLORC_PARAM_BETA1, &lo, &hi), MLORC_ERROR_INVALID_ARGUMENT);
    CHECK_RC(mlorc_param_bounds(99, MLORC_PARAM_BETA1, &lo, &hi), MLORC_ERROR_INVALID_ARGUMENT);
    CHECK_RC(mlorc_param_bounds(MLORC_RULE_ADAMW, 0, &lo, &hi), MLORC_ERROR_UNKNOWN_PARAM);
    CHECK_RC(mlorc_param_bounds(MLORC_RULE_LION, 11, &lo, &hi), MLORC_ERROR_UNKNOWN_PARAM);
    CHECK_RC(mlorc_param_bounds(MLORC_RULE_ADOPT, 17, &lo, &hi), MLORC_ERROR_UNKNOWN_PARAM);
    CHECK_RC(mlorc_param_bounds(MLORC_RULE_GALORE_ADAMW, 19, &lo, &hi), MLORC_ERROR_UNKNOWN_PARAM);
    CHECK_RC(mlorc_param_bounds(MLORC_RULE_CAME, MLORC_PARAM_GRAMS, &lo, &hi), MLORC_ERROR_UNKNOWN_PARAM);
    CHECK(lo == -7 && hi == -7); /* refused calls wrote nothing */
}

/* MoFaSGD: every key a handle could name (1..30, including those of other
 * rules), whether it applies, its default and documented bounds. */
typedef struct {
    int key;
    int integer;
    double default_value, lo, hi; /* hi < 0 means "[lo, 1)" */
} mofasgd_spec;

static const mofasgd_spec mofasgd_specs[] = {
    {MLORC_PARAM_BETA1, 0, 0.9, 0, -1},
    {MLORC_PARAM_EPS, 0, 1e-8, 0, 1},
    {MLORC_PARAM_WEIGHT_DECAY, 0, 0, 0, 1e3},
    {MLORC_PARAM_RANK, 1, 4, 1, 65536},
    {MLORC_PARAM_OVERSAMPLING, 1, 0, 0, 1024},
    {MLORC_PARAM_POWER_ITERATIONS, 1, 0, 0, 16},
    {MLORC_PARAM_SEED, 1, 0, 0, 9007199254740992.0 /* 2^53 */},
    {MLORC_PARAM_THREADS, 1, 1, 1, 256},
    {MLORC_PARAM_MOFASGD_RECIPROCAL, 1, 0, 0, 1},
    {MLORC_PARAM_MOFASGD_MAX_VALUE, 0, 1e4, 1e-30, 1e30},
    {MLORC_PARAM_MASTER_WEIGHTS, 1, 0, 0, 1},
    {MLORC_PARAM_STOCHASTIC_ROUNDING, 1, 1, 0, 1},
};

static void test_params_mofasgd(void) {
    mlorc_optimizer *opt = make(MLORC_RULE_MOFASGD);
    const size_t count = sizeof mofasgd_specs / sizeof mofasgd_specs[0];
    double v, lo, hi;
    int key, rule;
    size_t i;

    for (key = 0; key <= 30; ++key) {
        const mofasgd_spec *s = NULL;
        for (i = 0; i < count; ++i)
            if (mofasgd_specs[i].key == key) s = &mofasgd_specs[i];
        if (s == NULL) {
            refuse_param(opt, key, 0.5, MLORC_ERROR_UNKNOWN_PARAM, __LINE__);
            CHECK_RC(mlorc_get_param(opt, key, &v), MLORC_ERROR_UNKNOWN_PARAM);
            CHECK_RC(mlorc_param_bounds(MLORC_RULE_MOFASGD, key, &lo, &hi), MLORC_ERROR_UNKNOWN_PARAM);
            continue;
        }
        CHECK_RC(mlorc_get_param(opt, key, &v), MLORC_OK);
        CHECK(v == s->default_value);
        CHECK_RC(mlorc_param_bounds(MLORC_RULE_MOFASGD, key, &lo, &hi), MLORC_OK);
        CHECK(lo == s->lo);
        CHECK(s->hi < 0 ? hi < 1.0 && hi >= 0.999 : hi == s->hi);
        CHECK_RC(mlorc_set_param(opt, key, lo), MLORC_OK);
        CHECK_RC(mlorc_get_param(opt, key, &v), MLORC_OK);
        CHECK(v == lo);
        CHECK_RC(mlorc_set_param(opt, key, hi), MLORC_OK);
        CHECK_RC(mlorc_get_param(opt, key, &v), MLORC_OK);
        CHECK(v == hi);
        refuse_param(opt, key, s->hi < 0 ? 1.0 : hi + (s->integer ? (hi > 1e6 ? 2.0 : 1.0) : hi * 1e-6 + 1e-9),
                     MLORC_ERROR_PARAM_OUT_OF_RANGE, __LINE__);
        refuse_param(opt, key, lo - (s->integer ? 1.0 : 1e-9), MLORC_ERROR_PARAM_OUT_OF_RANGE, __LINE__);
        refuse_param(opt, key, NAN, MLORC_ERROR_PARAM_OUT_OF_RANGE, __LINE__);
        if (s->integer) refuse_param(opt, key, lo + 0.5, MLORC_ERROR_PARAM_OUT_OF_RANGE, __LINE__);
        CHECK_RC(mlorc_set_param(opt, key, s->default_value), MLORC_OK);
    }
    /* MoFaSGD's own keys belong to no other rule. */
    for (rule = MLORC_RULE_ADAMW; rule <= MLORC_RULE_GALORE_ADAMW; ++rule) {
        CHECK_RC(mlorc_param_bounds(rule, MLORC_PARAM_MOFASGD_RECIPROCAL, &lo, &hi), MLORC_ERROR_UNKNOWN_PARAM);
        CHECK_RC(mlorc_param_bounds(rule, MLORC_PARAM_MOFASGD_MAX_VALUE, &lo, &hi), MLORC_ERROR_UNKNOWN_PARAM);
    }
    release(opt);
}

/* MoFaSGD through the ABI: state sizes r(m+n+1) / mn, the 2r <= min(m, n)
 * rule of low-rank storage, steps on a matrix and a vector, a refused step. */
static void test_mofasgd_step(void) {
    mlorc_optimizer *opt = make(MLORC_RULE_MOFASGD);
    mlorc_tensor_layout l = layout_of(64, 40, MLORC_STORAGE_AUTO), lv = layout_of(1, 40, MLORC_STORAGE_AUTO);
    mlorc_state_info info;
    size_t bytes = 0, vbytes = 0, i;
    unsigned char *state, *vstate, *saved;
    float *w = xmalloc(4 * 64 * 40), *g = xmalloc(4 * 64 * 40), *wv = xmalloc(4 * 40), *gv = xmalloc(4 * 40);
    float *w_saved = xmalloc(4 * 64 * 40);
    mlorc_tensor t[2];
    int k;

    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    CHECK(bytes == 128 + 4 * 4 * (64 + 40 + 1));
    CHECK_RC(mlorc_state_size(opt, &lv, &vbytes), MLORC_OK);
    CHECK(vbytes == 128 + 4 * 40);
    l.storage = MLORC_STORAGE_LOWRANK;
    {
        mlorc_tensor_layout narrow = layout_of(7, 40, MLORC_STORAGE_LOWRANK); /* 2r = 8 > 7 */
        size_t b2;
        CHECK_RC(mlorc_state_size(opt, &narrow, &b2), MLORC_ERROR_INVALID_RANK);
    }
    state = xmalloc(bytes);
    vstate = xmalloc(vbytes);
    saved = xmalloc(bytes);
    CHECK_RC(mlorc_state_init(opt, &l, 1, state, bytes), MLORC_OK);
    CHECK_RC(mlorc_state_init(opt, &lv, 2, vstate, vbytes), MLORC_OK);
    fill(w, 64 * 40, 1);
    fill(wv, 40, 2);
    t[0] = (mlorc_tensor){w, g, state, bytes, 64, 40, MLORC_DTYPE_F32, 0};
    t[1] = (mlorc_tensor){wv, gv, vstate, vbytes, 1, 40, MLORC_DTYPE_F32, 0};
    for (k = 0; k < 3; ++k) {
        fill(g, 64 * 40, 10 + (uint64_t)k);
        fill(gv, 40, 20 + (uint64_t)k);
        CHECK_RC(mlorc_step(opt, t, 2, 1e-2), MLORC_OK);
    }
    CHECK_RC(mlorc_state_inspect(state, bytes, &info), MLORC_OK);
    CHECK(info.rule == MLORC_RULE_MOFASGD && info.storage == MLORC_STORAGE_LOWRANK && info.rank == 4 && info.step == 3);
    CHECK_RC(mlorc_state_inspect(vstate, vbytes, &info), MLORC_OK);
    CHECK(info.rule == MLORC_RULE_MOFASGD && info.storage == MLORC_STORAGE_DENSE && info.step == 3);
    for (i = 0; i < 64 * 40; ++i) CHECK(isfinite(w[i]));

    /* A NaN in the vector's gradient refuses the whole batch. */
    memcpy(saved, state, bytes);
    memcpy(w_saved, w, 4 * 64 * 40);
    gv[5] = NAN;
    CHECK_RC(mlorc_step(opt, t, 2, 1e-2), MLORC_ERROR_NON_FINITE);
    CHECK(memcmp(saved, state, bytes) == 0);
    CHECK(memcmp(w_saved, w, 4 * 64 * 40) == 0);
    release(opt);

    /* Another rule's handle refuses MoFaSGD state. */
    opt = make(MLORC_RULE_LION);
    gv[5] = 0;
    CHECK_RC(mlorc_step(opt, t, 1, 1e-2), MLORC_ERROR_STATE_MISMATCH);
    release(opt);
    free(w); free(g); free(wv); free(gv); free(w_saved); free(state); free(vstate); free(saved);
}

/* Initialises a state for `l` and returns its storage as inspect reports it. */
static int resolved_storage(mlorc_optimizer *opt, mlorc_tensor_layout l) {
    size_t bytes = 0;
    unsigned char *state;
    mlorc_state_info info;
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    state = xmalloc(bytes);
    CHECK_RC(mlorc_state_init(opt, &l, 7, state, bytes), MLORC_OK);
    CHECK_RC(mlorc_state_inspect(state, bytes, &info), MLORC_OK);
    CHECK(info.state_bytes == bytes);
    free(state);
    return info.storage;
}

static void test_state_size_and_policy(int rule) {
    mlorc_optimizer *opt = make(rule);
    mlorc_tensor_layout l;
    size_t bytes = 12345, before;
    const int64_t max_dim = 2147483647; /* 2^31 - 1 */

    /* Low-rank: header + 4 * moments * r(m+n+1). */
    l = layout_of(256, 128, MLORC_STORAGE_AUTO);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    CHECK(bytes == lowrank_bytes(rule, 256, 128, 4));
    CHECK(bytes == (rule == MLORC_RULE_ADAMW ? 128 + 4 * 2 * 4 * (256 + 128 + 1) : 128 + 4 * 4 * (256 + 128 + 1)));
    l.storage = MLORC_STORAGE_LOWRANK;
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    CHECK(bytes == lowrank_bytes(rule, 256, 128, 4));
    /* Dense: header + 4 * moments * mn. */
    l.storage = MLORC_STORAGE_DENSE;
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    CHECK(bytes == dense_bytes(rule, 256, 128));
    CHECK(rule != MLORC_RULE_ADAMW || bytes == 128 + 4 * 2 * 256 * 128);

    /* AUTO policy: low-rank iff rows > 1, cols > 1, min(rows, cols) >= 4(r + p). */
    CHECK(resolved_storage(opt, layout_of(256, 128, MLORC_STORAGE_AUTO)) == MLORC_STORAGE_LOWRANK);
    CHECK(resolved_storage(opt, layout_of(1, 1000, MLORC_STORAGE_AUTO)) == MLORC_STORAGE_DENSE);
    CHECK(resolved_storage(opt, layout_of(1000, 1, MLORC_STORAGE_AUTO)) == MLORC_STORAGE_DENSE);
    CHECK(resolved_storage(opt, layout_of(12, 12, MLORC_STORAGE_AUTO)) == MLORC_STORAGE_DENSE);
    CHECK(resolved_storage(opt, layout_of(16, 16, MLORC_STORAGE_AUTO)) == MLORC_STORAGE_LOWRANK); /* 16 = 4*4 */
    CHECK(resolved_storage(opt, layout_of(15, 300, MLORC_STORAGE_AUTO)) == MLORC_STORAGE_DENSE);
    l = layout_of(1, 1000, MLORC_STORAGE_AUTO);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    CHECK(bytes == dense_bytes(rule, 1, 1000));
    l = layout_of(12, 12, MLORC_STORAGE_AUTO);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    CHECK(bytes == dense_bytes(rule, 12, 12));
    /* Oversampling counts in the policy: 4 * (4 + 29) = 132 > 128. */
    CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_OVERSAMPLING, 29), MLORC_OK);
    CHECK(resolved_storage(opt, layout_of(256, 128, MLORC_STORAGE_AUTO)) == MLORC_STORAGE_DENSE);
    CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_OVERSAMPLING, 28), MLORC_OK); /* 4 * 32 = 128 */
    CHECK(resolved_storage(opt, layout_of(256, 128, MLORC_STORAGE_AUTO)) == MLORC_STORAGE_LOWRANK);
    /* ...but not in the size: only r is stored. */
    l = layout_of(256, 128, MLORC_STORAGE_AUTO);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    CHECK(bytes == lowrank_bytes(rule, 256, 128, 4));
    CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_OVERSAMPLING, 0), MLORC_OK);

    /* The rank in effect sizes new states. */
    CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_RANK, 8), MLORC_OK);
    l = layout_of(256, 128, MLORC_STORAGE_LOWRANK);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    CHECK(bytes == lowrank_bytes(rule, 256, 128, 8));
    /* Forced low-rank accepts rank == min(rows, cols), even for a vector. */
    l = layout_of(8, 40, MLORC_STORAGE_LOWRANK);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    CHECK(bytes == lowrank_bytes(rule, 8, 40, 8));
    CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_RANK, 1), MLORC_OK);
    l = layout_of(1, 40, MLORC_STORAGE_LOWRANK);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    CHECK(bytes == lowrank_bytes(rule, 1, 40, 1));
    CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_RANK, 4), MLORC_OK);

    /* The largest dimension is accepted (sizing only; nothing allocated). */
    l = layout_of(max_dim, 1, MLORC_STORAGE_DENSE);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    CHECK(bytes == dense_bytes(rule, (size_t)max_dim, 1));

    /* Refused layouts write nothing to *out_bytes. */
    before = bytes = 4242;
    l = layout_of(0, 5, MLORC_STORAGE_AUTO);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_ERROR_INVALID_SHAPE);
    l = layout_of(5, 0, MLORC_STORAGE_AUTO);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_ERROR_INVALID_SHAPE);
    l = layout_of(-3, 5, MLORC_STORAGE_AUTO);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_ERROR_INVALID_SHAPE);
    l = layout_of(5, -1, MLORC_STORAGE_AUTO);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_ERROR_INVALID_SHAPE);
    l = layout_of(max_dim + 1, 5, MLORC_STORAGE_AUTO);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_ERROR_INVALID_SHAPE);
    l = layout_of(5, max_dim + 1, MLORC_STORAGE_DENSE);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_ERROR_INVALID_SHAPE);
    l = layout_of(12, 12, MLORC_STORAGE_LOWRANK); /* rank 4 <= 12: fine */
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    before = bytes;
    l = layout_of(3, 200, MLORC_STORAGE_LOWRANK); /* rank 4 > min = 3 */
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_ERROR_INVALID_RANK);
    l = layout_of(12, 12, 3); /* not an mlorc_storage */
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_ERROR_INVALID_ARGUMENT);
    l = layout_of(12, 12, -1);
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_ERROR_INVALID_ARGUMENT);
    l = layout_of(12, 12, MLORC_STORAGE_AUTO);
    l.dtype = 3; /* not an mlorc_dtype (f32 0, bf16 1, f16 2) */
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_ERROR_UNSUPPORTED_DTYPE);
    CHECK(bytes == before);
    l = layout_of(12, 12, MLORC_STORAGE_AUTO);
    CHECK_RC(mlorc_state_size(opt, NULL, &bytes), MLORC_ERROR_NULL_POINTER);
    CHECK_RC(mlorc_state_size(opt, &l, NULL), MLORC_ERROR_NULL_POINTER);
    CHECK_RC(mlorc_state_size(NULL, &l, &bytes), MLORC_ERROR_NULL_POINTER);
    CHECK(bytes == before);
    release(opt);
}

static void test_state_init_inspect(int rule) {
    mlorc_optimizer *opt = make(rule);
    mlorc_tensor_layout l = layout_of(64, 44, MLORC_STORAGE_AUTO);
    mlorc_state_info info, sentinel;
    size_t bytes, i;
    unsigned char *state, *copy;
    const uint64_t id = 0xDEADBEEFCAFEF00Dull;
    watch w = {{0}, {0}, {0}, 0};

    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    state = xmalloc(bytes + 64);
    copy = xmalloc(bytes + 64);
    memset(state, 0xA5, bytes + 64);
    CHECK_RC(mlorc_state_init(opt, &l, id, state, bytes), MLORC_OK);
    for (i = bytes; i < bytes + 64; ++i) CHECK(state[i] == 0xA5); /* never writes past state_bytes */

    CHECK_RC(mlorc_state_inspect(state, bytes, &info), MLORC_OK);
    CHECK(info.layout_version == MLORC_STATE_LAYOUT_VERSION);
    CHECK(info.rule == rule);
    CHECK(info.storage == MLORC_STORAGE_LOWRANK);
    CHECK(info.dtype == MLORC_DTYPE_F32);
    CHECK(info.rows == 64 && info.cols == 44);
    CHECK(info.rank == 4);
    CHECK(info.step == 0);
    CHECK(info.tensor_id == id);
    CHECK(info.state_bytes == bytes);
    CHECK(info.state_bytes == lowrank_bytes(rule, 64, 44, 4));
    /* A bigger buffer is fine; state_bytes still reports what the state uses. */
    CHECK_RC(mlorc_state_inspect(state, bytes + 64, &info), MLORC_OK);
    CHECK(info.state_bytes == bytes);

    /* The rank is fixed in the state: later rank changes affect new states only. */
    CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_RANK, 9), MLORC_OK);
    CHECK_RC(mlorc_state_inspect(state, bytes, &info), MLORC_OK);
    CHECK(info.rank == 4);
    CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_RANK, 4), MLORC_OK);

    /* Re-initialising the same bytes gives the same bytes (no hidden inputs). */
    memcpy(copy, state, bytes);
    CHECK_RC(mlorc_state_init(opt, &l, id, state, bytes), MLORC_OK);
    CHECK(memcmp(copy, state, bytes) == 0);

    /* Dense: zero moments, rank 0. */
    {
        mlorc_tensor_layout d = layout_of(5, 7, MLORC_STORAGE_DENSE);
        size_t db;
        unsigned char *ds;
        CHECK_RC(mlorc_state_size(opt, &d, &db), MLORC_OK);
        CHECK(db == dense_bytes(rule, 5, 7));
        ds = xmalloc(db);
        memset(ds, 0xFF, db);
        CHECK_RC(mlorc_state_init(opt, &d, 3, ds, db), MLORC_OK);
        CHECK_RC(mlorc_state_inspect(ds, db, &info), MLORC_OK);
        CHECK(info.storage == MLORC_STORAGE_DENSE && info.rank == 0 && info.rows == 5 && info.cols == 7);
        CHECK(info.tensor_id == 3 && info.step == 0 && info.state_bytes == db);
        for (i = 128; i < db; i += 4) {
            float f;
            memcpy(&f, ds + i, 4);
            CHECK(f == 0.0f); /* "zero moments" */
        }
        free(ds);
    }

    /* Refused inits change nothing in the buffer. */
    watch_add(&w, state, bytes + 64);
    {
        mlorc_tensor_layout bad = layout_of(3, 200, MLORC_STORAGE_LOWRANK);
        CHECK_RC(mlorc_state_init(opt, &bad, id, state, bytes), MLORC_ERROR_INVALID_RANK);
        bad = layout_of(0, 200, MLORC_STORAGE_AUTO);
        CHECK_RC(mlorc_state_init(opt, &bad, id, state, bytes), MLORC_ERROR_INVALID_SHAPE);
        bad = layout_of(64, 44, 7);
        CHECK_RC(mlorc_state_init(opt, &bad, id, state, bytes), MLORC_ERROR_INVALID_ARGUMENT);
        bad = layout_of(64, 44, MLORC_STORAGE_AUTO);
        bad.dtype = 3; /* not an mlorc_dtype */
        CHECK_RC(mlorc_state_init(opt, &bad, id, state, bytes), MLORC_ERROR_UNSUPPORTED_DTYPE);
    }
    CHECK_RC(mlorc_state_init(opt, &l, id, state, bytes - 1), MLORC_ERROR_STATE_TOO_SMALL);
    CHECK_RC(mlorc_state_init(opt, &l, id, state, 64), MLORC_ERROR_STATE_TOO_SMALL);
    CHECK_RC(mlorc_state_init(opt, &l, id, state, 0), MLORC_ERROR_STATE_TOO_SMALL);
    CHECK_RC(mlorc_state_init(opt, NULL, id, state, bytes), MLORC_ERROR_NULL_POINTER);
    CHECK_RC(mlorc_state_init(opt, &l, id, NULL, bytes), MLORC_ERROR_NULL_POINTER);
    CHECK_RC(mlorc_state_init(NULL, &l, id, state, bytes), MLORC_ERROR_NULL_POINTER);
    CHECK(watch_same(&w));
    watch_free(&w);

    /* Inspect refusals; *out_info untouched. */
    memset(&sentinel, 0x5A, sizeof sentinel);
    info = sentinel;
    CHECK_RC(mlorc_state_inspect(state, bytes - 1, &info), MLORC_ERROR_STATE_TOO_SMALL);
    CHECK_RC(mlorc_state_inspect(state, 127, &info), MLORC_ERROR_STATE_TOO_SMALL);
    CHECK_RC(mlorc_state_inspect(state, 0, &info), MLORC_ERROR_STATE_TOO_SMALL);
    CHECK_RC(mlorc_state_inspect(NULL, bytes, &info), MLORC_ERROR_NULL_POINTER);
    CHECK_RC(mlorc_state_inspect(state, bytes, NULL), MLORC_ERROR_NULL_POINTER);
    memset(copy, 0, bytes); /* zeros: no magic */
    CHECK_RC(mlorc_state_inspect(copy, bytes, &info), MLORC_ERROR_STATE_CORRUPTED);
    CHECK(memcmp(&info, &sentinel, sizeof info) == 0);

    free(state);
    free(copy);
    release(opt);
}

/* ------------------------------------------------------ step fixtures */

#define NT 3
/* A 3-tensor batch: a low-rank matrix (64x44: cols not a multiple of 8, so
 * vector tails are exercised), a dense 1x37 vector and a dense 12x12 matrix. */
typedef struct {
    int64_t rows[NT], cols[NT];
    float *param[NT], *grad[NT];
    unsigned char *state[NT];
    size_t bytes[NT];
    mlorc_tensor t[NT];
} batch;

static void batch_init(batch *b, mlorc_optimizer *opt, uint64_t seed) {
    static const int64_t shapes[NT][2] = {{64, 44}, {1, 37}, {12, 12}};
    int i;
    for (i = 0; i < NT; ++i) {
        mlorc_tensor_layout l = layout_of(shapes[i][0], shapes[i][1], MLORC_STORAGE_AUTO);
        size_t n = (size_t)(shapes[i][0] * shapes[i][1]);
        b->rows[i] = shapes[i][0];
        b->cols[i] = shapes[i][1];
        b->param[i] = xmalloc(4 * n);
        b->grad[i] = xmalloc(4 * n);
        fill(b->param[i], n, seed + 10 * (uint64_t)i);
        fill(b->grad[i], n, seed + 10 * (uint64_t)i + 1);
        CHECK_RC(mlorc_state_size(opt, &l, &b->bytes[i]), MLORC_OK);
        b->state[i] = xmalloc(b->bytes[i]);
        CHECK_RC(mlorc_state_init(opt, &l, (uint64_t)i + 1, b->state[i], b->bytes[i]), MLORC_OK);
        memset(&b->t[i], 0, sizeof b->t[i]);
        b->t[i].param = b->param[i];
        b->t[i].grad = b->grad[i];
        b->t[i].state = b->state[i];
        b->t[i].state_bytes = b->bytes[i];
        b->t[i].rows = b->rows[i];
        b->t[i].cols = b->cols[i];
        b->t[i].dtype = MLORC_DTYPE_F32;
        b->t[i].reserved = 0;
    }
}

static void batch_free(batch *b) {
    int i;
    for (i = 0; i < NT; ++i) {
        free(b->param[i]);
        free(b->grad[i]);
        free(b->state[i]);
    }
}

static void watch_batch(watch *w, const batch *b) {
    int i;
    for (i = 0; i < NT; ++i) {
        watch_add(w, b->param[i], 4 * (size_t)(b->rows[i] * b->cols[i]));
        watch_add(w, b->grad[i], 4 * (size_t)(b->rows[i] * b->cols[i]));
        watch_add(w, b->state[i], b->bytes[i]);
    }
}

/* Runs a step that must be refused with `want` and checks that no parameter,
 * gradient, state (of the batch, or `extra`) or handle setting changed, and
 * that the message names tensor `index` (if index >= 0). */
static void refuse_step_at(mlorc_optimizer *opt, const batch *b, const mlorc_tensor *t, size_t count, double lr,
                           int want, int index, const void *extra, size_t extra_bytes, int line) {
    watch w = {{0}, {0}, {0}, 0};
    double before[MAX_PARAM_KEY], after[MAX_PARAM_KEY];
    watch_batch(&w, b);
    if (extra) watch_add(&w, extra, extra_bytes);
    read_params(opt, before);
    check_rc_at(mlorc_step(opt, t, count, lr), want, "mlorc_step (must be refused)", __FILE__, line);
    if (index >= 0) {
        char needle[32];
        sprintf(needle, "tensor %d", index);
        check_at(strstr(mlorc_last_error(opt), needle) != NULL, "mlorc_last_error names the tensor index", __FILE__,
                 line);
    }
    check_at(watch_same(&w), "refused step left params, grads and states bit-identical", __FILE__, line);
    read_params(opt, after);
    check_at(memcmp(before, after, sizeof before) == 0, "refused step left handle settings unchanged", __FILE__,
             line);
    watch_free(&w);
}
#define REFUSE(opt, b, t, count, lr, want, index) \
    refuse_step_at((opt), (b), (t), (count), (lr), (want), (index), NULL, 0, __LINE__)
#define REFUSE_X(opt, b, t, count, lr, want, index, extra, extra_bytes) \
    refuse_step_at((opt), (b), (t), (count), (lr), (want), (index), (extra), (extra_bytes), __LINE__)

static uint64_t step_of(const void *state, size_t bytes) {
    mlorc_state_info info;
    CHECK_RC(mlorc_state_inspect(state, bytes, &info), MLORC_OK);
    return info.step;
}

static void test_step(int rule) {
    mlorc_optimizer *opt = make(rule);
    mlorc_optimizer *other = NULL;
    const int other_rule = rule == MLORC_RULE_ADAMW ? MLORC_RULE_LION : MLORC_RULE_ADAMW;
    const double lr = 1e-3;
    batch b;
    mlorc_tensor t[NT];
    size_t i, scratch = 1, scratch_after;
    int k;

    batch_init(&b, opt, 100 + (uint64_t)rule);

    /* A fresh handle holds no scratch. */
    CHECK_RC(mlorc_scratch_bytes(opt, &scratch), MLORC_OK);
    CHECK(scratch == 0);
    CHECK_RC(mlorc_scratch_bytes(opt, NULL), MLORC_ERROR_NULL_POINTER);
    CHECK_RC(mlorc_scratch_bytes(NULL, &scratch), MLORC_ERROR_NULL_POINTER);

    /* Two valid steps, so the states hold non-trivial moments. */
    {
        float *p0 = xmalloc(4 * 64 * 44);
        memcpy(p0, b.param[0], 4 * 64 * 44);
        for (k = 0; k < 2; ++k) {
            watch g = {{0}, {0}, {0}, 0};
            for (i = 0; i < NT; ++i) watch_add(&g, b.grad[i], 4 * (size_t)(b.rows[i] * b.cols[i]));
            CHECK_RC(mlorc_step(opt, b.t, NT, lr), MLORC_OK);
            CHECK(watch_same(&g)); /* gradients are only read */
            watch_free(&g);
            for (i = 0; i < NT; ++i) CHECK(step_of(b.state[i], b.bytes[i]) == (uint64_t)k + 1);
            for (i = 0; i < NT; ++i) fill(b.grad[i], (size_t)(b.rows[i] * b.cols[i]), 500 + 7 * i + (uint64_t)k);
        }
        CHECK(memcmp(p0, b.param[0], 4 * 64 * 44) != 0); /* the step did move the weights */
        free(p0);
    }
    CHECK_RC(mlorc_scratch_bytes(opt, &scratch), MLORC_OK);
    CHECK(scratch > 0); /* a low-rank step needs sketch space */

    /* count 0 is an empty step: nothing to do, nothing changes. */
    REFUSE(opt, &b, b.t, 0, lr, MLORC_OK, -1);

    /* NULL handle / array. */
    REFUSE(NULL, &b, b.t, NT, lr, MLORC_ERROR_NULL_POINTER, -1);
    current = opt;
    REFUSE(opt, &b, NULL, NT, lr, MLORC_ERROR_NULL_POINTER, -1);

    /* Learning rate: must be finite and >= 0. The header documents the
     * requirement but not the status; the library answers INVALID_ARGUMENT. */
    REFUSE(opt, &b, b.t, NT, -1e-3, MLORC_ERROR_INVALID_ARGUMENT, -1);
    REFUSE(opt, &b, b.t, NT, NAN, MLORC_ERROR_INVALID_ARGUMENT, -1);
    REFUSE(opt, &b, b.t, NT, INFINITY, MLORC_ERROR_INVALID_ARGUMENT, -1);

    /* Per-tensor problems, each placed in a different tensor of the batch. */
    for (k = 0; k < NT; ++k) {
        memcpy(t, b.t, sizeof t);
        t[k].param = NULL;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_NULL_POINTER, k);
        memcpy(t, b.t, sizeof t);
        t[k].grad = NULL;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_NULL_POINTER, k);
        memcpy(t, b.t, sizeof t);
        t[k].state = NULL;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_NULL_POINTER, k);

        memcpy(t, b.t, sizeof t);
        t[k].rows = 0;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_INVALID_SHAPE, k);
        memcpy(t, b.t, sizeof t);
        t[k].cols = 0;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_INVALID_SHAPE, k);
        memcpy(t, b.t, sizeof t);
        t[k].rows = -b.rows[k];
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_INVALID_SHAPE, k);
        memcpy(t, b.t, sizeof t);
        t[k].cols = -1;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_INVALID_SHAPE, k);
        memcpy(t, b.t, sizeof t);
        t[k].rows = (int64_t)2147483647 + 1;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_INVALID_SHAPE, k);
        memcpy(t, b.t, sizeof t);
        t[k].cols = INT64_MAX;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_INVALID_SHAPE, k);
        /* A valid shape that is not the state's: mismatch. */
        memcpy(t, b.t, sizeof t);
        t[k].rows = b.cols[k];
        t[k].cols = b.rows[k];
        if (t[k].rows != b.rows[k]) REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_STATE_MISMATCH, k);

        memcpy(t, b.t, sizeof t);
        t[k].dtype = 3; /* not an mlorc_dtype */
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_UNSUPPORTED_DTYPE, k);
        memcpy(t, b.t, sizeof t);
        t[k].dtype = -1;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_UNSUPPORTED_DTYPE, k);
        memcpy(t, b.t, sizeof t);
        t[k].reserved = 1;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_INVALID_ARGUMENT, k);

        memcpy(t, b.t, sizeof t);
        t[k].state_bytes = b.bytes[k] - 1;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_STATE_TOO_SMALL, k);
        memcpy(t, b.t, sizeof t);
        t[k].state_bytes = 100;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_STATE_TOO_SMALL, k);
        memcpy(t, b.t, sizeof t);
        t[k].state_bytes = 0;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_STATE_TOO_SMALL, k);

        /* Aliasing: a tensor's param is its own grad. */
        memcpy(t, b.t, sizeof t);
        t[k].grad = t[k].param;
        REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_INVALID_ARGUMENT, k);
    }

    /* Aliasing across tensors: tensor 1 reads its gradient from tensor 0's
     * (written) parameters; tensor 2 writes into tensor 0's parameters. */
    memcpy(t, b.t, sizeof t);
    t[1].grad = b.param[0];
    REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_INVALID_ARGUMENT, 0); /* names both tensors */
    memcpy(t, b.t, sizeof t);
    t[2].param = b.param[0] + 100;
    REFUSE(opt, &b, t, NT, lr, MLORC_ERROR_INVALID_ARGUMENT, 0);
    /* Two tensors sharing one state. */
    {
        float *p2 = xmalloc(4 * 64 * 44), *g2 = xmalloc(4 * 64 * 44);
        mlorc_tensor two[2];
        memcpy(p2, b.param[0], 4 * 64 * 44);
        memcpy(g2, b.grad[0], 4 * 64 * 44);
        two[0] = b.t[0];
        two[1] = b.t[0];
        two[1].param = p2;
        two[1].grad = g2;
        REFUSE_X(opt, &b, two, 2, lr, MLORC_ERROR_INVALID_ARGUMENT, -1, p2, 4 * 64 * 44);
        free(p2);
        free(g2);
    }

    /* States that are not this tensor's. */
    CHECK_RC(mlorc_create(&other, other_rule), MLORC_OK);
    for (k = 0; k < NT; ++k) {
        mlorc_tensor_layout l = layout_of(b.rows[k], b.cols[k], MLORC_STORAGE_AUTO);
        size_t ob;
        unsigned char *os;
        /* Same shape, other rule. */
        CHECK_RC(mlorc_state_size(other, &l, &ob), MLORC_OK);
        os = xmalloc(ob);
        CHECK_RC(mlorc_state_init(other, &l, (uint64_t)k + 1, os, ob), MLORC_OK);
        memcpy(t, b.t, sizeof t);
        t[k].state = os;
        t[k].state_bytes = ob;
        REFUSE_X(opt, &b, t, NT, lr, MLORC_ERROR_STATE_MISMATCH, k, os, ob);
        free(os);
        /* Same rule, another shape (transposed, or 1 x n+1 for the vector),
         * of at least the tensor's size so only the shape is wrong. */
        l = layout_of(b.rows[k] == 1 ? 1 : b.cols[k], b.rows[k] == 1 ? b.cols[k] + 1 : b.rows[k],
                      MLORC_STORAGE_AUTO);
        if (l.rows == b.rows[k]) l.cols = b.cols[k] + 1; /* square: make it 12x13 */
        CHECK_RC(mlorc_state_size(opt, &l, &ob), MLORC_OK);
        os = xmalloc(ob);
        CHECK_RC(mlorc_state_init(opt, &l, (uint64_t)k + 1, os, ob), MLORC_OK);
        memcpy(t, b.t, sizeof t);
        t[k].state = os;
        t[k].state_bytes = ob;
        REFUSE_X(opt, &b, t, NT, lr, MLORC_ERROR_STATE_MISMATCH, k, os, ob);
        free(os);
    }
    release(other);
    current = opt;

    /* Non-finite gradients: NaN, +Inf, -Inf, first or last element, in each
     * tensor. All-or-nothing: tensors before and after it stay untouched. */
    for (k = 0; k < NT; ++k) {
        const float bad[3] = {NAN, INFINITY, -INFINITY};
        size_t n = (size_t)(b.rows[k] * b.cols[k]), where[3];
        int v, p;
        where[0] = 0;
        where[1] = n - 1;
        where[2] = n / 2 + 3;
        for (v = 0; v < 3; ++v) {
            for (p = 0; p < 3; ++p) {
                float saved = b.grad[k][where[p]];
                b.grad[k][where[p]] = bad[v];
                REFUSE(opt, &b, b.t, NT, lr, MLORC_ERROR_NON_FINITE, k);
                b.grad[k][where[p]] = saved;
            }
        }
    }

    /* After all those refusals the batch still steps, from the same step count. */
    CHECK_RC(mlorc_step(opt, b.t, NT, lr), MLORC_OK);
    for (i = 0; i < NT; ++i) CHECK(step_of(b.state[i], b.bytes[i]) == 3);
    /* lr = 0 is allowed. */
    CHECK_RC(mlorc_step(opt, b.t, NT, 0.0), MLORC_OK);
    /* A state buffer larger than the state is accepted. */
    memcpy(t, b.t, sizeof t);
    t[1].state_bytes = b.bytes[1] + 1000; /* only inspected up to its own size... */
    {
        unsigned char *big = xmalloc(b.bytes[1] + 1000);
        memcpy(big, b.state[1], b.bytes[1]);
        memset(big + b.bytes[1], 0xC3, 1000);
        t[1].state = big;
        CHECK_RC(mlorc_step(opt, t, NT, lr), MLORC_OK);
        for (i = b.bytes[1]; i < b.bytes[1] + 1000; ++i) CHECK(big[i] == 0xC3); /* ...and written up to it */
        CHECK(step_of(big, b.bytes[1]) == 5);
        free(big);
    }
    /* A larger step grows the scratch; a smaller one reuses it. */
    CHECK_RC(mlorc_scratch_bytes(opt, &scratch), MLORC_OK);
    {
        mlorc_tensor_layout l = layout_of(256, 200, MLORC_STORAGE_AUTO);
        size_t bytes;
        float *p = xmalloc(4 * 256 * 200), *g = xmalloc(4 * 256 * 200);
        unsigned char *s;
        mlorc_tensor big;
        fill(p, 256 * 200, 1);
        fill(g, 256 * 200, 2);
        CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
        s = xmalloc(bytes);
        CHECK_RC(mlorc_state_init(opt, &l, 99, s, bytes), MLORC_OK);
        memset(&big, 0, sizeof big);
        big.param = p;
        big.grad = g;
        big.state = s;
        big.state_bytes = bytes;
        big.rows = 256;
        big.cols = 200;
        CHECK_RC(mlorc_step(opt, &big, 1, lr), MLORC_OK);
        CHECK_RC(mlorc_scratch_bytes(opt, &scratch_after), MLORC_OK);
        CHECK(scratch_after > scratch);
        CHECK_RC(mlorc_step(opt, b.t, NT, lr), MLORC_OK);
        CHECK_RC(mlorc_scratch_bytes(opt, &scratch), MLORC_OK);
        CHECK(scratch == scratch_after);
        free(p);
        free(g);
        free(s);
    }
    batch_free(&b);
    release(opt);
}

/* Tampered states: header bytes, low-rank payload bytes, the layout version. */
static void test_tampering(int rule) {
    mlorc_optimizer *opt = make(rule);
    const double lr = 1e-3;
    mlorc_state_info info;
    batch b;
    size_t off;

    batch_init(&b, opt, 300 + (uint64_t)rule);
    CHECK_RC(mlorc_step(opt, b.t, NT, lr), MLORC_OK);
    CHECK_RC(mlorc_step(opt, b.t, NT, lr), MLORC_OK);

    /* Every bit flip in the header is detected: in bytes 0..95 (fields and
     * the checksum itself) by the checksum, in 96..127 (reserved, not
     * checksummed) because they must be zero; the version field (bytes
     * 8..11) is checked first and reports STATE_VERSION. Tensor 0 is
     * low-rank, tensor 2 dense: the header is validated for both storages. */
    for (off = 0; off < 128; ++off) {
        int k;
        for (k = 0; k < NT; k += 2) {
            int want = off >= 8 && off < 12 ? MLORC_ERROR_STATE_VERSION : MLORC_ERROR_STATE_CORRUPTED;
            b.state[k][off] ^= 0x10;
            CHECK_RC(mlorc_state_inspect(b.state[k], b.bytes[k], &info), want);
            REFUSE(opt, &b, b.t, NT, lr, want, k);
            b.state[k][off] ^= 0x10;
        }
    }
    /* The low-rank payload is checksummed too: first, middle and last byte. */
    {
        size_t where[3];
        int p;
        where[0] = 128;
        where[1] = 128 + (b.bytes[0] - 128) / 2;
        where[2] = b.bytes[0] - 1;
        for (p = 0; p < 3; ++p) {
            b.state[0][where[p]] ^= 0x01;
            CHECK_RC(mlorc_state_inspect(b.state[0], b.bytes[0], &info), MLORC_ERROR_STATE_CORRUPTED);
            REFUSE(opt, &b, b.t, NT, lr, MLORC_ERROR_STATE_CORRUPTED, 0);
            b.state[0][where[p]] ^= 0x01;
        }
    }
    /* Layout version 2 (a newer writer) and 0: refused as STATE_VERSION. */
    {
        uint32_t saved, v;
        int k;
        for (k = 0; k < NT; ++k) {
            memcpy(&saved, b.state[k] + 8, 4);
            CHECK(saved == MLORC_STATE_LAYOUT_VERSION);
            v = 2;
            memcpy(b.state[k] + 8, &v, 4);
            CHECK_RC(mlorc_state_inspect(b.state[k], b.bytes[k], &info), MLORC_ERROR_STATE_VERSION);
            REFUSE(opt, &b, b.t, NT, lr, MLORC_ERROR_STATE_VERSION, k);
            v = 0;
            memcpy(b.state[k] + 8, &v, 4);
            CHECK_RC(mlorc_state_inspect(b.state[k], b.bytes[k], &info), MLORC_ERROR_STATE_VERSION);
            memcpy(b.state[k] + 8, &saved, 4);
        }
    }
    /* Restored bytes are accepted again. */
    CHECK_RC(mlorc_step(opt, b.t, NT, lr), MLORC_OK);
    CHECK(step_of(b.state[0], b.bytes[0]) == 3);
    batch_free(&b);
    release(opt);
}

/* States are plain bytes: a copy stepped alongside the original (by another
 * handle with the same settings) stays bit-identical. */
static void test_copy_and_resume(int rule) {
    mlorc_optimizer *a = make(rule), *c = NULL;
    batch b, d;
    int i, k;

    CHECK_RC(mlorc_create(&c, rule), MLORC_OK);
    batch_init(&b, a, 700);
    CHECK_RC(mlorc_step(a, b.t, NT, 1e-3), MLORC_OK);
    batch_init(&d, a, 700); /* same data, then overwritten with b's bytes */
    for (i = 0; i < NT; ++i) {
        memcpy(d.param[i], b.param[i], 4 * (size_t)(b.rows[i] * b.cols[i]));
        memcpy(d.state[i], b.state[i], b.bytes[i]);
    }
    for (k = 0; k < 3; ++k) {
        CHECK_RC(mlorc_step(a, b.t, NT, 1e-3 / (k + 1)), MLORC_OK);
        current = c;
        CHECK_RC(mlorc_step(c, d.t, NT, 1e-3 / (k + 1)), MLORC_OK);
        current = a;
    }
    for (i = 0; i < NT; ++i) {
        CHECK(memcmp(d.param[i], b.param[i], 4 * (size_t)(b.rows[i] * b.cols[i])) == 0);
        CHECK(memcmp(d.state[i], b.state[i], b.bytes[i]) == 0);
    }
    /* A different seed draws other sketches: the low-rank tensor diverges
     * (MoFaSGD sketches only at its first step, so its seed no longer acts). */
    CHECK_RC(mlorc_set_param(c, MLORC_PARAM_SEED, 1), MLORC_OK);
    current = c;
    CHECK_RC(mlorc_step(c, d.t, NT, 1e-3), MLORC_OK);
    current = a;
    CHECK_RC(mlorc_step(a, b.t, NT, 1e-3), MLORC_OK);
    CHECK((memcmp(d.state[0], b.state[0], b.bytes[0]) != 0) == (rule != MLORC_RULE_MOFASGD));
    CHECK(memcmp(d.state[2], b.state[2], b.bytes[2]) == 0); /* dense: no sketch involved */
    batch_free(&b);
    batch_free(&d);
    release(a);
    release(c);
}

/* Dense storage is "exactly AdamW / Lion": compare a few steps against an
 * fp64 reference written from the header's description (torch.optim.AdamW
 * conventions: decoupled decay W(1 - lr*wd), bias corrections, eps after the
 * square root; Lion: sign(b1*m + (1-b1)*g), then m = b2*m + (1-b2)*g). */
static void test_dense_reference(int rule, int bias_correction) {
    enum { R = 9, C = 13, N = R * C, STEPS = 6 };
    mlorc_optimizer *opt = make(rule);
    mlorc_tensor_layout l = layout_of(R, C, MLORC_STORAGE_DENSE);
    double w[N], m[N], v[N];
    float param[N], grad[N];
    const double b1 = rule == MLORC_RULE_ADAMW ? 0.9 : 0.95, b2 = rule == MLORC_RULE_ADAMW ? 0.999 : 0.98;
    const double wd = rule == MLORC_RULE_ADAMW ? 0.01 : 0.05, eps = 1e-8;
    size_t bytes;
    unsigned char *state;
    mlorc_tensor t;
    int s, i;

    if (rule == MLORC_RULE_ADAMW)
        CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_BIAS_CORRECTION, bias_correction), MLORC_OK);
    fill(param, N, 42);
    for (i = 0; i < N; ++i) {
        w[i] = param[i];
        m[i] = v[i] = 0;
    }
    CHECK_RC(mlorc_state_size(opt, &l, &bytes), MLORC_OK);
    state = xmalloc(bytes);
    CHECK_RC(mlorc_state_init(opt, &l, 1, state, bytes), MLORC_OK);
    memset(&t, 0, sizeof t);
    t.param = param;
    t.grad = grad;
    t.state = state;
    t.state_bytes = bytes;
    t.rows = R;
    t.cols = C;
    for (s = 1; s <= STEPS; ++s) {
        const double lr = 0.01 / s;
        fill(grad, N, 1000 + (uint64_t)s);
        CHECK_RC(mlorc_step(opt, &t, 1, lr), MLORC_OK);
        for (i = 0; i < N; ++i) {
            double g = grad[i];
            w[i] *= 1 - lr * wd;
            if (rule == MLORC_RULE_ADAMW) {
                double bc1 = bias_correction ? 1 - pow(b1, s) : 1, bc2 = bias_correction ? 1 - pow(b2, s) : 1;
                m[i] = b1 * m[i] + (1 - b1) * g;
                v[i] = b2 * v[i] + (1 - b2) * g * g;
                w[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + eps);
            } else {
                double c = b1 * m[i] + (1 - b1) * g;
                w[i] -= lr * (c > 0 ? 1 : c < 0 ? -1 : 0);
                m[i] = b2 * m[i] + (1 - b2) * g;
            }
        }
    }
    for (i = 0; i < N; ++i) CHECK(fabs(param[i] - w[i]) <= 1e-5 * (1 + fabs(w[i])));
    free(state);
    release(opt);
}

/* With rank = min(rows, cols) the randomized SVD captures the whole moment,
 * so MLorc-AdamW must agree with dense AdamW up to fp32 rounding. */
static void test_full_rank_matches_dense(void) {
    enum { R = 12, C = 10, N = R * C, STEPS = 5 };
    mlorc_optimizer *opt = make(MLORC_RULE_ADAMW);
    mlorc_tensor_layout ll = layout_of(R, C, MLORC_STORAGE_LOWRANK), dl = layout_of(R, C, MLORC_STORAGE_DENSE);
    float pl[N], pd[N], grad[N];
    unsigned char *sl, *sd;
    size_t bl, bd;
    mlorc_tensor t[2];
    int s, i;
    double worst = 0;

    CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_RANK, C), MLORC_OK);
    CHECK_RC(mlorc_state_size(opt, &ll, &bl), MLORC_OK);
    CHECK_RC(mlorc_state_size(opt, &dl, &bd), MLORC_OK);
    CHECK(bl == lowrank_bytes(MLORC_RULE_ADAMW, R, C, C));
    sl = xmalloc(bl);
    sd = xmalloc(bd);
    CHECK_RC(mlorc_state_init(opt, &ll, 1, sl, bl), MLORC_OK);
    CHECK_RC(mlorc_state_init(opt, &dl, 2, sd, bd), MLORC_OK);
    fill(pl, N, 9);
    memcpy(pd, pl, sizeof pl);
    memset(t, 0, sizeof t);
    t[0].param = pl;
    t[0].state = sl;
    t[0].state_bytes = bl;
    t[1].param = pd;
    t[1].state = sd;
    t[1].state_bytes = bd;
    for (i = 0; i < 2; ++i) {
        t[i].grad = grad; /* both read the same gradient (read-only sharing) */
        t[i].rows = R;
        t[i].cols = C;
    }
    for (s = 1; s <= STEPS; ++s) {
        fill(grad, N, 77 + (uint64_t)s);
        CHECK_RC(mlorc_step(opt, t, 2, 0.01), MLORC_OK);
    }
    for (i = 0; i < N; ++i) {
        double d = fabs((double)pl[i] - pd[i]);
        if (d > worst) worst = d;
    }
    /* Each step moves a weight by about lr = 0.01; 1e-4 is 1% of one step. */
    CHECK(worst < 1e-4);
    free(sl);
    free(sd);
    release(opt);
}

/* Oversampling and power iterations change the sketch, not the contract:
 * steps succeed, states stay valid and the result is reproducible. */
static void test_sketch_settings(int rule) {
    mlorc_optimizer *a = make(rule), *c = NULL;
    batch b, d;
    int i, k;
    CHECK_RC(mlorc_create(&c, rule), MLORC_OK);
    for (k = 0; k < 2; ++k) {
        mlorc_optimizer *o = k ? c : a;
        CHECK_RC(mlorc_set_param(o, MLORC_PARAM_OVERSAMPLING, 4), MLORC_OK);
        CHECK_RC(mlorc_set_param(o, MLORC_PARAM_POWER_ITERATIONS, 2), MLORC_OK);
        CHECK_RC(mlorc_set_param(o, MLORC_PARAM_SEED, 31337), MLORC_OK);
    }
    batch_init(&b, a, 900);
    batch_init(&d, c, 900);
    for (k = 0; k < 3; ++k) {
        CHECK_RC(mlorc_step(a, b.t, NT, 1e-3), MLORC_OK);
        current = c;
        CHECK_RC(mlorc_step(c, d.t, NT, 1e-3), MLORC_OK);
        current = a;
    }
    for (i = 0; i < NT; ++i) {
        size_t n = (size_t)(b.rows[i] * b.cols[i]), e;
        CHECK(step_of(b.state[i], b.bytes[i]) == 3);
        CHECK(memcmp(b.param[i], d.param[i], 4 * n) == 0);
        CHECK(memcmp(b.state[i], d.state[i], b.bytes[i]) == 0);
        for (e = 0; e < n; ++e) CHECK(isfinite(b.param[i][e]));
    }
    batch_free(&b);
    batch_free(&d);
    release(a);
    release(c);
}

/* A finite gradient whose square overflows fp32 (|g| > ~1.8e19) makes a
 * low-rank AdamW second moment infinite. The contract: either the step
 * succeeds with finite weights and valid states, or it is refused and changes
 * nothing (an earlier library version failed in LAPACK after writing). */
static void test_huge_finite_gradient(void) {
    mlorc_optimizer *opt = make(MLORC_RULE_ADAMW);
    batch b;
    watch w = {{0}, {0}, {0}, 0};
    int rc, i;
    batch_init(&b, opt, 1234);
    CHECK_RC(mlorc_step(opt, b.t, NT, 1e-3), MLORC_OK);
    b.grad[0][5] = 2e19f; /* finite; its square is not */
    watch_batch(&w, &b);
    rc = mlorc_step(opt, b.t, NT, 1e-3);
    if (rc == MLORC_OK) {
        for (i = 0; i < NT; ++i) {
            size_t n = (size_t)(b.rows[i] * b.cols[i]), e;
            mlorc_state_info info;
            CHECK_RC(mlorc_state_inspect(b.state[i], b.bytes[i], &info), MLORC_OK);
            for (e = 0; e < n; ++e) CHECK(isfinite(b.param[i][e]));
        }
    } else {
        CHECK_RC(rc, MLORC_ERROR_NON_FINITE);
        CHECK(watch_same(&w)); /* a failed call changes nothing */
        for (i = 0; i < NT; ++i) CHECK(step_of(b.state[i], b.bytes[i]) == 1);
    }
    watch_free(&w);
    batch_free(&b);
    release(opt);
}

int main(void) {
    int rule;
    /* ABI layout the header promises (LP64): fixed-width fields, no padding surprises. */
    CHECK(sizeof(mlorc_tensor_layout) == 24);
    CHECK(sizeof(mlorc_state_info) == 64);
    CHECK(sizeof(mlorc_tensor) == 4 * sizeof(void *) + 16 + 8);

    test_version();
    test_status_strings();
    test_create_free();
    test_param_bounds_misc();
    for (rule = MLORC_RULE_ADAMW; rule <= MLORC_RULE_ADOPT; ++rule) test_params(rule);
    test_params_mofasgd();
    test_mofasgd_step();
    /* The rule-generic checks that hold for MoFaSGD too. */
    test_state_init_inspect(MLORC_RULE_MOFASGD);
    test_step(MLORC_RULE_MOFASGD);
    test_tampering(MLORC_RULE_MOFASGD);
    test_copy_and_resume(MLORC_RULE_MOFASGD);
    test_sketch_settings(MLORC_RULE_MOFASGD);
    test_params(MLORC_RULE_CAME);
    for (rule = MLORC_RULE_ADAMW; rule <= MLORC_RULE_LION; ++rule) {
        test_state_size_and_policy(rule);
        test_state_init_inspect(rule);
        test_step(rule);
        test_tampering(rule);
        test_copy_and_resume(rule);
        test_dense_reference(rule, 1);
        test_sketch_settings(rule);
    }
    test_dense_reference(MLORC_RULE_ADAMW, 0);
    test_full_rank_matches_dense();
    test_huge_finite_gradient();
    printf("api_test: %lu checks passed\n", checks_run);
    return 0;
}
