// header_cxx_test.cpp - include/mlorc.h must be usable from C++ as is:
// compiled with -std=c++17 -Wall -Wextra -Werror -pedantic, its declarations
// must get C linkage (extern "C"), or linking against libmlorc.so fails on
// mangled names. The static_asserts pin the ABI the header promises on LP64.
#include "mlorc.h"

#include <cstdio>
#include <cstring>
#include <type_traits>

static_assert(std::is_standard_layout<mlorc_tensor>::value, "mlorc_tensor must be a plain C struct");
static_assert(sizeof(mlorc_tensor_layout) == 24, "mlorc_tensor_layout layout changed");
static_assert(sizeof(mlorc_state_info) == 64, "mlorc_state_info layout changed");
static_assert(sizeof(mlorc_tensor) == 4 * sizeof(void *) + 24, "mlorc_tensor layout changed");
static_assert(MLORC_VERSION_NUMBER == MLORC_VERSION_MAJOR * 10000 + MLORC_VERSION_MINOR * 100 + MLORC_VERSION_PATCH,
              "version macros disagree");
static_assert(MLORC_ERROR_UNSUPPORTED_DTYPE == 14 && MLORC_RULE_LION == 2 && MLORC_PARAM_THREADS == 10,
              "enum values are part of the ABI");

static int failures = 0;
#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            ++failures;                                                          \
        }                                                                        \
    } while (0)

int main() {
    CHECK(mlorc_version_number() == static_cast<unsigned>(MLORC_VERSION_NUMBER));
    CHECK(std::strcmp(mlorc_status_string(12345), "unknown status") == 0);

    mlorc_optimizer *opt = nullptr;
    CHECK(mlorc_create(&opt, MLORC_RULE_LION) == MLORC_OK && opt != nullptr);
    int rule = 0;
    CHECK(mlorc_get_rule(opt, &rule) == MLORC_OK && rule == MLORC_RULE_LION);

    mlorc_tensor_layout layout{1, 10, MLORC_DTYPE_F32, MLORC_STORAGE_AUTO};
    std::size_t bytes = 0;
    CHECK(mlorc_state_size(opt, &layout, &bytes) == MLORC_OK && bytes == 128 + 4 * 10);
    if (failures) std::fprintf(stderr, "mlorc_last_error: %s\n", mlorc_last_error(opt));
    mlorc_free(opt);

    if (failures) return 1;
    std::printf("header_cxx_test: ok\n");
    return 0;
}
