/* The Handle type: one mlorc_optimizer (a rule, its hyperparameters and
 * scratch). Per-tensor state stays in caller-owned buffers. */
#include "ext.h"

int handle_check_idle(HandleObject *self) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this mlorc handle is running a call in another thread; "
                        "a handle is used by one thread at a time");
        return -1;
    }
    return 0;
}

static PyObject *Handle_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *keywords[] = {"rule", NULL};
    int rule;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i:Handle", keywords, &rule)) return NULL;
    mlorc_optimizer *opt = NULL;
    int status = mlorc_create(&opt, rule);
    if (status != MLORC_OK) return raise_status(status, NULL, "mlorc_create");
    HandleObject *self = (HandleObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        mlorc_free(opt);
        return NULL;
    }
    self->opt = opt;
    self->busy = 0;
    self->reducer = NULL;
    self->reducer_error = NULL;
    return (PyObject *)self;
}

static void Handle_dealloc(HandleObject *self) {
    mlorc_free(self->opt);
    Py_XDECREF(self->reducer);
    Py_XDECREF(self->reducer_error);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Handle_get_rule(HandleObject *self, void *closure) {
    (void)closure;
    if (handle_check_idle(self) < 0) return NULL;
    int rule = 0;
    int status = mlorc_get_rule(self->opt, &rule);
    if (status != MLORC_OK) return raise_status(status, self->opt, "mlorc_get_rule");
    return PyLong_FromLong(rule);
}

static PyObject *Handle_set_param(HandleObject *self, PyObject *args) {
    int key;
    double value;
    if (!PyArg_ParseTuple(args, "id:set_param", &key, &value)) return NULL;
    if (handle_check_idle(self) < 0) return NULL;
    int status = mlorc_set_param(self->opt, key, value);
    if (status != MLORC_OK) return raise_status(status, self->opt, "mlorc_set_param");
    Py_RETURN_NONE;
}

static PyObject *Handle_get_param(HandleObject *self, PyObject *args) {
    int key;
    if (!PyArg_ParseTuple(args, "i:get_param", &key)) return NULL;
    if (handle_check_idle(self) < 0) return NULL;
    double value = 0;
    int status = mlorc_get_param(self->opt, key, &value);
    if (status != MLORC_OK) return raise_status(status, self->opt, "mlorc_get_param");
    return PyFloat_FromDouble(value);
}

static PyObject *Handle_state_size(HandleObject *self, PyObject *args, PyObject *kwds) {
    static char *keywords[] = {"rows", "cols", "storage", "dtype", NULL};
    mlorc_tensor_layout layout = {0, 0, MLORC_DTYPE_F32, MLORC_STORAGE_AUTO};
    long long rows, cols;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LL|ii:state_size", keywords, &rows, &cols,
                                     &layout.storage, &layout.dtype))
        return NULL;
    if (handle_check_idle(self) < 0) return NULL;
    layout.rows = rows;
    layout.cols = cols;
    size_t bytes = 0;
    int status = mlorc_state_size(self->opt, &layout, &bytes);
    if (status != MLORC_OK) return raise_status(status, self->opt, "mlorc_state_size");
    return PyLong_FromSize_t(bytes);
}

static PyObject *Handle_state_init(HandleObject *self, PyObject *args, PyObject *kwds) {
    static char *keywords[] = {"state", "rows", "cols", "tensor_id", "storage", "dtype", "param", NULL};
    mlorc_tensor_layout layout = {0, 0, MLORC_DTYPE_F32, MLORC_STORAGE_AUTO};
    PyObject *state, *id_object, *param = Py_None;
    long long rows, cols;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OLLO|iiO:state_init", keywords, &state, &rows,
                                     &cols, &id_object, &layout.storage, &layout.dtype, &param))
        return NULL;
    if (handle_check_idle(self) < 0) return NULL;
    /* Checked conversion: "K" would silently wrap negative or huge ids. */
    unsigned long long tensor_id = PyLong_AsUnsignedLongLong(id_object);
    if (tensor_id == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    layout.rows = rows;
    layout.cols = cols;
    Py_buffer view, param_view;
    int param_held = 0;
    /* the values of fp32 master weights (mlorc_state_init_with_param) */
    if (get_param_values(param, &param_view, layout.dtype, rows, cols, &param_held) < 0) return NULL;
    if (get_byte_buffer(state, &view, 1, "state") < 0) {
        if (param_held) PyBuffer_Release(&param_view);
        return NULL;
    }
    int status;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS /* zeroing a dense state touches 2mn floats */
    status = param_held ? mlorc_state_init_with_param(self->opt, &layout, tensor_id, param_view.buf,
                                                      view.buf, (size_t)view.len)
                        : mlorc_state_init(self->opt, &layout, tensor_id, view.buf, (size_t)view.len);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    PyBuffer_Release(&view);
    if (param_held) PyBuffer_Release(&param_view);
    if (status != MLORC_OK)
        return raise_status(status, self->opt, param_held ? "mlorc_state_init_with_param" : "mlorc_state_init");
    Py_RETURN_NONE;
}

