"""The benchmark harness: libmlorc against PyTorch, measured in one run.

    python benchmarks/run.py [--shapes 768x768,4096x4096] [--threads 1,2] [--steps 20] [--out DIR]

For each shape and thread count it times (median of --steps steps after
warm-up; see bench_step.c and torch_step.py) one optimizer step of:
libmlorc MLorc-AdamW r=4 and r=8, MLorc-Lion r=4 and dense AdamW, and, when
torch is importable, torch.optim.AdamW(fused=True), AdamW(foreach=True) and a
plain PyTorch MLorc-AdamW (materialise, RSVD with torch.linalg). Every
configuration runs in its own process. Prints a Markdown table with each time
as a ratio to fused torch AdamW of the same shape and thread count, and writes
it with the raw JSON to DIR (default benchmarks/results/).
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
]
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
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--no-reference", action="store_true", help="skip the slow plain PyTorch MLorc")
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    build_bench()
    torch_ok = have_torch()
    if not torch_ok:
        print("torch is not importable: PyTorch rows are left out", file=sys.stderr)

    rows = []
    for (m, n) in shapes:
        for th in threads:
            for label, rule, storage, rank in LIBMLORC:
                r = run_json([str(BENCH_BIN), rule, storage, str(rank), str(m), str(n), str(th), str(args.steps)])
                rows.append(dict(r, label=label, shape=f"{m}x{n}"))
                print(f"{m}x{n} t={th} {label}: {r['median_ms']} ms", file=sys.stderr)
            if torch_ok:
                for label, kind in TORCH:
                    if kind == "mlorc-reference" and args.no_reference:
                        continue
                    steps = args.steps if kind != "mlorc-reference" or m * n < 10**7 else max(5, args.steps // 4)
                    r = run_json([sys.executable, str(ROOT / "benchmarks" / "torch_step.py"), kind,
                                  str(m), str(n), str(th), str(steps)])
                    rows.append(dict(r, label=label, shape=f"{m}x{n}", steps=steps))
                    print(f"{m}x{n} t={th} {label}: {r['median_ms']} ms", file=sys.stderr)

    fused = {(r["shape"], r["threads"]): r["median_ms"] for r in rows if r["label"] == "torch AdamW fused"}
    lines = ["| shape | threads | step | median ms | × torch fused AdamW | state MiB | scratch MiB | peak extra MiB (first step / warm step) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = fused.get((r["shape"], r["threads"]))
        ratio = f"{r['median_ms'] / base:.2f}" if base else "n/a"
        state = mib(r.get("state_bytes")) if "state_bytes" in r else "n/a"
        scratch = mib(r.get("scratch_bytes")) if "scratch_bytes" in r else "n/a"
        first = mib(r.get("first_step_extra_bytes")) if "first_step_extra_bytes" in r else "n/a"
        lines.append(f"| {r['shape']} | {r['threads']} | {r['label']} | {r['median_ms']:.2f} | {ratio} | "
                     f"{state} | {scratch} | {first} / {mib(r.get('peak_extra_bytes'))} |")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu}, {os.cpu_count()} cores, "
              f"median of {args.steps} steps after warm-up (the plain PyTorch MLorc at >= 10M elements: "
              f"{max(5, args.steps // 4)} steps).")
    table = header + "\n\n" + "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(table)


if __name__ == "__main__":
    main()
