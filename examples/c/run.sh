#!/usr/bin/env bash
# examples/c/run.sh - builds and runs the C example against the library built
# by `swift build -c release` (.build/release/libmlorc.so).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
LIB_DIR=.build/release
if [[ ! -f $LIB_DIR/libmlorc.so ]]; then
    echo "error: $LIB_DIR/libmlorc.so not found; build it first: swift build -c release" >&2
    exit 1
fi

# The binary loads the library by its SONAME, libmlorc.so.MAJOR.
scripts/soname-link.sh "$LIB_DIR"
OUT=.build/examples
mkdir -p "$OUT"
# rpath $ORIGIN/../release: the binary finds the library relative to itself.
"${CC:-cc}" -std=c99 -Wall -Wextra -pedantic -O2 -Iinclude examples/c/train_least_squares.c \
    -o "$OUT/train_least_squares" -L"$LIB_DIR" -lmlorc '-Wl,-rpath,$ORIGIN/../release' -lm

# The checkpoint goes to a temporary directory, removed afterwards.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$OUT/train_least_squares" "$tmp/checkpoint.bin"
