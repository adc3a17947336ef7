"""The NumPy front: float32 arrays updated in place, state as uint8 arrays.

    opt = mlorc.Optimizer("adamw", rank=4, weight_decay=0.01)
    state = opt.init_state(w.shape, tensor_id=0)
    opt.step([(w, g, state)], lr=1e-3)        # w and state change in place

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

    def init_state(self, shape, tensor_id, storage="auto"):
        """A fresh state (uint8 array) for a tensor of `shape`. Give every tensor
        its own `tensor_id`, and the same id again when resuming."""
        rows, cols = matrix_shape(shape)
        code = _native.storage_code(storage)
        state = np.empty(self._handle.state_size(rows, cols, code), dtype=np.uint8)
        self._handle.state_init(state, rows, cols, tensor_id, code)
        return state

    def init_group_state(self):
        """A fresh group state (uint8 array) for the D-adaptation rules
        ('prodigy', 'dadapt_lion'): pass it to every step of the group."""
        group = np.empty(_native.GROUP_STATE_BYTES, dtype=np.uint8)
        self._handle.group_state_init(group)
        return group

    def step(self, tensors, lr, group=None):
        """One step over [(param, grad, state), ...]: param (float32) and state
        (uint8) are updated in place, and so is `group`, the group state the
        D-adaptation rules require (init_group_state). All-or-nothing: on any
        error nothing changes."""
        batch = []
        for i, item in enumerate(tensors):
            param, grad, state = item
            _check_array(param, f"tensor {i} param", np.float32, True)
            _check_array(grad, f"tensor {i} grad", np.float32, False)
            _check_array(state, f"tensor {i} state", np.uint8, True)
            if grad.shape != param.shape:
                raise ValueError(f"tensor {i}: grad shape {grad.shape} differs from param shape {param.shape}")
            batch.append((param, grad, state) + matrix_shape(param.shape))
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
