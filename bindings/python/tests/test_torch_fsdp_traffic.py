"""What mlorc.torch's sharded step communicates (distributed_traffic_worker.py,
2 gloo ranks on 127.0.0.1): the bytes counted at torch.distributed.all_reduce
in one MLorc-AdamW step equal mlorc.h's formula for mlorc_step_sharded, and
are compared with the bytes of the matrices (what gathering them would move)."""
import json
import os

from distributed_launch import run_ranks

WORKER = os.path.join(os.path.dirname(__file__), "distributed_traffic_worker.py")


def formula(shapes, rank, q, moments=2):
    """mlorc.h: 8 k (1 + q) (l(l+1) + l n) per low-rank matrix of n columns
    (l = rank, oversampling 0), plus 144 per tensor and 16 per call."""
    total = 16 + 144 * len(shapes)
    for shape, storage in shapes:
        if storage == "lowrank":
            l, n = rank, shape[1]
            total += 8 * moments * (1 + q) * (l * (l + 1) + l * n)
    return total


def test_sharded_step_traffic_is_the_formula(tmp_path):
    run_ranks(WORKER, 2, [], tmp_path, timeout=180)
    report = json.loads(open(tmp_path / "rank0.log").read().strip().splitlines()[-1])
    for q in (0, 1):
        r = report[f"q{q}"]
        assert sum(s == "lowrank" for _, s in r["shapes"]) == 2, r
        # Exact: the sketches here are well conditioned (no gathered
        # Householder fallback, which would add m x l doubles per moment).
        assert r["bytes"] == formula(r["shapes"], 2, q), r
        assert r["calls"] == 5 + 3 * q, r  # mlorc.h: about 5 per step plus 3 per power iteration
    print(f"one step, 2 ranks: {report['q0']['bytes']} B in {report['q0']['calls']} all_reduce calls "
          f"(q = 1: {report['q1']['bytes']} B); the matrices: {report['matrix_bytes']} B")
