#!/usr/bin/env bash
# The whole test suite: Swift core tests, the C API tests (linked, dlopen'd and
# from C++, plus the export and link checks of libmlorc.so), the C/C++ install
# (pkg-config, CMake), the Python binding's pytest suite, its self-contained
# wheel, the demo's reduced-size run, and the robustness
# suites (fuzzing, sanitizers, failure tests). Installs what it needs first
# (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh

echo "== Swift core tests"
swift test

echo "== C API tests"
bash Tests/c/run.sh

echo "== Install for C/C++ (scripts/install.sh; pkg-config, CMake)"
bash Tests/packaging/run.sh

echo "== Python binding tests"
.venv/bin/python -m pip install -q --no-build-isolation ./bindings/python
.venv/bin/python -m pytest -q bindings/python/tests

echo "== Self-contained wheel (scripts/build-wheel.sh) in a new virtual environment"
.venv/bin/python -m pytest -q Tests/packaging

echo "== Fine-tuning demo test (reduced size)"
.venv/bin/python -m pytest -q examples/finetune

echo "== Robustness: fuzzing (60 s), sanitizers, failure tests under valgrind"
bash scripts/test-robustness.sh
