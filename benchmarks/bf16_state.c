/*
 * bf16_state.c - what storing the optimizer state in bf16
 * (MLORC_PARAM_STATE_DTYPE) does to training: least squares (W: 64 x 256,
 * 4096 samples in batches of 64, fp32 weights and gradients, so only the
 * state's precision differs) trained with AdamW and Lion on dense and
 * low-rank (r 4) storage, with an fp32 state, a bf16 state rounded to
 * nearest even and a bf16 state rounded stochastically
 * (MLORC_PARAM_STOCHASTIC_ROUNDING). Prints the training loss (mean squared
 * error over all samples; noise floor 1e-4) after STEPS/3, 2 STEPS/3 and
 * STEPS steps, and the state's bytes.
 *
 * Then the risk of nearest rounding, measured directly: a dense AdamW second
 * moment (beta2 = 0.999) fed gradients whose scale falls 100x over 3000
 * steps (g = s_t * noise). Its decrement (1 - beta2)(v - g^2) is below half
 * an ulp of bf16 (2^-9 v), so rounded to nearest it cannot fall. Prints the
 * median ratio of the bf16 state's v to the fp32 state's at steps 1000,
 * 2000 and 3000.
 *
 *   bf16_state [STEPS [ADAMW_LR [LION_LR]]]    (defaults 1500, 1e-3, 1e-4)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlorc.h"

enum { M = 64, N = 256, SAMPLES = 4096, BATCH = 64 };

static uint64_t rng = 12345;
static float gauss(void) {
    double u = 0, v = 0;
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17, u = ((rng >> 11) + 0.5) / 9007199254740992.0;
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17, v = ((rng >> 11) + 0.5) / 9007199254740992.0;
    return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
}

static float *X, *Y, *W0;

/* Mean squared error of W over every sample (grad NULL), or the gradient of
 * one batch's mean squared error. */
static double loss_and_grad(const float *w, int batch, float *grad) {
    if (grad) memset(grad, 0, sizeof(float) * M * N);
    double total = 0;
    for (int s = grad ? batch * BATCH : 0; s < (grad ? (batch + 1) * BATCH : SAMPLES); s++) {
        for (int i = 0; i < M; i++) {
            double pred = 0;
            for (int j = 0; j < N; j++) pred += w[i * N + j] * X[s * N + j];
            double err = pred - Y[s * M + i];
            total += err * err;
            if (grad)
                for (int j = 0; j < N; j++) grad[i * N + j] += (float)(2 * err * X[s * N + j] / BATCH);
        }
    }
    return total / (grad ? BATCH * M : (double)SAMPLES * M);
}

static void die(mlorc_optimizer *opt, const char *what) {
    fprintf(stderr, "%s: %s\n", what, mlorc_last_error(opt));
    exit(1);
}

/* Trains from W0; losses[k] after (k + 1) * steps / 3 steps. */
static size_t train(int rule, int storage, int state_dtype, int stochastic, int steps, double lr, double losses[3]) {
    mlorc_optimizer *opt;
    if (mlorc_create(&opt, rule)) die(opt, "create");
    if (mlorc_set_param(opt, MLORC_PARAM_WEIGHT_DECAY, 0) || mlorc_set_param(opt, MLORC_PARAM_STATE_DTYPE, state_dtype) ||
        mlorc_set_param(opt, MLORC_PARAM_STOCHASTIC_ROUNDING, stochastic))
        die(opt, "set_param");
    static float w[M * N], g[M * N];
    memcpy(w, W0, sizeof w);
    mlorc_tensor_layout layout = {M, N, MLORC_DTYPE_F32, storage};
    size_t bytes;
    if (mlorc_state_size(opt, &layout, &bytes)) die(opt, "state_size");
    void *state = malloc(bytes);
    if (mlorc_state_init(opt, &layout, 1, state, bytes)) die(opt, "state_init");
    for (int t = 0; t < steps; t++) {
        loss_and_grad(w, t % (SAMPLES / BATCH), g);
        mlorc_tensor x = {w, g, state, bytes, M, N, MLORC_DTYPE_F32, 0};
        if (mlorc_step(opt, &x, 1, lr)) die(opt, "step");
        if ((t + 1) % (steps / 3) == 0 && (t + 1) / (steps / 3) <= 3) losses[(t + 1) / (steps / 3) - 1] = loss_and_grad(w, 0, NULL);
    }
    free(state);
    mlorc_free(opt);
    return bytes;
}

