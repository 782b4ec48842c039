/* Bytes on the wire, the common case in C: plain heads read whole (the fast lane of the HTTP/1.1
 * readers), and heads written in one piece.
 *
 * scan_request() and scan_response() look at a buffer that starts at a message boundary. When it
 * holds a complete head that is plainly valid and simple (see each function), they return its
 * parts in one tuple; in every other case they return None and the caller hands the bytes to
 * llhttp, the reference reader, which frames, validates and rejects exactly as it always did.
 *
 * So this file never decides that a message is invalid: it only recognises a conservative subset
 * of valid ones. Every byte class here is a subset of what RFC 9112 and llhttp accept (no
 * obs-text, no obs-fold, no bare LF, no NUL or CR in a field, token characters in names, a
 * request-target of the unreserved, sub-delims and path characters only). Anything outside it,
 * however legal, takes the reference path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Byte classes: bit 1 = tchar (RFC 9110 5.6.2), bit 2 = field-vchar without obs-text, plus SP and
 * HTAB; bit 4 = request-target character (RFC 3986 pchar, "/" and "?", no "#"). */
#define TCHAR 1
#define VALUE 2
#define TARGET 4
static unsigned char classes[256];

static void init_classes(void) {
    const char *tchars = "!#$%&'*+-.^_`|~";
    const char *target = "-._~!$&'()*+,;=:@/?%";
    for (int c = 0x21; c <= 0x7e; c++) classes[c] |= VALUE;
    classes[' '] |= VALUE;
    classes['\t'] |= VALUE;
    for (int c = '0'; c <= '9'; c++) classes[c] |= TCHAR | TARGET;
    for (int c = 'a'; c <= 'z'; c++) classes[c] |= TCHAR | TARGET;
    for (int c = 'A'; c <= 'Z'; c++) classes[c] |= TCHAR | TARGET;
    for (const char *p = tchars; *p; p++) classes[(unsigned char)*p] |= TCHAR;
    for (const char *p = target; *p; p++) classes[(unsigned char)*p] |= TARGET;
}

/* The methods the fast lane takes, as shared bytes objects (no allocation per request). */
static const char *method_names[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
#define METHOD_COUNT (sizeof(method_names) / sizeof(method_names[0]))
static PyObject *methods[METHOD_COUNT];
static PyObject *empty_bytes;

/* Lower-case comparison of a field name with a lower-case literal. */
static int name_is(const char *name, Py_ssize_t len, const char *lower, Py_ssize_t lower_len) {
    if (len != lower_len) return 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        if ((name[i] | 0x20) != lower[i]) return 0;
    }
    return 1;
}

#define NAME_IS(name, len, lit) name_is((name), (len), (lit), (Py_ssize_t)sizeof(lit) - 1)

/* One header field line: its name and value bounds, and where the next line starts. */
typedef struct {
    const char *name;
    Py_ssize_t name_len;
    const char *value;
    Py_ssize_t value_len;
    const char *next;
    uint32_t hash; /* FNV-1a of the line without its CRLF, for the cache of lines below */
} field_t;

#define FNV_OFFSET 2166136261u
#define FNV(hash, c) (((hash) ^ (unsigned char)(c)) * 16777619u)

/* Field lines up to this long are kept in the cache of lines below (and hashed for it). */
#define KEPT_LINE_MAX 96

/* The end of the run of plain value bytes (0x20-0x7e) from p, at most to end: 16 bytes at a time
 * with SSE2 (every x86-64), else 8 at a time. It may stop early; the caller's exact byte loop goes
 * on from there. */
#ifdef __SSE2__
#include <emmintrin.h>
static const char *plain_run(const char *p, const char *end) {
    const __m128i low = _mm_set1_epi8(0x1f), high = _mm_set1_epi8(0x7f);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        __m128i ok = _mm_and_si128(_mm_cmpgt_epi8(v, low), _mm_cmplt_epi8(v, high)); /* signed: 0x80+ fail */
        if (_mm_movemask_epi8(ok) != 0xffff) break;
        p += 16;
    }
    return p;
}
#else
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static const char *plain_run(const char *p, const char *end) {
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        if (((x - ONES * 0x20) & ~x & HIGHS) | (((x + ONES) | x) & HIGHS)) break; /* below 0x20 or above 0x7e */
        p += 8;
    }
    return p;
}
#endif

