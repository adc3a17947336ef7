#!/usr/bin/env bash
# scripts/test-robustness.sh - the robustness suites of the C API, in sequence:
#   Tests/fuzz/run.sh        libFuzzer on state loading and step arguments (60 s,
#                            or FUZZ_SECONDS)
#   Tests/sanitizers/run.sh  Swift and C tests under ASan/UBSan and TSan
#   Tests/failure/run.sh     failure tests, natively and under valgrind
# Every suite runs even if an earlier one failed. Each builds its own
# instrumented library (scratch folders .build-*, git-ignored).
# Prints the time taken and "N passed, M failed" (suites) last.
set -uo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
passed=0
failed=0
for suite in "Tests/fuzz/run.sh --seconds ${FUZZ_SECONDS:-60}" Tests/sanitizers/run.sh Tests/failure/run.sh "bindings/python/tests/robustness/run.sh --seconds ${PYFUZZ_SECONDS:-45}"; do
    echo "==== $suite"
    suite_start=$SECONDS
    # shellcheck disable=SC2086 # the suite's arguments are meant to split
    if bash $suite; then
        passed=$((passed + 1))
        echo "==== passed in $((SECONDS - suite_start)) s: $suite"
    else
        failed=$((failed + 1))
        echo "==== FAILED in $((SECONDS - suite_start)) s: $suite"
    fi
done
echo "robustness suites took $((SECONDS - start)) s"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
