#!/usr/bin/env python3
"""The learning-rate sweep behind methods.CHOSEN_LR: each method at a few
peak learning rates (half-decade steps), one seed, trained on the training
set less a validation split carved from it (finetune.py --validation) and
judged on that split; the held-out set is never loaded.

Takes finetune.py's options (--steps, --validation, --seed, --threads, ...)
plus --grid METHOD=LR/LR/LR,... to replace GRID's entries. Prints a table and
writes sweep.json to --out (default out/sweep); the best rate of each method
is the highest final validation accuracy, ties broken by the lower
validation loss.
"""
import json
import os
import sys
import time

import torch

import finetune
from methods import NAMES, methods

# Around the rates the demo had used (1e-4 for AdamW, 3e-5 for Lion), a
# half-decade either side; GaLore's scale 0.25 and LoRA's few adapted
# weights want larger rates (their authors' fine-tuning rates are higher).
# Where the best rate fell on the grid's edge, one more half-decade was run
# (--grid): MLorc-AdamW 1e-3, MLorc-Lion 3e-4, GaLore-AdamW 3e-3.
GRID = {
    "adamw": (3e-5, 1e-4, 3e-4),
    "mlorc-adamw": (3e-5, 1e-4, 3e-4),
    "mlorc-lion": (1e-5, 3e-5, 1e-4),
    "galore-adamw": (1e-4, 3e-4, 1e-3),
    "lora-r4": (3e-4, 1e-3, 3e-3),
    "lora-r8": (3e-4, 1e-3, 3e-3),
}


def parse_grid(text):
    grid = dict(GRID)
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, values = item.partition("=")
        if not sep or name not in NAMES:
            raise SystemExit(f"--grid: {item!r} is not METHOD=LR/LR/... with METHOD among {', '.join(NAMES)}")
        grid[name] = tuple(float(v) for v in values.split("/"))
    return grid


def best(entries):
    return max(entries, key=lambda e: (e["validation_accuracy"], -e["validation_loss"]))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    grid_text = ""
    if "--grid" in argv:
        i = argv.index("--grid")
        grid_text = argv[i + 1]
        del argv[i:i + 2]
    grid = parse_grid(grid_text)
    defaults = ["--validation", "0.2", "--out", "out/sweep"]
    args = finetune.parse_args(defaults + argv)
    if not args.validation:
        raise SystemExit("the sweep must run on a validation split (--validation > 0)")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    tokenizer, encoder = finetune.load_encoder(args.model_dir or finetune.model_dir())
    train_data, val_data = finetune.load_data(args, tokenizer)
    rows = methods(args.rank)
    torch.manual_seed(args.seed)
    base_model = finetune.SentimentClassifier(encoder).to(finetune.DTYPES[args.dtype])
    batches = finetune.batch_orders(len(train_data), min(args.batch_size, len(train_data)), args.steps, args.seed)
    initial = finetune.evaluate(base_model, val_data)
    print(f"sweep: {len(train_data)} train, {len(val_data)} validation, {args.steps} steps of "
          f"{args.batch_size}, seed {args.seed}, {args.threads} threads", flush=True)
    out = {"config": {k: v for k, v in vars(args).items()}, "grid": {m: grid[m] for m in args.methods},
           "train": len(train_data), "validation": len(val_data), "runs": {}, "chosen": {}}
    start = time.perf_counter()
    for name in args.methods:
        entries = []
        for lr in grid[name]:
            r = finetune.train(rows[name], lr, base_model, train_data, val_data, batches, args, args.seed, initial)
            entries.append({"lr": lr, "validation_accuracy": r["eval_accuracy"], "validation_loss": r["eval_loss"],
                            "final_train_loss": r["final_train_loss"], "evals": r["evals"],
                            "train_seconds": r["train_seconds"]})
            out["runs"][name] = entries
            out["seconds"] = time.perf_counter() - start
            with open(os.path.join(args.out, "sweep.json"), "w") as f:
                json.dump(out, f, indent=1)
        out["chosen"][name] = best(entries)["lr"]
        with open(os.path.join(args.out, "sweep.json"), "w") as f:
            json.dump(out, f, indent=1)
    print("\n| method | lr | validation acc | validation loss | final train loss |\n|---|---|---|---|---|")
    for name, entries in out["runs"].items():
        for e in entries:
            mark = " (chosen)" if e["lr"] == out["chosen"][name] else ""
            print(f"| {rows[name].label} | {e['lr']:g}{mark} | {100 * e['validation_accuracy']:.1f}% | "
                  f"{e['validation_loss']:.4f} | {e['final_train_loss']:.4f} |")
    print(f"\nchosen: {out['chosen']}  ({out['seconds']:.0f} s)")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
