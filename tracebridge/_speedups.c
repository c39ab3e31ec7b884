/* tracebridge._speedups: the compiled half of the Perfetto writer's packet loop.
 *
 * encode_items(seq, items, tracks, out) does what the pure-Python loop in
 * tracebridge/sinks/perfetto/writer.py (_Sequence.encode) does for each sorted item: it appends the framed
 * packet of each event to `out`. Events whose every part is already interned on the sequence (name,
 * categories, level annotation, annotation names, source location) and whose values are plain (str, int,
 * float, bool, None) are encoded here; every other event goes through seq._packet(), the Python code,
 * which interns what is new (so that the next such event is encoded here). The bytes are the same either
 * way: tests/sinks/test_speedups.py compares both paths on random event streams.
 *
 * The wire tags come from the Python schema (configure()), so field numbers live in one place.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* -- tags, set by configure() ------------------------------------------------------------------ */

enum {
    T_TIMESTAMP, T_ABSOLUTE_CLOCK, T_TYPE_BEGIN, T_TYPE_INSTANT, T_TRACK_EVENT, T_ANNOTATION,
    T_STRING, T_BOOL, T_INT, T_UINT, T_DOUBLE, T_SOURCE_LOCATION, T_COUNT
};
static PyObject *tags[T_COUNT];

/* Attribute and key names, interned once. */
static PyObject *s_kind, *s_name, *s_track, *s_overlapping, *s_categories, *s_level, *s_adjusted_count,
    *s_metadata, *s_error, *s_flows, *s_terminating_flows, *s_trace_id, *s_begun, *s_last_ts,
    *s_name_refs, *s_category_refs, *s_level_annotations, *s_annotation_refs, *s_sources,
    *s_seq_bytes_needs, *s_end_tail, *s_packet, *s_span, *s_instant, *s_code_file, *s_code_line,
    *s_code_function, *s_empty;

/* -- a growable byte buffer -------------------------------------------------------------------- */

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int put(Buf *b, const char *src, Py_ssize_t n) {
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, src, (size_t)n);
    b->len += n;
    return 0;
}

static int put_obj(Buf *b, PyObject *bytes) {
    return put(b, PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes));
}

static Py_ssize_t varint_size(uint64_t v) {
    Py_ssize_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static char *write_varint(char *p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = (char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    *p++ = (char)v;
    return p;
}

static int put_varint(Buf *b, uint64_t v) {
    if (buf_reserve(b, 10) < 0)
        return -1;
    char *end = write_varint(b->data + b->len, v);
    b->len = end - b->data;
    return 0;
}

/* -- one event ----------------------------------------------------------------------------------- */

/* 1: encoded into `te`; 0: not a case handled here (the Python code encodes it); -1: error. */
static int annotation_value(Buf *te, PyObject *value) {
    if (value == Py_None)
        return 1;
    if (PyBool_Check(value)) {
        if (put_obj(te, tags[T_BOOL]) < 0)
            return -1;
        return put(te, value == Py_True ? "\x01" : "\x00", 1) < 0 ? -1 : 1;
    }
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (!overflow) {
            if (put_obj(te, tags[T_INT]) < 0)
                return -1;
            return put_varint(te, (uint64_t)v) < 0 ? -1 : 1;
        }
        if (overflow > 0) {
            unsigned long long u = PyLong_AsUnsignedLongLong(value);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                return 0; /* beyond 64 bits: written as text by the Python code */
            }
            if (put_obj(te, tags[T_UINT]) < 0)
                return -1;
            return put_varint(te, (uint64_t)u) < 0 ? -1 : 1;
        }
        return 0;
    }
    if (PyFloat_CheckExact(value)) {
        union {
            double d;
            uint64_t u;
        } x;
        x.d = PyFloat_AS_DOUBLE(value);
        char le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (char)((x.u >> (8 * i)) & 0xFF);
        if (put_obj(te, tags[T_DOUBLE]) < 0)
            return -1;
        return put(te, le, 8) < 0 ? -1 : 1;
    }
    if (PyUnicode_CheckExact(value)) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(value, &n);
        if (utf8 == NULL) { /* lone surrogates: the Python code repairs them */
            PyErr_Clear();
            return 0;
        }
        if (put_obj(te, tags[T_STRING]) < 0 || put_varint(te, (uint64_t)n) < 0 || put(te, utf8, n) < 0)
            return -1;
        return 1;
    }
    return 0;
}

