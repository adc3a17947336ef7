/*
 * golden_test.c - the golden digests: every rule x storage x shape x option
 * of the library, and every rule's half-precision paths (bf16 and f16
 * parameters, fp32 gradients, master weights, bf16 moments), stepped 5 times
 * from fixed inputs, hashed (weights, every state, the group state) and
 * compared with Tests/golden/digests.txt.
 *
 * The digests were recorded from the library before a restructuring of its
 * core; any change to a result fails this test. A change that alters
 * numerics on purpose re-records them (`golden_test --record FILE`) and says
 * why in its commit. A case whose set-up or step is refused records the
 * status instead of a hash, so refusals are pinned too. The keys, bounds and
 * defaults of every rule are pinned the same way ("bounds/RULE/KEY").
 *
 * Usage: golden_test DIGESTS            compare (exit 1 on any difference)
 *        golden_test --record DIGESTS   write the digests of this library
 *
 * The low-rank steps go through OpenBLAS (gemm, QR, SVD), whose results
 * depend on the kernels it picks for the CPU at load time: the same library
 * gives other bits under its SkylakeX kernels than under its Haswell ones,
 * and on a CPU it does not recognise it falls back to Prescott's. So the
 * test always runs under OPENBLAS_CORETYPE=Haswell (it re-executes itself
 * with it), the kernels every machine the library supports (AVX2 + FMA) can
 * run: the digests pin the library's numerics, not the machine's.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mlorc.h"

#define STEPS 5
#define MAX_CASES 4096

/* FNV-1a, 64 bits: a digest, not a checksum of the library's own kind. */
static uint64_t fnv(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

/* xorshift64*: the inputs, keyed by the case's name so that cases are
 * independent of each other and of their order. */
static uint64_t next_random(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}
static float uniform(uint64_t *s) { /* in [-1, 1) */
    return (float)((double)(next_random(s) >> 40) / (double)(1ULL << 23) - 1.0);
}

typedef struct {
    int key;
    double value;
} setting;

typedef struct {
    char name[160];
    int rule;
    int storage;
    int64_t rows, cols;
    int32_t dtype; /* mlorc_tensor.dtype of both tensors: MLORC_DTYPE_F32 (0) but in the half cases */
    setting settings[4];
    int settings_count;
} golden_case;

static const char *rule_names[] = {"", "adamw", "lion", "adopt", "galore", "came", "prodigy", "dadapt_lion", "mofasgd"};
static const char *storage_names[] = {"auto", "dense", "lowrank"};

typedef struct {
    const char *name;
    setting s;
} option;

/* Each option alone; a rule it does not apply to refuses it (status
 * recorded). */
static const option options[] = {
    {"grams", {MLORC_PARAM_GRAMS, 1}},
    {"atan2", {MLORC_PARAM_ATAN2, 1}},
    {"cautious", {MLORC_PARAM_CAUTIOUS, 1}},
    {"orthograd", {MLORC_PARAM_ORTHOGRAD, 1}},
    {"clip0.05", {MLORC_PARAM_CLIP_NORM, 0.05}},
    {"pi1", {MLORC_PARAM_POWER_ITERATIONS, 1}},
    {"pi2", {MLORC_PARAM_POWER_ITERATIONS, 2}},
    {"os3", {MLORC_PARAM_OVERSAMPLING, 3}},
    {"nobc", {MLORC_PARAM_BIAS_CORRECTION, 0}},
    {"wd0.3", {MLORC_PARAM_WEIGHT_DECAY, 0.3}},
    {"adoptclip", {MLORC_PARAM_ADOPT_CLIP, 1}},
    {"interval2", {MLORC_PARAM_GALORE_INTERVAL, 2}},
    {"reciprocal", {MLORC_PARAM_MOFASGD_RECIPROCAL, 1}},
    {"stride1", {MLORC_PARAM_STATS_STRIDE, 1}},
    {"growth1.02", {MLORC_PARAM_GROWTH_RATE, 1.02}},
    {"rank2", {MLORC_PARAM_RANK, 2}},
    {"seed7", {MLORC_PARAM_SEED, 7}},
};

static const int64_t shapes[][2] = {
    {48, 20}, /* tall */
    {20, 48}, /* wide */
    {32, 32}, /* square */
    {1, 33},  /* row vector */
    {29, 1},  /* column vector */
    {6, 10},  /* a matrix below the AUTO threshold */
};

/* The half-precision paths: each rule on dense and low-rank storage with
 * bf16 parameters and gradients (stochastic rounding, the default, and to
 * nearest even), an fp32 gradient, fp32 master weights, bf16 moments
 * (refused by the rules without them: the status is pinned), f16, and bf16
 * at rank 8 (the default is 4); at a small shape and at 321 x 256 (1 and 2
 * threads). */
typedef struct {
    const char *name;
    int32_t dtype;
    setting s; /* key 0: none */
} half_variant;

static const half_variant half_variants[] = {
    {"bf16", MLORC_DTYPE_BF16, {0, 0}},
    {"bf16-nearest", MLORC_DTYPE_BF16, {MLORC_PARAM_STOCHASTIC_ROUNDING, 0}},
    {"bf16-gradf32", MLORC_DTYPE_BF16 | MLORC_DTYPE_GRAD_F32, {0, 0}},
    {"bf16-master", MLORC_DTYPE_BF16, {MLORC_PARAM_MASTER_WEIGHTS, 1}},
    {"bf16-state", MLORC_DTYPE_BF16, {MLORC_PARAM_STATE_DTYPE, MLORC_DTYPE_BF16}},
    {"f16", MLORC_DTYPE_F16, {0, 0}},
    {"bf16-rank8", MLORC_DTYPE_BF16, {MLORC_PARAM_RANK, 8}},
};

static int half_cases(golden_case *cases, int n) {
    static const int64_t half_shapes[][3] = {{20, 48, 1}, {321, 256, 1}, {321, 256, 2}}; /* rows, cols, threads */
    for (int rule = 1; rule <= 8; rule++) {
        for (int storage = 1; storage <= 2; storage++) {
            for (size_t v = 0; v < sizeof half_variants / sizeof half_variants[0]; v++) {
                for (size_t s = 0; s < sizeof half_shapes / sizeof half_shapes[0]; s++) {
                    golden_case *c = &cases[n++];
                    memset(c, 0, sizeof *c);
                    c->rule = rule, c->storage = storage;
                    c->rows = half_shapes[s][0], c->cols = half_shapes[s][1];
                    c->dtype = half_variants[v].dtype;
                    if (half_variants[v].s.key) c->settings[c->settings_count++] = half_variants[v].s;
                    c->settings[c->settings_count++] = (setting){MLORC_PARAM_THREADS, (double)half_shapes[s][2]};
                    snprintf(c->name, sizeof c->name, "%s/%s/%lldx%lld/%s/t%lld", rule_names[rule],
                             storage_names[storage], (long long)c->rows, (long long)c->cols, half_variants[v].name,
                             (long long)half_shapes[s][2]);
                }
            }
        }
    }
    return n;
}

/* Test inputs in a half type: bf16 rounded to nearest even, f16 truncated
 * (|x| < 8 here; tiny values flush to zero). Any fixed mapping would do. */
static uint16_t to_half(float x, int32_t dtype) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    if ((dtype & 0xff) == MLORC_DTYPE_BF16) return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
    uint32_t sign = (b >> 16) & 0x8000u, m = (b >> 13) & 0x3ffu;
    int e = (int)((b >> 23) & 0xffu) - 127 + 15;
    return (uint16_t)(e <= 0 ? sign : sign | (uint32_t)e << 10 | m);
}

