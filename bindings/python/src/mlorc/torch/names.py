"""How an optimizer learns its parameters' fully qualified names (which give
their tensor ids, tensor_ids.py, and key `compress=` sets):

- named parameters: `AdamW(model.named_parameters())`, or param groups of
  (name, param) pairs; torch keeps them in each group's "param_names";
- `named(model)`: records each parameter's name on the parameter itself, so
  that any optimizer built from those parameters later knows it, also when
  it only receives plain tensors: ZeroRedundancyOptimizer takes tensors
  only, and hands each rank's optimizer its own subset of them.

When a parameter has both, they must agree.
"""
import sys

import torch

# The attribute named() sets on each parameter.
NAME_ATTRIBUTE = "_mlorc_name"


def _unwrapped(model):
    """The model inside DDP / DataParallel / torch.compile wrappers, whose
    names add a prefix ("module.", "_orig_mod.") the model's own do not have."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
            continue
        # Only a loaded torch._dynamo can have made a compiled module (and
        # importing it here would cost what compiling.py saves).
        eval_frame = sys.modules.get("torch._dynamo.eval_frame")
        if eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
            model = model._orig_mod
            continue
        return model


def named(model):
    """Records on every parameter of `model` its fully qualified name (that of
    `model.named_parameters()`, without the prefix of DDP, DataParallel or
    torch.compile wrappers) and returns the parameters as a list, e.g.

        ZeroRedundancyOptimizer(mlorc.torch.named(model), optimizer_class=mlorc.torch.AdamW, lr=1e-3)

    Optimizers built later from these parameters, by any route, use the
    names; those built before keep what they had. A later call renames."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"named() takes a torch.nn.Module, got {type(model).__name__}")
    params = []
    for name, p in _unwrapped(model).named_parameters():
        setattr(p, NAME_ATTRIBUTE, name)
        params.append(p)
    return params


def group_names(gi, group, first):
    """The name of each parameter of group `gi` (None where unknown);
    `first` is the global position of its first parameter, for messages.
    Raises ValueError when a group's names cannot be the parameters'."""
    params, listed = group["params"], group.get("param_names")
    if listed is not None and len(listed) != len(params):
        raise ValueError(
            f"parameter group {gi} has {len(params)} parameters but {len(listed)} param_names, so the names "
            "cannot be matched to the parameters (ZeroRedundancyOptimizer, for one, hands each rank a subset "
            "of a group's parameters with all of its param_names): name the parameters with "
            "mlorc.torch.named(model) instead")
    names = []
    for j, p in enumerate(params):
        given = listed[j] if listed is not None else None
        recorded = getattr(p, NAME_ATTRIBUTE, None)
        if given is not None and not isinstance(given, str):
            raise TypeError(f"parameter group {gi}: the name of parameter {first + j} is a "
                            f"{type(given).__name__}, not a str")
        if given is not None and recorded is not None and given != recorded:
            raise ValueError(
                f"parameter {given!r} was named {recorded!r} by mlorc.torch.named(): the names it is known by "
                "must agree, or its tensor id would depend on how the optimizer was built. Pass the names of "
                "the unwrapped model (model.named_parameters(), not those of its DDP or compiled wrapper), "
                "or call named() on the model whose names you pass")
        names.append(given if given is not None else recorded)
    return names
