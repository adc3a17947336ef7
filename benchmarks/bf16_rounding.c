/*
 * bf16_rounding.c - what the rounding of bf16 weights does to training:
 * least squares (W: 64 x 256, 4096 samples in batches of 64) trained with
 * AdamW on bf16 parameters and gradients, rounding to nearest even against
 * stochastic rounding, without and with fp32 master weights, against fp32.
 * Prints the final training loss of each. Usage: bf16_rounding [STEPS [LR]]
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
static float from_bf16(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}
static uint16_t to_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

static float *X, *Y, *truth;

/* Mean squared error of W on every sample, and the gradient on one batch. */
static double loss_and_grad(const float *w, int batch, float *grad) {
    if (grad) memset(grad, 0, sizeof(float) * M * N);
    double total = 0;
    for (int s = 0; s < SAMPLES; s++) {
        int in_batch = s / BATCH == batch;
        if (!in_batch && grad) continue;
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

static double train(int dtype, int master, int stochastic, int steps, double lr) {
    mlorc_optimizer *opt;
    mlorc_create(&opt, MLORC_RULE_ADAMW);
    mlorc_set_param(opt, MLORC_PARAM_WEIGHT_DECAY, 0);
    if (dtype != MLORC_DTYPE_F32) {
        mlorc_set_param(opt, MLORC_PARAM_MASTER_WEIGHTS, master);
        mlorc_set_param(opt, MLORC_PARAM_STOCHASTIC_ROUNDING, stochastic);
    }
    static float w[M * N], g[M * N], wide[M * N];
    static uint16_t w16[M * N], g16[M * N];
    for (int e = 0; e < M * N; e++) w16[e] = to_bf16(0.02f * gauss()), w[e] = from_bf16(w16[e]);
    mlorc_tensor_layout layout = {M, N, dtype, MLORC_STORAGE_LOWRANK};
    size_t bytes;
    mlorc_state_size(opt, &layout, &bytes);
    void *state = malloc(bytes);
    if (mlorc_state_init_with_param(opt, &layout, 1, w16, state, bytes)) {
        fprintf(stderr, "%s\n", mlorc_last_error(opt));
        exit(1);
    }
    for (int t = 0; t < steps; t++) {
        if (dtype == MLORC_DTYPE_F32) {
            loss_and_grad(w, t % (SAMPLES / BATCH), g);
            mlorc_tensor x = {w, g, state, bytes, M, N, MLORC_DTYPE_F32, 0};
            if (mlorc_step(opt, &x, 1, lr)) fprintf(stderr, "%s\n", mlorc_last_error(opt));
        } else {
            for (int e = 0; e < M * N; e++) wide[e] = from_bf16(w16[e]);
            loss_and_grad(wide, t % (SAMPLES / BATCH), g);
            for (int e = 0; e < M * N; e++) g16[e] = to_bf16(g[e]);
            mlorc_tensor x = {w16, g16, state, bytes, M, N, MLORC_DTYPE_BF16, 0};
            if (mlorc_step(opt, &x, 1, lr)) fprintf(stderr, "%s\n", mlorc_last_error(opt));
        }
    }
    if (dtype != MLORC_DTYPE_F32)
        for (int e = 0; e < M * N; e++) w[e] = from_bf16(w16[e]);
    double loss = loss_and_grad(w, 0, NULL);
    free(state);
    mlorc_free(opt);
    return loss;
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 1500;
    double lr = argc > 2 ? atof(argv[2]) : 1e-3;
    X = malloc(sizeof(float) * SAMPLES * N), Y = malloc(sizeof(float) * SAMPLES * M);
    truth = malloc(sizeof(float) * M * N);
    for (int e = 0; e < M * N; e++) truth[e] = gauss() / sqrtf(N);
    for (int s = 0; s < SAMPLES; s++) {
        for (int j = 0; j < N; j++) X[s * N + j] = gauss();
        for (int i = 0; i < M; i++) {
            double y = 0;
            for (int j = 0; j < N; j++) y += truth[i * N + j] * X[s * N + j];
            Y[s * M + i] = (float)y + 0.01f * gauss();
        }
    }
    printf("MLorc-AdamW r4, %d steps, lr %g: final mean squared error (noise floor 1e-4)\n", steps, lr);
    printf("fp32                          %.6f\n", train(MLORC_DTYPE_F32, 0, 0, steps, lr));
    printf("bf16, nearest even            %.6f\n", train(MLORC_DTYPE_BF16, 0, 0, steps, lr));
    printf("bf16, stochastic              %.6f\n", train(MLORC_DTYPE_BF16, 0, 1, steps, lr));
    printf("bf16 + fp32 master, nearest   %.6f\n", train(MLORC_DTYPE_BF16, 1, 0, steps, lr));
    printf("bf16 + fp32 master, stochastic %.6f\n", train(MLORC_DTYPE_BF16, 1, 1, steps, lr));
    return 0;
}
