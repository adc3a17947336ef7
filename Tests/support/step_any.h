/*
 * step_any.h - one step of any rule, for the tests that exercise tensor
 * states (failure tests, fuzzing, the seed corpus): the D-adaptation rules
 * (Prodigy, DAdapt-Lion), which step with a group state, get a fresh one for
 * every call, so a step's result depends only on the tensors' states. The
 * group state's own behaviour is tested in Tests/c/group_test.c.
 */
#ifndef MLORC_TEST_STEP_ANY_H
#define MLORC_TEST_STEP_ANY_H

#include "mlorc.h"

static inline int mlorc_test_step_any(mlorc_optimizer *opt, const mlorc_tensor *t, size_t count, double lr) {
    unsigned char group[MLORC_GROUP_STATE_BYTES];
    if (mlorc_group_state_init(opt, group, sizeof group) != MLORC_OK) return mlorc_step(opt, t, count, lr);
    return mlorc_step_group(opt, t, count, lr, group, sizeof group);
}

#endif
