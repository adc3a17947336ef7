/*
 * dlopen_test.c - uses libmlorc.so the way a plugin host or a language
 * binding does: loaded at run time with dlopen (path in argv[1]), every
 * function of include/mlorc.h resolved with dlsym. This program is NOT linked
 * against libmlorc, so it also shows the library loads by itself (all its
 * dependencies resolvable, nothing expected from the host).
 *
 * It checks that every symbol resolves, that the loaded library's major
 * version matches the header's, and that a few steps of a small least-squares
 * fit through the resolved pointers decrease the loss.
 */
#include "mlorc.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One pointer type per function of the header. */
typedef unsigned (*version_number_fn)(void);
typedef const char *(*version_string_fn)(void);
typedef const char *(*status_string_fn)(int);
typedef int (*create_fn)(mlorc_optimizer **, int);
typedef void (*free_fn)(mlorc_optimizer *);
typedef const char *(*last_error_fn)(const mlorc_optimizer *);
typedef int (*get_rule_fn)(const mlorc_optimizer *, int *);
typedef int (*set_param_fn)(mlorc_optimizer *, int, double);
typedef int (*get_param_fn)(const mlorc_optimizer *, int, double *);
typedef int (*param_bounds_fn)(int, int, double *, double *);
typedef int (*scratch_bytes_fn)(const mlorc_optimizer *, size_t *);
typedef int (*state_size_fn)(const mlorc_optimizer *, const mlorc_tensor_layout *, size_t *);
typedef int (*state_init_fn)(const mlorc_optimizer *, const mlorc_tensor_layout *, uint64_t, void *, size_t);
typedef int (*state_inspect_fn)(const void *, size_t, mlorc_state_info *);
typedef int (*step_fn)(mlorc_optimizer *, const mlorc_tensor *, size_t, double);
typedef int (*state_check_fn)(const void *, size_t, mlorc_state_info *, char *, size_t);
typedef int (*group_state_init_fn)(const mlorc_optimizer *, void *, size_t);
typedef int (*group_state_inspect_fn)(const void *, size_t, mlorc_group_info *);
typedef int (*group_state_check_fn)(const void *, size_t, mlorc_group_info *, char *, size_t);
typedef int (*step_group_fn)(mlorc_optimizer *, const mlorc_tensor *, size_t, double, void *, size_t);

static struct {
    version_number_fn version_number;
    version_string_fn version_string;
    status_string_fn status_string;
    create_fn create;
    free_fn free;
    last_error_fn last_error;
    get_rule_fn get_rule;
    set_param_fn set_param;
    get_param_fn get_param;
    param_bounds_fn param_bounds;
    scratch_bytes_fn scratch_bytes;
    state_size_fn state_size;
    state_init_fn state_init;
    state_inspect_fn state_inspect;
    step_fn step;
    state_check_fn state_check;
    group_state_init_fn group_state_init;
    group_state_inspect_fn group_state_inspect;
    group_state_check_fn group_state_check;
    step_group_fn step_group;
} api;

static unsigned long checks_run;
static const mlorc_optimizer *current;

static void check_at(int ok, const char *what, const char *file, int line) {
    ++checks_run;
    if (!ok) {
        fprintf(stderr, "%s:%d: check failed: %s\n  mlorc_last_error: \"%s\"\n", file, line, what,
                api.last_error ? api.last_error(current) : "(mlorc_last_error not resolved)");
        exit(1);
    }
}
#define CHECK(cond) check_at((cond) != 0, #cond, __FILE__, __LINE__)
#define CHECK_OK(call) check_at((call) == MLORC_OK, #call " == MLORC_OK", __FILE__, __LINE__)

/* ISO C forbids converting void * to a function pointer, so dlsym's result
 * is copied bit for bit (what POSIX guarantees to work). */
