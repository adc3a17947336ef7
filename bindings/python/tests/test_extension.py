"""The C extension itself: version check, errors, buffer handling, GIL."""
import array
import threading

import numpy as np
import pytest

import mlorc
from mlorc import _mlorc


def test_header_and_library_versions_match():
    assert _mlorc.HEADER_VERSION == _mlorc.version_number()
    major, minor, patch = (int(x) for x in _mlorc.version_string().split("."))
    assert major * 10000 + minor * 100 + patch == _mlorc.version_number()
    assert mlorc.__version__ == _mlorc.version_string()


def test_mlorc_error_carries_status_and_library_message():
    handle = _mlorc.Handle(_mlorc.RULE_ADAMW)
    with pytest.raises(mlorc.MlorcError) as info:
        handle.set_param(_mlorc.PARAM_BETA1, 1.5)
    assert info.value.status == _mlorc.ERROR_PARAM_OUT_OF_RANGE
    assert "beta1" in info.value.message
    assert info.value.message in str(info.value)
    assert handle.get_param(_mlorc.PARAM_BETA1) == pytest.approx(0.9)  # unchanged
    assert issubclass(mlorc.MlorcError, RuntimeError)


def test_unknown_rule_and_param_bounds():
    with pytest.raises(mlorc.MlorcError) as info:
        _mlorc.Handle(99)
    assert info.value.status == _mlorc.ERROR_INVALID_ARGUMENT
    assert _mlorc.param_bounds(_mlorc.RULE_ADAMW, _mlorc.PARAM_RANK) == (1.0, 65536.0)
    with pytest.raises(mlorc.MlorcError):
        _mlorc.param_bounds(_mlorc.RULE_LION, _mlorc.PARAM_EPS)  # Lion has no eps


def _tensor(rows=4, cols=6, seed=0):
    """A param and grad as array.array (any buffer exporter works), and a state
    as bytearray: both refuse to resize while a buffer is exported, which lets
    the tests see that every buffer was released."""
    rng = np.random.default_rng(seed)
    param = array.array("f", rng.standard_normal(rows * cols).astype(np.float32).tobytes())
    grad = array.array("f", rng.standard_normal(rows * cols).astype(np.float32).tobytes())
    handle = _mlorc.Handle(_mlorc.RULE_ADAMW)
    state = bytearray(handle.state_size(rows, cols))
    handle.state_init(state, rows, cols, 0)
    return handle, param, grad, state


def _assert_released(*buffers):
    for b in buffers:  # resizing raises BufferError while an export is held
        b.append(b[-1])
        b.pop()


def test_step_with_plain_buffers_and_release():
    handle, param, grad, state = _tensor()
    before = param.tolist()
    handle.step([(param, grad, state, 4, 6)], 1e-2)
    assert param.tolist() != before
    assert _mlorc.state_inspect(state)["step"] == 1
    _assert_released(param, grad, state)


@pytest.mark.parametrize("case", ["wrong shape", "float64 grad", "read-only state",
                                  "int8 state", "not a tuple", "corrupted state"])
def test_refused_steps_change_nothing_and_release_buffers(case):
    handle, param, grad, state = _tensor()
    item = [param, grad, state, 4, 6]
    expected = TypeError
    if case == "wrong shape":
        item[3:] = [4, 5]
        expected = ValueError
    elif case == "float64 grad":
        item[1] = array.array("d", [0.0] * 24)
    elif case == "read-only state":
        item[2] = bytes(state)
        expected = BufferError
    elif case == "int8 state":
        item[2] = memoryview(state).cast("b")
    elif case == "corrupted state":
        state[30] ^= 0xFF
        expected = mlorc.MlorcError
    item = tuple(item) if case != "not a tuple" else item
    params_before, state_before = param.tolist(), bytes(state)
    with pytest.raises(expected) as info:
        handle.step([item], 1e-2)
    if case == "corrupted state":
        assert info.value.status == _mlorc.ERROR_STATE_CORRUPTED
    assert param.tolist() == params_before and bytes(state) == state_before
    if isinstance(item[2], memoryview):
        item[2].release()
    _assert_released(param, grad, state)


def test_second_tensor_failing_releases_first_tensors_buffers():
    handle, param, grad, state = _tensor()
    bad = np.zeros((4, 6), dtype=np.float32)[:, ::2]  # not C-contiguous
    with pytest.raises(ValueError, match="tensor 1 param"):
        handle.step([(param, grad, state, 4, 6), (bad, grad, state, 4, 3)], 1e-2)
    _assert_released(param, grad, state)


def test_state_init_refuses_bad_tensor_id_and_small_buffer():
    handle = _mlorc.Handle(_mlorc.RULE_LION)
    state = bytearray(handle.state_size(3, 5))
    with pytest.raises(OverflowError):
        handle.state_init(state, 3, 5, -1)
    with pytest.raises(mlorc.MlorcError) as info:
        handle.state_init(state[:-1], 3, 5, 0)
    assert info.value.status == _mlorc.ERROR_STATE_TOO_SMALL


def test_gil_is_released_during_step_and_handle_guarded():
    """While one thread steps, another runs Python: it observes the handle busy
    (it could not, were the GIL held for the whole native call)."""
    rows, cols = 2048, 2048
    handle = _mlorc.Handle(_mlorc.RULE_ADAMW)
    param = np.zeros((rows, cols), dtype=np.float32)
    grad = np.ones((rows, cols), dtype=np.float32)
    state = np.empty(handle.state_size(rows, cols, _mlorc.STORAGE_DENSE), dtype=np.uint8)
    handle.state_init(state, rows, cols, 0, _mlorc.STORAGE_DENSE)
    done = threading.Event()

    def work():
        for _ in range(20):
            handle.step([(param, grad, state, rows, cols)], 1e-3)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    busy = 0
    while not done.is_set():
        try:
            handle.scratch_bytes()
        except RuntimeError as e:
            assert "another thread" in str(e)
            busy += 1
    worker.join()
    assert busy > 0
    assert _mlorc.state_inspect(state)["step"] == 20
