"""Times one PyTorch optimizer step on a single rows x cols parameter.

    python benchmarks/torch_step.py KIND ROWS COLS THREADS [STEPS [DTYPE]]

DTYPE is f32 (default) or bf16 (the parameter and its gradient; torch's
AdamW then keeps bf16 moments).

KIND is adamw-fused, adamw-foreach or mlorc-reference. Prints one JSON line
like bench_step.c: median / min step time over STEPS timed steps after 3
warm-up steps, and the peak resident-memory growth during one warm step
(VmHWM after it minus VmRSS before it, the high-water mark reset through
/proc/self/clear_refs). One configuration per process, so the high-water mark
belongs to it alone.

mlorc-reference is MLorc-AdamW written plainly in PyTorch from the paper
(arXiv 2506.01897, Alg. 1 and 3) the way the reference code does it: rebuild
the full moments from their factors, apply the fix and AdamW, then a
randomized SVD of each full moment with torch.linalg (QR of the sketch, SVD of
the small projection). It is the baseline the streaming step is compared to.
"""
import json
import sys
import time

import torch


def proc_status_bytes(name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    return -1


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class ReferenceMLorcAdamW:
    """Plain PyTorch MLorc-AdamW on one matrix (rank r, no oversampling)."""

    def __init__(self, param, rank=4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        self.p, self.r, self.betas, self.eps, self.wd = param, rank, betas, eps, weight_decay
        m, n = param.shape
        zeros = lambda *s: torch.zeros(*s, dtype=torch.float32)
        self.factors = [(zeros(m, rank), zeros(rank), zeros(rank, n)) for _ in range(2)]
        self.t = 0

    @staticmethod
    def rsvd(a, r):
        omega = torch.randn(a.shape[1], r)
        q, _ = torch.linalg.qr(a @ omega)
        u, s, vt = torch.linalg.svd(q.T @ a, full_matrices=False)
        return q @ u[:, :r], s[:r], vt[:r]

    @torch.no_grad()
    def step(self, lr):
        g, w = self.p.grad, self.p
        b1, b2 = self.betas
        self.t += 1
        (um, sm, vm), (uv, sv, vv) = self.factors
        m = (um * sm) @ vm
        v = (uv * sv) @ vv
        neg = v < 0
        c = (-v[neg]).mean() if neg.any() else torch.tensor(0.0)
        v = torch.where(neg, c, v)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w.mul_(1 - lr * self.wd)
        denom = (v / (1 - b2 ** self.t)).sqrt() + self.eps
        w.add_(-(lr / (1 - b1 ** self.t)) * m / denom)
        self.factors = [self.rsvd(m, self.r), self.rsvd(v, self.r)]


def main():
    kind, rows, cols, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    steps = int(sys.argv[5]) if len(sys.argv) > 5 else 20
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[sys.argv[6] if len(sys.argv) > 6 else "f32"]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    p = torch.nn.Parameter((torch.rand(rows, cols) - 0.5).to(dtype))
    p.grad = (torch.rand(rows, cols) - 0.5).to(dtype)
    if kind == "adamw-fused":
        opt = torch.optim.AdamW([p], lr=1e-4, fused=True)
        step = opt.step
    elif kind == "adamw-foreach":
        opt = torch.optim.AdamW([p], lr=1e-4, foreach=True)
        step = opt.step
    elif kind == "mlorc-reference":
        opt = ReferenceMLorcAdamW(p)
        step = lambda: opt.step(1e-4)
    else:
        raise SystemExit(f"unknown kind {kind}")

    for _ in range(3):
        step()
    rss_before = proc_status_bytes("VmRSS")
    peak_ok = reset_peak_rss()
    step()
    peak = proc_status_bytes("VmHWM")
    extra = peak - rss_before if peak_ok and peak >= 0 else -1

    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    print(json.dumps({"kind": kind, "dtype": str(dtype).removeprefix("torch."), "rows": rows, "cols": cols, "threads": threads,
                      "median_ms": round(times[len(times) // 2], 3), "min_ms": round(times[0], 3),
                      "peak_extra_bytes": extra}))


if __name__ == "__main__":
    main()