static int put_annotation(Buf *te, Buf *scratch, PyObject *ref, PyObject *value) {
    scratch->len = 0;
    if (put_obj(scratch, ref) < 0)
        return -1;
    int r = annotation_value(scratch, value);
    if (r <= 0)
        return r;
    if (put_obj(te, tags[T_ANNOTATION]) < 0 || put_varint(te, (uint64_t)scratch->len) < 0 ||
        put(te, scratch->data, scratch->len) < 0)
        return -1;
    return 1;
}

/* The track event of a BEGIN or INSTANT, into `te`: 1 done, 0 not handled here, -1 error. */
static int track_event(PyObject *seq_refs[4], PyObject *sources, PyObject *ev, int begin, Buf *te,
                       Buf *scratch) {
    PyObject *name_refs = seq_refs[0], *category_refs = seq_refs[1], *level_annotations = seq_refs[2],
             *annotation_refs = seq_refs[3];
    int handled = 0;
    PyObject *kind = NULL, *track = NULL, *overlapping = NULL, *name = NULL, *categories = NULL,
             *level = NULL, *adjusted = NULL, *md = NULL, *error = NULL, *flows = NULL,
             *terminating = NULL, *trace_id = NULL, *source_key = NULL;
    int code_handled = 0;

#define GET(var, attr)                               \
    do {                                             \
        var = PyObject_GetAttr(ev, attr);            \
        if (var == NULL)                             \
            goto error;                              \
    } while (0)

    GET(kind, s_kind);
    if (!PyUnicode_CheckExact(kind) ||
        (PyUnicode_Compare(kind, s_span) != 0 && PyUnicode_Compare(kind, s_instant) != 0))
        goto done; /* activities, log messages: the Python code */
    GET(track, s_track);
    GET(overlapping, s_overlapping);
    if (track != Py_None || overlapping != Py_False)
        goto done;
    GET(error, s_error);
    if (error != Py_None)
        goto done;
    GET(flows, s_flows);
    GET(terminating, s_terminating_flows);
    if (!PyTuple_CheckExact(flows) || PyTuple_GET_SIZE(flows) || !PyTuple_CheckExact(terminating) ||
        PyTuple_GET_SIZE(terminating))
        goto done;
    if (begin) {
        GET(trace_id, s_trace_id);
        int t = PyObject_IsTrue(trace_id);
        if (t < 0)
            goto error;
        if (t)
            goto done; /* correlation id: the Python code */
    }
    GET(adjusted, s_adjusted_count);
    if (!PyFloat_CheckExact(adjusted) || PyFloat_AS_DOUBLE(adjusted) != 1.0)
        goto done;

    te->len = 0;
    if (put_obj(te, tags[begin ? T_TYPE_BEGIN : T_TYPE_INSTANT]) < 0)
        goto error;
    GET(name, s_name);
    PyObject *ref = PyDict_GetItemWithError(name_refs, name);
    if (ref == NULL) {
        if (PyErr_Occurred())
            goto error;
        goto done;
    }
    if (put_obj(te, ref) < 0)
        goto error;
    GET(categories, s_categories);
    if (!PyTuple_CheckExact(categories))
        goto done;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(categories); i++) {
        ref = PyDict_GetItemWithError(category_refs, PyTuple_GET_ITEM(categories, i));
        if (ref == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto done;
        }
        if (put_obj(te, ref) < 0)
            goto error;
    }
    GET(level, s_level);
    if (!PyLong_CheckExact(level))
        goto done;
    long lv = PyLong_AsLong(level);
    if (lv == -1 && PyErr_Occurred())
        goto error;
    if (lv != 1) {
        ref = PyDict_GetItemWithError(level_annotations, level);
        if (ref == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto done;
        }
        if (put_obj(te, ref) < 0)
            goto error;
    }
    GET(md, s_metadata);
    if (!PyDict_CheckExact(md))
        goto done;
    PyObject *file = PyDict_GetItemWithError(md, s_code_file);
    if (file == NULL && PyErr_Occurred())
        goto error;
    if (file != NULL) { /* where the code is: an interned source location */
        PyObject *line = PyDict_GetItemWithError(md, s_code_line);
        if (line == NULL && PyErr_Occurred())
            goto error;
        PyObject *function = PyDict_GetItemWithError(md, s_code_function);
        if (function == NULL) {
            if (PyErr_Occurred())
                goto error;
            function = s_empty;
        }
        if (PyUnicode_CheckExact(file) && line != NULL && PyLong_CheckExact(line) &&
            PyUnicode_CheckExact(function)) {
            source_key = PyTuple_Pack(3, file, function, line);
            if (source_key == NULL)
                goto error;
            PyObject *iid = PyDict_GetItemWithError(sources, source_key);
            if (iid == NULL) {
                if (PyErr_Occurred())
                    goto error;
                goto done;
            }
            unsigned long long v = PyLong_AsUnsignedLongLong(iid);
            if (v == (unsigned long long)-1 && PyErr_Occurred())
                goto error;
            if (put_obj(te, tags[T_SOURCE_LOCATION]) < 0 || put_varint(te, (uint64_t)v) < 0)
                goto error;
            code_handled = 1;
        }
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(md, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key))
            goto done;
        if (code_handled && (PyUnicode_Compare(key, s_code_file) == 0 ||
                             PyUnicode_Compare(key, s_code_line) == 0 ||
                             PyUnicode_Compare(key, s_code_function) == 0))
            continue;
        ref = PyDict_GetItemWithError(annotation_refs, key);
        if (ref == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto done;
        }
        int r = put_annotation(te, scratch, ref, value);
        if (r < 0)
            goto error;
        if (r == 0)
            goto done;
    }
    handled = 1;
    goto done;