static void resolve(void *lib, const char *name, void *slot, size_t slot_size) {
    void *sym;
    dlerror();
    sym = dlsym(lib, name);
    if (!sym) {
        const char *err = dlerror();
        fprintf(stderr, "dlsym(%s) failed: %s\n", name, err ? err : "symbol is NULL");
        exit(1);
    }
    ++checks_run;
    memcpy(slot, &sym, slot_size);
}
#define RESOLVE(lib, field, name) resolve((lib), (name), &api.field, sizeof api.field)

/* y = A x + c for 16 samples, x in R^12, y in R^8: fit W (8x12) and c (1x8). */
enum { N = 16, IN = 12, OUT = 8 };

static double loss_grad(const float *x, const float *y, const float *w, const float *c, float *gw, float *gc) {
    double loss = 0, r[N][OUT];
    int k, i, j;
    for (k = 0; k < N; ++k)
        for (i = 0; i < OUT; ++i) {
            double p = c[i];
            for (j = 0; j < IN; ++j) p += (double)w[i * IN + j] * x[k * IN + j];
            r[k][i] = p - y[k * OUT + i];
            loss += r[k][i] * r[k][i];
        }
    for (i = 0; i < OUT; ++i) {
        double sc = 0;
        for (k = 0; k < N; ++k) sc += r[k][i];
        gc[i] = (float)(sc / N);
        for (j = 0; j < IN; ++j) {
            double s = 0;
            for (k = 0; k < N; ++k) s += r[k][i] * x[k * IN + j];
            gw[i * IN + j] = (float)(s / N);
        }
    }
    return loss / (2.0 * N);
}

