"""FSDP2 parameters: DTensors sharded on dim 0 of a 1-D device mesh, stepped
where they lie, as the rows of the whole matrix (mlorc_step_sharded).

Each rank holds rows [row_begin, row_begin + local rows) of a parameter seen
as a global_rows x cols matrix (dim 0 x the product of the others; a 1-D
parameter of n elements is an n x 1 column, so that its shards are rows
too). The step exchanges only small sums between the ranks, through
torch.distributed.all_reduce on the mesh's process group in float64: gloo
and NCCL give every rank the same bits, so the replicated factors (s, V) stay
identical everywhere. Every rank must build the optimizer and step the same
parameters in the same order (as FSDP2 itself requires).
"""
import math
import sys

import torch


def fsdp_shard(t):
    """The dim-0-sharded 1-D-mesh DTensor `t` as (its local tensor, its
    process group), or None when `t` is not one."""
    dtensor = sys.modules.get("torch.distributed.tensor")
    if dtensor is None or not isinstance(t, dtensor.DTensor):
        return None
    mesh, placements = t.device_mesh, tuple(t.placements)
    if mesh.ndim != 1 or len(placements) != 1:
        return None
    (placement,) = placements
    if not (isinstance(placement, dtensor.Shard) and placement.dim == 0):
        return None
    return t.to_local(), mesh.get_group()


def global_layout(p):
    """(global rows, cols) of a sharded parameter."""
    shape = tuple(int(d) for d in p.shape)
    if len(shape) == 0:
        return 1, 1
    return shape[0], math.prod(shape[1:])


def local_layout(local, cols):
    """(local rows, cols) of a shard."""
    return (int(local.shape[0]) if local.dim() > 0 else 1), cols


def row_offsets(params, group):
    """The first global row of this rank's shard of each parameter: one
    all_gather of every rank's local row counts."""
    import torch.distributed as dist

    counts = torch.tensor([int(fsdp_shard(p)[0].shape[0]) for p in params], dtype=torch.int64)
    gathered = [torch.empty_like(counts) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, counts, group=group)
    rank = dist.get_rank(group)
    offsets = torch.stack(gathered[:rank]).sum(0) if rank > 0 else torch.zeros_like(counts)
    totals = torch.stack(gathered).sum(0)
    for p, total in zip(params, totals.tolist()):
        if total != global_layout(p)[0]:
            raise ValueError(f"the ranks' shards of a parameter of shape {tuple(p.shape)} hold {total} rows, "
                             f"not {global_layout(p)[0]}: not a partition of dim 0")
    return [int(o) for o in offsets.tolist()]


def reducer(group):
    """The handle's reducer: sums a buffer of float64 in place over `group`."""
    import torch.distributed as dist

    def reduce(buffer):
        dist.all_reduce(torch.frombuffer(buffer, dtype=torch.float64), group=group)

    return reduce


def process_groups(params):
    """The distinct process groups of FSDP2 parameters, in parameter order
    (the same order on every rank)."""
    groups = []
    for p in params:
        group = fsdp_shard(p)[1]
        if group not in groups:
            groups.append(group)
    return groups


def all_agree(ok, groups):
    """Whether `ok` holds on every rank of every group (collective: every
    rank calls it with the same groups)."""
    import torch.distributed as dist

    verdict = torch.tensor([0 if ok else 1], dtype=torch.int64)
    for group in groups:
        dist.all_reduce(verdict, group=group)
    return int(verdict) == 0