/* Reads the field line at [p, end) into f. Returns 0 when it is not plainly valid or not complete.
 * A line too long to be kept (a token, a cookie) is checked in bulk and not hashed. */
static int read_field(const char *p, const char *end, field_t *f) {
    const char *start = p;
    const char *cr = memchr(p, '\r', (size_t)(end - p));
    if (cr == NULL || cr + 1 >= end || cr[1] != '\n') return 0;
    /* Every loop below stops at the CR at the latest: it is in no class. */
    uint32_t hash = FNV_OFFSET;
    int kept = cr - start <= KEPT_LINE_MAX;
    if (kept) {
        while (classes[(unsigned char)*p] & TCHAR) hash = FNV(hash, *p++);
    } else {
        while (classes[(unsigned char)*p] & TCHAR) p++;
    }
    if (p == start || *p != ':') return 0;
    f->name = start;
    f->name_len = p - start;
    hash = FNV(hash, *p++);
    while (*p == ' ' || *p == '\t') hash = FNV(hash, *p++);
    const char *value = p;
    if (kept) {
        while (classes[(unsigned char)*p] & VALUE) hash = FNV(hash, *p++);
    } else {
        p = plain_run(p, cr);
        while (classes[(unsigned char)*p] & VALUE) p++;
    }
    if (p != cr) return 0;                                      /* a byte no plain value has */
    if (p > value && (p[-1] == ' ' || p[-1] == '\t')) return 0; /* llhttp keeps trailing OWS */
    f->value = value;
    f->value_len = p - value;
    f->next = p + 2;
    f->hash = hash;
    return 1;
}

/* Recently seen field lines, each with its (name, value) pair: a pod sees the same few lines on
 * every request (Host, Accept, Content-Type, Server...), so the pair is shared instead of made
 * anew, and the name keeps its cached hash for the readers' dict look-ups. Direct-mapped and
 * bounded: a line that hashes to a taken slot replaces it; long lines (tokens, cookies) are not
 * kept. Only ever touched with the GIL held. */
#define LINE_SLOTS 512
typedef struct {
    Py_ssize_t len; /* 0: empty slot */
    char line[KEPT_LINE_MAX];
    PyObject *pair;
} line_slot;
static line_slot *lines;

static PyObject *new_pair(const field_t *f) {
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) return NULL;
    PyObject *name = PyBytes_FromStringAndSize(f->name, f->name_len);
    PyObject *value = f->value_len ? PyBytes_FromStringAndSize(f->value, f->value_len) : (Py_INCREF(empty_bytes), empty_bytes);
    if (name == NULL || value == NULL) {
        Py_XDECREF(name);
        Py_XDECREF(value);
        Py_DECREF(pair);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, name);
    PyTuple_SET_ITEM(pair, 1, value);
    return pair;
}

/* The (name, value) pair of the field line [f->name, f->next - 2): a new reference. */
static PyObject *field_pair(const field_t *f) {
    Py_ssize_t len = f->next - 2 - f->name;
    if (len > KEPT_LINE_MAX) return new_pair(f);
    line_slot *slot = &lines[f->hash % LINE_SLOTS];
    if (slot->len == len && memcmp(slot->line, f->name, (size_t)len) == 0) {
        Py_INCREF(slot->pair);
        return slot->pair;
    }
    PyObject *pair = new_pair(f);
    if (pair == NULL) return NULL;
    PyObject *name = PyTuple_GET_ITEM(pair, 0);
    (void)PyObject_Hash(name); /* cached in the name from now on */
    Py_XDECREF(slot->pair);
    Py_INCREF(pair);
    slot->pair = pair;
    slot->len = len;
    memcpy(slot->line, f->name, (size_t)len);
    return pair;
}

/* The end of the head (just past CRLF CRLF) within [p, limit), or NULL. A head has a CR per
 * line, so this is a few memchr() calls (glibc's memmem costs more to set up than that). */
static const char *head_end(const char *p, const char *limit) {
    while (limit - p >= 4) {
        const char *cr = memchr(p, '\r', (size_t)(limit - p - 3));
        if (cr == NULL) return NULL;
        if (cr[1] == '\n' && cr[2] == '\r' && cr[3] == '\n') return cr + 4;
        p = cr + 1;
    }
    return NULL;
}

/* The complete head at data[start:], within max_head bytes: its first byte and its end (just past
 * the blank line). 0 when there is none. */
