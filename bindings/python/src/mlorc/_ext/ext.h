/*
 * Internal declarations of the _mlorc extension: a thin CPython layer over
 * include/mlorc.h. Each .c file has one job:
 *   module.c   module init (version check), constants, handle-free functions
 *   handle.c   the Handle type (one mlorc_optimizer)
 *   step.c     the batched step: acquire buffers, one GIL release, release
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
} HandleObject;

extern PyTypeObject Handle_Type;
extern PyObject *MlorcError;

/* errors.c */
int errors_init(PyObject *module);
/* Raises MlorcError for `status`; `opt` (may be NULL) supplies the detail. */
PyObject *raise_status(int status, const mlorc_optimizer *opt, const char *call);

/* buffers.c: 0 on success; on failure the view is not held and an
 * exception is set. `what` names the buffer in messages ("tensor 2 param"). */
int get_f32_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what);
int get_byte_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what);
int get_element_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what, int dtype);

/* handle.c */
int handle_check_idle(HandleObject *self);

/* step.c */
PyObject *handle_step(HandleObject *self, PyObject *args);

/* module.c */
PyObject *state_info_dict(const mlorc_state_info *info);
/* mlorc_state_inspect over a byte buffer, as a dict. */
PyObject *inspect_buffer(PyObject *state);

#endif
