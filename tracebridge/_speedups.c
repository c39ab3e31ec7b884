/* tracebridge._speedups: the compiled accelerator. Each part does what a piece of pure-Python code does,
 * with the same result, and calls that code back for whatever is rare:
 *
 * - SpanScope: a span's __enter__ and __exit__ (spans._PyScope in Python); tests/test_span_paths.py runs
 *   one workload on both paths and compares what they record.
 * - span_events: the writer's record-to-event step for the commonest records: spans queued as (name,
 *   level, start, end) tuples, recorded Span objects, and log messages and instants (Record objects),
 *   whose name and metadata need no work (Session._events, EventConversion._compact_event and _to_event).
 * - EventBatch: what span_events makes for a sink that takes compact events: its compact spans held as C
 *   values, which encode_events reads in place, so that a plain span costs no object from the thread's
 *   queue to the file (Python reads them as compact event tuples).
 * - encode_events: a batch of a thread's events sorted and encoded as framed Perfetto packets
 *   (_Sequence.encode), written into one buffer (a PacketRun, which join_chunks cuts between packets). Events whose parts are interned on the sequence (categories, level annotation,
 *   annotation names, source locations), but for a new name or log body (interned here), and whose
 *   values are plain (str, int, float, bool, None) are encoded here, flows, correlation ids and log
 *   messages included; every other event goes through seq._packet(), which interns what is new (so that
 *   the next such event is encoded here). tests/sinks/test_speedups.py compares the bytes of both paths
 *   on random event streams, and the events of both record-to-event steps.
 * - log_record: a plain logging.LogRecord's Record (tracebridge.logging.record_from_log), for records
 *   with nothing out of the ordinary; tests/test_logging.py compares both.
 *
 * The wire tags come from the Python schema (configure()), so field numbers live in one place; objects'
 * fields are read at the offsets of their __slots__, checked when configured.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <structmember.h> /* PyMemberDef (in Python.h from 3.12), T_OBJECT_EX */
#if PY_VERSION_HEX < 0x030B0000
#include <longintrepr.h> /* (in Python.h from 3.11) */
#endif

/* -- tags, set by configure() ------------------------------------------------------------------ */

enum {
    TAG_TIMESTAMP, TAG_ABSOLUTE_CLOCK, TAG_TYPE_BEGIN, TAG_TYPE_INSTANT, TAG_TRACK_EVENT, TAG_ANNOTATION,
    TAG_STRING, TAG_BOOL, TAG_INT, TAG_UINT, TAG_DOUBLE, TAG_SOURCE_LOCATION,
    /* interning (names, log bodies) and log messages */
    TAG_NAME_IID, TAG_INTERNED, TAG_I_NAMES, TAG_I_BODIES, TAG_INTERNED_IID, TAG_INTERNED_NAME, TAG_LOG,
    TAG_LOG_SOURCE, TAG_LOG_BODY, TAG_LOG_PRIO,
    /* flows and the correlation id (OpenTelemetry spans, spans with flows) */
    TAG_FLOWS, TAG_TERMINATING_FLOWS, TAG_CORRELATION, TAG_COUNT
};
static PyObject *tags[TAG_COUNT];

/* Attribute and key names, interned once. */
static PyObject *s_last_ts, *s_name_refs, *s_category_refs, *s_level_annotations, *s_annotation_refs,
    *s_sources, *s_seq_bytes_needs, *s_end_tail, *s_packet, *s_span, *s_instant, *s_code_file, *s_code_line,
    *s_code_function, *s_empty, *s_activity, *s_counter, *s_restart, *s_names, *s_bodies, *s_log, *s_file,
    *s_function, *s_line;
/* ... and those log_record reads. */
static PyObject *s_otel_trace;
static PyObject *s_msg, *s_args, *s_exc_info, *s_logger, *s_message_template, *s_message, *s_asctime,
    *s_trace_id, *s_funcName, *s_pathname, *s_lineno, *s_levelno, *s_dict, *s_name, *s_getMessage;


/* -- Event's fields ------------------------------------------------------------------------------ */

/* Event is a dataclass with slots=True: configure_events() finds where each field sits, so that events of
 * exactly that type are read (and made) without attribute lookups. Other objects are read by attribute. */
enum {
    F_KIND, F_NAME, F_START, F_END, F_LEVEL, F_METADATA, F_TID, F_THREAD_NAME, F_TRACK, F_OVERLAPPING,
    F_CATEGORIES, F_ADJUSTED, F_ERROR, F_FLOWS, F_TERMINATING, F_TRACE_ID, F_BEGUN, F_SPAN_ID, F_PARENT_ID,
    F_VALUE, F_SOURCE, F_COUNT
};
static const char *field_names[F_COUNT] = {
    "kind", "name", "start_ns", "end_ns", "level", "metadata", "thread_id", "thread_name", "track",
    "overlapping", "categories", "adjusted_count", "error", "flows", "terminating_flows", "trace_id", "begun",
    "span_id", "parent_id", "value", "source"};
static PyObject *field_attrs[F_COUNT]; /* the names as interned strings */
static Py_ssize_t field_off[F_COUNT];
static PyTypeObject *event_type;
static PyObject *event_template;
static Py_ssize_t slot_offsets[64];
static int slot_count;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* A compact event (a sink that says `takes_compact` gets them): the tuple (name, level, start_ns, end_ns,
 * metadata), a span whose other fields are Event's defaults (the template's). span_events makes them for
 * the spans that need nothing else, so that no Event is made (and freed) for each. */
static inline int compact_event(PyObject *ev) { return PyTuple_CheckExact(ev) && PyTuple_GET_SIZE(ev) == 5; }

/* A field of an event or a compact event (a new reference), NULL with an exception set on failure. */
static PyObject *field(PyObject *ev, int f) {
    if (Py_TYPE(ev) == event_type) {
        PyObject *v = SLOT(ev, field_off[f]);
        if (v != NULL)
            return Py_NewRef(v);
    } else if (compact_event(ev)) {
        static const signed char at[F_COUNT] = {[F_KIND] = -1, [F_NAME] = 0, [F_START] = 2, [F_END] = 3, [F_LEVEL] = 1,
            [F_METADATA] = 4, [F_TID] = -1, [F_THREAD_NAME] = -1, [F_TRACK] = -1, [F_OVERLAPPING] = -1,
            [F_CATEGORIES] = -1, [F_ADJUSTED] = -1, [F_ERROR] = -1, [F_FLOWS] = -1, [F_TERMINATING] = -1,
            [F_TRACE_ID] = -1, [F_BEGUN] = -1, [F_SPAN_ID] = -1, [F_PARENT_ID] = -1, [F_VALUE] = -1, [F_SOURCE] = -1};
        return Py_NewRef(at[f] >= 0 ? PyTuple_GET_ITEM(ev, at[f]) : SLOT(event_template, field_off[f]));
    }
    return PyObject_GetAttr(ev, field_attrs[f]);
}

static PyObject *new_event(PyObject *fields[7]);

/* The Event a compact event stands for (for the Python code), thread fields as the template's. */
static PyObject *expand_compact(PyObject *ev) {
    PyObject *fields[7];
    int order[7] = {0, 2, 3, 1, 4, -1, -1};
    for (int j = 0; j < 7; j++)
        fields[j] = Py_NewRef(order[j] >= 0 ? PyTuple_GET_ITEM(ev, order[j])
                                            : SLOT(event_template, field_off[j == 5 ? F_TID : F_THREAD_NAME]));
    return new_event(fields);
}

/* -- a batch of events with compact spans held as C values --------------------------------------- */

/* What span_events makes of a batch for a sink that takes compact events: each event is an object (an
 * Event, or a record the Python code converts) or a compact span held as C values (its name and metadata
 * the only objects, both shared), which encode_events reads in place; so a plain span costs no object from
 * the thread's queue to the file. To Python it is a read-only sequence whose compact spans are compact
 * events (5-tuples), so that whatever reads events in Python (the pure encoder, trace lines, the failure
 * paths) reads them as before. */
typedef struct {
    PyObject *obj; /* the event, or the compact span's name */
    PyObject *md;  /* a compact span's metadata; NULL: `obj` is an event */
    long long level, start, end;
    int left; /* `obj` is a record span_events left for the Python code to convert (see settled()) */
} EEntry;

typedef struct {
    PyObject_HEAD
    EEntry *items;
    Py_ssize_t len, cap;
} EventBatch;

static PyTypeObject EventBatchType;

static EventBatch *eb_new(void) {
    EventBatch *b = PyObject_GC_New(EventBatch, &EventBatchType);
    if (b == NULL)
        return NULL;
    b->items = NULL, b->len = b->cap = 0;
    PyObject_GC_Track(b);
    return b;
}

/* `items` (an array of `*cap` items of `size` bytes) reallocated twice as large (`first` items when it
 * has none), `*cap` updated; NULL with MemoryError set (then `items` and `*cap` are as they were). */
static void *grown(void *items, Py_ssize_t *cap, Py_ssize_t first, size_t size) {
    Py_ssize_t n = *cap ? *cap * 2 : first;
    void *p = n > PY_SSIZE_T_MAX / (Py_ssize_t)size ? NULL : PyMem_Realloc(items, (size_t)n * size);
    if (p == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    *cap = n;
    return p;
}

static int eb_push(EventBatch *b, EEntry e) {
    if (b->len == b->cap) {
        EEntry *items = grown(b->items, &b->cap, 64, sizeof(EEntry));
        if (items == NULL)
            return -1;
        b->items = items;
    }
    b->items[b->len++] = e;
    return 0;
}

/* Append an event, or a record left to convert (a new reference is taken). */
static int eb_append_event(EventBatch *b, PyObject *ev, int left) {
    EEntry e = {ev, NULL, 0, 0, 0, left};
    if (eb_push(b, e) < 0)
        return -1;
    Py_INCREF(ev);
    return 0;
}

/* Append a compact span: its name borrowed, its metadata stolen (released on failure too). */
static int eb_append_compact(EventBatch *b, PyObject *name, PyObject *md, long long level, long long start,
                             long long end) {
    EEntry e = {name, md, level, start, end, 0};
    if (eb_push(b, e) < 0) {
        Py_DECREF(md);
        return -1;
    }
    Py_INCREF(name);
    return 0;
}

/* The compact event (name, level, start_ns, end_ns, metadata) an entry stands for, or its event. */
static PyObject *eb_entry_object(const EEntry *e) {
    if (e->md == NULL)
        return Py_NewRef(e->obj);
    PyObject *level = PyLong_FromLongLong(e->level), *start = PyLong_FromLongLong(e->start),
             *end = PyLong_FromLongLong(e->end), *t = NULL;
    if (level != NULL && start != NULL && end != NULL)
        t = PyTuple_Pack(5, e->obj, level, start, end, e->md);
    Py_XDECREF(level);
    Py_XDECREF(start);
    Py_XDECREF(end);
    return t;
}

static Py_ssize_t eb_length(PyObject *self) { return ((EventBatch *)self)->len; }

static PyObject *eb_item(PyObject *self, Py_ssize_t i) {
    EventBatch *b = (EventBatch *)self;
    if (i < 0 || i >= b->len) {
        PyErr_SetString(PyExc_IndexError, "event batch index out of range");
        return NULL;
    }
    return eb_entry_object(&b->items[i]);
}

/* batch[i] (negative from the end), or batch[a:b:c] as a list. */
static PyObject *eb_subscript(PyObject *self, PyObject *key) {
    EventBatch *b = (EventBatch *)self;
    if (PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred())
            return NULL;
        return eb_item(self, i < 0 ? i + b->len : i);
    }
    if (!PySlice_Check(key)) {
        PyErr_Format(PyExc_TypeError, "event batch indices must be integers or slices, not %.200s",
                     Py_TYPE(key)->tp_name);
        return NULL;
    }
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(key, &start, &stop, &step) < 0)
        return NULL;
    Py_ssize_t n = PySlice_AdjustIndices(b->len, &start, &stop, step);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t k = 0, i = start; k < n; k++, i += step) {
        /* (the batch cannot change meanwhile: it has no method that changes it) */
        PyObject *o = eb_entry_object(&b->items[i]);
        if (o == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, k, o);
    }
    return out;
}

/* leftovers(): the records span_events left for the Python code, in order. */
static PyObject *eb_leftovers(PyObject *self, PyObject *unused) {
    EventBatch *b = (EventBatch *)self;
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out != NULL && i < b->len; i++)
        if (b->items[i].left && PyList_Append(out, b->items[i].obj) < 0)
            Py_CLEAR(out);
    return out;
}

/* settled(events): the batch with its leftovers replaced, in order, by what the Python code made of
 * them (None: nothing, a record it dropped); a new batch, its compact spans still C values. */
static PyObject *eb_settled(PyObject *self, PyObject *events) {
    EventBatch *b = (EventBatch *)self;
    if (!PyList_Check(events)) {
        PyErr_SetString(PyExc_TypeError, "settled: events must be a list");
        return NULL;
    }
    Py_ssize_t left = 0;
    for (Py_ssize_t i = 0; i < b->len; i++)
        left += b->items[i].left;
    if (PyList_GET_SIZE(events) != left) {
        PyErr_SetString(PyExc_ValueError, "settled: one event (or None) for each leftover");
        return NULL;
    }
    PyObject *keep = PyList_GetSlice(events, 0, left); /* (a reference each while the batch is made) */
    EventBatch *out = keep == NULL ? NULL : eb_new();
    for (Py_ssize_t i = 0, k = 0; out != NULL && i < b->len; i++) {
        EEntry e = b->items[i];
        int r = 0;
        if (e.left) {
            PyObject *ev = PyList_GET_ITEM(keep, k++);
            if (ev != Py_None)
                r = eb_append_event(out, ev, 0);
        } else if (e.md != NULL)
            r = eb_append_compact(out, e.obj, Py_NewRef(e.md), e.level, e.start, e.end);
        else
            r = eb_append_event(out, e.obj, 0);
        if (r < 0)
            Py_CLEAR(out);
    }
    Py_XDECREF(keep);
    return (PyObject *)out;
}

static PyObject *eb_sizeof(PyObject *self, PyObject *unused) {
    EventBatch *b = (EventBatch *)self;
    return PyLong_FromSsize_t((Py_ssize_t)sizeof(EventBatch) + b->cap * (Py_ssize_t)sizeof(EEntry));
}

static PyMethodDef eb_methods[] = {
    {"__sizeof__", eb_sizeof, METH_NOARGS, "The batch's size in memory, in bytes (its entries included)."},
    {"leftovers", eb_leftovers, METH_NOARGS, "The records span_events left for the Python code, in order."},
    {"settled", eb_settled, METH_O,
     "settled(events): a batch with the leftovers replaced by these events (None: left out), in order."},
    {NULL, NULL, 0, NULL},
};

static int eb_traverse(PyObject *self, visitproc visit, void *arg) {
    EventBatch *b = (EventBatch *)self;
    for (Py_ssize_t i = 0; i < b->len; i++) {
        Py_VISIT(b->items[i].obj);
        Py_VISIT(b->items[i].md);
    }
    return 0;
}

static int eb_clear(PyObject *self) {
    EventBatch *b = (EventBatch *)self;
    EEntry *items = b->items;
    Py_ssize_t n = b->len;
    b->items = NULL, b->len = b->cap = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(items[i].obj);
        Py_XDECREF(items[i].md);
    }
    PyMem_Free(items);
    return 0;
}

static void eb_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    eb_clear(self);
    PyObject_GC_Del(self);
}

static PyObject *eb_repr(PyObject *self) {
    return PyUnicode_FromFormat("<tracebridge EventBatch of %zd events>", ((EventBatch *)self)->len);
}

static PySequenceMethods eb_as_sequence = {.sq_length = eb_length, .sq_item = eb_item};
static PyMappingMethods eb_as_mapping = {.mp_length = eb_length, .mp_subscript = eb_subscript};

static PyTypeObject EventBatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tracebridge._speedups.EventBatch",
    .tp_basicsize = sizeof(EventBatch),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A thread's events for a sink that takes compact events (a read-only sequence; compact spans "
              "held as C values, read as compact events).",
    .tp_dealloc = eb_dealloc,
    .tp_traverse = eb_traverse,
    .tp_clear = eb_clear,
    .tp_repr = eb_repr,
    .tp_as_sequence = &eb_as_sequence,
    .tp_as_mapping = &eb_as_mapping,
    .tp_methods = eb_methods,
};

/* An event of a batch being encoded: an object, or a compact span held as C values (`c` set). */
typedef struct {
    PyObject *obj;
    const EEntry *c;
} EvRef;

/* A field of an event, as field() reads it, of a compact span too (a new reference). */
static PyObject *field_of(EvRef ev, int f) {
    if (ev.c == NULL)
        return field(ev.obj, f);
    switch (f) {
    case F_KIND:
        return Py_NewRef(s_span);
    case F_NAME:
        return Py_NewRef(ev.c->obj);
    case F_METADATA:
        return Py_NewRef(ev.c->md);
    case F_LEVEL:
        return PyLong_FromLongLong(ev.c->level);
    case F_START:
        return PyLong_FromLongLong(ev.c->start);
    case F_END:
        return PyLong_FromLongLong(ev.c->end);
    default:
        return Py_NewRef(SLOT(event_template, field_off[f]));
    }
}

/* The Event an event of a batch stands for, for the Python code (a compact one made whole). */
static PyObject *whole_event(EvRef ev) {
    if (ev.c != NULL) {
        PyObject *fields[7] = {Py_NewRef(ev.c->obj), PyLong_FromLongLong(ev.c->start),
                               PyLong_FromLongLong(ev.c->end), PyLong_FromLongLong(ev.c->level),
                               Py_NewRef(ev.c->md), Py_NewRef(SLOT(event_template, field_off[F_TID])),
                               Py_NewRef(SLOT(event_template, field_off[F_THREAD_NAME]))};
        if (fields[1] == NULL || fields[2] == NULL || fields[3] == NULL) {
            for (int j = 0; j < 7; j++)
                Py_XDECREF(fields[j]);
            return NULL;
        }
        return new_event(fields);
    }
    return compact_event(ev.obj) ? expand_compact(ev.obj) : Py_NewRef(ev.obj);
}

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
    if (!PyBytes_Check(bytes)) { /* (the sequence's tables hold encoded bytes: never reached) */
        PyErr_SetString(PyExc_TypeError, "tracebridge._speedups: an encoded part is not bytes");
        return -1;
    }
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

/* -- encoded packets in one buffer --------------------------------------------------------------- */

/* What encode_events returns: a batch's framed packets written one after the other into one buffer (no
 * bytes object per packet), with where each ends, so that join_chunks cuts the compressed records between
 * the same packets as it does a list of the packets as bytes. A read-only bytes-like object. */
typedef struct {
    PyObject_HEAD
    char *data;
    Py_ssize_t size;
    Py_ssize_t *ends; /* the end of each packet (of the restart packets together: one), ascending */
    Py_ssize_t count;
} PacketRun;

static PyTypeObject PacketRunType;

static int pr_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    PacketRun *r = (PacketRun *)self;
    return PyBuffer_FillInfo(view, self, r->data, r->size, 1, flags);
}

static void pr_dealloc(PyObject *self) {
    PacketRun *r = (PacketRun *)self;
    PyMem_Free(r->data);
    PyMem_Free(r->ends);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *pr_repr(PyObject *self) {
    PacketRun *r = (PacketRun *)self;
    return PyUnicode_FromFormat("<tracebridge PacketRun of %zd packets, %zd bytes>", r->count, r->size);
}

static PyBufferProcs pr_as_buffer = {.bf_getbuffer = pr_getbuffer};

/* len(): its bytes, as of the bytes it stands for; bytes(run) copies them. */
static Py_ssize_t pr_length(PyObject *self) { return ((PacketRun *)self)->size; }

static PyObject *pr_bytes(PyObject *self, PyObject *unused) {
    PacketRun *r = (PacketRun *)self;
    return PyBytes_FromStringAndSize(r->data, r->size);
}

static PyObject *pr_sizeof(PyObject *self, PyObject *unused) {
    PacketRun *r = (PacketRun *)self;
    return PyLong_FromSsize_t((Py_ssize_t)sizeof(PacketRun) + r->size + r->count * (Py_ssize_t)sizeof(Py_ssize_t));
}

static PySequenceMethods pr_as_sequence = {.sq_length = pr_length};

static PyMethodDef pr_methods[] = {
    {"__bytes__", pr_bytes, METH_NOARGS, "The packets' bytes, one after the other."},
    {"__sizeof__", pr_sizeof, METH_NOARGS, "The run's size in memory, in bytes."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PacketRunType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tracebridge._speedups.PacketRun",
    .tp_basicsize = sizeof(PacketRun),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Framed packets in one buffer (bytes-like); join_chunks([run], 1) gives them one by one.",
    .tp_dealloc = pr_dealloc,
    .tp_repr = pr_repr,
    .tp_as_buffer = &pr_as_buffer,
    .tp_as_sequence = &pr_as_sequence,
    .tp_methods = pr_methods,
};

/* Packets being written: the buffer and where each packet ends. */
typedef struct {
    Buf data;
    Py_ssize_t *ends;
    Py_ssize_t count, cap;
} Packets;

/* The packet written since the last one ends here. */
static int packets_mark(Packets *p) {
    if (p->count == p->cap) {
        Py_ssize_t *ends = grown(p->ends, &p->cap, 256, sizeof(Py_ssize_t));
        if (ends == NULL)
            return -1;
        p->ends = ends;
    }
    p->ends[p->count++] = p->data.len;
    return 0;
}

static void packets_free(Packets *p) {
    PyMem_Free(p->data.data);
    PyMem_Free(p->ends);
    memset(p, 0, sizeof(*p));
}

/* The PacketRun of what was written (the buffers move into it; `p` is emptied). */
static PyObject *packets_run(Packets *p) {
    PacketRun *r = PyObject_New(PacketRun, &PacketRunType);
    if (r == NULL) {
        packets_free(p);
        return NULL;
    }
    r->data = p->data.data, r->size = p->data.len, r->ends = p->ends, r->count = p->count;
    memset(p, 0, sizeof(*p));
    return (PyObject *)r;
}

/* -- one event ----------------------------------------------------------------------------------- */

/* 1: encoded into `te`; 0: not a case handled here (the Python code encodes it); -1: error. */
static int annotation_value(Buf *te, PyObject *value) {
    if (value == Py_None)
        return 1;
    if (PyBool_Check(value)) {
        if (put_obj(te, tags[TAG_BOOL]) < 0)
            return -1;
        return put(te, value == Py_True ? "\x01" : "\x00", 1) < 0 ? -1 : 1;
    }
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (!overflow) {
            if (put_obj(te, tags[TAG_INT]) < 0)
                return -1;
            return put_varint(te, (uint64_t)v) < 0 ? -1 : 1;
        }
        if (overflow > 0) {
            unsigned long long u = PyLong_AsUnsignedLongLong(value);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                return 0; /* beyond 64 bits: written as text by the Python code */
            }
            if (put_obj(te, tags[TAG_UINT]) < 0)
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
        if (put_obj(te, tags[TAG_DOUBLE]) < 0)
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
        if (put_obj(te, tags[TAG_STRING]) < 0 || put_varint(te, (uint64_t)n) < 0 || put(te, utf8, n) < 0)
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
    if (put_obj(te, tags[TAG_ANNOTATION]) < 0 || put_varint(te, (uint64_t)scratch->len) < 0 ||
        put(te, scratch->data, scratch->len) < 0)
        return -1;
    return 1;
}

/* Append the encoded reference table[key] to `te`: 1 done, 0 not interned yet (the Python code interns
 * it), -1 error. */
static int put_ref(Buf *te, PyObject *table, PyObject *key) {
    PyObject *ref = PyDict_GetItemWithError(table, key);
    if (ref == NULL)
        return PyErr_Occurred() ? -1 : 0;
    return put_obj(te, ref) < 0 ? -1 : 1;
}

/* A framed packet written to `out`: 0x0a, length, head (timestamp), [track event], tail, [interned data]. */
static int put_framed(Packets *out, const char *head, Py_ssize_t head_len, Buf *te, int with_event,
                      PyObject *tail, Buf *interned) {
    Py_ssize_t body = head_len + PyBytes_GET_SIZE(tail);
    if (with_event)
        body += PyBytes_GET_SIZE(tags[TAG_TRACK_EVENT]) + varint_size((uint64_t)te->len) + te->len;
    if (interned->len)
        body += PyBytes_GET_SIZE(tags[TAG_INTERNED]) + varint_size((uint64_t)interned->len) + interned->len;
    if (buf_reserve(&out->data, 1 + varint_size((uint64_t)body) + body) < 0)
        return -1;
    char *p = out->data.data + out->data.len;
    *p++ = 0x0a;
    p = write_varint(p, (uint64_t)body);
    memcpy(p, head, (size_t)head_len);
    p += head_len;
    if (with_event) {
        memcpy(p, PyBytes_AS_STRING(tags[TAG_TRACK_EVENT]), (size_t)PyBytes_GET_SIZE(tags[TAG_TRACK_EVENT]));
        p += PyBytes_GET_SIZE(tags[TAG_TRACK_EVENT]);
        p = write_varint(p, (uint64_t)te->len);
        memcpy(p, te->data, (size_t)te->len);
        p += te->len;
    }
    memcpy(p, PyBytes_AS_STRING(tail), (size_t)PyBytes_GET_SIZE(tail));
    p += PyBytes_GET_SIZE(tail);
    if (interned->len) {
        memcpy(p, PyBytes_AS_STRING(tags[TAG_INTERNED]), (size_t)PyBytes_GET_SIZE(tags[TAG_INTERNED]));
        p += PyBytes_GET_SIZE(tags[TAG_INTERNED]);
        p = write_varint(p, (uint64_t)interned->len);
        memcpy(p, interned->data, (size_t)interned->len);
        p += interned->len;
    }
    out->data.len = p - out->data.data;
    return packets_mark(out);
}

static int set_last_ts(PyObject *seq, long long last) {
    PyObject *v = PyLong_FromLongLong(last);
    if (v == NULL)
        return -1;
    int r = PyObject_SetAttr(seq, s_last_ts, v);
    Py_DECREF(v);
    return r;
}

#define TS_LIMIT (1LL << 62)

/* -- the packet loop over a sorted batch ------------------------------------------------------------ */

/* The track event of a compact span's BEGIN, by its name, metadata and level (the objects compared by
 * identity: the batch holds them while it is encoded), when everything it refers to was interned already:
 * the sequence's tables only grow until the next batch, so the same span encodes to the same bytes for
 * the rest of the batch, and the next one like it is copied, not encoded. (A metadata dict is compared by
 * identity: it must not change while its batch is encoded. Those of compact spans are the shared empty
 * and code-location dicts, which nothing changes, or a span's own, taken when it ended.) */
#define MEMO_SLOTS 64
#define MEMO_BYTES 64
typedef struct {
    PyObject *name, *md; /* NULL: an empty slot */
    long long level;
    Py_ssize_t len;
    char te[MEMO_BYTES];
} Memo;

static inline Memo *memo_slot(Memo *memo, const EEntry *c) {
    uintptr_t h = ((uintptr_t)c->obj >> 4) ^ ((uintptr_t)c->md >> 6) ^ (uintptr_t)c->level;
    return &memo[(h ^ (h >> 7)) & (MEMO_SLOTS - 1)];
}

/* What the loop reads from a sequence once per batch. */
typedef struct {
    PyObject *seq;
    PyObject *refs[4];
    PyObject *sources, *needs, *end_tail, *names, *bodies;
    Buf te, scratch, interned;
    long long last;
    int slow; /* last_ts beyond the loop's range: the Python code encodes */
    Memo memo[MEMO_SLOTS];
} Enc;

static void enc_close(Enc *e) {
    for (int i = 0; i < 4; i++)
        Py_CLEAR(e->refs[i]);
    Py_CLEAR(e->sources);
    Py_CLEAR(e->needs);
    Py_CLEAR(e->end_tail);
    Py_CLEAR(e->names);
    Py_CLEAR(e->bodies);
    PyMem_Free(e->te.data);
    PyMem_Free(e->scratch.data);
    PyMem_Free(e->interned.data);
    e->te.data = e->scratch.data = e->interned.data = NULL;
}

static int enc_open(Enc *e, PyObject *seq) {
    memset(e, 0, sizeof(*e));
    e->seq = seq;
    if (tags[0] == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tracebridge._speedups: configure() was not called");
        return -1;
    }
    PyObject *names[4] = {s_name_refs, s_category_refs, s_level_annotations, s_annotation_refs};
    for (int i = 0; i < 4; i++) {
        e->refs[i] = PyObject_GetAttr(seq, names[i]);
        if (e->refs[i] == NULL)
            return -1;
        if (!PyDict_Check(e->refs[i])) {
            PyErr_SetString(PyExc_TypeError, "tracebridge._speedups: a sequence's tables must be dicts");
            return -1;
        }
    }
    if ((e->sources = PyObject_GetAttr(seq, s_sources)) == NULL || !PyDict_Check(e->sources) ||
        (e->needs = PyObject_GetAttr(seq, s_seq_bytes_needs)) == NULL || !PyBytes_Check(e->needs) ||
        (e->end_tail = PyObject_GetAttr(seq, s_end_tail)) == NULL || !PyBytes_Check(e->end_tail) ||
        (e->names = PyObject_GetAttr(seq, s_names)) == NULL || !PyDict_Check(e->names) ||
        (e->bodies = PyObject_GetAttr(seq, s_bodies)) == NULL || !PyDict_Check(e->bodies)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "tracebridge._speedups: unexpected sequence fields");
        return -1;
    }
    return 0;
}

static int enc_read_last(Enc *e) {
    PyObject *last_obj = PyObject_GetAttr(e->seq, s_last_ts);
    if (last_obj == NULL)
        return -1;
    int overflow = 0;
    e->last = PyLong_AsLongLongAndOverflow(last_obj, &overflow);
    Py_DECREF(last_obj);
    if (e->last == -1 && PyErr_Occurred())
        return -1;
    e->slow = overflow || e->last <= -TS_LIMIT || e->last >= TS_LIMIT;
    return 0;
}

/* f"{n:032x}" for an int 0 < n < 2**128 into out (33 chars with the NUL): 1 done, 0 out of that range,
 * -1 error. */
static int hex128(PyObject *n, char out[33]) {
    unsigned char bytes[16];
#if PY_VERSION_HEX >= 0x030D0000
    Py_ssize_t need = PyLong_AsNativeBytes(
        n, bytes, 16, Py_ASNATIVEBYTES_BIG_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER | Py_ASNATIVEBYTES_REJECT_NEGATIVE);
    if (need < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return -1;
        PyErr_Clear(); /* negative */
        return 0;
    }
    if (need > 16)
        return 0;
#else
    if (_PyLong_Sign(n) < 0 || _PyLong_NumBits(n) > 128)
        return 0;
    if (_PyLong_AsByteArray((PyLongObject *)n, bytes, 16, 0, 0) < 0)
        return -1;
#endif
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0xF];
    }
    out[32] = 0;
    return 1;
}

