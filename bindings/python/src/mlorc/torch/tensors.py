"""Torch tensors as the buffers the extension updates in place.

torch tensors do not export the buffer protocol; `t.detach().numpy()` shares
their memory. A parameter that is not a CPU, float32, contiguous tensor is
refused: converting it (.contiguous(), .float()) would update a copy and
silently lose the step.
"""
import torch

from .._shapes import matrix_shape


# Tensor types whose memory is the tensor's values: every subclass (DTensor,
# FakeTensor, lazy modules' UninitializedParameter, wrapper subclasses) may
# hold its values elsewhere or not at all.
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _check_plain(t, what):
    if type(t) in _PLAIN:
        return
    kind = type(t).__name__
    if isinstance(t, torch.nn.parameter.UninitializedTensorMixin):
        raise TypeError(f"{what} is an {kind} of a lazy module; run one forward pass to materialise it "
                        "before creating the optimizer")
    advice = (" (sharded parameters, e.g. FSDP2's, are not supported yet)"
              if kind == "DTensor" else "")
    raise TypeError(f"{what} is a {kind}, a tensor subclass; mlorc updates plain torch tensors (or "
                    f"nn.Parameters) in place through their memory{advice}")


def check_param(p, label):
    """Raises TypeError / ValueError, saying what to do, unless `p` can be
    updated in place."""
    _check_plain(p, label)
    if p.layout != torch.strided:
        raise TypeError(f"{label} has layout {p.layout}; mlorc updates dense (strided) tensors only")
    if p.device.type != "cpu":
        raise TypeError(f"{label} is on {p.device}; mlorc updates CPU parameters in place: "
                        "keep the model (or a float32 master copy of its weights) on the CPU")
    if p.dtype != torch.float32:
        raise TypeError(f"{label} has dtype {p.dtype}; mlorc needs float32 parameters: convert the "
                        "model once with model.float() before creating the optimizer")
    if not p.is_contiguous():
        raise ValueError(f"{label} is not contiguous; make the parameter itself contiguous once "
                         "(p.data = p.data.contiguous()) before creating the optimizer")


def grad_array(p, label, negate=False):
    """The gradient (or, with `negate`, its negation in a new buffer: p.grad
    is left as it is) as a float32 array. Gradients are only read, so a
    non-contiguous one may be copied (the step is not lost)."""
    g = p.grad
    _check_plain(g, f"the gradient of {label}")
    if g.layout != torch.strided:
        raise TypeError(f"{label} has a {g.layout} gradient; mlorc needs dense gradients")
    if g.device.type != "cpu" or g.dtype != torch.float32:
        raise TypeError(f"{label} has a {g.dtype} gradient on {g.device}; mlorc needs CPU float32 gradients")
    if g.shape != p.shape:
        raise ValueError(f"{label}: gradient shape {tuple(g.shape)} differs from parameter shape {tuple(p.shape)}")
    if negate:
        negated = torch.empty(g.shape, dtype=torch.float32)  # contiguous, whatever g's strides
        torch.neg(g.detach(), out=negated)
        return negated.numpy()
    return g.detach().contiguous().numpy()


def param_array(p):
    """The parameter's own memory as a float32 array (no copy; check_param first)."""
    return p.detach().numpy()


def state_tensor_ok(t):
    return (isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.device.type == "cpu"
            and t.layout == torch.strided and t.dim() == 1 and t.is_contiguous())


def layout_of(p):
    """(rows, cols) of `p` as libmlorc sees it."""
    return matrix_shape(p.shape)
