/* Sharded steps (mlorc_step_sharded): a Python callable as the handle's
 * reducer, and the sharded forms of state_size, state_init and step.
 *
 * The library calls the reducer on the thread that called the step, which
 * has released the GIL: the trampoline takes it back, hands the callable a
 * writable memoryview of `count` doubles to sum in place across the ranks
 * (e.g. torch.distributed.all_reduce on torch.frombuffer of it), and keeps
 * the exception the callable raised, if any, so that the step's
 * MLORC_ERROR_REDUCTION is raised from it. */
#include "ext.h"

static int call_reducer(void *user, double *buffer, size_t count) {
    HandleObject *self = user;
    PyGILState_STATE gil = PyGILState_Ensure();
    int failed = 1;
    PyObject *view = PyMemoryView_FromMemory((char *)buffer, (Py_ssize_t)(count * sizeof *buffer), PyBUF_WRITE);
    if (view != NULL) {
        PyObject *doubles = PyObject_CallMethod(view, "cast", "s", "d");
        if (doubles != NULL) {
            PyObject *result = PyObject_CallOneArg(self->reducer, doubles);
            failed = result == NULL;
            Py_XDECREF(result);
            /* The memory is the library's: no view may outlive the call. */
            PyObject *released = PyObject_CallMethod(doubles, "release", NULL);
            Py_XDECREF(released);
            Py_DECREF(doubles);
        }
        PyObject *released = PyObject_CallMethod(view, "release", NULL);
        Py_XDECREF(released);
        Py_DECREF(view);
    }
    if (failed && PyErr_Occurred() && self->reducer_error == NULL) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL) PyException_SetTraceback(value, traceback);
        self->reducer_error = value; /* keeps the reference */
        Py_XDECREF(type);
        Py_XDECREF(traceback);
    }
    PyErr_Clear();
    PyGILState_Release(gil);
    return failed;
}

PyObject *handle_set_reducer(HandleObject *self, PyObject *reducer) {
    if (handle_check_idle(self) < 0) return NULL;
    if (reducer != Py_None && !PyCallable_Check(reducer)) {
        PyErr_SetString(PyExc_TypeError, "set_reducer: expected a callable(buffer) or None");
        return NULL;
    }
    int status = reducer == Py_None ? mlorc_set_reducer(self->opt, NULL, NULL)
                                    : mlorc_set_reducer(self->opt, call_reducer, self);
    if (status != MLORC_OK) return raise_status(status, self->opt, "mlorc_set_reducer");
    Py_XSETREF(self->reducer, reducer == Py_None ? NULL : Py_NewRef(reducer));
    Py_RETURN_NONE;
}

PyObject *handle_state_size_sharded(HandleObject *self, PyObject *args) {
    mlorc_tensor_layout layout = {0, 0, MLORC_DTYPE_F32, MLORC_STORAGE_AUTO};
    long long rows, cols, global_rows, row_begin;
    if (!PyArg_ParseTuple(args, "LLiiLL:state_size_sharded", &rows, &cols, &layout.storage, &layout.dtype,
                          &global_rows, &row_begin))
        return NULL;
    if (handle_check_idle(self) < 0) return NULL;
    mlorc_shard shard = {global_rows, row_begin};
    layout.rows = rows;
    layout.cols = cols;
    size_t bytes = 0;
    int status = mlorc_state_size_sharded(self->opt, &layout, &shard, &bytes);
    if (status != MLORC_OK) return raise_status(status, self->opt, "mlorc_state_size_sharded");
    return PyLong_FromSize_t(bytes);
}