/* A name or log body to intern when the event is taken here: its new iid, or the iid it has in the table
 * while its encoded reference is not cached yet. */
typedef struct {
    PyObject *text; /* borrowed; NULL: nothing pending */
    uint64_t iid;
    int is_new;
} Pending;

/* The iid of `text` in `table` (a dict of str -> int), or the one it would get: *pending filled, 1 done, 0
 * the Python code encodes (text that is not valid UTF-8), -1 error. */
static int pending_iid(PyObject *table, PyObject *text, Pending *pending) {
    PyObject *iid = PyDict_GetItemWithError(table, text);
    if (iid == NULL) {
        if (PyErr_Occurred())
            return -1;
        if (PyUnicode_AsUTF8AndSize(text, NULL) == NULL) { /* lone surrogates: the Python code repairs */
            PyErr_Clear();
            return 0;
        }
        pending->iid = (uint64_t)PyDict_GET_SIZE(table) + 1;
        pending->is_new = 1;
    } else {
        unsigned long long v = PyLong_AsUnsignedLongLong(iid);
        if (v == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        pending->iid = v;
        pending->is_new = 0;
    }
    pending->text = text;
    return 1;
}

/* Intern what is pending: table[text] = iid, and its InternedData entry (field `entry_tag`: {iid, name})
 * appended to `interned`, as _Sequence._intern does. 0 done, -1 error. */
static int commit_pending(PyObject *table, Pending *pending, int entry_tag, Buf *interned, Buf *scratch) {
    if (!pending->is_new)
        return 0;
    PyObject *iid = PyLong_FromUnsignedLongLong(pending->iid);
    if (iid == NULL)
        return -1;
    int r = PyDict_SetItem(table, pending->text, iid);
    Py_DECREF(iid);
    if (r < 0)
        return -1;
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(pending->text, &n);
    if (utf8 == NULL)
        return -1;
    scratch->len = 0;
    if (buf_reserve(scratch, 32) < 0 || put_obj(scratch, tags[TAG_INTERNED_IID]) < 0)
        return -1;
    scratch->len = write_varint(scratch->data + scratch->len, pending->iid) - scratch->data;
    if (put_obj(scratch, tags[TAG_INTERNED_NAME]) < 0 || put_varint(scratch, (uint64_t)n) < 0 ||
        put(scratch, utf8, n) < 0)
        return -1;
    if (put_obj(interned, tags[entry_tag]) < 0 || put_varint(interned, (uint64_t)scratch->len) < 0 ||
        put(interned, scratch->data, scratch->len) < 0)
        return -1;
    return 0;
}

/* The track event of a BEGIN, INSTANT or log message into e->te, and the entries it interns into
 * e->interned: 1 done, 0 not handled here, -1 error. What is new in it may be its name and a log
 * message's body (interned here, in the order _Sequence._packet interns them: name first, body last);
 * anything else new (a category, an annotation name, a source location) goes to the Python code, and so
 * does anything rare (tracks, errors, sampling weights, values to repair, ids and flows that are int
 * subclasses). Flows and the correlation id (the trace id, on a BEGIN) are written here. */
static int track_event(Enc *e, EvRef ev, int begin) {
    PyObject *name_refs = e->refs[0], *category_refs = e->refs[1], *level_annotations = e->refs[2],
             *annotation_refs = e->refs[3];
    Buf *te = &e->te, *scratch = &e->scratch;
    int handled = 0, is_log = 0;
    PyObject *kind = NULL, *track = NULL, *overlapping = NULL, *name = NULL, *categories = NULL,
             *level = NULL, *adjusted = NULL, *md = NULL, *error = NULL, *flows = NULL,
             *terminating = NULL, *trace_id = NULL, *source_key = NULL, *value = NULL, *source = NULL,
             *src_file = NULL, *src_function = NULL, *src_line = NULL, *log_key = NULL, *template = NULL;
    Pending new_name = {NULL, 0, 0}, new_body = {NULL, 0, 0};
    int code_handled = 0;
    e->interned.len = 0;

#define GET(var, f)                                  \
    do {                                             \
        var = field_of(ev, f);                       \
        if (var == NULL)                             \
            goto error;                              \
    } while (0)

    GET(kind, F_KIND);
    if (!PyUnicode_CheckExact(kind))
        goto done;
    if (PyUnicode_Compare(kind, s_span) != 0 && PyUnicode_Compare(kind, s_instant) != 0) {
        if (begin || PyUnicode_Compare(kind, s_log) != 0)
            goto done; /* activities: the Python code */
        is_log = 1;
    }
    GET(track, F_TRACK);
    GET(overlapping, F_OVERLAPPING);
    if (track != Py_None || overlapping != Py_False)
        goto done;
    GET(error, F_ERROR);
    if (error != Py_None)
        goto done;
    GET(flows, F_FLOWS);
    GET(terminating, F_TERMINATING);
    if (!PyTuple_CheckExact(flows) || !PyTuple_CheckExact(terminating))
        goto done;
    for (int k = 0; k < 2; k++) { /* (ints and bools only: a subclass masks and formats its own way) */
        PyObject *ids = k ? terminating : flows;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(ids); i++)
            if (!PyLong_CheckExact(PyTuple_GET_ITEM(ids, i)) && !PyBool_Check(PyTuple_GET_ITEM(ids, i)))
                goto done;
    }
    char correlation[33] = {0}; /* the trace id as 32 hex digits, which the UI relates slices by */
    if (begin && !is_log) {
        GET(trace_id, F_TRACE_ID);
        if (!PyLong_CheckExact(trace_id) && !PyBool_Check(trace_id))
            goto done;
        int t = PyObject_IsTrue(trace_id);
        if (t < 0)
            goto error;
        if (t) {
            int r = hex128(trace_id, correlation);
            if (r < 0)
                goto error;
            if (r == 0)
                goto done; /* negative, or beyond 128 bits: the Python code writes what it makes of it */
        }
    }
    GET(adjusted, F_ADJUSTED);
    if (!PyFloat_CheckExact(adjusted) || PyFloat_AS_DOUBLE(adjusted) != 1.0)
        goto done;

    te->len = 0;
    if (put_obj(te, tags[begin ? TAG_TYPE_BEGIN : TAG_TYPE_INSTANT]) < 0)
        goto error;
    GET(name, F_NAME);
    GET(md, F_METADATA);
    if (!PyUnicode_CheckExact(name) || !PyDict_CheckExact(md))
        goto done;
    /* A log message is named after its template (its message is the body), unless that is the message. */
    if (is_log) { /* (held: user code may run before it is used, and change the metadata) */
        template = Py_XNewRef(PyDict_GetItemWithError(md, s_message_template));
        if (template == NULL && PyErr_Occurred())
            goto error;
        if (template != NULL && !(PyUnicode_CheckExact(template) && PyUnicode_GET_LENGTH(template) > 0 &&
                                  PyUnicode_Compare(template, name) != 0))
            Py_CLEAR(template);
        if (PyErr_Occurred())
            goto error;
    }
    PyObject *slice_name = template != NULL ? template : name;
    int got = put_ref(te, name_refs, slice_name);
    if (got < 0)
        goto error;
    if (got == 0) { /* a name not referenced yet on this sequence: interned with this event */
        int r = pending_iid(e->names, slice_name, &new_name);
        if (r <= 0) {
            got = r;
            goto put_failed;
        }
        if (put_obj(te, tags[TAG_NAME_IID]) < 0 || put_varint(te, new_name.iid) < 0)
            goto error;
    }
    GET(categories, F_CATEGORIES);
    if (!PyTuple_CheckExact(categories))
        goto done;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(categories); i++)
        if ((got = put_ref(te, category_refs, PyTuple_GET_ITEM(categories, i))) <= 0)
            goto put_failed;
    GET(level, F_LEVEL);
    if (!PyLong_CheckExact(level))
        goto done;
    int lv_overflow = 0;
    long lv = PyLong_AsLongAndOverflow(level, &lv_overflow);
    if (lv == -1 && PyErr_Occurred())
        goto error;
    if ((lv_overflow || lv != 1) && (got = put_ref(te, level_annotations, level)) <= 0)
        goto put_failed;
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
            PyObject *iid = PyDict_GetItemWithError(e->sources, source_key);
            if (iid == NULL) {
                if (PyErr_Occurred())
                    goto error;
                goto done;
            }
            unsigned long long v = PyLong_AsUnsignedLongLong(iid);
            if (v == (unsigned long long)-1 && PyErr_Occurred())
                goto error;
            if (put_obj(te, tags[TAG_SOURCE_LOCATION]) < 0 || put_varint(te, (uint64_t)v) < 0)
                goto error;
            code_handled = 1;
        }
    }
    PyObject *key, *mvalue;
    Py_ssize_t pos = 0;
    while (PyDict_Next(md, &pos, &key, &mvalue)) {
        if (!PyUnicode_CheckExact(key))
            goto done;
        if (code_handled && (PyUnicode_Compare(key, s_code_file) == 0 ||
                             PyUnicode_Compare(key, s_code_line) == 0 ||
                             PyUnicode_Compare(key, s_code_function) == 0))
            continue;
        if (template != NULL && PyUnicode_Compare(key, s_message_template) == 0)
            continue; /* (the name) */
        PyObject *ref = PyDict_GetItemWithError(annotation_refs, key);
        if (ref == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto done;
        }
        int r = put_annotation(te, scratch, ref, mvalue);
        if (r < 0)
            goto error;
        if (r == 0)
            goto done;
    }
    for (int k = 0; k < 2; k++) { /* flow ids (fixed64, as 64-bit two's complement) */
        PyObject *ids = k ? terminating : flows;
        PyObject *tag = tags[k ? TAG_TERMINATING_FLOWS : TAG_FLOWS];
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(ids); i++) {
            unsigned long long fid = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(ids, i));
            if (fid == (unsigned long long)-1 && PyErr_Occurred())
                goto error;
            char le[8];
            for (int b = 0; b < 8; b++)
                le[b] = (char)((fid >> (8 * b)) & 0xFF);
            if (put_obj(te, tag) < 0 || put(te, le, 8) < 0)
                goto error;
        }
    }
    if (is_log) { /* LogMessage {body iid, source location iid, priority} (_Sequence._log_message) */
        int r = pending_iid(e->bodies, name, &new_body);
        if (r <= 0) {
            got = r;
            goto put_failed;
        }
        uint64_t source_iid = 0;
        GET(source, F_SOURCE);
        if (source != Py_None) {
            if ((src_file = PyObject_GetAttr(source, s_file)) == NULL ||
                (src_function = PyObject_GetAttr(source, s_function)) == NULL ||
                (src_line = PyObject_GetAttr(source, s_line)) == NULL)
                goto error;
            if ((log_key = PyTuple_Pack(3, src_file, src_function, src_line)) == NULL)
                goto error;
            PyObject *iid = PyDict_GetItemWithError(e->sources, log_key);
            if (iid == NULL) {
                if (PyErr_Occurred())
                    goto error;
                goto done; /* a source location not interned yet: the Python code */
            }
            unsigned long long v = PyLong_AsUnsignedLongLong(iid);
            if (v == (unsigned long long)-1 && PyErr_Occurred())
                goto error;
            source_iid = v;
        }
        GET(value, F_VALUE);
        long prio = 4; /* (an int from 0 to 7, or a bool; other int subclasses compare their own way) */
        if (PyLong_Check(value) && !PyLong_CheckExact(value) && !PyBool_Check(value))
            goto done;
        if (PyLong_Check(value)) {
            int overflow = 0;
            long p = PyLong_AsLongAndOverflow(value, &overflow);
            if (p == -1 && PyErr_Occurred())
                goto error;
            if (!overflow && p >= 0 && p <= 7)
                prio = p;
        }
        scratch->len = 0;
        if (put_obj(scratch, tags[TAG_LOG_BODY]) < 0 || put_varint(scratch, new_body.iid) < 0)
            goto error;
        if (source != Py_None &&
            (put_obj(scratch, tags[TAG_LOG_SOURCE]) < 0 || put_varint(scratch, source_iid) < 0))
            goto error;
        if (put_obj(scratch, tags[TAG_LOG_PRIO]) < 0 || put_varint(scratch, (uint64_t)prio) < 0)
            goto error;
        if (put_obj(te, tags[TAG_LOG]) < 0 || put_varint(te, (uint64_t)scratch->len) < 0 ||
            put(te, scratch->data, scratch->len) < 0)
            goto error;
    }
    if (correlation[0] != 0 &&
        (put_obj(te, tags[TAG_CORRELATION]) < 0 || put_varint(te, 32) < 0 || put(te, correlation, 32) < 0))
        goto error;
    /* Taken here: intern what is new, as the Python code would have (the name, then the body). */
    if (new_name.text != NULL) {
        if (commit_pending(e->names, &new_name, TAG_I_NAMES, &e->interned, scratch) < 0)
            goto error;
        PyObject *ref = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(tags[TAG_NAME_IID]) +
                                                            varint_size(new_name.iid));
        if (ref == NULL)
            goto error;
        char *p = PyBytes_AS_STRING(ref);
        memcpy(p, PyBytes_AS_STRING(tags[TAG_NAME_IID]), (size_t)PyBytes_GET_SIZE(tags[TAG_NAME_IID]));
        write_varint(p + PyBytes_GET_SIZE(tags[TAG_NAME_IID]), new_name.iid);
        int r = PyDict_SetItem(name_refs, slice_name, ref);
        Py_DECREF(ref);
        if (r < 0)
            goto error;
    }
    if (new_body.text != NULL && commit_pending(e->bodies, &new_body, TAG_I_BODIES, &e->interned, scratch) < 0)
        goto error;
    handled = 1;
    goto done;

put_failed: /* a reference not interned yet (got == 0), or an error (got < 0) */
    if (got == 0)
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
    Py_XDECREF(value);
    Py_XDECREF(source);
    Py_XDECREF(src_file);
    Py_XDECREF(src_function);
    Py_XDECREF(src_line);
    Py_XDECREF(log_key);
    Py_XDECREF(template);
    return handled;
#undef GET
}

/* The framed packet of one item, written to `out`: here when the event's parts are interned, else by
 * seq._packet(ts, phase, ev, tracks). */
static int enc_one(Enc *e, long long ts, int phase, EvRef ev, PyObject *tracks, Packets *out) {
    int fast = 0, with_event = 1;
    Buf te = e->te;
    e->interned.len = 0;
    if (ts >= 0 && !e->slow) {
        if (phase == 2) { /* SLICE_END */
            with_event = 0;
            if (ev.c != NULL)
                fast = 1; /* (a compact span: on its thread's track, begun in this batch) */
            else if (PyDict_GET_SIZE(tracks) == 0) {
                PyObject *begun = field(ev.obj, F_BEGUN);
                if (begun == NULL)
                    return -1;
                fast = begun == Py_False;
                Py_DECREF(begun);
            }
        } else if (phase == 1 || phase == 3) {
            Memo *m = ev.c != NULL ? memo_slot(e->memo, ev.c) : NULL;
            if (m != NULL && m->name == ev.c->obj && m->md == ev.c->md && m->level == ev.c->level) {
                te.data = m->te, te.len = m->len; /* (read only) */
                fast = 1;
            } else {
                fast = track_event(e, ev, phase == 1);
                if (fast < 0)
                    return -1;
                te = e->te;
                if (fast && m != NULL && e->interned.len == 0 && e->te.len <= MEMO_BYTES) {
                    m->name = ev.c->obj, m->md = ev.c->md, m->level = ev.c->level, m->len = e->te.len;
                    memcpy(m->te, e->te.data, (size_t)e->te.len);
                }
            }
        }
    }
    if (fast) {
        char head[24];
        char *p = head;
        memcpy(p, PyBytes_AS_STRING(tags[TAG_TIMESTAMP]), (size_t)PyBytes_GET_SIZE(tags[TAG_TIMESTAMP]));
        p += PyBytes_GET_SIZE(tags[TAG_TIMESTAMP]);
        if (ts >= e->last) {
            p = write_varint(p, (uint64_t)ts - (uint64_t)e->last);
            e->last = ts;
        } else {
            p = write_varint(p, (uint64_t)ts);
            memcpy(p, PyBytes_AS_STRING(tags[TAG_ABSOLUTE_CLOCK]), (size_t)PyBytes_GET_SIZE(tags[TAG_ABSOLUTE_CLOCK]));
            p += PyBytes_GET_SIZE(tags[TAG_ABSOLUTE_CLOCK]);
        }
        return put_framed(out, head, p - head, &te, with_event, with_event ? e->needs : e->end_tail, &e->interned);
    }
    /* the Python code: it interns what is new and handles every other case */
    if (!e->slow && set_last_ts(e->seq, e->last) < 0)
        return -1;
    PyObject *ts_obj = PyLong_FromLongLong(ts), *phase_obj = PyLong_FromLong(phase);
    PyObject *event = whole_event(ev);
    PyObject *packet = ts_obj == NULL || phase_obj == NULL || event == NULL
                           ? NULL
                           : PyObject_CallMethodObjArgs(e->seq, s_packet, ts_obj, phase_obj, event, tracks, NULL);
    Py_XDECREF(ts_obj);
    Py_XDECREF(phase_obj);
    Py_XDECREF(event);
    if (packet != NULL && enc_read_last(e) < 0)
        Py_CLEAR(packet);
    if (packet == NULL)
        return -1;
    int r = put_obj(&out->data, packet) < 0 ? -1 : packets_mark(out);
    Py_DECREF(packet);
    return r;
}

/* -- a batch: items sorted as _Sequence.encode sorts them ------------------------------------------ */

/* (ts, a, b, c, d): _Sequence.encode's sort key, in int64; the index makes every key unique. */
typedef struct {
    long long k[5];
    int phase;
    EvRef ev; /* borrowed from the events */
} Item;

static inline int item_cmp_inline(const Item *a, const Item *b) {
    for (int i = 0; i < 5; i++)
        if (a->k[i] != b->k[i])
            return a->k[i] < b->k[i] ? -1 : 1;
    return 0;
}

static int item_cmp(const void *a, const void *b) { return item_cmp_inline(a, b); }

/* Sort a batch's items. They come nearly sorted (a thread queues its spans as they end, each one's
 * BEGIN item before its END), so an insertion sort does it in about linear time; past a budget of
 * moves (a batch of spans that all nest deep) qsort finishes the job. */
static void sort_items(Item *items, Py_ssize_t n) {
    Py_ssize_t budget = 16 * n + 64;
    for (Py_ssize_t i = 1; i < n; i++) {
        if (item_cmp_inline(&items[i - 1], &items[i]) <= 0)
            continue;
        Item x = items[i];
        Py_ssize_t j = i;
        while (j > 0 && item_cmp_inline(&items[j - 1], &x) > 0) {
            j--;
            if (--budget < 0) {
                items[i] = x; /* (nothing moved yet: put back, then sort it all) */
                qsort(items, (size_t)n, sizeof(Item), item_cmp);
                return;
            }
        }
        memmove(&items[j + 1], &items[j], sizeof(Item) * (size_t)(i - j));
        items[j] = x;
    }
}

/* Timestamps this loop takes: well inside int64, so that negating and comparing cannot overflow. */

/* 1: read into *v; 0: not an int in range (the Python code takes the batch); -1: error. */
static int small_int(PyObject *o, long long *v) {
    if (!PyLong_CheckExact(o))
        return 0;
    int overflow = 0;
    *v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (*v == -1 && PyErr_Occurred())
        return -1;
    return !overflow && *v > -TS_LIMIT && *v < TS_LIMIT;
}

/* encode_events(seq, events, marker=None) -> [packets] or None
 *
 * The framed packets of a batch of a thread's events (a list, or the EventBatch span_events makes, its
 * compact spans read as C values), after `marker` if given (the mark of a loss, first in the batch), as
 * _Sequence.encode makes them: a list of one PacketRun holding them all (empty: no packets), or None when
 * a timestamp is beyond the loop's range (the Python code encodes the batch). */
