"""One rank of the ZeRO tests (run by test_torch_zero.py through
distributed_launch.py). Every rank checks its own results and fails loudly.

    train OUT     DDP with mlorc.torch.AdamW against ZeroRedundancyOptimizer(AdamW)
                  with named parameters (and with bucket views), bit for bit; ZeRO
                  without names differs (the control); then the consolidated ZeRO
                  checkpoint resumes in a plain optimizer and the plain checkpoint in
                  ZeRO, both equal to the plain checkpoint resumed in a plain
                  optimizer. Writes OUT/zero.pt (rank 0).
    resume CKPT   a ZeRO checkpoint written at another world size resumes in ZeRO at
                  this one (its own float copy of the states cleared), equal to a plain
                  optimizer resuming from it, and its checkpoint again equals the
                  plain states; a corrupted one is refused at ZeRO's first step on
                  every rank.
"""
import datetime
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel as DDP

import mlorc
from helpers import mlp

# Three low-rank matrices at rank 4 (min dim >= 16) and a dense head; at
# world sizes 2 and 3 ZeRO puts low-rank matrices on every rank.
SIZES = [32, 64, 48, 40, 10]
HYPER = dict(lr=1e-2, rank=4, weight_decay=0.01)
STEPS, MORE_STEPS = 12, 5


def shard(rank, world):
    """This rank's share of a fixed batch of 24 (divisible by 2 and 3)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(24, SIZES[0], generator=g), torch.randn(24, SIZES[-1], generator=g)
    return x[rank::world], y[rank::world]


def train(runs, x, y, steps):
    for _ in range(steps):
        for model, opt in runs:
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()  # DDP averages the gradients
            opt.step()


def ddp(state=None):
    model = mlp(SIZES, seed=0)
    if state is not None:
        model.load_state_dict(state)
    return DDP(model)


def plain(model):
    return mlorc.torch.AdamW(model.module.named_parameters(), **HYPER)


def zero(model, **kwargs):
    return ZeroRedundancyOptimizer(mlorc.torch.named(model), optimizer_class=mlorc.torch.AdamW, **HYPER, **kwargs)


def check_equal(what, model, reference):
    for (name, p), q in zip(model.module.named_parameters(), reference.module.parameters()):
        if not torch.equal(p, q):
            raise AssertionError(f"{what}: {name} differs by up to {(p - q).abs().max().item():.3g}")


def check_same_on_every_rank(model):
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    if not all(torch.equal(g, flat) for g in gathered):
        raise AssertionError("the ranks' weights differ")


def check_states_match(what, zero_opt, zero_model, plain_opt, plain_model):
    """Each parameter this rank steps under ZeRO has the plain run's state, byte for byte."""
    plain_state = {name: plain_opt.state[p]["mlorc_state"] for name, p in plain_model.module.named_parameters()}
    zero_names = {p: name for name, p in zero_model.module.named_parameters()}
    owned = [zero_names[p] for p in zero_opt.optim.state]
    if not owned:
        raise AssertionError(f"{what}: this rank steps no parameter")
    for name in owned:
        mine = zero_opt.optim.state[zero_model.module.get_parameter(name)]["mlorc_state"]
        if not torch.equal(mine, plain_state[name]):
            raise AssertionError(f"{what}: the state of {name} differs from the plain run's")
    return owned


def lowrank_ids(opt):
    return {mlorc.inspect_state(s["mlorc_state"])["tensor_id"] for s in opt.state.values()
            if mlorc.inspect_state(s["mlorc_state"])["storage"] == "lowrank"}


