#!/usr/bin/env bash
# Tests/c/run.sh - builds and runs the C-side tests of libmlorc.
#
# Expects the library already built (swift build -c release) at
# .build/release/libmlorc.so. Builds the test programs into .build/ctests/
# (ignored by git), runs them, and checks what the shared library exports and
# links. Prints "N passed, M failed" last; exits non-zero if anything failed.
#
# Environment: CC, CXX pick the compilers (default cc, c++).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
LIB=.build/release/libmlorc.so
OUT=.build/ctests

if [[ ! -f $LIB ]]; then
    echo "error: $LIB not found; build the library first: swift build -c release" >&2
    exit 1
fi
# Programs linked with -lmlorc load it as libmlorc.so.MAJOR (its SONAME).
scripts/soname-link.sh .build/release
mkdir -p "$OUT"

CC=${CC:-cc}
CXX=${CXX:-c++}
CFLAGS=(-std=c99 -Wall -Wextra -Werror -pedantic -O2 -Iinclude)
CXXFLAGS=(-std=c++17 -Wall -Wextra -Werror -pedantic -O2 -Iinclude)
# $ORIGIN keeps the binaries pointing at ../release/libmlorc.so wherever the
# checkout lives (single quotes: the linker, not the shell, expands it).
LINK_MLORC=(-L.build/release -lmlorc '-Wl,-rpath,$ORIGIN/../release')

