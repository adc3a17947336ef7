"""Torch tensors as the buffers the extension updates in place.

torch tensors do not export the buffer protocol; `t.detach().numpy()` shares
their memory (bfloat16, which numpy lacks, through an int16 view of its
bits). A parameter that is not a CPU, contiguous float32, bfloat16 or float16
tensor is refused: converting it (.contiguous(), .float()) would update a
copy and silently lose the step.
"""
import sys

import torch

from .. import _native
from .._shapes import matrix_shape
from .sharding import fsdp_shard

# The parameter dtypes libmlorc steps, as mlorc_dtype codes.
DTYPES = {torch.float32: _native.DTYPES["f32"], torch.bfloat16: _native.DTYPES["bf16"],
          torch.float16: _native.DTYPES["f16"]}


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
    refusal = _dtensor_refusal(t, what)
    if refusal is not None:
        raise TypeError(refusal)
    raise TypeError(f"{what} is a {kind}, a tensor subclass; mlorc updates plain torch tensors (or "
                    "nn.Parameters) in place through their memory")


def _dtensor_refusal(t, what):
    """Why a DTensor's layout is refused, naming the layout (None for other
    tensor types, and for FSDP2's dim-0 shards on a 1-D mesh, which
    sharding.py steps)."""
    dtensor = sys.modules.get("torch.distributed.tensor")  # loaded wherever a DTensor exists
    if dtensor is None or not isinstance(t, dtensor.DTensor):
        return None
    mesh, placements = t.device_mesh, tuple(t.placements)
    where = f"(placements {placements} on a device mesh of shape {tuple(mesh.shape)})"
    if mesh.ndim > 1:
        return (f"{what} is a DTensor on a {mesh.ndim}-D device mesh {where}, as HSDP or FSDP with tensor "
                "parallelism makes; mlorc does not support multi-dimensional meshes yet")
    (placement,) = placements
    if isinstance(placement, dtensor.Shard):
        return (f"{what} is a DTensor sharded on dim {placement.dim} {where}, as tensor parallel's "
                f"RowwiseParallel makes; mlorc does not support sharding on dim {placement.dim}")
    if isinstance(placement, dtensor.Replicate):
        return (f"{what} is a replicated DTensor {where}; mlorc steps plain tensors only: for replicated "
                "data parallelism use DDP")
    return f"{what} is a DTensor with a pending reduction {where}; mlorc steps plain tensors only"


def check_param(p, label):
    """Raises TypeError / ValueError, saying what to do, unless `p` (or, for
    an FSDP2 parameter, its local shard) can be updated in place."""
    shard = fsdp_shard(p)
    if shard is not None:
        p = shard[0]
    _check_plain(p, label)
    if p.layout != torch.strided:
        raise TypeError(f"{label} has layout {p.layout}; mlorc updates dense (strided) tensors only")
    if p.device.type != "cpu":
        raise TypeError(f"{label} is on {p.device}; mlorc updates CPU parameters in place: "
                        "keep the model (or a float32 master copy of its weights) on the CPU")
    if p.is_complex():
        # model.float() would keep only the real part.
        raise TypeError(f"{label} has dtype {p.dtype}; mlorc steps real float32 tensors: keep the real "
                        "and imaginary parts as one real parameter, nn.Parameter(torch.view_as_real("
                        "z.to(torch.complex64))) of shape (..., 2), and use torch.view_as_complex(p) "
                        "in the forward pass")
    if p.dtype not in DTYPES:
        raise TypeError(f"{label} has dtype {p.dtype}; mlorc steps float32, bfloat16 and float16 "
                        "parameters: convert the model once (model.float() or model.bfloat16()) before "
                        "creating the optimizer")
    if not p.is_contiguous():
        raise ValueError(_not_contiguous(p, label))


def _not_contiguous(p, label):
    """Why a non-contiguous parameter is refused, and what to do that keeps
    what the user asked for."""
    for dims, memory_format in ((4, torch.channels_last), (5, torch.channels_last_3d)):
        if p.dim() == dims and p.is_contiguous(memory_format=memory_format):
            # Converting the weights back would silently undo the user's choice;
            # convolutions keep channels_last when only their input has it.
            return (f"{label} is in {memory_format} memory format, which mlorc cannot step in place (its "
                    "state follows the row-major layout). Keep the weights contiguous and convert the "
                    f"inputs instead (x.to(memory_format={memory_format})): a convolution with contiguous "
                    "weights and channels_last input computes and returns channels_last")
    return (f"{label} is not contiguous (strides {p.stride()} for shape {tuple(p.shape)}); make the "
            "parameter itself contiguous once (p.data = p.data.contiguous()) before creating the optimizer")


def grad_array(p, label, negate=False):
    """The gradient (or, with `negate`, its negation in a new buffer: p.grad
    is left as it is) as an array of p's dtype (torch keeps a gradient in its
    parameter's dtype). Gradients are only read, so a non-contiguous one may
    be copied (the step is not lost)."""
    g = p.grad
    shard = fsdp_shard(p)
    if shard is not None:  # FSDP2: the gradient is sharded like the parameter
        local = fsdp_shard(g) if g is not None else None
        if local is None:
            raise TypeError(f"{label} is an FSDP2 shard, but its gradient is not sharded like it")
        g, p = local[0], shard[0]
    _check_plain(g, f"the gradient of {label}")
    if g.layout != torch.strided:
        raise TypeError(f"{label} has a {g.layout} gradient; mlorc needs dense gradients")
    if g.device.type != "cpu" or g.dtype != p.dtype:
        raise TypeError(f"{label} has a {g.dtype} gradient on {g.device}; mlorc needs CPU gradients of the "
                        f"parameter's dtype ({p.dtype})")
    if g.shape != p.shape:
        raise ValueError(f"{label}: gradient shape {tuple(g.shape)} differs from parameter shape {tuple(p.shape)}")
    if negate:
        negated = torch.empty(g.shape, dtype=g.dtype)  # contiguous, whatever g's strides
        torch.neg(g.detach(), out=negated)
        return _array(negated)
    return _array(g.detach().contiguous())


def _array(t):
    """A numpy array sharing t's memory; bfloat16 as the int16 view of its bits."""
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()


def param_array(p):
    """The parameter's own memory (its local shard's, for FSDP2) as an array
    (no copy; check_param first)."""
    shard = fsdp_shard(p)
    return _array((shard[0] if shard is not None else p).detach())


def dtype_of(p):
    """p's mlorc_dtype (check_param first)."""
    return DTYPES[p.dtype]


def state_tensor_ok(t):
    return (isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.device.type == "cpu"
            and t.layout == torch.strided and t.dim() == 1 and t.is_contiguous())


def layout_of(p):
    """(rows, cols) of `p` as libmlorc sees it."""
    return matrix_shape(p.shape)