/* Whether a stored element is finite. */
static int element_finite(const void *p, size_t i, int32_t dtype) {
    switch (dtype & 0xff) {
    case MLORC_DTYPE_BF16: return (((const uint16_t *)p)[i] & 0x7f80u) != 0x7f80u;
    case MLORC_DTYPE_F16: return (((const uint16_t *)p)[i] & 0x7c00u) != 0x7c00u;
    default: return isfinite(((const float *)p)[i]) != 0;
    }
}

static int build_cases(golden_case *cases) {
    int n = 0;
    for (int rule = 1; rule <= 8; rule++) {
        for (int storage = 0; storage <= 2; storage++) {
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
                golden_case *c = &cases[n++];
                memset(c, 0, sizeof *c);
                c->rule = rule, c->storage = storage, c->rows = shapes[s][0], c->cols = shapes[s][1];
                snprintf(c->name, sizeof c->name, "%s/%s/%lldx%lld/t1", rule_names[rule], storage_names[storage],
                         (long long)c->rows, (long long)c->cols);
            }
            for (size_t o = 0; o < sizeof options / sizeof options[0]; o++) {
                for (int shape = 0; shape < 2; shape++) { /* tall and wide */
                    golden_case *c = &cases[n++];
                    memset(c, 0, sizeof *c);
                    c->rule = rule, c->storage = storage, c->rows = shapes[shape][0], c->cols = shapes[shape][1];
                    c->settings[c->settings_count++] = options[o].s;
                    snprintf(c->name, sizeof c->name, "%s/%s/%lldx%lld/%s/t1", rule_names[rule],
                             storage_names[storage], (long long)c->rows, (long long)c->cols, options[o].name);
                }
            }
            /* Large enough that a step splits over threads (>= 2 x 32768 elements). 321 x 256:
             * whole 8-column blocks, the shape the AVX-512 kernels cover without the Swift
             * pass's help, and an odd row count (a row without a partner in the sketch
             * kernel's row pairs). Each shape at 1 and then 2 threads. */
            for (int wide = 0; wide < 2; wide++) {
                for (int threads = 1; threads <= 2; threads++) {
                    golden_case *c = &cases[n++];
                    memset(c, 0, sizeof *c);
                    c->rule = rule, c->storage = storage, c->rows = wide ? 321 : 320, c->cols = wide ? 256 : 257;
                    c->settings[c->settings_count++] = (setting){MLORC_PARAM_THREADS, threads};
                    snprintf(c->name, sizeof c->name, "%s/%s/%lldx%lld/t%d", rule_names[rule],
                             storage_names[storage], (long long)c->rows, (long long)c->cols, threads);
                }
            }
        }
    }
    return half_cases(cases, n);
}

