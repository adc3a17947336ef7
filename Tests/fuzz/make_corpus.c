/*
 * make_corpus.c - writes the seed corpus of fuzz_state: valid states made by
 * the library itself, so mutations start from inputs that pass validation.
 *
 * Usage: make_corpus DIR. Writes DIR/RULE-{dense,lowrank}-{fresh,stepped}.bin
 * for every rule the library supports (adamw, lion, adopt, galore-adamw, came,
 * prodigy, dadapt-lion, mofasgd; ruleN
 * for later ones),
 * each a 32-byte control block (see fuzz_state.c) followed by one state:
 * dense 3x5 or low-rank 8x6 with rank 2; "stepped" after 3 steps.
 */
#include "mlorc.h"
#include "../support/step_any.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONTROL_BYTES 32
#define FIX_HEADER 1
#define FIX_PAYLOAD 2

static void die(const char *what, int rc) {
    fprintf(stderr, "make_corpus: %s failed (status %d)\n", what, rc);
    exit(1);
}

static void write_seed(const char *dir, mlorc_optimizer *opt, int rule, int rule_index, int storage, int steps) {
    const int64_t rows = storage == MLORC_STORAGE_DENSE ? 3 : 8, cols = storage == MLORC_STORAGE_DENSE ? 5 : 6;
    mlorc_tensor_layout layout = {rows, cols, MLORC_DTYPE_F32, storage};
    unsigned char control[CONTROL_BYTES] = {0};
    float param[48], grad[48];
    size_t bytes = 0, i;
    unsigned char *state;
    mlorc_tensor t;
    char path[512], name[16];
    FILE *f;
    int rc, s;

    if ((rc = mlorc_state_size(opt, &layout, &bytes)) != MLORC_OK) die("mlorc_state_size", rc);
    state = malloc(bytes);
    if (!state) die("malloc", -1);
    if ((rc = mlorc_state_init(opt, &layout, 3, state, bytes)) != MLORC_OK) die("mlorc_state_init", rc);
    for (i = 0; i < 48; ++i) param[i] = (float)i / 48.0f - 0.5f;
    memset(&t, 0, sizeof t);
    t.param = param;
    t.grad = grad;
    t.state = state;
    t.state_bytes = bytes;
    t.rows = rows;
    t.cols = cols;
    for (s = 0; s < steps; ++s) {
        for (i = 0; i < 48; ++i) grad[i] = (float)((i * 7 + (size_t)s * 13) % 17) / 17.0f - 0.5f;
        if ((rc = mlorc_test_step_any(opt, &t, 1, 1e-2)) != MLORC_OK) die("mlorc_step", rc);
    }

    /* Control block: reseal both checksums, rank 2, and the tensor's own
     * shape and storage for the layout calls. */
    control[0] = FIX_HEADER | FIX_PAYLOAD;
    control[2] = 1;
    control[3] = (unsigned char)(rule_index << 2);
    control[7] = (unsigned char)storage;
    memcpy(control + 8, &rows, 8);
    memcpy(control + 16, &cols, 8);

    switch (rule) {
    case MLORC_RULE_ADAMW: snprintf(name, sizeof name, "adamw"); break;
    case MLORC_RULE_LION: snprintf(name, sizeof name, "lion"); break;
    case MLORC_RULE_ADOPT: snprintf(name, sizeof name, "adopt"); break;
    case MLORC_RULE_GALORE_ADAMW: snprintf(name, sizeof name, "galore-adamw"); break;
    case MLORC_RULE_CAME: snprintf(name, sizeof name, "came"); break;
    case MLORC_RULE_PRODIGY: snprintf(name, sizeof name, "prodigy"); break;
    case MLORC_RULE_DADAPT_LION: snprintf(name, sizeof name, "dadapt-lion"); break;
    case MLORC_RULE_MOFASGD: snprintf(name, sizeof name, "mofasgd"); break;
    default: snprintf(name, sizeof name, "rule%d", rule); break;
    }
    snprintf(path, sizeof path, "%s/%s-%s-%s.bin", dir, name, storage == MLORC_STORAGE_DENSE ? "dense" : "lowrank",
             steps ? "stepped" : "fresh");
    f = fopen(path, "wb");
    if (!f || fwrite(control, 1, sizeof control, f) != sizeof control || fwrite(state, 1, bytes, f) != bytes ||
        fclose(f) != 0)
        die(path, -1);
    free(state);
}

int main(int argc, char **argv) {
    static const int storages[2] = {MLORC_STORAGE_DENSE, MLORC_STORAGE_LOWRANK};
    int rule, index = 0, s, rc;
    if (argc != 2) {
        fprintf(stderr, "usage: make_corpus DIR\n");
        return 2;
    }
    /* Rules are probed in the order fuzz_state.c indexes them. */
    for (rule = 1; rule < 16; ++rule) {
        mlorc_optimizer *opt = NULL;
        if (mlorc_create(&opt, rule) != MLORC_OK) continue;
        if ((rc = mlorc_set_param(opt, MLORC_PARAM_RANK, 2)) != MLORC_OK) die("mlorc_set_param", rc);
        for (s = 0; s < 2; ++s) {
            write_seed(argv[1], opt, rule, index, storages[s], 0);
            write_seed(argv[1], opt, rule, index, storages[s], 3);
        }
        mlorc_free(opt);
        ++index;
    }
    return 0;
}
