"""One rank of the FSDP2 traffic test (test_torch_fsdp_traffic.py): counts
the bytes mlorc.torch's sharded step hands to torch.distributed.all_reduce
in one MLorc-AdamW step of the test model (an MLP of 12 -> 33 -> 7, rank 2,
with 1 and 0 power iterations), and the bytes of its matrices, which an
all-gather would move. Rank 0 prints one JSON line."""
import datetime
import gc
import json
import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import mlorc


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 33), torch.nn.Tanh(), torch.nn.Linear(33, 7))


def main():
    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    counted = {"bytes": 0, "calls": 0}
    real_all_reduce = dist.all_reduce

    def counting_all_reduce(tensor, *args, **kwargs):
        counted["bytes"] += tensor.numel() * tensor.element_size()
        counted["calls"] += 1
        return real_all_reduce(tensor, *args, **kwargs)

    report = {"world": world}
    try:
        mesh = init_device_mesh("cpu", (world,))
        for q in (0, 1):
            net = fully_shard(model(), mesh=mesh)
            opt = mlorc.torch.AdamW(net.named_parameters(), lr=1e-2, rank=2, compress=True, power_iterations=q)
            x = torch.randn(16, 12, generator=torch.Generator().manual_seed(1))
            torch.nn.functional.mse_loss(net(x), torch.zeros(16, 7)).backward()
            counted.update(bytes=0, calls=0)
            dist.all_reduce = counting_all_reduce
            try:
                opt.step()
            finally:
                dist.all_reduce = real_all_reduce
            shapes = [(tuple(p.shape), mlorc.inspect_state(opt.state[p]["mlorc_state"])["storage"])
                      for p in net.parameters()]
            report[f"q{q}"] = dict(counted, shapes=shapes)
        report["matrix_bytes"] = sum(p.numel() * p.element_size() for p in model().parameters())
        dist.barrier()
        # Free the optimizer (its reducer holds the process group) while the
        # group is alive: destroyed after it, gloo's threads could abort the exit.
        del opt, net
        gc.collect()
    finally:
        dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
