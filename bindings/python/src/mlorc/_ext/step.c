/* The batched step: acquire every buffer, release the GIL once around
 * mlorc_step_group, release every buffer on every path. */
#include <stdint.h>

#include "ext.h"

void step_release(HeldBuffers *held, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) {
        if (held[i].held > 2) PyBuffer_Release(&held[i].state);
        if (held[i].held > 1) PyBuffer_Release(&held[i].grad);
        if (held[i].held > 0) PyBuffer_Release(&held[i].param);
    }
}

int step_prepare(PyObject *item, Py_ssize_t i, HeldBuffers *h, mlorc_tensor *t, int allow_empty) {
    PyObject *param, *grad, *state;
    long long rows, cols;
    int dtype = MLORC_DTYPE_F32;
    char what[64];
    Py_ssize_t size = PyTuple_Check(item) ? PyTuple_GET_SIZE(item) : 0;
    if (size != 5 && size != 6) {
        PyErr_Format(PyExc_TypeError,
                     "tensor %zd: expected a tuple (param, grad, state, rows, cols[, dtype])", i);
        return -1;
    }
    if (!PyArg_ParseTuple(item, "OOOLL|i", &param, &grad, &state, &rows, &cols, &dtype)) return -1;
    if (rows < (allow_empty ? 0 : 1) || cols < 1 || rows > INT64_MAX / 4 / cols) {
        PyErr_Format(PyExc_ValueError, "tensor %zd: shape %lldx%lld is invalid", i, rows, cols);
        return -1;
    }
    int param_type = dtype & 0xff, grad_type = dtype & MLORC_DTYPE_GRAD_F32 ? MLORC_DTYPE_F32 : param_type;
    if ((dtype & ~(0xff | MLORC_DTYPE_GRAD_F32)) != 0 ||
        (param_type == MLORC_DTYPE_F32 && dtype != MLORC_DTYPE_F32)) {
        PyErr_Format(PyExc_ValueError, "tensor %zd: dtype %d is not a tensor dtype", i, dtype);
        return -1;
    }
    PyOS_snprintf(what, sizeof what, "tensor %zd param", i);
    if (get_element_buffer(param, &h->param, 1, what, param_type) < 0) return -1;
    h->held = 1;
    PyOS_snprintf(what, sizeof what, "tensor %zd grad", i);
    if (get_element_buffer(grad, &h->grad, 0, what, grad_type) < 0) return -1;
    h->held = 2;
    PyOS_snprintf(what, sizeof what, "tensor %zd state", i);
    if (get_byte_buffer(state, &h->state, 1, what) < 0) return -1;
    h->held = 3;
    Py_ssize_t expected = (Py_ssize_t)(rows * cols);
    if (h->param.len / h->param.itemsize != expected || h->grad.len / h->grad.itemsize != expected) {
        PyErr_Format(PyExc_ValueError,
                     "tensor %zd: shape %lldx%lld needs %zd elements, "
                     "but param has %zd and grad has %zd",
                     i, rows, cols, expected, h->param.len / h->param.itemsize,
                     h->grad.len / h->grad.itemsize);
        return -1;
    }
    t->param = h->param.buf;
    t->grad = h->grad.buf;
    t->state = h->state.buf;
    t->state_bytes = (size_t)h->state.len;
    t->rows = rows;
    t->cols = cols;
    t->dtype = dtype;
    t->reserved = 0;
    return 0;
}

PyObject *handle_step(HandleObject *self, PyObject *args) {
    PyObject *items, *seq, *group = Py_None;
    double lr;
    Py_buffer group_view;
    int group_held = 0;
    if (!PyArg_ParseTuple(args, "Od|O:step", &items, &lr, &group)) return NULL;
    if (handle_check_idle(self) < 0) return NULL;
    if (group != Py_None) {
        if (get_byte_buffer(group, &group_view, 1, "group state") < 0) return NULL;
        group_held = 1;
    }
    seq = PySequence_Fast(items, "step: tensors must be a sequence of "
                                 "(param, grad, state, rows, cols[, dtype]) tuples");
    if (seq == NULL) {
        if (group_held) PyBuffer_Release(&group_view);
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject *result = NULL;
    /* Calloc so that every Held starts with held = 0. */
    HeldBuffers *held = PyMem_Calloc((size_t)(count > 0 ? count : 1), sizeof *held);
    mlorc_tensor *tensors = PyMem_Calloc((size_t)(count > 0 ? count : 1), sizeof *tensors);
    Py_ssize_t prepared = 0;
    if (held == NULL || tensors == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; prepared < count; prepared++) {
        if (step_prepare(PySequence_Fast_GET_ITEM(seq, prepared), prepared, &held[prepared],
                         &tensors[prepared], 0) < 0) {
            prepared++; /* its partly held buffers are released below */
            goto done;
        }
    }
    int status;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    status = mlorc_step_group(self->opt, tensors, (size_t)count, lr, group_held ? group_view.buf : NULL,
                              group_held ? (size_t)group_view.len : 0);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (status != MLORC_OK) {
        raise_status(status, self->opt, "mlorc_step_group");
        goto done;
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    if (held != NULL) step_release(held, prepared);
    PyMem_Free(held);
    PyMem_Free(tensors);
    Py_DECREF(seq);
    if (group_held) PyBuffer_Release(&group_view);
    return result;
}
