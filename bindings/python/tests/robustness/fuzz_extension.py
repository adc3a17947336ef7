"""atheris fuzz target: the argument handling of the CPython extension
mlorc._mlorc (handles, hyperparameters, state sizing and init, inspection,
batched steps) fed shapes, dtypes, strides, buffer kinds, state bytes,
hyperparameters, learning rates and batches derived from the fuzzer's input.

    python bindings/python/tests/robustness/fuzz_extension.py -max_total_time=45 [corpus_dir]

(libFuzzer flags; bindings/python/tests/robustness/run.sh runs it.) A crash
is what libFuzzer reports: a signal (segfault, abort, ASan report when run
with an instrumented extension) or an exception escaping TestOneInput. The
target raises on:
- an exception other than the refusals the extension documents (TypeError,
  ValueError, BufferError, OverflowError, MlorcError);
- a refused call that changed a parameter, state, group state or setting
  (all or nothing);
- a successful step after which a state no longer passes state_inspect, or
  does not count one more step.
MLORC_FUZZ_EXTENSION=path/to/_mlorc*.so fuzzes that build of the extension
(e.g. one compiled with coverage and ASan) instead of the installed one.
"""
import array
import importlib.machinery
import importlib.util
import os
import sys

import warnings

import atheris
import numpy as np

warnings.simplefilter("ignore")  # numpy's casts of huge / complex values are intended here
np.seterr(all="ignore")


def load_extension():
    path = os.environ.get("MLORC_FUZZ_EXTENSION")
    if not path:
        from mlorc import _mlorc
        return _mlorc
    loader = importlib.machinery.ExtensionFileLoader("mlorc._mlorc", path)
    spec = importlib.util.spec_from_file_location("mlorc._mlorc", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


ext = load_extension()
REFUSALS = (TypeError, ValueError, BufferError, OverflowError, ext.MlorcError)
RULES = [ext.RULE_ADAMW, ext.RULE_LION, ext.RULE_ADOPT, ext.RULE_GALORE_ADAMW, ext.RULE_CAME,
         ext.RULE_PRODIGY, ext.RULE_DADAPT_LION, ext.RULE_MOFASGD]
GROUP_RULES = {ext.RULE_PRODIGY, ext.RULE_DADAPT_LION}
STORAGES = [ext.STORAGE_AUTO, ext.STORAGE_DENSE, ext.STORAGE_LOWRANK]
SPECIAL_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-8, 1e-3, 0.9, 0.999, 1 - 1e-9, 1.0 + 1e-12, 2.0, 4.0, 17.0,
                  65536.0, 65537.0, 1e30, 3e38, 1e308, float("inf"), float("-inf"), float("nan"),
                  5e-324, 2.0 ** 53, 2.0 ** 63, -2.0 ** 63]
SPECIAL_INTS = [0, 1, 2, 3, 4, 8, 16, -1, 2 ** 31 - 1, 2 ** 31, 2 ** 59, 2 ** 62, 2 ** 63 - 1, -2 ** 63]
DTYPES = [np.float32] * 6 + [np.float64, np.float16, np.uint8, np.int32, np.int8, np.complex64]


def rarely(fdp, p=0.08):
    """True with probability about p: each perturbation is rare, so that most
    inputs are valid calls with one thing wrong (or none), and an exhausted
    input gives a valid call."""
    return fdp.ConsumeProbability() > 1 - p


def a_float(fdp):
    if fdp.ConsumeBool():
        return fdp.PickValueInList(SPECIAL_FLOATS)
    return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloatInRange(-4.0, 4.0)


def a_dim(fdp):
    """A declared rows/cols: mostly small, sometimes anything a C long long holds."""
    if rarely(fdp, 0.03):
        return fdp.PickValueInList(SPECIAL_INTS)
    return fdp.ConsumeIntInRange(1, 9)


def values(fdp, n):
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        out[i] = a_float(fdp) if fdp.ConsumeProbability() < 0.05 else fdp.ConsumeFloatInRange(-2.0, 2.0)
    return out


