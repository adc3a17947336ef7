#!/usr/bin/env bash
# Tests/failure/run.sh - failure tests of the C API (Tests/failure/failure_test.c)
# against the release library, natively and under valgrind.
#
# Builds libmlorc.so if needed (scripts/build.sh) and the test program into
# .build-failure/ (ignored by git). Every test runs as its own process, so a
# crash is reported against its test:
#   1. natively, with the release library as users get it;
#   2. under valgrind memcheck (--leak-check=full --error-exitcode=1): any
#      invalid read or write, and any leaked block, fails the test. The
#      long_run test (3000 steps per rule) is the leak test.
#   3. the known-bug tests: each reproduces a reported library bug and is
#      expected to fail while the bug is there (XFAIL); one that passes
#      (XPASS) means the bug was fixed and the test should become regular.
# Prints "N passed, M failed" last; exits non-zero if anything failed.
#
# Environment: CC picks the C compiler (default cc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

OUT=.build-failure
BIN=$OUT/failure_test
CC=${CC:-cc}
TESTS=(cross_rule truncated bit_flips nonfinite aliasing concurrent versioning long_run
    known_dtype_trap known_step_overflow known_linalg_partial_write known_thread_leak known_svd_hang)
KNOWN=()  # reproducers of open library bugs (none open now)

bash scripts/build.sh >/dev/null
mkdir -p "$OUT"
# $ORIGIN: the binary finds ../.build/release/libmlorc.so wherever the checkout is.
"$CC" -std=c99 -Wall -Wextra -Werror -pedantic -O2 -Iinclude Tests/failure/failure_test.c -o "$BIN" \
    -L.build/release -lmlorc '-Wl,-rpath,$ORIGIN/../.build/release' -lm -pthread

passed=0
failed=0
xfail=0
check() { # name command...
    local name=$1
    shift
    if "$@"; then
        echo "PASS $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        failed=$((failed + 1))
    fi
}

echo "== failure tests (native)"
for t in "${TESTS[@]}"; do
    check "$t" "$BIN" --corpus Tests/fuzz/corpus "$t"
done

echo "== failure tests under valgrind"
if ! command -v valgrind >/dev/null; then
    echo "valgrind not found (apt-get install valgrind)" >&2
    failed=$((failed + 1))
else
    # One OpenBLAS thread: valgrind serialises threads anyway.
    VALGRIND=(env OPENBLAS_NUM_THREADS=1 valgrind -q --leak-check=full --error-exitcode=1
        --suppressions=Tests/support/valgrind.supp)
    for t in "${TESTS[@]}"; do
        check "valgrind $t" "${VALGRIND[@]}" "$BIN" --no-rss --corpus Tests/fuzz/corpus "$t"
    done
fi

echo "== known library bugs (expected to fail until fixed)"
for t in ${KNOWN[@]+"${KNOWN[@]}"}; do
    if "$BIN" "$t" >/dev/null 2>&1; then
        echo "XPASS $t: the bug is fixed; make this a regular test"
        passed=$((passed + 1))
    else
        echo "XFAIL $t (exit $?; known bug, see docs/guarantees.md)"
        xfail=$((xfail + 1))
    fi
done

echo "$xfail known library bugs still present"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