static PyObject *encode_events(PyObject *self, PyObject *args) {
    PyObject *seq, *events, *marker = Py_None;
    if (!PyArg_ParseTuple(args, "OO|O:encode_events", &seq, &events, &marker))
        return NULL;
    EventBatch *batch = Py_TYPE(events) == &EventBatchType ? (EventBatch *)events : NULL;
    if (batch == NULL && !PyList_Check(events)) {
        PyErr_SetString(PyExc_TypeError, "encode_events: events must be a list or an EventBatch");
        return NULL;
    }
    Py_ssize_t lead = marker != Py_None, n = lead + (batch != NULL ? batch->len : PyList_GET_SIZE(events));
    Item *items = PyMem_New(Item, (size_t)(2 * n + 1));
    if (items == NULL)
        return PyErr_NoMemory();
    Py_ssize_t count = 0;
    PyObject *result = NULL, *tracks = NULL, *head = NULL;
    Packets out;
    memset(&out, 0, sizeof(out));
    Enc e;
    int opened = 0;
    /* The events stay alive while they are read, whatever the callbacks do: a list's items (a reference
     * each), a batch (it cannot change); the marker is held by the arguments. */
    PyObject *keep = batch != NULL ? Py_NewRef(events) : PyList_GetSlice(events, 0, n - lead);
    if (keep == NULL)
        goto finally;
    for (Py_ssize_t idx = 0; idx < n; idx++) {
        EvRef ev = {NULL, NULL};
        if (idx < lead)
            ev.obj = marker;
        else if (batch != NULL && batch->items[idx - lead].left) {
            PyErr_SetString(PyExc_TypeError, "encode_events: a batch with records to convert (settled() it)");
            goto finally;
        } else if (batch != NULL && batch->items[idx - lead].md != NULL)
            ev.c = &batch->items[idx - lead];
        else
            ev.obj = batch != NULL ? batch->items[idx - lead].obj : PyList_GET_ITEM(keep, idx - lead);
        long long start, end = 0;
        int span, activity = 0, counter = 0, ok = 1, has_end = 0, begun = 0;
        if (ev.c != NULL) { /* a compact span: ended, on its thread's track */
            span = has_end = 1;
            start = ev.c->start, end = ev.c->end;
            ok = start > -TS_LIMIT && start < TS_LIMIT && end > -TS_LIMIT && end < TS_LIMIT;
            if (!ok)
                goto fallback_or_error;
        } else {
            PyObject *kind = field(ev.obj, F_KIND);
            if (kind == NULL)
                goto finally;
            span = PyUnicode_CheckExact(kind) && PyUnicode_Compare(kind, s_span) == 0;
            activity = !span && PyUnicode_CheckExact(kind) && PyUnicode_Compare(kind, s_activity) == 0;
            counter = !span && !activity && PyUnicode_CheckExact(kind) && PyUnicode_Compare(kind, s_counter) == 0;
            Py_DECREF(kind);
            if (PyErr_Occurred())
                goto finally;
            PyObject *start_obj = field(ev.obj, F_START);
            if (start_obj == NULL)
                goto finally;
            ok = small_int(start_obj, &start);
            Py_DECREF(start_obj);
            if (ok <= 0)
                goto fallback_or_error;
            if (span || activity) {
                PyObject *end_obj = field(ev.obj, F_END);
                if (end_obj == NULL)
                    goto finally;
                if (end_obj != Py_None) {
                    has_end = 1;
                    ok = small_int(end_obj, &end);
                }
                Py_DECREF(end_obj);
                if (ok <= 0)
                    goto fallback_or_error;
                if (span && has_end) {
                    PyObject *b = field(ev.obj, F_BEGUN);
                    if (b == NULL)
                        goto finally;
                    begun = PyObject_IsTrue(b);
                    Py_DECREF(b);
                    if (begun < 0)
                        goto finally;
                }
            }
        }
        Item *it = &items[count++];
        it->ev = ev;
        it->k[4] = 0;
        if (begun) { /* its BEGIN is in the file already */
            it->k[0] = end, it->k[1] = 0, it->k[2] = -start, it->k[3] = -idx, it->phase = 2;
        } else if (span || activity) {
            it->k[0] = start, it->k[1] = 1, it->k[2] = -(has_end ? end : start), it->k[3] = idx;
            it->phase = 1;
            if (has_end) {
                it = &items[count++];
                it->ev = ev;
                it->phase = 2;
                if (end == start)
                    it->k[0] = end, it->k[1] = 1, it->k[2] = -end, it->k[3] = idx, it->k[4] = 1;
                else
                    it->k[0] = end, it->k[1] = 0, it->k[2] = -start, it->k[3] = -idx, it->k[4] = 0;
            }
        } else {
            it->k[0] = start, it->k[1] = 1, it->k[2] = -start, it->k[3] = idx;
            it->phase = counter ? 4 : 3;
        }
        continue;
    fallback_or_error:
        if (ok < 0)
            goto finally;
        result = Py_NewRef(Py_None); /* a timestamp beyond int64: the Python code */
        goto finally;
    }
    sort_items(items, count);

    tracks = PyDict_New();
    if (tracks == NULL)
        goto finally;
    /* seq.restart(first): the packets that (re)start the sequence's state, if it needs them. */
    PyObject *first = count ? PyLong_FromLongLong(items[0].k[0]) : Py_NewRef(Py_None);
    if (first == NULL)
        goto finally;
    head = PyObject_CallMethodObjArgs(seq, s_restart, first, NULL);
    Py_DECREF(first);
    if (head == NULL)
        goto finally;
    if (head != Py_None && (put_obj(&out.data, head) < 0 || packets_mark(&out) < 0))
        goto finally;
    if (enc_open(&e, seq) < 0) {
        opened = 1;
        goto finally;
    }
    opened = 1;
    if (enc_read_last(&e) < 0)
        goto finally;
    for (Py_ssize_t i = 0; i < count; i++)
        if (enc_one(&e, items[i].k[0], items[i].phase, items[i].ev, tracks, &out) < 0)
            goto finally;
    if (!e.slow && set_last_ts(seq, e.last) < 0)
        goto finally;
    if (out.count == 0)
        result = PyList_New(0);
    else {
        PyObject *run = packets_run(&out);
        result = run == NULL ? NULL : PyList_New(1);
        if (result != NULL)
            PyList_SET_ITEM(result, 0, run);
        else
            Py_XDECREF(run);
    }

finally:
    if (opened)
        enc_close(&e);
    packets_free(&out);
    Py_XDECREF(keep);
    Py_XDECREF(tracks);
    Py_XDECREF(head);
    PyMem_Free(items);
    return result;
}

/* -- records to events ------------------------------------------------------------------------------ */


static PyObject *configure_events(PyObject *self, PyObject *args) {
    PyObject *template, *fields;
    if (!PyArg_ParseTuple(args, "OO!:configure_events", &template, &PyTuple_Type, &fields))
        return NULL;
    PyTypeObject *type = Py_TYPE(template);
    if (type->tp_dictoffset != 0 || PyTuple_GET_SIZE(fields) > 64) {
        PyErr_SetString(PyExc_TypeError, "configure_events: the event type must have slots only");
        return NULL;
    }
    Py_ssize_t offsets[64];
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields); i++) {
        PyObject *d = PyObject_GetAttr((PyObject *)type, PyTuple_GET_ITEM(fields, i));
        if (d == NULL)
            return NULL;
        int ok = Py_TYPE(d) == &PyMemberDescr_Type &&
                 ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX &&
                 ((PyMemberDescrObject *)d)->d_member->offset + (Py_ssize_t)sizeof(PyObject *) <= type->tp_basicsize;
        offsets[i] = ok ? ((PyMemberDescrObject *)d)->d_member->offset : 0;
        Py_DECREF(d);
        if (!ok || SLOT(template, offsets[i]) == NULL) {
            PyErr_SetString(PyExc_TypeError, "configure_events: every field must be a set object slot");
            return NULL;
        }
    }
    Py_ssize_t found[F_COUNT];
    for (int j = 0; j < F_COUNT; j++) {
        found[j] = -1;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields); i++)
            if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(fields, i), field_names[j]) == 0)
                found[j] = offsets[i];
        if (found[j] < 0) {
            PyErr_Format(PyExc_TypeError, "configure_events: no field %s", field_names[j]);
            return NULL;
        }
    }
    memcpy(field_off, found, sizeof(found));
    slot_count = (int)PyTuple_GET_SIZE(fields);
    memcpy(slot_offsets, offsets, sizeof(Py_ssize_t) * (size_t)slot_count);
    Py_XSETREF(event_type, (PyTypeObject *)Py_NewRef(type));
    Py_XSETREF(event_template, Py_NewRef(template));
    Py_RETURN_NONE;
}

/* A copy of the template with the given fields (references stolen; NULL on error, having released them). */
static PyObject *new_event(PyObject *fields[7]) {
    Py_ssize_t offs[7] = {field_off[F_NAME],     field_off[F_START], field_off[F_END],        field_off[F_LEVEL],
                          field_off[F_METADATA], field_off[F_TID],   field_off[F_THREAD_NAME]};
    PyObject *ev = event_type->tp_alloc(event_type, 0);
    if (ev == NULL) {
        for (int j = 0; j < 7; j++)
            Py_DECREF(fields[j]);
        return NULL;
    }
    for (int i = 0; i < slot_count; i++)
        SLOT(ev, slot_offsets[i]) = Py_NewRef(SLOT(event_template, slot_offsets[i]));
    for (int j = 0; j < 7; j++)
        Py_SETREF(SLOT(ev, offs[j]), fields[j]);
    return ev;
}

/* Whether ASCII text at s (n chars) starts with the lowercase word w followed by a space. */
static int word_then_space(const char *s, Py_ssize_t n, const char *w) {
    Py_ssize_t i = 0;
    for (; w[i]; i++)
        if (i >= n || (s[i] | 0x20) != w[i])
            return 0;
    return i < n && (unsigned char)s[i] <= ' ';
}

/* What span_events was given to look closer at text that may hold a credential (borrowed, for the length
 * of one call): _sanitize.scrub_text bound to the session's limits, which returns the text itself when it
 * holds none; Py_None when scrubbing is off; NULL when not given (such text goes to the Python code). And
 * the sanitizer's cache of keys (key -> whether it names a secret), which the Python code fills. */
static PyObject *text_check = NULL, *key_cache = NULL;
/* And what fills that cache for a key it does not hold yet: _sanitize.is_secret_key bound to the session's
 * limits (NULL: not given; such a key goes to the Python code). */
static PyObject *key_check = NULL;

static int key_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-';
}

/* Whether the key of the '=' (or ':') at s[eq] (as _sanitize.parameter_key finds it) may name a secret: 0 when the
 * sanitizer's cache says it does not (or there is no key), 1 otherwise, -1 on error. */
static int key_may_be_secret(const char *s, Py_ssize_t eq) {
    Py_ssize_t j = eq;
    while (j > 0 && eq - j < 3 && (s[j - 1] == ' ' || s[j - 1] == '\t'))
        j--;
    Py_ssize_t end = j;
    for (int n = 0; n < 8 && j > 0 && s[j - 1] == ']'; n++) { /* subscripts: user[password] */
        Py_ssize_t k = j - 1;
        while (k > 0 && end - k <= 64 && key_char(s[k - 1]))
            k--;
        if (k > 0 && s[k - 1] == '[')
            j = k - 1;
        else
            break;
    }
    Py_ssize_t word = j;
    while (j > 0 && end - j <= 64 && key_char(s[j - 1]))
        j--;
    if (word == j || end - j > 64)
        return 0;
    if (key_cache == NULL)
        return 1;
    PyObject *key = PyUnicode_FromStringAndSize(s + j, end - j);
    if (key == NULL)
        return -1;
    PyObject *secret = PyDict_GetItemWithError(key_cache, key);
    Py_DECREF(key);
    if (secret == NULL && PyErr_Occurred())
        return -1;
    return secret != Py_False;
}

/* What _sanitize.may_hold_secret finds in ASCII text, or more: '@', a quote then spaces and ':', "bearer" or
 * "basic" then a space, in any case; and '=' or ': ' after a key that may name a secret (not one the
 * sanitizer's cache knows is none: "page=2" does not). Such text may carry a credential: the Python code
 * looks closer. 1 yes, 0 no, -1 error. */
static int may_hold_secret(const char *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '@')
            return 1;
        if (c == '=' || (c == ':' && i + 1 < n && (s[i + 1] == ' ' || s[i + 1] == '\t'))) {
            int k = key_may_be_secret(s, i);
            if (k != 0)
                return k;
        } else if (c == '"' || c == '\'') {
            Py_ssize_t j = i + 1;
            while (j < n && (unsigned char)s[j] <= ' ')
                j++;
            if (j < n && s[j] == ':')
                return 1;
        } else if ((c | 0x20) == 'b' && (word_then_space(s + i, n - i, "bearer") || word_then_space(s + i, n - i, "basic")))
            return 1;
    }
    return 0;
}

/* ASCII text the writer takes as it is as far as credentials go: 1 yes, 0 no (the Python code scrubs it). */
static int no_secret(PyObject *text) {
    if (text_check == Py_None)
        return 1;
    int may = may_hold_secret((const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text));
    if (may <= 0) {
        if (may < 0) /* (the Python code looks again) */
            PyErr_Clear();
        return may == 0;
    }
    if (text_check == NULL)
        return 0;
    PyObject *checked = PyObject_CallOneArg(text_check, text);
    if (checked == NULL) { /* (never: scrub_text does not raise; the Python code looks again) */
        PyErr_Clear();
        return 0;
    }
    int same = checked == text;
    Py_DECREF(checked);
    return same;
}

/* A name the writer takes as it is (what _compact_event checks before its quick path). */
static int plain_name(PyObject *name) {
    if (!PyUnicode_CheckExact(name) || !PyUnicode_IS_ASCII(name))
        return 0;
    Py_ssize_t len = PyUnicode_GET_LENGTH(name);
    const char *text = (const char *)PyUnicode_DATA(name);
    return len <= 1024 && memchr(text, 0, (size_t)len) == NULL && (len == 0 || text[len - 1] != '#') &&
           no_secret(name);
}

/* -- spans: enter and exit ------------------------------------------------------------------------- */

/* SpanScope is a base of tracebridge.spans.Span (it adds no fields): its __enter__ and __exit__ do what
 * the pure-Python ones (spans._PyScope) do, calling back into Python only for what is rare (a span that
 * overlaps others, lazy parts, metadata to snapshot, an exception, a full queue, a thread's first span).
 * configure_spans() hands it what it reads: the Span type and the offsets of its slots, the runtime state,
 * the current-span context variable, the thread-local state and the Python helpers. */

enum {
    S_PARENT, S_TOKEN, S_ST, S_METADATA, S_STACK, S_START, S_END, S_ERROR, S_LAZY, S_OVERLAPPING,
    S_TRACE_ID, S_NAME, S_LEVEL, S_SPAN_ID, S_ADJUSTED, S_DROP_COUNTER, S_COUNT
};
static const char *span_slot_names[S_COUNT] = {"parent", "_token", "_st", "metadata", "_stack", "start_ns",
                                               "end_ns", "error", "_lazy", "overlapping", "_trace_id",
                                               "name", "level", "_span_id", "adjusted_count", "_drop_counter"};
enum { TS_STACK, TS_BUF, TS_DEAD, TS_COUNT };
static const char *thread_slot_names[TS_COUNT] = {"stack", "buf", "dead"};
enum { RT_COMPACT, RT_BUFFER_SOFT, RT_BUFFER_CAP, RT_COUNT };
static const char *rt_slot_names[RT_COUNT] = {"compact", "buffer_soft", "buffer_cap"};

static struct {
    PyTypeObject *span_type, *thread_type;
    PyObject *rt, *current, *thread_local, *thread_state, *clock, *s_state_key, *perf_counter_ns,
        *is_failure, *error_info, *needs_snapshot, *s_state, *s_place, *s_left, *s_resolve,
        *s_snapshot, *s_crowded, *s_crowding, *s_track, *s_ended_failing, *zero;
    Py_ssize_t span_off[S_COUNT], thread_off[TS_COUNT], rt_off[RT_COUNT];
    PyTypeObject *deque_type;
} sp;