static double base_lr(int rule) {
    return rule == MLORC_RULE_PRODIGY || rule == MLORC_RULE_DADAPT_LION ? 1.0 : 1e-2;
}

/* Steps one case: its tensor plus a 1x7 companion vector (AUTO storage) in
 * one batch, 5 steps of a decaying learning rate. Writes "hash" or
 * "status N at STAGE" into out. */
static void run_case(const golden_case *c, char *out, size_t out_size) {
    mlorc_optimizer *opt = NULL;
    int st = mlorc_create(&opt, c->rule);
    if (st != MLORC_OK) {
        snprintf(out, out_size, "status %d at create", st);
        return;
    }
    for (int i = 0; i < c->settings_count; i++) {
        st = mlorc_set_param(opt, c->settings[i].key, c->settings[i].value);
        if (st != MLORC_OK) {
            snprintf(out, out_size, "status %d at set_param", st);
            mlorc_free(opt);
            return;
        }
    }
    /* The inputs depend on the case without its thread count ("/tN" last). */
    uint64_t seed = fnv(0xcbf29ce484222325ULL, c->name, (size_t)(strrchr(c->name, '/') - c->name)) | 1;
    const int64_t rows[2] = {c->rows, 1}, cols[2] = {c->cols, 7};
    const int storages[2] = {c->storage, MLORC_STORAGE_AUTO};
    /* Element sizes: half cases hold 2-byte parameters and, without MLORC_DTYPE_GRAD_F32, gradients. */
    const int32_t param_dtype = c->dtype & 0xff;
    const size_t param_size = param_dtype == MLORC_DTYPE_F32 ? 4 : 2;
    const size_t grad_size = param_dtype == MLORC_DTYPE_F32 || (c->dtype & MLORC_DTYPE_GRAD_F32) ? 4 : 2;
    void *param[2] = {0}, *grad[2] = {0};
    void *state[2] = {0};
    size_t state_bytes[2] = {0};
    unsigned char group[MLORC_GROUP_STATE_BYTES];
    int has_group = 0;
    const char *stage = NULL;
    for (int t = 0; t < 2 && !stage; t++) {
        size_t n = (size_t)(rows[t] * cols[t]);
        param[t] = malloc(n * param_size);
        grad[t] = malloc(n * grad_size);
        for (size_t i = 0; i < n; i++) {
            float x = 0.5f * uniform(&seed);
            if (param_size == 4) ((float *)param[t])[i] = x; else ((uint16_t *)param[t])[i] = to_half(x, param_dtype);
        }
        mlorc_tensor_layout layout = {rows[t], cols[t], param_dtype, storages[t]};
        if ((st = mlorc_state_size(opt, &layout, &state_bytes[t])) != MLORC_OK) {
            stage = "state_size";
            break;
        }
        state[t] = malloc(state_bytes[t]);
        if ((st = mlorc_state_init_with_param(opt, &layout, 11 + (uint64_t)t, param[t], state[t], state_bytes[t])) !=
            MLORC_OK)
            stage = "state_init";
    }
    if (!stage && mlorc_group_state_init(opt, group, sizeof group) == MLORC_OK) has_group = 1;
    for (int step = 0; step < STEPS && !stage; step++) {
        mlorc_tensor tensors[2];
        for (int t = 0; t < 2; t++) {
            size_t n = (size_t)(rows[t] * cols[t]);
            for (size_t i = 0; i < n; i++) {
                float x = uniform(&seed) * (1.0f + (float)(i % 5));
                if (grad_size == 4) ((float *)grad[t])[i] = x; else ((uint16_t *)grad[t])[i] = to_half(x, param_dtype);
            }
            tensors[t] = (mlorc_tensor){param[t], grad[t], state[t], state_bytes[t], rows[t], cols[t], c->dtype, 0};
        }
        double lr = base_lr(c->rule) * (1.0 - 0.1 * step);
        st = has_group ? mlorc_step_group(opt, tensors, 2, lr, group, sizeof group)
                       : mlorc_step(opt, tensors, 2, lr);
        if (st != MLORC_OK) stage = "step";
    }
    if (stage) {
        snprintf(out, out_size, "status %d at %s", st, stage);
    } else {
        uint64_t h = 0xcbf29ce484222325ULL;
        int finite = 1;
        for (int t = 0; t < 2; t++) {
            size_t n = (size_t)(rows[t] * cols[t]);
            for (size_t i = 0; i < n; i++) finite &= element_finite(param[t], i, param_dtype);
            h = fnv(h, param[t], n * param_size);
            h = fnv(h, state[t], state_bytes[t]);
        }
        if (has_group) h = fnv(h, group, sizeof group);
        snprintf(out, out_size, "%016llx%s", (unsigned long long)h, finite ? "" : " non-finite weights");
    }
    for (int t = 0; t < 2; t++) free(param[t]), free(grad[t]), free(state[t]);
    mlorc_free(opt);
}

