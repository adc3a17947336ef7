"""One rank of the DTensor layout refusals (run by test_torch_layouts.py
through distributed_launch.py): FSDP2 shards with a rule that has no sharded
step and mixed with plain parameters in one group, HSDP's 2-D mesh, tensor
parallel's row-wise shards, replicated and partial DTensors. Each is refused
when the optimizer is built, naming the parameter and the layout (FSDP2's
dim-0 shards themselves are stepped: test_torch_fsdp.py)."""
import datetime
import json
import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Partial
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import mlorc


def refusal(params, make=mlorc.torch.AdamW):
    try:
        make(params, lr=1e-3)
    except TypeError as e:
        return str(e)
    raise AssertionError("the optimizer was built")


def expect(message, *parts):
    for part in parts:
        if part not in message:
            raise AssertionError(f"{part!r} not in: {message}")


def main():
    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        mesh = init_device_mesh("cpu", (world,))
        messages = {}

        torch.manual_seed(0)
        fsdp = torch.nn.Sequential(torch.nn.Linear(8, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
        fully_shard(fsdp, mesh=mesh)
        assert isinstance(fsdp[0].weight, DTensor)
        messages["fsdp2 galore"] = refusal(fsdp.named_parameters(), mlorc.torch.GaLoreAdamW)
        expect(messages["fsdp2 galore"], "GaLoreAdamW has no sharded step for FSDP2 parameters",
               "AdamW, Lion, Adopt, CAME, MoFaSGD, Prodigy and DAdaptLion")
        plain = torch.nn.Linear(4, 4)
        messages["fsdp2 mixed"] = refusal([{"params": [fsdp[0].weight, plain.weight]}])
        expect(messages["fsdp2 mixed"], "mixes FSDP2 parameters with plain ones", "parameter 1")

        hsdp = torch.nn.Sequential(torch.nn.Linear(8, 6))
        fully_shard(hsdp, mesh=init_device_mesh("cpu", (1, world), mesh_dim_names=("replicate", "shard")))
        messages["hsdp"] = refusal(hsdp.named_parameters())
        expect(messages["hsdp"], "parameter '0.weight' is a DTensor on a 2-D device mesh", "Replicate(), Shard(dim=0)",
               f"(1, {world})", "HSDP", "multi-dimensional meshes")

        tp = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Linear(6, 4))
        parallelize_module(tp, mesh, {"0": ColwiseParallel(), "1": RowwiseParallel()})
        messages["tensor parallel"] = refusal([("1.weight", tp[1].weight)])
        expect(messages["tensor parallel"], "parameter '1.weight' is a DTensor sharded on dim 1", "Shard(dim=1)",
               "RowwiseParallel", "does not support sharding on dim 1")
        messages["replicated"] = refusal([("1.bias", tp[1].bias)])
        expect(messages["replicated"], "parameter '1.bias' is a replicated DTensor", "Replicate()")

        partial = torch.nn.Parameter(DTensor.from_local(torch.zeros(4, 4), mesh, [Partial()]))
        messages["partial"] = refusal([("p", partial)])
        expect(messages["partial"], "parameter 'p' is a DTensor with a pending reduction", "Partial(sum)")
    finally:
        dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(messages))


if __name__ == "__main__":
    main()
