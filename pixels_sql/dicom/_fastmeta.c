/*
 * The compiled header walker of pixels_sql.dicom.fastmeta: DICOM elements of an explicit VR
 * little endian Part 10 file as events, into a sink.
 *
 * walk() is the one element loop; it holds every value rule once and tells a sink what it found
 * through a table of functions (SinkOps, described above walk()). Two sinks are written here:
 * the Python-object model (read_elements, read_trailing_elements: what fastmeta.ObjectSink
 * builds) and the DICOM JSON text (read_json: what orjson writes of that model, byte for byte).
 * fastmeta.py has the same walk in Python (the conformance and differential tests hold the two
 * to each other). Values whose exact Python conversion is fiddly (AE, UR, AT, and DS/IS values
 * with characters other than digits, signs, points, exponents, spaces and NULs) are handed to
 * fastmeta.py's converters, as is the Specific Character Set. Conditions that make fastmeta.py
 * give up raise the same exception types (EOFError, fastmeta.Unsupported, ValueError,
 * UnicodeDecodeError), and truncation raises the DicomReadError that fastmeta.py builds.
 *
 * Bytes are read with pread() on the file descriptor through a window that slides forward on
 * demand, like fastmeta._Reader; the Python file object's position is not touched. The source
 * may also be a bytes-like object holding the whole file (a zip member read into memory): the
 * window then points into it and nothing is copied.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (1 << 16)
/* read_json's first read: most headers end within it (those of the benchmark sets: 1.5-6.4 KB,
 * Siemens MR with CSA headers ~42 KB), and copying the pixel data along costs time. */
#define FIRST_CHUNK (1 << 13)
#define ITEM_TAG 0xFFFEE000u
#define ITEM_DELIMITER_TAG 0xFFFEE00Du
#define SEQUENCE_DELIMITER_TAG 0xFFFEE0DDu
#define UNDEFINED_LENGTH 0xFFFFFFFFu
#define SPECIFIC_CHARACTER_SET_TAG 0x00080005u

enum { LATIN_1 = 0, UTF_8 = 1 };

enum kind {
    K_NONE = 0,
    K_PLAIN,    /* AS CS DA DT TM UI */
    K_TEXT,     /* SH LO UC */
    K_SINGLE,   /* ST LT UT */
    K_PN,
    K_DS,
    K_IS,
    K_NUMBER,   /* US SS UL SL FL FD SV UV */
    K_DELEGATE, /* AE UR AT: fastmeta.py converts */
    K_BINARY,   /* OB OD OF OL OV OW */
    K_SQ,
    K_UN,
};

typedef struct {
    enum kind kind;
    int is_short; /* 2-byte length (PS3.5 Table 7.1-2) or 4-byte (Table 7.1-1) */
    int number_size;
    char number_type; /* 'u' unsigned, 's' signed, 'f' float */
    PyObject *name;   /* "US" ... */
    char code[3];     /* the same, as C text */
} VRInfo;

static VRInfo VRS[26 * 26];

/* Set by configure(): fastmeta.py's helpers and policy. */
static PyObject *unsupported_error;
static PyObject *charset_function;   /* (raw: bytes, top: bool) -> "latin_1" | "utf_8" */
static PyObject *truncated_function; /* (local, size, group, element, length, value_at) -> exc */
static PyObject *converters;         /* VR name -> (vr, raw, encoding) -> list of values */
static PyObject *excluded_syntaxes;  /* transfer syntaxes fastmeta.py leaves to pydicom */
static long long inline_binary_max = -1;
/* encoding.MAX_SEQUENCE_DEPTH: real files nest a handful of levels, a hostile one thousands.
 * Deeper goes to the general reader (which reports too_deep) instead of growing the C stack. */
static int max_depth = 0;
static long long huge_value = -1;

static PyObject *s_vr, *s_value, *s_inline_binary, *s_bulk_data_uri, *s_alphabetic,
    *s_ideographic, *s_phonetic, *s_backslash, *s_equals, *s_transfer_syntax_key,
    *s_encodings[2];

typedef struct {
    int fd;
    const unsigned char *memory; /* the whole file, when the source is a bytes-like object */
    Py_buffer view;
    long long size;
    long long base;
    unsigned char *buffer;
    Py_ssize_t available;
    Py_ssize_t capacity;
    PyObject *local;
    PyObject *bulk_uri;
    long long first_chunk; /* the size of the first read, when not CHUNK */
} Reader;

static const VRInfo *vr_info(unsigned char first, unsigned char second)
{
    if (first < 'A' || first > 'Z' || second < 'A' || second > 'Z') {
        return NULL;
    }
    const VRInfo *info = &VRS[(first - 'A') * 26 + (second - 'A')];
    return info->kind == K_NONE ? NULL : info;
}

static void raise_unsupported(const char *message)
{
    PyErr_SetString(unsupported_error, message);
}