static PyObject *Handle_group_state_init(HandleObject *self, PyObject *group) {
    if (handle_check_idle(self) < 0) return NULL;
    Py_buffer view;
    if (get_byte_buffer(group, &view, 1, "group state") < 0) return NULL;
    int status = mlorc_group_state_init(self->opt, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (status != MLORC_OK) return raise_status(status, self->opt, "mlorc_group_state_init");
    Py_RETURN_NONE;
}

static PyObject *Handle_scratch_bytes(HandleObject *self, PyObject *unused) {
    (void)unused;
    if (handle_check_idle(self) < 0) return NULL;
    size_t bytes = 0;
    int status = mlorc_scratch_bytes(self->opt, &bytes);
    if (status != MLORC_OK) return raise_status(status, self->opt, "mlorc_scratch_bytes");
    return PyLong_FromSize_t(bytes);
}

static PyObject *Handle_last_error(HandleObject *self, PyObject *unused) {
    (void)unused;
    if (handle_check_idle(self) < 0) return NULL;
    return PyUnicode_FromString(mlorc_last_error(self->opt));
}

static PyObject *Handle_state_inspect(HandleObject *self, PyObject *state) {
    (void)self; /* needs no handle; offered here too for symmetry */
    return inspect_buffer(state);
}

static PyObject *Handle_step_method(HandleObject *self, PyObject *args) {
    return handle_step(self, args);
}

static PyMethodDef Handle_methods[] = {
    {"set_param", (PyCFunction)Handle_set_param, METH_VARARGS,
     "set_param(key, value): mlorc_set_param with an MLORC_PARAM_* key."},
    {"get_param", (PyCFunction)Handle_get_param, METH_VARARGS,
     "get_param(key) -> float: mlorc_get_param."},
    {"state_size", (PyCFunction)(void (*)(void))Handle_state_size, METH_VARARGS | METH_KEYWORDS,
     "state_size(rows, cols, storage=STORAGE_AUTO, dtype=DTYPE_F32) -> int bytes."},
    {"state_init", (PyCFunction)(void (*)(void))Handle_state_init, METH_VARARGS | METH_KEYWORDS,
     "state_init(state, rows, cols, tensor_id, storage=STORAGE_AUTO, dtype=DTYPE_F32, param=None):\n"
     "initialise a writable, C-contiguous byte buffer in place; with param (the\n"
     "parameter's values) through mlorc_state_init_with_param (master weights)."},
    {"state_inspect", (PyCFunction)Handle_state_inspect, METH_O,
     "state_inspect(state) -> dict: as the module-level state_inspect."},
    {"step", (PyCFunction)Handle_step_method, METH_VARARGS,
     "step(tensors, lr, group=None): one mlorc_step_group over\n"
     "[(param, grad, state, rows, cols[, dtype]), ...] (dtype: mlorc_tensor.dtype,\n"
     "DTYPE_F32 if absent); param, state and the group state\n"
     "(D-adaptation rules only) are updated in place; all-or-nothing."},
    {"group_state_init", (PyCFunction)Handle_group_state_init, METH_O,
     "group_state_init(group): write a fresh group state into a writable buffer\n"
     "of GROUP_STATE_BYTES (D-adaptation rules)."},
    {"set_reducer", (PyCFunction)handle_set_reducer, METH_O,
     "set_reducer(callable or None): the reducer of sharded steps, called with a\n"
     "writable memoryview of doubles to sum in place across the ranks."},
    {"state_size_sharded", (PyCFunction)handle_state_size_sharded, METH_VARARGS,
     "state_size_sharded(rows, cols, storage, dtype, global_rows, row_begin) -> int bytes."},
    {"state_init_sharded", (PyCFunction)handle_state_init_sharded, METH_VARARGS,
     "state_init_sharded(state, rows, cols, tensor_id, storage, dtype, global_rows, row_begin[, param]):\n"
     "param: the shard's half-precision values, read for fp32 master weights."},
    {"step_sharded", (PyCFunction)handle_step_sharded, METH_VARARGS,
     "step_sharded(tensors, lr[, group]): one mlorc_step_sharded over\n"
     "[(param, grad, state, rows, cols, dtype, global_rows, row_begin), ...];\n"
     "group: the D-adaptation rules' writable group state."},
    {"scratch_bytes", (PyCFunction)Handle_scratch_bytes, METH_NOARGS,
     "scratch_bytes() -> int: scratch memory held by the handle."},
    {"last_error", (PyCFunction)Handle_last_error, METH_NOARGS,
     "last_error() -> str: mlorc_last_error of this handle."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Handle_getset[] = {
    {"rule", (getter)Handle_get_rule, NULL, "The handle's MLORC_RULE_* value.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject Handle_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mlorc._mlorc.Handle",
    .tp_basicsize = sizeof(HandleObject),
    .tp_dealloc = (destructor)Handle_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Handle(rule): one libmlorc optimizer handle (mlorc_create / mlorc_free).",
    .tp_methods = Handle_methods,
    .tp_getset = Handle_getset,
    .tp_new = Handle_new,
};
