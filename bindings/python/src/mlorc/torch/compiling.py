"""torch.compile: the native step runs outside any traced graph.

Dynamo cannot trace a C extension, and tracing the bookkeeping around it
(dicts keyed by parameters, lazily created states) made compiled steps use
the wrong states. A method wrapped by `eager` is a graph break: it always runs
as plain Python, compiled caller or not.
"""
import functools

import torch


def eager(method):
    """`method`, never traced by torch.compile. torch.compiler.disable is
    resolved at the first call, so that `import mlorc.torch` does not import
    torch._dynamo (seconds); torch.optim.Optimizer's constructor imports it
    anyway (its add_param_group is itself excluded from tracing)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        disabled = getattr(method, "_mlorc_eager", None)
        if disabled is None:
            disabled = torch.compiler.disable(method)
            method._mlorc_eager = disabled
        return disabled(*args, **kwargs)

    return wrapper
