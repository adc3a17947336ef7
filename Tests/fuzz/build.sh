#!/usr/bin/env bash
# Tests/fuzz/build.sh - builds the fuzzing setup into .build-fuzz/ (git-ignored):
#   .build-fuzz/CONFIG/libmlorc.so   the library with AddressSanitizer and
#                                    libFuzzer coverage (8-bit counters, PC
#                                    table, comparison tracing) compiled in
#   .build-fuzz/bin/fuzz_state       the libFuzzer target (C, ASan + UBSan)
#   .build-fuzz/bin/make_corpus      the seed corpus writer
# CONFIG is FUZZ_CONFIG: debug by default (about a minute to build; the
# optimised one is an instrumented release build, longer than the plain
# release build's 8-12 minutes on a 2-core machine, which the test suite
# cannot afford), release for long runs (several times the executions per
# second).
# No Package.swift change is needed: the same `mlorc` product is built with
# extra compiler flags in its own scratch path, and the C side links it like
# any user would. The C side uses the toolchain's clang (swiftc's compiler-rt
# must match the fuzzer's and ASan's runtime).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SCRATCH=.build-fuzz
CONFIG=${FUZZ_CONFIG:-debug}
CLANG=${CLANG:-$(dirname "$(command -v swiftc)")/clang}

swift build -c "$CONFIG" --product mlorc --scratch-path "$SCRATCH" \
    -Xswiftc -sanitize=address \
    -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp
scripts/soname-link.sh "$SCRATCH/$CONFIG"
# bin/ links the library by a fixed relative path whichever CONFIG built it.
ln -sfn "$CONFIG" "$SCRATCH/lib"

mkdir -p "$SCRATCH/bin"
# lld: gold warns about every ASan helper it cannot export.
CFLAGS=(-g -O1 -std=c99 -Wall -Wextra -Werror -fuse-ld=lld -Iinclude)
# $ORIGIN: the binaries find ../lib/libmlorc.so wherever the checkout is.
LINK=(-L"$SCRATCH/lib" -lmlorc '-Wl,-rpath,$ORIGIN/../lib' -lm)
# Strict by default: every bug the harness once stepped around is fixed, so
# hitting one is a failure again (FUZZ_CFLAGS= with no value restores counting).
# shellcheck disable=SC2086 # FUZZ_CFLAGS may hold several flags
"$CLANG" "${CFLAGS[@]}" ${FUZZ_CFLAGS--DMLORC_FUZZ_STRICT} -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    Tests/fuzz/fuzz_state.c -o "$SCRATCH/bin/fuzz_state" "${LINK[@]}"
"$CLANG" "${CFLAGS[@]}" -fsanitize=address Tests/fuzz/make_corpus.c -o "$SCRATCH/bin/make_corpus" "${LINK[@]}"
