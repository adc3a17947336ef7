"""One rank of the FSDP2 checkpoint test (test_torch_fsdp_checkpoint.py,
through distributed_launch.py). Two phases, at different world sizes:

    save OUT [RULE]
                 FSDP2 MLorc-AdamW (or RULE: came, mofasgd, prodigy) trains 10 steps and saves its model and
                 optimizer with torch.distributed.checkpoint (OUT/dcp) and as
                 full state dicts (OUT/full.pt); it trains 10 more steps and
                 saves the weights it ends with (OUT/final.pt).
    resume OUT [RULE]
                 at another world size: loads OUT/dcp and continues the 10
                 steps; loads the full state dicts into FSDP2, into a plain
                 optimizer (and continues it), and moves the states plain ->
                 FSDP2, plain -> ZeroRedundancyOptimizer -> FSDP2 (not for
                 Prodigy: a ZeRO partition would estimate its own step size);
                 refuses a tampered checkpoint with nothing changed.

Each rank prints one JSON line of what it measured; the test asserts."""
import copy
import datetime
import gc
import json
import os
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer

import mlorc

STEPS = 10
# RULE -> (optimizer class, its settings); set by main().
RULES = {
    "adamw": (mlorc.torch.AdamW, dict(lr=1e-2, rank=2, compress=True)),
    "came": (mlorc.torch.CAME, dict(lr=1e-2, rank=2, compress=True)),
    "mofasgd": (mlorc.torch.MoFaSGD, dict(lr=1e-2, rank=2, compress=True)),
    # stats_stride 5: the samples fall unevenly on the shards' rows.
    "prodigy": (mlorc.torch.Prodigy, dict(lr=1.0, rank=2, compress=True, d0=1e-3, stats_stride=5)),
}
OPTIMIZER, HYPER = RULES["adamw"]
FULL = StateDictOptions(full_state_dict=True)


def model():
    torch.manual_seed(0)  # 33 and 7 rows: neither divides by 2 or 3; 7 x 33 and 33 x 12 low-rank at rank 2
    return torch.nn.Sequential(torch.nn.Linear(12, 33), torch.nn.Tanh(), torch.nn.Linear(33, 7))


def batch(step):
    g = torch.Generator().manual_seed(100 + step)  # the same on every rank
    return torch.randn(16, 12, generator=g), torch.randn(16, 7, generator=g)


def train(net, opt, first, steps):
    for step in range(first, first + steps):
        x, y = batch(step)
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()


def full_weights(net):
    return {name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for name, p in net.named_parameters()}


def fsdp(mesh):
    net = fully_shard(model(), mesh=mesh)
    return net, OPTIMIZER(net.named_parameters(), **HYPER)


def states_equal(a, b):
    """Whether two full optimizer state dicts hold the same mlorc bytes (and
    group states, for Prodigy)."""
    if sorted(a["state"]) != sorted(b["state"]):
        return False
    for ga, gb in zip(a["param_groups"], b["param_groups"]):
        key = mlorc.torch.optimizer.GROUP_STATE_KEY
        if (key in ga) != (key in gb) or (key in ga and not torch.equal(ga[key], gb[key])):
            return False
    for key, entry in a["state"].items():
        other = b["state"][key]
        for part in ("mlorc_rows", "mlorc_shared", "mlorc_state"):
            if (part in entry) != (part in other) or (part in entry and not torch.equal(entry[part], other[part])):
                return False
    return True


def as_rows(state_dict, net):
    """An unsharded optimizer's state dict with each state cut as a full
    state dict of FSDP2 holds it (rows, shared), keyed by name."""
    params = list(net.named_parameters())
    out = {}
    for index, entry in state_dict["state"].items():
        name, p = params[index]
        state = entry["mlorc_state"]
        if p.dim() == 1:  # a vector is 1 x n unsharded, n x 1 rows in FSDP2
            state = mlorc.torch.resharding._oriented(state, p.numel(), 1)
        rows, shared = mlorc.torch.resharding.split(state)
        out[name] = {"mlorc_rows": rows, "mlorc_shared": shared}
    return {"state": out, "param_groups": state_dict["param_groups"]}


def phase_save(rank, mesh, out):
    net, opt = fsdp(mesh)
    train(net, opt, 0, STEPS)
    dcp.save({"model": get_model_state_dict(net), "optim": get_optimizer_state_dict(net, opt)},
             checkpoint_id=os.path.join(out, "dcp"))
    full = {"model": get_model_state_dict(net, options=FULL), "optim": get_optimizer_state_dict(net, opt, options=FULL)}
    kinds = sorted({mlorc.inspect_state(opt.state[p]["mlorc_state"])["storage"] for p in net.parameters()})
    train(net, opt, STEPS, STEPS)
    final = full_weights(net)
    if rank == 0:
        torch.save(full, os.path.join(out, "full.pt"))
        torch.save({"weights": final, "start": full["model"]}, os.path.join(out, "final.pt"))
    return {"storages": kinds}