/* The registry's keys, bounds and defaults: "bounds/RULE/KEY" -> "min max
 * default" (%.17g) or the status of a key that does not apply. */
#define MAX_KEY 30 /* MLORC_PARAM_STATE_DTYPE; one past it checks an unknown key */
static int bounds_cases(golden_case *cases, char (*digests)[96], int n) {
    for (int rule = 1; rule <= 8; rule++) {
        mlorc_optimizer *opt = NULL;
        if (mlorc_create(&opt, rule) != MLORC_OK) continue;
        for (int key = 1; key <= MAX_KEY + 1; key++) {
            golden_case *c = &cases[n];
            memset(c, 0, sizeof *c);
            snprintf(c->name, sizeof c->name, "bounds/%s/%d", rule_names[rule], key);
            double lo = 0, hi = 0, value = 0;
            int st = mlorc_param_bounds(rule, key, &lo, &hi);
            int st2 = mlorc_get_param(opt, key, &value);
            if (st != MLORC_OK || st2 != MLORC_OK)
                snprintf(digests[n], sizeof digests[n], "status %d %d", st, st2);
            else
                snprintf(digests[n], sizeof digests[n], "%.17g %.17g %.17g", lo, hi, value);
            n++;
        }
        mlorc_free(opt);
    }
    return n;
}

