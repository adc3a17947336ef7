"""Group settings that are fixed once the group is added to the optimizer.

They are baked into what the optimizer creates from them: changing one later
would be ignored by existing states yet saved by state_dict(), making a
checkpoint that describes states it does not hold. So a change is refused at
the next step() / step_param() / state_dict() / state_bytes(), naming the
setting; nothing is stepped or saved. (Loading a checkpoint takes the
checkpoint's values, which load_state_dict has checked against the states.)
"""

# setting -> why it cannot change
FIXED = {
    "rank": "it is stored in each parameter's state and sizes it",
    "oversampling": "with rank, it decides which parameters are stored low-rank",
    "stats_stride": "it is stored in each parameter's state and sizes it",
    "d0": "the group's step-size estimate was initialised with it",
    "master_weights": "a state keeps fp32 master weights or not from when it is created",
    "state_dtype": "a state keeps its moments in fp32 or bf16 from when it is created",
}


def fixed_settings(group):
    """The fixed settings a group has, as they are now."""
    return {key: group[key] for key in FIXED if key in group}


def check_unchanged(gi, group, fixed):
    """Raises ValueError if a fixed setting of group `gi` differs from `fixed`."""
    for key, value in fixed.items():
        now = group.get(key)
        if now != value:
            raise ValueError(
                f"parameter group {gi}: {key} was changed from {value!r} to {now!r} after the optimizer was "
                f"built, but {key} is fixed: {FIXED[key]}. Set it back to {value!r}, or train the parameters "
                f"with the new {key} in a new optimizer (or a new param group)")