/* The offset of slot `name` of `type` (a __slots__ member), or -1 with an exception set. */
static Py_ssize_t slot_offset(PyTypeObject *type, const char *name) {
    PyObject *d = PyObject_GetAttrString((PyObject *)type, name);
    if (d == NULL)
        return -1;
    Py_ssize_t off = -1;
    if (Py_TYPE(d) == &PyMemberDescr_Type && ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX &&
        !(((PyMemberDescrObject *)d)->d_member->flags & READONLY))
        off = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    if (off < (Py_ssize_t)sizeof(PyObject) || off + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize) {
        PyErr_Format(PyExc_TypeError, "configure_spans: %s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    return off;
}

/* Read a slot: a new reference, or NULL with AttributeError when it is unset (as Python would say). */
static PyObject *get_slot(PyObject *obj, Py_ssize_t off, const char *name) {
    PyObject *v = SLOT(obj, off);
    if (v == NULL) {
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'", Py_TYPE(obj)->tp_name, name);
        return NULL;
    }
    return Py_NewRef(v);
}

/* Set a slot, stealing `v` (which may be NULL after a failed call: then nothing is set, -1). */
static int set_slot(PyObject *obj, Py_ssize_t off, PyObject *v) {
    if (v == NULL)
        return -1;
    Py_XSETREF(SLOT(obj, off), v);
    return 0;
}

#define SPAN_GET(obj, f) get_slot(obj, sp.span_off[f], span_slot_names[f])
#define SPAN_BORROW(obj, f) SLOT(obj, sp.span_off[f])

/* The clock spans read (spans.set_clock() changes it, for tests); perf_counter_ns is read here directly. */
static PyObject *clock_now(void) {
#if defined(__linux__)
    if (sp.clock == sp.perf_counter_ns) { /* CLOCK_MONOTONIC: what perf_counter_ns reads on Linux */
        struct timespec ts;
        if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0)
            return PyLong_FromLongLong((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    }
#endif
    return PyObject_CallNoArgs(sp.clock);
}

static PyObject *set_clock(PyObject *self, PyObject *clock) {
    if (!PyCallable_Check(clock)) {
        PyErr_SetString(PyExc_TypeError, "set_clock: the clock must be callable");
        return NULL;
    }
    Py_XSETREF(sp.clock, Py_NewRef(clock));
    Py_RETURN_NONE;
}

/* The calling thread's state: thread_local.state, made by thread_state() the first time, and kept in the
 * thread's own dict (PyThreadState_GetDict) where it is found faster than on a threading.local. A thread
 * has one state for its life (a forked child keeps the forking thread's); the dict goes with the thread. */
static PyObject *thread_state_now(void) {
    PyObject *dict = PyThreadState_GetDict();
    if (dict != NULL) {
        PyObject *st = PyDict_GetItemWithError(dict, sp.s_state_key);
        if (st != NULL && SLOT(st, sp.thread_off[TS_DEAD]) != Py_True)
            return Py_NewRef(st);
        if (PyErr_Occurred())
            return NULL;
        /* (A state marked dead while its OS thread runs on: threading.local is not per OS thread here,
         * as under gevent. Ask thread_local again.) */
        if (st != NULL && PyDict_DelItem(dict, sp.s_state_key) < 0)
            return NULL;
    }
    PyObject *st = PyObject_GetAttr(sp.thread_local, sp.s_state);
    if (st == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        st = PyObject_CallNoArgs(sp.thread_state);
        if (st == NULL)
            return NULL;
    }
    if (dict != NULL && Py_TYPE(st) == sp.thread_type && PyDict_SetItem(dict, sp.s_state_key, st) < 0) {
        Py_DECREF(st);
        return NULL;
    }
    return st;
}

static int check_span(PyObject *self) {
    if (sp.span_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tracebridge._speedups: configure_spans() was not called");
        return -1;
    }
    if (!PyObject_TypeCheck(self, sp.span_type)) {
        PyErr_SetString(PyExc_TypeError, "SpanScope methods take a tracebridge Span");
        return -1;
    }
    return 0;
}

static int check_thread_state(PyObject *st) {
    if (Py_TYPE(st) != sp.thread_type) {
        PyErr_SetString(PyExc_TypeError, "tracebridge: a thread's state is not a ThreadState");
        return -1;
    }
    return 0;
}

static PyObject *take_error(void);
static void give_error(PyObject *exc);

/* Whether an ending `span` resets the current span (1), or not (0: a span begun since, still open, is
 * current and stays so), or an error (-1). It does when it is current, or when the current one has ended
 * too (an interrupted exit, spans ended out of order). */
static int resets_current(PyObject *span) {
    PyObject *cur;
    if (PyContextVar_Get(sp.current, NULL, &cur) < 0)
        return -1;
    int yes = cur == span || (cur != NULL && cur != Py_None && PyObject_TypeCheck(cur, sp.span_type) &&
                              SLOT(cur, sp.span_off[S_TOKEN]) == Py_None);
    Py_XDECREF(cur);
    return yes;
}

/* After a span's token is reset: when the span it restored as current has ended too (spans that ended out
 * of order: a generator's span closed after the span it was resumed in, spans entered by hand), the
 * innermost of its ancestors still open becomes current instead (as spans.py's _skip_ended). */
static int skip_ended(void) {
    PyObject *cur;
    if (PyContextVar_Get(sp.current, NULL, &cur) < 0)
        return -1;
    if (cur == NULL)
        return 0;
    PyObject *p = cur; /* borrowed along the chain: cur holds the first, each span its parent */
    while (p != Py_None && PyObject_TypeCheck(p, sp.span_type) && SLOT(p, sp.span_off[S_TOKEN]) == Py_None) {
        PyObject *parent = SLOT(p, sp.span_off[S_PARENT]);
        p = parent == NULL ? Py_None : parent;
    }
    int rc = 0;
    if (p != cur) {
        PyObject *t = PyContextVar_Set(sp.current, p);
        if (t == NULL)
            rc = -1;
        Py_XDECREF(t);
    }
    Py_DECREF(cur);
    return rc;
}

/* Everything that may run Python code (the thread's state made the first time, _place, a clock set by
 * tests, a stack that is not a list) comes first, and the span becomes current last: an exception on the
 * way (KeyboardInterrupt raised by a signal handler in such code) leaves the current span and the thread's
 * stack as they were, and nothing after the context variable is set can fail but for memory. */
static PyObject *scope_enter(PyObject *self, PyObject *unused) {
    if (check_span(self) < 0)
        return NULL;
    PyObject *parent = NULL, *st = NULL, *stack = NULL, *start = NULL;
    int appended = 0;
    if (PyContextVar_Get(sp.current, NULL, &parent) < 0)
        return NULL;
    if (parent == NULL) /* (the variable has a default: not reached) */
        parent = Py_NewRef(Py_None);
    if ((st = thread_state_now()) == NULL || check_thread_state(st) < 0)
        goto error;
    PyObject *md = SPAN_BORROW(self, S_METADATA);
    int on_track = 0;
    if (md != NULL && md != Py_None) {
        on_track = PySequence_Contains(md, sp.s_track);
        if (on_track < 0)
            goto error;
    }
    if (on_track) { /* a named track: the writer lays it out, not the thread's stack */
        stack = PyList_New(1);
        if (stack == NULL)
            goto error;
        PyList_SET_ITEM(stack, 0, Py_NewRef(self));
    } else {
        stack = get_slot(st, sp.thread_off[TS_STACK], "stack");
        if (stack == NULL)
            goto error;
        int top_is_parent = !PyList_CheckExact(stack) || PyList_GET_SIZE(stack) == 0 ||
                            PyList_GET_ITEM(stack, PyList_GET_SIZE(stack) - 1) == parent;
        if (!top_is_parent) {
            Py_SETREF(stack, PyObject_CallMethodObjArgs(self, sp.s_place, st, parent, NULL));
            if (stack == NULL)
                goto error;
        }
    }
    if ((start = clock_now()) == NULL)
        goto error;
    if (!on_track) {
        if (PyList_CheckExact(stack)) {
            if (PyList_Append(stack, self) < 0)
                goto error;
        } else {
            PyObject *r = PyObject_CallMethod(stack, "append", "O", self);
            if (r == NULL)
                goto error;
            Py_DECREF(r);
        }
        appended = 1;
    }
    PyObject *token = PyContextVar_Set(sp.current, self);
    if (token == NULL)
        goto error;
    set_slot(self, sp.span_off[S_TOKEN], token);
    set_slot(self, sp.span_off[S_PARENT], parent);
    set_slot(self, sp.span_off[S_ST], st);
    set_slot(self, sp.span_off[S_STACK], stack);
    set_slot(self, sp.span_off[S_START], start);
    return Py_NewRef(self);
error:
    if (appended && PyList_CheckExact(stack) && PyList_GET_SIZE(stack) &&
        PyList_GET_ITEM(stack, PyList_GET_SIZE(stack) - 1) == self) {
        PyObject *exc = take_error();
        if (PyList_SetSlice(stack, PyList_GET_SIZE(stack) - 1, PyList_GET_SIZE(stack), NULL) < 0)
            PyErr_Clear();
        if (exc != NULL)
            give_error(exc);
    }
    Py_XDECREF(parent);
    Py_XDECREF(st);
    Py_XDECREF(stack);
    Py_XDECREF(start);
    return NULL;
}

/* -- a thread's queue of records ---------------------------------------------------------------------- */

/* The compiled path's ThreadState.buf (the pure path's is a collections.deque; this one does what the
 * code asks of that: append, popleft, extend, clear, len, iteration, indexing). A ring of entries: a
 * record object, or a compact span held as C values (its name, level and times), which is what the
 * commonest span is: it ends without making a tuple, and the writer takes a run of entries at once
 * (take(n): a RecordBatch) and reads compact ones without any object. Anything that asks for a compact
 * entry as an object gets the tuple runtime.CompactSpan, (name, level, start_ns, end_ns). Only the GIL
 * guards it (the free-threaded build takes the pure path); Python code that runs inside these methods (a
 * finalizer freed by a decref, a collection an allocation starts) may queue more records, so no method
 * holds a pointer into the ring across such a call. */
typedef struct {
    PyObject *obj; /* the record, or a compact span's name */
    long long level, start, end;
    int compact;
} QEntry;

typedef struct {
    PyObject_HEAD
    QEntry *ring;
    Py_ssize_t cap, head, len; /* cap: a power of two (or 0: no ring) */
} RecordQueue;

typedef struct {
    PyObject_HEAD
    QEntry *items;
    Py_ssize_t len;
} RecordBatch;

static PyTypeObject RecordQueueType, RecordBatchType;

#define RQ_AT(q, i) ((q)->ring[((q)->head + (i)) & ((q)->cap - 1)])
#define RQ_SHRINK 4096 /* an emptied ring of more entries than this is freed (as a deque frees its blocks) */

/* The entry as an object (a new reference): the record, or the compact span's tuple. */
static PyObject *entry_object(const QEntry *e) {
    if (!e->compact)
        return Py_NewRef(e->obj);
    PyObject *level = PyLong_FromLongLong(e->level), *start = PyLong_FromLongLong(e->start),
             *end = PyLong_FromLongLong(e->end), *t = NULL;
    if (level != NULL && start != NULL && end != NULL)
        t = PyTuple_Pack(4, e->obj, level, start, end);
    Py_XDECREF(level);
    Py_XDECREF(start);
    Py_XDECREF(end);
    return t;
}

static int rq_grow(RecordQueue *q);

static int rq_push(RecordQueue *q, QEntry e) {
    if (q->len == q->cap && rq_grow(q) < 0)
        return -1;
    q->ring[(q->head + q->len) & (q->cap - 1)] = e;
    q->len++;
    return 0;
}

/* Put an entry back at the head (its reference moves in). */
static int rq_push_front(RecordQueue *q, QEntry e) {
    if (q->len == q->cap && rq_grow(q) < 0)
        return -1;
    q->head = (q->head - 1) & (q->cap - 1);
    q->ring[q->head] = e;
    q->len++;
    return 0;
}

/* A ring of `cap` entries holding the queue's, in order from index 0. */
static int rq_resize(RecordQueue *q, Py_ssize_t cap) {
    QEntry *ring = PyMem_Malloc((size_t)cap * sizeof(QEntry));
    if (ring == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < q->len; i++)
        ring[i] = RQ_AT(q, i);
    PyMem_Free(q->ring);
    q->ring = ring, q->cap = cap, q->head = 0;
    return 0;
}

static int rq_grow(RecordQueue *q) {
    Py_ssize_t cap = q->cap ? q->cap * 2 : 64;
    if (cap > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(QEntry)) {
        PyErr_NoMemory();
        return -1;
    }
    return rq_resize(q, cap);
}

/* Queue a compact span (the name is borrowed). */
static int rq_push_compact(RecordQueue *q, PyObject *name, long long level, long long start, long long end) {
    QEntry e = {name, level, start, end, 1};
    if (rq_push(q, e) < 0)
        return -1;
    Py_INCREF(name);
    return 0;
}

static int rq_push_object(RecordQueue *q, PyObject *obj) {
    QEntry e = {obj, 0, 0, 0, 0};
    if (rq_push(q, e) < 0)
        return -1;
    Py_INCREF(obj);
    return 0;
}

/* Take the first n entries off the ring into `out` (their references move). */
static void rq_detach(RecordQueue *q, QEntry *out, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = RQ_AT(q, i);
    q->head = (q->head + n) & (q->cap - 1);
    q->len -= n;
    if (q->len == 0) {
        q->head = 0;
        if (q->cap > RQ_SHRINK) {
            PyMem_Free(q->ring);
            q->ring = NULL, q->cap = 0;
        }
    } else if (q->cap > RQ_SHRINK && q->len <= q->cap / 4) { /* a quarter full at most: halved, until more */
        Py_ssize_t cap = q->cap;
        while (cap > RQ_SHRINK && q->len <= cap / 4)
            cap /= 2;
        if (rq_resize(q, cap) < 0)
            PyErr_Clear(); /* (no memory for a smaller ring: the larger one stays) */
    }
}

static void entries_release(QEntry *items, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(items[i].obj);
}

static PyObject *rq_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || PyTuple_GET_SIZE(args)) {
        PyErr_SetString(PyExc_TypeError, "RecordQueue() takes no arguments");
        return NULL;
    }
    RecordQueue *q = (RecordQueue *)type->tp_alloc(type, 0);
    if (q != NULL)
        q->ring = NULL, q->cap = q->head = q->len = 0;
    return (PyObject *)q;
}

static PyObject *rq_append(PyObject *self, PyObject *obj) {
    if (rq_push_object((RecordQueue *)self, obj) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* append_compact(name, level, start_ns, end_ns): queue a span as runtime.CompactSpan (held as C values
 * when they are ints of the range the writer takes, else as the tuple). */
static PyObject *rq_append_compact(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "append_compact(name, level, start_ns, end_ns)");
        return NULL;
    }
    long long level, start, end;
    int a = small_int(args[1], &level), b = a > 0 ? small_int(args[2], &start) : a,
        c = b > 0 ? small_int(args[3], &end) : b;
    if (c < 0)
        return NULL;
    if (c > 0) {
        if (rq_push_compact((RecordQueue *)self, args[0], level, start, end) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *t = PyTuple_Pack(4, args[0], args[1], args[2], args[3]);
    int r = t == NULL ? -1 : rq_push_object((RecordQueue *)self, t);
    Py_XDECREF(t);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *rq_extend(PyObject *self, PyObject *iterable) {
    PyObject *it = PyObject_GetIter(iterable);
    if (it == NULL)
        return NULL;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        int r = rq_push_object((RecordQueue *)self, item);
        Py_DECREF(item);
        if (r < 0)
            break;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *rq_popleft(PyObject *self, PyObject *unused) {
    RecordQueue *q = (RecordQueue *)self;
    if (q->len == 0) {
        PyErr_SetString(PyExc_IndexError, "pop from an empty queue");
        return NULL;
    }
    QEntry e;
    rq_detach(q, &e, 1); /* (first: making the tuple may run a collection, whose finalizers may take) */
    PyObject *obj = entry_object(&e);
    if (obj == NULL) { /* back at the head, as it was */
        if (rq_push_front(q, e) < 0)
            Py_DECREF(e.obj); /* (no memory for it either: lost, as a deque would lose it) */
        return NULL;
    }
    Py_DECREF(e.obj);
    return obj;
}

/* Empty the queue (the entries are released after it is empty: a finalizer may queue more). */
static int rq_clear_entries(RecordQueue *q) {
    Py_ssize_t n = q->len;
    if (n == 0)
        return 0;
    QEntry *items = PyMem_Malloc((size_t)n * sizeof(QEntry));
    if (items == NULL) { /* (no memory for the copy: released in place, one at a time) */
        while (q->len) {
            QEntry gone;
            rq_detach(q, &gone, 1);
            Py_DECREF(gone.obj);
        }
        return 0;
    }
    rq_detach(q, items, n);
    entries_release(items, n);
    PyMem_Free(items);
    return 0;
}

static PyObject *rq_clear(PyObject *self, PyObject *unused) {
    rq_clear_entries((RecordQueue *)self);
    Py_RETURN_NONE;
}

static PyObject *rq_take(PyObject *self, PyObject *arg) {
    RecordQueue *q = (RecordQueue *)self;
    Py_ssize_t n = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    RecordBatch *b = PyObject_GC_New(RecordBatch, &RecordBatchType);
    if (b == NULL)
        return NULL;
    b->items = NULL, b->len = 0;
    /* (read after the allocation, which may have run a collection) */
    n = n < 0 ? 0 : n > q->len ? q->len : n;
    if (n > 0) {
        b->items = PyMem_Malloc((size_t)n * sizeof(QEntry));
        if (b->items == NULL) {
            Py_DECREF(b);
            return PyErr_NoMemory();
        }
        rq_detach(q, b->items, n);
        b->len = n;
    }
    PyObject_GC_Track(b);
    return (PyObject *)b;
}

static Py_ssize_t rq_length(PyObject *self) { return ((RecordQueue *)self)->len; }

static PyObject *rq_item(PyObject *self, Py_ssize_t i) {
    RecordQueue *q = (RecordQueue *)self;
    if (i < 0 || i >= q->len) {
        PyErr_SetString(PyExc_IndexError, "queue index out of range");
        return NULL;
    }
    QEntry e = RQ_AT(q, i);
    Py_INCREF(e.obj); /* (held: making the tuple may run a finalizer that takes it off the queue) */
    PyObject *obj = entry_object(&e);
    Py_DECREF(e.obj);
    return obj;
}

/* Iteration walks a snapshot (the queue may change meanwhile, as the writer takes and threads queue). */
static PyObject *rq_iter(PyObject *self) {
    RecordQueue *q = (RecordQueue *)self;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < q->len; i++) {
        QEntry e = RQ_AT(q, i);
        Py_INCREF(e.obj); /* (as rq_item) */
        PyObject *o = entry_object(&e);
        Py_DECREF(e.obj);
        if (o == NULL || PyList_Append(list, o) < 0) {
            Py_XDECREF(o);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(o);
    }
    PyObject *it = PyObject_GetIter(list);
    Py_DECREF(list);
    return it;
}

static int rq_traverse(PyObject *self, visitproc visit, void *arg) {
    RecordQueue *q = (RecordQueue *)self;
    for (Py_ssize_t i = 0; i < q->len; i++)
        Py_VISIT(RQ_AT(q, i).obj);
    return 0;
}

static int rq_tp_clear(PyObject *self) { return rq_clear_entries((RecordQueue *)self); }

static void rq_dealloc(PyObject *self) {
    RecordQueue *q = (RecordQueue *)self;
    PyObject_GC_UnTrack(self);
    rq_clear_entries(q);
    PyMem_Free(q->ring);
    q->ring = NULL;
    Py_TYPE(self)->tp_free(self);
}

static PyObject *rq_sizeof(PyObject *self, PyObject *unused) {
    RecordQueue *q = (RecordQueue *)self;
    return PyLong_FromSsize_t((Py_ssize_t)sizeof(RecordQueue) + q->cap * (Py_ssize_t)sizeof(QEntry));
}

static PyObject *rq_repr(PyObject *self) {
    return PyUnicode_FromFormat("<tracebridge RecordQueue of %zd records>", ((RecordQueue *)self)->len);
}

static PyMethodDef rq_methods[] = {
    {"append", rq_append, METH_O, "Queue a record."},
    {"append_compact", (PyCFunction)(void (*)(void))rq_append_compact, METH_FASTCALL,
     "append_compact(name, level, start_ns, end_ns): queue a span as the tuple CompactSpan (held as C values)."},
    {"extend", rq_extend, METH_O, "Queue each record of an iterable."},
    {"popleft", rq_popleft, METH_NOARGS, "Take the first record off (IndexError when empty)."},
    {"clear", rq_clear, METH_NOARGS, "Empty the queue."},
    {"__sizeof__", rq_sizeof, METH_NOARGS, "The queue's size in memory, in bytes (its ring included)."},
    {"take", rq_take, METH_O, "take(n): the first n records (fewer when fewer are queued) as a RecordBatch."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods rq_as_sequence = {.sq_length = rq_length, .sq_item = rq_item};

static PyTypeObject RecordQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tracebridge._speedups.RecordQueue",
    .tp_basicsize = sizeof(RecordQueue),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A thread's queue of records for the writer (the compiled path's deque).",
    .tp_new = rq_new,
    .tp_dealloc = rq_dealloc,
    .tp_traverse = rq_traverse,
    .tp_clear = rq_tp_clear,
    .tp_repr = rq_repr,
    .tp_iter = rq_iter,
    .tp_methods = rq_methods,
    .tp_as_sequence = &rq_as_sequence,
};

/* A run of records taken off a queue: a read-only sequence (the compact ones as tuples), which the
 * compiled conversion (span_events) reads in place. */
static Py_ssize_t batch_length(PyObject *self) { return ((RecordBatch *)self)->len; }

static PyObject *batch_item(PyObject *self, Py_ssize_t i) {
    RecordBatch *b = (RecordBatch *)self;
    if (i < 0 || i >= b->len) {
        PyErr_SetString(PyExc_IndexError, "batch index out of range");
        return NULL;
    }
    return entry_object(&b->items[i]);
}

static int batch_traverse(PyObject *self, visitproc visit, void *arg) {
    RecordBatch *b = (RecordBatch *)self;
    for (Py_ssize_t i = 0; i < b->len; i++)
        Py_VISIT(b->items[i].obj);
    return 0;
}

static int batch_clear(PyObject *self) {
    RecordBatch *b = (RecordBatch *)self;
    QEntry *items = b->items;
    Py_ssize_t n = b->len;
    b->items = NULL, b->len = 0;
    entries_release(items, n);
    PyMem_Free(items);
    return 0;
}

static void batch_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    batch_clear(self);
    PyObject_GC_Del(self);
}

static PySequenceMethods batch_as_sequence = {.sq_length = batch_length, .sq_item = batch_item};

static PyTypeObject RecordBatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tracebridge._speedups.RecordBatch",
    .tp_basicsize = sizeof(RecordBatch),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Records taken off a RecordQueue (a read-only sequence).",
    .tp_dealloc = batch_dealloc,
    .tp_traverse = batch_traverse,
    .tp_clear = batch_clear,
    .tp_as_sequence = &batch_as_sequence,
};

/* Queue a record on a thread's queue; st.crowded(rec) when it holds buffer_soft records already. */
static int queue_record(PyObject *st, PyObject *rec) {
    PyObject *buf = get_slot(st, sp.thread_off[TS_BUF], "buf");
    if (buf == NULL)
        return -1;
    PyObject *soft_obj = get_slot(sp.rt, sp.rt_off[RT_BUFFER_SOFT], "buffer_soft");
    Py_ssize_t soft = soft_obj == NULL ? -1 : PyLong_AsSsize_t(soft_obj);
    Py_XDECREF(soft_obj);
    Py_ssize_t len = soft == -1 && PyErr_Occurred() ? -1 : PyObject_Size(buf);
    PyObject *r = NULL;
    if (len >= 0) {
        if (len < soft && Py_TYPE(buf) == &RecordQueueType) /* (what runtime.new_queue makes here) */
            r = rq_push_object((RecordQueue *)buf, rec) < 0 ? NULL : Py_NewRef(Py_None);
        else if (len < soft)
            r = PyObject_CallMethod(buf, "append", "O", rec);
        else
            r = PyObject_CallMethodObjArgs(st, sp.s_crowded, rec, NULL);
    }
    Py_DECREF(buf);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* push(record): queue a record on the calling thread's queue (ThreadState.push, compiled). */
static PyObject *push_record(PyObject *self, PyObject *rec) {
    if (sp.thread_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tracebridge._speedups: configure_spans() was not called");
        return NULL;
    }
    PyObject *st = thread_state_now();
    if (st == NULL)
        return NULL;
    int r = check_thread_state(st) < 0 ? -1 : queue_record(st, rec);
    Py_DECREF(st);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Queue an ended plain span as a compact entry of its thread's RecordQueue: 1 when it is, 0 when it
 * takes the tuple instead (another kind of queue, a full one, values that are not small ints). A crowded
 * queue (buffer_soft records or more) takes it too, then st.crowding() runs, as ThreadState.crowded does. */
static int queue_compact(PyObject *st, PyObject *span, PyObject *end_obj) {
    PyObject *buf = SLOT(st, sp.thread_off[TS_BUF]), *soft_obj = SLOT(sp.rt, sp.rt_off[RT_BUFFER_SOFT]),
             *cap_obj = SLOT(sp.rt, sp.rt_off[RT_BUFFER_CAP]);
    PyObject *name = SPAN_BORROW(span, S_NAME), *level_obj = SPAN_BORROW(span, S_LEVEL),
             *start_obj = SPAN_BORROW(span, S_START);
    if (buf == NULL || Py_TYPE(buf) != &RecordQueueType || soft_obj == NULL || !PyLong_CheckExact(soft_obj) ||
        cap_obj == NULL || !PyLong_CheckExact(cap_obj) || name == NULL || level_obj == NULL || start_obj == NULL)
        return 0;
    RecordQueue *q = (RecordQueue *)buf;
    int o1, o2;
    long long soft = PyLong_AsLongLongAndOverflow(soft_obj, &o1), cap = PyLong_AsLongLongAndOverflow(cap_obj, &o2);
    if (o1 || o2 || PyErr_Occurred() || q->len >= cap) {
        PyErr_Clear();
        return 0;
    }
    long long level, start, end;
    int a = small_int(level_obj, &level), b = a > 0 ? small_int(start_obj, &start) : a,
        c = b > 0 ? small_int(end_obj, &end) : b;
    if (c <= 0)
        return c;
    int crowded = q->len >= soft;
    if (rq_push_compact(q, name, level, start, end) < 0)
        return -1;
    if (crowded) {
        PyObject *r = PyObject_CallMethodNoArgs(st, sp.s_crowding);
        if (r == NULL)
            return -1; /* (queued: an interrupt while the writer ran) */
        Py_DECREF(r);
    }
    return 1;
}

static PyObject *scope_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "__exit__ takes 3 arguments");
        return NULL;
    }
    if (check_span(self) < 0)
        return NULL;
    PyObject *exc_type = args[0], *exc = args[1], *tb = args[2];
    PyObject *end = NULL, *st = NULL, *stack = NULL, *rec = NULL, *clock_error = NULL;
    int compact_span = 0;
    st = SPAN_GET(self, S_ST);
    if (st == NULL)
        goto error;
    if (st == Py_None) { /* already stopped */
        Py_DECREF(st);
        Py_RETURN_NONE;
    }
    /* A clock that failed (one set by tests, interrupted): the span still stops being current, then
     * the error is raised. */
    end = clock_now();
    if (end == NULL)
        clock_error = take_error();
    if (check_thread_state(st) < 0 || set_slot(self, sp.span_off[S_ST], Py_NewRef(Py_None)) < 0 ||
        (end != NULL && set_slot(self, sp.span_off[S_END], Py_NewRef(end)) < 0))
        goto error;
    /* The current span first: what follows may run Python code (an interrupt there leaves it right). */
    PyObject *token = SPAN_GET(self, S_TOKEN);
    if (token == NULL)
        goto error;
    int is_current = resets_current(self);
    if (is_current < 0) {
        Py_DECREF(token);
        goto error;
    }
    /* (else a span begun since is current: it stays so) */
    int reset = is_current ? PyContextVar_Reset(sp.current, token) : 0;
    Py_DECREF(token);
    if (is_current && reset == 0 && skip_ended() < 0)
        goto error;
    if (reset < 0) { /* ended in another context than it began in (another task or thread) */
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            goto error;
        PyErr_Clear();
        PyObject *cur;
        if (PyContextVar_Get(sp.current, NULL, &cur) < 0)
            goto error;
        Py_XDECREF(cur);
        if (cur == self) {
            PyObject *parent = SPAN_GET(self, S_PARENT);
            if (parent == NULL)
                goto error;
            int is_span = PyObject_IsInstance(parent, (PyObject *)sp.span_type);
            PyObject *t = is_span < 0 ? NULL : PyContextVar_Set(sp.current, is_span ? parent : Py_None);
            Py_DECREF(parent);
            if (t == NULL)
                goto error;
            Py_DECREF(t);
        }
    }
    if (set_slot(self, sp.span_off[S_TOKEN], Py_NewRef(Py_None)) < 0)
        goto error;
    if ((stack = SPAN_GET(self, S_STACK)) == NULL)
        goto error;
    if (PyList_CheckExact(stack) && PyList_GET_SIZE(stack) &&
        PyList_GET_ITEM(stack, PyList_GET_SIZE(stack) - 1) == self) {
        if (PyList_SetSlice(stack, PyList_GET_SIZE(stack) - 1, PyList_GET_SIZE(stack), NULL) < 0)
            goto error;
    } else {
        if (PyList_CheckExact(stack)) { /* off the stack here, before any Python code runs */
            for (Py_ssize_t i = PyList_GET_SIZE(stack) - 1; i >= 0; i--) {
                if (PyList_GET_ITEM(stack, i) == self) {
                    if (PyList_SetSlice(stack, i, i + 1, NULL) < 0)
                        goto error;
                    break;
                }
            }
        }
        PyObject *r = PyObject_CallMethodObjArgs(self, sp.s_left, stack, NULL);
        if (r == NULL)
            goto error;
        Py_DECREF(r);
    }
    if (clock_error != NULL) {
        give_error(clock_error);
        clock_error = NULL;
        goto error;
    }
    if (exc_type != Py_None) {
        PyObject *failed = PyObject_CallFunctionObjArgs(sp.is_failure, exc_type, exc, NULL);
        if (failed == NULL)
            goto error;
        int yes = PyObject_IsTrue(failed);
        Py_DECREF(failed);
        if (yes < 0 ||
            (yes && set_slot(self, sp.span_off[S_ERROR], PyObject_CallFunctionObjArgs(sp.error_info, exc, tb, NULL)) < 0))
            goto error;
    }
    rec = Py_NewRef(self);
    PyObject *lazy = SPAN_BORROW(self, S_LAZY), *md = SPAN_BORROW(self, S_METADATA);
    if (lazy == NULL || md == NULL) {
        PyErr_SetString(PyExc_AttributeError, "a span's fields are unset");
        goto error;
    }
    if (lazy != Py_None) {
        PyObject *r = PyObject_CallMethodNoArgs(self, sp.s_resolve);
        if (r == NULL)
            goto error;
        Py_DECREF(r);
    } else if (md != Py_None) {
        PyObject *needs = PyObject_CallOneArg(sp.needs_snapshot, md);
        int yes = needs == NULL ? -1 : PyObject_IsTrue(needs);
        Py_XDECREF(needs);
        if (yes < 0)
            goto error;
        if (yes) {
            PyObject *r = PyObject_CallMethodNoArgs(self, sp.s_snapshot);
            if (r == NULL)
                goto error;
            Py_DECREF(r);
        }
    } else {
        /* RT.compact and overlapping are bools, _trace_id an int (0 is a cached small int): compared by
         * identity, so no Python code runs while they are borrowed; anything else takes the object path. */
        PyObject *compact = SLOT(sp.rt, sp.rt_off[RT_COMPACT]), *error = SPAN_BORROW(self, S_ERROR),
                 *overlapping = SPAN_BORROW(self, S_OVERLAPPING), *trace_id = SPAN_BORROW(self, S_TRACE_ID);
        int c = compact == Py_True, o = !(overlapping == Py_False && error == Py_None), t = trace_id != sp.zero;
        if (c && !o && !t) { /* (see _recorder.runtime.CompactSpan) */
            PyObject *name = SPAN_BORROW(self, S_NAME), *level = SPAN_BORROW(self, S_LEVEL),
                     *start = SPAN_BORROW(self, S_START);
            if (name == NULL || level == NULL || start == NULL) {
                PyErr_SetString(PyExc_AttributeError, "a span's fields are unset");
                goto error;
            }
            compact_span = 1;
        }
    }
    PyObject *dead = SLOT(st, sp.thread_off[TS_DEAD]);
    int is_dead = dead == NULL ? 0 : PyObject_IsTrue(dead);
    if (is_dead < 0)
        goto error;
    if (is_dead) { /* began on a thread that has ended since (a generator finished elsewhere) */
        Py_SETREF(st, thread_state_now());
        if (st == NULL || check_thread_state(st) < 0)
            goto error;
    }
    if (compact_span) {
        int queued = queue_compact(st, self, end);
        if (queued < 0)
            goto error;
        if (queued) {
            Py_DECREF(end);
            Py_DECREF(st);
            Py_DECREF(stack);
            Py_DECREF(rec);
            Py_RETURN_NONE;
        }
        /* (else as the tuple runtime.CompactSpan) */
        PyObject *name = SPAN_BORROW(self, S_NAME), *level = SPAN_BORROW(self, S_LEVEL),
                 *start = SPAN_BORROW(self, S_START); /* (read again: Python code may have run since) */
        if (name == NULL || level == NULL || start == NULL) {
            PyErr_SetString(PyExc_AttributeError, "a span's fields are unset");
            goto error;
        }
        Py_SETREF(rec, PyTuple_Pack(4, name, level, start, end));
        if (rec == NULL)
            goto error;
    }
    if (queue_record(st, rec) < 0)
        goto error;
    Py_DECREF(end);
    Py_DECREF(st);
    Py_DECREF(stack);
    Py_DECREF(rec);
    Py_RETURN_NONE;
error:
    if (clock_error != NULL) { /* the clock's error is the context of the one raised since (as in Python) */
        PyObject *now = take_error();
        if (now != NULL) {
            PyException_SetContext(now, clock_error); /* (steals clock_error) */
            give_error(now);
        } else
            give_error(clock_error);
    }
    Py_XDECREF(end);
    Py_XDECREF(st);
    Py_XDECREF(stack);
    Py_XDECREF(rec);
    return NULL;
}

/* What span() reads when sampling is on (configure_sampling() sets it; see sampled_span()). */
static struct {
    PyTypeObject *dropped_type;
    PyObject *getrandbits, *sampled_span, *bits, *s_root_threshold, *s_critical_level, *s_root_drops,
        *s_short_cut_level, *s_short_cut_drops, *s_sampled;
    unsigned long long mask;
    Py_ssize_t rt_bridge;
} smp;

/* A span sampling dropped (spans.DroppedSpan, whose __enter__ and __exit__ these are): the current span
 * while it runs, so that its children see the decision, but not recorded unless it fails. */
static PyObject *dropped_enter(PyObject *self, PyObject *unused) {
    if (Py_TYPE(self) != smp.dropped_type && check_span(self) < 0)
        return NULL;
    PyObject *start = clock_now(); /* (first: the span becomes current last, see scope_enter) */
    if (start == NULL)
        return NULL;
    if (set_slot(self, sp.span_off[S_TOKEN], PyContextVar_Set(sp.current, self)) < 0) {
        Py_DECREF(start);
        return NULL;
    }
    set_slot(self, sp.span_off[S_START], start);
    return Py_NewRef(self);
}

static PyObject *dropped_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "__exit__ takes 3 arguments");
        return NULL;
    }
    if (Py_TYPE(self) != smp.dropped_type && check_span(self) < 0)
        return NULL;
    PyObject *token = SPAN_GET(self, S_TOKEN);
    if (token == NULL)
        return NULL;
    if (token == Py_None) { /* already stopped */
        Py_DECREF(token);
        Py_RETURN_NONE;
    }
    if (set_slot(self, sp.span_off[S_TOKEN], Py_NewRef(Py_None)) < 0) {
        Py_DECREF(token);
        return NULL;
    }
    int is_current = resets_current(self);
    if (is_current < 0) {
        Py_DECREF(token);
        return NULL;
    }
    int reset = is_current ? PyContextVar_Reset(sp.current, token) : 0; /* (as scope_exit) */
    Py_DECREF(token);
    /* (as DroppedSpan.__exit__: only a parent that has ended too can leave an ended span current) */
    PyObject *parent = SPAN_BORROW(self, S_PARENT);
    int parent_ended = parent != NULL && parent != Py_None && PyObject_TypeCheck(parent, sp.span_type) &&
                       SLOT(parent, sp.span_off[S_TOKEN]) == Py_None;
    if (is_current && reset == 0 && parent_ended && skip_ended() < 0)
        return NULL;
    if (reset < 0) { /* ended in another context than it began in */
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return NULL;
        PyErr_Clear();
        PyObject *cur;
        if (PyContextVar_Get(sp.current, NULL, &cur) < 0)
            return NULL;
        Py_XDECREF(cur);
        if (cur == self) {
            PyObject *t = PyContextVar_Set(sp.current, Py_None);
            if (t == NULL)
                return NULL;
            Py_DECREF(t);
        }
    }
    PyObject *error = SPAN_BORROW(self, S_ERROR);
    if (args[0] == Py_None && error == Py_None) {
        PyObject *counter = SPAN_GET(self, S_DROP_COUNTER);
        PyObject *n = counter == NULL ? NULL : PyIter_Next(counter);
        Py_XDECREF(counter);
        if (n == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "tracebridge: a drop counter ended");
            return NULL;
        }
        Py_DECREF(n);
        Py_RETURN_NONE;
    }
    return PyObject_CallMethodObjArgs(self, sp.s_ended_failing, args[0], args[1], args[2], NULL);
}