static int locate_head(PyObject *data, Py_ssize_t start, Py_ssize_t max_head, const char **head, const char **end) {
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (start < 0 || start >= size || max_head <= 0) return 0;
    const char *p = PyBytes_AS_STRING(data) + start;
    *head = p;
    *end = head_end(p, p + (size - start > max_head ? max_head : size - start));
    return *end != NULL;
}

/* Reads the field lines from p to the head's end into a new list, or returns NULL with no error
 * set when a line is not plainly valid, when there are more than max_fields, when the fields
 * measure more than budget (each counts name + value + 4, as the readers count a head's size),
 * or when a field makes the message one the lane leaves to the reference (see the callers). */
typedef int (*decline_fn)(const char *, Py_ssize_t, const char *, Py_ssize_t, void *);

static PyObject *read_fields(const char *p, const char *end, Py_ssize_t max_fields, Py_ssize_t budget,
                             decline_fn declines, void *state) {
    PyObject *fields = PyList_New(0);
    if (fields == NULL) return NULL;
    const char *fields_end = end - 2; /* the blank line */
    while (p < fields_end) {
        field_t f;
        if (!read_field(p, fields_end + 2, &f) || f.next > fields_end || PyList_GET_SIZE(fields) >= max_fields ||
            (budget -= f.name_len + f.value_len + 4) < 0 || declines(f.name, f.name_len, f.value, f.value_len, state)) {
            Py_DECREF(fields);
            return NULL;
        }
        PyObject *pair = field_pair(&f);
        if (pair == NULL || PyList_Append(fields, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(fields);
            return NULL;
        }
        Py_DECREF(pair);
        p = f.next;
    }
    return fields;
}

/* What a head's fields say about its framing, gathered while they are read. */
typedef struct {
    long long content_length; /* -1: absent */
    int request;              /* an Upgrade field sends a request to the reference (a response's
                                 means nothing without a 101, which the lane never takes) */
} framing;

/* Whether a field sends the message to the reference path: it frames a body in a way the lane does
 * not read (Transfer-Encoding, a second or unusual Content-Length), or changes what the connection
 * is (Upgrade, a Connection other than keep-alive, Proxy-Connection, which llhttp reads as
 * Connection). A Content-Length the lane reads is kept in the framing. */
static int field_declines(const char *name, Py_ssize_t len, const char *value, Py_ssize_t vlen, void *state) {
    framing *fr = (framing *)state;
    switch (len) {
    case 7:
        return fr->request && NAME_IS(name, len, "upgrade");
    case 10:
        return NAME_IS(name, len, "connection") && !NAME_IS(value, vlen, "keep-alive");
    case 14:
        if (!NAME_IS(name, len, "content-length")) return 0;
        if (fr->content_length >= 0 || vlen == 0 || vlen > 15) return 1; /* a second one: the reference decides */
        long long n = 0;
        for (Py_ssize_t i = 0; i < vlen; i++) {
            if (value[i] < '0' || value[i] > '9') return 1;
            n = n * 10 + (value[i] - '0');
        }
        fr->content_length = n;
        return 0;
    case 16:
        return NAME_IS(name, len, "proxy-connection");
    case 17:
        return NAME_IS(name, len, "transfer-encoding");
    default:
        return 0;
    }
}

static PyObject *declined(PyObject *fields) {
    if (fields == NULL && PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* scan_request(data, start, max_head, max_fields)
 *     -> (end, method, target, path, query, content_length, fields) | None
 *
 * Taken: an HTTP/1.1 request with one of the methods above, an origin-form target, or an
 * absolute-form one starting "http://" or "https://" in lower case (a forward proxy's request: the
 * reader splits its authority off as the reference path does), with no "#" and no dot-segment, at most one Content-Length (-1 when there is none; the caller counts the body)
 * and no Transfer-Encoding, no Upgrade, no Connection other than keep-alive and no
 * Proxy-Connection, no value ending in whitespace, at most max_fields fields, and a head within
 * max_head both in bytes and as the reader measures it (the target plus name + value + 4 per
 * field). */
static PyObject *scan_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan_request(data: bytes, start: int, max_head: int, max_fields: int)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t max_head = PyLong_AsSsize_t(args[2]);
    if (max_head == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t max_fields = PyLong_AsSsize_t(args[3]);
    if (max_fields == -1 && PyErr_Occurred()) return NULL;
    const char *data = PyBytes_AS_STRING(args[0]);
    const char *p, *end;
    if (!locate_head(args[0], start, max_head, &p, &end)) Py_RETURN_NONE;

    PyObject *method = NULL;
    for (size_t i = 0; i < METHOD_COUNT; i++) {
        size_t len = strlen(method_names[i]);
        if ((size_t)(end - p) > len && memcmp(p, method_names[i], len) == 0 && p[len] == ' ') {
            method = methods[i];
            p += len + 1;
            break;
        }
    }
    if (method == NULL) Py_RETURN_NONE;
    if (*p != '/') {
        /* absolute-form: the scheme, then the same target characters as origin-form */
        int absolute = (end - p > 8 && memcmp(p, "http://", 7) == 0) ||
                       (end - p > 9 && memcmp(p, "https://", 8) == 0);
        if (!absolute) Py_RETURN_NONE;
    }
    const char *target = p;
    const char *question = NULL;
    while (classes[(unsigned char)*p] & TARGET) {
        if (*p == '?' && question == NULL) question = p;
        if (*p == '/' && question == NULL && p[1] == '.') Py_RETURN_NONE; /* a dot-segment, maybe */
        p++;
    }
    const char *target_end = p;
    if (end - p < 11 || memcmp(p, " HTTP/1.1\r\n", 11) != 0) Py_RETURN_NONE;
    p += 11;

    framing fr = {-1, 1};
    PyObject *fields = read_fields(p, end, max_fields, max_head - (target_end - target), field_declines, &fr);
    if (fields == NULL) return declined(fields);
    PyObject *target_obj = PyBytes_FromStringAndSize(target, target_end - target);
    PyObject *path = NULL, *query = NULL;
    if (target_obj != NULL) {
        if (question == NULL) {
            path = target_obj;
            Py_INCREF(path);
            query = empty_bytes;
            Py_INCREF(query);
        } else {
            path = PyBytes_FromStringAndSize(target, question - target);
            query = PyBytes_FromStringAndSize(question + 1, target_end - question - 1);
        }
    }
    if (target_obj == NULL || path == NULL || query == NULL) {
        Py_XDECREF(target_obj);
        Py_XDECREF(path);
        Py_XDECREF(query);
        Py_DECREF(fields);
        return NULL;
    }
    PyObject *end_obj = PyLong_FromSsize_t(end - data);
    PyObject *length_obj = PyLong_FromLongLong(fr.content_length);
    PyObject *result = PyTuple_New(7);
    if (end_obj == NULL || length_obj == NULL || result == NULL) {
        Py_XDECREF(end_obj);
        Py_XDECREF(length_obj);
        Py_XDECREF(result);
        Py_DECREF(target_obj);
        Py_DECREF(path);
        Py_DECREF(query);
        Py_DECREF(fields);
        return NULL;
    }
    Py_INCREF(method);
    PyTuple_SET_ITEM(result, 0, end_obj);
    PyTuple_SET_ITEM(result, 1, method);
    PyTuple_SET_ITEM(result, 2, target_obj);
    PyTuple_SET_ITEM(result, 3, path);
    PyTuple_SET_ITEM(result, 4, query);
    PyTuple_SET_ITEM(result, 5, length_obj);
    PyTuple_SET_ITEM(result, 6, fields);
    return result;
}

/* scan_response(data, start, max_head) -> (end, status, content_length, fields) | None
 *
 * Taken: an HTTP/1.1 final response (status 200-599) with at most one Content-Length (-1 when
 * there is none), no Transfer-Encoding, no Connection other than keep-alive and no
 * Proxy-Connection, no value ending in whitespace, a head within max_head both in bytes and
 * measured as name + value + 4 per field. Whether the body is framed (a response to HEAD, 204,
 * 304, or close-delimited) is the caller's to decide: it knows the request. */
static PyObject *scan_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan_response(data: bytes, start: int, max_head: int)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t max_head = PyLong_AsSsize_t(args[2]);
    if (max_head == -1 && PyErr_Occurred()) return NULL;
    const char *data = PyBytes_AS_STRING(args[0]);
    const char *p, *end;
    if (!locate_head(args[0], start, max_head, &p, &end)) Py_RETURN_NONE;
    if (end - p < 17 || memcmp(p, "HTTP/1.1 ", 9) != 0) Py_RETURN_NONE;
    p += 9;
    if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' || p[3] != ' ')
        Py_RETURN_NONE;
    long status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    p += 4;
    while (classes[(unsigned char)*p] & VALUE) p++; /* the reason phrase (not kept) */
    if (p[0] != '\r' || p[1] != '\n') Py_RETURN_NONE;
    p += 2;

    framing fr = {-1, 0};
    PyObject *fields = read_fields(p, end, PY_SSIZE_T_MAX, max_head, field_declines, &fr);
    if (fields == NULL) return declined(fields);
    PyObject *end_obj = PyLong_FromSsize_t(end - data);
    PyObject *status_obj = PyLong_FromLong(status);
    PyObject *length_obj = PyLong_FromLongLong(fr.content_length);
    PyObject *result = PyTuple_New(4);
    if (end_obj == NULL || status_obj == NULL || length_obj == NULL || result == NULL) {
        Py_XDECREF(end_obj);
        Py_XDECREF(status_obj);
        Py_XDECREF(length_obj);
        Py_XDECREF(result);
        Py_DECREF(fields);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, end_obj);
    PyTuple_SET_ITEM(result, 1, status_obj);
    PyTuple_SET_ITEM(result, 2, length_obj);
    PyTuple_SET_ITEM(result, 3, fields);
    return result;
}

/* join_head(lead, fields, trail) -> bytes: b"".join(lead) + each field as "name: value\r\n" +
 * b"".join(trail), made in one allocation. lead and trail are lists of bytes, fields a list of
 * (name, value) pairs of bytes. bytes.join would take a buffer of every item (four per field). */
static int add_sizes(PyObject *list, Py_ssize_t *size) {
    if (!PyList_CheckExact(list)) return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_CheckExact(item)) return -1;
        *size += PyBytes_GET_SIZE(item);
    }
    return 0;
}