/* Dense AdamW's v at steps 1000, 2000, 3000 under a falling gradient scale; medians of v_bf16 / v_fp32. */
static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}
static void second_moment_tracking(int stochastic, double medians[3]) {
    enum { TM = 64, TN = 256, TSTEPS = 3000 };
    mlorc_optimizer *opt[2];
    unsigned char *state[2];
    size_t bytes[2];
    static float w[2][TM * TN], g[TM * TN], ratio[TM * TN];
    for (int k = 0; k < 2; k++) {
        if (mlorc_create(&opt[k], MLORC_RULE_ADAMW) || mlorc_set_param(opt[k], MLORC_PARAM_STATE_DTYPE, k) ||
            mlorc_set_param(opt[k], MLORC_PARAM_STOCHASTIC_ROUNDING, stochastic))
            die(opt[k], "tracking handle");
        mlorc_tensor_layout layout = {TM, TN, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
        mlorc_state_size(opt[k], &layout, &bytes[k]);
        state[k] = malloc(bytes[k]);
        if (mlorc_state_init(opt[k], &layout, 3, state[k], bytes[k])) die(opt[k], "tracking state");
        memset(w[k], 0, sizeof w[k]);
    }
    for (int t = 0; t < TSTEPS; t++) {
        float scale = (float)pow(0.01, (double)t / (TSTEPS - 1));
        for (int e = 0; e < TM * TN; e++) g[e] = scale * gauss();
        for (int k = 0; k < 2; k++) {
            mlorc_tensor x = {w[k], g, state[k], bytes[k], TM, TN, MLORC_DTYPE_F32, 0};
            if (mlorc_step(opt[k], &x, 1, 1e-6)) die(opt[k], "tracking step");
        }
        if ((t + 1) % 1000 == 0) {
            const unsigned char *v32 = state[0] + MLORC_STATE_HEADER_BYTES + 4 * TM * TN;
            const unsigned char *v16 = state[1] + MLORC_STATE_HEADER_BYTES + 2 * TM * TN;
            for (int e = 0; e < TM * TN; e++) {
                float a, b;
                uint16_t h;
                uint32_t bits;
                memcpy(&a, v32 + 4 * e, 4), memcpy(&h, v16 + 2 * e, 2);
                bits = (uint32_t)h << 16, memcpy(&b, &bits, 4);
                ratio[e] = b / a;
            }
            qsort(ratio, TM * TN, sizeof ratio[0], cmp_float);
            medians[(t + 1) / 1000 - 1] = ratio[TM * TN / 2];
        }
    }
    for (int k = 0; k < 2; k++) free(state[k]), mlorc_free(opt[k]);
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 1500;
    double adamw_lr = argc > 2 ? atof(argv[2]) : 1e-3, lion_lr = argc > 3 ? atof(argv[3]) : 1e-4;
    if (steps < 3) steps = 3;
    X = malloc(sizeof(float) * SAMPLES * N), Y = malloc(sizeof(float) * SAMPLES * M), W0 = malloc(sizeof(float) * M * N);
    float *truth = malloc(sizeof(float) * M * N);
    for (int e = 0; e < M * N; e++) truth[e] = gauss() / sqrtf(N);
    for (int s = 0; s < SAMPLES; s++) {
        for (int j = 0; j < N; j++) X[s * N + j] = gauss();
        for (int i = 0; i < M; i++) {
            double y = 0;
            for (int j = 0; j < N; j++) y += truth[i * N + j] * X[s * N + j];
            Y[s * M + i] = (float)y + 0.01f * gauss();
        }
    }
    for (int e = 0; e < M * N; e++) W0[e] = 0.02f * gauss();
    printf("least squares 64x256, fp32 weights, %d steps of 64 samples; loss at steps %d / %d / %d "
           "(initial %.4f, noise floor 1e-4)\n", steps, steps / 3, 2 * (steps / 3), 3 * (steps / 3),
           loss_and_grad(W0, 0, NULL));
    const struct { const char *name; int rule; double lr; } rules[] = {
        {"AdamW", MLORC_RULE_ADAMW, adamw_lr}, {"Lion", MLORC_RULE_LION, lion_lr}};
    const struct { const char *name; int storage; } storages[] = {
        {"dense", MLORC_STORAGE_DENSE}, {"low-rank r4", MLORC_STORAGE_LOWRANK}};
    const struct { const char *name; int dtype, stochastic; } states[] = {
        {"fp32 state", MLORC_DTYPE_F32, 1}, {"bf16, nearest", MLORC_DTYPE_BF16, 0}, {"bf16, stochastic", MLORC_DTYPE_BF16, 1}};
    for (int r = 0; r < 2; r++)
        for (int s = 0; s < 2; s++)
            for (int k = 0; k < 3; k++) {
                double losses[3] = {0, 0, 0};
                size_t bytes = train(rules[r].rule, storages[s].storage, states[k].dtype, states[k].stochastic, steps,
                                     rules[r].lr, losses);
                printf("%-6s lr %-7g %-12s %-17s %8zu bytes  %.6f  %.6f  %.6f\n", rules[r].name, rules[r].lr,
                       storages[s].name, states[k].name, bytes, losses[0], losses[1], losses[2]);
            }
    printf("dense AdamW v under a gradient scale falling 100x over 3000 steps: median v_bf16 / v_fp32 at 1000 / 2000 / 3000\n");
    for (int stochastic = 0; stochastic < 2; stochastic++) {
        double medians[3];
        second_moment_tracking(stochastic, medians);
        printf("bf16 %-10s  %.4f  %.4f  %.4f\n", stochastic ? "stochastic" : "nearest", medians[0], medians[1], medians[2]);
    }
    return 0;
}
