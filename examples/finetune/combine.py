#!/usr/bin/env python3
"""Combines results.json files of finetune.py runs that differ only in their
seeds and methods (e.g. processes run side by side, each with some of the
methods or seeds) into one results.json, table and plot, as one
`finetune.py --seeds N` run would have written them; also prints the table in
Markdown for the README.

    combine.py OUT_DIR RESULTS.json [RESULTS.json ...]

Only seeds that every method completed are kept (a run cut short leaves its
finished runs in results.json); the ones dropped are printed.
"""
import json
import os
import sys

from methods import NAMES
from report import markdown_table, plot, summarise, table

# Options that may differ between the combined runs (a method's learning
# rate must be the same in every file that runs it).
FREE = {"seed", "seeds", "out", "threads", "methods", "lr", "lrs"}


def combine(summaries):
    first = summaries[0]
    config = {k: v for k, v in first["config"].items() if k not in FREE}
    for s in summaries[1:]:
        other = {k: v for k, v in s["config"].items() if k not in FREE}
        if other != config:
            diff = sorted(k for k in set(config) | set(other) if config.get(k) != other.get(k))
            raise SystemExit(f"the runs differ in more than their seeds and methods: {diff}")
    methods = [m for m in NAMES if any(m in s["results"] for s in summaries)]
    runs = {m: {} for m in methods}
    entry = {}
    for s in summaries:
        for m, r in s["results"].items():
            if entry.setdefault(m, r)["lr"] != r["lr"]:
                raise SystemExit(f"{m} runs at two learning rates: {entry[m]['lr']} and {r['lr']}")
            for run in r["runs"]:
                if run["seed"] in runs[m]:
                    raise SystemExit(f"seed {run['seed']} of {m} appears twice")
                runs[m][run["seed"]] = run
    complete = sorted(set.intersection(*(set(r) for r in runs.values())))
    dropped = sorted(set().union(*(set(r) for r in runs.values())) - set(complete))
    if not complete:
        raise SystemExit("no seed was completed by every method")
    results = {}
    for m in methods:
        kept = [runs[m][seed] for seed in complete]
        results[m] = dict(entry[m], runs=kept, summary=summarise(kept))
    config = dict(first["config"], methods=methods, lrs={m: entry[m]["lr"] for m in methods},
                  seed=complete[0], seeds=len(complete))
    combined = dict(first, config=config, results=results, seeds=complete, dropped_seeds=dropped,
                    combined_from=[s["date"] for s in summaries],
                    total_seconds=sum(s.get("total_seconds", 0.0) for s in summaries),
                    initial={k: v for s in summaries for k, v in s["initial"].items()
                             if int(k) in complete},
                    load_average=[s["load_average"] for s in summaries])
    return combined


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        raise SystemExit(__doc__)
    out, paths = argv[0], argv[1:]
    summaries = []
    for path in paths:
        with open(path) as f:
            summaries.append(json.load(f))
    combined = combine(summaries)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(combined, f, indent=1)
    config, eval_name = combined["config"], combined["data"]["eval_set"]
    seeds = combined["seeds"]
    print(f"seeds {seeds}" + (f" (dropped, not finished by every method: {combined['dropped_seeds']})"
                              if combined["dropped_seeds"] else ""))
    print(table(combined["results"], eval_name))
    print()
    print(markdown_table(combined["results"], eval_name))
    title = (f"all-MiniLM-L6-v2 on VADER-lexicon sentiment: {config['steps']} steps of batch "
             f"{config['batch_size']}, {len(seeds)} seed(s) ({combined['machine']})")
    plot(combined["results"], os.path.join(out, "loss_curves.png"), max(1, min(25, config["steps"] // 10)),
         title, eval_name)
    return combined


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
