"""The tensor id of each parameter: it keys the parameter's sketch matrices
(mlorc.h, "Determinism"), so it must be the same in every run of the same
model, and again when resuming from a checkpoint.

It is fixed once, when the parameter's group is added to the optimizer, and
never depends on when or how the parameter's state is created (first step,
a step hook, torch.compile).

- A parameter whose fully qualified name is known (names.py) gets an id
  derived from the name alone, so the id stays the same when the optimizer
  is partitioned (ZeroRedundancyOptimizer gives each rank's optimizer a
  subset of the parameters, in its own order), rebuilt with other param
  groups, or resumed:

      id = 2**52 + (BLAKE2b(name as UTF-8, 8-byte digest) read as a
                    little-endian uint64, mod 2**52)

  Name ids lie in [2**52, 2**53): below 2**53 they survive any float64 on
  the way (JSON, spreadsheets); at or above 2**52 they never equal a
  position id, so an id tells which kind it is.
- Otherwise the id is the parameter's position in the optimizer's global
  order: over all param groups, in the order they were given (the only ids
  of mlorc before names were used; such checkpoints still load).
"""
import hashlib

NAME_IDS_START = 1 << 52
NAME_IDS_END = 1 << 53


def name_id(name):
    """The tensor id of the parameter named `name` (a str)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return NAME_IDS_START + int.from_bytes(digest, "little") % NAME_IDS_START


def tensor_id(position, name=None):
    """The tensor id of the parameter at `position` in the optimizer's global
    parameter order, named `name` (or None when its name is not known)."""
    return position if name is None else name_id(name)


def is_name_id(tensor_id):
    return NAME_IDS_START <= tensor_id < NAME_IDS_END