static char *copy_all(char *out, PyObject *list) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        memcpy(out, PyBytes_AS_STRING(item), (size_t)PyBytes_GET_SIZE(item));
        out += PyBytes_GET_SIZE(item);
    }
    return out;
}

static PyObject *join_head(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    static const char *usage = "join_head(lead: list[bytes], fields: list[tuple[bytes, bytes]], trail: list[bytes])";
    if (nargs != 3) goto bad;
    PyObject *lead = args[0], *fields = args[1], *trail = args[2];
    Py_ssize_t size = 0;
    if (add_sizes(lead, &size) < 0 || add_sizes(trail, &size) < 0 || !PyList_CheckExact(fields)) goto bad;
    Py_ssize_t count = PyList_GET_SIZE(fields);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyList_GET_ITEM(fields, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) goto bad;
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value)) goto bad;
        size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL) return NULL;
    char *out = copy_all(PyBytes_AS_STRING(result), lead);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyList_GET_ITEM(fields, i);
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        memcpy(out, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
        out += PyBytes_GET_SIZE(name);
        *out++ = ':';
        *out++ = ' ';
        memcpy(out, PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
        out += PyBytes_GET_SIZE(value);
        *out++ = '\r';
        *out++ = '\n';
    }
    copy_all(out, trail);
    return result;
bad:
    PyErr_SetString(PyExc_TypeError, usage);
    return NULL;
}