def a_buffer(fdp, n, writable_hint=True):
    """An object standing for n float32 values: usually a fitting array, or
    one of another dtype, size, layout, mutability or buffer kind."""
    kind = fdp.ConsumeIntInRange(8, 15) if rarely(fdp) else 0
    size = fdp.ConsumeIntInRange(0, 2 * n + 2) if rarely(fdp, 0.05) else n
    dtype = np.float32 if kind < 8 else fdp.PickValueInList(DTYPES)
    base = values(fdp, size)
    if dtype == np.complex64:
        a = base.astype(np.complex64)
    elif np.issubdtype(dtype, np.integer):
        a = np.clip(np.nan_to_num(base), -100, 100).astype(dtype)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            a = base.astype(dtype)
    if kind == 8 and size > 1:
        return a[::-1]                              # negative stride
    if kind == 9:
        wide = np.zeros(2 * size, dtype=a.dtype)    # every other element
        wide[::2] = a
        return wide[::2]
    if kind == 10 and size >= 4 and size % 2 == 0:
        return a.reshape(2, size // 2).T            # transposed
    if kind == 11:
        a.flags.writeable = False
        return a
    if kind == 12:
        return array.array("f", a.astype(np.float32).tobytes())
    if kind == 13:
        return bytes(a.astype(np.float32).tobytes()) if not writable_hint else bytearray(a.astype(np.float32))
    if kind == 14:
        return fdp.PickValueInList([None, 3, "param", [1.0] * size, object()])
    if kind == 15:
        return memoryview(bytearray(a.astype(np.float32).tobytes())).cast("B")
    return a


def a_handle(fdp):
    rule = fdp.ConsumeIntInRange(-3, 12) if rarely(fdp, 0.02) else fdp.PickValueInList(RULES)
    try:
        handle = ext.Handle(rule)
    except REFUSALS:
        return None
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        set_param(fdp, handle)
    return handle


def set_param(fdp, handle):
    key = fdp.ConsumeIntInRange(-1, 30)
    value = a_float(fdp) if rarely(fdp, 0.5) else fdp.ConsumeFloatInRange(0.0, 1.0)
    try:
        before = handle.get_param(key)
    except REFUSALS:
        before = None
    try:
        handle.set_param(key, value)
    except REFUSALS:
        if before is not None:
            after = handle.get_param(key)
            if not (after == before or (after != after and before != before)):
                raise AssertionError(f"refused set_param({key}, {value!r}) changed it: {before} -> {after}")


def a_state(fdp, handle, rows, cols):
    """State bytes: a fresh state of this or another shape/storage, maybe
    mutated, truncated or extended; or random bytes."""
    choice = fdp.ConsumeIntInRange(1, 3) if rarely(fdp) else 0
    if choice == 3:
        return bytearray(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600)))
    r, c = (rows, cols) if choice == 0 else (fdp.ConsumeIntInRange(1, 9), fdp.ConsumeIntInRange(1, 9))
    storage = fdp.PickValueInList(STORAGES)
    try:
        size = handle.state_size(r, c, storage)
    except REFUSALS:
        return bytearray(fdp.ConsumeBytes(64))
    if size > 1 << 20:
        return bytearray(64)
    state = np.zeros(size, dtype=np.uint8)
    try:
        handle.state_init(state, r, c, fdp.ConsumeIntInRange(0, 3), storage)
    except REFUSALS:
        return state
    for _ in range(fdp.ConsumeIntInRange(1, 3) if rarely(fdp) else 0):
        if size:
            state[fdp.ConsumeIntInRange(0, size - 1)] ^= 1 << fdp.ConsumeIntInRange(0, 7)
    shape = fdp.ConsumeIntInRange(0, 4) if rarely(fdp) else 5
    if shape == 0 and size:
        return state[: fdp.ConsumeIntInRange(0, size - 1)]
    if shape == 1:
        return np.concatenate([state, np.zeros(fdp.ConsumeIntInRange(1, 64), dtype=np.uint8)])
    if shape == 2:
        return bytes(state)                         # read-only
    if shape == 3:
        return bytearray(state)
    if shape == 4:
        return state.view(np.int8)                  # signed bytes: another format
    return state


def snapshot(objects):
    """Copies of the writable memory of `objects`, to compare after a refusal."""
    out = []
    for obj in objects:
        if isinstance(obj, np.ndarray):
            out.append((obj, obj.copy()))
        elif isinstance(obj, (bytearray, array.array)):
            out.append((obj, bytes(obj)))
        elif isinstance(obj, memoryview):
            out.append((obj, obj.tobytes()))
    return out


def unchanged(saved):
    for obj, copy in saved:
        if isinstance(obj, np.ndarray):
            if obj.tobytes() != copy.tobytes():
                return False
        elif isinstance(obj, memoryview):
            if obj.tobytes() != copy:
                return False
        elif bytes(obj) != copy:
            return False
    return True


