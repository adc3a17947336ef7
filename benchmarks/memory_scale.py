"""The memory headline: training LLaMA-architecture models in bf16 with torch
AdamW, the usual mixed-precision recipe, and MLorc-AdamW.

    python benchmarks/memory_scale.py [--sizes 0.5B,1.5B,3B] [--limit-gib 20] [--steps 3] [--out DIR]

Models are built from transformers' LlamaConfig with random weights (nothing
is downloaded), directly in bf16. Each run trains `--steps` steps of one
sequence of 64 random tokens, stepping every parameter as soon as its gradient
is accumulated and freeing the gradient (the optimizer-in-backward pattern,
so no run holds a full set of gradients), with:

  torch-adamw-bf16   torch.optim.AdamW on the bf16 parameters (bf16 moments)
  mixed-precision    fp32 master weights and fp32 moments: torch AdamW steps
                     the master, the bf16 parameter gets its rounding
  mlorc-adamw        mlorc.torch.AdamW r4 on the bf16 parameters (fp32 factors,
                     stochastic rounding)
  mlorc-adamw-master the same with fp32 master weights

Every run is its own subprocess under an address-space limit (RLIMIT_AS,
--limit-gib), so running out of memory is a clean, reported failure. Reports
peak RSS, optimizer state bytes and seconds per step (steps after the first)
as a Markdown table and a PNG bar chart, in DIR (default
benchmarks/results/memory_scale). A benchmark, not a test.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# hidden, intermediate, layers, heads: parameters = layers (4 h^2 + 3 h i) + 2 * vocab * h (+ norms).
SIZES = {
    "0.5B": (1280, 3456, 20, 10),
    "1.5B": (2048, 5504, 28, 16),
    "3B": (2560, 6912, 36, 20),
}
VOCAB = 32000
METHODS = ("torch-adamw-bf16", "mixed-precision", "mlorc-adamw", "mlorc-adamw-master")


def build_model(size):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, intermediate, layers, heads = SIZES[size]
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=128, tie_word_embeddings=False)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: no fp32 copy of the model ever exists
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(torch.float32)
    return model


def tensor_bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def hooks_for(method, model):
    """Per-parameter steps from post-accumulate-grad hooks; returns a function
    giving the optimizer state bytes."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if method.startswith("mlorc"):
        import mlorc.torch

        opt = mlorc.torch.AdamW(model.named_parameters(), lr=1e-4, rank=4,
                                master_weights=method == "mlorc-adamw-master")
        opt.register_step_hooks()
        return opt.state_bytes
    if method == "torch-adamw-bf16":
        opts = {p: torch.optim.AdamW([p], lr=1e-4, foreach=False) for p in params}

        def step(p):
            opts[p].step()
            p.grad = None

        for p in params:
            p.register_post_accumulate_grad_hook(step)
        return lambda: sum(tensor_bytes(t for t in s.values() if torch.is_tensor(t))
                           for o in opts.values() for s in o.state.values())
    if method == "mixed-precision":
        masters = {p: torch.nn.Parameter(p.detach().float()) for p in params}
        opts = {p: torch.optim.AdamW([masters[p]], lr=1e-4, foreach=False) for p in params}

        def step(p):
            master = masters[p]
            master.grad = p.grad.float()
            p.grad = None
            opts[p].step()
            master.grad = None
            p.detach().copy_(master.detach())  # round to nearest even

        for p in params:
            p.register_post_accumulate_grad_hook(step)
        return lambda: tensor_bytes(masters.values()) + sum(
            tensor_bytes(t for t in s.values() if torch.is_tensor(t)) for o in opts.values() for s in o.state.values())
    raise SystemExit(f"unknown method {method}")


def child(size, method, steps, threads):
    """One run; prints one JSON line."""
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = build_model(size)
    parameters = sum(p.numel() for p in model.parameters())
    state_bytes = hooks_for(method, model)
    build_seconds = time.perf_counter() - start
    tokens = torch.randint(0, VOCAB, (1, 64), generator=torch.Generator().manual_seed(1))
    times, losses = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()  # every parameter is stepped (and its gradient freed) during backward
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"size": size, "method": method, "parameters": parameters, "ok": True,
                      "peak_rss_bytes": peak, "state_bytes": state_bytes(),
                      "weight_bytes": tensor_bytes(model.parameters()),
                      "seconds_per_step": min(times[1:] or times), "first_step_seconds": times[0],
                      "build_seconds": build_seconds, "losses": losses}), flush=True)