def phase_resume(rank, world, mesh, out):
    full = torch.load(os.path.join(out, "full.pt"), weights_only=True)
    final = torch.load(os.path.join(out, "final.pt"), weights_only=True)
    report = {}

    def gap(weights):
        return max(float((weights[k] - final["weights"][k]).abs().max()) for k in final["weights"])

    report["moved"] = max(float((final["weights"][k] - final["start"][k]).abs().max()) for k in final["weights"])

    # torch.distributed.checkpoint, saved at the other world size: the same
    # bytes as the saving run held, then the same training.
    net, opt = fsdp(mesh)
    state = {"model": get_model_state_dict(net), "optim": get_optimizer_state_dict(net, opt)}
    dcp.load(state, checkpoint_id=os.path.join(out, "dcp"))
    set_model_state_dict(net, state["model"])
    set_optimizer_state_dict(net, opt, state["optim"])
    report["dcp_exact"] = states_equal(get_optimizer_state_dict(net, opt, options=FULL), full["optim"])
    train(net, opt, STEPS, STEPS)
    report["dcp_gap"] = gap(full_weights(net))

    # The control: the weights alone, a new optimizer.
    net, opt = fsdp(mesh)
    set_model_state_dict(net, copy.deepcopy(full["model"]), options=FULL)  # it edits the dict
    train(net, opt, STEPS, STEPS)
    report["control_gap"] = gap(full_weights(net))

    # The full state dicts into FSDP2.
    net, opt = fsdp(mesh)
    set_model_state_dict(net, copy.deepcopy(full["model"]), options=FULL)  # it edits the dict
    set_optimizer_state_dict(net, opt, copy.deepcopy(full["optim"]), options=FULL)
    report["full_exact"] = states_equal(get_optimizer_state_dict(net, opt, options=FULL), full["optim"])

    # A tampered row: refused, nothing changed.
    tampered = copy.deepcopy(full["optim"])
    rows = tampered["state"]["0.weight"]["mlorc_rows"]
    rows[rows.shape[0] - 1, 0] ^= 1  # the last row's first byte, on the last rank
    before = get_optimizer_state_dict(net, opt, options=FULL)
    try:
        set_optimizer_state_dict(net, opt, tampered, options=FULL)
        report["tampered"] = None
    except ValueError as e:
        report["tampered"] = str(e)
    report["tampered_unchanged"] = states_equal(get_optimizer_state_dict(net, opt, options=FULL), before)

    # Into a plain optimizer (the names key the full state dict), which continues.
    plain = model()
    plain.load_state_dict(full["model"])
    plain_opt = OPTIMIZER(plain.named_parameters(), **HYPER)
    plain_opt.load_state_dict(copy.deepcopy(full["optim"]))
    plain_sd = plain_opt.state_dict()
    report["plain_exact"] = states_equal(as_rows(plain_sd, plain), full["optim"])
    saved_plain = copy.deepcopy(plain_sd)
    train(plain, plain_opt, STEPS, STEPS)
    report["plain_gap"] = gap(full_weights(plain))

    # Plain -> FSDP2: each rank cuts its rows of the whole states.
    net, opt = fsdp(mesh)
    set_model_state_dict(net, copy.deepcopy(full["model"]), options=FULL)  # it edits the dict
    opt.load_state_dict(copy.deepcopy(saved_plain))
    report["plain_to_fsdp_exact"] = states_equal(get_optimizer_state_dict(net, opt, options=FULL), full["optim"])

    if OPTIMIZER is mlorc.torch.Prodigy:
        return report
    # Plain -> ZeroRedundancyOptimizer -> FSDP2.
    zmodel = model()
    zmodel.load_state_dict(full["model"])
    zopt = ZeroRedundancyOptimizer(mlorc.torch.named(zmodel), optimizer_class=OPTIMIZER, **HYPER)
    zopt.load_state_dict(copy.deepcopy(saved_plain))
    zopt.consolidate_state_dict(to=0)
    consolidated = [zopt.state_dict() if rank == 0 else None]
    dist.broadcast_object_list(consolidated, src=0)
    report["zero_exact"] = states_equal(as_rows(consolidated[0], zmodel), full["optim"])
    net, opt = fsdp(mesh)
    set_model_state_dict(net, copy.deepcopy(full["model"]), options=FULL)  # it edits the dict
    opt.load_state_dict(consolidated[0])
    report["zero_to_fsdp_exact"] = states_equal(get_optimizer_state_dict(net, opt, options=FULL), full["optim"])
    return report


def main():
    torch.set_num_threads(1)
    global OPTIMIZER, HYPER
    phase, out = sys.argv[1], sys.argv[2]
    OPTIMIZER, HYPER = RULES[sys.argv[3] if len(sys.argv) > 3 else "adamw"]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        mesh = init_device_mesh("cpu", (world,))
        report = phase_save(rank, mesh, out) if phase == "save" else phase_resume(rank, world, mesh, out)
        dist.barrier()
        # Free the optimizers (their reducers hold the process group) while the group is alive.
        gc.collect()
    finally:
        dist.destroy_process_group()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
