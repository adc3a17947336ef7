"""The optimizer step inside a PyTorch training process: mlorc.torch against
torch.optim.AdamW(fused=True), each step taken right after torch has run a
forward and backward pass (so torch's OpenMP workers have just been busy).

    python benchmarks/torch_process.py [--shape 4096x4096] [--threads 1,2] [--steps 20]

For each thread count (its own process: torch.set_num_threads is process-wide)
one weight matrix gets its gradient from a small linear layer's backward pass,
then one optimizer steps it; the optimizers alternate step by step, each on
its own copy of the weights, and each step is timed alone. Prints one line
per optimizer and thread count: the median and minimum step time, the ratio
of the minima to torch's fused AdamW at the same thread count, and the
speed-up of the largest thread count over one thread for each optimizer.
"""
import argparse
import json
import subprocess
import sys
import time

OPTIMIZERS = [  # label, constructor source (params -> optimizer)
    ("torch AdamW fused", "torch.optim.AdamW(params, lr=1e-3, fused=True)"),
    ("mlorc.torch MLorc-AdamW r=4", "mlorc.torch.AdamW(params, lr=1e-3, rank=4)"),
    ("mlorc.torch MLorc-Lion r=4", "mlorc.torch.Lion(params, lr=1e-4, rank=4)"),
    ("mlorc.torch AdamW dense", "mlorc.torch.AdamW(params, lr=1e-3, compress=False)"),
    ("mlorc.torch MLorc-CAME r=4", "mlorc.torch.CAME(params, lr=2e-4, rank=4)"),
    ("mlorc.torch MoFaSGD r=4", "mlorc.torch.MoFaSGD(params, lr=1e-2, rank=4)"),
]


def measure(rows, cols, threads, steps):
    """One process: every optimizer's step times at `threads` threads."""
    import torch
    import mlorc.torch  # noqa: F401 (used by the constructor strings)

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(64, cols)
    weights, optimizers = [], []
    for _, make in OPTIMIZERS:
        w = torch.nn.Parameter(torch.randn(rows, cols) * 0.02)
        weights.append(w)
        optimizers.append(eval(make, {"torch": torch, "mlorc": mlorc, "params": [w]}))
    times = [[] for _ in OPTIMIZERS]
    for step in range(steps + 3):  # 3 warm-up rounds
        for k, (w, opt) in enumerate(zip(weights, optimizers)):
            opt.zero_grad(set_to_none=False)
            (x @ w.t()).square().mean().backward()
            start = time.perf_counter()
            opt.step()
            elapsed = (time.perf_counter() - start) * 1e3
            if step >= 3:
                times[k].append(elapsed)
    out = []
    for (label, _), t in zip(OPTIMIZERS, times):
        t.sort()
        out.append(dict(label=label, threads=threads, median_ms=t[len(t) // 2], min_ms=t[0]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="4096x4096")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    try:
        rows, cols = (int(v) for v in args.shape.split("x"))
        thread_counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error("--shape takes ROWSxCOLS and --threads a comma-separated list of counts")
    if rows < 1 or cols < 1 or args.steps < 1 or min(thread_counts) < 1:
        ap.error("--shape, --steps and --threads take positive numbers")
    if args.child is not None:
        print(json.dumps(measure(rows, cols, args.child, args.steps)))
        return
    results = []
    for threads in thread_counts:
        out = subprocess.run([sys.executable, __file__, "--shape", args.shape, "--steps", str(args.steps),
                              "--child", str(threads)], check=True, capture_output=True, text=True).stdout
        results += json.loads(out.strip().splitlines()[-1])
    fused = {r["threads"]: r["min_ms"] for r in results if r["label"] == OPTIMIZERS[0][0]}
    most = max(r["threads"] for r in results)
    one = {r["label"]: r["min_ms"] for r in results if r["threads"] == 1}
    print(f"| shape | threads | step (after a torch forward/backward) | median ms | min ms | min × torch fused | "
          f"speed-up 1 → {most} threads |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        speedup = f"{one[r['label']] / r['min_ms']:.2f}" if r["threads"] == most and r["label"] in one else ""
        print(f"| {args.shape} | {r['threads']} | {r['label']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | "
              f"{r['min_ms'] / fused[r['threads']]:.2f} | {speedup} |")


if __name__ == "__main__":
    main()
