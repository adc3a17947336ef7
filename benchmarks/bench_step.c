/*
 * bench_step: times one libmlorc optimizer step on a single rows x cols
 * tensor and measures the extra memory a step needs.
 *
 *   bench_step RULE STORAGE RANK ROWS COLS THREADS [STEPS [TYPES]]
 *     RULE adamw|lion|adopt|galore|came|mofasgd, STORAGE lowrank|dense, TYPES f32 (default) | bf16
 *     (bf16 parameters and gradients) | bf16-state (fp32 tensors, bf16
 *     state: MLORC_PARAM_STATE_DTYPE) | bf16-all (both)
 *
 * Prints one line of JSON: median / min step time (ms) over STEPS timed steps
 * after 3 warm-up steps, state bytes, handle scratch bytes, and the peak
 * resident-memory growth of the first step (which allocates the handle's
 * scratch and starts its threads) and of a later, warm step (VmHWM after the
 * step minus VmRSS before it, the high-water mark reset through
 * /proc/self/clear_refs).
 */
#define _GNU_SOURCE
#include "mlorc.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Reads a "Name:   N kB" field of /proc/self/status, in bytes (-1 if absent). */
static long long proc_status_bytes(const char *name) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = -1;
    size_t len = strlen(name);
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, len) == 0 && line[len] == ':') { kb = atoll(line + len + 1); break; }
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

static int reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Peak resident-memory growth while one step runs (-1 if not measurable,
 * -2 if the step failed). */
static long long step_peak_growth(mlorc_optimizer *opt, mlorc_tensor *t) {
    long long rss_before = proc_status_bytes("VmRSS");
    int peak_ok = reset_peak_rss();
    int rc = mlorc_step(opt, t, 1, 1e-4);
    long long peak = proc_status_bytes("VmHWM");
    if (rc) {
        fprintf(stderr, "mlorc_step failed: %s (%s)\n", mlorc_status_string(rc), mlorc_last_error(opt));
        return -2;
    }
    return peak_ok && peak >= 0 && rss_before >= 0 ? peak - rss_before : -1;
}

#define CHECK(call) do { int rc_ = (call); if (rc_) { \
    fprintf(stderr, "%s failed: %s (%s)\n", #call, mlorc_status_string(rc_), mlorc_last_error(opt)); \
    return 1; } } while (0)

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s adamw|lion|adopt|galore|came|mofasgd lowrank|dense RANK ROWS COLS THREADS [STEPS [f32|bf16|bf16-state|bf16-all]]\n", argv[0]);
        return 2;
    }
    /* The rules that step without a group state. */
    static const struct { const char *name; int rule; } rules[] = {
        {"adamw", MLORC_RULE_ADAMW}, {"lion", MLORC_RULE_LION}, {"adopt", MLORC_RULE_ADOPT},
        {"galore", MLORC_RULE_GALORE_ADAMW}, {"came", MLORC_RULE_CAME}, {"mofasgd", MLORC_RULE_MOFASGD},
    };
    int rule = 0;
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (strcmp(argv[1], rules[i].name) == 0) rule = rules[i].rule;
    if (!rule) {
        fprintf(stderr, "unknown rule %s (adamw, lion, adopt, galore, came, mofasgd)\n", argv[1]);
        return 2;
    }
    int storage = strcmp(argv[2], "dense") == 0 ? MLORC_STORAGE_DENSE : MLORC_STORAGE_LOWRANK;
    int rank = atoi(argv[3]), threads = atoi(argv[6]);
    int64_t rows = atoll(argv[4]), cols = atoll(argv[5]);
    int steps = argc > 7 ? atoi(argv[7]) : 20;
    const char *types = argc > 8 ? argv[8] : "f32";
    int bf16_tensors = strcmp(types, "bf16") == 0 || strcmp(types, "bf16-all") == 0;
    int bf16_state = strcmp(types, "bf16-state") == 0 || strcmp(types, "bf16-all") == 0;
    int dtype = bf16_tensors ? MLORC_DTYPE_BF16 : MLORC_DTYPE_F32;
    size_t n = (size_t)(rows * cols);

    mlorc_optimizer *opt = NULL;
    if (mlorc_create(&opt, rule)) return 1;
    CHECK(mlorc_set_param(opt, MLORC_PARAM_RANK, rank));
    CHECK(mlorc_set_param(opt, MLORC_PARAM_THREADS, threads));
    if (bf16_state) CHECK(mlorc_set_param(opt, 30 /* MLORC_PARAM_STATE_DTYPE */, 1));

    float *w = malloc(n * sizeof *w), *g = malloc(n * sizeof *g);
    if (!w || !g) return 1;
    for (size_t i = 0; i < n; i++) {
        w[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
        g[i] = (float)((i * 40503u) % 997) * 1e-3f - 0.5f;
    }
    if (bf16_tensors) { /* the top halves of the same values, packed in place */
        uint16_t *w16 = (uint16_t *)w, *g16 = (uint16_t *)g;
        for (size_t i = 0; i < n; i++) {
            uint32_t wb, gb;
            memcpy(&wb, &w[i], 4), memcpy(&gb, &g[i], 4);
            w16[i] = (uint16_t)(wb >> 16), g16[i] = (uint16_t)(gb >> 16);
        }
    }
    mlorc_tensor_layout layout = {rows, cols, dtype, storage};
    size_t state_bytes = 0;
    CHECK(mlorc_state_size(opt, &layout, &state_bytes));
    void *state = malloc(state_bytes);
    if (!state) return 1;
    CHECK(mlorc_state_init(opt, &layout, 1, state, state_bytes));
    mlorc_tensor t = {w, g, state, state_bytes, rows, cols, dtype, 0};

    long long first_extra = step_peak_growth(opt, &t);
    if (first_extra == -2) return 1;
    for (int i = 0; i < 2; i++) CHECK(mlorc_step(opt, &t, 1, 1e-4));
    long long warm_extra = step_peak_growth(opt, &t);
    if (warm_extra == -2) return 1;

    double *times = malloc((size_t)steps * sizeof *times);
    for (int i = 0; i < steps; i++) {
        double t0 = now_ms();
        CHECK(mlorc_step(opt, &t, 1, 1e-4));
        times[i] = now_ms() - t0;
    }
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    size_t scratch = 0;
    CHECK(mlorc_scratch_bytes(opt, &scratch));
    printf("{\"rule\": \"%s\", \"storage\": \"%s\", \"rank\": %d, \"rows\": %lld, \"cols\": %lld, "
           "\"threads\": %d, \"median_ms\": %.3f, \"min_ms\": %.3f, \"state_bytes\": %zu, "
           "\"scratch_bytes\": %zu, \"first_step_extra_bytes\": %lld, \"peak_extra_bytes\": %lld}\n",
           argv[1], argv[2], rank, (long long)rows, (long long)cols, threads,
           times[steps / 2], times[0], state_bytes, scratch, first_extra, warm_extra);
    free(times); free(state); free(w); free(g);
    mlorc_free(opt);
    return 0;
}
