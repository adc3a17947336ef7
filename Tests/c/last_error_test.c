/*
 * last_error_test.c - mlorc_last_error() as include/mlorc.h documents it:
 * the message of the handle's last failed call, kept (text and pointer)
 * through successful calls until the next failure; failures of the calls
 * taking a const handle are recorded too; calls without a handle record
 * nothing.
 */
#include "mlorc.h"
#include "../support/check.h"

#include <math.h>
#include <string.h>

int main(void) {
    mlorc_optimizer *opt = NULL;
    mlorc_tensor_layout layout = {4, 4, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE}, bad = {0, 4, MLORC_DTYPE_F32, 0};
    unsigned char state[512];
    float param[16] = {0}, grad[16] = {0};
    mlorc_tensor t;
    mlorc_state_info info;
    const char *first;
    char kept[256];
    double lo, hi, v;
    size_t bytes;
    int rule;

    CHECK_RC(mlorc_create(&opt, MLORC_RULE_ADAMW), MLORC_OK);
    check_handle = opt;
    CHECK(strcmp(mlorc_last_error(opt), "") == 0); /* nothing failed yet */

    /* A failure leaves its message... */
    CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_RANK, 2.5), MLORC_ERROR_PARAM_OUT_OF_RANGE);
    first = mlorc_last_error(opt);
    CHECK(strstr(first, "rank") != NULL && strstr(first, "integer") != NULL);
    snprintf(kept, sizeof kept, "%s", first);

    /* ...which successful calls of every kind leave as it was, same pointer. */
    CHECK_RC(mlorc_set_param(opt, MLORC_PARAM_RANK, 2), MLORC_OK);
    CHECK_RC(mlorc_get_param(opt, MLORC_PARAM_RANK, &v), MLORC_OK);
    CHECK_RC(mlorc_get_rule(opt, &rule), MLORC_OK);
    CHECK_RC(mlorc_state_size(opt, &layout, &bytes), MLORC_OK);
    CHECK(bytes <= sizeof state);
    CHECK_RC(mlorc_state_init(opt, &layout, 1, state, bytes), MLORC_OK);
    memset(&t, 0, sizeof t);
    t.param = param;
    t.grad = grad;
    t.state = state;
    t.state_bytes = bytes;
    t.rows = t.cols = 4;
    CHECK_RC(mlorc_step(opt, &t, 1, 1e-3), MLORC_OK);
    CHECK_RC(mlorc_step(opt, NULL, 0, 1e-3), MLORC_OK);
    CHECK(mlorc_last_error(opt) == first);
    CHECK(strcmp(mlorc_last_error(opt), kept) == 0);

    /* Calls without a handle do not touch it, failing or not. */
    CHECK_RC(mlorc_param_bounds(MLORC_RULE_ADAMW, 999, &lo, &hi), MLORC_ERROR_UNKNOWN_PARAM);
    CHECK_RC(mlorc_state_inspect(state, 3, &info), MLORC_ERROR_STATE_TOO_SMALL);
    CHECK(strcmp(mlorc_last_error(opt), kept) == 0);

    /* The next failure replaces it, also from a call on a const handle. */
    CHECK_RC(mlorc_state_size(opt, &bad, &bytes), MLORC_ERROR_INVALID_SHAPE);
    CHECK(strstr(mlorc_last_error(opt), "shape 0x4") != NULL);
    CHECK_RC(mlorc_step(opt, &t, 1, NAN), MLORC_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(mlorc_last_error(opt), "lr = nan") != NULL);

    mlorc_free(opt);
    check_handle = NULL;
    CHECK(mlorc_last_error(NULL) != NULL && mlorc_last_error(NULL)[0] != '\0');
    printf("last_error_test: %lu checks passed\n", checks_run);
    return 0;
}
