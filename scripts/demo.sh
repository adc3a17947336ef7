#!/usr/bin/env bash
# Sets everything up on a fresh machine (Debian packages, the library, a Python
# environment with the binding) and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh
PYTHON=.venv/bin/python bindings/python/install.sh -q
bash examples/c/run.sh