def a_step(fdp, handle):
    items, written, states = [], [], []
    for i in range(fdp.ConsumeIntInRange(0, 4)):
        rows, cols = a_dim(fdp), a_dim(fdp)
        n = rows * cols if 0 < rows * cols <= 81 else fdp.ConsumeIntInRange(0, 16)
        param = a_buffer(fdp, n)
        alias = fdp.ConsumeIntInRange(0, 5) if rarely(fdp) else 6
        grad = param if alias == 0 else a_buffer(fdp, n, writable_hint=False)
        state = a_state(fdp, handle, rows, cols)
        if alias == 1 and items:
            state = items[-1][2]                     # two tensors, one state
        if alias == 2 and items:
            param = items[-1][0]                     # two tensors, one parameter
        item = (param, grad, state, rows, cols)
        if alias == 3:
            item = list(item)
        elif alias == 4:
            item = item[:4]
        elif alias == 5:
            item = (param, grad, state, float(rows), cols)
        items.append(item)
        written += [param, state]
        states.append(state)
    group = None
    choice = fdp.ConsumeIntInRange(0, 3) if rarely(fdp) else 1
    # choice 0: no group state, 1: the rule's own (a valid one for the
    # D-adaptation rules, none for the others), 2: a valid one whatever the
    # rule, 3, 4: a corrupted one, 5: random bytes
    if choice == 2 or choice == 1 and handle.rule in GROUP_RULES or choice == 3:
        group = np.zeros(ext.GROUP_STATE_BYTES, dtype=np.uint8)
        try:
            handle.group_state_init(group)
        except REFUSALS:
            pass
        if choice == 3:
            if fdp.ConsumeBool():
                group[fdp.ConsumeIntInRange(0, ext.GROUP_STATE_BYTES - 1)] ^= 1 << fdp.ConsumeIntInRange(0, 7)
            else:
                group = bytearray(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200)))
    written.append(group)
    lr = a_float(fdp) if rarely(fdp) else fdp.ConsumeFloatInRange(0.0, 0.1)
    before = []
    for s in states:
        try:
            before.append(ext.state_inspect(s)["step"])
        except REFUSALS:
            before.append(None)
    saved = snapshot(written)
    try:
        handle.step(items, lr) if group is None and fdp.ConsumeBool() else handle.step(items, lr, group)
    except REFUSALS as e:
        if not unchanged(saved):
            raise AssertionError(f"refused step changed its arguments: {e!r}")
        return
    for i, s in enumerate(states):
        info = ext.state_inspect(s)  # a refusal here escapes: a stepped state must stay valid
        if before[i] is not None and info["step"] != before[i] + 1:
            raise AssertionError(f"tensor {i}: state step {before[i]} -> {info['step']} after one step")


def TestOneInput(data):
    fdp = atheris.FuzzedDataProvider(data)
    handle = a_handle(fdp)
    if handle is None:
        return
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        op = fdp.ConsumeIntInRange(0, 9)
        try:
            if op == 0:
                set_param(fdp, handle)
            elif op == 1:
                handle.state_size(a_dim(fdp), a_dim(fdp), fdp.ConsumeIntInRange(-1, 3), fdp.ConsumeIntInRange(-1, 1))
            elif op == 2:
                ext.state_inspect(a_state(fdp, handle, a_dim(fdp), a_dim(fdp)))
            elif op == 3:
                ext.group_state_inspect(bytearray(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))))
            elif op == 4:
                ext.param_bounds(fdp.ConsumeIntInRange(-1, 10), fdp.ConsumeIntInRange(-1, 30))
            elif op == 5:
                ext.status_string(fdp.ConsumeIntInRange(-2 ** 31, 2 ** 31 - 1))
                handle.last_error()
                handle.scratch_bytes()
            elif op == 6:
                rows, cols = a_dim(fdp), a_dim(fdp)
                buffer = bytearray(fdp.ConsumeIntInRange(0, 2048))
                saved = bytes(buffer)
                try:
                    handle.state_init(buffer, rows, cols, fdp.PickValueInList(SPECIAL_INTS),
                                      fdp.ConsumeIntInRange(-1, 3), fdp.ConsumeIntInRange(-1, 1))
                except REFUSALS:
                    if bytes(buffer) != saved:
                        raise AssertionError("refused state_init wrote into the buffer")
            else:
                a_step(fdp, handle)
        except REFUSALS:
            pass


def main():
    atheris.instrument_func(TestOneInput)
    for f in (a_step, a_state, a_buffer, a_handle, set_param):
        atheris.instrument_func(f)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
