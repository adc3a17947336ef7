/* Module init of mlorc._mlorc: refuses a libmlorc.so whose version differs
 * from the header compiled in, then exposes the constants of mlorc.h, the
 * Handle type and the calls that need no handle. */
#include "ext.h"

PyObject *state_info_dict(const mlorc_state_info *info) {
    return Py_BuildValue(
        "{s:I,s:i,s:i,s:i,s:L,s:L,s:L,s:K,s:K,s:K}",
        "layout_version", (unsigned)info->layout_version, "rule", (int)info->rule,
        "storage", (int)info->storage, "dtype", (int)info->dtype,
        "rows", (long long)info->rows, "cols", (long long)info->cols,
        "rank", (long long)info->rank, "step", (unsigned long long)info->step,
        "tensor_id", (unsigned long long)info->tensor_id,
        "state_bytes", (unsigned long long)info->state_bytes);
}

static PyObject *version_number(PyObject *m, PyObject *unused) {
    (void)m, (void)unused;
    return PyLong_FromUnsignedLong(mlorc_version_number());
}

static PyObject *version_string(PyObject *m, PyObject *unused) {
    (void)m, (void)unused;
    return PyUnicode_FromString(mlorc_version_string());
}

static PyObject *status_string(PyObject *m, PyObject *args) {
    (void)m;
    int status;
    if (!PyArg_ParseTuple(args, "i:status_string", &status)) return NULL;
    return PyUnicode_FromString(mlorc_status_string(status));
}

static PyObject *param_bounds(PyObject *m, PyObject *args) {
    (void)m;
    int rule, key;
    double lo = 0, hi = 0;
    if (!PyArg_ParseTuple(args, "ii:param_bounds", &rule, &key)) return NULL;
    int status = mlorc_param_bounds(rule, key, &lo, &hi);
    if (status != MLORC_OK) return raise_status(status, NULL, "mlorc_param_bounds");
    return Py_BuildValue("(dd)", lo, hi);
}

PyObject *inspect_buffer(PyObject *state) {
    Py_buffer view;
    mlorc_state_info info;
    if (get_byte_buffer(state, &view, 0, "state") < 0) return NULL;
    int status = mlorc_state_inspect(view.buf, (size_t)view.len, &info);
    PyBuffer_Release(&view);
    if (status != MLORC_OK) return raise_status(status, NULL, "mlorc_state_inspect");
    return state_info_dict(&info);
}

static PyObject *state_inspect(PyObject *m, PyObject *state) {
    (void)m;
    return inspect_buffer(state);
}

static PyObject *group_state_inspect(PyObject *m, PyObject *group) {
    (void)m;
    Py_buffer view;
    mlorc_group_info info;
    if (get_byte_buffer(group, &view, 0, "group state") < 0) return NULL;
    int status = mlorc_group_state_inspect(view.buf, (size_t)view.len, &info);
    PyBuffer_Release(&view);
    if (status != MLORC_OK) return raise_status(status, NULL, "mlorc_group_state_inspect");
    return Py_BuildValue("{s:I,s:i,s:K,s:d,s:d,s:d,s:d}", "layout_version", (unsigned)info.layout_version,
                         "rule", (int)info.rule, "step", (unsigned long long)info.step, "d", info.d, "d0", info.d0,
                         "d_max", info.d_max, "numerator", info.numerator);
}

