/*
 * check.h - CHECK, CHECK_RC and CHECK_OK (and xmalloc, xcalloc) for the C tests of Tests/c. A failed
 * check prints file:line, the expression and mlorc_last_error() of the
 * handle in `check_handle`, then exits 1. Not <assert.h>: the checks must
 * run under NDEBUG too.
 */
#ifndef MLORC_TEST_CHECK_H
#define MLORC_TEST_CHECK_H

#include "mlorc.h"

#include <stdio.h>
#include <stdlib.h>

static unsigned long checks_run;
/* The handle whose last error a failed check prints (NULL: a static text). */
static const mlorc_optimizer *check_handle;

static void check_at(int ok, const char *what, const char *file, int line) {
    ++checks_run;
    if (!ok) {
        fprintf(stderr, "%s:%d: check failed: %s\n  mlorc_last_error: \"%s\"\n", file, line, what,
                mlorc_last_error(check_handle));
        exit(1);
    }
}

static inline void check_rc_at(int rc, int want, const char *call, const char *file, int line) {
    if (rc != want)
        fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", file, line, call, rc, mlorc_status_string(rc),
                want, mlorc_status_string(want));
    check_at(rc == want, call, file, line);
}

#define CHECK(cond) check_at((cond) != 0, #cond, __FILE__, __LINE__)
#define CHECK_RC(call, want) check_rc_at((call), (want), #call, __FILE__, __LINE__)
#define CHECK_OK(call) check_at((call) == MLORC_OK, #call " == MLORC_OK", __FILE__, __LINE__)

static inline void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%lu bytes)\n", (unsigned long)n);
        exit(2);
    }
    return p;
}

/* n zeroed bytes (at least 1), or exit 2. */
static inline void *xcalloc(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    if (!p) {
        fprintf(stderr, "out of memory (%lu bytes)\n", (unsigned long)n);
        exit(2);
    }
    return p;
}

#endif