/* Make `count` bytes at file `position` available; NULL with EOFError past the end. */
static const unsigned char *window(Reader *reader, long long position, long long count)
{
    long long start = position - reader->base;
    if (start >= 0 && start + count <= reader->available) {
        return reader->buffer + start;
    }
    if (position + count > reader->size) {
        PyErr_SetNone(PyExc_EOFError);
        return NULL;
    }
    if (reader->memory != NULL) {
        return reader->memory + position;
    }
    long long chunk = CHUNK;
    if (reader->first_chunk > 0) {
        chunk = reader->first_chunk;
        reader->first_chunk = 0;
    }
    long long wanted = count > chunk ? count : chunk;
    if (wanted > reader->size - position) {
        wanted = reader->size - position;
    }
    if (wanted > reader->capacity) {
        unsigned char *grown = realloc(reader->buffer, (size_t)wanted);
        if (grown == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        reader->buffer = grown;
        reader->capacity = (Py_ssize_t)wanted;
    }
    long long got = 0;
    int read_error = 0;
    Py_BEGIN_ALLOW_THREADS
    while (got < wanted) {
        ssize_t n = pread(reader->fd, reader->buffer + got, (size_t)(wanted - got), position + got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            read_error = errno;
        }
        if (n <= 0) {
            break;
        }
        got += n;
    }
    Py_END_ALLOW_THREADS
    reader->base = position;
    reader->available = (Py_ssize_t)got;
    if (got < count) {
        reader->available = 0; /* the file shrank under us, or an I/O error */
        if (read_error != 0) {
            errno = read_error;
            PyErr_SetFromErrno(PyExc_OSError);
        }
        else {
            PyErr_SetNone(PyExc_EOFError);
        }
        return NULL;
    }
    return reader->buffer;
}

static int raise_truncated(
    Reader *reader, unsigned group, unsigned element, long long length, long long value_at)
{
    PyObject *error = PyObject_CallFunction(
        truncated_function, "OLIILL", reader->local, reader->size, group, element, length,
        value_at);
    if (error != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
    }
    return -1;
}

static PyObject *decode(const unsigned char *raw, Py_ssize_t length, int encoding)
{
    if (encoding == UTF_8) {
        return PyUnicode_DecodeUTF8((const char *)raw, length, "strict");
    }
    return PyUnicode_DecodeLatin1((const char *)raw, length, "strict");
}

static Py_ssize_t rstrip_space_nul(const unsigned char *raw, Py_ssize_t length)
{
    while (length > 0 && (raw[length - 1] == ' ' || raw[length - 1] == '\0')) {
        length--;
    }
    return length;
}

/* fastmeta.finite_or_text: a non-finite float as its JSON spelling ("NaN", "Infinity",
 * "-Infinity"); JSON numbers cannot hold it. Steals `number`. */
static PyObject *finite_or_text(PyObject *number)
{
    if (number == NULL || !PyFloat_Check(number)) {
        return number;
    }
    double d = PyFloat_AS_DOUBLE(number);
    if (isfinite(d)) {
        return number;
    }
    Py_DECREF(number);
    return PyUnicode_FromString(isnan(d) ? "NaN" : (d > 0 ? "Infinity" : "-Infinity"));
}


static PyObject *delegate(PyObject *vr, const unsigned char *raw, Py_ssize_t length, int encoding)
{
    PyObject *converter = PyDict_GetItemWithError(converters, vr);
    if (converter == NULL) {
        if (!PyErr_Occurred()) {
            raise_unsupported("no converter for this VR");
        }
        return NULL;
    }
    PyObject *data = PyBytes_FromStringAndSize((const char *)raw, length);
    if (data == NULL) {
        return NULL;
    }
    PyObject *out = PyObject_CallFunctionObjArgs(converter, vr, data, s_encodings[encoding], NULL);
    Py_DECREF(data);
    return out;
}

/* DS and IS in the common alphabet: digits, signs, points, exponents, spaces, NULs and
 * backslashes. In it, Python's str.strip() only removes spaces, and int()/float() of the ASCII
 * bytes equal int()/float() of the decoded text. */
static int plain_number_text(const unsigned char *raw, Py_ssize_t length)
{
    for (Py_ssize_t i = 0; i < length; i++) {
        unsigned char c = raw[i];
        if (!((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E'
              || c == ' ' || c == '\0' || c == '\\')) {
            return 0;
        }
    }
    return 1;
}

/* fastmeta._integer: int(text), or a float with an integral value ("1.0"). */
static PyObject *integer(PyObject *text)
{
    PyObject *value = PyNumber_Long(text);
    if (value != NULL || !PyErr_ExceptionMatches(PyExc_ValueError)) {
        return value;
    }
    PyObject *type, *error, *traceback;
    PyErr_Fetch(&type, &error, &traceback);
    PyObject *number = PyFloat_FromString(text);
    if (number == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(error);
        Py_XDECREF(traceback);
        return NULL;
    }
    double d = PyFloat_AS_DOUBLE(number);
    Py_DECREF(number);
    if (!isfinite(d) || floor(d) != d) {
        PyErr_Restore(type, error, traceback); /* not integral: the int() error */
        return NULL;
    }
    Py_XDECREF(type);
    Py_XDECREF(error);
    Py_XDECREF(traceback);
    return PyLong_FromDouble(d);
}

/* A DS or IS part that is no number ("1e", "1.5" as IS): its text without the spaces around
 * it, as DCMTK's dcm2json writes it (a JSON string), so one malformed value does not cost the
 * file its header. Only for a ValueError; any other error stays. */
static PyObject *number_or_text(PyObject *number, const unsigned char *raw, Py_ssize_t length)
{
    if (number != NULL || !PyErr_ExceptionMatches(PyExc_ValueError)) {
        return number;
    }
    PyErr_Clear();
    while (length > 0 && raw[0] == ' ') {
        raw++;
        length--;
    }
    while (length > 0 && raw[length - 1] == ' ') {
        length--;
    }
    return PyUnicode_DecodeLatin1((const char *)raw, length, NULL);
}

/* The values of a DS or IS value: strip spaces (and trailing NULs), split at backslashes,
 * float()/int() each part (a non-finite float as its JSON spelling; a part that is no number as
 * its text), None for an empty part among several (PS3.18 F.2.5). Each goes to
 * take(context, value, index); 0 when the whole value is empty (no Value), 1 when values were
 * taken, -1 on error. */
typedef int (*TakeNumber)(void *context, PyObject *number, Py_ssize_t index);

static int each_number(const unsigned char *raw, Py_ssize_t length, int is_integer,
                       TakeNumber take, void *context)
{
    Py_ssize_t start = 0;
    while (start < length && raw[start] == ' ') {
        start++;
    }
    length = rstrip_space_nul(raw, length);
    if (length <= start) {
        return 0;
    }
    Py_ssize_t part_start = start;
    Py_ssize_t index = 0;
    for (Py_ssize_t i = start; i <= length; i++) {
        if (i < length && raw[i] != '\\') {
            continue;
        }
        Py_ssize_t blank = part_start;
        while (blank < i && raw[blank] == ' ') {
            blank++;
        }
        PyObject *number = NULL;
        if (blank == i) {
            number = Py_NewRef(Py_None);
        }
        else {
            PyObject *text = PyBytes_FromStringAndSize((const char *)raw + part_start, i - part_start);
            if (text != NULL) {
                number = is_integer ? integer(text) : finite_or_text(PyFloat_FromString(text));
                Py_DECREF(text);
                number = number_or_text(number, raw + part_start, i - part_start);
            }
        }
        int taken = number == NULL ? -1 : take(context, number, index++);
        Py_XDECREF(number);
        if (taken < 0) {
            return -1;
        }
        part_start = i + 1;
    }
    return 1;
}

static uint64_t little_endian(const unsigned char *raw, int size)
{
    uint64_t value = 0;
    for (int i = size - 1; i >= 0; i--) {
        value = value << 8 | raw[i];
    }
    return value;
}

static const char BASE64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 (RFC 4648, with padding) of `raw` into `out`, which has room for
 * (length + 2) / 3 * 4 characters; returns how many it wrote. */
static Py_ssize_t encode_base64(const unsigned char *raw, Py_ssize_t length, char *out)
{
    char *start = out;
    Py_ssize_t i = 0;
    for (; i + 2 < length; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        *out++ = BASE64[v >> 18 & 63];
        *out++ = BASE64[v >> 12 & 63];
        *out++ = BASE64[v >> 6 & 63];
        *out++ = BASE64[v & 63];
    }
    if (i < length) {
        uint32_t v = (uint32_t)raw[i] << 16 | (i + 1 < length ? (uint32_t)raw[i + 1] << 8 : 0);
        *out++ = BASE64[v >> 18 & 63];
        *out++ = BASE64[v >> 12 & 63];
        *out++ = i + 1 < length ? BASE64[v >> 6 & 63] : '=';
        *out++ = '=';
    }
    return out - start;
}

static PyObject *base64_text(const unsigned char *raw, Py_ssize_t length)
{
    PyObject *text = PyUnicode_New((length + 2) / 3 * 4, 127);
    if (text != NULL) {
        encode_base64(raw, length, (char *)PyUnicode_1BYTE_DATA(text));
    }
    return text;
}

/* The codec of a Specific Character Set value, as fastmeta._charset decides it. */
static int charset(const unsigned char *raw, Py_ssize_t length, int top)
{
    PyObject *data = PyBytes_FromStringAndSize((const char *)raw, length);
    if (data == NULL) {
        return -1;
    }
    PyObject *codec = PyObject_CallFunctionObjArgs(
        charset_function, data, top ? Py_True : Py_False, NULL);
    Py_DECREF(data);
    if (codec == NULL) {
        return -1;
    }
    int result = -1;
    for (int i = 0; i < 2; i++) {
        int equal = PyObject_RichCompareBool(codec, s_encodings[i], Py_EQ);
        if (equal < 0) {
            break;
        }
        if (equal) {
            result = i;
            break;
        }
    }
    Py_DECREF(codec);
    if (result < 0 && !PyErr_Occurred()) {
        raise_unsupported("character set codec");
    }
    return result;
}

static PyObject *key_of(uint32_t tag)
{
    char key[9];
    static const char HEX[] = "0123456789ABCDEF";
    for (int i = 7; i >= 0; i--) {
        key[i] = HEX[tag & 15];
        tag >>= 4;
    }
    return PyUnicode_FromStringAndSize(key, 8);
}



/* The first step of walk(): the element header at `position` (its first 12
 * bytes, or 8 at the end of the file) in *bytes. 1 when there is one to read, 0 where the walk
 * stops (*stop set: a top-level data set ending in fewer than 8 bytes, or the end of group
 * 0002 when `meta`), -1 on error. */
static int element_head(Reader *reader, long long position, long long end, int top, int meta,
                        const unsigned char **bytes, long long *stop)
{
    long long size = reader->size;
    if (position + 8 > size) {
        if (end < 0 && top) {
            *stop = position;
            return 0;
        }
        PyErr_SetNone(PyExc_EOFError);
        return -1;
    }
    const unsigned char *p = window(reader, position, position + 12 <= size ? 12 : 8);
    if (p == NULL) {
        return -1;
    }
    if (meta && (p[0] | p[1] << 8) != 0x0002) {
        *stop = position;
        return 0;
    }
    *bytes = p;
    return 1;
}

/* After element_head(), for an element without a 2-byte length: an item delimiter, or the
 * pixel data at the top level, ends the walk (0, *stop set); an implicit VR or a VR not handled
 * here, or a header cut short, is an error (-1); else 1 and its 4-byte length. */
static int long_head(Reader *reader, const unsigned char *p, long long position, uint32_t tag,
                     const VRInfo *info, int top, uint32_t *length, long long *stop)
{
    if (tag == ITEM_DELIMITER_TAG) {
        *stop = position + 8;
        return 0;
    }
    if (top && (tag == 0x7FE00008u || tag == 0x7FE00009u || tag == 0x7FE00010u)) {
        *stop = position;
        return 0;
    }
    if (info == NULL) {
        raise_unsupported("implicit VR element, or a VR not handled here");
        return -1;
    }
    if (position + 12 > reader->size) {
        PyErr_SetNone(PyExc_EOFError);
        return -1;
    }
    *length = (uint32_t)little_endian(p + 8, 4);
    return 1;
}

/* A sequence item's header at `position` (walk_sequence()): 0 with its tag and
 * length, -1 on error (Unsupported when it is neither an item nor the sequence delimiter). */
static int item_head(Reader *reader, long long position, uint32_t *tag, uint32_t *length)
{
    const unsigned char *p = window(reader, position, 8);
    if (p == NULL) {
        return -1;
    }
    unsigned group = p[0] | p[1] << 8;
    unsigned element = p[2] | p[3] << 8;
    *tag = (uint32_t)group << 16 | element;
    *length = (uint32_t)little_endian(p + 4, 4);
    if (*tag != ITEM_TAG && *tag != SEQUENCE_DELIMITER_TAG) {
        PyErr_Format(unsupported_error, "(%04X,%04X) where a sequence item should be", group,
                     element);
        return -1;
    }
    return 0;
}

/* The reader's source: a file descriptor (int) or a bytes-like object of at least `size` bytes. */
static int open_source(Reader *reader, PyObject *source)
{
    if (PyLong_Check(source)) {
        reader->fd = (int)PyLong_AsLong(source);
        return PyErr_Occurred() ? -1 : 0;
    }
    if (PyObject_GetBuffer(source, &reader->view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (reader->view.len < reader->size) {
        PyBuffer_Release(&reader->view);
        PyErr_SetString(PyExc_ValueError, "the buffer is shorter than the size given");
        return -1;
    }
    reader->memory = (const unsigned char *)reader->view.buf;
    return 0;
}

static void close_source(Reader *reader)
{
    if (reader->memory != NULL) {
        PyBuffer_Release(&reader->view);
        reader->memory = NULL;
    }
    free(reader->buffer);
}


/* --- JSON text primitives --- */

typedef struct {
    char *data;
    Py_ssize_t length;
    Py_ssize_t capacity;
} Text;

static int reserve(Text *text, Py_ssize_t extra)
{
    if (text->length + extra <= text->capacity) {
        return 0;
    }
    Py_ssize_t capacity = text->capacity ? text->capacity : 16384;
    while (capacity < text->length + extra) {
        capacity *= 2;
    }
    char *grown = realloc(text->data, (size_t)capacity);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    text->data = grown;
    text->capacity = capacity;
    return 0;
}

static int put(Text *text, const char *bytes, Py_ssize_t count)
{
    if (reserve(text, count) < 0) {
        return -1;
    }
    memcpy(text->data + text->length, bytes, (size_t)count);
    text->length += count;
    return 0;
}

#define PUT_LITERAL(text, literal) put((text), (literal), (Py_ssize_t)sizeof(literal) - 1)

/* UnicodeDecodeError where the object path's strict decoding raises it. */
static int check_utf8(const unsigned char *raw, Py_ssize_t length)
{
    for (Py_ssize_t i = 0; i < length; i++) {
        if (raw[i] >= 0x80) {
            PyObject *check = PyUnicode_DecodeUTF8((const char *)raw, length, "strict");
            if (check == NULL) {
                return -1;
            }
            Py_DECREF(check);
            return 0;
        }
    }
    return 0;
}

/* A JSON string of UTF-8 bytes (or Latin-1 ones, transcoded), escaped as orjson does: quote,
 * backslash and control characters only; everything else as it is. */
static int put_escaped(Text *text, const unsigned char *raw, Py_ssize_t length, int latin_1)
{
    if (reserve(text, length * 6 + 2) < 0) {
        return -1;
    }
    static const char HEX[] = "0123456789abcdef";
    char *out = text->data + text->length;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < length; i++) {
        unsigned char c = raw[i];
        if (c >= 0x80 && latin_1) {
            *out++ = (char)(0xC0 | c >> 6);
            *out++ = (char)(0x80 | (c & 0x3F));
        }
        else if (c == '"' || c == '\\') {
            *out++ = '\\';
            *out++ = (char)c;
        }
        else if (c >= 0x20) {
            *out++ = (char)c;
        }
        else {
            *out++ = '\\';
            switch (c) {
            case '\b': *out++ = 'b'; break;
            case '\t': *out++ = 't'; break;
            case '\n': *out++ = 'n'; break;
            case '\f': *out++ = 'f'; break;
            case '\r': *out++ = 'r'; break;
            default:
                memcpy(out, "u00", 3);
                out += 3;
                *out++ = HEX[c >> 4];
                *out++ = HEX[c & 15];
            }
        }
    }
    *out++ = '"';
    text->length = out - text->data;
    return 0;
}

/* A value's text in the data set's character set (UTF-8 validated as strict decoding does). */
static int put_string(Text *text, const unsigned char *raw, Py_ssize_t length, int encoding)
{
    if (encoding == UTF_8 && check_utf8(raw, length) < 0) {
        return -1;
    }
    return put_escaped(text, raw, length, encoding == LATIN_1);
}

/* A finite double as orjson writes it: Python's repr, except that an exponent has no leading
 * zero ("1e-7") and numbers from 1e-5 to 1e-4 are written out ("0.000025"). */
static int put_double(Text *text, double value)
{
    if (!isfinite(value)) { /* fastmeta.finite_or_text */
        if (isnan(value)) {
            return PUT_LITERAL(text, "\"NaN\"");
        }
        return value > 0 ? PUT_LITERAL(text, "\"Infinity\"") : PUT_LITERAL(text, "\"-Infinity\"");
    }
    char *repr = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (repr == NULL) {
        return -1;
    }
    int result;
    char *e = strchr(repr, 'e');
    if (e == NULL || e[1] == '+') {
        result = put(text, repr, (Py_ssize_t)strlen(repr));
    }
    else { /* e-XX */
        int exponent = atoi(e + 2);
        char buffer[64];
        Py_ssize_t n = 0;
        const char *mantissa = repr;
        if (*mantissa == '-') {
            buffer[n++] = '-';
            mantissa++;
        }
        if (exponent == 5) {
            memcpy(buffer + n, "0.0000", 6);
            n += 6;
            for (const char *c = mantissa; c < e; c++) {
                if (*c != '.') {
                    buffer[n++] = *c;
                }
            }
        }
        else {
            memcpy(buffer + n, mantissa, (size_t)(e - mantissa));
            n += e - mantissa;
            n += snprintf(buffer + n, sizeof buffer - (size_t)n, "e-%d", exponent);
        }
        result = put(text, buffer, n);
    }
    PyMem_Free(repr);
    return result;
}

static int put_unsigned(Text *text, unsigned long long value)
{
    char buffer[24];
    char *digit = buffer + sizeof buffer;
    do {
        *--digit = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    return put(text, digit, buffer + sizeof buffer - digit);
}

static int put_signed(Text *text, long long value)
{
    if (value < 0) {
        /* the magnitude as unsigned: -LLONG_MIN does not fit a long long */
        return PUT_LITERAL(text, "-") < 0 ? -1 : put_unsigned(text, 0ULL - (unsigned long long)value);
    }
    return put_unsigned(text, (unsigned long long)value);
}

/* A value an object event carries (fastmeta.py's converters, Python's float()/int()): None,
 * str, int, finite float, list, dict with str keys — written as orjson writes it. Anything else (an
 * integer beyond 64 bits, which orjson refuses and meta.dumps writes otherwise; a type no
 * converter makes) is Unsupported: the object path runs. */
static int put_object(Text *text, PyObject *value, int depth)
{
    if (value == Py_None) {
        return PUT_LITERAL(text, "null");
    }
    if (PyUnicode_Check(value)) {
        Py_ssize_t length;
        const char *utf8 = PyUnicode_AsUTF8AndSize(value, &length);
        return utf8 == NULL ? -1 : put_escaped(text, (const unsigned char *)utf8, length, 0);
    }
    if (PyFloat_Check(value) && isfinite(PyFloat_AS_DOUBLE(value))) {
        return put_double(text, PyFloat_AS_DOUBLE(value));
    }
    if (PyLong_CheckExact(value)) {
        int overflow;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (number == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (!overflow) {
            return put_signed(text, number);
        }
    }
    else if (depth < 8 && PyList_Check(value)) {
        if (PUT_LITERAL(text, "[") < 0) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            if ((i > 0 && PUT_LITERAL(text, ",") < 0)
                || put_object(text, PyList_GET_ITEM(value, i), depth + 1) < 0) {
                return -1;
            }
        }
        return PUT_LITERAL(text, "]");
    }
    else if (depth < 8 && PyDict_CheckExact(value)) {
        if (PUT_LITERAL(text, "{") < 0) {
            return -1;
        }
        Py_ssize_t position = 0;
        PyObject *key, *item;
        int string_keys = 1;
        for (int first = 1; string_keys && PyDict_Next(value, &position, &key, &item); first = 0) {
            string_keys = PyUnicode_Check(key);
            if (string_keys
                && ((!first && PUT_LITERAL(text, ",") < 0) || put_object(text, key, depth + 1) < 0
                    || PUT_LITERAL(text, ":") < 0 || put_object(text, item, depth + 1) < 0)) {
                return -1;
            }
        }
        if (string_keys) {
            return PUT_LITERAL(text, "}");
        }
    }
    raise_unsupported("a value the one-call writer does not write");
    return -1;
}

static int put_base64(Text *text, const unsigned char *raw, Py_ssize_t length)
{
    if (reserve(text, (length + 2) / 3 * 4 + 2) < 0) {
        return -1;
    }
    char *out = text->data + text->length;
    *out++ = '"';
    out += encode_base64(raw, length, out);
    *out++ = '"';
    text->length = out - text->data;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The sink protocol (fastmeta.py's module docstring describes it for Python sinks).
 *
 * walk() below is the only element loop: it holds every value rule once (VR conversion,
 * character sets, padding, PS3.18 F.2.5 nulls, inline binary against BulkDataURI ranges,
 * group lengths, the nesting limit, truncation and what it leaves to the general reader) and
 * tells a sink what it found. An element is element(tag, VR), then its values (none for an
 * empty value: no "Value", F.2.5), its inline binary or its bulk data range, or its sequence
 * items (item_begin, the item's elements, item_end), then element_end. The value events are
 * typed so that a sink writing text needs no Python object for them: text (raw bytes in the
 * data set's character set, padding already removed), null (an empty value among several),
 * name (a person name's component groups), integer, unsigned_integer, real, and object (a
 * value a Python converter or Python's float()/int() made: str, int, float, None).
 * Any event returns -1 with a Python exception set to stop the walk.
 * ------------------------------------------------------------------------------------------- */

typedef struct Sink Sink;

typedef struct {
    int (*element)(Sink *sink, uint32_t tag, const VRInfo *info);
    int (*text)(Sink *sink, const unsigned char *raw, Py_ssize_t length, int encoding);
    int (*null)(Sink *sink);
    int (*name)(Sink *sink, const unsigned char *const *components, const Py_ssize_t *lengths,
                int count, int encoding);
    int (*integer)(Sink *sink, long long value);
    int (*unsigned_integer)(Sink *sink, unsigned long long value);
    int (*real)(Sink *sink, double value);
    int (*object)(Sink *sink, PyObject *value);
    int (*inline_binary)(Sink *sink, const unsigned char *raw, Py_ssize_t length);
    int (*bulk)(Sink *sink, long long offset, long long length);
    int (*item_begin)(Sink *sink);
    int (*item_end)(Sink *sink);
    int (*element_end)(Sink *sink);
} SinkOps;

struct Sink {
    const SinkOps *ops;
};

/* A sink that keeps nothing: a sequence coded as a group length (gggg,0000) is walked (its
 * items must still be well formed) but is no attribute (PS3.5 7.2). */
static int discard_element(Sink *sink, uint32_t tag, const VRInfo *info) { return 0; }
static int discard_text(Sink *sink, const unsigned char *raw, Py_ssize_t length, int encoding)
{
    return 0;
}
static int discard_event(Sink *sink) { return 0; }
static int discard_name(Sink *sink, const unsigned char *const *components,
                        const Py_ssize_t *lengths, int count, int encoding)
{
    return 0;
}
static int discard_integer(Sink *sink, long long value) { return 0; }
static int discard_unsigned(Sink *sink, unsigned long long value) { return 0; }
static int discard_real(Sink *sink, double value) { return 0; }
static int discard_object(Sink *sink, PyObject *value) { return 0; }
static int discard_binary(Sink *sink, const unsigned char *raw, Py_ssize_t length) { return 0; }
static int discard_bulk(Sink *sink, long long offset, long long length) { return 0; }

static const SinkOps DISCARD_OPS = {
    discard_element, discard_text,    discard_event, discard_name,   discard_integer,
    discard_unsigned, discard_real,   discard_object, discard_binary, discard_bulk,
    discard_event,   discard_event,   discard_event,
};
static Sink DISCARD = {&DISCARD_OPS};

typedef struct {
    Reader *reader;
    /* read_json's common road: a Specific Character Set must be CS (meta.codec_of reads it
     * back from the object path's result), and the Transfer Syntax UID is kept in `syntax`. */
    int strict;
    char syntax[72]; /* the Transfer Syntax UID's first value, when `strict` */
    int syntax_length;
} Walk;

/* Each value of a list a Python converter returned, as an object event; steals `list`. */
static int emit_objects(Sink *sink, PyObject *list)
{
    if (list == NULL) {
        return -1;
    }
    if (!PyList_Check(list)) {
        Py_DECREF(list);
        PyErr_SetString(PyExc_TypeError, "a converter returned no list");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        if (sink->ops->object(sink, PyList_GET_ITEM(list, i)) < 0) {
            Py_DECREF(list);
            return -1;
        }
    }
    Py_DECREF(list);
    return 0;
}

static int take_object(void *sink, PyObject *number, Py_ssize_t index)
{
    (void)index;
    return ((Sink *)sink)->ops->object((Sink *)sink, number);
}

/* AS CS DA DT TM UI (in Latin-1), SH LO UC: split at backslashes, each part without its
 * trailing spaces and NULs (PS3.5 6.2: not significant); one empty part is no value, an empty
 * part among several is null (PS3.18 F.2.5). */
static int emit_parts(Sink *sink, const unsigned char *raw, Py_ssize_t length, int encoding)
{
    if (memchr(raw, '\\', (size_t)length) == NULL) {
        Py_ssize_t kept = rstrip_space_nul(raw, length);
        return kept == 0 ? 0 : sink->ops->text(sink, raw, kept, encoding);
    }
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= length; i++) {
        if (i < length && raw[i] != '\\') {
            continue;
        }
        Py_ssize_t kept = rstrip_space_nul(raw + start, i - start);
        int failed = kept == 0 ? sink->ops->null(sink)
                               : sink->ops->text(sink, raw + start, kept, encoding);
        if (failed < 0) {
            return -1;
        }
        start = i + 1;
    }
    return 0;
}

/* PN: the value without trailing padding, split at backslashes into names (an empty one among
 * several null, F.2.5) and each name at "=" into its first three component groups (PS3.5
 * 6.2.1.1). Backslash and "=" are ASCII, never inside a UTF-8 sequence: splitting the bytes
 * splits the text, once the whole value is known to decode. */
static int emit_names(Sink *sink, const unsigned char *raw, Py_ssize_t length, int encoding)
{
    length = rstrip_space_nul(raw, length);
    if (length == 0) {
        return 0;
    }
    if (encoding == UTF_8 && check_utf8(raw, length) < 0) {
        return -1;
    }
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= length; i++) {
        if (i < length && raw[i] != '\\') {
            continue;
        }
        int failed;
        if (i == start) {
            failed = sink->ops->null(sink);
        }
        else {
            const unsigned char *components[3];
            Py_ssize_t lengths[3];
            int count = 0;
            Py_ssize_t from = start;
            for (Py_ssize_t j = start; j <= i && count < 3; j++) {
                if (j < i && raw[j] != '=') {
                    continue;
                }
                components[count] = raw + from;
                lengths[count++] = j - from;
                from = j + 1;
            }
            failed = sink->ops->name(sink, components, lengths, count, encoding);
        }
        if (failed < 0) {
            return -1;
        }
        start = i + 1;
    }
    return 0;
}

/* US SS UL SL FL FD SV UV: little endian binary numbers (PS3.5 Table 6.2-1). */
static int emit_binary_numbers(Sink *sink, const VRInfo *info, const unsigned char *raw,
                               Py_ssize_t length)
{
    int size = info->number_size;
    if (length % size) {
        PyErr_Format(unsupported_error, "%U value of %zd bytes", info->name, length);
        return -1;
    }
    const SinkOps *ops = sink->ops;
    for (Py_ssize_t i = 0; i < length / size; i++) {
        uint64_t bits = little_endian(raw + i * size, size);
        int failed;
        if (info->number_type == 'f') {
            double d;
            if (size == 4) {
                uint32_t narrow = (uint32_t)bits;
                float f;
                memcpy(&f, &narrow, 4);
                d = f;
            }
            else {
                memcpy(&d, &bits, 8);
            }
            failed = ops->real(sink, d);
        }
        else if (info->number_type == 's') {
            long long value = size == 2 ? (int16_t)bits : size == 4 ? (int32_t)bits : (int64_t)bits;
            failed = ops->integer(sink, value);
        }
        else {
            failed = ops->unsigned_integer(sink, bits);
        }
        if (failed < 0) {
            return -1;
        }
    }
    return 0;
}

/* The values of a text or number value (not empty). */
static int emit_value(Sink *sink, const VRInfo *info, const unsigned char *raw, Py_ssize_t length,
                      int encoding)
{
    switch (info->kind) {
    case K_PLAIN:
        return emit_parts(sink, raw, length, LATIN_1);
    case K_TEXT:
        return emit_parts(sink, raw, length, encoding);
    case K_SINGLE: { /* ST LT UT: one value, backslashes included */
        Py_ssize_t kept = rstrip_space_nul(raw, length);
        return kept == 0 ? 0 : sink->ops->text(sink, raw, kept, encoding);
    }
    case K_PN:
        return emit_names(sink, raw, length, encoding);
    case K_DS:
    case K_IS:
        if (plain_number_text(raw, length)) {
            return each_number(raw, length, info->kind == K_IS, take_object, sink) < 0 ? -1 : 0;
        }
        return emit_objects(sink, delegate(info->name, raw, length, encoding));
    case K_NUMBER:
        return emit_binary_numbers(sink, info, raw, length);
    default: /* AE UR AT */
        return emit_objects(sink, delegate(info->name, raw, length, encoding));
    }
}

static int walk_sequence(Walk *walk_state, Sink *sink, long long position, uint32_t length,
                         int encoding, int depth, long long *stop);

/* The element loop: elements from `position` until `end` (< 0: none), an item delimiter, the
 * pixel data at the top level, or the end of group 0002 when `meta`; the stop in *stop.
 * *encoding follows a Specific Character Set (fastmeta._charset decides which). */
static int walk(Walk *walk_state, Sink *sink, long long position, long long end, int *encoding,
                int top, int meta, int depth, long long *stop)
{
    Reader *reader = walk_state->reader;
    const SinkOps *ops = sink->ops;
    long long size = reader->size;
    long long limit = end < 0 || end > size ? size : end;
    while (position < limit) {
        const unsigned char *p;
        int found = element_head(reader, position, end, top, meta, &p, stop);
        if (found <= 0) {
            return found;
        }
        unsigned group = p[0] | p[1] << 8;
        unsigned element = p[2] | p[3] << 8;
        uint32_t tag = (uint32_t)group << 16 | element;
        const VRInfo *info = vr_info(p[4], p[5]);
        long long length, value_at;
        if (info != NULL && info->is_short) {
            length = p[6] | p[7] << 8;
            value_at = position + 8;
        }
        else {
            uint32_t long_length;
            found = long_head(reader, p, position, tag, info, top, &long_length, stop);
            if (found <= 0) {
                return found;
            }
            length = long_length;
            value_at = position + 12;
            if (info->kind == K_SQ) {
                Sink *target = element == 0 ? &DISCARD : sink;
                if (target->ops->element(target, tag, info) < 0
                    || walk_sequence(walk_state, target, value_at, (uint32_t)length, *encoding,
                                     depth + 1, &position) < 0
                    || target->ops->element_end(target) < 0) {
                    return -1;
                }
                continue;
            }
            if (length == UNDEFINED_LENGTH || info->kind == K_UN) {
                raise_unsupported("value of undefined length or unknown type");
                return -1;
            }
        }
        position = value_at + length;
        if (position > size) {
            return raise_truncated(reader, group, element, length, value_at);
        }
        if (element == 0) { /* group length (PS3.5 7.2): describes the encoding, not the data */
            continue;
        }
        if (length == 0) {
            /* an empty character set in a long text VR still goes through fastmeta._charset */
            if (!info->is_short && info->kind != K_BINARY && tag == SPECIFIC_CHARACTER_SET_TAG) {
                *encoding = charset((const unsigned char *)"", 0, top);
                if (*encoding < 0) {
                    return -1;
                }
            }
            if (ops->element(sink, tag, info) < 0 || ops->element_end(sink) < 0) {
                return -1;
            }
            continue;
        }
        if (ops->element(sink, tag, info) < 0) {
            return -1;
        }
        int failed;
        if (info->kind == K_BINARY) {
            if (length > inline_binary_max) {
                failed = ops->bulk(sink, value_at, length);
            }
            else {
                const unsigned char *raw = window(reader, value_at, length);
                failed = raw == NULL || ops->inline_binary(sink, raw, length) < 0;
            }
        }
        else if (!info->is_short && length > huge_value) {
            failed = ops->bulk(sink, value_at, length);
        }
        else {
            const unsigned char *raw = window(reader, value_at, length);
            if (raw == NULL) {
                return -1;
            }
            if (tag == SPECIFIC_CHARACTER_SET_TAG) {
                if (walk_state->strict && info->kind != K_PLAIN) {
                    /* CS mis-encoded (as a number, a name...): meta.codec_of cannot read it
                     * back, and the object path says what that makes of the file */
                    raise_unsupported("character set with another VR");
                    return -1;
                }
                *encoding = charset(raw, length, top);
                if (*encoding < 0) {
                    return -1;
                }
            }
            else if (walk_state->strict && meta && tag == 0x00020010u) {
                /* fastmeta.read_fast: the first value, stripped */
                const unsigned char *slash = memchr(raw, '\\', (size_t)length);
                Py_ssize_t first = rstrip_space_nul(raw, slash == NULL ? length : slash - raw);
                if (info->kind != K_PLAIN || first == 0
                    || first >= (Py_ssize_t)sizeof walk_state->syntax) {
                    raise_unsupported("transfer syntax");
                    return -1;
                }
                memcpy(walk_state->syntax, raw, (size_t)first);
                walk_state->syntax[first] = '\0';
                walk_state->syntax_length = (int)first;
            }
            failed = emit_value(sink, info, raw, length, *encoding);
        }
        if (failed || ops->element_end(sink) < 0) {
            return -1;
        }
    }
    if (!(end < 0 && top) && position > size) {
        PyErr_SetNone(PyExc_EOFError);
        return -1;
    }
    *stop = position;
    return 0;
}

static int walk_sequence(Walk *walk_state, Sink *sink, long long position, uint32_t length,
                         int encoding, int depth, long long *stop)
{
    if (depth > max_depth) {
        raise_unsupported("sequences nested too deep");
        return -1;
    }
    long long end = length == UNDEFINED_LENGTH ? -1 : position + length;
    while (end < 0 || position < end) {
        uint32_t tag, item_length;
        if (item_head(walk_state->reader, position, &tag, &item_length) < 0) {
            return -1;
        }
        position += 8;
        if (tag == SEQUENCE_DELIMITER_TAG) {
            *stop = position;
            return 0;
        }
        if (sink->ops->item_begin(sink) < 0) {
            return -1;
        }
        int item_encoding = encoding;
        long long item_end = item_length == UNDEFINED_LENGTH ? -1 : position + item_length;
        if (walk(walk_state, sink, position, item_end, &item_encoding, 0, 0, depth, &position) < 0
            || sink->ops->item_end(sink) < 0) {
            return -1;
        }
    }
    *stop = position;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Sinks keep a stack of frames: the data set, then one per sequence item being read. A frame
 * grows past the first few only for nested sequences (at most max_depth + 1).
 * ------------------------------------------------------------------------------------------- */

static int grow_frames(void **frames, int *capacity, int depth, size_t frame_size)
{
    if (depth < *capacity) {
        return 0;
    }
    int wanted = *capacity ? *capacity * 2 : 8;
    void *grown = realloc(*frames, (size_t)wanted * frame_size);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset((char *)grown + (size_t)*capacity * frame_size, 0,
           (size_t)(wanted - *capacity) * frame_size);
    *frames = grown;
    *capacity = wanted;
    return 0;
}

/* --- The Python-object sink: the DICOM JSON model as dicts and lists ({tag: {"vr", "Value" |
 * "InlineBinary" | "BulkDataURI"}}, PS3.18 F.2), what fastmeta.ObjectSink builds. --- */

typedef struct {
    PyObject *object;   /* the data set or item being filled (owned by its parent) */
    uint32_t tag;
    const VRInfo *info;
    PyObject *values;   /* the current element's Value, made at its first value */
    PyObject *extra_key; /* InlineBinary or BulkDataURI */
    PyObject *extra;
} ObjectFrame;

typedef struct {
    Sink base;
    PyObject *bulk_uri; /* (offset, length) -> BulkDataURI */
    ObjectFrame *frames;
    int depth;
    int capacity;
} ObjectSink;

static ObjectFrame *object_frame(Sink *sink)
{
    ObjectSink *self = (ObjectSink *)sink;
    return &self->frames[self->depth];
}

static int object_element(Sink *sink, uint32_t tag, const VRInfo *info)
{
    ObjectFrame *frame = object_frame(sink);
    frame->tag = tag;
    frame->info = info;
    return 0;
}

/* Appends `value` to the element's Value; steals it. */
static int object_append(Sink *sink, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    ObjectFrame *frame = object_frame(sink);
    if (frame->values == NULL) {
        frame->values = PyList_New(0);
        if (frame->values == NULL) {
            Py_DECREF(value);
            return -1;
        }
    }
    int result = PyList_Append(frame->values, value);
    Py_DECREF(value);
    return result;
}

static int object_text(Sink *sink, const unsigned char *raw, Py_ssize_t length, int encoding)
{
    return object_append(sink, decode(raw, length, encoding));
}

static int object_null(Sink *sink)
{
    return object_append(sink, Py_NewRef(Py_None));
}

static int object_name(Sink *sink, const unsigned char *const *components,
                       const Py_ssize_t *lengths, int count, int encoding)
{
    static PyObject **keys[3] = {&s_alphabetic, &s_ideographic, &s_phonetic};
    PyObject *entry = PyDict_New();
    for (int c = 0; entry != NULL && c < count; c++) {
        PyObject *text = decode(components[c], lengths[c], encoding);
        if (text == NULL || PyDict_SetItem(entry, *keys[c], text) < 0) {
            Py_XDECREF(text);
            Py_CLEAR(entry);
            break;
        }
        Py_DECREF(text);
    }
    return object_append(sink, entry);
}

static int object_integer(Sink *sink, long long value)
{
    return object_append(sink, PyLong_FromLongLong(value));
}

static int object_unsigned(Sink *sink, unsigned long long value)
{
    return object_append(sink, PyLong_FromUnsignedLongLong(value));
}

static int object_real(Sink *sink, double value)
{
    return object_append(sink, finite_or_text(PyFloat_FromDouble(value)));
}

static int object_object(Sink *sink, PyObject *value)
{
    return object_append(sink, Py_NewRef(value));
}

static int object_inline_binary(Sink *sink, const unsigned char *raw, Py_ssize_t length)
{
    ObjectFrame *frame = object_frame(sink);
    frame->extra_key = s_inline_binary;
    Py_XSETREF(frame->extra, base64_text(raw, length));
    return frame->extra == NULL ? -1 : 0;
}

static int object_bulk(Sink *sink, long long offset, long long length)
{
    ObjectFrame *frame = object_frame(sink);
    frame->extra_key = s_bulk_data_uri;
    Py_XSETREF(frame->extra,
               PyObject_CallFunction(((ObjectSink *)sink)->bulk_uri, "LL", offset, length));
    return frame->extra == NULL ? -1 : 0;
}

static int object_item_begin(Sink *sink)
{
    ObjectSink *self = (ObjectSink *)sink;
    PyObject *item = PyDict_New();
    if (object_append(sink, item == NULL ? NULL : Py_NewRef(item)) < 0
        || grow_frames((void **)&self->frames, &self->capacity, self->depth + 1,
                       sizeof(ObjectFrame)) < 0) {
        Py_XDECREF(item);
        return -1;
    }
    Py_DECREF(item); /* the Value list holds it */
    self->depth++;
    ObjectFrame *frame = object_frame(sink);
    memset(frame, 0, sizeof *frame);
    frame->object = item;
    return 0;
}

static int object_item_end(Sink *sink)
{
    ((ObjectSink *)sink)->depth--;
    return 0;
}

static int object_element_end(Sink *sink)
{
    ObjectFrame *frame = object_frame(sink);
    PyObject *element = PyDict_New();
    PyObject *key = element == NULL ? NULL : key_of(frame->tag);
    int failed = key == NULL || PyDict_SetItem(element, s_vr, frame->info->name) < 0
                 || (frame->values != NULL && PyDict_SetItem(element, s_value, frame->values) < 0)
                 || (frame->extra != NULL
                     && PyDict_SetItem(element, frame->extra_key, frame->extra) < 0)
                 || PyDict_SetItem(frame->object, key, element) < 0;
    Py_XDECREF(key);
    Py_XDECREF(element);
    Py_CLEAR(frame->values);
    Py_CLEAR(frame->extra);
    return failed ? -1 : 0;
}

static const SinkOps OBJECT_OPS = {
    object_element, object_text,    object_null,          object_name,
    object_integer, object_unsigned, object_real,         object_object,
    object_inline_binary, object_bulk, object_item_begin, object_item_end,
    object_element_end,
};

static int object_sink_open(ObjectSink *self, PyObject *out, PyObject *bulk_uri)
{
    memset(self, 0, sizeof *self);
    self->base.ops = &OBJECT_OPS;
    self->bulk_uri = bulk_uri;
    if (grow_frames((void **)&self->frames, &self->capacity, 0, sizeof(ObjectFrame)) < 0) {
        return -1;
    }
    self->frames[0].object = out;
    return 0;
}

static void object_sink_close(ObjectSink *self)
{
    for (int i = 0; i < self->capacity; i++) {
        Py_CLEAR(self->frames[i].values);
        Py_CLEAR(self->frames[i].extra);
    }
    free(self->frames);
}

/* --- The DICOM JSON text sink: the text orjson writes of the Python-object sink's model,
 * byte for byte (see read_json below). --- */

/* One JSON object's members so far (keys must come in rising tag order: see read_json), and
 * how many values the current element has. */
typedef struct {
    int count;
    uint32_t last;
    int values;
} JsonFrame;

typedef struct {
    Sink base;
    Text text;
    const char *uri; /* the file's URI: the base of its BulkDataURIs */
    Py_ssize_t uri_length;
    JsonFrame *frames;
    int depth;
    int capacity;
} JsonSink;

/* ,"GGGGEEEE":{"vr":"XX" */
static int json_element(Sink *sink, uint32_t tag, const VRInfo *info)
{
    JsonSink *self = (JsonSink *)sink;
    JsonFrame *frame = &self->frames[self->depth];
    if (frame->count > 0 && tag <= frame->last) {
        raise_unsupported("elements out of tag order");
        return -1;
    }
    Text *text = &self->text;
    if (reserve(text, 22) < 0) {
        return -1;
    }
    static const char HEX[] = "0123456789ABCDEF";
    char *out = text->data + text->length;
    if (frame->count > 0) {
        *out++ = ',';
    }
    *out++ = '"';
    uint32_t digits = tag;
    for (int i = 7; i >= 0; i--) {
        out[i] = HEX[digits & 15];
        digits >>= 4;
    }
    out += 8;
    memcpy(out, "\":{\"vr\":\"", 9);
    out += 9;
    *out++ = info->code[0];
    *out++ = info->code[1];
    *out++ = '"';
    text->length = out - text->data;
    frame->count++;
    frame->last = tag;
    frame->values = 0;
    return 0;
}

/* Before a value: the "Value" array opened, or the comma after the previous value. */
static int json_next_value(JsonSink *self)
{
    JsonFrame *frame = &self->frames[self->depth];
    return frame->values++ == 0 ? PUT_LITERAL(&self->text, ",\"Value\":[")
                                : PUT_LITERAL(&self->text, ",");
}

static int json_text(Sink *sink, const unsigned char *raw, Py_ssize_t length, int encoding)
{
    JsonSink *self = (JsonSink *)sink;
    return json_next_value(self) < 0 ? -1 : put_string(&self->text, raw, length, encoding);
}

static int json_null(Sink *sink)
{
    JsonSink *self = (JsonSink *)sink;
    return json_next_value(self) < 0 ? -1 : PUT_LITERAL(&self->text, "null");
}

static int json_name(Sink *sink, const unsigned char *const *components, const Py_ssize_t *lengths,
                     int count, int encoding)
{
    static const char *keys[3] = {"{\"Alphabetic\":", ",\"Ideographic\":", ",\"Phonetic\":"};
    JsonSink *self = (JsonSink *)sink;
    Text *text = &self->text;
    if (json_next_value(self) < 0) {
        return -1;
    }
    for (int c = 0; c < count; c++) {
        /* the walk checked that the whole value decodes */
        if (put(text, keys[c], (Py_ssize_t)strlen(keys[c])) < 0
            || put_escaped(text, components[c], lengths[c], encoding == LATIN_1) < 0) {
            return -1;
        }
    }
    return PUT_LITERAL(text, "}");
}

static int json_integer(Sink *sink, long long value)
{
    JsonSink *self = (JsonSink *)sink;
    return json_next_value(self) < 0 ? -1 : put_signed(&self->text, value);
}

static int json_unsigned(Sink *sink, unsigned long long value)
{
    JsonSink *self = (JsonSink *)sink;
    return json_next_value(self) < 0 ? -1 : put_unsigned(&self->text, value);
}

static int json_real(Sink *sink, double value)
{
    JsonSink *self = (JsonSink *)sink;
    return json_next_value(self) < 0 ? -1 : put_double(&self->text, value);
}

static int json_object(Sink *sink, PyObject *value)
{
    JsonSink *self = (JsonSink *)sink;
    return json_next_value(self) < 0 ? -1 : put_object(&self->text, value, 0);
}

static int json_inline_binary(Sink *sink, const unsigned char *raw, Py_ssize_t length)
{
    Text *text = &((JsonSink *)sink)->text;
    return PUT_LITERAL(text, ",\"InlineBinary\":") < 0 ? -1 : put_base64(text, raw, length);
}

/* ,"BulkDataURI":"<uri>?offset=N&length=M" (bulk.bulk_uri_factory); the URI is
 * percent-encoded: no quote, backslash or control character to escape. */
static int json_bulk(Sink *sink, long long offset, long long length)
{
    JsonSink *self = (JsonSink *)sink;
    Text *text = &self->text;
    if (PUT_LITERAL(text, ",\"BulkDataURI\":\"") < 0 || put(text, self->uri, self->uri_length) < 0
        || PUT_LITERAL(text, "?offset=") < 0 || put_unsigned(text, (unsigned long long)offset) < 0
        || PUT_LITERAL(text, "&length=") < 0
        || put_unsigned(text, (unsigned long long)length) < 0) {
        return -1;
    }
    return PUT_LITERAL(text, "\"");
}

static int json_item_begin(Sink *sink)
{
    JsonSink *self = (JsonSink *)sink;
    if (json_next_value(self) < 0 || PUT_LITERAL(&self->text, "{") < 0
        || grow_frames((void **)&self->frames, &self->capacity, self->depth + 1,
                       sizeof(JsonFrame)) < 0) {
        return -1;
    }
    self->depth++;
    memset(&self->frames[self->depth], 0, sizeof(JsonFrame));
    return 0;
}

static int json_item_end(Sink *sink)
{
    JsonSink *self = (JsonSink *)sink;
    self->depth--;
    return PUT_LITERAL(&self->text, "}");
}

static int json_element_end(Sink *sink)
{
    JsonSink *self = (JsonSink *)sink;
    return self->frames[self->depth].values ? PUT_LITERAL(&self->text, "]}")
                                            : PUT_LITERAL(&self->text, "}");
}

static const SinkOps JSON_OPS = {
    json_element, json_text,          json_null,   json_name,       json_integer,
    json_unsigned, json_real,         json_object, json_inline_binary, json_bulk,
    json_item_begin, json_item_end,   json_element_end,
};

/* paths.to_file_uri(os.path.abspath(local)) for a path abspath leaves as it is (absolute, no
 * empty, "." or ".." segment): "file://" and the UTF-8 path, percent-encoded as
 * urllib.parse.quote does with to_file_uri's safe characters. NULL (no error) otherwise. */
static char *file_uri(const char *path, Py_ssize_t length, Py_ssize_t *uri_length)
{
    if (length == 0 || path[0] != '/' || path[length - 1] == '/') {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < length; i++) {
        if (path[i] != '/') {
            continue;
        }
        Py_ssize_t next = i + 1; /* the segment after this slash */
        Py_ssize_t end = next;
        while (end < length && path[end] != '/') {
            end++;
        }
        Py_ssize_t segment = end - next;
        if (segment == 0 || (segment == 1 && path[next] == '.')
            || (segment == 2 && path[next] == '.' && path[next + 1] == '.')) {
            return NULL;
        }
    }
    static const char SAFE[] = "/:@!$&'()*+,;=-._~";
    static const char HEX[] = "0123456789ABCDEF";
    char *uri = malloc((size_t)(7 + 3 * length + 1));
    if (uri == NULL) {
        return NULL;
    }
    memcpy(uri, "file://", 7);
    Py_ssize_t n = 7;
    for (Py_ssize_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)path[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
            || (c != 0 && strchr(SAFE, c) != NULL)) {
            uri[n++] = (char)c;
        }
        else {
            uri[n++] = '%';
            uri[n++] = HEX[c >> 4];
            uri[n++] = HEX[c & 15];
        }
    }
    uri[n] = '\0';
    *uri_length = n;
    return uri;
}

static int syntax_excluded(const char *syntax)
{
    PyObject *value = PyUnicode_DecodeLatin1(syntax, (Py_ssize_t)strlen(syntax), "strict");
    if (value == NULL) {
        return -1;
    }
    int excluded = PySet_Contains(excluded_syntaxes, value);
    Py_DECREF(value);
    return excluded;
}

/* ---------------------------------------------------------------------------------------------
 * The Python-facing calls.
 * ------------------------------------------------------------------------------------------- */

/* fastmeta.read_fast after the preamble check, into the Python-object sink: the file meta
 * group, the transfer syntax check, then the data set. */
static PyObject *read_elements(PyObject *module, PyObject *args)
{
    Reader reader = {0};
    PyObject *source, *bulk_uri;
    if (!PyArg_ParseTuple(args, "OOLO", &reader.local, &source, &reader.size, &bulk_uri)) {
        return NULL;
    }
    if (excluded_syntaxes == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastmeta.configure() was not called");
        return NULL;
    }
    if (open_source(&reader, source) < 0) {
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (out == NULL) {
        close_source(&reader);
        return NULL;
    }
    PyObject *result = NULL;
    ObjectSink sink;
    Walk walk_state = {&reader, 0, {0}, 0};
    int encoding = LATIN_1;
    long long position;
    if (object_sink_open(&sink, out, bulk_uri) < 0
        || walk(&walk_state, &sink.base, 132, -1, &encoding, 1, 1, 0, &position) < 0) {
        goto done;
    }
    /* result.get("00020010", {}).get("Value", [""])[0] */
    PyObject *syntax = NULL;
    PyObject *element = PyDict_GetItemWithError(out, s_transfer_syntax_key);
    if (element == NULL && PyErr_Occurred()) {
        goto done;
    }
    if (element != NULL) {
        PyObject *value = PyDict_GetItemWithError(element, s_value);
        if (value == NULL && PyErr_Occurred()) {
            goto done;
        }
        if (value != NULL && PyList_Check(value) && PyList_GET_SIZE(value) > 0) {
            syntax = PyList_GET_ITEM(value, 0);
        }
    }
    if (syntax == NULL) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    int truthy = PyObject_IsTrue(syntax);
    int excluded = truthy <= 0 ? 0 : PySet_Contains(excluded_syntaxes, syntax);
    if (truthy < 0 || excluded < 0) {
        goto done;
    }
    if (!truthy || excluded) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    encoding = LATIN_1; /* the data set starts with the default character set again */
    if (walk(&walk_state, &sink.base, position, -1, &encoding, 1, 0, 0, &position) < 0) {
        goto done;
    }
    result = Py_BuildValue("OL", out, position);
done:
    object_sink_close(&sink);
    Py_DECREF(out);
    close_source(&reader);
    return result;
}

/* fastmeta.read_trailing into the Python-object sink: the elements after the pixel data, to
 * the end of the file or the next pixel data element. */
static PyObject *read_trailing_elements(PyObject *module, PyObject *args)
{
    Reader reader = {0};
    long long position;
    PyObject *codec, *source, *bulk_uri;
    if (!PyArg_ParseTuple(args, "OOLLOO", &reader.local, &source, &reader.size, &position,
                          &codec, &bulk_uri)) {
        return NULL;
    }
    int encoding = -1;
    for (int i = 0; i < 2 && encoding < 0; i++) {
        int equal = PyObject_RichCompareBool(codec, s_encodings[i], Py_EQ);
        if (equal < 0) {
            return NULL;
        }
        encoding = equal ? i : -1;
    }
    if (encoding < 0) {
        raise_unsupported("character set codec");
        return NULL;
    }
    if (open_source(&reader, source) < 0) {
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (out == NULL) {
        close_source(&reader);
        return NULL;
    }
    PyObject *result = NULL;
    ObjectSink sink;
    Walk walk_state = {&reader, 0, {0}, 0};
    if (object_sink_open(&sink, out, bulk_uri) == 0
        && walk(&walk_state, &sink.base, position, -1, &encoding, 1, 0, 0, &position) == 0) {
        result = Py_BuildValue("OL", out, position);
    }
    object_sink_close(&sink);
    Py_DECREF(out);
    close_source(&reader);
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * read_json(): the whole file in one call, into the JSON text sink.
 *
 * The object path builds a dict per element, then meta.py finds the pixel data, reads the
 * elements after it, sorts the keys and orjson writes the text: ~60 us a file, five times the
 * element loop's own work. This call opens the file, walks the same elements with the same
 * rules and writes the text that orjson would write of the object path's result, byte for
 * byte (a test holds the two to each other over the corpus and damaged copies of it).
 *
 * It takes only the common road. Anything else — an element out of tag order (the object path
 * sorts, or keeps the first position of a repeated tag), an integer beyond 64 bits (orjson
 * refuses it), an implicit VR pixel data element, a path whose URI needs normalising,
 * any error — returns None, and the caller runs the object path, which decides and describes.
 * ------------------------------------------------------------------------------------------- */

/* meta._pixels_and_after: the pixel data element at `position` described by its byte range
 * (its value never read), then the elements after it to the end of the file. */
static int pixels_and_after(Walk *walk_state, Sink *sink, long long position, int *encoding)
{
    Reader *reader = walk_state->reader;
    long long size = reader->size;
    if (position == size) {
        return 0; /* locate_pixel_data: no element there */
    }
    /* Bytes that are neither an element nor the pixel data (fewer than an element header):
     * trailing bytes, which the object path reports with a warning (trailing.py). */
    if (position + 4 > size) {
        raise_unsupported("bytes after the last element");
        return -1;
    }
    const unsigned char *p = window(reader, position, position + 12 <= size ? 12 : 4);
    if (p == NULL) {
        return -1;
    }
    uint32_t tag = (uint32_t)(p[0] | p[1] << 8) << 16 | (uint32_t)(p[2] | p[3] << 8);
    if (tag != 0x7FE00008u && tag != 0x7FE00009u && tag != 0x7FE00010u) {
        raise_unsupported("bytes after the last element");
        return -1;
    }
    const VRInfo *info = position + 12 <= size ? vr_info(p[4], p[5]) : NULL;
    if (info == NULL || info->is_short) {
        /* an implicit VR element, a short VR: the object path reads and describes those */
        raise_unsupported("pixel data element");
        return -1;
    }
    long long length = (uint32_t)little_endian(p + 8, 4);
    long long offset = position + 12;
    long long after;
    if (length == UNDEFINED_LENGTH) { /* encapsulated (PS3.5 A.4): walk the item headers */
        long long at = offset;
        for (;;) {
            const unsigned char *item = at + 8 <= size ? window(reader, at, 8) : NULL;
            if (item == NULL) {
                raise_unsupported("pixel data without a sequence delimiter");
                return -1;
            }
            uint32_t item_tag = (uint32_t)(item[0] | item[1] << 8) << 16
                                | (uint32_t)(item[2] | item[3] << 8);
            uint32_t item_length = (uint32_t)little_endian(item + 4, 4);
            if (item_tag == SEQUENCE_DELIMITER_TAG) {
                length = at - offset;
                after = at + 8;
                break;
            }
            if (item_tag != ITEM_TAG || item_length == UNDEFINED_LENGTH) {
                raise_unsupported("pixel data fragment");
                return -1;
            }
            at += 8 + (long long)item_length;
        }
    }
    else {
        after = offset + length;
        if (after > size) {
            raise_unsupported("pixel data past the end of the file");
            return -1;
        }
    }
    const SinkOps *ops = sink->ops;
    if (ops->element(sink, tag, info) < 0) {
        return -1;
    }
    if (length > inline_binary_max) {
        if (ops->bulk(sink, offset, length) < 0) {
            return -1;
        }
    }
    else if (length > 0) {
        const unsigned char *raw = window(reader, offset, length);
        if (raw == NULL || ops->inline_binary(sink, raw, length) < 0) {
            return -1;
        }
    }
    if (ops->element_end(sink) < 0) {
        return -1;
    }
    if (after < size) { /* e.g. Data Set Trailing Padding (PS3.10 7.2), to the end */
        long long stop;
        if (walk(walk_state, sink, after, -1, encoding, 1, 0, 0, &stop) < 0) {
            return -1;
        }
        if (stop != size) {
            raise_unsupported("elements after the pixel data the object path describes");
            return -1;
        }
    }
    return 0;
}

/* read_json(local) -> bytes (UTF-8 JSON) | None */
static PyObject *read_json(PyObject *module, PyObject *local)
{
    if (!PyUnicode_Check(local)) {
        PyErr_SetString(PyExc_TypeError, "read_json() takes a path string");
        return NULL;
    }
    if (excluded_syntaxes == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastmeta.configure() was not called");
        return NULL;
    }
    Reader reader;
    memset(&reader, 0, sizeof reader);
    reader.local = local;
    reader.fd = -1;
    reader.first_chunk = FIRST_CHUNK;
    JsonSink sink;
    memset(&sink, 0, sizeof sink);
    sink.base.ops = &JSON_OPS;
    Walk walk_state = {&reader, 1, {0}, 0};
    PyObject *encoded = NULL;
    char *uri = NULL;
    PyObject *result = NULL;
    Py_ssize_t utf8_length;
    const char *utf8 = PyUnicode_AsUTF8AndSize(local, &utf8_length);
    if (utf8 == NULL) {
        goto done;
    }
    uri = file_uri(utf8, utf8_length, &sink.uri_length);
    if (uri == NULL) {
        goto done;
    }
    sink.uri = uri;
    encoded = PyUnicode_EncodeFSDefault(local);
    if (encoded == NULL || strlen(PyBytes_AS_STRING(encoded)) != (size_t)PyBytes_GET_SIZE(encoded)) {
        goto done;
    }
    /* As sources.open_source: only a regular file is opened (opening a device can act on it);
     * O_NONBLOCK in case a named pipe took its place since: it opens at once, then is refused. */
    int fd = -1;
    struct stat status;
    int regular;
    Py_BEGIN_ALLOW_THREADS
    regular = stat(PyBytes_AS_STRING(encoded), &status) == 0 && S_ISREG(status.st_mode)
              && status.st_size >= 132;
    if (regular) {
        fd = open(PyBytes_AS_STRING(encoded), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd >= 0 && (fstat(fd, &status) < 0 || !S_ISREG(status.st_mode))) {
            close(fd);
            fd = -1;
        }
    }
    Py_END_ALLOW_THREADS
    if (fd < 0) {
        goto done; /* the object path names the error, or reads what it takes for a file */
    }
    reader.fd = fd;
    if (status.st_size < 132) {
        goto done;
    }
    reader.size = status.st_size;
    const unsigned char *magic = window(&reader, 128, 4);
    if (magic == NULL || memcmp(magic, "DICM", 4) != 0) {
        goto done;
    }
    int encoding = LATIN_1;
    long long position;
    if (grow_frames((void **)&sink.frames, &sink.capacity, 0, sizeof(JsonFrame)) < 0
        || PUT_LITERAL(&sink.text, "{") < 0
        || walk(&walk_state, &sink.base, 132, -1, &encoding, 1, 1, 0, &position) < 0) {
        goto done;
    }
    if (walk_state.syntax_length == 0) {
        goto done; /* no transfer syntax: the general reader's case */
    }
    int excluded = syntax_excluded(walk_state.syntax);
    if (excluded != 0) {
        goto done;
    }
    encoding = LATIN_1; /* fastmeta.read_fast: the data set starts with the default again */
    if (walk(&walk_state, &sink.base, position, -1, &encoding, 1, 0, 0, &position) < 0
        || pixels_and_after(&walk_state, &sink.base, position, &encoding) < 0) {
        goto done;
    }
    if (sink.frames[0].count == 0 || PUT_LITERAL(&sink.text, "}") < 0) {
        goto done; /* no elements: not_dicom, said by the object path */
    }
    result = PyBytes_FromStringAndSize(sink.text.data, sink.text.length);
done:
    if (reader.fd >= 0) {
        close(reader.fd);
    }
    free(reader.buffer);
    free(sink.text.data);
    free(sink.frames);
    free(uri);
    Py_XDECREF(encoded);
    if (result == NULL) {
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                return NULL; /* KeyboardInterrupt and the like */
            }
            PyErr_Clear();
        }
        Py_RETURN_NONE;
    }
    return result;
}

static int set_vr(const char *name, enum kind kind, int is_short, int number_size, char number_type)
{
    VRInfo *info = &VRS[(name[0] - 'A') * 26 + (name[1] - 'A')];
    info->name = PyUnicode_InternFromString(name);
    if (info->name == NULL) {
        return -1;
    }
    memcpy(info->code, name, 3);
    info->kind = kind;
    info->is_short = is_short;
    info->number_size = number_size;
    info->number_type = number_type;
    return 0;
}

static PyObject *configure(PyObject *module, PyObject *args)
{
    PyObject *error, *charset_fn, *truncated_fn, *converter_map, *excluded;
    long long inline_max, huge;
    int depth;
    if (!PyArg_ParseTuple(args, "OOOO!OLLi", &error, &charset_fn, &truncated_fn, &PyDict_Type,
                          &converter_map, &excluded, &inline_max, &huge, &depth)) {
        return NULL;
    }
    if (!PyAnySet_Check(excluded)) {
        PyErr_SetString(PyExc_TypeError, "excluded syntaxes must be a set");
        return NULL;
    }
    Py_XSETREF(unsupported_error, Py_NewRef(error));
    Py_XSETREF(charset_function, Py_NewRef(charset_fn));
    Py_XSETREF(truncated_function, Py_NewRef(truncated_fn));
    Py_XSETREF(converters, Py_NewRef(converter_map));
    Py_XSETREF(excluded_syntaxes, Py_NewRef(excluded));
    inline_binary_max = inline_max;
    huge_value = huge;
    max_depth = depth;
    Py_RETURN_NONE;
}

static int init_tables(void)
{
    static const char *plain[] = {"AS", "CS", "DA", "DT", "TM", "UI"};
    for (size_t i = 0; i < sizeof plain / sizeof *plain; i++) {
        if (set_vr(plain[i], K_PLAIN, 1, 0, 0) < 0) {
            return -1;
        }
    }
    if (set_vr("SH", K_TEXT, 1, 0, 0) < 0 || set_vr("LO", K_TEXT, 1, 0, 0) < 0
        || set_vr("UC", K_TEXT, 0, 0, 0) < 0 || set_vr("ST", K_SINGLE, 1, 0, 0) < 0
        || set_vr("LT", K_SINGLE, 1, 0, 0) < 0 || set_vr("UT", K_SINGLE, 0, 0, 0) < 0
        || set_vr("PN", K_PN, 1, 0, 0) < 0 || set_vr("DS", K_DS, 1, 0, 0) < 0
        || set_vr("IS", K_IS, 1, 0, 0) < 0 || set_vr("US", K_NUMBER, 1, 2, 'u') < 0
        || set_vr("SS", K_NUMBER, 1, 2, 's') < 0 || set_vr("UL", K_NUMBER, 1, 4, 'u') < 0
        || set_vr("SL", K_NUMBER, 1, 4, 's') < 0 || set_vr("FL", K_NUMBER, 1, 4, 'f') < 0
        || set_vr("FD", K_NUMBER, 1, 8, 'f') < 0 || set_vr("SV", K_NUMBER, 0, 8, 's') < 0
        || set_vr("UV", K_NUMBER, 0, 8, 'u') < 0 || set_vr("AE", K_DELEGATE, 1, 0, 0) < 0
        || set_vr("AT", K_DELEGATE, 1, 0, 0) < 0 || set_vr("UR", K_DELEGATE, 0, 0, 0) < 0
        || set_vr("SQ", K_SQ, 0, 0, 0) < 0 || set_vr("UN", K_UN, 0, 0, 0) < 0) {
        return -1;
    }
    static const char *binary[] = {"OB", "OD", "OF", "OL", "OV", "OW"};
    for (size_t i = 0; i < sizeof binary / sizeof *binary; i++) {
        if (set_vr(binary[i], K_BINARY, 0, 0, 0) < 0) {
            return -1;
        }
    }
    struct {
        PyObject **target;
        const char *text;
    } strings[] = {
        {&s_vr, "vr"},
        {&s_value, "Value"},
        {&s_inline_binary, "InlineBinary"},
        {&s_bulk_data_uri, "BulkDataURI"},
        {&s_alphabetic, "Alphabetic"},
        {&s_ideographic, "Ideographic"},
        {&s_phonetic, "Phonetic"},
        {&s_backslash, "\\"},
        {&s_equals, "="},
        {&s_transfer_syntax_key, "00020010"},
        {&s_encodings[LATIN_1], "latin_1"},
        {&s_encodings[UTF_8], "utf_8"},
    };
    for (size_t i = 0; i < sizeof strings / sizeof *strings; i++) {
        *strings[i].target = PyUnicode_InternFromString(strings[i].text);
        if (*strings[i].target == NULL) {
            return -1;
        }
    }
    return 0;
}

static PyMethodDef METHODS[] = {
    {"configure", configure, METH_VARARGS,
     "configure(unsupported, charset, truncated, converters, excluded_syntaxes, inline_max, huge,"
     " max_depth)"},
    {"read_elements", read_elements, METH_VARARGS,
     "read_elements(local, fd_or_buffer, size, bulk_uri) -> (dict, position) | None"},
    {"read_json", read_json, METH_O,
     "read_json(local) -> bytes | None: the file's DICOM JSON as UTF-8, or None for the object path"},
    {"read_trailing_elements", read_trailing_elements, METH_VARARGS,
     "read_trailing_elements(local, fd_or_buffer, size, position, codec, bulk_uri) -> (dict, position)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_fastmeta", "Compiled element loop of pixels_sql.dicom.fastmeta.", -1,
    METHODS, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastmeta(void)
{
    if (init_tables() < 0) {
        return NULL;
    }
    return PyModule_Create(&MODULE);
}
