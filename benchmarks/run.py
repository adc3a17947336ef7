"""The benchmark harness: libmlorc against PyTorch, measured in one run.

    python benchmarks/run.py [--shapes 768x768,4096x4096] [--threads 1,2] [--steps 20] [--dtypes f32,bf16]
                             [--rounds 1] [--out DIR]

For each shape and thread count it times (median of --steps steps after
warm-up; see bench_step.c and torch_step.py) one optimizer step of:
libmlorc MLorc-AdamW r=4 and r=8, MLorc-Lion r=4 and dense AdamW, and, when
torch is importable, torch.optim.AdamW(fused=True), AdamW(foreach=True) and a
plain PyTorch MLorc-AdamW (materialise, RSVD with torch.linalg). Every
configuration runs in its own process. With bf16 in --dtypes, the steps of
BF16_ROWS also run on a bf16 parameter and gradient (libmlorc: fp32 moments,
stochastic rounding; torch's fused AdamW then keeps bf16 moments). Prints a
Markdown table with each time as a ratio to fused torch AdamW of the same
shape, thread count and dtype (and a bf16 step's ratio to its own fp32 step),
and writes it with the raw JSON to DIR (default benchmarks/results/).

With --rounds K every configuration runs K times, interleaved (round 1 of
all of them, then round 2, ...), and each row reports the smallest of its K
medians: on a shared machine load comes and goes, and the minimum of
interleaved runs is the figure least disturbed by it, for libmlorc and torch
alike.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_BIN = ROOT / ".build" / "bench" / "bench_step"
LIBRARY = ROOT / ".build" / "release" / "libmlorc.so"

LIBMLORC = [  # label, rule, storage, rank
    ("libmlorc MLorc-AdamW r=4", "adamw", "lowrank", 4),
    ("libmlorc MLorc-AdamW r=8", "adamw", "lowrank", 8),
    ("libmlorc MLorc-Lion r=4", "lion", "lowrank", 4),
    ("libmlorc dense AdamW", "adamw", "dense", 4),
    ("libmlorc MLorc-CAME r=4", "came", "lowrank", 4),
    ("libmlorc MoFaSGD r=4", "mofasgd", "lowrank", 4),
]
# The steps also measured in bf16.
BF16_ROWS = {"libmlorc MLorc-AdamW r=4", "libmlorc MLorc-Lion r=4", "libmlorc dense AdamW", "torch AdamW fused"}
TORCH = [  # label, kind
    ("torch AdamW fused", "adamw-fused"),
    ("torch AdamW foreach", "adamw-foreach"),
    ("PyTorch MLorc-AdamW r=4 (plain)", "mlorc-reference"),
]


def build_bench():
    if not LIBRARY.exists():
        sys.exit(f"{LIBRARY} is missing: run scripts/build.sh first")
    # The binary loads the library by its SONAME, libmlorc.so.MAJOR.
    subprocess.run(["bash", str(ROOT / "scripts" / "soname-link.sh"), str(LIBRARY.parent)], check=True)
    BENCH_BIN.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'include'}",
                    str(ROOT / "benchmarks" / "bench_step.c"), f"-L{LIBRARY.parent}", "-lmlorc",
                    f"-Wl,-rpath,{LIBRARY.parent}", "-o", str(BENCH_BIN)], check=True)


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def have_torch():
    return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


def mib(x):
    return "n/a" if x is None or x < 0 else f"{x / 2**20:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="768x768,768x3072,4096x4096,4096x11008")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--dtypes", default="f32,bf16", help="f32, bf16 or both")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--no-reference", action="store_true", help="skip the slow plain PyTorch MLorc")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved repetitions; rows report the minimum")
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    dtypes = [d for d in args.dtypes.split(",") if d]
    if not dtypes or set(dtypes) - {"f32", "bf16"}:
        ap.error("--dtypes takes f32, bf16 or both")
    if args.rounds < 1:
        ap.error("--rounds takes a count of 1 or more")
    build_bench()
    torch_ok = have_torch()
    if not torch_ok:
        print("torch is not importable: PyTorch rows are left out", file=sys.stderr)

    configs = []  # (label, command, extra fields)
    for (m, n) in shapes:
        for th in threads:
            for dtype in dtypes:
                for label, rule, storage, rank in LIBMLORC:
                    if dtype != "f32" and label not in BF16_ROWS:
                        continue
                    configs.append((label, [str(BENCH_BIN), rule, storage, str(rank), str(m), str(n), str(th),
                                            str(args.steps), dtype], dict(shape=f"{m}x{n}", dtype=dtype)))
                if not torch_ok:
                    continue
                for label, kind in TORCH:
                    if (kind == "mlorc-reference" and args.no_reference) or (dtype != "f32" and label not in BF16_ROWS):
                        continue
                    steps = args.steps if kind != "mlorc-reference" or m * n < 10**7 else max(5, args.steps // 4)
                    configs.append((label, [sys.executable, str(ROOT / "benchmarks" / "torch_step.py"), kind,
                                            str(m), str(n), str(th), str(steps), dtype],
                                    dict(shape=f"{m}x{n}", steps=steps, dtype=dtype)))
    best = [None] * len(configs)
    for round_index in range(args.rounds):
        for i, (label, cmd, extra) in enumerate(configs):
            r = dict(run_json(cmd), label=label, **extra)
            print(f"round {round_index + 1}: {extra['shape']} t={r['threads']} {extra['dtype']} {label}: "
                  f"{r['median_ms']} ms", file=sys.stderr)
            if best[i] is None or r["median_ms"] < best[i]["median_ms"]:
                best[i] = dict(r, rounds=args.rounds)
    rows = best

    key = lambda r: (r["shape"], r["threads"], r["dtype"])
    fused = {key(r): r["median_ms"] for r in rows if r["label"] == "torch AdamW fused"}
    own_f32 = {(r["shape"], r["threads"], r["label"]): r["median_ms"] for r in rows if r["dtype"] == "f32"}
    lines = ["| shape | threads | dtype | step | median ms | × torch fused AdamW (same dtype) | × own f32 step | "
             "state MiB | scratch MiB | peak extra MiB (first step / warm step) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = fused.get(key(r))
        ratio = f"{r['median_ms'] / base:.2f}" if base else "n/a"
        f32 = own_f32.get((r["shape"], r["threads"], r["label"])) if r["dtype"] != "f32" else None
        versus_f32 = f"{r['median_ms'] / f32:.2f}" if f32 else ""
        state = mib(r.get("state_bytes")) if "state_bytes" in r else "n/a"
        scratch = mib(r.get("scratch_bytes")) if "scratch_bytes" in r else "n/a"
        first = mib(r.get("first_step_extra_bytes")) if "first_step_extra_bytes" in r else "n/a"
        lines.append(f"| {r['shape']} | {r['threads']} | {r['dtype']} | {r['label']} | {r['median_ms']:.2f} | {ratio} | "
                     f"{versus_f32} | {state} | {scratch} | {first} / {mib(r.get('peak_extra_bytes'))} |")
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}, "
              f"median of {args.steps} steps after warm-up (the plain PyTorch MLorc at >= 10M elements: "
              f"{max(5, args.steps // 4)} steps)"
              + (f", the smallest of {args.rounds} interleaved runs." if args.rounds > 1 else "."))
    table = header + "\n\n" + "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(table)


def machine():
    """The CPU as /proc/cpuinfo names it (model name, family and model), its
    core count, and which of libmlorc's kernels its steps ran: the AVX-512
    kernels need AVX-512 F, DQ and VL (and no MLORC_KERNELS=avx2), else the
    AVX2 ones run, and the two differ in speed (docs/architecture.md, "Wide
    kernels"): figures from different CPUs are not comparable."""
    fields = {}
    for line in open("/proc/cpuinfo"):
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
        if not line.strip():
            break
    flags = set(fields.get("flags", "").split())
    wide = {"avx512f", "avx512dq", "avx512vl"} <= flags and os.environ.get("MLORC_KERNELS") != "avx2"
    cpu = fields.get("model name", platform.processor())
    return (f"{cpu} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}), "
            f"{os.cpu_count()} cores, {'AVX-512' if wide else 'AVX2'} kernels")


if __name__ == "__main__":
    main()
