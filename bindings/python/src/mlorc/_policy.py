"""Which tensors are stored low-rank: the `compress=` policy of the fronts.

- None or "auto": the library's AUTO policy (low-rank for matrices with
  min(rows, cols) >= 4 * (rank + oversampling), dense otherwise).
- False or "dense": dense (exactly AdamW / Lion), e.g. embeddings and heads.
- True: low-rank for every tensor of 2+ dimensions whose min(rows, cols) is at
  least the rank, dense for the rest.
- "lowrank": low-rank, an error where that is impossible.
- a set (or list) of parameter names: those low-rank, the rest dense.
- a callable (name_or_index, param) -> True / False / None: low-rank /
  dense / AUTO for that parameter.
"""
from . import _native
from ._shapes import matrix_shape

AUTO = _native.STORAGES["auto"]
DENSE = _native.STORAGES["dense"]
LOWRANK = _native.STORAGES["lowrank"]


def storage_request(compress, key, param, rank):
    """The MLORC_STORAGE_* to request for `param`, named `key` (its name, or
    its index in the optimizer when parameters are not named)."""
    shape = tuple(param.shape)
    if compress is None:
        return AUTO
    if isinstance(compress, str):
        return _native.storage_code(compress)
    if compress is True or compress is False:
        if not compress or len(shape) < 2:
            return DENSE
        return LOWRANK if min(matrix_shape(shape)) >= rank else DENSE
    if isinstance(compress, (set, frozenset, list, tuple)):
        if not isinstance(key, str):
            raise TypeError("compress= given as a set of names needs named parameters: "
                            "pass model.named_parameters() to the optimizer")
        chosen = key in compress
    elif callable(compress):
        chosen = compress(key, param)
        if chosen is None:
            return AUTO
    else:
        raise TypeError("compress= must be None, a bool, 'auto' / 'dense' / 'lowrank', "
                        f"a set of parameter names or a callable, got {type(compress).__name__}")
    if not chosen:
        return DENSE
    if len(shape) < 2:
        raise ValueError(f"compress= selected parameter {key!r} of shape {shape}, but only tensors "
                         "with 2 or more dimensions can be stored low-rank")
    return LOWRANK


def resolved_storage(handle, rows, cols, request):
    """The storage a fresh state gets (AUTO resolved by the library itself,
    through the size it reports: a low-rank state chosen by AUTO is always
    smaller than the dense one)."""
    if request != AUTO:
        return request
    dense = handle.state_size(rows, cols, DENSE)
    return DENSE if handle.state_size(rows, cols, AUTO) == dense else LOWRANK