int main(int argc, char **argv) {
    void *lib;
    mlorc_optimizer *opt = NULL;
    float x[N * IN], y[N * OUT], w[OUT * IN], c[OUT], gw[OUT * IN], gc[OUT];
    mlorc_tensor_layout lw = {OUT, IN, MLORC_DTYPE_F32, MLORC_STORAGE_LOWRANK};
    mlorc_tensor_layout lc = {1, OUT, MLORC_DTYPE_F32, MLORC_STORAGE_AUTO};
    mlorc_tensor t[2];
    mlorc_state_info info;
    unsigned char *sw, *sc;
    size_t bw, bc, scratch;
    double first, prev, loss, lo, hi, v;
    unsigned seed = 12345;
    int i, s, rule;

    if (argc != 2) {
        fprintf(stderr, "usage: %s path/to/libmlorc.so\n", argv[0]);
        return 2;
    }
    lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen(%s) failed: %s\n", argv[1], dlerror());
        return 1;
    }
    RESOLVE(lib, version_number, "mlorc_version_number");
    RESOLVE(lib, version_string, "mlorc_version_string");
    RESOLVE(lib, status_string, "mlorc_status_string");
    RESOLVE(lib, create, "mlorc_create");
    RESOLVE(lib, free, "mlorc_free");
    RESOLVE(lib, last_error, "mlorc_last_error");
    RESOLVE(lib, get_rule, "mlorc_get_rule");
    RESOLVE(lib, set_param, "mlorc_set_param");
    RESOLVE(lib, get_param, "mlorc_get_param");
    RESOLVE(lib, param_bounds, "mlorc_param_bounds");
    RESOLVE(lib, scratch_bytes, "mlorc_scratch_bytes");
    RESOLVE(lib, state_size, "mlorc_state_size");
    RESOLVE(lib, state_init, "mlorc_state_init");
    RESOLVE(lib, state_inspect, "mlorc_state_inspect");
    RESOLVE(lib, step, "mlorc_step");
    RESOLVE(lib, state_check, "mlorc_state_check");
    RESOLVE(lib, group_state_init, "mlorc_group_state_init");
    RESOLVE(lib, group_state_inspect, "mlorc_group_state_inspect");
    RESOLVE(lib, group_state_check, "mlorc_group_state_check");
    RESOLVE(lib, step_group, "mlorc_step_group");

    /* Refuse a library of another major version, as the header asks. */
    CHECK(api.version_number() / 10000 == MLORC_VERSION_MAJOR);
    CHECK(api.version_string() != NULL && api.version_string()[0] != '\0');
    CHECK(strcmp(api.status_string(MLORC_OK), api.status_string(MLORC_ERROR_NON_FINITE)) != 0);

    CHECK_OK(api.create(&opt, MLORC_RULE_ADAMW));
    current = opt;
    CHECK_OK(api.get_rule(opt, &rule));
    CHECK(rule == MLORC_RULE_ADAMW);
    CHECK_OK(api.param_bounds(MLORC_RULE_ADAMW, MLORC_PARAM_RANK, &lo, &hi));
    CHECK(lo == 1 && hi >= 2);
    CHECK_OK(api.set_param(opt, MLORC_PARAM_RANK, 2));
    CHECK_OK(api.get_param(opt, MLORC_PARAM_RANK, &v));
    CHECK(v == 2);

    /* Data from a small LCG; the target map is random (full rank). */
    for (i = 0; i < N * IN; ++i) x[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16 & 0x7fff) / 16384.0f - 1;
    for (i = 0; i < OUT * IN; ++i) w[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16 & 0x7fff) / 16384.0f - 1;
    for (i = 0; i < OUT; ++i) c[i] = 0.5f;
    for (i = 0; i < N * OUT; ++i) {
        int k = i / OUT, o = i % OUT, j;
        double acc = 0;
        for (j = 0; j < IN; ++j) acc += w[o * IN + j] * x[k * IN + j];
        y[i] = (float)acc - 0.25f;
    }
    memset(w, 0, sizeof w); /* start the model from zero */
    memset(c, 0, sizeof c);

    CHECK_OK(api.state_size(opt, &lw, &bw));
    CHECK_OK(api.state_size(opt, &lc, &bc));
    sw = malloc(bw);
    sc = malloc(bc);
    CHECK(sw && sc);
    CHECK_OK(api.state_init(opt, &lw, 1, sw, bw));
    CHECK_OK(api.state_init(opt, &lc, 2, sc, bc));
    CHECK_OK(api.state_inspect(sw, bw, &info));
    CHECK(info.storage == MLORC_STORAGE_LOWRANK && info.rank == 2);

    memset(t, 0, sizeof t);
    t[0].param = w;
    t[0].grad = gw;
    t[0].state = sw;
    t[0].state_bytes = bw;
    t[0].rows = OUT;
    t[0].cols = IN;
    t[1].param = c;
    t[1].grad = gc;
    t[1].state = sc;
    t[1].state_bytes = bc;
    t[1].rows = 1;
    t[1].cols = OUT;

    first = prev = loss_grad(x, y, w, c, gw, gc);
    for (s = 0; s < 20; ++s) {
        CHECK_OK(api.step(opt, t, 2, 0.02));
        loss = loss_grad(x, y, w, c, gw, gc);
        CHECK(isfinite(loss));
        /* Early AdamW steps on a convex quadratic at a small rate: every step improves. */
        CHECK(loss < prev);
        prev = loss;
    }
    printf("dlopen_test: library %s, loss %.5g -> %.5g over 20 steps\n", api.version_string(), first, loss);
    CHECK(loss < 0.9 * first);
    CHECK_OK(api.state_inspect(sw, bw, &info));
    CHECK(info.step == 20);
    {
        char why[MLORC_REASON_BYTES];
        CHECK(api.state_check(sw, 100, NULL, why, sizeof why) == MLORC_ERROR_STATE_TOO_SMALL);
        CHECK(strstr(why, "128") != NULL); /* reasons come back through the pointers too */
    }
    CHECK_OK(api.scratch_bytes(opt, &scratch));
    CHECK(scratch > 0);
    CHECK(api.step(opt, t, 2, -1.0) != MLORC_OK); /* errors come back through the pointers too */
    CHECK(api.last_error(opt)[0] != '\0');

    api.free(opt);
    current = NULL;
    free(sw);
    free(sc);
    CHECK(dlclose(lib) == 0);
    printf("dlopen_test: %lu checks passed\n", checks_run);
    return 0;
}
