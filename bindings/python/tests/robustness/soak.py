"""Soak: many steps through mlorc.torch on a small model, checking that the
process does not grow: resident memory flat within a bound after warm-up,
no new threads, no new file descriptors.

    python bindings/python/tests/robustness/soak.py [--steps 10000] [--warmup 1000] [--rss-mb 1]

Each step is an ordinary training step (forward, backward, opt.step); every
100th step is also a refused one (a NaN gradient: MlorcError, nothing
changes), every 1000th a state_dict() / load_state_dict() round trip, so that
the error and checkpoint paths are soaked too. Two optimizers run side by
side: MLorc-AdamW (low-rank and dense states) and Prodigy (a group state).
Prints the measurements and "N passed, M failed"; exits 1 on any failure.
"""
import argparse
import math
import os
import sys
import time

import torch

import mlorc


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def threads():
    return len(os.listdir("/proc/self/task"))


def fds():
    return len(os.listdir("/proc/self/fd"))


def build():
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 48),
                                  torch.nn.Tanh(), torch.nn.Linear(48, 10)) for _ in range(2)]
    # Two native threads each: the library's thread use is soaked too.
    opts = [mlorc.torch.AdamW(models[0].parameters(), lr=1e-3, rank=4, threads=2),
            mlorc.torch.Prodigy(models[1].parameters(), rank=4, threads=2)]
    return models, opts


def run(steps, warmup):
    models, opts = build()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 32, generator=g), torch.randn(64, 10, generator=g)
    refused = 0
    samples = {}
    for step in range(1, steps + 1):
        for model, opt in zip(models, opts):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            if step % 100 == 0:
                saved = model[0].weight.grad[0, 0].item()
                model[0].weight.grad[0, 0] = math.nan
                try:
                    opt.step()
                except mlorc.MlorcError:
                    refused += 1
                model[0].weight.grad[0, 0] = saved
            opt.step()
            if step % 1000 == 0:
                opt.load_state_dict(opt.state_dict())
        if step == warmup or step == steps:
            samples[step] = (rss_bytes(), threads(), fds())
    losses = [torch.nn.functional.mse_loss(m(x), y).item() for m in models]
    return samples, refused, losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--rss-mb", type=float, default=1.0, help="allowed RSS growth after warm-up, MiB")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small model: intra-op threads would only spin against each other
    start = time.monotonic()
    samples, refused, losses = run(args.steps, args.warmup)
    elapsed = time.monotonic() - start
    (rss0, threads0, fds0), (rss1, threads1, fds1) = samples[args.warmup], samples[args.steps]
    growth = (rss1 - rss0) / 2**20
    print(f"{args.steps} steps x 2 optimizers in {elapsed:.1f} s; after warm-up ({args.warmup} steps): "
          f"RSS {rss0 / 2**20:.2f} -> {rss1 / 2**20:.2f} MiB ({growth:+.3f} MiB), "
          f"threads {threads0} -> {threads1}, fds {fds0} -> {fds1}; "
          f"refused steps {refused}; final losses {losses[0]:.4f}, {losses[1]:.4f}")
    checks = {
        f"RSS growth {growth:+.3f} MiB within {args.rss_mb} MiB": growth <= args.rss_mb,
        "no new threads": threads1 <= threads0,
        "no new file descriptors": fds1 <= fds0,
        "every NaN step refused": refused == 2 * (args.steps // 100),
        "training stayed finite": all(math.isfinite(v) for v in losses),
    }
    for name, ok in checks.items():
        print(("PASS " if ok else "FAIL ") + name)
    failed = sum(not ok for ok in checks.values())
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