/* DroppedSpan's __enter__ and __exit__. A `with` statement binds both methods of its manager: as method
 * descriptors, that made and freed two method objects per statement, an eighth of what a dropped root
 * cost. These descriptors bind from a short free list instead. One type is both: an unbound method
 * (span NULL: called with the span first) and a bound one. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *span; /* (held) the span it is bound to, or NULL */
    int exit;       /* 0 __enter__, 1 __exit__ */
} DroppedMethod;

static PyTypeObject DroppedMethodType;
#define DROPPED_METHODS_KEPT 16 /* (a `with` holds one, nested ones one each) */
static DroppedMethod *dropped_methods_kept[DROPPED_METHODS_KEPT];
static int dropped_methods_free;

static PyObject *dropped_method_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    DroppedMethod *m = (DroppedMethod *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *span = m->span;
    const char *name = m->exit ? "__exit__" : "__enter__";
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_Format(PyExc_TypeError, "%s() takes no keyword arguments", name);
        return NULL;
    }
    if (span == NULL) {
        if (nargs < 1) {
            PyErr_Format(PyExc_TypeError, "unbound %s() needs a span as its first argument", name);
            return NULL;
        }
        span = args[0];
        args++;
        nargs--;
    }
    if (m->exit)
        return dropped_exit(span, args, nargs);
    if (nargs != 0) {
        PyErr_SetString(PyExc_TypeError, "__enter__() takes no arguments");
        return NULL;
    }
    return dropped_enter(span, NULL);
}

static PyObject *dropped_method_get(PyObject *op, PyObject *obj, PyObject *type) {
    DroppedMethod *m = (DroppedMethod *)op, *bound;
    if (obj == NULL || obj == Py_None || m->span != NULL)
        return Py_NewRef(op);
    if (dropped_methods_free > 0) {
        bound = dropped_methods_kept[--dropped_methods_free];
        PyObject_Init((PyObject *)bound, &DroppedMethodType);
    } else if ((bound = PyObject_GC_New(DroppedMethod, &DroppedMethodType)) == NULL)
        return NULL;
    bound->vectorcall = dropped_method_call;
    bound->span = Py_NewRef(obj);
    bound->exit = m->exit;
    PyObject_GC_Track(bound);
    return (PyObject *)bound;
}

static void dropped_method_dealloc(PyObject *op) {
    DroppedMethod *m = (DroppedMethod *)op;
    PyObject_GC_UnTrack(op);
    Py_CLEAR(m->span);
    if (dropped_methods_free < DROPPED_METHODS_KEPT)
        dropped_methods_kept[dropped_methods_free++] = m;
    else
        PyObject_GC_Del(op);
}

static int dropped_method_traverse(PyObject *op, visitproc visit, void *arg) {
    Py_VISIT(((DroppedMethod *)op)->span);
    return 0;
}

static PyObject *dropped_method_name(PyObject *op, void *closure) {
    return PyUnicode_FromString(((DroppedMethod *)op)->exit ? "__exit__" : "__enter__");
}

static PyObject *dropped_method_doc(PyObject *op, void *closure) {
    return PyUnicode_FromString(((DroppedMethod *)op)->exit ? "End a dropped span (compiled)."
                                                            : "Begin a dropped span (compiled).");
}

static PyObject *dropped_method_repr(PyObject *op) {
    DroppedMethod *m = (DroppedMethod *)op;
    const char *name = m->exit ? "__exit__" : "__enter__";
    return m->span == NULL ? PyUnicode_FromFormat("<method '%s' of dropped spans>", name)
                           : PyUnicode_FromFormat("<bound method %s of %R>", name, m->span);
}

static PyMemberDef dropped_method_members[] = {
    {"__self__", T_OBJECT, offsetof(DroppedMethod, span), READONLY, "The span it is bound to (None: unbound)."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef dropped_method_getset[] = {
    {"__name__", dropped_method_name, NULL, NULL, NULL},
    {"__qualname__", dropped_method_name, NULL, NULL, NULL},
    {"__doc__", dropped_method_doc, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject DroppedMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tracebridge._speedups.DroppedMethod",
    .tp_basicsize = sizeof(DroppedMethod),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_dealloc = dropped_method_dealloc,
    .tp_traverse = dropped_method_traverse,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(DroppedMethod, vectorcall),
    .tp_descr_get = dropped_method_get,
    .tp_members = dropped_method_members,
    .tp_getset = dropped_method_getset,
    .tp_repr = dropped_method_repr,
};

static PyMethodDef scope_methods[] = {
    {"__enter__", (PyCFunction)scope_enter, METH_NOARGS, "Begin the span (compiled)."},
    {"__exit__", (PyCFunction)(void (*)(void))scope_exit, METH_FASTCALL, "End the span (compiled)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SpanScope = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tracebridge._speedups.SpanScope",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A span's __enter__ and __exit__, compiled (a base of tracebridge.spans.Span).",
    .tp_methods = scope_methods,
    .tp_new = PyType_GenericNew,
};

/* -- span(): the span a `with` gets -------------------------------------------------------------------- */

/* span(name, /, level=1, **metadata), as spans.span makes it without sampling: a Span with its fields
 * set, or an _OffSpan when the level is off. With sampling on (RT.pipeline), sampled_span() makes the
 * commonest kinds and the Python function the others. make_span() takes the Python function's docstring
 * too, so that help() reads the same on both paths. */
enum { OFF_NAME, OFF_LEVEL, OFF_METADATA, OFF_COUNT };
static const char *off_slot_names[OFF_COUNT] = {"name", "level", "metadata"};
static struct {
    PyTypeObject *off_type;
    PyObject *py_span, *doc, *s_level, *one, *one_float;
    Py_ssize_t off_off[OFF_COUNT], rt_level, rt_pipeline;
} mk;

/* The fields of the pipeline sampling last read, read once per pipeline (Pipeline sets them when it is
 * made, and never again): `pipe` is held, so that a pipeline made later at the same address is read
 * anew. usable 0: its threshold is not one this code reads (None: the stages decide; not an integer of
 * 64 bits), and Python decides its roots. */
static struct {
    PyObject *pipe, *critical, *root_drops, *short_cut, *short_cut_drops;
    unsigned long long threshold;
    int usable;
} pc;

static int read_pipeline(PyObject *pipe) {
    PyObject *threshold = PyObject_GetAttr(pipe, smp.s_root_threshold), *critical = NULL, *root_drops = NULL,
             *short_cut = NULL, *short_cut_drops = NULL;
    if (threshold == NULL || (critical = PyObject_GetAttr(pipe, smp.s_critical_level)) == NULL ||
        (short_cut = PyObject_GetAttr(pipe, smp.s_short_cut_level)) == NULL ||
        (short_cut_drops = PyObject_GetAttr(pipe, smp.s_short_cut_drops)) == NULL)
        goto error;
    int usable = 0;
    unsigned long long t = 0;
    if (PyLong_CheckExact(threshold)) {
        t = PyLong_AsUnsignedLongLong(threshold);
        if (t == (unsigned long long)-1 && PyErr_Occurred())
            PyErr_Clear(); /* (not a threshold this code reads: Python decides) */
        else if ((root_drops = PyObject_GetAttr(pipe, smp.s_root_drops)) == NULL)
            goto error;
        else
            usable = 1;
    }
    Py_XSETREF(pc.pipe, Py_NewRef(pipe));
    Py_XSETREF(pc.critical, critical);
    Py_XSETREF(pc.root_drops, root_drops);
    Py_XSETREF(pc.short_cut, short_cut);
    Py_XSETREF(pc.short_cut_drops, short_cut_drops);
    pc.threshold = t;
    pc.usable = usable;
    Py_DECREF(threshold);
    return 0;
error:
    Py_XDECREF(threshold);
    Py_XDECREF(critical);
    Py_XDECREF(short_cut);
    Py_XDECREF(short_cut_drops);
    return -1;
}

/* a > b, as Python compares them (1, 0, or -1 with an exception), without a call for two ints of a C long. */
static int greater(PyObject *a, PyObject *b) {
    if (PyLong_CheckExact(a) && PyLong_CheckExact(b)) {
        int over_a, over_b;
        long x = PyLong_AsLongAndOverflow(a, &over_a), y = PyLong_AsLongAndOverflow(b, &over_b);
        if (!over_a && !over_b)
            return x > y;
    }
    return PyObject_RichCompareBool(a, b, Py_GT);
}

/* The Mersenne Twister of Python's random module, drawn from in place: a root's trace id is what
 * random.getrandbits(128) gives (the pure path makes that call, and seeded tests get the same traces on
 * both paths), without the call. MT19937 as CPython's _random.Random keeps it (Python 3.10 to 3.13);
 * configure_sampling() checks this layout against getrandbits itself on a generator of its own, and
 * calls getrandbits when they differ. */
#define MT_N 624
#define MT_M 397
typedef struct {
    PyObject_HEAD
    int index;
    uint32_t state[MT_N];
} MTState;
static MTState *mt; /* (held) random's generator, or NULL: call smp.getrandbits */

static uint32_t mt_next(MTState *g) {
    uint32_t *s = g->state;
    if (g->index < 0 || g->index >= MT_N) { /* the next block of 624 words (the generator's "twist") */
#define MT_MIX(a, b, c) ((c) ^ ((((a) & 0x80000000u) | ((b) & 0x7fffffffu)) >> 1) ^ (((b) & 1u) ? 0x9908b0dfu : 0u))
        int k;
        for (k = 0; k < MT_N - MT_M; k++)
            s[k] = MT_MIX(s[k], s[k + 1], s[k + MT_M]);
        for (; k < MT_N - 1; k++)
            s[k] = MT_MIX(s[k], s[k + 1], s[k + MT_M - MT_N]);
        s[MT_N - 1] = MT_MIX(s[MT_N - 1], s[0], s[MT_M - 1]);
#undef MT_MIX
        g->index = 0;
    }
    uint32_t y = s[g->index++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* The int of 128 bits hi:lo (not 0), made as _PyLong_FromByteArray makes it, without its loop over bytes
 * where this Python's int layout is known. */
static PyObject *long_from_128(unsigned long long hi, unsigned long long lo) {
    if (hi == 0)
        return PyLong_FromUnsignedLongLong(lo);
#if PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030E0000
    digit digits[128 / PyLong_SHIFT + 1];
    Py_ssize_t n = 0;
    while (hi | lo) {
        digits[n++] = (digit)(lo & PyLong_MASK);
        lo = (lo >> PyLong_SHIFT) | (hi << (64 - PyLong_SHIFT));
        hi >>= PyLong_SHIFT;
    }
    PyLongObject *v = _PyLong_New(n); /* (positive, n digits: the top one is not 0) */
    if (v == NULL)
        return NULL;
#if PY_VERSION_HEX >= 0x030C0000
    memcpy(v->long_value.ob_digit, digits, (size_t)n * sizeof(digit));
#else
    memcpy(v->ob_digit, digits, (size_t)n * sizeof(digit));
#endif
    return (PyObject *)v;
#else
    unsigned char bytes[16];
    for (int i = 0; i < 8; i++) {
        bytes[i] = (unsigned char)(lo >> (8 * i));
        bytes[8 + i] = (unsigned char)(hi >> (8 * i));
    }
    return _PyLong_FromByteArray(bytes, 16, 1, 0);
#endif
}

/* A root's trace id, as spans.span draws it (random.getrandbits(128) or 1), and in *low its randomness
 * (the bits under smp.mask). A new reference, or NULL with an exception. */
static PyObject *draw_trace_id(MTState *g, unsigned long long *low) {
    PyObject *tid;
    if (g == NULL) {
        if ((tid = PyObject_CallOneArg(smp.getrandbits, smp.bits)) == NULL)
            return NULL;
        int nonzero = PyObject_IsTrue(tid);
        if (nonzero <= 0)
            Py_SETREF(tid, nonzero < 0 ? NULL : PyLong_FromLong(1));
        if (tid == NULL)
            return NULL;
        *low = PyLong_AsUnsignedLongLongMask(tid) & smp.mask;
        if (PyErr_Occurred())
            Py_CLEAR(tid);
        return tid;
    }
    /* the first word drawn is the least significant, as getrandbits makes them */
    unsigned long long lo = mt_next(g), hi;
    lo |= (unsigned long long)mt_next(g) << 32;
    hi = mt_next(g);
    hi |= (unsigned long long)mt_next(g) << 32;
    if ((hi | lo) == 0)
        lo = 1;
    *low = lo & smp.mask;
    return long_from_128(hi, lo);
}

static PyObject *off_span(PyObject *name, PyObject *level, PyObject *md);

/* With sampling on (RT.pipeline), the two commonest cases, as spans.span decides them: a root decided by
 * one comparison of its trace's randomness with the pipeline's threshold (a DroppedSpan, or the span
 * _sampled_span makes of a kept one), and a span inside a trace that ParentBased dropped (an _OffSpan).
 * NULL without an exception: anything else, left to the Python function (nothing was done yet). */
static PyObject *sampled_span(PyObject *pipe, PyObject *name, PyObject *level, PyObject *md) {
    if (smp.dropped_type == NULL)
        return NULL;
    if (pipe != pc.pipe && read_pipeline(pipe) < 0)
        return NULL;
    PyObject *parent, *result = NULL;
    if (PyContextVar_Get(sp.current, NULL, &parent) < 0)
        return NULL;
    if (parent == NULL || parent == Py_None) {
        if (!pc.usable)
            goto done;
        int above = greater(level, pc.critical);
        if (above <= 0 || SLOT(sp.rt, smp.rt_bridge) != Py_None)
            goto done; /* (critical, or the OpenTelemetry bridge makes the span: Python) */
        unsigned long long low;
        PyObject *tid = draw_trace_id(mt, &low);
        if (tid == NULL)
            goto done;
        if (low >= pc.threshold) { /* kept: the span _sampled_span makes of it, with this trace id */
            PyObject *cargs[6] = {pipe, Py_None, name, level, md != NULL ? md : Py_None, tid};
            result = PyObject_Vectorcall(smp.sampled_span, cargs, 6, NULL);
            Py_DECREF(tid);
            goto done;
        }
        PyObject *lazy = PyUnicode_CheckExact(name) ? Py_NewRef(Py_None) : PyList_New(0);
        if (lazy == NULL || (result = smp.dropped_type->tp_alloc(smp.dropped_type, 0)) == NULL) {
            Py_XDECREF(lazy);
            Py_DECREF(tid);
            goto done;
        }
        SLOT(result, sp.span_off[S_NAME]) = Py_NewRef(name);
        SLOT(result, sp.span_off[S_LEVEL]) = Py_NewRef(level);
        SLOT(result, sp.span_off[S_METADATA]) = md != NULL ? Py_NewRef(md) : Py_NewRef(Py_None);
        SLOT(result, sp.span_off[S_ERROR]) = Py_NewRef(Py_None);
        SLOT(result, sp.span_off[S_LAZY]) = lazy;
        SLOT(result, sp.span_off[S_PARENT]) = Py_NewRef(Py_None);
        SLOT(result, sp.span_off[S_TRACE_ID]) = tid;
        SLOT(result, sp.span_off[S_SPAN_ID]) = Py_NewRef(sp.zero);
        SLOT(result, sp.span_off[S_DROP_COUNTER]) = Py_NewRef(pc.root_drops);
    } else {
        int yes;
        if (Py_TYPE(parent) == smp.dropped_type)
            yes = 0; /* (DroppedSpan.sampled) */
        else {
            PyObject *sampled = PyObject_GetAttr(parent, smp.s_sampled);
            yes = sampled == NULL ? -1 : PyObject_IsTrue(sampled);
            Py_XDECREF(sampled);
        }
        if (yes == 0) { /* inside a dropped trace: no more work than a span whose level is off */
            int above = greater(level, pc.short_cut);
            if (above > 0) {
                PyObject *n = PyIter_Next(pc.short_cut_drops);
                if (n != NULL) {
                    Py_DECREF(n);
                    result = off_span(name, level, md);
                } else if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_RuntimeError, "tracebridge: a drop counter ended");
            }
        }
    }
done:
    Py_XDECREF(parent);
    return result;
}

/* Whether generator `g` keeps its state as this code reads it: its type is CPython's _random.Random (or
 * a Python subclass), and what mt_next() draws from one such generator is what getrandbits(128) gives
 * from another seeded alike, over more than one block of the state. 1 yes, 0 no (or an error: then
 * getrandbits is called). */
static int mt_checked(PyObject *g) {
    PyTypeObject *base = Py_TYPE(g);
    while (base != NULL && strcmp(base->tp_name, "_random.Random") != 0)
        base = base->tp_base;
    if (base == NULL || base->tp_basicsize != sizeof(MTState))
        return 0;
    PyObject *ours = PyObject_CallFunction((PyObject *)base, "i", 20261201),
             *theirs = ours == NULL ? NULL : PyObject_CallFunction((PyObject *)base, "i", 20261201),
             *bits = theirs == NULL ? NULL : PyObject_GetAttrString(theirs, "getrandbits");
    int same = bits != NULL;
    for (int i = 0; same && i < 400; i++) { /* 1,600 words: a block is 624 */
        unsigned long long low;
        PyObject *drawn = draw_trace_id((MTState *)ours, &low), *called = PyObject_CallOneArg(bits, smp.bits);
        if (called != NULL && !PyObject_IsTrue(called))
            Py_SETREF(called, PyLong_FromLong(1));
        same = drawn != NULL && called != NULL && PyObject_RichCompareBool(drawn, called, Py_EQ) == 1;
        Py_XDECREF(drawn);
        Py_XDECREF(called);
    }
    Py_XDECREF(bits);
    Py_XDECREF(theirs);
    Py_XDECREF(ours);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        same = 0;
    }
    return same;
}

/* configure_sampling(dropped_type, sampled_span, getrandbits, mask): what the sampled cases read. */
static PyObject *configure_sampling(PyObject *self, PyObject *args) {
    PyObject *dropped, *sampled, *getrandbits, *mask;
    if (!PyArg_ParseTuple(args, "O!OOO!:configure_sampling", &PyType_Type, &dropped, &sampled, &getrandbits,
                          &PyLong_Type, &mask))
        return NULL;
    if (sp.span_type == NULL || !PyType_IsSubtype((PyTypeObject *)dropped, sp.span_type) ||
        ((PyTypeObject *)dropped)->tp_basicsize != sp.span_type->tp_basicsize) {
        PyErr_SetString(PyExc_TypeError, "configure_sampling: the dropped type must be a Span of Span's shape");
        return NULL;
    }
    if (!PyCallable_Check(sampled) || !PyCallable_Check(getrandbits)) {
        PyErr_SetString(PyExc_TypeError, "configure_sampling: sampled_span and getrandbits are callables");
        return NULL;
    }
    unsigned long long m = PyLong_AsUnsignedLongLong(mask);
    if (m == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t bridge = slot_offset(Py_TYPE(sp.rt), "bridge");
    if (bridge < 0)
        return NULL;
    if (smp.bits == NULL && (smp.bits = PyLong_FromLong(128)) == NULL)
        return NULL;
    smp.mask = m;
    smp.rt_bridge = bridge;
    Py_XSETREF(smp.sampled_span, Py_NewRef(sampled));
    Py_XSETREF(smp.getrandbits, Py_NewRef(getrandbits));
    Py_XSETREF(smp.dropped_type, (PyTypeObject *)Py_NewRef(dropped));
    /* getrandbits bound to a generator of CPython's kind (random.getrandbits is): drawn from in place */
    Py_CLEAR(mt);
    PyObject *g = PyCFunction_Check(getrandbits) ? PyCFunction_GET_SELF(getrandbits) : NULL;
    int checked = g == NULL || PyModule_Check(g) ? 0 : mt_checked(g);
    if (checked)
        mt = (MTState *)Py_NewRef(g);
    return PyBool_FromLong(checked);
}

static PyObject *off_span(PyObject *name, PyObject *level, PyObject *md) {
    PyObject *result = mk.off_type->tp_alloc(mk.off_type, 0);
    if (result == NULL)
        return NULL;
    PyObject *metadata = md != NULL ? Py_NewRef(md) : PyDict_New();
    if (metadata == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    SLOT(result, mk.off_off[OFF_NAME]) = Py_NewRef(name);
    SLOT(result, mk.off_off[OFF_LEVEL]) = Py_NewRef(level);
    SLOT(result, mk.off_off[OFF_METADATA]) = metadata;
    return result;
}

static PyObject *fast_span(PyObject *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    /* Arguments the Python function must say what is wrong with. */
    if (nargs < 1 || nargs > 2)
        return PyObject_Vectorcall(mk.py_span, args, nargsf, kwnames);
    PyObject *name = args[0], *level = nargs == 2 ? args[1] : NULL, *md = NULL, *result = NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i), *value = args[nargs + i];
        /* (names from source code are interned: one interned name other than "level" is not "level") */
        if (key == mk.s_level || (!PyUnicode_CHECK_INTERNED(key) && PyUnicode_Compare(key, mk.s_level) == 0)) {
            if (level != NULL) {
                Py_XDECREF(md);
                return PyObject_Vectorcall(mk.py_span, args, nargsf, kwnames);
            }
            level = value;
            continue;
        }
        if (md == NULL && (md = PyDict_New()) == NULL)
            return NULL;
        if (PyDict_SetItem(md, key, value) < 0)
            goto done;
    }
    if (level == NULL)
        level = mk.one;
    PyObject *rt_level = SLOT(sp.rt, mk.rt_level);
    if (rt_level == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tracebridge: the runtime state is not set up");
        goto done;
    }
    int off = greater(level, rt_level);
    if (off < 0) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "span level must be an integer (1 critical, 2 info, 3+ verbose), got %R",
                         level);
        }
        goto done;
    }
    if (off) {
        result = off_span(name, level, md);
        goto done;
    }
    PyObject *pipeline = SLOT(sp.rt, mk.rt_pipeline);
    if (pipeline != NULL && pipeline != Py_None) { /* sampling on */
        Py_INCREF(pipeline); /* (held: what the stages call may change the runtime's) */
        result = sampled_span(pipeline, name, level, md);
        Py_DECREF(pipeline);
        if (result == NULL && !PyErr_Occurred()) {
            Py_XDECREF(md);
            return PyObject_Vectorcall(mk.py_span, args, nargsf, kwnames);
        }
        goto done;
    }
    PyObject *lazy = PyUnicode_CheckExact(name) ? Py_NewRef(Py_None) : PyList_New(0);
    if (lazy == NULL)
        goto done;
    result = sp.span_type->tp_alloc(sp.span_type, 0);
    if (result == NULL) {
        Py_DECREF(lazy);
        goto done;
    }
    SLOT(result, sp.span_off[S_NAME]) = Py_NewRef(name);
    SLOT(result, sp.span_off[S_LEVEL]) = Py_NewRef(level);
    SLOT(result, sp.span_off[S_METADATA]) = md != NULL ? Py_NewRef(md) : Py_NewRef(Py_None);
    SLOT(result, sp.span_off[S_ERROR]) = Py_NewRef(Py_None);
    SLOT(result, sp.span_off[S_OVERLAPPING]) = Py_NewRef(Py_False);
    SLOT(result, sp.span_off[S_ADJUSTED]) = Py_NewRef(mk.one_float);
    SLOT(result, sp.span_off[S_LAZY]) = lazy;
    SLOT(result, sp.span_off[S_TRACE_ID]) = Py_NewRef(sp.zero);
    SLOT(result, sp.span_off[S_SPAN_ID]) = Py_NewRef(sp.zero);
done:
    Py_XDECREF(md);
    return result;
}

static PyMethodDef fast_span_def = {"span", (PyCFunction)(void (*)(void))fast_span, METH_FASTCALL | METH_KEYWORDS,
                                    NULL};

/* make_span(py_span, off_type, doc) -> the compiled span(), which calls py_span when sampling is on. */
/* active(level=1): `level <= RT.level`, compiled (spans.active is the Python one). */
static PyObject *fast_active(PyObject *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *level = nargs ? args[0] : mk.one;
    if (nargs + nkw > 1 || (nkw && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "level") != 0)) {
        PyErr_SetString(PyExc_TypeError, "active() takes one optional argument, level");
        return NULL;
    }
    if (nkw)
        level = args[0];
    PyObject *now = SLOT(sp.rt, mk.rt_level);
    if (now == NULL) {
        PyErr_SetString(PyExc_AttributeError, "level");
        return NULL;
    }
    if (PyLong_CheckExact(level) && PyLong_CheckExact(now)) {
        int o1, o2;
        long a = PyLong_AsLongAndOverflow(level, &o1), b = PyLong_AsLongAndOverflow(now, &o2);
        if (!o1 && !o2)
            return PyBool_FromLong(a <= b);
    }
    return PyObject_RichCompare(level, now, Py_LE);
}