def run(size, method, steps, threads, limit_gib):
    limit = int(limit_gib * 2**30)

    def set_limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--child", size, method, str(steps), str(threads)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=set_limit, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    out_of_memory = "memory" in proc.stderr.lower() or "alloc" in proc.stderr.lower() or proc.returncode < 0
    return {"size": size, "method": method, "ok": False, "returncode": proc.returncode,
            "reason": ("out of memory under the limit: " if out_of_memory else "failed: ") + tail[-300:],
            "seconds": time.perf_counter() - start}


def gib(x):
    return f"{x / 2**30:.2f}"


def table(rows, limit_gib, machine_gib):
    lines = [f"| model | parameters | method | peak RSS GiB | optimizer state GiB | s / step | fits in {machine_gib:.0f} GiB |",
             "|---|---|---|---|---|---|---|"]
    params = {r["size"]: r["parameters"] for r in rows if r.get("ok")}
    for r in rows:
        n = params.get(r["size"])
        count = f"{n / 1e9:.2f} B" if n else "?"
        if r["ok"]:
            fits = "yes" if r["peak_rss_bytes"] < machine_gib * 2**30 else "no"
            lines.append(f"| {r['size']} | {count} | {r['method']} | {gib(r['peak_rss_bytes'])} | "
                         f"{gib(r['state_bytes'])} | {r['seconds_per_step']:.1f} | {fits} |")
        else:
            lines.append(f"| {r['size']} | {count} | {r['method']} | > {limit_gib} (refused: {r['reason'][:80]}) | "
                         f"| | no |")
    return "\n".join(lines) + "\n"


def chart(rows, path, limit_gib):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys(r["size"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(METHODS)
    for k, method in enumerate(METHODS):
        for i, size in enumerate(sizes):
            r = next((x for x in rows if x["size"] == size and x["method"] == method), None)
            if r is None:
                continue
            x = i + (k - (len(METHODS) - 1) / 2) * width
            if r["ok"]:
                ax.bar(x, r["peak_rss_bytes"] / 2**30, width, color=f"C{k}", label=method if i == 0 else None)
            else:
                ax.bar(x, limit_gib, width, color="none", edgecolor=f"C{k}", hatch="//",
                       label=method if i == 0 else None)
                ax.text(x, limit_gib, "OOM", ha="center", va="bottom", fontsize=7)
    ax.axhline(limit_gib, color="gray", linestyle="--", linewidth=1)
    ax.text(len(sizes) - 0.5, limit_gib, f" {limit_gib} GiB limit", va="bottom", ha="right", fontsize=8)
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_ylabel("peak RSS (GiB)")
    ax.set_title("LLaMA-architecture models trained in bf16: peak RSS\n(hatched: out of memory)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        size, method, steps, threads = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        child(size, method, steps, threads)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--limit-gib", type=float, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory_scale"))
    args = ap.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    for s in sizes:
        if s not in SIZES:
            ap.error(f"unknown size {s!r}; expected some of {', '.join(SIZES)}")
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}; expected some of {', '.join(METHODS)}")
    machine_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    rows = []
    for size in sizes:
        for method in methods:
            r = run(size, method, args.steps, args.threads, args.limit_gib)
            rows.append(r)
            status = (f"peak {gib(r['peak_rss_bytes'])} GiB, state {gib(r['state_bytes'])} GiB, "
                      f"{r['seconds_per_step']:.1f} s/step") if r["ok"] else r["reason"]
            print(f"{size} {method}: {status}", file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
              f"{machine_gib:.1f} GiB of memory, {args.threads} threads, each run under a {args.limit_gib} GiB "
              f"address-space limit; {args.steps} steps of batch 1 x 64 tokens, seconds per step = the fastest "
              "step after the first.\n\n")
    text = header + table(rows, args.limit_gib, machine_gib)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    chart(rows, out / "memory_scale.png", args.limit_gib)
    print(text)


if __name__ == "__main__":
    main()
