"""Two builds of libmlorc side by side: the same step configurations timed
with each library in alternating rounds, so that both see the same machine.

    python benchmarks/compare_libraries.py OLD_LIBMLORC_SO [--new NEW_SO]
        [--shapes 4096x4096,4096x11008] [--threads 2] [--rounds 5] [--steps 20]

OLD is e.g. a release build of an earlier commit:
    git worktree add /tmp/old COMMIT && (cd /tmp/old && swift build -c release --product mlorc)
    python benchmarks/compare_libraries.py /tmp/old/.build/release/libmlorc.so
NEW defaults to this checkout's .build/release/libmlorc.so. Each round runs
bench_step.c (median of --steps steps after warm-up) once per library and
configuration; the table reports the minimum over rounds of each and new/old.
"""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [  # label, rule, storage, rank
    ("MLorc-AdamW r=4", "adamw", "lowrank", 4),
    ("MLorc-Lion r=4", "lion", "lowrank", 4),
    ("dense AdamW", "adamw", "dense", 4),
]


def build(library: Path, name: str) -> Path:
    """bench_step linked against a private copy of `library`."""
    folder = ROOT / ".build" / f"compare-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(library, folder / "libmlorc.so")
    # bench_step asks the loader for the SONAME (libmlorc.so.MAJOR).
    subprocess.run(["bash", str(ROOT / "scripts" / "soname-link.sh"), str(folder)], check=True)
    binary = folder / "bench_step"
    subprocess.run(["cc", "-O2", "-std=c99", f"-I{ROOT / 'include'}", str(ROOT / "benchmarks" / "bench_step.c"),
                    f"-L{folder}", "-lmlorc", f"-Wl,-rpath,{folder}", "-o", str(binary)], check=True)
    return binary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("--new", default=str(ROOT / ".build" / "release" / "libmlorc.so"))
    ap.add_argument("--shapes", default="4096x4096,4096x11008")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    binaries = {"old": build(Path(args.old), "old"), "new": build(Path(args.new), "new")}
    import json
    best = {}
    for round_ in range(args.rounds):
        for shape in args.shapes.split(","):
            m, n = shape.split("x")
            for threads in args.threads.split(","):
                for label, rule, storage, rank in CONFIGS:
                    order = ["old", "new"] if round_ % 2 == 0 else ["new", "old"]
                    for which in order:
                        out = subprocess.run([str(binaries[which]), rule, storage, str(rank), m, n, threads,
                                              str(args.steps)], check=True, capture_output=True, text=True).stdout
                        ms = json.loads(out.strip().splitlines()[-1])["median_ms"]
                        key = (shape, threads, label, which)
                        best[key] = min(best.get(key, float("inf")), ms)
                        print(f"round {round_} {shape} t={threads} {label} {which}: {ms:.2f} ms", file=sys.stderr)
    lines = ["| shape | threads | step | old ms | new ms | new / old |", "|---|---|---|---|---|---|"]
    for shape in args.shapes.split(","):
        for threads in args.threads.split(","):
            for label, *_ in CONFIGS:
                old, new = best[(shape, threads, label, "old")], best[(shape, threads, label, "new")]
                lines.append(f"| {shape} | {threads} | {label} | {old:.2f} | {new:.2f} | {new / old:.3f} |")
    print(f"minimum over {args.rounds} alternating rounds of the median of {args.steps} steps\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
