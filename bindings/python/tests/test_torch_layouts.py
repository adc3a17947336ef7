"""DTensor layouts mlorc does not step yet are refused when the optimizer is
built, naming the parameter and the layout (2 gloo ranks on 127.0.0.1; the
checks run in the ranks: distributed_layouts_worker.py)."""
import json
import os

from distributed_launch import run_ranks

WORKER = os.path.join(os.path.dirname(__file__), "distributed_layouts_worker.py")


def test_unsupported_dtensor_layouts_are_refused_at_construction(tmp_path):
    run_ranks(WORKER, 2, [], tmp_path, timeout=180)
    messages = json.loads(open(tmp_path / "rank0.log").read().strip().splitlines()[-1])
    assert set(messages) == {"fsdp2 galore", "fsdp2 mixed", "hsdp", "tensor parallel", "replicated", "partial"}
