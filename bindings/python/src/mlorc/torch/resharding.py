"""Checkpoints of FSDP2 states that load at another world size, or into an
unsharded optimizer, and back.

A state's bytes are cut into its rows and its replicated part
(mlorc_state_split / mlorc_state_join in mlorc.h). The state_dict() of an
optimizer of FSDP2 parameters holds, for each of them:

    "mlorc_rows":   a uint8 DTensor of global shape (global rows, row bytes),
                    sharded on dim 0 of the parameter's mesh as the parameter
                    is: this rank's rows of U (or of the dense moments);
    "mlorc_shared": a uint8 tensor, identical on every rank: the header of the
                    whole matrix, s and V.

torch.distributed.checkpoint then saves the rows as it saves the weights, the
shared part once, and reshards the rows when it loads them at another world
size (dcp.load into the state dict of get_optimizer_state_dict);
get_optimizer_state_dict(..., full_state_dict=True) gathers them into plain
tensors, which an unsharded optimizer loads. load_state_dict takes either
form for any parameter (see state_for). Each row record is sealed to its
global row and its shared part: rows that do not belong (another step,
another layout, a shuffle) are refused, never loaded.
"""
import struct
import sys

import torch

from .. import _mlorc
from .._native import MlorcError
from .state_keys import ROWS_KEY, SHARED_KEY, STATE_KEY

# The replicated part starts with a 16-byte prefix, then the header of the
# whole matrix (mlorc.h, mlorc_state_split).
SHARED_HEADER = 16


def split(state):
    """(rows: uint8 (rows, row bytes), shared: uint8 1-D) of a state tensor."""
    array = state.numpy()
    row_bytes, shared_bytes = _mlorc.state_split_size(array)
    rows = rows_of(state)[2]
    records = torch.empty((rows, row_bytes), dtype=torch.uint8)
    shared = torch.empty(shared_bytes, dtype=torch.uint8)
    _mlorc.state_split(array, records.numpy().reshape(-1), shared.numpy())
    return records, shared


def join(shared, records, global_rows, row_begin):
    """The state of rows [row_begin, row_begin + len(records)) of a
    global_rows-row matrix."""
    rows = int(records.shape[0])
    state_bytes, _ = _mlorc.state_join_size(shared.numpy(), global_rows, row_begin, rows)
    state = torch.empty(state_bytes, dtype=torch.uint8)
    _mlorc.state_join(shared.numpy(), global_rows, row_begin, rows, records.contiguous().numpy().reshape(-1),
                      state.numpy())
    return state


def rows_of(state):
    """(global rows, first row, rows) a state holds (header bytes 24, 96, 104)."""
    array = state.numpy()
    rows = struct.unpack_from("=q", array, 24)[0]
    global_rows, row_begin = struct.unpack_from("=qq", array, 96)
    return (global_rows, row_begin, rows) if global_rows else (rows, 0, rows)


def sharded_entry(entry, p):
    """`entry` (a state_dict entry of FSDP2 parameter `p`) with its state cut
    into the rows DTensor and the shared part."""
    from torch.distributed.tensor import DTensor

    state = entry[STATE_KEY]
    records, shared = split(state)
    global_rows = int(p.shape[0]) if p.dim() > 0 else 1
    rows = DTensor.from_local(records, p.device_mesh, p.placements, run_check=False,
                              shape=torch.Size((global_rows, records.shape[1])), stride=(records.shape[1], 1))
    out = {k: v for k, v in entry.items() if k != STATE_KEY}
    out[ROWS_KEY], out[SHARED_KEY] = rows, shared
    return out


def state_for(entry, target, what):
    """The state tensor that `entry` (of a checkpoint, in either form) gives
    for rows [b, b + r) of a G x cols matrix, target = (G, b, r, cols): the
    state itself when it holds exactly those rows; those rows cut from a
    state, or from records, that hold more of them; a vector's dense state
    reshaped between 1 x n (unsharded) and n x 1 (FSDP2, whose rows are
    sharded). ValueError when the entry cannot give them. An entry with both
    forms (what set_optimizer_state_dict(..., full_state_dict=True) makes of
    an unsharded checkpoint, merging it into this optimizer's own entries)
    gives its state."""
    G, b, r, cols = target
    state = entry.get(STATE_KEY)
    try:
        if not isinstance(state, torch.Tensor):
            records, shared = entry.get(ROWS_KEY), entry.get(SHARED_KEY)
            if records is None or shared is None:
                return state  # neither form: validation names what is missing
            state = _joined(records, shared, target, what)
        if not _is_state_bytes(state) or state.numel() < _mlorc.STATE_HEADER_BYTES:
            return state  # not the bytes of a state: validation names it
        state = _oriented(state, G, cols)
        held = rows_of(state)
        hg, hb, hr = held
        if held == (G, b, r) or hg != G:
            return state  # another matrix: validation names the shapes
        if b < hb or b + r > hb + hr:
            raise ValueError(f"{what} holds rows [{hb}, {hb + hr}) of a {hg}-row matrix, but rows "
                             f"[{b}, {b + r}) of {G} are needed here: load a checkpoint saved with "
                             "torch.distributed.checkpoint (it reshards), or one of the whole matrix")
        records, shared = split(state)
        return join(shared, records[b - hb:b - hb + r], G, b)
    except MlorcError as e:
        raise ValueError(f"{what} cannot be loaded for rows [{b}, {b + r}) of {G}: {e}") from e


def _joined(records, shared, target, what):
    """The state that records and their shared part join into: all rows of
    the matrix (a full state dict), or this rank's rows."""
    G, b, r, _ = target
    if not _is_state_bytes(shared) or shared.numel() < SHARED_HEADER + _mlorc.STATE_HEADER_BYTES:
        raise ValueError(f"{what}: {SHARED_KEY!r} is not the replicated part of a state (a 1-D contiguous CPU "
                         "uint8 tensor from mlorc_state_split)")
    records = _local_records(records, what)
    whole_rows = struct.unpack_from("=q", shared.numpy(), SHARED_HEADER + 24)[0]
    if records.shape[0] == whole_rows:
        return join(shared, records, whole_rows, 0)
    return join(shared, records, G, b)


def _oriented(state, rows, cols):
    """A dense vector's whole state as the state of a rows x cols vector of
    the same elements (mlorc_state_reshape); any other state unchanged."""
    array = state.numpy()
    storage, = struct.unpack_from("=I", array, 16)
    held_rows, held_cols = struct.unpack_from("=qq", array, 24)
    sharded, = struct.unpack_from("=q", array, 96)
    vectors = 1 in (held_rows, held_cols) and 1 in (rows, cols)
    if (storage != _mlorc.STORAGE_DENSE or sharded or not vectors or (held_rows, held_cols) == (rows, cols)
            or held_rows * held_cols != rows * cols):
        return state
    out = torch.empty_like(state)
    _mlorc.state_reshape(array, rows, cols, out.numpy())
    return out


def _is_state_bytes(t):
    return t.dtype == torch.uint8 and t.dim() == 1 and t.device.type == "cpu" and t.is_contiguous()


def _local_records(records, what):
    dtensor = sys.modules.get("torch.distributed.tensor")
    if dtensor is not None and isinstance(records, dtensor.DTensor):
        records = records.to_local()
    if not (isinstance(records, torch.Tensor) and records.dtype == torch.uint8 and records.dim() == 2
            and records.device.type == "cpu"):
        raise ValueError(f"{what}: {ROWS_KEY!r} is not a 2-D CPU uint8 tensor (or DTensor)")
    return records.contiguous()