int main(int argc, char **argv) {
    const char *core = getenv("OPENBLAS_CORETYPE");
    if (core == NULL || strcmp(core, "Haswell") != 0) {
        /* OpenBLAS chose its kernels when it was loaded: start again with ours. */
        if (setenv("OPENBLAS_CORETYPE", "Haswell", 1) != 0) return perror("setenv"), 2;
        execv("/proc/self/exe", argv);
        perror("execv /proc/self/exe");
        return 2;
    }
    int record = argc == 3 && strcmp(argv[1], "--record") == 0;
    if (argc != 2 && !record) {
        fprintf(stderr, "usage: %s [--record] DIGESTS\n", argv[0]);
        return 2;
    }
    const char *path = argv[argc - 1];
    static golden_case cases[MAX_CASES];
    static char digests[MAX_CASES][96];
    int n = build_cases(cases);
    for (int i = 0; i < n; i++) run_case(&cases[i], digests[i], sizeof digests[i]);
    n = bounds_cases(cases, digests, n);

    /* The thread count never changes a result. */
    int failures = 0;
    for (int i = 0; i + 1 < n; i++) {
        size_t len = strlen(cases[i].name);
        /* Each "/t1" case followed by the same case at 2 threads. */
        if (len > 3 && strcmp(cases[i].name + len - 3, "/t1") == 0 &&
            strncmp(cases[i].name, cases[i + 1].name, len - 1) == 0 && strcmp(cases[i + 1].name + len - 1, "2") == 0 &&
            strcmp(digests[i], digests[i + 1]) != 0) {
            fprintf(stderr, "FAIL %s: 1 and 2 threads differ (%s vs %s)\n", cases[i].name, digests[i],
                    digests[i + 1]);
            failures++;
        }
    }

    if (record) {
        FILE *f = fopen(path, "w");
        if (!f) {
            perror(path);
            return 2;
        }
        fprintf(f, "# Golden digests of Tests/c/golden_test.c: case, then FNV-1a 64 of weights, states and\n"
                   "# group state after %d steps, or the status of a refused set-up or step.\n",
                STEPS);
        for (int i = 0; i < n; i++) fprintf(f, "%s %s\n", cases[i].name, digests[i]);
        fclose(f);
        printf("recorded %d digests in %s\n", n, path);
        return failures ? 1 : 0;
    }

    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return 2;
    }
    char line[512];
    int matched = 0, seen = 0;
    static char found[MAX_CASES];
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        line[strcspn(line, "\n")] = 0;
        char *space = strchr(line, ' ');
        if (!space) continue;
        *space = 0;
        seen++;
        int i = 0;
        while (i < n && strcmp(cases[i].name, line) != 0) i++;
        if (i == n) {
            fprintf(stderr, "FAIL %s: in the digest file but not a case of this test\n", line);
            failures++;
            continue;
        }
        found[i] = 1;
        if (strcmp(digests[i], space + 1) != 0) {
            fprintf(stderr, "FAIL %s: got %s, golden %s\n", line, digests[i], space + 1);
            failures++;
        } else {
            matched++;
        }
    }
    fclose(f);
    for (int i = 0; i < n; i++)
        if (!found[i]) {
            fprintf(stderr, "FAIL %s: no golden digest recorded\n", cases[i].name);
            failures++;
        }
    int refused = 0, bounds = 0;
    for (int i = 0; i < n; i++) {
        int is_bounds = strncmp(cases[i].name, "bounds/", 7) == 0;
        bounds += is_bounds;
        refused += !is_bounds && strncmp(digests[i], "status", 6) == 0;
    }
    printf("%d step cases (%d stepped, %d refused) and %d key bounds: %d of %d golden digests match, %d failures\n",
           n - bounds, n - bounds - refused, refused, bounds, matched, seen, failures);
    return failures ? 1 : 0;
}
