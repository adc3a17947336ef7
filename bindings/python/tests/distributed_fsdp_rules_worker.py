"""One rank of the FSDP2 test of the rules outside the MomentPlan family and of
the D-adaptation rules (test_torch_fsdp_rules.py, through
distributed_launch.py): CAME, MoFaSGD, Prodigy and DAdaptLion on an MLP
fully_shard'ed on a 1-D mesh, stepped with the sharded step, against an
unsharded copy trained by every rank with the same optimizer and batches.
Row counts do not divide by the world size (a rank holding exactly one row
of a matrix, 7 rows over 3 ranks, is in test_torch_fsdp_checkpoint.py).
Prints, on rank 0, one JSON line: per case the largest difference between
the gathered FSDP2 weights and the unsharded run's (and that run's total
movement, for scale), the storages used, the D-adaptation estimates (this
run's, the unsharded run's, and whether every rank's group state is the same
bytes), and what a refused step did."""
import datetime
import gc
import json
import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import mlorc

STEPS = 20
CASES = {
    "came": lambda params: mlorc.torch.CAME(params, lr=1e-2, rank=2, compress=True),
    "came, dense": lambda params: mlorc.torch.CAME(params, lr=1e-2, compress=False, weight_decay=0.01),
    "came, power iteration": lambda params: mlorc.torch.CAME(params, lr=1e-2, rank=2, power_iterations=1),
    "mofasgd": lambda params: mlorc.torch.MoFaSGD(params, lr=1e-2, rank=2, compress=True),
    "mofasgd, dense": lambda params: mlorc.torch.MoFaSGD(params, lr=1e-2, compress=False),
    # stats_stride 5 samples unevenly across the shards' rows (12 and 33 columns).
    "prodigy": lambda params: mlorc.torch.Prodigy(params, lr=1.0, rank=2, compress=True, d0=1e-3, stats_stride=5),
    "prodigy, dense": lambda params: mlorc.torch.Prodigy(params, lr=1.0, compress=False, d0=1e-3, stats_stride=1),
    "dadapt_lion": lambda params: mlorc.torch.DAdaptLion(params, lr=1.0, rank=2, compress=True, d0=1e-4),
}


def model():
    # 33 and 8 rows: shards of 17/16 and 4/4 at 2 ranks, 11 and 3/3/2 at 3;
    # 33 x 12 and 8 x 33 are low-rank at rank 2; the biases are n x 1 columns.
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 33), torch.nn.Tanh(), torch.nn.Linear(33, 8))


def batch(step):
    g = torch.Generator().manual_seed(100 + step)  # the same on every rank
    return torch.randn(16, 12, generator=g), torch.randn(16, 8, generator=g)


def train(net, opt, steps, first=0):
    for step in range(first, first + steps):
        x, y = batch(step)
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()


def locals_of(net):
    return [p.to_local().detach().clone() for p in net.parameters()]


def main():
    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    report = {}
    try:
        mesh = init_device_mesh("cpu", (world,))
        for case, make in CASES.items():
            reference = model()
            sharded = fully_shard(model(), mesh=mesh)
            ref_opt, opt = make(reference.named_parameters()), make(sharded.named_parameters())
            start = [p.detach().clone() for p in reference.parameters()]
            train(reference, ref_opt, STEPS)
            train(sharded, opt, STEPS)
            diff = max(float((p.full_tensor() - r).detach().abs().max()) for p, r in zip(sharded.parameters(),
                                                                                reference.parameters()))
            moved = max(float((r - s).detach().abs().max()) for r, s in zip(reference.parameters(), start))
            kinds = sorted({mlorc.inspect_state(opt.state[p]["mlorc_state"])["storage"] for p in sharded.parameters()})
            report[case] = {"max_diff": diff, "moved": moved, "storages": kinds}
            if "d" in opt.param_groups[0]:
                group_state = opt.param_groups[0][mlorc.torch.optimizer.GROUP_STATE_KEY]
                states = [None] * world
                dist.all_gather_object(states, bytes(group_state.numpy()))
                report[case].update(d=opt.param_groups[0]["d"], d_reference=ref_opt.param_groups[0]["d"],
                                    d0=opt.param_groups[0]["d0"], same_group_state=len(set(states)) == 1)

        # A non-finite gradient on one rank: every rank refuses, nothing changes anywhere.
        sharded = fully_shard(model(), mesh=mesh)
        opt = CASES["came"](sharded.named_parameters())
        train(sharded, opt, 2)
        before = locals_of(sharded)
        states = [opt.state[p]["mlorc_state"].clone() for p in sharded.parameters()]
        x, y = batch(99)
        opt.zero_grad()
        torch.nn.functional.mse_loss(sharded(x), y).backward()
        if rank == world - 1:
            sharded[2].weight.grad.to_local()[0, 0] = float("nan")
        try:
            opt.step()
            refused = None
        except mlorc.MlorcError as e:
            refused = e.message
        unchanged = (all(torch.equal(a, b) for a, b in zip(before, locals_of(sharded))) and
                     all(torch.equal(s, opt.state[p]["mlorc_state"]) for s, p in zip(states, sharded.parameters())))
        verdicts = [None] * world
        dist.all_gather_object(verdicts, {"refused": refused, "unchanged": unchanged})
        report["refusal"] = verdicts
        # The next good step goes through on every rank again.
        train(sharded, opt, 1, first=3)
        dist.barrier()
        # Free the optimizers (their reducers hold the process group) while the
        # group is alive: destroyed after it, gloo's threads could abort the exit.
        del opt, ref_opt
        gc.collect()
    finally:
        dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
