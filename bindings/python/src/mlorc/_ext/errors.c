/* Library status codes become mlorc.MlorcError, carrying the status and the
 * handle's detailed message, so Python code can branch on `.status`. */
#include "ext.h"

PyObject *MlorcError = NULL;

int errors_init(PyObject *module) {
    MlorcError = PyErr_NewExceptionWithDoc(
        "mlorc.MlorcError",
        "A libmlorc call failed. `.status` is the mlorc_status code, `.message`\n"
        "the library's detailed message (mlorc_last_error). The failed call\n"
        "changed nothing.",
        PyExc_RuntimeError, NULL);
    if (MlorcError == NULL) return -1;
    Py_INCREF(MlorcError);
    if (PyModule_AddObject(module, "MlorcError", MlorcError) < 0) {
        Py_DECREF(MlorcError);
        return -1;
    }
    return 0;
}

PyObject *raise_status(int status, const mlorc_optimizer *opt, const char *call) {
    return raise_status_detail(status, opt != NULL ? mlorc_last_error(opt) : "", call);
}

PyObject *raise_status_detail(int status, const char *detail, const char *call) {
    if (detail == NULL) detail = "";
    const char *summary = mlorc_status_string(status);
    PyObject *exc = NULL, *value = NULL;
    PyObject *text = detail[0] != '\0'
        ? PyUnicode_FromFormat("%s: %s (status %d): %s", call, summary, status, detail)
        : PyUnicode_FromFormat("%s: %s (status %d)", call, summary, status);
    if (text == NULL) return NULL;
    exc = PyObject_CallOneArg(MlorcError, text);
    Py_DECREF(text);
    if (exc == NULL) return NULL;
    value = PyLong_FromLong(status);
    if (value == NULL || PyObject_SetAttrString(exc, "status", value) < 0) goto fail;
    Py_DECREF(value);
    value = PyUnicode_FromString(detail[0] != '\0' ? detail : summary);
    if (value == NULL || PyObject_SetAttrString(exc, "message", value) < 0) goto fail;
    Py_DECREF(value);
    PyErr_SetObject(MlorcError, exc);
    Py_DECREF(exc);
    return NULL;
fail:
    Py_XDECREF(value);
    Py_DECREF(exc);
    return NULL;
}
