#!/usr/bin/env bash
# Sets everything up on a fresh machine (Debian packages, the library, a Python
# environment with the binding) and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# pip's build of the binding builds libmlorc.so itself (swift build -c release);
# setuptools is in .venv already, so no isolated build environment is needed.
.venv/bin/python -m pip install -q --no-build-isolation ./bindings/python
# The main job: fine-tune all-MiniLM-L6-v2 with torch AdamW, MLorc-AdamW,
# MLorc-Lion, GaLore-AdamW and LoRA r4/r8 side by side, one seed (--seeds N
# for more); writes out/finetune/.
.venv/bin/python examples/finetune/finetune.py "$@"
