"""The tensor id of each parameter: it keys the parameter's sketch matrices
(mlorc.h, "Determinism"), so it must be the same in every run of the same
model, and again when resuming from a checkpoint.

It is fixed once, when the parameter's group is added to the optimizer, and
never depends on when or how the parameter's state is created (first step,
a step hook, torch.compile). Today it is the parameter's position in the
optimizer's global order: over all param groups, in the order they were
given. Deriving it from the parameter's fully-qualified name, when names are
known, needs a change here only.
"""


def tensor_id(position, name=None):
    """The tensor id of the parameter at `position` in the optimizer's global
    parameter order; `name` (its name, or None) is not used yet."""
    del name
    return position
