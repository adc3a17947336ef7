"""The NumPy front with half-precision parameters: float16 arrays,
ml_dtypes.bfloat16 arrays, and bfloat16 bits as uint16 with the dtype said."""
import numpy as np
import pytest

import mlorc

ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes (requirements.txt)")


def bf16_bits(x):
    """float32 -> bfloat16 bits, rounded to nearest even (ml_dtypes' cast)."""
    return np.asarray(x, dtype=np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)


def steps(opt, param, grads, state, dtype=None):
    for g in grads:
        opt.step([(param, g, state) + ((dtype,) if dtype else ())], lr=1e-2)


def problem(seed=0, shape=(24, 20), count=4):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    return w, [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]


def test_ml_dtypes_bfloat16_and_uint16_bits_step_identically():
    w, grads = problem()
    opt = mlorc.Optimizer("adamw", rank=2)
    a = w.astype(ml_dtypes.bfloat16)
    bits = a.view(np.uint16).copy()
    sa = opt.init_state(a.shape, 7, dtype="bf16")
    sb = opt.init_state(bits.shape, 7, dtype="bf16")
    address = a.ctypes.data
    steps(opt, a, [g.astype(ml_dtypes.bfloat16) for g in grads], sa)
    steps(opt, bits, [bf16_bits(g) for g in grads], sb, "bf16")
    assert a.ctypes.data == address  # in place
    assert np.array_equal(a.view(np.uint16), bits) and np.array_equal(sa, sb)
    assert mlorc.inspect_state(sa)["dtype"] == "bf16"
    assert not np.array_equal(a, w.astype(ml_dtypes.bfloat16))  # it moved


def test_float16_with_float32_gradients_and_master_weights():
    """fp32 gradients of an f16 parameter (MLORC_DTYPE_GRAD_F32); with master
    weights the master follows the fp32 run bit for bit."""
    w, grads = problem(1)
    opt = mlorc.Optimizer("adamw", rank=2, master_weights=1)
    h = w.astype(np.float16)
    state = opt.init_state(h.shape, 3, storage="dense", param=h)
    reference = h.astype(np.float32)  # the master starts as the f16 values, widened
    ref_opt = mlorc.Optimizer("adamw", rank=2)
    ref_state = ref_opt.init_state(h.shape, 3, storage="dense")
    steps(opt, h, grads, state)
    steps(ref_opt, reference, grads, ref_state)
    info = mlorc.inspect_state(state)
    assert info["dtype"] == "f16" and info["master_weights"]
    master = state[info["state_bytes"] - 4 * h.size:info["state_bytes"]].view(np.float32).reshape(h.shape)
    assert np.array_equal(master, reference)
    assert np.array_equal(h, reference.astype(np.float16))


def test_half_refusals_name_the_problem_and_change_nothing():
    w, grads = problem(2)
    opt = mlorc.Optimizer("lion", rank=2)
    bits = bf16_bits(w)
    state = opt.init_state(bits.shape, 1, dtype="bf16")
    before, state_before = bits.copy(), state.copy()
    with pytest.raises(TypeError, match="say what its bits are"):
        opt.step([(bits, bf16_bits(grads[0]), state)], lr=1e-2)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        opt.step([(w.astype(np.float64), grads[0], state)], lr=1e-2)
    with pytest.raises(TypeError, match="takes a bf16 or float32 gradient"):
        opt.step([(bits, grads[0].astype(np.float16), state, "bf16")], lr=1e-2)
    with pytest.raises(mlorc.MlorcError, match="state"):  # a bf16 state stepped as f16
        opt.step([(bits, bits.copy(), state, "f16")], lr=1e-2)
    inf = bf16_bits(grads[0])
    inf[0, 0] = 0x7F80  # bfloat16 +infinity
    with pytest.raises(mlorc.MlorcError, match="NaN or infinity"):
        opt.step([(bits, inf, state, "bf16")], lr=1e-2)
    assert np.array_equal(bits, before) and np.array_equal(state, state_before)
    with pytest.raises(ValueError, match="unknown dtype"):
        opt.init_state(w.shape, 1, dtype="fp8")
