#!/usr/bin/env bash
# Tests/sanitizers/run.sh - the test suites under the sanitizers of the Swift
# toolchain (its clang and compiler-rt, so Swift and C share one runtime):
#   1. swift test --sanitize=address (scratch .build-asan): the Swift core
#      tests under AddressSanitizer + LeakSanitizer;
#   2. the C tests (Tests/c/api_test.c, train_test.c, step_args_test.c,
#      state_header_test.c, last_error_test.c) and the failure tests
#      (Tests/failure/failure_test.c) built with -fsanitize=address,undefined
#      against the ASan libmlorc.so that step 1 built;
#   3. swift test --sanitize=thread (scratch .build-tsan): the Swift core
#      tests under ThreadSanitizer, the threaded step included
#      (ContractTests.testThreadCountDoesNotChangeResults);
#   4. failure_test concurrent (4 handles on 4 pthreads, 2 of them with 2
#      step threads each) built with -fsanitize=thread against the TSan
#      libmlorc.so of step 3.
# UndefinedBehaviorSanitizer: swiftc has no -sanitize=undefined on Linux
# ("unsupported option '-sanitize=undefined' for target
# 'x86_64-unknown-linux-gnu'"), so `swift test --sanitize=undefined` cannot
# run. Swift traps by itself on what UBSan looks for (overflow, lossy
# integer conversion, out-of-bounds indexing), in debug and release builds;
# UBSan covers the C side in step 2.
# Scratch folders are git-ignored (.build*/). Prints "N passed, M failed" last.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

TOOLCHAIN=$(dirname "$(dirname "$(command -v swiftc)")")
CLANG=${CLANG:-$TOOLCHAIN/bin/clang}
# The toolchain's static TSan runtime carries libdispatch interceptors.
DISPATCH=$TOOLCHAIN/lib/swift/linux
CFLAGS=(-std=c99 -g -O1 -Wall -Wextra -Werror -fuse-ld=lld -Iinclude)

passed=0
failed=0
check() { # name command...
    local name=$1
    shift
    echo "== $name"
    if "$@"; then
        echo "PASS $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        failed=$((failed + 1))
    fi
}

# build_c SCRATCH NAME SOURCE FLAGS...: a C test linked to SCRATCH/debug/libmlorc.so.
build_c() {
    local scratch=$1 name=$2 source=$3
    shift 3
    mkdir -p "$scratch/ctests"
    "$CLANG" "${CFLAGS[@]}" "$@" "$source" -o "$scratch/ctests/$name" \
        -L"$scratch/debug" -lmlorc '-Wl,-rpath,$ORIGIN/../debug' -lm -pthread
}

swift_test_asan() {
    LSAN_OPTIONS=suppressions=Tests/sanitizers/lsan.supp \
        swift test --sanitize=address --scratch-path .build-asan &&
        swift build --product mlorc --sanitize=address --scratch-path .build-asan &&
        scripts/soname-link.sh .build-asan/debug
}

c_tests_asan() {
    local flags=(-fsanitize=address,undefined -fno-sanitize-recover=all)
    local t
    for t in api_test train_test step_args_test state_header_test last_error_test; do
        build_c .build-asan "$t" "Tests/c/$t.c" "${flags[@]}" && ".build-asan/ctests/$t" || return 1
    done
    build_c .build-asan failure_test Tests/failure/failure_test.c "${flags[@]}" &&
        # ASan's quarantine makes peak RSS grow: no RSS check; LSan checks leaks.
        .build-asan/ctests/failure_test --no-rss --steps 1000 --corpus Tests/fuzz/corpus
}

swift_test_tsan() {
    swift test --sanitize=thread --scratch-path .build-tsan &&
        swift build --product mlorc --sanitize=thread --scratch-path .build-tsan &&
        scripts/soname-link.sh .build-tsan/debug
}

concurrent_tsan() {
    build_c .build-tsan failure_test Tests/failure/failure_test.c -fsanitize=thread \
        -L"$DISPATCH" -ldispatch -lBlocksRuntime -Wl,-rpath,"$DISPATCH" &&
        .build-tsan/ctests/failure_test concurrent
}

check "swift test --sanitize=address" swift_test_asan
check "C and failure tests, ASan + UBSan library and programs" c_tests_asan
check "swift test --sanitize=thread" swift_test_tsan
check "concurrent handles, TSan library and program" concurrent_tsan

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
