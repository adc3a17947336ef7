/*
 * state_header_test.c - what include/mlorc.h promises about a tensor's
 * state and its 128-byte header, checked through the C API: the largest
 * shape, forged headers (resealed with the test copy of the checksum).
 */
#include "mlorc.h"
#include "../support/check.h"
#include "../support/state_checksum.h"

#include <stdint.h>
#include <string.h>

static mlorc_optimizer *make(int rule) {
    mlorc_optimizer *opt = NULL;
    CHECK_RC(mlorc_create(&opt, rule), MLORC_OK);
    check_handle = opt;
    return opt;
}

static void put_i64(unsigned char *state, size_t offset, int64_t v) { memcpy(state + offset, &v, 8); }

/* rows * cols must stay below 2^59 (16 bytes per element, the most any
 * rule's state takes, then fit in 63 bits): 2^59 itself is refused by
 * every call that takes a shape, and by inspect in a resealed header. */
static void test_largest_shape(void) {
    const int64_t big = (int64_t)1 << 30, half = (int64_t)1 << 29; /* big * half = 2^59 */
    mlorc_optimizer *opt = make(MLORC_RULE_ADAMW);
    mlorc_tensor_layout at = {big, half, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
    mlorc_tensor_layout flipped = {half, big, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
    mlorc_tensor_layout below = {big - 1, half, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
    mlorc_tensor_layout small = {4, 4, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
    unsigned char state[4096];
    float param[16] = {0}, grad[16] = {0};
    mlorc_state_info info;
    mlorc_tensor t;
    size_t bytes = 0, small_bytes = 0;

    CHECK_RC(mlorc_state_size(opt, &at, &bytes), MLORC_ERROR_INVALID_SHAPE);
    CHECK_RC(mlorc_state_size(opt, &flipped, &bytes), MLORC_ERROR_INVALID_SHAPE);
    CHECK_RC(mlorc_state_init(opt, &at, 1, state, sizeof state), MLORC_ERROR_INVALID_SHAPE);
    /* Just below: sized (not allocated), two moments of 4 bytes per element. */
    CHECK_RC(mlorc_state_size(opt, &below, &bytes), MLORC_OK);
    CHECK(bytes == 128 + 8 * (size_t)((big - 1) * half));

    /* A step names the shape before it reads any buffer. */
    CHECK_RC(mlorc_state_size(opt, &small, &small_bytes), MLORC_OK);
    CHECK_RC(mlorc_state_init(opt, &small, 1, state, small_bytes), MLORC_OK);
    memset(&t, 0, sizeof t);
    t.param = param;
    t.grad = grad;
    t.state = state;
    t.state_bytes = small_bytes;
    t.rows = big;
    t.cols = half;
    CHECK_RC(mlorc_step(opt, &t, 1, 1e-3), MLORC_ERROR_INVALID_SHAPE);

    /* A header claiming 2^59 elements (payload size to match, resealed) is
     * corrupted; one claiming the largest valid shape only lacks its bytes. */
    put_i64(state, 24, big);
    put_i64(state, 32, half);
    put_i64(state, 64, 8 * big * half);
    mlorc_test_fix_header(state);
    CHECK_RC(mlorc_state_inspect(state, small_bytes, &info), MLORC_ERROR_STATE_CORRUPTED);
    put_i64(state, 24, big - 1);
    put_i64(state, 64, 8 * (big - 1) * half);
    mlorc_test_fix_header(state);
    CHECK_RC(mlorc_state_inspect(state, small_bytes, &info), MLORC_ERROR_STATE_TOO_SMALL);
    mlorc_free(opt);
    check_handle = NULL;
}

int main(void) {
    test_largest_shape();
    printf("state_header_test: %lu checks passed\n", checks_run);
    return 0;
}
