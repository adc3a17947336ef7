"""The compiled extension and the name <-> code tables of mlorc.h.

Importing mlorc._mlorc raises ImportError when the loaded libmlorc.so is not
the version the extension was compiled against (checked in its init).
"""
import functools

from . import _mlorc
from ._mlorc import Handle, MlorcError  # noqa: F401  (re-exported)

RULES = {"adamw": _mlorc.RULE_ADAMW, "lion": _mlorc.RULE_LION, "adopt": _mlorc.RULE_ADOPT,
         "galore_adamw": _mlorc.RULE_GALORE_ADAMW, "came": _mlorc.RULE_CAME, "prodigy": _mlorc.RULE_PRODIGY,
         "dadapt_lion": _mlorc.RULE_DADAPT_LION, "mofasgd": _mlorc.RULE_MOFASGD}
RULE_NAMES = {code: name for name, code in RULES.items()}

GROUP_STATE_BYTES = _mlorc.GROUP_STATE_BYTES

STORAGES = {
    "auto": _mlorc.STORAGE_AUTO,
    "dense": _mlorc.STORAGE_DENSE,
    "lowrank": _mlorc.STORAGE_LOWRANK,
}
STORAGE_NAMES = {code: name for name, code in STORAGES.items()}

# Element types of parameters and gradients (mlorc_dtype) by name.
DTYPES = {"f32": _mlorc.DTYPE_F32, "bf16": _mlorc.DTYPE_BF16, "f16": _mlorc.DTYPE_F16}
DTYPE_NAMES = {code: name for name, code in DTYPES.items()}
# mlorc_tensor.dtype: a half-precision parameter's gradient is fp32.
DTYPE_GRAD_F32 = _mlorc.DTYPE_GRAD_F32
# mlorc_state_info.dtype: the state keeps fp32 master weights.
STATE_MASTER_WEIGHTS = _mlorc.STATE_MASTER_WEIGHTS

# mlorc_status codes by name, for code that branches on MlorcError.status.
STATUSES = {
    "ok": _mlorc.OK,
    "null_pointer": _mlorc.ERROR_NULL_POINTER,
    "invalid_argument": _mlorc.ERROR_INVALID_ARGUMENT,
    "invalid_shape": _mlorc.ERROR_INVALID_SHAPE,
    "invalid_rank": _mlorc.ERROR_INVALID_RANK,
    "param_out_of_range": _mlorc.ERROR_PARAM_OUT_OF_RANGE,
    "unknown_param": _mlorc.ERROR_UNKNOWN_PARAM,
    "state_too_small": _mlorc.ERROR_STATE_TOO_SMALL,
    "state_corrupted": _mlorc.ERROR_STATE_CORRUPTED,
    "state_version": _mlorc.ERROR_STATE_VERSION,
    "state_mismatch": _mlorc.ERROR_STATE_MISMATCH,
    "non_finite": _mlorc.ERROR_NON_FINITE,
    "out_of_memory": _mlorc.ERROR_OUT_OF_MEMORY,
    "linalg": _mlorc.ERROR_LINALG,
    "unsupported_dtype": _mlorc.ERROR_UNSUPPORTED_DTYPE,
    "reduction": _mlorc.ERROR_REDUCTION,
}
STATUS_NAMES = {code: name for name, code in STATUSES.items()}

# Hyperparameter names as the Python fronts spell them.
PARAMS = {
    "beta1": _mlorc.PARAM_BETA1,
    "beta2": _mlorc.PARAM_BETA2,
    "eps": _mlorc.PARAM_EPS,
    "weight_decay": _mlorc.PARAM_WEIGHT_DECAY,
    "rank": _mlorc.PARAM_RANK,
    "oversampling": _mlorc.PARAM_OVERSAMPLING,
    "power_iterations": _mlorc.PARAM_POWER_ITERATIONS,
    "bias_correction": _mlorc.PARAM_BIAS_CORRECTION,
    "seed": _mlorc.PARAM_SEED,
    "threads": _mlorc.PARAM_THREADS,
    "adopt_clip": _mlorc.PARAM_ADOPT_CLIP,
    "grams": _mlorc.PARAM_GRAMS,
    "atan2": _mlorc.PARAM_ATAN2,
    "cautious": _mlorc.PARAM_CAUTIOUS,
    "orthograd": _mlorc.PARAM_ORTHOGRAD,
    "clip_norm": _mlorc.PARAM_CLIP_NORM,
    "galore_scale": _mlorc.PARAM_GALORE_SCALE,
    "galore_interval": _mlorc.PARAM_GALORE_INTERVAL,
    "beta3": _mlorc.PARAM_BETA3,
    "eps2": _mlorc.PARAM_EPS2,
    "came_clip": _mlorc.PARAM_CAME_CLIP,
    "d0": _mlorc.PARAM_D0,
    "d_coef": _mlorc.PARAM_D_COEF,
    "growth_rate": _mlorc.PARAM_GROWTH_RATE,
    "stats_stride": _mlorc.PARAM_STATS_STRIDE,
    "mofasgd_reciprocal": _mlorc.PARAM_MOFASGD_RECIPROCAL,
    "mofasgd_max_value": _mlorc.PARAM_MOFASGD_MAX_VALUE,
    "master_weights": _mlorc.PARAM_MASTER_WEIGHTS,
    "stochastic_rounding": _mlorc.PARAM_STOCHASTIC_ROUNDING,
    "state_dtype": _mlorc.PARAM_STATE_DTYPE,
}
INTEGER_PARAMS = {"rank", "oversampling", "power_iterations", "bias_correction", "seed", "threads",
                  "adopt_clip", "grams", "atan2", "cautious", "orthograd", "galore_interval", "stats_stride",
                  "mofasgd_reciprocal"}