def phase_train(rank, world, out):
    x, y = shard(rank, world)
    a = ddp()
    a_opt = plain(a)
    b = ddp()
    b_opt = zero(b)
    bv = ddp()
    bv_opt = zero(bv, parameters_as_bucket_view=True)
    unnamed = ddp()
    unnamed_opt = ZeroRedundancyOptimizer(unnamed.module.parameters(), optimizer_class=mlorc.torch.AdamW, **HYPER)
    train([(a, a_opt), (b, b_opt), (bv, bv_opt), (unnamed, unnamed_opt)], x, y, STEPS)

    check_equal("ZeRO vs DDP", b, a)
    check_equal("ZeRO with bucket views vs DDP", bv, a)
    check_same_on_every_rank(b)
    owned = check_states_match("ZeRO vs DDP", b_opt, b, a_opt, a)
    # The control: without names a rank's ids are positions in its own partition.
    global_positions = {p: i for i, p in enumerate(unnamed.module.parameters())}
    local_params = unnamed_opt.optim.param_groups[0]["params"]
    moved = torch.tensor([sum(j != global_positions[p] for j, p in enumerate(local_params))])
    dist.all_reduce(moved)
    if moved.item() == 0:
        raise AssertionError("control: ZeRO kept every parameter at its global position")
    control_gap = max((p - q).abs().max().item() for p, q in zip(unnamed.parameters(), a.parameters()))
    gap = torch.tensor([control_gap])
    dist.all_reduce(gap, op=dist.ReduceOp.MAX)
    if gap.item() == 0:
        raise AssertionError("control: ZeRO without names equals DDP, so the comparison cannot tell ids apart")

    # Checkpoints: ZeRO's consolidated one into a plain optimizer, the plain one into ZeRO.
    b_opt.consolidate_state_dict(to=0)
    zero_ckpt, plain_ckpt = os.path.join(out, "zero.pt"), os.path.join(out, "plain.pt")
    if rank == 0:
        torch.save({"model": b.module.state_dict(), "opt": b_opt.state_dict()}, zero_ckpt)
        torch.save({"model": a.module.state_dict(), "opt": a_opt.state_dict()}, plain_ckpt)
    dist.barrier()
    # The references resume too: a new DDP sums the first gradients in
    # another bucket order than one that has rebuilt its buckets, which at
    # world size 3 rounds differently (gradient_gap below).
    saved = torch.load(plain_ckpt, weights_only=True)
    e = ddp(saved["model"])
    e_opt = plain(e)
    e_opt.load_state_dict(saved["opt"])
    saved = torch.load(zero_ckpt, weights_only=True)
    c = ddp(saved["model"])
    c_opt = plain(c)
    c_opt.load_state_dict(saved["opt"])
    saved = torch.load(plain_ckpt, weights_only=True)
    d = ddp(saved["model"])
    d_opt = zero(d)
    d_opt.load_state_dict(saved["opt"])
    gradient_gap = first_gradient_gap(a, ddp(torch.load(plain_ckpt, weights_only=True)["model"]), x, y)
    train([(a, a_opt), (b, b_opt), (c, c_opt), (d, d_opt), (e, e_opt)], x, y, MORE_STEPS)
    check_equal("ZeRO vs DDP after the checkpoints", b, a)
    check_equal("plain resumed from ZeRO vs plain resumed from plain", c, e)
    check_equal("ZeRO resumed from plain vs plain resumed from plain", d, e)
    for p, q in zip(c.module.parameters(), e.module.parameters()):
        if not torch.equal(c_opt.state[p]["mlorc_state"], e_opt.state[q]["mlorc_state"]):
            raise AssertionError("plain resumed from ZeRO: its states differ from plain resumed from plain")
    check_states_match("ZeRO resumed from plain", d_opt, d, e_opt, e)
    resumed_gap = max((p - q).abs().max().item() for p, q in zip(e.parameters(), a.parameters()))
    return {"owned": owned, "lowrank_ids": sorted(lowrank_ids(b_opt.optim)), "control_gap": gap.item(),
            "gradient_gap": gradient_gap, "resumed_ddp_gap": resumed_gap}


def first_gradient_gap(running, fresh, x, y):
    """How far the averaged gradients of a new DDP are from those of a running
    one with the same weights (no optimizer step; `fresh` is thrown away, as
    its first backward rebuilds its buckets)."""
    for model in (running, fresh):
        model.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
    return max((p.grad - q.grad).abs().max().item() for p, q in zip(running.parameters(), fresh.parameters()))


def phase_resume(rank, world, ckpt):
    """A ZeRO checkpoint of another world size, into ZeRO here and into a plain optimizer."""
    x, y = shard(rank, world)
    saved = torch.load(ckpt, weights_only=True)
    p = ddp(saved["model"])
    p_opt = plain(p)
    p_opt.load_state_dict(saved["opt"])
    saved = torch.load(ckpt, weights_only=True)  # ZeRO's load_state_dict edits the dict it is given
    z = ddp(saved["model"])
    z_opt = zero(z)
    z_opt.load_state_dict(saved["opt"])
    # ZeRO's own (unused) state holds torch's float cast of this rank's states,
    # which the README says may be cleared.
    cast = [entry["mlorc_state"].dtype for entry in z_opt.state.values() if entry is not None]
    if not cast or set(cast) != {torch.float32}:
        raise AssertionError(f"ZeRO's own state after loading: {cast}")
    z_opt.state.clear()
    train([(p, p_opt), (z, z_opt)], x, y, MORE_STEPS)
    check_equal("ZeRO resumed at another world size vs plain", z, p)
    owned = check_states_match("ZeRO resumed at another world size", z_opt, z, p_opt, p)
    z_opt.consolidate_state_dict(to=0)
    if rank == 0:
        again = mlorc.torch.AdamW(p.module.named_parameters(), **HYPER)
        again.load_state_dict(z_opt.state_dict())
        for q in p.module.parameters():
            if not torch.equal(again.state[q]["mlorc_state"], p_opt.state[q]["mlorc_state"]):
                raise AssertionError("ZeRO's checkpoint after resuming differs from the plain optimizer's states")

    # ZeRO's load_state_dict puts the states in place without the optimizer's
    # load_state_dict: corrupted ones are refused at the step, on every rank
    # (each steps some), before anything changes.
    saved = torch.load(ckpt, weights_only=True)
    for entry in saved["opt"]["state"].values():
        entry["mlorc_state"][40] ^= 0x10
    bad = ddp(saved["model"])
    bad_opt = zero(bad)
    bad_opt.load_state_dict(saved["opt"])
    weights = [q.detach().clone() for q in bad.parameters()]
    try:
        train([(bad, bad_opt)], x, y, 1)
    except ValueError as e:
        refused = str(e)
    else:
        raise AssertionError("ZeRO stepped corrupted states")
    if "put in place without this optimizer's load_state_dict" not in refused or "corrupted" not in refused:
        raise AssertionError(f"unexpected refusal: {refused}")
    if not all(torch.equal(q, w) for q, w in zip(bad.parameters(), weights)):
        raise AssertionError("a refused step changed the weights")
    return {"owned": owned, "refused": refused}


def main():
    phase, path = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    start = time.monotonic()
    try:
        result = phase_train(rank, world, path) if phase == "train" else phase_resume(rank, world, path)
    finally:
        dist.destroy_process_group()
    result["seconds"] = round(time.monotonic() - start, 2)
    print(json.dumps({"rank": rank, "world": world, "phase": phase, **result}))


if __name__ == "__main__":
    main()