static PyMethodDef fast_active_def = {"active", (PyCFunction)(void (*)(void))fast_active,
                                      METH_FASTCALL | METH_KEYWORDS, NULL};
static PyObject *active_doc;

static PyObject *make_active(PyObject *self, PyObject *doc) {
    if (!PyUnicode_Check(doc)) {
        PyErr_SetString(PyExc_TypeError, "make_active(doc): doc is a str");
        return NULL;
    }
    if (mk.doc == NULL || active_doc != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "make_active: called once only, after make_span()");
        return NULL;
    }
    if ((active_doc = PyUnicode_AsUTF8String(doc)) == NULL) /* (kept: the function's __doc__ reads it) */
        return NULL;
    fast_active_def.ml_doc = PyBytes_AS_STRING(active_doc);
    return PyCFunction_NewEx(&fast_active_def, NULL, NULL);
}

static PyObject *make_span(PyObject *self, PyObject *args) {
    PyObject *py_span, *off_type, *doc;
    if (!PyArg_ParseTuple(args, "OO!U:make_span", &py_span, &PyType_Type, &off_type, &doc))
        return NULL;
    if (sp.span_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "make_span: configure_spans() was not called");
        return NULL;
    }
    Py_ssize_t off_off[OFF_COUNT];
    for (int i = 0; i < OFF_COUNT; i++)
        if ((off_off[i] = slot_offset((PyTypeObject *)off_type, off_slot_names[i])) < 0)
            return NULL;
    Py_ssize_t rt_level = slot_offset(Py_TYPE(sp.rt), "level"), rt_pipeline = slot_offset(Py_TYPE(sp.rt), "pipeline");
    if (rt_level < 0 || rt_pipeline < 0)
        return NULL;
    if (mk.doc != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "make_span: called once only");
        return NULL;
    }
    PyObject *doc_bytes = PyUnicode_AsUTF8String(doc);
    if (doc_bytes == NULL)
        return NULL;
    memcpy(mk.off_off, off_off, sizeof(off_off));
    mk.rt_level = rt_level, mk.rt_pipeline = rt_pipeline;
    mk.off_type = (PyTypeObject *)Py_NewRef(off_type);
    mk.py_span = Py_NewRef(py_span);
    mk.doc = doc_bytes; /* kept for the life of the module: the function's __doc__ reads it */
    fast_span_def.ml_doc = PyBytes_AS_STRING(doc_bytes);
    return PyCFunction_NewEx(&fast_span_def, NULL, NULL);
}

/* -- Traced: a function whose every call is a span -------------------------------------------------- */

/* What decorate() returns for a plain function without metadata (@traced, instrument(), a span used as a
 * decorator) on the compiled path: `with span(name, level): return fn(*args, **kwargs)` (the pure path's
 * wrapper does the same in Python), with no frame of its own. It binds as a method (it is a method
 * descriptor, so `obj.method()` makes no bound method), keeps functools.update_wrapper's attributes in its
 * __dict__, reads like the function it wraps (__class__, and any attribute it does not have itself, come
 * from the function, as with wrapt's proxies: inspect.isfunction() holds, __code__ and __globals__ are
 * there) and pickles by its qualified name, as functions do. */
typedef struct {
    PyObject_HEAD
    PyObject *fn, *name, *level, *dict, *weakrefs;
    vectorcallfunc vectorcall;
} Traced;

static PyObject *s_enter, *s_exit, *s_qualname;

/* Leave span `s` with the exception now set (or none): as a `with` block does. Returns 1 when its
 * __exit__ suppressed the exception, 0 when it stands (set again), -1 when __exit__ failed (its error set,
 * the original as its context). */
/* The exception now raised, normalized, with its traceback attached (a new reference; NULL: none). */
static PyObject *take_error(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* Raise `exc` again (stolen). */
static void give_error(PyObject *exc) {
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* Leave span `s` with the exception now set (or none), as a `with` block does (`fast`: 1 a Span, 2 a
 * DroppedSpan, 0 anything else, whose bound __exit__ is `exit`). Returns 1 when __exit__ suppressed the
 * exception, 0 when it stands (raised again), -1 when __exit__ failed (its error raised, with the
 * call's exception as its context, chained as CPython chains: no cycle). */
static int traced_leave(PyObject *s, PyObject *exit, int fast) {
    PyObject *exc = take_error();
    PyObject *tb = exc == NULL ? NULL : PyException_GetTraceback(exc);
    PyObject *args[3] = {exc ? (PyObject *)Py_TYPE(exc) : Py_None, exc ? exc : Py_None, tb ? tb : Py_None};
    PyObject *r = fast == 1   ? scope_exit(s, args, 3)
                  : fast == 2 ? dropped_exit(s, args, 3)
                              : PyObject_Vectorcall(exit, args, 3, NULL);
    Py_XDECREF(tb);
    int suppress = r == NULL ? -1 : exc == NULL ? 0 : PyObject_IsTrue(r);
    Py_XDECREF(r);
    if (suppress < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_SystemError, "a span's __exit__ failed without an exception");
        if (exc != NULL) {
            PyObject *err = take_error();
            if (err != exc) {
                PyObject *o = exc, *ctx;
                while ((ctx = PyException_GetContext(o)) != NULL) {
                    Py_DECREF(ctx); /* (still referenced by `o`) */
                    if (ctx == err) {
                        PyException_SetContext(o, NULL);
                        break;
                    }
                    o = ctx;
                }
                PyException_SetContext(err, exc); /* (steals exc) */
            } else
                Py_DECREF(exc);
            give_error(err);
        }
        return -1;
    }
    if (suppress) {
        Py_DECREF(exc);
        return 1;
    }
    if (exc != NULL)
        give_error(exc);
    return 0;
}

/* `obj`'s special method `name`, bound as a `with` statement binds it (looked up on its type, through the
 * descriptor protocol); TypeError when it has none. */
static PyObject *special_method(PyObject *obj, PyObject *name) {
    PyObject *d = _PyType_Lookup(Py_TYPE(obj), name); /* (borrowed) */
    if (d == NULL) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError, "'%.200s' object does not support the context manager protocol",
                         Py_TYPE(obj)->tp_name);
        return NULL;
    }
    descrgetfunc get = Py_TYPE(d)->tp_descr_get;
    return get != NULL ? get(d, obj, (PyObject *)Py_TYPE(obj)) : Py_NewRef(d);
}

static PyObject *traced_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Traced *self = (Traced *)op;
    PyObject *rt_level = sp.rt == NULL ? NULL : SLOT(sp.rt, mk.rt_level);
    if (self->fn == NULL || self->name == NULL || self->level == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tracebridge: this traced function was cleared");
        return NULL;
    }
    if (rt_level == NULL || mk.py_span == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tracebridge: the runtime state is not set up");
        return NULL;
    }
    int off = PyObject_RichCompareBool(self->level, rt_level, Py_GT);
    if (off < 0)
        return NULL;
    if (off)
        return PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    PyObject *span_args[2] = {self->name, self->level};
    PyObject *s = fast_span(NULL, span_args, 2, NULL), *exit = NULL, *result = NULL;
    if (s == NULL)
        return NULL;
    int fast = Py_TYPE(s) == sp.span_type ? 1 : Py_TYPE(s) == smp.dropped_type ? 2 : 0;
    if (fast) {
        PyObject *entered = fast == 1 ? scope_enter(s, NULL) : dropped_enter(s, NULL);
        if (entered == NULL)
            goto done;
        Py_DECREF(entered);
    } else { /* (sampling on: whatever the Python span() made, entered as `with` would) */
        PyObject *enter = special_method(s, s_enter);
        if (enter == NULL)
            goto done;
        exit = special_method(s, s_exit);
        PyObject *entered = exit == NULL ? NULL : PyObject_CallNoArgs(enter);
        Py_DECREF(enter);
        if (entered == NULL)
            goto done;
        Py_DECREF(entered);
    }
    result = PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    int left = traced_leave(s, exit, fast);
    if (left != 0) {
        Py_CLEAR(result);
        if (left > 0) /* (suppressed: the call returns None, as the Python wrapper would) */
            result = Py_NewRef(Py_None);
    }
done:
    Py_XDECREF(exit);
    Py_DECREF(s);
    return result;
}

static PyObject *traced_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *fn, *name, *level;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Traced(fn, name, level) takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOO!:Traced", &fn, &name, &PyLong_Type, &level))
        return NULL;
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "Traced: fn must be callable");
        return NULL;
    }
    Traced *self = (Traced *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->fn = Py_NewRef(fn);
    self->name = Py_NewRef(name);
    self->level = Py_NewRef(level);
    self->vectorcall = traced_call;
    return (PyObject *)self;
}

static int traced_traverse(PyObject *op, visitproc visit, void *arg) {
    Traced *self = (Traced *)op;
    Py_VISIT(self->fn);
    Py_VISIT(self->name);
    Py_VISIT(self->level);
    Py_VISIT(self->dict);
    return 0;
}

static int traced_clear(PyObject *op) {
    Traced *self = (Traced *)op;
    Py_CLEAR(self->fn);
    Py_CLEAR(self->name);
    Py_CLEAR(self->level);
    Py_CLEAR(self->dict);
    return 0;
}

static void traced_dealloc(PyObject *op) {
    PyObject_GC_UnTrack(op);
    if (((Traced *)op)->weakrefs != NULL)
        PyObject_ClearWeakRefs(op);
    traced_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyObject *traced_get(PyObject *self, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

/* Attributes it does not have itself are the function's (__code__, __globals__, __defaults__, ...). */
static PyObject *traced_getattro(PyObject *op, PyObject *attr) {
    PyObject *v = PyObject_GenericGetAttr(op, attr);
    if (v != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError) || ((Traced *)op)->fn == NULL)
        return v;
    PyErr_Clear();
    return PyObject_GetAttr(((Traced *)op)->fn, attr);
}

/* What a call reads of the function (its code, defaults, globals, closure) is set on the function: set on
 * the wrapper it would not take effect (hot reloading and mock.patch.object set __code__). */
static int traced_setattro(PyObject *op, PyObject *attr, PyObject *value) {
    PyObject *fn = ((Traced *)op)->fn;
    if (fn != NULL && PyUnicode_Check(attr)) {
        static const char *forwarded[] = {"__code__", "__defaults__", "__kwdefaults__", "__closure__", "__globals__"};
        for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
            if (PyUnicode_CompareWithASCIIString(attr, forwarded[i]) == 0)
                return PyObject_SetAttr(fn, attr, value);
    }
    return PyObject_GenericSetAttr(op, attr, value);
}

static PyObject *traced_class(PyObject *op, void *closure) {
    PyObject *fn = ((Traced *)op)->fn;
    return Py_NewRef(fn != NULL ? (PyObject *)Py_TYPE(fn) : (PyObject *)Py_TYPE(op));
}

static PyObject *traced_reduce(PyObject *op, PyObject *unused) {
    return PyObject_GetAttr(op, s_qualname); /* (a string: pickle saves it as a global, as a function) */
}

static PyObject *traced_repr(PyObject *op) {
    PyObject *q = PyObject_GetAttr(op, s_qualname);
    if (q == NULL) {
        PyErr_Clear();
        q = Py_NewRef(((Traced *)op)->name ? ((Traced *)op)->name : Py_None);
    }
    PyObject *r = PyUnicode_FromFormat("<traced function %S at %p>", q, op);
    Py_DECREF(q);
    return r;
}

static PyMemberDef traced_members[] = {
    {"span_name", T_OBJECT, offsetof(Traced, name), READONLY, "The name of each call's span."},
    {"span_level", T_OBJECT, offsetof(Traced, level), READONLY, "The level of each call's span."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef traced_getset[] = {
    {"__class__", traced_class, NULL, "The wrapped function's class (as wrapt's proxies say).", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef traced_methods[] = {
    {"__reduce__", traced_reduce, METH_NOARGS, "Pickled by qualified name, as functions are."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TracedType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tracebridge._speedups.Traced",
    .tp_basicsize = sizeof(Traced),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "Traced(fn, name, level): a function whose every call is a span (compiled).",
    .tp_new = traced_new,
    .tp_dealloc = traced_dealloc,
    .tp_traverse = traced_traverse,
    .tp_clear = traced_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Traced, vectorcall),
    .tp_descr_get = traced_get,
    .tp_getattro = traced_getattro,
    .tp_setattro = traced_setattro,
    .tp_dictoffset = offsetof(Traced, dict),
    .tp_weaklistoffset = offsetof(Traced, weakrefs),
    .tp_members = traced_members,
    .tp_getset = traced_getset,
    .tp_methods = traced_methods,
    .tp_repr = traced_repr,
};

/* configure_spans(span_type, thread_state_type, rt, current, thread_local, thread_state, clock,
 *                 is_failure, error_info, needs_snapshot) */
static PyObject *configure_spans(PyObject *self, PyObject *args) {
    PyObject *span_type, *thread_type, *rt, *current, *thread_local, *thread_state, *clock, *is_failure,
        *error_info, *needs_snapshot;
    if (!PyArg_ParseTuple(args, "O!O!OO!OOOOOO:configure_spans", &PyType_Type, &span_type, &PyType_Type,
                          &thread_type, &rt, &PyContextVar_Type, &current, &thread_local, &thread_state,
                          &clock, &is_failure, &error_info, &needs_snapshot))
        return NULL;
    if (!PyCallable_Check(clock)) {
        PyErr_SetString(PyExc_TypeError, "configure_spans: the clock must be callable");
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)span_type, &SpanScope)) {
        PyErr_SetString(PyExc_TypeError, "configure_spans: the span type must derive from SpanScope");
        return NULL;
    }
    /* (Offsets are computed first and kept only once everything checks out.) */
    Py_ssize_t span_off[S_COUNT], thread_off[TS_COUNT], rt_off[RT_COUNT];
    for (int i = 0; i < S_COUNT; i++)
        if ((span_off[i] = slot_offset((PyTypeObject *)span_type, span_slot_names[i])) < 0)
            return NULL;
    for (int i = 0; i < TS_COUNT; i++)
        if ((thread_off[i] = slot_offset((PyTypeObject *)thread_type, thread_slot_names[i])) < 0)
            return NULL;
    for (int i = 0; i < RT_COUNT; i++)
        if ((rt_off[i] = slot_offset(Py_TYPE(rt), rt_slot_names[i])) < 0)
            return NULL;
    PyObject *collections = PyImport_ImportModule("collections"), *time = PyImport_ImportModule("time");
    PyObject *deque = collections == NULL ? NULL : PyObject_GetAttrString(collections, "deque");
    PyObject *perf = time == NULL ? NULL : PyObject_GetAttrString(time, "perf_counter_ns");
    Py_XDECREF(collections);
    Py_XDECREF(time);
    if (deque == NULL || perf == NULL || !PyType_Check(deque)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "configure_spans: collections.deque is not a type");
        Py_XDECREF(deque);
        Py_XDECREF(perf);
        return NULL;
    }
    memcpy(sp.span_off, span_off, sizeof(span_off));
    memcpy(sp.thread_off, thread_off, sizeof(thread_off));
    memcpy(sp.rt_off, rt_off, sizeof(rt_off));
    Py_XSETREF(sp.deque_type, (PyTypeObject *)deque);
    Py_XSETREF(sp.perf_counter_ns, perf);
    Py_XSETREF(sp.span_type, (PyTypeObject *)Py_NewRef(span_type));
    Py_XSETREF(sp.thread_type, (PyTypeObject *)Py_NewRef(thread_type));
    Py_XSETREF(sp.rt, Py_NewRef(rt));
    Py_XSETREF(sp.current, Py_NewRef(current));
    Py_XSETREF(sp.thread_local, Py_NewRef(thread_local));
    Py_XSETREF(sp.thread_state, Py_NewRef(thread_state));
    Py_XSETREF(sp.clock, Py_NewRef(clock));
    Py_XSETREF(sp.is_failure, Py_NewRef(is_failure));
    Py_XSETREF(sp.error_info, Py_NewRef(error_info));
    Py_XSETREF(sp.needs_snapshot, Py_NewRef(needs_snapshot));
    Py_RETURN_NONE;
}

/* Add the code location of `name`, if it has one, to `md` when md does not say where already: 1 done, 0
 * `where` is not what it should be (the Python code converts the record), -1 error. */
static int add_code_location(PyObject *md, PyObject *name, PyObject *code_locations) {
    PyObject *where = PyDict_GetItemWithError(code_locations, name);
    if (where == NULL)
        return PyErr_Occurred() ? -1 : 1;
    int has = PyDict_Contains(md, s_code_file);
    if (has != 0)
        return has < 0 ? -1 : 1;
    if (!PyTuple_CheckExact(where) || PyTuple_GET_SIZE(where) != 3)
        return 0;
    if (PyDict_SetItem(md, s_code_file, PyTuple_GET_ITEM(where, 0)) < 0 ||
        PyDict_SetItem(md, s_code_line, PyTuple_GET_ITEM(where, 1)) < 0 ||
        PyDict_SetItem(md, s_code_function, PyTuple_GET_ITEM(where, 2)) < 0)
        return -1;
    return 1;
}

/* The metadata of an event: `md` (NULL: none) with the code location of `name`, if it has one and `md`
 * does not say where already. A new dict; NULL with an exception set, or NULL without one when `where`
 * is not what it should be (the Python code then converts the record). */
static PyObject *event_metadata(PyObject *md, PyObject *name, PyObject *code_locations) {
    PyObject *out = md == NULL ? PyDict_New() : PyDict_Copy(md);
    if (out == NULL)
        return NULL;
    int r = add_code_location(out, name, code_locations);
    if (r <= 0)
        Py_CLEAR(out);
    return out;
}

/* A compact event's metadata: only the writer reads it, so what tracebridge makes is shared where an
 * Event gets its own (one empty dict; one dict per source location of instrumented functions). A span's
 * own metadata is copied, as for an Event: the application may change it until the writer is done. */
static PyObject *empty_md, *code_md;

static PyObject *compact_metadata(PyObject *md, PyObject *name, PyObject *code_locations) {
    if (md != NULL)
        return event_metadata(md, name, code_locations);
    PyObject *where = PyDict_GetItemWithError(code_locations, name);
    if (where == NULL) {
        if (PyErr_Occurred())
            return NULL;
        if (empty_md == NULL && (empty_md = PyDict_New()) == NULL)
            return NULL;
        return Py_NewRef(empty_md);
    }
    if (!PyTuple_CheckExact(where))
        return event_metadata(md, name, code_locations);
    if (code_md == NULL && (code_md = PyDict_New()) == NULL)
        return NULL;
    PyObject *cached = PyDict_GetItemWithError(code_md, where);
    if (cached != NULL)
        return Py_NewRef(cached);
    if (PyErr_Occurred())
        return NULL;
    PyObject *made = event_metadata(NULL, name, code_locations);
    if (made == NULL)
        return NULL;
    if (PyDict_GET_SIZE(code_md) >= 4096)
        PyDict_Clear(code_md);
    if (PyDict_SetItem(code_md, where, made) < 0)
        Py_CLEAR(made);
    return made;
}

/* What the writer's sanitizer would leave as it is (_sanitize._already_clean), with no key the writer
 * gives a meaning of its own (category, track, flows, reserved names): 1 yes, 0 no (the Python code
 * converts it), -1 error. A key's secrecy is read from the sanitizer's cache (filled by key_check). */
static int plain_metadata(PyObject *md, PyObject *secret_cache, Py_ssize_t max_string, PyObject *special) {
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(md, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key))
            return 0;
        PyObject *secret = PyDict_GetItemWithError(secret_cache, key);
        if (secret == NULL && !PyErr_Occurred() && key_check != NULL) { /* a key not seen yet */
            PyObject *checked = PyObject_CallOneArg(key_check, key);
            if (checked == NULL) { /* (never: is_secret_key does not raise; the Python code looks again) */
                PyErr_Clear();
                return 0;
            }
            Py_DECREF(checked); /* (a bool: the cache holds it too) */
            secret = checked;
        }
        if (secret != Py_False)
            return PyErr_Occurred() ? -1 : 0;
        int taken = PySet_Contains(special, key);
        if (taken != 0)
            return taken < 0 ? -1 : 0;
        if (PyUnicode_CheckExact(value)) {
            if (!PyUnicode_IS_ASCII(value) || PyUnicode_GET_LENGTH(value) > max_string ||
                memchr(PyUnicode_DATA(value), 0, (size_t)PyUnicode_GET_LENGTH(value)) != NULL || !no_secret(value))
                return 0;
        } else if (PyLong_CheckExact(value)) {
            int overflow = 0;
            long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (v == -1 && PyErr_Occurred())
                return -1;
            if (overflow)
                return 0;
        } else if (!PyFloat_CheckExact(value) && !PyBool_Check(value) && value != Py_None)
            return 0;
    }
    return 1;
}

/* Record (tracebridge._model.Record: instants, counters, activities, log messages as sources record them):
 * where its slots sit, set by configure_records(). */
enum {
    R_KIND, R_NAME, R_START, R_END, R_LEVEL, R_METADATA, R_VALUE, R_SOURCE, R_ERROR, R_TRACE_ID, R_SPAN_ID,
    R_ADJUSTED, R_PARENT, R_THREAD, R_COUNT
};
static const char *record_slot_names[R_COUNT] = {"kind", "name", "start_ns", "end_ns", "level", "metadata",
                                                 "value", "source", "error", "trace_id", "span_id",
                                                 "adjusted_count", "parent", "thread"};
static Py_ssize_t record_off[R_COUNT];
static PyTypeObject *record_type;

static PyTypeObject *log_record_type; /* logging.LogRecord */
static PyObject *log_get_message;     /* its getMessage, as configured (a replaced one: the Python code) */

static PyObject *configure_records(PyObject *self, PyObject *args) {
    PyObject *type, *log_type;
    if (!PyArg_ParseTuple(args, "O!O!:configure_records", &PyType_Type, &type, &PyType_Type, &log_type))
        return NULL;
    Py_ssize_t off[R_COUNT];
    for (int i = 0; i < R_COUNT; i++)
        if ((off[i] = slot_offset((PyTypeObject *)type, record_slot_names[i])) < 0)
            return NULL;
    PyObject *get_message = _PyType_Lookup((PyTypeObject *)log_type, s_getMessage);
    if (get_message == NULL) {
        PyErr_SetString(PyExc_TypeError, "configure_records: LogRecord has no getMessage");
        return NULL;
    }
    memcpy(record_off, off, sizeof(off));
    Py_XSETREF(record_type, (PyTypeObject *)Py_NewRef(type));
    Py_XSETREF(log_record_type, (PyTypeObject *)Py_NewRef(log_type));
    Py_XSETREF(log_get_message, Py_NewRef(get_message));
    Py_RETURN_NONE;
}

/* log_record(record, frames, levels, context, clock, plain_fields) -> Record | None
 *
 * What tracebridge.logging.record_from_log makes of a plain logging.LogRecord (exactly that type): its
 * message formatted, {"logger", "message_template"} as metadata, its source location (from `frames`,
 * the cache record_from_log fills), its trace level and priority (from `levels`), the current span's ids
 * (`context()`: trace_context) and the time (`clock()`). None, for record_from_log to do it, when anything
 * is out of the ordinary: a failure to format or to attach, fields beyond a plain record's (extra=, ids
 * set by a filter), a location or level not seen yet. */