PyObject *handle_state_init_sharded(HandleObject *self, PyObject *args) {
    mlorc_tensor_layout layout = {0, 0, MLORC_DTYPE_F32, MLORC_STORAGE_AUTO};
    PyObject *state, *id_object, *param = Py_None;
    long long rows, cols, global_rows, row_begin;
    if (!PyArg_ParseTuple(args, "OLLOiiLL|O:state_init_sharded", &state, &rows, &cols, &id_object,
                          &layout.storage, &layout.dtype, &global_rows, &row_begin, &param))
        return NULL;
    if (handle_check_idle(self) < 0) return NULL;
    unsigned long long tensor_id = PyLong_AsUnsignedLongLong(id_object);
    if (tensor_id == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    mlorc_shard shard = {global_rows, row_begin};
    layout.rows = rows;
    layout.cols = cols;
    Py_buffer view, param_view;
    int param_held = 0;
    /* the shard's values, for fp32 master weights */
    if (get_param_values(param, &param_view, layout.dtype, rows, cols, &param_held) < 0) return NULL;
    if (get_byte_buffer(state, &view, 1, "state") < 0) {
        if (param_held) PyBuffer_Release(&param_view);
        return NULL;
    }
    int status = mlorc_state_init_sharded(self->opt, &layout, &shard, tensor_id, param_held ? param_view.buf : NULL,
                                          view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (param_held) PyBuffer_Release(&param_view);
    if (status != MLORC_OK) return raise_status(status, self->opt, "mlorc_state_init_sharded");
    Py_RETURN_NONE;
}

/* step_sharded([(param, grad, state, rows, cols, dtype, global_rows, row_begin), ...], lr[, group]) */
PyObject *handle_step_sharded(HandleObject *self, PyObject *args) {
    PyObject *items, *seq, *group = Py_None;
    double lr;
    Py_buffer group_view;
    int group_held = 0;
    if (!PyArg_ParseTuple(args, "Od|O:step_sharded", &items, &lr, &group)) return NULL;
    if (handle_check_idle(self) < 0) return NULL;
    if (group != Py_None) {
        if (get_byte_buffer(group, &group_view, 1, "group state") < 0) return NULL;
        group_held = 1;
    }
    seq = PySequence_Fast(items, "step_sharded: tensors must be a sequence of "
                                 "(param, grad, state, rows, cols, dtype, global_rows, row_begin) tuples");
    if (seq == NULL) {
        if (group_held) PyBuffer_Release(&group_view);
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject *result = NULL;
    size_t slots = (size_t)(count > 0 ? count : 1);
    HeldBuffers *held = PyMem_Calloc(slots, sizeof *held);
    mlorc_tensor *tensors = PyMem_Calloc(slots, sizeof *tensors);
    mlorc_shard *shards = PyMem_Calloc(slots, sizeof *shards);
    Py_ssize_t prepared = 0;
    if (held == NULL || tensors == NULL || shards == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; prepared < count; prepared++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, prepared);
        long long global_rows, row_begin;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 8) {
            PyErr_Format(PyExc_TypeError, "tensor %zd: expected a tuple (param, grad, state, rows, cols, dtype, "
                         "global_rows, row_begin)", prepared);
            goto done;
        }
        if (!PyArg_Parse(PyTuple_GET_ITEM(item, 6), "L", &global_rows) ||
            !PyArg_Parse(PyTuple_GET_ITEM(item, 7), "L", &row_begin))
            goto done;
        PyObject *head = PyTuple_GetSlice(item, 0, 6);
        if (head == NULL) goto done;
        int ok = step_prepare(head, prepared, &held[prepared], &tensors[prepared], 1) == 0;
        Py_DECREF(head);
        if (!ok) {
            prepared++; /* its partly held buffers are released below */
            goto done;
        }
        shards[prepared] = (mlorc_shard){global_rows, row_begin};
    }
    int status;
    Py_CLEAR(self->reducer_error);
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    status = mlorc_step_sharded(self->opt, tensors, shards, (size_t)count, lr, group_held ? group_view.buf : NULL,
                                group_held ? (size_t)group_view.len : 0);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (status != MLORC_OK) {
        PyObject *cause = self->reducer_error;
        self->reducer_error = NULL;
        raise_status(status, self->opt, "mlorc_step_sharded");
        if (cause != NULL) { /* MlorcError from the reducer's exception */
            PyObject *type, *value, *traceback;
            PyErr_Fetch(&type, &value, &traceback);
            PyErr_NormalizeException(&type, &value, &traceback);
            if (value != NULL) PyException_SetCause(value, cause); /* steals cause */
            else Py_DECREF(cause);
            PyErr_Restore(type, value, traceback);
        }
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    if (held != NULL) step_release(held, prepared);
    PyMem_Free(held);
    PyMem_Free(tensors);
    PyMem_Free(shards);
    Py_DECREF(seq);
    if (group_held) PyBuffer_Release(&group_view);
    return result;
}