static PyMethodDef wire_methods[] = {
    {"scan_request", (PyCFunction)(void (*)(void))scan_request, METH_FASTCALL,
     "scan_request(data, start, max_head, max_fields) -> (end, method, target, path, query, content_length, fields)"
     " or None"},
    {"scan_response", (PyCFunction)(void (*)(void))scan_response, METH_FASTCALL,
     "scan_response(data, start, max_head) -> (end, status, content_length, fields) or None"},
    {"join_head", (PyCFunction)(void (*)(void))join_head, METH_FASTCALL,
     "join_head(lead, fields, trail) -> bytes: lead, then 'name: value\\r\\n' per field, then trail"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef wire_module = {
    PyModuleDef_HEAD_INIT, "sidegate.http._wire",
    "Bytes on the wire in C: plain heads read whole, heads written in one piece (see _wire.c).", -1, wire_methods,
};

PyMODINIT_FUNC PyInit__wire(void) {
    init_classes();
    lines = PyMem_Calloc(LINE_SLOTS, sizeof(line_slot));
    if (lines == NULL) return PyErr_NoMemory();
    empty_bytes = PyBytes_FromStringAndSize("", 0);
    if (empty_bytes == NULL) return NULL;
    for (size_t i = 0; i < METHOD_COUNT; i++) {
        methods[i] = PyBytes_FromString(method_names[i]);
        if (methods[i] == NULL) return NULL;
    }
    return PyModule_Create(&wire_module);
}
