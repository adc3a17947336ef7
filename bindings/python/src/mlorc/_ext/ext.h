/*
 * Internal declarations of the _mlorc extension: a thin CPython layer over
 * include/mlorc.h. Each .c file has one job:
 *   module.c   module init (version check), constants, handle-free functions
 *   handle.c   the Handle type (one mlorc_optimizer)
 *   step.c     the batched step: acquire buffers, one GIL release, release
 *   sharded.c  sharded steps: a Python reducer, the sharded state and step
 *   split.c    states cut into rows and a replicated part, and joined back
 *   buffers.c  buffer-protocol requests with format checks
 *   errors.c   library status -> mlorc.MlorcError
 */
#ifndef MLORC_PY_EXT_H
#define MLORC_PY_EXT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "mlorc.h"

typedef struct {
    PyObject_HEAD
    mlorc_optimizer *opt;
    /* Set while a native call runs without the GIL: the header allows one
     * thread per handle, so other threads are refused instead of racing. */
    int busy;
    /* The reducer of sharded steps (a callable, or NULL) and the exception
     * it raised during the current step, if any. */
    PyObject *reducer;
    PyObject *reducer_error;
} HandleObject;

extern PyTypeObject Handle_Type;
extern PyObject *MlorcError;

/* errors.c */
int errors_init(PyObject *module);
/* Raises MlorcError for `status`; `opt` (may be NULL) supplies the detail. */
PyObject *raise_status(int status, const mlorc_optimizer *opt, const char *call);
/* The same with the detail given (a `why` of the handle-free calls). */
PyObject *raise_status_detail(int status, const char *detail, const char *call);

/* buffers.c: 0 on success; on failure the view is not held and an
 * exception is set. `what` names the buffer in messages ("tensor 2 param"). */
int get_f32_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what);
int get_byte_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what);
int get_element_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what, int dtype);
/* The optional `param` of a state init (rows x cols values, read for fp32
 * master weights): Py_None leaves *held 0; -1 with an exception set on a
 * wrong buffer or element count. */
int get_param_values(PyObject *param, Py_buffer *view, int dtype, long long rows, long long cols, int *held);

/* split.c: the module's functions of states across world sizes */
extern PyMethodDef split_methods[];

/* handle.c */
int handle_check_idle(HandleObject *self);

/* step.c */
/* Buffers held for one tensor of a batch. */
typedef struct {
    Py_buffer param, grad, state;
    int held; /* how many of the three are acquired, in that order */
} HeldBuffers;
/* Acquires tensor i's buffers into *h and fills *t; -1 with an exception
 * set (release what *h holds either way). An item is (param, grad, state,
 * rows, cols[, dtype]): dtype is mlorc_tensor.dtype (MLORC_DTYPE_F32 when
 * absent), which says how the param and grad buffers are read; rows may be
 * 0 with `allow_empty` (a rank's empty shard). */
int step_prepare(PyObject *item, Py_ssize_t i, HeldBuffers *h, mlorc_tensor *t, int allow_empty);
void step_release(HeldBuffers *held, Py_ssize_t count);
PyObject *handle_step(HandleObject *self, PyObject *args);

/* sharded.c */
PyObject *handle_set_reducer(HandleObject *self, PyObject *reducer);
PyObject *handle_state_size_sharded(HandleObject *self, PyObject *args);
PyObject *handle_state_init_sharded(HandleObject *self, PyObject *args);
PyObject *handle_step_sharded(HandleObject *self, PyObject *args);

/* module.c */
PyObject *state_info_dict(const mlorc_state_info *info);
/* mlorc_state_inspect over a byte buffer, as a dict. */
PyObject *inspect_buffer(PyObject *state);

#endif
