"""Loading an optimizer checkpoint: validate every state before anything
changes, and keep the state bytes away from torch's float cast.

torch.optim.Optimizer.load_state_dict casts every floating-point parameter's
state tensors to the parameter's dtype, which would turn our uint8 state bytes
into float32 numbers. Each state tensor therefore crosses that code inside an
opaque box (an object that is neither a tensor, a dict nor an iterable, which
torch passes through unchanged) and is unboxed afterwards.
"""
from itertools import chain

import torch

from .. import _native
from .._policy import resolved_storage
from . import resharding
from .fixed_settings import check_unchanged
from .state_keys import GROUP_STATE_KEY, ROWS_KEY, SHARED_KEY, STATE_KEY
from .tensor_ids import is_name_id, name_id
from .tensors import dtype_of, layout_of, state_tensor_ok
# Hyperparameters fixed in a state when it is initialised: a checkpoint made
# with other values cannot be continued by this optimizer.
STRUCTURAL = ("rank", "oversampling", "stats_stride")


class _Box:
    __slots__ = ("tensor",)

    def __init__(self, tensor):
        self.tensor = tensor


def _saved_to_params(opt, state_dict):
    """{checkpoint id: this optimizer's parameter}, matched by position as
    torch.optim does."""
    return dict(zip(chain.from_iterable(g["params"] for g in state_dict["param_groups"]),
                    chain.from_iterable(g["params"] for g in opt.param_groups)))


def rows_needed(opt, p):
    """(global rows, first row, rows, cols) of p that this optimizer steps."""
    shard = opt._shards.get(p)
    if shard is None:
        rows, cols = layout_of(p)
        return rows, 0, rows, cols
    return shard[0], shard[2], opt._layout(p)[0], shard[1]


def resharded(opt, state_dict):
    """A shallow copy of `state_dict` whose entries hold, under STATE_KEY,
    the state of the rows this optimizer steps of their parameters
    (resharding.state_for): a checkpoint of another world size, or of an
    unsharded run, for FSDP2 parameters, and FSDP2 rows for unsharded ones."""
    out = dict(state_dict)
    out["state"] = dict(state_dict["state"])
    for saved_id, p in _saved_to_params(opt, state_dict).items():
        entry = state_dict["state"].get(saved_id)
        if not isinstance(entry, dict) or (STATE_KEY not in entry and ROWS_KEY not in entry):
            continue
        state = resharding.state_for(entry, rows_needed(opt, p), f"checkpoint state of {opt._label(p)}")
        entry = {k: v for k, v in entry.items() if k not in (ROWS_KEY, SHARED_KEY)}
        if state is not None:
            entry[STATE_KEY] = state
        out["state"][saved_id] = entry
    return out


def with_rows(opt, state_dict):
    """`state_dict` (of torch's state_dict()) with the states of FSDP2
    parameters cut into rows and shared part (resharding.sharded_entry).
    Those are new tensors, a snapshot of this step; the group states of the
    D-adaptation rules are copied too, so that the whole state dict is one
    (a live group state would advance with later steps under the rows)."""
    by_position = {position: p for p, position in opt._positions.items()}
    state = dict(state_dict["state"])
    for index, entry in state.items():
        p = by_position.get(index)
        if p in opt._shards and isinstance(entry, dict) and isinstance(entry.get(STATE_KEY), torch.Tensor):
            state[index] = resharding.sharded_entry(entry, p)
    groups = [dict(g, **{GROUP_STATE_KEY: g[GROUP_STATE_KEY].clone()}) if GROUP_STATE_KEY in g else g
              for g in state_dict["param_groups"]]
    return dict(state_dict, state=state, param_groups=groups)


def validate(opt, state_dict):
    """Raises ValueError unless every state of `state_dict` fits `opt`."""
    groups, saved_groups = opt.param_groups, state_dict["param_groups"]
    for gi, group in enumerate(groups):  # the states below are compared with these settings
        check_unchanged(gi, group, opt._fixed[gi])
    if len(groups) != len(saved_groups):
        raise ValueError(f"checkpoint has {len(saved_groups)} parameter groups, this optimizer {len(groups)}")
    for gi, (group, saved) in enumerate(zip(groups, saved_groups)):
        if len(group["params"]) != len(saved["params"]):
            raise ValueError(f"parameter group {gi}: checkpoint has {len(saved['params'])} parameters, "
                             f"this optimizer {len(group['params'])}")
        _validate_names(gi, group.get("param_names"), saved.get("param_names"))
        for key in STRUCTURAL:
            if key in saved and saved[key] != group[key]:
                raise ValueError(f"parameter group {gi}: checkpoint was made with {key}={saved[key]}, this "
                                 f"optimizer has {key}={group[key]}; create the optimizer with the same {key}")
        if GROUP_STATE_KEY in group:
            _validate_group_state(opt, gi, saved.get(GROUP_STATE_KEY))
    id_map = _saved_to_params(opt, state_dict)
    for saved_id, entry in state_dict["state"].items():
        p = id_map.get(saved_id)
        if p is not None:
            _validate_entry(opt, p, entry)


def _validate_names(gi, names, saved_names):
    """When both sides were built from named parameters, the states must go
    to the parameters of the same names: same-shape parameters in another
    order would otherwise swap states silently."""
    if names is None or saved_names is None or list(names) == list(saved_names):
        return
    for j, (name, saved_name) in enumerate(zip(names, saved_names)):
        if name != saved_name:
            raise ValueError(f"parameter group {gi}: position {j} holds {saved_name!r} in the checkpoint but "
                             f"{name!r} in this optimizer: the parameters come in another order (or from "
                             "another model); build the optimizer from the parameters in the checkpoint's order")


