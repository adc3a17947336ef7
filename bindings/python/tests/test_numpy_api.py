"""mlorc.Optimizer: float32 numpy arrays updated in place, never copied."""
import numpy as np
import pytest

import mlorc


def reference_adamw(w, g, m, v, t, lr, beta1, beta2, eps, wd):
    """Dense AdamW (torch.optim.AdamW conventions), in float64."""
    m[:] = beta1 * m + (1 - beta1) * g
    v[:] = beta2 * v + (1 - beta2) * g * g
    w *= 1 - lr * wd
    denom = np.sqrt(v) / np.sqrt(1 - beta2 ** t) + eps
    w -= lr / (1 - beta1 ** t) * m / denom


def test_dense_adamw_follows_reference():
    rng = np.random.default_rng(0)
    opt = mlorc.Optimizer("adamw", betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    state = opt.init_state(w.shape, tensor_id=0, storage="dense")
    w64, m, v = w.astype(np.float64), np.zeros((5, 7)), np.zeros((5, 7))
    for t in range(1, 31):
        g = rng.standard_normal((5, 7)).astype(np.float32)
        opt.step([(w, g, state)], lr=1e-2)
        reference_adamw(w64, g.astype(np.float64), m, v, t, 1e-2, 0.9, 0.99, 1e-8, 0.1)
    # float32 arithmetic against float64: a few ulps per step, 30 steps.
    np.testing.assert_allclose(w, w64, rtol=0, atol=2e-5)
    assert mlorc.inspect_state(state)["step"] == 30


def test_step_updates_in_place_without_copy():
    opt = mlorc.Optimizer("lion", rank=2)
    w = np.ones((8, 8), dtype=np.float32)
    g = np.full((8, 8), 0.5, dtype=np.float32)
    state = opt.init_state(w.shape, 3, storage="lowrank")
    address, state_address = w.ctypes.data, state.ctypes.data
    opt.step([(w, g, state)], lr=0.1)
    assert w.ctypes.data == address and state.ctypes.data == state_address
    # Lion, first step: m = 0, so the direction is sign(g) = +1.
    np.testing.assert_allclose(w, (1 - 0.1 * 0.05) - 0.1, rtol=1e-6)
    info = mlorc.inspect_state(state)
    assert (info["rule"], info["storage"], info["rank"], info["tensor_id"]) == ("lion", "lowrank", 2, 3)


def test_state_sizes_and_storage_policy():
    opt = mlorc.Optimizer("adamw", rank=4)
    assert opt.state_size((64, 32), "lowrank") == 128 + 4 * 2 * 4 * (64 + 32 + 1)
    assert opt.state_size((64, 32), "dense") == 128 + 4 * 2 * 64 * 32
    assert opt.state_size((64, 32)) == opt.state_size((64, 32), "lowrank")  # auto: 32 >= 16
    assert opt.state_size((64, 8)) == opt.state_size((64, 8), "dense")      # auto: 8 < 16
    assert opt.state_size((100,)) == 128 + 4 * 2 * 100                      # vectors dense


def test_higher_dimensional_tensor_is_flattened():
    opt = mlorc.Optimizer("adamw", rank=2)
    w = np.zeros((4, 3, 5), dtype=np.float32)
    state = opt.init_state(w.shape, 0, storage="lowrank")
    info = mlorc.inspect_state(state)
    assert (info["rows"], info["cols"]) == (4, 15)
    opt.step([(w, np.ones_like(w), state)], lr=1e-3)
    assert (w < 0).all()


def _arrays(storage="auto"):
    opt = mlorc.Optimizer("adamw")
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    g = np.ones((3, 4), dtype=np.float32)
    return opt, w, g, opt.init_state(w.shape, 0, storage=storage)


@pytest.mark.parametrize("case, error", [
    ("float64 param", TypeError), ("float64 grad", TypeError), ("list param", TypeError),
    ("non-contiguous param", ValueError), ("non-contiguous grad", ValueError),
    ("read-only param", ValueError), ("read-only state", ValueError),
    ("int8 state", TypeError), ("grad shape", ValueError),
])
def test_refused_arrays_leave_everything_unchanged(case, error):
    opt, w, g, state = _arrays()
    p, gg, s = w, g, state
    if case == "float64 param":
        p = w.astype(np.float64)
    elif case == "float64 grad":
        gg = g.astype(np.float64)
    elif case == "list param":
        p = w.tolist()
    elif case == "non-contiguous param":
        p = np.zeros((3, 8), np.float32)[:, ::2]
    elif case == "non-contiguous grad":
        gg = np.ones((3, 8), np.float32)[:, ::2]
    elif case == "read-only param":
        w.flags.writeable = False
    elif case == "read-only state":
        state.flags.writeable = False
    elif case == "int8 state":
        s = state.view(np.int8)
    elif case == "grad shape":
        gg = np.ones((4, 3), np.float32)
    w_before, state_before = w.copy(), state.copy()
    with pytest.raises(error):
        opt.step([(p, gg, s)], lr=0.1)
    np.testing.assert_array_equal(w, w_before)
    np.testing.assert_array_equal(state, state_before)


@pytest.mark.parametrize("case, status", [
    ("corrupted header", mlorc._mlorc.ERROR_STATE_CORRUPTED),
    ("corrupted factors", mlorc._mlorc.ERROR_STATE_CORRUPTED),
    ("other rule", mlorc._mlorc.ERROR_STATE_MISMATCH),
    ("other shape", mlorc._mlorc.ERROR_STATE_MISMATCH),
    ("non-finite gradient", mlorc._mlorc.ERROR_NON_FINITE),
])
def test_library_refusals_raise_mlorc_error_and_change_nothing(case, status):
    opt = mlorc.Optimizer("adamw", rank=2)
    w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    g = np.ones((8, 8), np.float32)
    state = opt.init_state(w.shape, 0, storage="lowrank")
    opt.step([(w, g, state)], lr=0.1)  # non-trivial factors
    if case == "corrupted header":
        state[40] ^= 1
    elif case == "corrupted factors":
        state[200] ^= 1
    elif case == "other rule":
        state = mlorc.Optimizer("lion", rank=2).init_state(w.shape, 0, storage="lowrank")
    elif case == "other shape":
        w, g = w.reshape(4, 16), g.reshape(4, 16)
    else:
        g[3, 3] = np.nan
    w_before, state_before = w.copy(), state.copy()
    with pytest.raises(mlorc.MlorcError) as info:
        opt.step([(w, g, state)], lr=0.1)
    assert info.value.status == status
    np.testing.assert_array_equal(w, w_before)
    np.testing.assert_array_equal(state, state_before)


def test_failing_tensor_leaves_whole_batch_unchanged():
    opt = mlorc.Optimizer("adamw")
    ws = [np.ones((4, 4), np.float32) for _ in range(3)]
    gs = [np.ones((4, 4), np.float32) for _ in range(3)]
    states = [opt.init_state((4, 4), i) for i in range(3)]
    gs[2][0, 0] = np.inf
    with pytest.raises(mlorc.MlorcError, match="tensor 2"):
        opt.step(list(zip(ws, gs, states)), lr=0.1)
    assert all((w == 1).all() for w in ws)
    assert all(mlorc.inspect_state(s)["step"] == 0 for s in states)


def test_batched_step_equals_single_steps_and_threads_do_not_matter():
    rng = np.random.default_rng(1)
    shapes = [(320, 256), (256,), (256, 320)]  # large enough for 2 threads to split
    runs = []
    for mode in ("batched", "single", "threads"):
        opt = mlorc.Optimizer("adamw", rank=3, seed=7, threads=2 if mode == "threads" else 1)
        rng = np.random.default_rng(1)
        ws = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        states = [opt.init_state(s, i) for i, s in enumerate(shapes)]
        for _ in range(5):
            gs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
            if mode == "single":
                for item in zip(ws, gs, states):
                    opt.step([item], lr=1e-2)
            else:
                opt.step(list(zip(ws, gs, states)), lr=1e-2)
        runs.append(ws + states)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_hyperparameters_set_get_and_bounds():
    opt = mlorc.Optimizer("adamw", rank=8, betas=(0.8, 0.95), bias_correction=False)
    assert opt.get("rank") == 8 and opt.get("beta1") == pytest.approx(0.8)
    assert opt.get("bias_correction") == 0 and opt.rule == "adamw"
    with pytest.raises(mlorc.MlorcError) as info:
        opt.set("rank", 0)
    assert info.value.status == mlorc._mlorc.ERROR_PARAM_OUT_OF_RANGE
    assert opt.get("rank") == 8
    with pytest.raises(mlorc.MlorcError):
        mlorc.Optimizer("lion", eps=1e-8)  # Lion has no eps
    with pytest.raises(TypeError):
        mlorc.Optimizer("adamw", momentum=0.9)
    with pytest.raises(ValueError):
        mlorc.Optimizer("sgd")


def test_scratch_bytes_grow_with_low_rank_steps():
    opt = mlorc.Optimizer("adamw", rank=4)
    w = np.zeros((64, 64), np.float32)
    state = opt.init_state(w.shape, 0)
    opt.step([(w, np.ones_like(w), state)], lr=1e-3)
    assert opt.scratch_bytes() > 0
