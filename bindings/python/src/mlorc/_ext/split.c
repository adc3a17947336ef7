/* States cut into their rows and their replicated part, and joined back for
 * any row shard (mlorc_state_split / mlorc_state_join): what moves sharded
 * checkpoints between world sizes. The caller allocates the outputs (sizes
 * from the *_size calls). */
#include "ext.h"

static PyObject *split_size(PyObject *m, PyObject *state) {
    (void)m;
    Py_buffer view;
    size_t row_bytes = 0, shared_bytes = 0;
    char why[MLORC_REASON_BYTES];
    if (get_byte_buffer(state, &view, 0, "state") < 0) return NULL;
    int status = mlorc_state_split_size(view.buf, (size_t)view.len, &row_bytes, &shared_bytes, why, sizeof why);
    PyBuffer_Release(&view);
    if (status != MLORC_OK) return raise_status_detail(status, why, "mlorc_state_split_size");
    return Py_BuildValue("(nn)", (Py_ssize_t)row_bytes, (Py_ssize_t)shared_bytes);
}

static PyObject *split(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *state_obj, *rows_obj, *shared_obj;
    Py_buffer state, rows, shared;
    char why[MLORC_REASON_BYTES];
    if (!PyArg_ParseTuple(args, "OOO:state_split", &state_obj, &rows_obj, &shared_obj)) return NULL;
    if (get_byte_buffer(state_obj, &state, 0, "state") < 0) return NULL;
    if (get_byte_buffer(rows_obj, &rows, 1, "rows") < 0) {
        PyBuffer_Release(&state);
        return NULL;
    }
    if (get_byte_buffer(shared_obj, &shared, 1, "shared") < 0) {
        PyBuffer_Release(&rows);
        PyBuffer_Release(&state);
        return NULL;
    }
    int status = mlorc_state_split(state.buf, (size_t)state.len, rows.len ? rows.buf : NULL, (size_t)rows.len,
                                   shared.buf, (size_t)shared.len, why, sizeof why);
    PyBuffer_Release(&shared);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&state);
    if (status != MLORC_OK) return raise_status_detail(status, why, "mlorc_state_split");
    Py_RETURN_NONE;
}

static PyObject *join_size(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *shared_obj;
    Py_buffer shared;
    mlorc_shard shard;
    long long rows;
    size_t state_bytes = 0, row_bytes = 0;
    char why[MLORC_REASON_BYTES];
    if (!PyArg_ParseTuple(args, "OLLL:state_join_size", &shared_obj, &shard.global_rows, &shard.row_begin, &rows))
        return NULL;
    if (get_byte_buffer(shared_obj, &shared, 0, "shared") < 0) return NULL;
    int status = mlorc_state_join_size(shared.buf, (size_t)shared.len, &shard, (int64_t)rows, &state_bytes,
                                       &row_bytes, why, sizeof why);
    PyBuffer_Release(&shared);
    if (status != MLORC_OK) return raise_status_detail(status, why, "mlorc_state_join_size");
    return Py_BuildValue("(nn)", (Py_ssize_t)state_bytes, (Py_ssize_t)row_bytes);
}

static PyObject *join(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *shared_obj, *records_obj, *state_obj;
    Py_buffer shared, records, state;
    mlorc_shard shard;
    long long rows;
    char why[MLORC_REASON_BYTES];
    if (!PyArg_ParseTuple(args, "OLLLOO:state_join", &shared_obj, &shard.global_rows, &shard.row_begin, &rows,
                          &records_obj, &state_obj))
        return NULL;
    if (get_byte_buffer(shared_obj, &shared, 0, "shared") < 0) return NULL;
    if (get_byte_buffer(records_obj, &records, 0, "rows") < 0) {
        PyBuffer_Release(&shared);
        return NULL;
    }
    if (get_byte_buffer(state_obj, &state, 1, "state") < 0) {
        PyBuffer_Release(&records);
        PyBuffer_Release(&shared);
        return NULL;
    }
    int status = mlorc_state_join(shared.buf, (size_t)shared.len, &shard, (int64_t)rows,
                                  records.len ? records.buf : NULL, (size_t)records.len, state.buf,
                                  (size_t)state.len, why, sizeof why);
    PyBuffer_Release(&state);
    PyBuffer_Release(&records);
    PyBuffer_Release(&shared);
    if (status != MLORC_OK) return raise_status_detail(status, why, "mlorc_state_join");
    Py_RETURN_NONE;
}

static PyObject *reshape(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *state_obj, *out_obj;
    Py_buffer state, out;
    long long rows, cols;
    char why[MLORC_REASON_BYTES];
    if (!PyArg_ParseTuple(args, "OLLO:state_reshape", &state_obj, &rows, &cols, &out_obj)) return NULL;
    if (get_byte_buffer(state_obj, &state, 0, "state") < 0) return NULL;
    if (get_byte_buffer(out_obj, &out, 1, "out") < 0) {
        PyBuffer_Release(&state);
        return NULL;
    }
    int status = mlorc_state_reshape(state.buf, (size_t)state.len, (int64_t)rows, (int64_t)cols, out.buf,
                                     (size_t)out.len, why, sizeof why);
    PyBuffer_Release(&out);
    PyBuffer_Release(&state);
    if (status != MLORC_OK) return raise_status_detail(status, why, "mlorc_state_reshape");
    Py_RETURN_NONE;
}

PyMethodDef split_methods[] = {
    {"state_split_size", split_size, METH_O,
     "state_split_size(state) -> (row_bytes, shared_bytes): mlorc_state_split_size."},
    {"state_split", split, METH_VARARGS,
     "state_split(state, rows, shared): mlorc_state_split into writable byte buffers."},
    {"state_join_size", join_size, METH_VARARGS,
     "state_join_size(shared, global_rows, row_begin, rows) -> (state_bytes, row_bytes): mlorc_state_join_size."},
    {"state_join", join, METH_VARARGS,
     "state_join(shared, global_rows, row_begin, rows, records, state): mlorc_state_join into a writable buffer."},
    {"state_reshape", reshape, METH_VARARGS,
     "state_reshape(state, rows, cols, out): mlorc_state_reshape into a writable buffer."},
    {NULL, NULL, 0, NULL},
};
