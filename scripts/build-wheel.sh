#!/usr/bin/env bash
# scripts/build-wheel.sh [OUTDIR] - builds the self-contained wheel of the
# Python binding into OUTDIR (default dist/):
#   1. pip wheel ./bindings/python: its build runs swift build -c release and
#      puts libmlorc.so.MAJOR inside the package (bindings/python/setup.py);
#   2. auditwheel repair: copies the libraries that are not part of every
#      Linux system (OpenBLAS, LAPACKE, LAPACK, the gfortran runtime) into
#      mlorc.libs/, points the package at them (patchelf) and tags the wheel
#      manylinux_2_X for the oldest glibc its symbols allow.
# Environment: PYTHON (default .venv/bin/python, which has auditwheel and
# patchelf from requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
python=${PYTHON:-.venv/bin/python}
# auditwheel runs the patchelf that pip installed next to it.
PATH="$(cd "$(dirname "$python")" && pwd):$PATH"

raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
isolation=()
"$python" -c 'import setuptools' 2>/dev/null && isolation=(--no-build-isolation)
"$python" -m pip wheel --disable-pip-version-check --no-deps "${isolation[@]}" -w "$raw" ./bindings/python
mkdir -p "$out"
"$python" -m auditwheel repair -w "$out" "$raw"/mlorc-*.whl