error:
    handled = -1;
done:
    Py_XDECREF(kind);
    Py_XDECREF(track);
    Py_XDECREF(overlapping);
    Py_XDECREF(name);
    Py_XDECREF(categories);
    Py_XDECREF(level);
    Py_XDECREF(adjusted);
    Py_XDECREF(md);
    Py_XDECREF(error);
    Py_XDECREF(flows);
    Py_XDECREF(terminating);
    Py_XDECREF(trace_id);
    Py_XDECREF(source_key);
    return handled;
#undef GET
}

/* A framed packet: 0x0a, length, head (timestamp), [track event], tail. */
static PyObject *framed(const char *head, Py_ssize_t head_len, Buf *te, int with_event, PyObject *tail) {
    Py_ssize_t body = head_len + PyBytes_GET_SIZE(tail);
    if (with_event)
        body += PyBytes_GET_SIZE(tags[T_TRACK_EVENT]) + varint_size((uint64_t)te->len) + te->len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, 1 + varint_size((uint64_t)body) + body);
    if (out == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(out);
    *p++ = 0x0a;
    p = write_varint(p, (uint64_t)body);
    memcpy(p, head, (size_t)head_len);
    p += head_len;
    if (with_event) {
        memcpy(p, PyBytes_AS_STRING(tags[T_TRACK_EVENT]), (size_t)PyBytes_GET_SIZE(tags[T_TRACK_EVENT]));
        p += PyBytes_GET_SIZE(tags[T_TRACK_EVENT]);
        p = write_varint(p, (uint64_t)te->len);
        memcpy(p, te->data, (size_t)te->len);
        p += te->len;
    }
    memcpy(p, PyBytes_AS_STRING(tail), (size_t)PyBytes_GET_SIZE(tail));
    return out;
}

static int set_last_ts(PyObject *seq, long long last) {
    PyObject *v = PyLong_FromLongLong(last);
    if (v == NULL)
        return -1;
    int r = PyObject_SetAttr(seq, s_last_ts, v);
    Py_DECREF(v);
    return r;
}

