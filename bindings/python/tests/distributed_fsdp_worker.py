"""One rank of the FSDP2 test (test_torch_fsdp.py, through
distributed_launch.py): an MLP whose row counts do not divide by the world
size, fully_shard on a 1-D mesh, stepped by mlorc.torch with the sharded
step; every rank also trains an unsharded copy of it with the same optimizer
and the same batches. Prints, on rank 0, one JSON line: per case the largest
difference between the gathered FSDP2 weights and the unsharded run's (and
that run's total movement, for scale), plus what a refused step did."""
import copy
import datetime
import gc
import json
import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

import mlorc

STEPS = 20
CASES = {
    "adamw": lambda params: mlorc.torch.AdamW(params, lr=1e-2, rank=2, compress=True),
    "lion": lambda params: mlorc.torch.Lion(params, lr=1e-3, rank=2, compress=True),
    "adamw+orthograd": lambda params: mlorc.torch.AdamW(params, lr=1e-2, rank=2, compress=True, orthograd=True,
                                                       clip_norm=0.5),
    "adopt, auto storage": lambda params: mlorc.torch.Adopt(params, lr=1e-2, rank=2),
    # bf16 parameters (the model converted before fully_shard): stochastic
    # rounding (keyed by the element's index in the whole matrix), and fp32
    # master weights.
    "adamw, bf16": lambda params: mlorc.torch.AdamW(params, lr=1e-2, rank=2, compress=True),
    "adamw, bf16, master": lambda params: mlorc.torch.AdamW(params, lr=1e-2, rank=2, compress=True,
                                                           master_weights=True),
}
BF16 = ("adamw, bf16", "adamw, bf16, master")


def model(dtype=torch.float32):
    torch.manual_seed(0)  # 33 and 7 rows: neither divides by 2 or 3; 7 x 33 and 33 x 12 low-rank at rank 2
    return torch.nn.Sequential(torch.nn.Linear(12, 33), torch.nn.Tanh(), torch.nn.Linear(33, 7)).to(dtype)


def batch(step, dtype=torch.float32):
    g = torch.Generator().manual_seed(100 + step)  # the same on every rank
    return torch.randn(16, 12, generator=g).to(dtype), torch.randn(16, 7, generator=g).to(dtype)


def train(net, opt, steps, first=0):
    dtype = next(net.parameters()).dtype
    for step in range(first, first + steps):
        x, y = batch(step, dtype)
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
            dtype = torch.bfloat16 if case in BF16 else torch.float32
            reference = model(dtype)
            # Gradients reduced in fp32: the ranks' identical bf16 gradients then
            # average to themselves exactly (in bf16, 3 of them would not).
            sharded = fully_shard(model(dtype), mesh=mesh, mp_policy=MixedPrecisionPolicy(reduce_dtype=torch.float32))
            ref_opt, opt = make(reference.named_parameters()), make(sharded.named_parameters())
            start = [p.detach().clone() for p in reference.parameters()]
            train(reference, ref_opt, STEPS)
            train(sharded, opt, STEPS)
            diff = max(float((p.full_tensor().float() - r.float()).detach().abs().max())
                       for p, r in zip(sharded.parameters(), reference.parameters()))
            moved = max(float((r.float() - s.float()).detach().abs().max()) for r, s in zip(reference.parameters(), start))
            # bf16: the differences beyond 1e-3 of the movement, in ulps of the reference's element
            # (2^(floor(log2 |y|) - 7) for bf16's 8 significant bits), and how many elements differ.
            ulps, differing, elements = 0.0, 0, 0
            for p, r in zip(sharded.parameters(), reference.parameters()):
                x, y = p.full_tensor().detach().float(), r.detach().float()
                ulp = torch.where(y != 0, torch.exp2(torch.floor(torch.log2(y.abs())) - 7), torch.tensor(2.0 ** -133))
                excess = ((x - y).abs() - 1e-3 * moved).clamp(min=0)
                ulps = max(ulps, float((excess / ulp).max()))
                differing += int((x != y).sum())
                elements += y.numel()
            kinds = sorted({mlorc.inspect_state(opt.state[p]["mlorc_state"])["storage"] for p in sharded.parameters()})
            report[case] = {"max_diff": diff, "moved": moved, "storages": kinds, "excess_ulps": ulps,
                            "differing": differing / elements,
                            "dtypes": sorted({str(p.dtype) for p in sharded.parameters()})}

        # A non-finite gradient on one rank: every rank refuses, nothing changes anywhere.
        sharded = fully_shard(model(), mesh=mesh)
        opt = CASES["adamw"](sharded.named_parameters())
        train(sharded, opt, 2)
        before = locals_of(sharded)
        states = [opt.state[p]["mlorc_state"].clone() for p in sharded.parameters()]
        x, y = batch(99)
        opt.zero_grad()
        torch.nn.functional.mse_loss(sharded(x), y).backward()
        if rank == world - 1:
            sharded[0].weight.grad.to_local()[0, 0] = float("inf")
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
