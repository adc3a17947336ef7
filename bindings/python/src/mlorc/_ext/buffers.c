/* Buffer-protocol requests. Parameters and state are written in place, so
 * they must be writable and C-contiguous: a copy would silently lose the
 * update. Formats are checked so that, say, a float64 array is refused
 * instead of being read as twice as many float32s. */
#include <string.h>

#include "ext.h"

/* Strips a byte-order prefix that still means native order. */
static const char *native_format(const char *format) {
    if (format == NULL) return "B"; /* PEP 3118: NULL means unsigned bytes */
    if (*format == '@' || *format == '=') return format + 1;
#if PY_LITTLE_ENDIAN
    if (*format == '<') return format + 1;
#else
    if (*format == '>' || *format == '!') return format + 1;
#endif
    return format;
}

/* Re-raises the exporter's refusal with the buffer's role prepended. */
static int refuse(const char *what) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyErr_Format(type != NULL ? type : PyExc_BufferError, "%s: %S", what,
                 value != NULL ? value : Py_None);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return -1;
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what,
                      const char *format, Py_ssize_t itemsize, const char *expected) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return refuse(what);
    if (strcmp(native_format(view->format), format) != 0 || view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s must be %s (buffer format '%s'), got format '%s'",
                     what, expected, format, view->format != NULL ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

int get_f32_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what) {
    return get_buffer(obj, view, writable, what, "f", 4, "float32");
}

int get_byte_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what) {
    return get_buffer(obj, view, writable, what, "B", 1, "raw bytes (uint8)");
}

/* A parameter or gradient of element type `dtype` (MLORC_DTYPE_*). There is
 * no buffer format for bfloat16: its bits come as 16-bit integers (torch's
 * t.view(torch.int16), numpy's a.view(np.uint16)). float16 may come as 'e'
 * or as such integers too. */
int get_element_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what, int dtype) {
    if (dtype == MLORC_DTYPE_F32) return get_f32_buffer(obj, view, writable, what);
    if (dtype != MLORC_DTYPE_BF16 && dtype != MLORC_DTYPE_F16) {
        PyErr_Format(PyExc_ValueError, "%s: unknown dtype %d", what, dtype);
        return -1;
    }
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return refuse(what);
    const char *format = native_format(view->format);
    int bits16 = view->itemsize == 2 && (strcmp(format, "H") == 0 || strcmp(format, "h") == 0);
    int half = dtype == MLORC_DTYPE_F16 && view->itemsize == 2 && strcmp(format, "e") == 0;
    if (!bits16 && !half) {
        PyErr_Format(PyExc_TypeError, "%s must be %s (buffer format %s), got format '%s'", what,
                     dtype == MLORC_DTYPE_BF16 ? "bfloat16 bits" : "float16",
                     dtype == MLORC_DTYPE_BF16 ? "'H' or 'h'" : "'e', 'H' or 'h'",
                     view->format != NULL ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

int get_param_values(PyObject *param, Py_buffer *view, int dtype, long long rows, long long cols, int *held) {
    *held = 0;
    if (param == Py_None) return 0;
    if (get_element_buffer(param, view, 0, "param", dtype) < 0) return -1;
    if (rows < 0 || cols < 1 || view->len / view->itemsize != rows * cols) {
        PyErr_Format(PyExc_ValueError, "param has %zd elements, but the state is for %lldx%lld",
                     view->len / view->itemsize, rows, cols);
        PyBuffer_Release(view);
        return -1;
    }
    *held = 1;
    return 0;
}