static PyObject *encode_items(PyObject *self, PyObject *args) {
    PyObject *seq, *items, *tracks, *out;
    if (!PyArg_ParseTuple(args, "OO!O!O!:encode_items", &seq, &PyList_Type, &items, &PyDict_Type, &tracks,
                          &PyList_Type, &out))
        return NULL;
    if (tags[0] == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tracebridge._speedups: configure() was not called");
        return NULL;
    }
    PyObject *refs[4] = {NULL, NULL, NULL, NULL};
    PyObject *sources = NULL, *needs = NULL, *end_tail = NULL, *begun = NULL;
    Buf te = {NULL, 0, 0}, scratch = {NULL, 0, 0};
    PyObject *result = NULL;
    long long last;

    PyObject *last_obj = PyObject_GetAttr(seq, s_last_ts);
    if (last_obj == NULL)
        return NULL;
    last = PyLong_AsLongLong(last_obj);
    Py_DECREF(last_obj);
    if (last == -1 && PyErr_Occurred())
        return NULL;
    PyObject *names[4] = {s_name_refs, s_category_refs, s_level_annotations, s_annotation_refs};
    for (int i = 0; i < 4; i++) {
        refs[i] = PyObject_GetAttr(seq, names[i]);
        if (refs[i] == NULL)
            goto finally;
        if (!PyDict_Check(refs[i])) {
            PyErr_SetString(PyExc_TypeError, "encode_items: a sequence's tables must be dicts");
            goto finally;
        }
    }
    if ((sources = PyObject_GetAttr(seq, s_sources)) == NULL || !PyDict_Check(sources) ||
        (needs = PyObject_GetAttr(seq, s_seq_bytes_needs)) == NULL || !PyBytes_Check(needs) ||
        (end_tail = PyObject_GetAttr(seq, s_end_tail)) == NULL || !PyBytes_Check(end_tail)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "encode_items: unexpected sequence fields");
        goto finally;
    }

    Py_ssize_t n = PyList_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 7) {
            PyErr_SetString(PyExc_TypeError, "encode_items: items are 7-tuples");
            goto finally;
        }
        PyObject *ts_obj = PyTuple_GET_ITEM(item, 0), *phase_obj = PyTuple_GET_ITEM(item, 5),
                 *ev = PyTuple_GET_ITEM(item, 6);
        int overflow = 0;
        long long ts = PyLong_AsLongLongAndOverflow(ts_obj, &overflow);
        if (ts == -1 && PyErr_Occurred())
            goto finally;
        long phase = PyLong_AsLong(phase_obj);
        if (phase == -1 && PyErr_Occurred())
            goto finally;
        int fast = 0, with_event = 1;
        if (!overflow && ts >= 0) {
            if (phase == 2) { /* SLICE_END */
                if (PyDict_GET_SIZE(tracks) == 0) {
                    begun = PyObject_GetAttr(ev, s_begun);
                    if (begun == NULL)
                        goto finally;
                    fast = begun == Py_False;
                    Py_CLEAR(begun);
                    with_event = 0;
                }
            } else if (phase == 1 || phase == 3) {
                fast = track_event(refs, sources, ev, phase == 1, &te, &scratch);
                if (fast < 0)
                    goto finally;
            }
        }
        PyObject *packet;
        if (fast) {
            char head[24];
            char *p = head;
            memcpy(p, PyBytes_AS_STRING(tags[T_TIMESTAMP]), (size_t)PyBytes_GET_SIZE(tags[T_TIMESTAMP]));
            p += PyBytes_GET_SIZE(tags[T_TIMESTAMP]);
            if (ts >= last) {
                p = write_varint(p, (uint64_t)(ts - last));
                last = ts;
            } else {
                p = write_varint(p, (uint64_t)ts);
                memcpy(p, PyBytes_AS_STRING(tags[T_ABSOLUTE_CLOCK]),
                       (size_t)PyBytes_GET_SIZE(tags[T_ABSOLUTE_CLOCK]));
                p += PyBytes_GET_SIZE(tags[T_ABSOLUTE_CLOCK]);
            }
            packet = framed(head, p - head, &te, with_event, with_event ? needs : end_tail);
        } else { /* the Python code: it interns what is new and handles every other case */
            if (set_last_ts(seq, last) < 0)
                goto finally;
            packet = PyObject_CallMethodObjArgs(seq, s_packet, ts_obj, phase_obj, ev, tracks, NULL);
            if (packet == NULL)
                goto finally;
            PyObject *now = PyObject_GetAttr(seq, s_last_ts);
            if (now == NULL) {
                Py_DECREF(packet);
                goto finally;
            }
            last = PyLong_AsLongLong(now);
            Py_DECREF(now);
            if (last == -1 && PyErr_Occurred()) {
                Py_DECREF(packet);
                goto finally;
            }
        }
        if (packet == NULL)
            goto finally;
        int r = PyList_Append(out, packet);
        Py_DECREF(packet);
        if (r < 0)
            goto finally;
    }
    if (set_last_ts(seq, last) < 0)
        goto finally;
    result = Py_NewRef(Py_None);