static PyObject *log_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 || !PyDict_Check(args[1]) || !PyDict_Check(args[2]) || !PyLong_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "log_record(record, frames, levels, context, clock, plain_fields)");
        return NULL;
    }
    PyObject *record = args[0], *frames = args[1], *levels = args[2], *context = args[3], *clock = args[4];
    if (record_type == NULL || Py_TYPE(record) != log_record_type ||
        _PyType_Lookup(log_record_type, s_getMessage) != log_get_message)
        Py_RETURN_NONE; /* (a subclass, or getMessage replaced: the Python code calls it) */
    PyObject *d = PyObject_GetAttr(record, s_dict);
    if (d == NULL)
        return NULL;
    /* Every object read is held here: formatting and the callbacks run Python code that may change the
     * record or the caches. */
    enum { V_EXC, V_MSG, V_ARGS, V_NAME, V_LEVELNO, V_FUNC, V_PATH, V_LINENO, V_COUNT };
    PyObject *const keys[V_COUNT] = {s_exc_info, s_msg,      s_args,     s_name,
                                     s_levelno,  s_funcName, s_pathname, s_lineno};
    PyObject *v[V_COUNT] = {NULL};
    PyObject *result = NULL, *body = NULL, *md = NULL, *where = NULL, *ctx = NULL, *t = NULL, *rec = NULL,
             *levels_of = NULL, *source = NULL;
    if (!PyDict_CheckExact(d))
        goto plain_none;
    Py_ssize_t known = PyLong_AsSsize_t(args[5]);
    if (known == -1 && PyErr_Occurred())
        goto finally;
    PyObject *optional[2] = {s_message, s_asctime};
    for (int i = 0; i < 2; i++) {
        int has = PyDict_Contains(d, optional[i]);
        if (has < 0)
            goto finally;
        known += has;
    }
    int has_ids = PyDict_Contains(d, s_trace_id);
    if (has_ids < 0)
        goto finally;
    if (has_ids || PyDict_GET_SIZE(d) != known)
        goto plain_none; /* extra= fields, or ids a filter set: record_from_log */
    for (int i = 0; i < V_COUNT; i++) {
        v[i] = Py_XNewRef(PyDict_GetItemWithError(d, keys[i]));
        if (v[i] == NULL) {
            if (PyErr_Occurred())
                goto finally;
            goto plain_none;
        }
    }
    if (!PyUnicode_CheckExact(v[V_MSG]))
        goto plain_none;
    int failing = PyObject_IsTrue(v[V_EXC]);
    if (failing < 0)
        goto finally;
    if (failing)
        goto plain_none;
    int with_args = PyObject_IsTrue(v[V_ARGS]);
    if (with_args < 0)
        goto finally;
    levels_of = Py_XNewRef(PyDict_GetItemWithError(levels, v[V_LEVELNO]));
    if (levels_of == NULL) {
        if (PyErr_Occurred())
            goto finally;
        goto plain_none;
    }
    if (!PyTuple_CheckExact(levels_of) || PyTuple_GET_SIZE(levels_of) != 2)
        goto plain_none;
    where = PyTuple_Pack(3, v[V_FUNC], v[V_PATH], v[V_LINENO]);
    if (where == NULL)
        goto finally;
    source = Py_XNewRef(PyDict_GetItemWithError(frames, where));
    if (source == NULL) {
        if (!PyErr_Occurred())
            goto plain_none; /* a place not seen yet: record_from_log caches it */
        if (!PyErr_ExceptionMatches(PyExc_TypeError))
            goto finally;
        PyErr_Clear(); /* not hashable: record_from_log */
        goto plain_none;
    }
    /* No span is current and OpenTelemetry is not loaded: no context (what `context` would find, as
     * logging.trace_context does), without the call. */
    PyObject *cur = NULL;
    if (sp.current == NULL || PyContextVar_Get(sp.current, NULL, &cur) < 0)
        PyErr_Clear();
    int bare = cur == Py_None;
    Py_XDECREF(cur);
    if (bare) {
        PyObject *otel = PyDict_GetItemWithError(PyImport_GetModuleDict(), s_otel_trace);
        if (otel == NULL && PyErr_Occurred())
            goto finally;
        bare = otel == NULL;
    }
    ctx = bare ? Py_NewRef(Py_None) : PyObject_CallNoArgs(context);
    if (ctx == NULL)
        goto finally;
    PyObject *trace_id = sp.zero, *span_id = sp.zero;
    if (ctx != Py_None) {
        if (!PyTuple_Check(ctx) || PyTuple_GET_SIZE(ctx) < 2)
            goto plain_none;
        trace_id = PyTuple_GET_ITEM(ctx, 0), span_id = PyTuple_GET_ITEM(ctx, 1);
    }
    /* Formatted last, so that nothing formats it twice (record_from_log formats a record this leaves). */
    if (with_args) {
        body = PyUnicode_Format(v[V_MSG], v[V_ARGS]);
        if (body == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                goto finally; /* (KeyboardInterrupt, SystemExit: as getMessage would raise them) */
            PyErr_Clear(); /* a message that does not format: record_from_log says why */
            goto plain_none;
        }
    } else
        body = Py_NewRef(v[V_MSG]);
    t = PyObject_CallNoArgs(clock);
    if (t == NULL)
        goto finally;
    md = PyDict_New();
    if (md == NULL || PyDict_SetItem(md, s_logger, v[V_NAME]) < 0)
        goto finally;
    if (with_args) { /* the template as record_from_log reads it: after formatting (which may change it) */
        PyObject *msg = PyDict_GetItemWithError(d, s_msg), *margs = PyDict_GetItemWithError(d, s_args);
        if (PyErr_Occurred())
            goto finally;
        int keep = msg != NULL && margs != NULL && PyUnicode_Check(msg);
        if (keep) {
            Py_INCREF(msg);
            keep = PyObject_IsTrue(margs);
            if (keep > 0 && PyDict_SetItem(md, s_message_template, msg) < 0)
                keep = -1;
            Py_DECREF(msg);
            if (keep < 0)
                goto finally;
        }
    }
    rec = record_type->tp_alloc(record_type, 0);
    if (rec == NULL)
        goto finally;
    PyObject *values[R_COUNT];
    values[R_KIND] = s_log, values[R_NAME] = body, values[R_START] = t, values[R_END] = t;
    values[R_LEVEL] = PyTuple_GET_ITEM(levels_of, 0), values[R_METADATA] = md;
    values[R_VALUE] = PyTuple_GET_ITEM(levels_of, 1), values[R_SOURCE] = source, values[R_ERROR] = Py_None;
    values[R_TRACE_ID] = trace_id, values[R_SPAN_ID] = span_id, values[R_ADJUSTED] = mk.one_float;
    values[R_PARENT] = Py_None, values[R_THREAD] = Py_None;
    for (int i = 0; i < R_COUNT; i++)
        Py_XSETREF(SLOT(rec, record_off[i]), Py_NewRef(values[i]));
    result = rec;
    rec = NULL;
    goto finally;
plain_none:
    result = Py_NewRef(Py_None);
finally:
    Py_DECREF(d);
    for (int i = 0; i < V_COUNT; i++)
        Py_XDECREF(v[i]);
    Py_XDECREF(body);
    Py_XDECREF(md);
    Py_XDECREF(where);
    Py_XDECREF(ctx);
    Py_XDECREF(t);
    Py_XDECREF(rec);
    Py_XDECREF(levels_of);
    Py_XDECREF(source);
    return result;
}

/* The event of a log message or instant Record, as EventConversion._to_event makes it, when nothing in it
 * needs work: 1 made (*made set), 0 the Python code converts it, -1 error. */
static int record_event(PyObject *rec, long long offset, PyObject *tid, PyObject *thread_name,
                        PyObject *secret_cache, Py_ssize_t max_string, PyObject *special, PyObject **made) {
    PyObject *v[R_COUNT];
    for (int i = 0; i < R_COUNT; i++)
        if ((v[i] = SLOT(rec, record_off[i])) == NULL)
            return 0; /* (an unset slot: the Python code says so) */
    PyObject *kind = v[R_KIND];
    if (!PyUnicode_CheckExact(kind) || (PyUnicode_Compare(kind, s_log) != 0 && PyUnicode_Compare(kind, s_instant) != 0))
        return 0;
    if (v[R_ERROR] != Py_None || !plain_name(v[R_NAME]))
        return 0;
    long long start, end;
    int a = small_int(v[R_START], &start);
    if (a <= 0)
        return a;
    int b = small_int(v[R_END], &end);
    if (b <= 0)
        return b;
    PyObject *md = v[R_METADATA], *meta;
    if (md == Py_None || (PyDict_CheckExact(md) && PyDict_GET_SIZE(md) == 0))
        meta = PyDict_New();
    else if (!PyDict_CheckExact(md))
        return 0;
    else {
        int plain = plain_metadata(md, secret_cache, max_string, special);
        if (plain <= 0)
            return plain;
        meta = PyDict_Copy(md);
    }
    if (meta == NULL)
        return -1;
    PyObject *fields[7] = {Py_NewRef(v[R_NAME]), PyLong_FromLongLong(start + offset), PyLong_FromLongLong(end + offset),
                           Py_NewRef(v[R_LEVEL]), meta, Py_NewRef(tid), Py_NewRef(thread_name)};
    if (fields[1] == NULL || fields[2] == NULL) {
        for (int j = 0; j < 7; j++)
            Py_XDECREF(fields[j]);
        return -1;
    }
    PyObject *ev = new_event(fields);
    if (ev == NULL)
        return -1;
    Py_SETREF(SLOT(ev, field_off[F_KIND]), Py_NewRef(kind));
    Py_SETREF(SLOT(ev, field_off[F_VALUE]), Py_NewRef(v[R_VALUE]));
    Py_SETREF(SLOT(ev, field_off[F_SOURCE]), Py_NewRef(v[R_SOURCE]));
    Py_SETREF(SLOT(ev, field_off[F_TRACE_ID]), Py_NewRef(v[R_TRACE_ID]));
    Py_SETREF(SLOT(ev, field_off[F_SPAN_ID]), Py_NewRef(v[R_SPAN_ID]));
    Py_SETREF(SLOT(ev, field_off[F_ADJUSTED]), Py_NewRef(v[R_ADJUSTED]));
    *made = ev;
    return 1;
}

/* Append an event, or a record left to convert, to what span_events makes (a list, or an EventBatch). */
static int events_append(PyObject *out, PyObject *ev, int left) {
    return Py_TYPE(out) == &EventBatchType ? eb_append_event((EventBatch *)out, ev, left) : PyList_Append(out, ev);
}

/* span_events(records, start_ns, offset, tid, thread_name, code_locations, objects)
 *     -> (events, outside, left, logs, instants)
 *
 * What Session._events makes of a batch of records, for the commonest spans: each compact record (name,
 * level, start, end) and, when `objects` is (secret_cache, max_string, special_keys, text_check, key_check),
 * each recorded Span (exactly that class) whose name, metadata and fields need no work, becomes its Event
 * here; events made already (finished_events) pass, counted as spans. Spans that
 * began before the session are counted in `outside` and left out; so does each log message and instant
 * recorded as a Record whose name and metadata need no work and that carries no error (counted in `logs`
 * and `instants`); every other record stays in place, counted in `left`, for the Python code to convert. */
static PyObject *span_events_of(PyObject *self, PyObject *args) {
    PyObject *records, *tid, *thread_name, *code_locations, *objects;
    long long session_start, offset;
    int compact = 0;
    if (!PyArg_ParseTuple(args, "OLLOUO!O|p:span_events", &records, &session_start, &offset, &tid,
                          &thread_name, &PyDict_Type, &code_locations, &objects, &compact))
        return NULL;
    /* records: a list, or a RecordBatch read in place (its compact spans need no object) */
    RecordBatch *batch = Py_TYPE(records) == &RecordBatchType ? (RecordBatch *)records : NULL;
    if (batch == NULL && !PyList_Check(records)) {
        PyErr_SetString(PyExc_TypeError, "span_events: records must be a list or a RecordBatch");
        return NULL;
    }
    if (event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tracebridge._speedups: configure_events() was not called");
        return NULL;
    }
    PyObject *secret_cache = NULL, *special = NULL, *check = NULL, *checks_keys = NULL;
    Py_ssize_t max_string = 0;
    if (objects != Py_None) {
        if (!PyArg_ParseTuple(objects, "O!nO!OO:span_events", &PyDict_Type, &secret_cache, &max_string,
                              &PyFrozenSet_Type, &special, &check, &checks_keys))
            return NULL;
        if (sp.span_type == NULL) /* (the span scope is not configured: objects go to Python) */
            secret_cache = NULL;
    }
    text_check = check; /* (span_events resets them) */
    key_cache = secret_cache;
    key_check = checks_keys;
    if (offset <= -TS_LIMIT || offset >= TS_LIMIT) { /* (never: the trace clock's offset) */
        PyObject *all = batch == NULL ? Py_NewRef(records) : PySequence_List(records);
        return all == NULL ? NULL : Py_BuildValue("(Nnnnn)", all, (Py_ssize_t)0, PyList_GET_SIZE(all), (Py_ssize_t)0,
                                                  (Py_ssize_t)0);
    }
    Py_ssize_t n = batch != NULL ? batch->len : PyList_GET_SIZE(records), outside = 0, left = 0, logs = 0,
               instants = 0;
    /* For a sink that takes compact events, an EventBatch: compact spans in it as C values. */
    PyObject *out = compact ? (PyObject *)eb_new() : PyList_New(0);
    if (out == NULL)
        return NULL;
    PyObject *plain_seen = NULL; /* the last name found plain (held): the same name is not looked at again */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rec, *made = NULL, *level_made = NULL;
        PyObject *name, *level, *start_obj, *end_obj, *md = NULL, *span = NULL;
        long long start, end, queued_level = 0;
        if (batch != NULL && batch->items[i].compact) { /* a compact span, as C values */
            QEntry *e = &batch->items[i];
            rec = NULL, name = e->obj, start = e->start, end = e->end;
            if (start < session_start) {
                outside++;
                continue;
            }
            if (!(start > -TS_LIMIT && start < TS_LIMIT && end > -TS_LIMIT && end < TS_LIMIT))
                goto as_is;
            if (name != plain_seen) {
                if (!plain_name(name))
                    goto as_is;
                Py_XSETREF(plain_seen, Py_NewRef(name));
            }
            level = NULL, queued_level = e->level; /* (an object only if one is made) */
            goto convert;
        }
        rec = batch != NULL ? batch->items[i].obj : PyList_GET_ITEM(records, i);
        if (Py_TYPE(rec) == event_type) { /* a span's event made already (finished_events) */
            if (events_append(out, rec, 0) < 0)
                goto error;
            continue;
        }
        if (secret_cache != NULL && record_type != NULL && Py_TYPE(rec) == record_type) {
            int r = record_event(rec, offset, tid, thread_name, secret_cache, max_string, special, &made);
            if (r < 0)
                goto error;
            if (r == 0)
                goto as_is;
            PyObject *kind = SLOT(rec, record_off[R_KIND]);
            if (PyUnicode_Compare(kind, s_log) == 0)
                logs++;
            else
                instants++;
            r = events_append(out, made, 0);
            Py_DECREF(made);
            if (r < 0)
                goto error;
            continue;
        }
        if (PyTuple_CheckExact(rec) && PyTuple_GET_SIZE(rec) == 4) {
            name = PyTuple_GET_ITEM(rec, 0), level = PyTuple_GET_ITEM(rec, 1);
            start_obj = PyTuple_GET_ITEM(rec, 2), end_obj = PyTuple_GET_ITEM(rec, 3);
        } else if (secret_cache != NULL && Py_TYPE(rec) == sp.span_type) {
            span = rec;
            name = SPAN_BORROW(rec, S_NAME), level = SPAN_BORROW(rec, S_LEVEL);
            start_obj = SPAN_BORROW(rec, S_START), end_obj = SPAN_BORROW(rec, S_END);
            if (name == NULL || level == NULL || start_obj == NULL || end_obj == NULL)
                goto as_is;
        } else
            goto as_is;
        int a = small_int(start_obj, &start);
        if (a < 0)
            goto error;
        if (a > 0 && start < session_start) {
            outside++;
            continue;
        }
        int b = a > 0 ? small_int(end_obj, &end) : 0;
        if (b < 0)
            goto error;
        if (a == 0 || b == 0 || !plain_name(name))
            goto as_is;
    convert:;
        PyObject *trace_id = NULL, *span_id = NULL, *parent_id = NULL, *adjusted = NULL;
        if (span != NULL) {
            PyObject *lazy = SPAN_BORROW(span, S_LAZY), *error = SPAN_BORROW(span, S_ERROR),
                     *overlapping = SPAN_BORROW(span, S_OVERLAPPING), *parent = SPAN_BORROW(span, S_PARENT);
            md = SPAN_BORROW(span, S_METADATA);
            trace_id = SPAN_BORROW(span, S_TRACE_ID), span_id = SPAN_BORROW(span, S_SPAN_ID);
            adjusted = SPAN_BORROW(span, S_ADJUSTED);
            if (lazy != Py_None || error != Py_None || overlapping != Py_False || md == NULL || trace_id == NULL ||
                span_id == NULL || adjusted == NULL || parent == NULL ||
                (parent != Py_None && Py_TYPE(parent) != sp.span_type))
                goto as_is;
            if (md == Py_None || (PyDict_CheckExact(md) && PyDict_GET_SIZE(md) == 0))
                md = NULL;
            else if (!PyDict_CheckExact(md))
                goto as_is;
            else {
                int plain = plain_metadata(md, secret_cache, max_string, special);
                if (plain < 0)
                    goto error;
                if (!plain)
                    goto as_is;
            }
            parent_id = parent == Py_None ? NULL : SPAN_BORROW(parent, S_SPAN_ID);
            if (parent != Py_None && parent_id == NULL)
                goto as_is;
        }
        /* A compact event when the sink takes them and the span carries nothing else: no ids the
         * application asked for (exact 0s), standing for itself alone (the float 1.0). */
        int as_tuple = compact && (span == NULL || (trace_id == sp.zero && span_id == sp.zero && (parent_id == NULL || parent_id == sp.zero) &&
                                                    PyFloat_CheckExact(adjusted) && PyFloat_AS_DOUBLE(adjusted) == 1.0));
        PyObject *meta = as_tuple ? compact_metadata(md, name, code_locations) : event_metadata(md, name, code_locations);
        if (meta == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto as_is;
        }
        if (as_tuple && compact) { /* held as C values, when its level is a small int */
            int fits = level == NULL;
            if (!fits && PyLong_CheckExact(level)) {
                int overflow = 0;
                queued_level = PyLong_AsLongLongAndOverflow(level, &overflow);
                if (queued_level == -1 && PyErr_Occurred()) {
                    Py_DECREF(meta);
                    goto error;
                }
                fits = !overflow;
            }
            if (fits) {
                if (eb_append_compact((EventBatch *)out, name, meta, queued_level, start + offset, end + offset) < 0)
                    goto error;
                continue;
            }
        }
        if (level == NULL && (level = level_made = PyLong_FromLongLong(queued_level)) == NULL) {
            Py_DECREF(meta);
            goto error;
        }
        PyObject *fields[7] = {Py_NewRef(name), PyLong_FromLongLong(start + offset),
                               PyLong_FromLongLong(end + offset), Py_NewRef(level), meta,
                               Py_NewRef(tid), Py_NewRef(thread_name)};
        Py_CLEAR(level_made); /* (fields holds it) */
        if (fields[1] == NULL || fields[2] == NULL) {
            for (int j = 0; j < 7; j++)
                Py_XDECREF(fields[j]);
            goto error;
        }
        if (as_tuple) {
            Py_DECREF(fields[5]);
            Py_DECREF(fields[6]);
            if ((made = PyTuple_New(5)) == NULL) {
                for (int j = 0; j < 5; j++)
                    Py_DECREF(fields[j]);
                goto error;
            }
            int at[5] = {0, 2, 3, 1, 4}; /* (name, level, start, end, metadata) from fields' order */
            for (int j = 0; j < 5; j++)
                PyTuple_SET_ITEM(made, at[j], fields[j]);
            span = NULL; /* (nothing more to set) */
        } else if ((made = new_event(fields)) == NULL)
            goto error;
        if (span != NULL) { /* the ids the application asked for, if any; how many events it stands for */
            Py_SETREF(SLOT(made, field_off[F_TRACE_ID]), Py_NewRef(trace_id));
            Py_SETREF(SLOT(made, field_off[F_SPAN_ID]), Py_NewRef(span_id));
            if (parent_id != NULL)
                Py_SETREF(SLOT(made, field_off[F_PARENT_ID]), Py_NewRef(parent_id));
            Py_SETREF(SLOT(made, field_off[F_ADJUSTED]), Py_NewRef(adjusted));
        }
        int r = events_append(out, made, 0);
        Py_DECREF(made);
        if (r < 0)
            goto error;
        continue;
    as_is:
        left++;
        if (rec == NULL) { /* a compact span the Python code converts: its tuple */
            PyObject *t = entry_object(&batch->items[i]);
            int r = t == NULL ? -1 : events_append(out, t, 1);
            Py_XDECREF(t);
            if (r < 0)
                goto error;
        } else if (events_append(out, rec, 1) < 0)
            goto error;
    }
    Py_XDECREF(plain_seen);
    return Py_BuildValue("(Nnnnn)", out, outside, left, logs, instants);
error:
    Py_XDECREF(plain_seen);
    Py_DECREF(out);
    return NULL;
}

static PyObject *span_events(PyObject *self, PyObject *args) {
    PyObject *result = span_events_of(self, args);
    text_check = key_cache = key_check = NULL;
    return result;
}

/* -- OpenTelemetry spans: the copy on_end queues, and its event --------------------------------------- */

/* PerfettoSpanProcessor queues an ended span as an otel.processor._Finished (its Python __init__ and
 * materialize() are the pure path). `finished` makes that copy from a ReadableSpan of the SDK's own
 * classes, reading the fields where the SDK keeps them (no property calls, no copies of the containers
 * but the tuples of events and links); `finished_events` makes the event of the commonest ones (no span
 * events, links, failure or track of their own, attributes the writer's sanitizer leaves as they are)
 * without the SpanRecord in between. configure_finished() hands them the classes they compare with: a span
 * of any other shape goes to the Python code. tests/sinks/test_speedups.py compares both paths. */
enum {
    FN_ANNOUNCED, FN_ATTRIBUTES, FN_END, FN_EVENTS, FN_LEVEL, FN_LINKS, FN_NAME, FN_OVERLAPPING, FN_PARENT_ID,
    FN_RESOURCE, FN_SCOPE, FN_SPAN_ID, FN_KIND, FN_START, FN_STATUS, FN_TRACE_ID, FN_TRACK, FN_COUNT
};
static const char *finished_slot_names[FN_COUNT] = {
    "announced", "attributes", "end_time", "events", "level", "links", "name", "overlapping", "parent_id",
    "resource", "scope", "span_id", "span_kind", "start_time", "status", "trace_id", "track"};
/* The attributes of a ReadableSpan `finished` reads (the SDK's properties return them as they are). */
enum { RS_NAME, RS_CONTEXT, RS_PARENT, RS_START, RS_END, RS_ATTRIBUTES, RS_EVENTS, RS_LINKS, RS_KIND, RS_STATUS,
       RS_SCOPE, RS_RESOURCE, RS_COUNT };
static const char *readable_names[RS_COUNT] = {"_name",  "_context", "_parent", "_start_time",
                                               "_end_time", "_attributes", "_events", "_links",
                                               "_kind", "_status", "_instrumentation_scope", "_resource"};
static struct {
    PyTypeObject *type, *deferred; /* _Finished, and the base of what the writer materializes */
    Py_ssize_t off[FN_COUNT], scope_name_off;
    /* ReadableSpan, SpanContext, BoundedAttributes, BoundedList, Status, InstrumentationScope */
    PyTypeObject *readable, *context, *attributes, *bounded, *status, *scope;
    PyObject *internal, *unset, *ok, *ok_name, *name_process, *names[RS_COUNT];
    PyObject *s_dict_, *s_dq, *s_status_code, *s_description, *s_otel_kind, *s_otel_status,
        *s_otel_description, *s_otel_scope, *s_name;
} fin;

/* configure_finished(finished_type, deferred_type, readable, context, attributes, bounded_list, status,
 *                    scope, internal, unset, ok, name_process) */
static PyObject *configure_finished(PyObject *self, PyObject *args) {
    PyObject *types[8], *internal, *unset, *ok, *name_process;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!O!O!OOOO:configure_finished", &PyType_Type, &types[0], &PyType_Type,
                          &types[1], &PyType_Type, &types[2], &PyType_Type, &types[3], &PyType_Type, &types[4],
                          &PyType_Type, &types[5], &PyType_Type, &types[6], &PyType_Type, &types[7], &internal,
                          &unset, &ok, &name_process))
        return NULL;
    if (!PyCallable_Check(name_process)) {
        PyErr_SetString(PyExc_TypeError, "configure_finished: name_process must be callable");
        return NULL;
    }
    Py_ssize_t off[FN_COUNT], scope_name_off;
    for (int i = 0; i < FN_COUNT; i++)
        if ((off[i] = slot_offset((PyTypeObject *)types[0], finished_slot_names[i])) < 0)
            return NULL;
    if ((scope_name_off = slot_offset((PyTypeObject *)types[7], "_name")) < 0)
        return NULL;
    PyObject *ok_name = PyObject_GetAttr(ok, fin.s_name);
    if (ok_name == NULL)
        return NULL;
    if (!PyUnicode_CheckExact(ok_name)) {
        Py_DECREF(ok_name);
        PyErr_SetString(PyExc_TypeError, "configure_finished: StatusCode.OK.name is not a str");
        return NULL;
    }
    memcpy(fin.off, off, sizeof(off));
    fin.scope_name_off = scope_name_off;
    PyTypeObject **slots[8] = {&fin.type,       &fin.deferred, &fin.readable, &fin.context,
                               &fin.attributes, &fin.bounded,  &fin.status,   &fin.scope};
    for (int i = 0; i < 8; i++)
        Py_XSETREF(*slots[i], (PyTypeObject *)Py_NewRef(types[i]));
    Py_XSETREF(fin.internal, Py_NewRef(internal));
    Py_XSETREF(fin.unset, Py_NewRef(unset));
    Py_XSETREF(fin.ok, Py_NewRef(ok));
    Py_XSETREF(fin.ok_name, ok_name);
    Py_XSETREF(fin.name_process, Py_NewRef(name_process));
    Py_RETURN_NONE;
}

/* The items of a BoundedList (its deque) or a tuple, as a tuple (a new reference); NULL with no exception
 * set: another container (the Python code copies it). */
