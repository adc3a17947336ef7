"""The NumPy front: arrays updated in place, state as uint8 arrays.

    opt = mlorc.Optimizer("adamw", rank=4, weight_decay=0.01)
    state = opt.init_state(w.shape, tensor_id=0)
    opt.step([(w, g, state)], lr=1e-3)        # w and state change in place

Parameters are float32, float16 or bfloat16; a gradient has its parameter's
dtype or float32. bfloat16 is ml_dtypes.bfloat16 (if installed), or the bits
as a uint16 array with the dtype said: init_state(..., dtype="bf16") and
step([(w_bits, g_bits, state, "bf16")]). AdamW, Lion and ADOPT step half
precision (master_weights=1 keeps an fp32 copy: init_state(..., param=w)).

Nothing is ever copied: an array that cannot be updated in place (wrong
dtype, not C-contiguous, read-only) is refused, since updating a copy would
silently lose the step.
"""
import numpy as np

from . import _native
from ._shapes import matrix_shape


def _check_array(array, role, dtype, writable):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{role} must be a numpy.ndarray, got {type(array).__name__}")
    if array.dtype != dtype:
        raise TypeError(f"{role} must have dtype {np.dtype(dtype).name}, got {array.dtype.name}"
                        " (convert it once, outside the training loop, and keep the converted array)")
    if not array.flags.c_contiguous:
        raise ValueError(f"{role} must be C-contiguous (np.ascontiguousarray it once and train that array)")
    if writable and not array.flags.writeable:
        raise ValueError(f"{role} is read-only; it is updated in place and must be writable")


_BY_NUMPY = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
_BITS = (np.dtype(np.uint16), np.dtype(np.int16))


def _element(array, role, said):
    """(a buffer of `array`'s memory, its dtype name 'f32' / 'f16' / 'bf16');
    `said` is the dtype the caller gave (needed for 16-bit integer arrays)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{role} must be a numpy.ndarray, got {type(array).__name__}")
    if said is not None and said not in _native.DTYPES:
        raise ValueError(f"{role}: unknown dtype {said!r}; expected one of {sorted(_native.DTYPES)}")
    if array.dtype in _BITS:
        if said not in ("bf16", "f16"):
            raise TypeError(f"{role} is a {array.dtype.name} array: say what its bits are "
                            "(dtype='bf16' or 'f16')")
        return array, said
    found = _BY_NUMPY.get(array.dtype.name)
    if found is None:
        raise TypeError(f"{role} must have dtype float32, float16 or bfloat16, got {array.dtype.name}"
                        " (convert it once, outside the training loop, and keep the converted array)")
    if said is not None and said != found:
        raise TypeError(f"{role} is {array.dtype.name}, but dtype={said!r} was given")
    return (array.view(np.uint16) if found == "bf16" else array), found


class Optimizer:
    """One libmlorc optimizer handle: a rule ('adamw', 'lion', 'adopt',
    'galore_adamw', 'came', 'prodigy', 'dadapt_lion', 'mofasgd') and its
    hyperparameters, by the names of mlorc._native.PARAMS (beta1, beta2 or
    betas, eps, weight_decay, rank, oversampling, power_iterations,
    bias_correction, seed, threads, and each rule's own, as mlorc.h lists).

    Rank and oversampling apply to states initialised after they are set; the
    others are read at every step.
    """

    def __init__(self, rule="adamw", **hyper):
        self._handle = _native.Handle(_native.rule_code(rule))
        betas = hyper.pop("betas", None)
        if betas is not None:
            hyper["beta1"], hyper["beta2"] = betas
        for name, value in hyper.items():
            self.set(name, value)

    @property
    def rule(self):
        return _native.RULE_NAMES[self._handle.rule]

    def set(self, name, value):
        """Sets a hyperparameter; out-of-range values raise MlorcError and change nothing."""
        _native.set_hyper(self._handle, name, value)

    def get(self, name):
        return _native.get_hyper(self._handle, name)

    def state_size(self, shape, storage="auto"):
        """Bytes of state a tensor of `shape` needs under the current rank."""
        rows, cols = matrix_shape(shape)
        return self._handle.state_size(rows, cols, _native.storage_code(storage))

    def init_state(self, shape, tensor_id, storage="auto", dtype=None, param=None):
        """A fresh state (uint8 array) for a tensor of `shape` and `dtype`
        ('f32' by default, or param's). Give every tensor its own `tensor_id`,
        and the same id again when resuming. `param` (the parameter, needed
        with master_weights=1 for a half-precision one) fills the fp32 master
        weights."""
        rows, cols = matrix_shape(shape)
        code = _native.storage_code(storage)
        buffer = None
        if param is not None:
            buffer, dtype = _element(param, "param", dtype)
            _check_array(param, "param", param.dtype, False)
            if param.size != rows * cols:
                raise ValueError(f"param has shape {param.shape}, but the state is for shape {tuple(shape)}")
        elif dtype is not None and dtype not in _native.DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_native.DTYPES)}")
        dtype_code = _native.DTYPES[dtype or "f32"]
        state = np.empty(self._handle.state_size(rows, cols, code, dtype_code), dtype=np.uint8)
        self._handle.state_init(state, rows, cols, tensor_id, code, dtype_code, buffer)
        return state

    def init_group_state(self):
        """A fresh group state (uint8 array) for the D-adaptation rules
        ('prodigy', 'dadapt_lion'): pass it to every step of the group."""
        group = np.empty(_native.GROUP_STATE_BYTES, dtype=np.uint8)
        self._handle.group_state_init(group)
        return group

    def step(self, tensors, lr, group=None):
        """One step over [(param, grad, state), ...] (or (param, grad, state,
        dtype) for bfloat16 or float16 given as uint16 bits): param and state
        (uint8) are updated in place, and so is `group`, the group state the
        D-adaptation rules require (init_group_state). All-or-nothing: on any
        error nothing changes."""
        batch = []
        for i, item in enumerate(tensors):
            if len(item) not in (3, 4):
                raise TypeError(f"tensor {i}: expected (param, grad, state) or (param, grad, state, dtype)")
            param, grad, state = item[:3]
            said = item[3] if len(item) == 4 else None
            param_buffer, dtype = _element(param, f"tensor {i} param", said)
            grad_buffer, grad_dtype = _element(grad, f"tensor {i} grad",
                                               said if said is not None and grad.dtype in _BITS else None)
            _check_array(param, f"tensor {i} param", param.dtype, True)
            _check_array(grad, f"tensor {i} grad", grad.dtype, False)
            _check_array(state, f"tensor {i} state", np.uint8, True)
            if grad.shape != param.shape:
                raise ValueError(f"tensor {i}: grad shape {grad.shape} differs from param shape {param.shape}")
            code = _native.DTYPES[dtype]
            if grad_dtype != dtype:
                if grad_dtype != "f32":
                    raise TypeError(f"tensor {i}: a {dtype} parameter takes a {dtype} or float32 gradient, "
                                    f"got {grad.dtype.name}")
                code |= _native.DTYPE_GRAD_F32
            batch.append((param_buffer, grad_buffer, state) + matrix_shape(param.shape) + (code,))
        if group is None:
            self._handle.step(batch, float(lr))
        else:
            _check_array(group, "group state", np.uint8, True)
            self._handle.step(batch, float(lr), group)

    def scratch_bytes(self):
        """Scratch memory the handle holds (grows with the largest step seen)."""
        return self._handle.scratch_bytes()

    @staticmethod
    def inspect_state(state):
        return _native.inspect_state(state)

    @staticmethod
    def inspect_group_state(group):
        return _native.inspect_group_state(group)