finally:
    for (int i = 0; i < 4; i++)
        Py_XDECREF(refs[i]);
    Py_XDECREF(sources);
    Py_XDECREF(needs);
    Py_XDECREF(end_tail);
    Py_XDECREF(begun);
    PyMem_Free(te.data);
    PyMem_Free(scratch.data);
    return result;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *given;
    if (!PyArg_ParseTuple(args, "O!:configure", &PyTuple_Type, &given))
        return NULL;
    if (PyTuple_GET_SIZE(given) != T_COUNT) {
        PyErr_Format(PyExc_ValueError, "configure: expected %d tags", T_COUNT);
        return NULL;
    }
    for (int i = 0; i < T_COUNT; i++) {
        PyObject *t = PyTuple_GET_ITEM(given, i);
        if (!PyBytes_CheckExact(t) || PyBytes_GET_SIZE(t) > 4) {
            PyErr_SetString(PyExc_TypeError, "configure: tags are short bytes");
            return NULL;
        }
    }
    for (int i = 0; i < T_COUNT; i++)
        Py_XSETREF(tags[i], Py_NewRef(PyTuple_GET_ITEM(given, i)));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Set the wire tags the encoder writes (from the schema)."},
    {"encode_items", encode_items, METH_VARARGS,
     "encode_items(seq, items, tracks, out): append the framed packets of a sorted batch to out."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tracebridge._speedups", "The compiled half of tracebridge's writer.", -1,
    methods,
};

#define INTERN(var, text)                                  \
    do {                                                   \
        var = PyUnicode_InternFromString(text);            \
        if (var == NULL)                                   \
            return NULL;                                   \
    } while (0)

PyMODINIT_FUNC PyInit__speedups(void) {
    INTERN(s_kind, "kind");
    INTERN(s_name, "name");
    INTERN(s_track, "track");
    INTERN(s_overlapping, "overlapping");
    INTERN(s_categories, "categories");
    INTERN(s_level, "level");
    INTERN(s_adjusted_count, "adjusted_count");
    INTERN(s_metadata, "metadata");
    INTERN(s_error, "error");
    INTERN(s_flows, "flows");
    INTERN(s_terminating_flows, "terminating_flows");
    INTERN(s_trace_id, "trace_id");
    INTERN(s_begun, "begun");
    INTERN(s_last_ts, "last_ts");
    INTERN(s_name_refs, "name_refs");
    INTERN(s_category_refs, "category_refs");
    INTERN(s_level_annotations, "level_annotations");
    INTERN(s_annotation_refs, "annotation_refs");
    INTERN(s_sources, "sources");
    INTERN(s_seq_bytes_needs, "seq_bytes_needs");
    INTERN(s_end_tail, "end_tail");
    INTERN(s_packet, "_packet");
    INTERN(s_span, "span");
    INTERN(s_instant, "instant");
    INTERN(s_code_file, "code.filepath");
    INTERN(s_code_line, "code.lineno");
    INTERN(s_code_function, "code.function");
    INTERN(s_empty, "");
    return PyModule_Create(&module);
}