passed=0
failed=0
# check NAME COMMAND...: runs one check and tallies it.
check() {
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

build_and_run_c() { # name, extra link flags... [-- program arguments...]
    local name=$1 flags=() args=()
    shift
    while [[ $# -gt 0 && $1 != -- ]]; do flags+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift && args=("$@")
    "$CC" "${CFLAGS[@]}" "Tests/c/$name.c" -o "$OUT/$name" "${flags[@]}" && "$OUT/$name" "${args[@]}"
}

dlopen_test() {
    # Only -ldl: the library must come in through dlopen, not the link line.
    "$CC" "${CFLAGS[@]}" Tests/c/dlopen_test.c -o "$OUT/dlopen_test" -ldl &&
        if readelf -d "$OUT/dlopen_test" | grep -q 'libmlorc'; then
            echo "dlopen_test must not be linked against libmlorc" >&2
            return 1
        fi &&
        "$OUT/dlopen_test" "$ROOT/$LIB"
}

# Loaded and unloaded 20 times by path: the heap in use stays the same and
# the library stays mapped (it is RTLD_NODELETE); then 3 cycles under
# valgrind, where nothing may be lost (Tests/support/valgrind.supp lists what
# the Swift runtime keeps).
unload_test() {
    "$CC" "${CFLAGS[@]}" Tests/c/unload_test.c -o "$OUT/unload_test" -ldl &&
        GLIBC_TUNABLES=glibc.malloc.tcache_count=0 "$OUT/unload_test" "$ROOT/$LIB" 20
}

unload_valgrind() {
    if ! command -v valgrind >/dev/null; then
        echo "valgrind not found (scripts/install-deps.sh installs it)" >&2
        return 1
    fi
    GLIBC_TUNABLES=glibc.malloc.tcache_count=0 valgrind -q --leak-check=full --error-exitcode=1 \
        --suppressions=Tests/support/valgrind.supp "$OUT/unload_test" "$ROOT/$LIB" 3
}

header_cxx_test() {
    "$CXX" "${CXXFLAGS[@]}" Tests/c/header_cxx_test.cpp -o "$OUT/header_cxx_test" "${LINK_MLORC[@]}" &&
        "$OUT/header_cxx_test"
}

# Every dynamic symbol the library defines is part of the C API.
exports_only_mlorc() {
    local symbols others
    symbols=$(nm -D --defined-only "$LIB" | awk '{print $NF}')
    others=$(grep -v '^mlorc_' <<<"$symbols" || true)
    if [[ -n $others ]]; then
        echo "symbols other than mlorc_* exported:" >&2
        echo "$others" >&2
        return 1
    fi
}

# ...and every function declared in the header is exported (no more, no less).
exports_match_header() {
    local declared exported
    # Declarations start in column 0 with their return type; comments do not.
    declared=$(grep -E '^[A-Za-z]' include/mlorc.h | grep -oE '\bmlorc_[a-z_]+\(' | tr -d '(' | sort -u)
    exported=$(nm -D --defined-only "$LIB" | awk '{print $NF}' | sort -u)
    if [[ $declared != "$exported" ]]; then
        echo "header declarations and exports differ (< header, > library):" >&2
        diff <(echo "$declared") <(echo "$exported") >&2 || true
        return 1
    fi
    echo "$(wc -l <<<"$declared") functions declared and exported"
}

# The Swift runtime is linked in statically: no libswift* at run time.
no_swift_runtime() {
    local deps
    deps=$(ldd "$LIB")
    echo "$deps"
    if grep -qi 'swift' <<<"$deps"; then
        echo "libmlorc.so depends on the Swift runtime" >&2
        return 1
    fi
    if grep -q 'not found' <<<"$deps"; then
        echo "libmlorc.so has unresolved dependencies" >&2
        return 1
    fi
}

# The SONAME is libmlorc.so.MAJOR with the header's major version, and what
# -lmlorc links records exactly that name.
soname_is_versioned() {
    local major soname needed
    major=$(sed -n 's/^#define MLORC_VERSION_MAJOR \([0-9]*\)$/\1/p' include/mlorc.h)
    soname=$(readelf -d "$LIB" | sed -n 's/.*Library soname: \[\(.*\)\]$/\1/p')
    needed=$(readelf -d "$OUT/api_test" | sed -n 's/.*Shared library: \[\(libmlorc.*\)\]$/\1/p')
    echo "header major $major, SONAME $soname, api_test needs $needed"
    [[ -n $major && $soname == "libmlorc.so.$major" && $needed == "$soname" ]]
}

check api_test build_and_run_c api_test "${LINK_MLORC[@]}" -lm
check train_test build_and_run_c train_test "${LINK_MLORC[@]}" -lm
check group_test build_and_run_c group_test "${LINK_MLORC[@]}" -lm
check half_test build_and_run_c half_test "${LINK_MLORC[@]}" -lm
check state_dtype_test build_and_run_c state_dtype_test "${LINK_MLORC[@]}" -lm
check outputs_test build_and_run_c outputs_test "${LINK_MLORC[@]}" -lm
check step_args_test build_and_run_c step_args_test "${LINK_MLORC[@]}" -lm
check state_header_test build_and_run_c state_header_test "${LINK_MLORC[@]}" -lm
check last_error_test build_and_run_c last_error_test "${LINK_MLORC[@]}" -lm
check sharded_test build_and_run_c sharded_test "${LINK_MLORC[@]}" -lm -lpthread
check sharded_rules_test build_and_run_c sharded_rules_test "${LINK_MLORC[@]}" -lm -lpthread
check state_split_test build_and_run_c state_split_test "${LINK_MLORC[@]}" -lm
check golden_test build_and_run_c golden_test "${LINK_MLORC[@]}" -lm -- Tests/golden/digests.txt
# The same digests with OpenBLAS at one and at four threads: results must not
# depend on the machine's core count (the library holds OpenBLAS at one thread).
golden_openblas_threads() {
    OPENBLAS_NUM_THREADS=1 "$OUT/golden_test" Tests/golden/digests.txt && OPENBLAS_NUM_THREADS=4 "$OUT/golden_test" Tests/golden/digests.txt
}
check golden_openblas_threads golden_openblas_threads
# The same digests through the AVX2 (Swift) kernels only: the AVX-512 kernels
# (docs/architecture.md, "Wide kernels") must compute the same bits. Says which
# paths ran, so that a CPU without AVX-512 does not pass for a test of both.
golden_avx2_kernels() {
    if grep -qw avx512f /proc/cpuinfo && grep -qw avx512dq /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo; then
        echo "golden_test ran the AVX-512 kernels; now the AVX2 kernels"
    else
        echo "no AVX-512 on this CPU: golden_test ran the AVX2 kernels; running them again"
    fi
    MLORC_KERNELS=avx2 "$OUT/golden_test" Tests/golden/digests.txt
}
check golden_avx2_kernels golden_avx2_kernels
check dlopen_test dlopen_test
check unload_test unload_test
check unload_valgrind unload_valgrind
check header_cxx_test header_cxx_test
check exports_only_mlorc exports_only_mlorc
check exports_match_header exports_match_header
check no_swift_runtime no_swift_runtime
check soname_is_versioned soname_is_versioned

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