def rule_code(rule):
    """Accepts a rule name of RULES ('adamw', 'lion', ..., any case) or an MLORC_RULE_* value."""
    if isinstance(rule, str):
        try:
            return RULES[rule.lower()]
        except KeyError:
            raise ValueError(f"unknown rule {rule!r}; expected one of {sorted(RULES)}") from None
    if rule in RULE_NAMES:
        return int(rule)
    raise ValueError(f"unknown rule {rule!r}; expected one of {sorted(RULES)}")


def storage_code(storage):
    """Accepts 'auto' / 'dense' / 'lowrank' or an MLORC_STORAGE_* value."""
    if isinstance(storage, str):
        try:
            return STORAGES[storage.lower().replace("_", "").replace("-", "")]
        except KeyError:
            raise ValueError(f"unknown storage {storage!r}; expected one of {sorted(STORAGES)}") from None
    if storage in STORAGE_NAMES:
        return int(storage)
    raise ValueError(f"unknown storage {storage!r}; expected one of {sorted(STORAGES)}")


def set_hyper(handle, name, value):
    """Sets one named hyperparameter; the library checks bounds (MlorcError)."""
    try:
        key = PARAMS[name]
    except KeyError:
        raise TypeError(f"unknown hyperparameter {name!r}; expected one of {sorted(PARAMS)}") from None
    try:
        handle.set_param(key, float(value))
    except MlorcError as e:
        if name in INTEGER_PARAMS and e.status == _mlorc.ERROR_PARAM_OUT_OF_RANGE and float(value).is_integer():
            # The library prints every value as a double ("rank = 0.0"): say it in integers.
            low, high = _mlorc.param_bounds(handle.rule, key)
            raise error(e.status, "mlorc_set_param",
                        f"{name} = {int(value)} is outside [{int(low)}, {int(high)}]") from None
        raise


def error(status, call, message):
    """An MlorcError as the extension raises them (.status, .message)."""
    e = MlorcError(f"{call}: {_mlorc.status_string(status)} (status {status}): {message}")
    e.status, e.message = status, message
    return e


def get_hyper(handle, name):
    value = handle.get_param(PARAMS[name])
    return int(value) if name in INTEGER_PARAMS else value


def inspect_group_state(group):
    """Validates a group state (D-adaptation rules; MlorcError if corrupted)
    and describes it: d, d0, d_max, numerator, step, rule (as a name)."""
    if hasattr(group, "detach") and hasattr(group, "numpy"):
        group = group.detach().numpy()
    info = _mlorc.group_state_inspect(group)
    info["rule"] = RULE_NAMES.get(info["rule"], info["rule"])
    return info


def inspect_state(state):
    """Validates a state (a byte buffer, numpy array or torch uint8 tensor;
    MlorcError if corrupted) and describes it, with rule and storage as names."""
    if hasattr(state, "detach") and hasattr(state, "numpy"):  # torch tensor: share its memory
        state = state.detach().numpy()
    info = _mlorc.state_inspect(state)
    info["rule"] = RULE_NAMES.get(info["rule"], info["rule"])
    info["storage"] = STORAGE_NAMES.get(info["storage"], info["storage"])
    dtype = info["dtype"]
    info["master_weights"] = bool(dtype & STATE_MASTER_WEIGHTS)
    info["state_dtype"] = "bf16" if dtype & _mlorc.STATE_BF16_MOMENTS else "f32"
    info["dtype"] = DTYPE_NAMES.get(dtype & 0xFF, dtype)
    return info


@functools.lru_cache(maxsize=None)
def supports_state_dtype(rule):
    """Whether `rule` can keep its moments in bf16 (MLORC_PARAM_STATE_DTYPE)."""
    try:
        _mlorc.param_bounds(rule_code(rule), PARAMS["state_dtype"])
    except MlorcError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def supports_half(rule):
    """Whether `rule` (a name or code) steps bf16/f16 parameters: it then
    knows the master-weights key."""
    try:
        _mlorc.param_bounds(rule_code(rule), PARAMS["master_weights"])
    except MlorcError:
        return False
    return True