def _validate_group_state(opt, gi, tensor):
    if not state_tensor_ok(tensor):
        raise ValueError(f"parameter group {gi}: checkpoint has no mlorc group state "
                         f"(expected a 1-D contiguous CPU uint8 tensor under {GROUP_STATE_KEY!r})")
    try:
        info = _native.inspect_group_state(tensor.numpy())
    except _native.MlorcError as e:
        raise ValueError(f"parameter group {gi}: checkpoint group state is unusable: {e}") from e
    if info["rule"] != opt._rule:
        raise ValueError(f"parameter group {gi}: checkpoint group state belongs to rule {info['rule']}, "
                         f"but this optimizer is {opt._rule}")


def _validate_entry(opt, p, entry):
    tensor = entry.get(STATE_KEY) if isinstance(entry, dict) else None
    _validate_state(opt, p, tensor, f"checkpoint state of {opt._label(p)}")


def adopted_state(opt, p, tensor):
    """A private copy of `tensor`, a state that was put into `opt.state[p]`
    without load_state_dict (ZeroRedundancyOptimizer.load_state_dict does
    that), after the checks load_state_dict makes; ValueError if it fails one."""
    _validate_state(opt, p, tensor, f"the state of {opt._label(p)} (put in place without this optimizer's "
                                    "load_state_dict, e.g. by ZeroRedundancyOptimizer.load_state_dict)")
    return tensor.clone()


def _validate_state(opt, p, tensor, what):
    if not state_tensor_ok(tensor):
        raise ValueError(f"{what} is not an mlorc state "
                         f"(expected a 1-D contiguous CPU uint8 tensor under {STATE_KEY!r})")
    try:
        info = _native.inspect_state(tensor.numpy())
    except _native.MlorcError as e:
        raise ValueError(f"{what} is unusable: {e}") from e
    if info["rule"] != opt._rule:
        raise ValueError(f"{what} belongs to rule {info['rule']}, but this optimizer is {opt._rule}")
    rows, cols = opt._layout(p)  # an FSDP2 parameter's state holds its shard's rows
    dtype = _native.DTYPE_NAMES[dtype_of(p)]
    if info["dtype"] != dtype:
        raise ValueError(f"{what} is for a {info['dtype']} parameter, but the parameter is {p.dtype}: "
                         "resume with the parameters in the dtype they were trained in")
    if (info["rows"], info["cols"]) != (rows, cols):
        raise ValueError(f"{what} is for a {info['rows']}x{info['cols']} tensor, "
                         f"but the parameter is {rows}x{cols} (shape {tuple(p.shape)})")
    gi = opt._group_index[p]
    group, handle = opt.param_groups[gi], opt._handles[gi]
    opt._configure(handle, group)
    shard = opt._shards.get(p)
    whole = (shard[0], shard[1]) if shard is not None else (rows, cols)  # AUTO decides by the whole matrix
    expected = _native.STORAGE_NAMES[resolved_storage(handle, *whole, opt._storage[p])]
    if info["storage"] != expected:
        raise ValueError(f"{what} is {info['storage']}, but this optimizer's "
                         f"compress= policy stores it {expected}")
    if dtype != "f32" and info["master_weights"] != bool(group["master_weights"]):
        raise ValueError(f"{what} {'keeps' if info['master_weights'] else 'has no'} fp32 master weights, but its "
                         f"parameter group has master_weights={bool(group['master_weights'])}")
    if expected == "lowrank" and info["rank"] != group["rank"]:
        raise ValueError(f"{what} has rank {info['rank']}, "
                         f"but its parameter group has rank {group['rank']}")
    _validate_tensor_id(opt, p, info["tensor_id"], what)


def _validate_tensor_id(opt, p, saved, what):
    """A state keeps the id it was created with (its sketches continue from
    it), which must be p's: the id of p's name, or, for a state written with
    position ids (by an optimizer without names), p's position."""
    position, name = opt._positions[p], opt._names.get(p)
    if saved == opt._tensor_ids[p] or saved == position:
        return
    if not is_name_id(saved):
        raise ValueError(f"{what} has tensor id {saved}, the id of position {saved} in an optimizer built "
                         f"without names, but the parameter is at position {position} here: the parameters "
                         "were passed in another order, or the state was saved by a rank of "
                         "ZeroRedundancyOptimizer built without names (whose positions are those of its "
                         "partition; name the parameters with mlorc.torch.named(model))")
    if name is None:
        raise ValueError(f"{what} has tensor id {saved}, the id of a named parameter, but this optimizer does "
                         "not know the parameters' names: build it from model.named_parameters() or "
                         "mlorc.torch.named(model), as the optimizer that saved it was")
    owner = next((other for other, other_name in opt._names.items() if name_id(other_name) == saved), None)
    where = (f"it is the state of {opt._label(owner)}: the parameters were passed in another order"
             if owner is not None else "it belongs to none of this optimizer's parameters (a parameter saved "
                                       "under another name, or from another model)")
    raise ValueError(f"{what} has tensor id {saved}, but {name!r} has id {opt._tensor_ids[p]}: {where}")


def boxed(state_dict):
    """A shallow copy of `state_dict` whose state bytes are boxed."""
    out = dict(state_dict)
    out["state"] = {
        k: ({key: _Box(v) if key == STATE_KEY and isinstance(v, torch.Tensor) else v
             for key, v in entry.items()} if isinstance(entry, dict) else entry)
        for k, entry in state_dict["state"].items()
    }
    return out


def unbox(opt):
    """Unboxes the loaded states into private copies: a checkpoint loaded into
    two optimizers must not make them share (and both update) the same bytes."""
    for entry in opt.state.values():
        if isinstance(entry, dict):
            for key, v in entry.items():
                if isinstance(v, _Box):
                    entry[key] = v.tensor.clone()