static PyObject *items_tuple(PyObject *container) {
    if (PyTuple_CheckExact(container))
        return Py_NewRef(container);
    if (Py_TYPE(container) != fin.bounded)
        return NULL;
    PyObject *dq = PyObject_GetAttr(container, fin.s_dq);
    if (dq == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *out = Py_TYPE(dq) != sp.deque_type ? NULL : PyObject_Size(dq) == 0 ? PyTuple_New(0) : PySequence_Tuple(dq);
    Py_DECREF(dq);
    return out;
}

/* finished(span, level, overlapping) -> _Finished | None: the copy _Finished(span, level, overlapping)
 * makes (no track, not announced, no bridged events), for a ReadableSpan of the SDK's classes; None: the
 * Python code copies this one. */
static PyObject *finished(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "finished(span, level, overlapping)");
        return NULL;
    }
    if (fin.type == NULL || sp.deque_type == NULL || Py_TYPE(args[0]) != fin.readable)
        Py_RETURN_NONE;
    PyObject *v[RS_COUNT] = {NULL}, *f[FN_COUNT] = {NULL}, *out = NULL, *inner = NULL;
    PyObject *fields = PyObject_GenericGetDict(args[0], NULL);
    if (fields == NULL)
        return NULL;
    for (int i = 0; i < RS_COUNT; i++) {
        if ((v[i] = PyDict_GetItemWithError(fields, fin.names[i])) == NULL) {
            Py_DECREF(fields);
            if (PyErr_Occurred())
                goto fail;
            goto python;
        }
        Py_INCREF(v[i]);
    }
    Py_DECREF(fields);
    PyObject *ctx = v[RS_CONTEXT], *parent = v[RS_PARENT];
    if ((ctx != Py_None && (Py_TYPE(ctx) != fin.context || PyTuple_GET_SIZE(ctx) < 2)) ||
        (parent != Py_None && (Py_TYPE(parent) != fin.context || PyTuple_GET_SIZE(parent) < 2)) ||
        Py_TYPE(v[RS_ATTRIBUTES]) != fin.attributes || Py_TYPE(v[RS_STATUS]) != fin.status ||
        (v[RS_SCOPE] != Py_None && Py_TYPE(v[RS_SCOPE]) != fin.scope))
        goto python;
    f[FN_TRACE_ID] = Py_NewRef(ctx == Py_None ? sp.zero : PyTuple_GET_ITEM(ctx, 0));
    f[FN_SPAN_ID] = Py_NewRef(ctx == Py_None ? sp.zero : PyTuple_GET_ITEM(ctx, 1));
    f[FN_PARENT_ID] = Py_NewRef(parent == Py_None ? sp.zero : PyTuple_GET_ITEM(parent, 1));
    if ((inner = PyObject_GetAttr(v[RS_ATTRIBUTES], fin.s_dict_)) == NULL) {
        PyErr_Clear();
        goto python;
    }
    if (inner == Py_None) /* (_Finished then asks the span's public attributes) */
        goto python;
    f[FN_ATTRIBUTES] = inner, inner = NULL;
    if ((f[FN_EVENTS] = items_tuple(v[RS_EVENTS])) == NULL || (f[FN_LINKS] = items_tuple(v[RS_LINKS])) == NULL)
        goto fail_or_python;
    if (v[RS_KIND] == fin.internal)
        f[FN_KIND] = Py_NewRef(Py_None);
    else if ((f[FN_KIND] = PyObject_GetAttr(v[RS_KIND], fin.s_name)) == NULL)
        goto fail;
    PyObject *code = PyObject_GetAttr(v[RS_STATUS], fin.s_status_code);
    PyObject *description = code == NULL ? NULL : PyObject_GetAttr(v[RS_STATUS], fin.s_description);
    if (description == NULL) {
        Py_XDECREF(code);
        PyErr_Clear();
        goto python;
    }
    if ((f[FN_STATUS] = PyTuple_Pack(2, code, description)) == NULL) {
        Py_DECREF(code);
        Py_DECREF(description);
        goto fail;
    }
    Py_DECREF(code);
    Py_DECREF(description);
    if (v[RS_SCOPE] == Py_None)
        f[FN_SCOPE] = Py_NewRef(Py_None);
    else if ((f[FN_SCOPE] = SLOT(v[RS_SCOPE], fin.scope_name_off)) == NULL)
        goto python;
    else
        Py_INCREF(f[FN_SCOPE]);
    f[FN_NAME] = Py_NewRef(v[RS_NAME]);
    f[FN_START] = Py_NewRef(v[RS_START]);
    f[FN_END] = Py_NewRef(v[RS_END]);
    f[FN_RESOURCE] = Py_NewRef(v[RS_RESOURCE]);
    f[FN_LEVEL] = Py_NewRef(args[1]);
    f[FN_OVERLAPPING] = Py_NewRef(args[2]);
    f[FN_TRACK] = Py_NewRef(Py_None);
    f[FN_ANNOUNCED] = Py_NewRef(Py_False);
    if ((out = fin.type->tp_alloc(fin.type, 0)) == NULL)
        goto fail;
    for (int i = 0; i < FN_COUNT; i++)
        SLOT(out, fin.off[i]) = f[i], f[i] = NULL;
    goto done;
fail_or_python:
    if (!PyErr_Occurred())
        goto python;
fail:
    out = NULL;
    goto done;
python:
    out = Py_NewRef(Py_None);
done:
    for (int i = 0; i < RS_COUNT; i++)
        Py_XDECREF(v[i]);
    for (int i = 0; i < FN_COUNT; i++)
        Py_XDECREF(f[i]);
    Py_XDECREF(inner);
    return out;
}

/* The metadata _Finished._fill gives the span of `v` (a _Finished's slots), without "flows": 1 made (*md
 * set), 0 the Python code converts it, -1 error. */
static int finished_metadata(PyObject **v, PyObject *secret_cache, Py_ssize_t max_string, PyObject *special,
                             PyObject **md) {
    PyObject *attrs = v[FN_ATTRIBUTES], *status = v[FN_STATUS];
    if ((attrs != Py_None && !PyDict_CheckExact(attrs)) || !PyTuple_CheckExact(status) || PyTuple_GET_SIZE(status) != 2)
        return 0;
    PyObject *code = PyTuple_GET_ITEM(status, 0), *description = PyTuple_GET_ITEM(status, 1);
    if (code != fin.unset && code != fin.ok) /* (a failure: the Python code makes its error) */
        return 0;
    PyObject *out = attrs == Py_None ? PyDict_New() : PyDict_Copy(attrs);
    if (out == NULL)
        return -1;
    int scope = PyObject_IsTrue(v[FN_SCOPE]), described = code == fin.ok ? PyObject_IsTrue(description) : 0;
    if (scope < 0 || described < 0 ||
        (v[FN_KIND] != Py_None && PyDict_SetItem(out, fin.s_otel_kind, v[FN_KIND]) < 0) ||
        (code == fin.ok && PyDict_SetItem(out, fin.s_otel_status, fin.ok_name) < 0) ||
        (described && PyDict_SetItem(out, fin.s_otel_description, description) < 0) ||
        (scope && PyDict_SetItem(out, fin.s_otel_scope, v[FN_SCOPE]) < 0)) {
        Py_DECREF(out);
        return -1;
    }
    int plain = plain_metadata(out, secret_cache, max_string, special);
    if (plain <= 0) {
        Py_DECREF(out);
        return plain;
    }
    *md = out;
    return 1;
}

/* The event of a _Finished (its slots in `v`) that needs no Python code: 1 made (*made set), 0 the Python
 * code converts it, -1 error; 2: it began before the session (left out, counted by the caller). `named`: the
 * resource the process was last named after in this batch (borrowed). */
static int finished_event(PyObject **v, PyObject *session, PyObject **named, long long session_start, long long wall, long long offset, PyObject *tid,
                          PyObject *thread_name, PyObject *code_locations, PyObject *secret_cache,
                          Py_ssize_t max_string, PyObject *special, PyObject **made) {
    if (v[FN_ANNOUNCED] != Py_False || v[FN_TRACK] != Py_None || !PyTuple_CheckExact(v[FN_EVENTS]) ||
        PyTuple_GET_SIZE(v[FN_EVENTS]) != 0 || !PyTuple_CheckExact(v[FN_LINKS]) ||
        PyTuple_GET_SIZE(v[FN_LINKS]) != 0 || !PyLong_CheckExact(v[FN_SPAN_ID]) ||
        !PyLong_CheckExact(v[FN_TRACE_ID]) || !PyLong_CheckExact(v[FN_PARENT_ID]) || !plain_name(v[FN_NAME]))
        return 0;
    unsigned long long span_id = PyLong_AsUnsignedLongLong(v[FN_SPAN_ID]);
    if (span_id == (unsigned long long)-1 && PyErr_Occurred()) { /* (negative, or 64 bits and more) */
        PyErr_Clear();
        return 0;
    }
    int traced = PyObject_IsTrue(v[FN_TRACE_ID]), parented = PyObject_IsTrue(v[FN_PARENT_ID]);
    if (span_id == 0 || traced <= 0 || parented < 0)
        return traced < 0 || parented < 0 ? -1 : 0;
    long long start, end = 0;
    int a = small_int(v[FN_START], &start);
    if (a <= 0)
        return a;
    if (v[FN_END] != Py_None) {
        int b = small_int(v[FN_END], &end);
        if (b <= 0)
            return b;
    }
    /* (ns since the epoch -> the trace clock: start - wall; the span clock is that less `offset`) */
    long long ev_start = start - wall, ev_end = end ? end - wall : ev_start;
    if (ev_start <= -TS_LIMIT || ev_start >= TS_LIMIT || ev_end <= -TS_LIMIT || ev_end >= TS_LIMIT)
        return 0;
    if (ev_end < ev_start)
        ev_end = ev_start;
    PyObject *md = NULL;
    int r = finished_metadata(v, secret_cache, max_string, special, &md);
    if (r <= 0)
        return r;
    if ((r = add_code_location(md, v[FN_NAME], code_locations)) <= 0) {
        Py_DECREF(md);
        return r;
    }
    PyObject *resource = v[FN_RESOURCE];
    if (resource != Py_None && resource != *named) { /* (_name_process: once a batch for each resource) */
        PyObject *done = PyObject_CallFunctionObjArgs(fin.name_process, session, resource, NULL);
        if (done == NULL) { /* (the Python code calls it again, and counts the span lost) */
            PyErr_Clear();
            Py_DECREF(md);
            return 0;
        }
        Py_DECREF(done);
        *named = resource;
    }
    if (ev_start - offset < session_start) {
        Py_DECREF(md);
        return 2;
    }
    PyObject *flows = PyTuple_Pack(1, v[FN_SPAN_ID]);
    if (flows == NULL) {
        Py_DECREF(md);
        return -1;
    }
    PyObject *fields[7] = {Py_NewRef(v[FN_NAME]), PyLong_FromLongLong(ev_start), PyLong_FromLongLong(ev_end),
                           Py_NewRef(v[FN_LEVEL]), md, Py_NewRef(tid), Py_NewRef(thread_name)};
    if (fields[1] == NULL || fields[2] == NULL) {
        for (int j = 0; j < 7; j++)
            Py_XDECREF(fields[j]);
        Py_DECREF(flows);
        return -1;
    }
    PyObject *ev = new_event(fields);
    if (ev == NULL) {
        Py_DECREF(flows);
        return -1;
    }
    Py_SETREF(SLOT(ev, field_off[F_FLOWS]), flows);
    Py_SETREF(SLOT(ev, field_off[F_TRACE_ID]), Py_NewRef(v[FN_TRACE_ID]));
    Py_SETREF(SLOT(ev, field_off[F_SPAN_ID]), Py_NewRef(v[FN_SPAN_ID]));
    if (parented)
        Py_SETREF(SLOT(ev, field_off[F_PARENT_ID]), Py_NewRef(v[FN_PARENT_ID]));
    Py_SETREF(SLOT(ev, field_off[F_OVERLAPPING]), Py_NewRef(v[FN_OVERLAPPING]));
    *made = ev;
    return 1;
}

/* finished_events(records, session, start_ns, wall_offset, offset, tid, thread_name, code_locations, objects,
 *                 materialize) -> (records, outside) | None
 *
 * What Session._materialize makes of a batch, and _events then of the commonest ended OpenTelemetry spans
 * in it (see finished_event): each of those becomes its Event (span_events passes events through,
 * counted as spans), or is left out when it began before the session (counted in `outside`); every other
 * Deferred record becomes what materialize(record) gives (a list), in its place, so that the process is
 * named after the resources in the order of the records. `objects` is (secret_cache, max_string,
 * special_keys, text_check, key_check), as span_events takes it. None: not configured (the Python code
 * materializes the batch). */
static PyObject *finished_events_of(PyObject *self, PyObject *args) {
    PyObject *records, *session, *tid, *thread_name, *code_locations, *secret_cache, *special, *check, *checks_keys,
        *materialize;
    long long session_start, wall, offset;
    Py_ssize_t max_string;
    if (!PyArg_ParseTuple(args, "O!OLLLOUO!(O!nO!OO)O:finished_events", &PyList_Type, &records, &session,
                          &session_start, &wall, &offset, &tid, &thread_name, &PyDict_Type, &code_locations,
                          &PyDict_Type, &secret_cache, &max_string, &PyFrozenSet_Type, &special, &check,
                          &checks_keys, &materialize))
        return NULL;
    if (fin.type == NULL || event_type == NULL)
        Py_RETURN_NONE;
    /* (offsets that never are: every span to the Python code) */
    int convert = wall > -TS_LIMIT && wall < TS_LIMIT && offset > -TS_LIMIT && offset < TS_LIMIT;
    text_check = check; /* (finished_events resets them) */
    key_cache = secret_cache;
    key_check = checks_keys;
    Py_ssize_t n = PyList_GET_SIZE(records), outside = 0;
    PyObject *out = PyList_New(0), *named = NULL, *keep = PyList_GetSlice(records, 0, n);
    if (out == NULL || keep == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rec = PyList_GET_ITEM(keep, i), *made = NULL;
        if (convert && Py_TYPE(rec) == fin.type) {
            PyObject *v[FN_COUNT];
            int r = 0, whole = 1; /* (an unset slot: the Python code says so) */
            for (int j = 0; j < FN_COUNT && whole; j++)
                whole = (v[j] = SLOT(rec, fin.off[j])) != NULL;
            if (whole)
                r = finished_event(v, session, &named, session_start, wall, offset, tid, thread_name,
                                   code_locations, secret_cache, max_string, special, &made);
            if (r < 0)
                goto error;
            if (r == 2) {
                outside++;
                continue;
            }
            if (r == 1) {
                r = PyList_Append(out, made);
                Py_DECREF(made);
                if (r < 0)
                    goto error;
                continue;
            }
        }
        if (!PyObject_TypeCheck(rec, fin.deferred)) {
            if (PyList_Append(out, rec) < 0)
                goto error;
            continue;
        }
        named = NULL; /* (the Python code may name the process after another resource) */
        PyObject *got = PyObject_CallOneArg(materialize, rec);
        if (got == NULL)
            goto error;
        if (!PyList_CheckExact(got)) {
            Py_DECREF(got);
            PyErr_SetString(PyExc_TypeError, "finished_events: materialize must return a list");
            goto error;
        }
        int r = PyList_SetSlice(out, PyList_GET_SIZE(out), PyList_GET_SIZE(out), got);
        Py_DECREF(got);
        if (r < 0)
            goto error;
    }
    Py_DECREF(keep);
    return Py_BuildValue("(Nn)", out, outside);
error:
    Py_XDECREF(keep);
    Py_XDECREF(out);
    return NULL;
}

static PyObject *finished_events(PyObject *self, PyObject *args) {
    PyObject *result = finished_events_of(self, args);
    text_check = key_cache = key_check = NULL;
    return result;
}

/* join_chunks(packets, limit) -> list of bytes: the packets joined in runs of at most `limit` bytes (a
 * packet larger than that is a run of its own), as PerfettoWriter._compressed makes them. A PacketRun
 * among them counts as the packets it holds, one by one. */
static PyObject *join_chunks(PyObject *self, PyObject *args) {
    PyObject *packets;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "O!n:join_chunks", &PyList_Type, &packets, &limit))
        return NULL;
    typedef struct {
        const char *data;
        Py_ssize_t len;
    } Piece;
    Piece *pieces = NULL;
    PyObject *keep = PyList_GetSlice(packets, 0, PyList_GET_SIZE(packets)), *out = PyList_New(0);
    if (keep == NULL || out == NULL)
        goto error;
    /* Every packet, in order (what `keep` holds cannot change meanwhile: bytes and PacketRuns are
     * immutable, and nothing below calls back into Python but to allocate). */
    Py_ssize_t count = 0, n = PyList_GET_SIZE(keep);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyList_GET_ITEM(keep, i);
        if (Py_TYPE(p) == &PacketRunType)
            count += ((PacketRun *)p)->count;
        else if (PyBytes_Check(p))
            count++;
        else {
            PyErr_SetString(PyExc_TypeError, "join_chunks: packets are bytes");
            goto error;
        }
    }
    pieces = PyMem_New(Piece, (size_t)count + 1);
    if (pieces == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyList_GET_ITEM(keep, i);
        if (Py_TYPE(p) == &PacketRunType) {
            PacketRun *r = (PacketRun *)p;
            for (Py_ssize_t j = 0; j < r->count; j++) {
                Py_ssize_t from = j ? r->ends[j - 1] : 0;
                pieces[count].data = r->data + from, pieces[count++].len = r->ends[j] - from;
            }
        } else
            pieces[count].data = PyBytes_AS_STRING(p), pieces[count++].len = PyBytes_GET_SIZE(p);
    }
    Py_ssize_t first = 0, size = 0;
    for (Py_ssize_t i = 0; i <= count; i++) {
        Py_ssize_t len = i < count ? pieces[i].len : 0;
        if (i == count ? i > first : (size + len > limit && i > first)) {
            PyObject *chunk = PyBytes_FromStringAndSize(NULL, size);
            if (chunk == NULL)
                goto error;
            char *dst = PyBytes_AS_STRING(chunk);
            for (Py_ssize_t j = first; j < i;) { /* (a PacketRun's packets that follow each other: at once) */
                const char *from = pieces[j].data;
                Py_ssize_t len = pieces[j++].len;
                while (j < i && pieces[j].data == from + len)
                    len += pieces[j++].len;
                memcpy(dst, from, (size_t)len);
                dst += len;
            }
            int r = PyList_Append(out, chunk);
            Py_DECREF(chunk);
            if (r < 0)
                goto error;
            first = i, size = 0;
        }
        size += len;
    }
    PyMem_Free(pieces);
    Py_DECREF(keep);
    return out;
error:
    PyMem_Free(pieces);
    Py_XDECREF(keep);
    Py_XDECREF(out);
    return NULL;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *given;
    if (!PyArg_ParseTuple(args, "O!:configure", &PyTuple_Type, &given))
        return NULL;
    if (PyTuple_GET_SIZE(given) != TAG_COUNT) {
        PyErr_Format(PyExc_ValueError, "configure: expected %d tags", TAG_COUNT);
        return NULL;
    }
    for (int i = 0; i < TAG_COUNT; i++) {
        PyObject *t = PyTuple_GET_ITEM(given, i);
        if (!PyBytes_CheckExact(t) || PyBytes_GET_SIZE(t) > 4) {
            PyErr_SetString(PyExc_TypeError, "configure: tags are short bytes");
            return NULL;
        }
    }
    for (int i = 0; i < TAG_COUNT; i++)
        Py_XSETREF(tags[i], Py_NewRef(PyTuple_GET_ITEM(given, i)));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Set the wire tags the encoder writes (from the schema)."},
    {"encode_events", encode_events, METH_VARARGS,
     "encode_events(seq, events, marker=None): the framed packets of a batch of a thread's events, after "
     "marker if given, as a list of one PacketRun (None: the Python code encodes this batch)."},
    {"configure_events", configure_events, METH_VARARGS,
     "configure_events(template, fields): the event type span_events makes, and its defaults."},
    {"configure_spans", configure_spans, METH_VARARGS,
     "configure_spans(span_type, thread_state_type, rt, current, thread_local, thread_state, clock, "
     "is_failure, error_info, needs_snapshot): what SpanScope reads."},
    {"push", push_record, METH_O, "push(record): queue a record on the calling thread's queue."},
    {"set_clock", set_clock, METH_O, "set_clock(clock): the clock spans read (spans.set_clock)."},
    {"make_span", make_span, METH_VARARGS, "make_span(py_span, off_type, doc): the compiled span()."},
    {"make_active", make_active, METH_O, "make_active(doc): the compiled active() (after make_span())."},
    {"configure_sampling", configure_sampling, METH_VARARGS,
     "configure_sampling(dropped_type, sampled_span, getrandbits, mask): what span() reads when sampling."},
    {"configure_records", configure_records, METH_VARARGS,
     "configure_records(Record, logging.LogRecord): where the slots of the records span_events converts "
     "and log_record makes sit."},
    {"log_record", (PyCFunction)(void (*)(void))log_record, METH_FASTCALL,
     "log_record(record, frames, levels, context, clock, plain_fields): the Record of a plain log record "
     "(None: record_from_log makes it)."},
    {"join_chunks", join_chunks, METH_VARARGS,
     "join_chunks(packets, limit): the packets joined in runs of at most limit bytes."},
    {"configure_finished", configure_finished, METH_VARARGS,
     "configure_finished(finished_type, deferred_type, readable, context, attributes, bounded_list, status, "
     "scope, internal, unset, ok, name_process): the OpenTelemetry classes finished and finished_events read."},
    {"finished", (PyCFunction)(void (*)(void))finished, METH_FASTCALL,
     "finished(span, level, overlapping): the _Finished copy of an ended span (None: the Python code makes it)."},
    {"finished_events", finished_events, METH_VARARGS,
     "finished_events(records, session, start_ns, wall_offset, offset, tid, thread_name, code_locations, "
     "objects, materialize): a batch materialized, the commonest ended OpenTelemetry spans as their events."},
    {"span_events", span_events, METH_VARARGS,
     "span_events(records, start_ns, offset, tid, thread_name, code_locations, objects): the events of the "
     "commonest span records (others left in place)."},
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
    for (int j = 0; j < F_COUNT; j++)
        INTERN(field_attrs[j], field_names[j]);
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
    INTERN(s_activity, "activity");
    INTERN(s_counter, "counter");
    INTERN(s_restart, "restart");
    INTERN(s_names, "names");
    INTERN(s_bodies, "bodies");
    INTERN(s_log, "log");
    INTERN(s_file, "file");
    INTERN(s_function, "function");
    INTERN(s_line, "line");
    INTERN(s_otel_trace, "opentelemetry.trace");
    INTERN(s_msg, "msg");
    INTERN(s_args, "args");
    INTERN(s_exc_info, "exc_info");
    INTERN(s_logger, "logger");
    INTERN(s_message_template, "message_template");
    INTERN(s_message, "message");
    INTERN(s_asctime, "asctime");
    INTERN(s_trace_id, "trace_id");
    INTERN(s_funcName, "funcName");
    INTERN(s_pathname, "pathname");
    INTERN(s_lineno, "lineno");
    INTERN(s_levelno, "levelno");
    INTERN(s_dict, "__dict__");
    INTERN(s_name, "name");
    INTERN(s_getMessage, "getMessage");
    for (int i = 0; i < RS_COUNT; i++)
        INTERN(fin.names[i], readable_names[i]);
    INTERN(fin.s_dict_, "_dict");
    INTERN(fin.s_dq, "_dq");
    INTERN(fin.s_status_code, "_status_code");
    INTERN(fin.s_description, "_description");
    INTERN(fin.s_otel_kind, "otel.kind");
    INTERN(fin.s_otel_status, "otel.status");
    INTERN(fin.s_otel_description, "otel.status_description");
    INTERN(fin.s_otel_scope, "otel.scope");
    INTERN(fin.s_name, "name");
    INTERN(sp.s_state_key, "tracebridge._speedups.thread_state");
    INTERN(sp.s_state, "state");
    INTERN(sp.s_place, "_place");
    INTERN(sp.s_left, "_left_out_of_order");
    INTERN(sp.s_resolve, "_resolve");
    INTERN(sp.s_snapshot, "_snapshot");
    INTERN(sp.s_crowded, "crowded");
    INTERN(sp.s_crowding, "crowding");
    INTERN(sp.s_track, "track");
    INTERN(sp.s_ended_failing, "_ended_failing");
    if ((sp.zero = PyLong_FromLong(0)) == NULL || (mk.one = PyLong_FromLong(1)) == NULL ||
        (mk.one_float = PyFloat_FromDouble(1.0)) == NULL)
        return NULL;
    INTERN(mk.s_level, "level");
    INTERN(smp.s_root_threshold, "root_threshold");
    INTERN(smp.s_critical_level, "critical_level");
    INTERN(smp.s_root_drops, "root_drops");
    INTERN(smp.s_short_cut_level, "short_cut_level");
    INTERN(smp.s_short_cut_drops, "short_cut_drops");
    INTERN(smp.s_sampled, "sampled");
    INTERN(s_enter, "__enter__");
    INTERN(s_exit, "__exit__");
    INTERN(s_qualname, "__qualname__");
    if (PyType_Ready(&SpanScope) < 0 || PyType_Ready(&TracedType) < 0 || PyType_Ready(&DroppedMethodType) < 0 ||
        PyType_Ready(&RecordQueueType) < 0 || PyType_Ready(&RecordBatchType) < 0 ||
        PyType_Ready(&EventBatchType) < 0 || PyType_Ready(&PacketRunType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObject(m, "SpanScope", Py_NewRef((PyObject *)&SpanScope)) < 0) {
        Py_DECREF((PyObject *)&SpanScope);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObject(m, "Traced", Py_NewRef((PyObject *)&TracedType)) < 0) {
        Py_DECREF((PyObject *)&TracedType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObject(m, "RecordQueue", Py_NewRef((PyObject *)&RecordQueueType)) < 0 ||
        PyModule_AddObject(m, "RecordBatch", Py_NewRef((PyObject *)&RecordBatchType)) < 0 ||
        PyModule_AddObject(m, "EventBatch", Py_NewRef((PyObject *)&EventBatchType)) < 0 ||
        PyModule_AddObject(m, "PacketRun", Py_NewRef((PyObject *)&PacketRunType)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    /* Methods of SpanScope's subclass spans.DroppedSpan (descriptors: they bind as methods do). */
    const char *dropped_names[2] = {"dropped_enter", "dropped_exit"};
    for (int i = 0; i < 2; i++) {
        DroppedMethod *d = PyObject_GC_New(DroppedMethod, &DroppedMethodType);
        if (d != NULL) {
            d->vectorcall = dropped_method_call;
            d->span = NULL;
            d->exit = i;
            PyObject_GC_Track(d);
        }
        if (d == NULL || PyModule_AddObject(m, dropped_names[i], (PyObject *)d) < 0) {
            Py_XDECREF(d);
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