static PyMethodDef module_methods[] = {
    {"version_number", version_number, METH_NOARGS,
     "version_number() -> int: mlorc_version_number() of the loaded library."},
    {"version_string", version_string, METH_NOARGS,
     "version_string() -> str: mlorc_version_string() of the loaded library."},
    {"status_string", status_string, METH_VARARGS,
     "status_string(status) -> str: static description of a status code."},
    {"param_bounds", param_bounds, METH_VARARGS,
     "param_bounds(rule, key) -> (min, max): inclusive bounds of a hyperparameter."},
    {"state_inspect", state_inspect, METH_O,
     "state_inspect(state) -> dict: validate a state buffer and describe its header."},
    {"group_state_inspect", group_state_inspect, METH_O,
     "group_state_inspect(group) -> dict: validate a group state and describe it (d, ...)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "mlorc._mlorc",
    "Thin CPython binding of libmlorc (include/mlorc.h).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

/* Every constant of mlorc.h, by its name without the MLORC_ prefix.
 * tests/test_header_tables.py parses the header and checks this table (and
 * mlorc/_native.py) against it, so a constant added there and not here fails. */
#define CONSTANT(name) {#name, (long)(MLORC_##name)}
static const struct {
    const char *name;
    long value;
} constants[] = {
    /* mlorc_status */
    CONSTANT(OK), CONSTANT(ERROR_NULL_POINTER), CONSTANT(ERROR_INVALID_ARGUMENT), CONSTANT(ERROR_INVALID_SHAPE),
    CONSTANT(ERROR_INVALID_RANK), CONSTANT(ERROR_PARAM_OUT_OF_RANGE), CONSTANT(ERROR_UNKNOWN_PARAM),
    CONSTANT(ERROR_STATE_TOO_SMALL), CONSTANT(ERROR_STATE_CORRUPTED), CONSTANT(ERROR_STATE_VERSION),
    CONSTANT(ERROR_STATE_MISMATCH), CONSTANT(ERROR_NON_FINITE), CONSTANT(ERROR_OUT_OF_MEMORY),
    CONSTANT(ERROR_LINALG), CONSTANT(ERROR_UNSUPPORTED_DTYPE), CONSTANT(ERROR_REDUCTION),
    /* mlorc_rule */
    CONSTANT(RULE_ADAMW), CONSTANT(RULE_LION), CONSTANT(RULE_ADOPT), CONSTANT(RULE_GALORE_ADAMW),
    CONSTANT(RULE_CAME), CONSTANT(RULE_PRODIGY), CONSTANT(RULE_DADAPT_LION), CONSTANT(RULE_MOFASGD),
    /* mlorc_storage, mlorc_dtype */
    CONSTANT(STORAGE_AUTO), CONSTANT(STORAGE_DENSE), CONSTANT(STORAGE_LOWRANK), CONSTANT(DTYPE_F32), CONSTANT(DTYPE_BF16), CONSTANT(DTYPE_F16),
    /* mlorc_param */
    CONSTANT(PARAM_BETA1), CONSTANT(PARAM_BETA2), CONSTANT(PARAM_EPS), CONSTANT(PARAM_WEIGHT_DECAY),
    CONSTANT(PARAM_RANK), CONSTANT(PARAM_OVERSAMPLING), CONSTANT(PARAM_POWER_ITERATIONS),
    CONSTANT(PARAM_BIAS_CORRECTION), CONSTANT(PARAM_SEED), CONSTANT(PARAM_THREADS), CONSTANT(PARAM_ADOPT_CLIP),
    CONSTANT(PARAM_GRAMS), CONSTANT(PARAM_ATAN2), CONSTANT(PARAM_CAUTIOUS), CONSTANT(PARAM_ORTHOGRAD),
    CONSTANT(PARAM_CLIP_NORM), CONSTANT(PARAM_GALORE_SCALE), CONSTANT(PARAM_GALORE_INTERVAL),
    CONSTANT(PARAM_BETA3), CONSTANT(PARAM_EPS2), CONSTANT(PARAM_D0), CONSTANT(PARAM_D_COEF),
    CONSTANT(PARAM_GROWTH_RATE), CONSTANT(PARAM_STATS_STRIDE), CONSTANT(PARAM_CAME_CLIP),
    CONSTANT(PARAM_MOFASGD_RECIPROCAL), CONSTANT(PARAM_MOFASGD_MAX_VALUE), CONSTANT(PARAM_MASTER_WEIGHTS),
    CONSTANT(PARAM_STOCHASTIC_ROUNDING), CONSTANT(PARAM_STATE_DTYPE),
    /* numeric #defines */
    CONSTANT(VERSION_MAJOR), CONSTANT(VERSION_MINOR), CONSTANT(VERSION_PATCH),
    CONSTANT(STATE_LAYOUT_VERSION), CONSTANT(GROUP_STATE_BYTES), CONSTANT(STATE_HEADER_BYTES),
    CONSTANT(MAX_STEP_TENSORS), CONSTANT(REASON_BYTES), CONSTANT(DTYPE_GRAD_F32), CONSTANT(STATE_MASTER_WEIGHTS),
    CONSTANT(STATE_BF16_MOMENTS),
};

static int add_constants(PyObject *m) {
    for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++)
        if (PyModule_AddIntConstant(m, constants[i].name, constants[i].value) < 0) return -1;
    return PyModule_AddIntConstant(m, "HEADER_VERSION", MLORC_VERSION_NUMBER);
}

PyMODINIT_FUNC PyInit__mlorc(void) {
    unsigned loaded = mlorc_version_number();
    if (loaded != MLORC_VERSION_NUMBER) {
        PyErr_Format(PyExc_ImportError,
                     "mlorc: this binding was compiled against mlorc.h %d.%d.%d but the "
                     "loaded libmlorc.so is %s (version number %u). Rebuild the library "
                     "(swift build -c release) and reinstall the binding "
                     "(pip install ./bindings/python) so that both match.",
                     MLORC_VERSION_MAJOR, MLORC_VERSION_MINOR, MLORC_VERSION_PATCH,
                     mlorc_version_string(), loaded);
        return NULL;
    }
    if (PyType_Ready(&Handle_Type) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    if (errors_init(m) < 0 || add_constants(m) < 0 || PyModule_AddFunctions(m, split_methods) < 0) goto fail;
    Py_INCREF(&Handle_Type);
    if (PyModule_AddObject(m, "Handle", (PyObject *)&Handle_Type) < 0) {
        Py_DECREF(&Handle_Type);
        goto fail;
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
