"""torch.optim.AdamW's flags (amsgrad, maximize, foreach, fused, capturable,
differentiable), so that configuration code passing them all works.

maximize is implemented (the step sees -grad; p.grad is left as it is). The
others choose among torch's own implementations or ask for features the
native step does not have: their defaults are accepted, anything else is
refused with a ValueError saying why. They live in the param groups, like
torch's, and are checked when a group is added and at every step.
"""

# flag -> (accepted values, why other values are refused)
REFUSED_UNLESS = {
    "amsgrad": ((False,), "AMSGrad (the running maximum of v) is not implemented by libmlorc"),
    "foreach": ((None, False), "libmlorc steps each param group in one batched native call; "
                               "there is no foreach implementation to choose"),
    "fused": ((None, False), "libmlorc's step is already one fused native call per param group; "
                             "there is no other fused implementation to choose"),
    "capturable": ((False,), "the native step runs on the CPU, outside CUDA graph capture"),
    "differentiable": ((False,), "the native step updates the parameters in place outside autograd; "
                                 "it cannot be differentiated through"),
}


def check_flags(gi, group):
    """Raises ValueError for a refused flag value of group `gi`."""
    for flag, (accepted, why) in REFUSED_UNLESS.items():
        if flag in group and group[flag] not in accepted:
            raise ValueError(f"parameter group {gi}: {flag}={group[flag]!r} is not supported ({why}); "
                             f"pass {flag}={accepted[0]!r} or leave it out")
    if "maximize" in group and not isinstance(group["maximize"], bool):
        raise ValueError(f"parameter group {gi}: maximize must be True or False, got {group['maximize']!r}")
