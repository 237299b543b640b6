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
#include <limits.h>
#include <math.h>
#include <stdio.h>
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

/* Exact powers of ten: every 10^k up to 10^22 is a double (5^22 < 2^53). */
static const double POWERS_OF_TEN[] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* float() of a plain decimal ("[+-]digits[.digits]", spaces around it) of at most 15
 * significant digits, without Python's parser (its x87 control-word switches cost more than
 * the parse on this hardware): such a mantissa and 10^k (k <= 22) are exact doubles, so one
 * IEEE division rounds to the double nearest the decimal, as strtod does (Clinger's fast
 * path). 0 when `raw` is not of that form: the caller lets Python parse it. */
static int plain_decimal(const unsigned char *raw, Py_ssize_t length, double *out)
{
    Py_ssize_t i = 0;
    while (i < length && raw[i] == ' ') {
        i++;
    }
    while (length > i && raw[length - 1] == ' ') {
        length--;
    }
    int negative = 0;
    if (i < length && (raw[i] == '+' || raw[i] == '-')) {
        negative = raw[i] == '-';
        i++;
    }
    unsigned long long mantissa = 0;
    int significant = 0, fraction = 0, point = 0, digits = 0, zeros = 0;
    for (; i < length; i++) {
        unsigned char c = raw[i];
        if (c == '.') {
            if (point) {
                return 0;
            }
            point = 1;
            continue;
        }
        if (c < '0' || c > '9') {
            return 0;
        }
        digits++;
        if (point && c == '0') {
            zeros++; /* trailing fraction zeros change nothing: counted once a digit follows */
            continue;
        }
        for (int pending = point ? zeros + 1 : 1; pending > 0; pending--) {
            int digit = pending == 1 ? c - '0' : 0;
            if (mantissa != 0 || digit != 0) {
                if (++significant > 15) {
                    return 0;
                }
                mantissa = mantissa * 10 + (unsigned long long)digit;
            }
            fraction += point;
        }
        zeros = 0;
    }
    if (digits == 0 || fraction > 22) {
        return 0;
    }
    double value = (double)mantissa;
    if (fraction > 0) {
        value /= POWERS_OF_TEN[fraction];
    }
    *out = negative ? -value : value;
    return 1;
}

/* repr(value) into `out` (room for 40 bytes) when that is positional and has at most 15
 * significant digits (1e-4 <= |value| < 1e15, or a zero), without Python's dtoa: the fewest
 * fraction digits k with round(|value| * 10^k) / 10^k == |value| spell the one decimal of at
 * most 15 digits that reads back as this double (DBL_DIG), which is the shortest, as repr's.
 * Returns the length, or 0 for the rest (the caller asks Python). */
static Py_ssize_t short_repr(double value, char *out)
{
    char *start = out;
    if (signbit(value)) {
        *out++ = '-';
    }
    double magnitude = fabs(value);
    unsigned long long mantissa = 0;
    int fraction = -1;
    if (magnitude == 0) {
        fraction = 0;
    }
    else if (magnitude >= 1e-4 && magnitude < 1e15) {
        for (int k = 0; k <= 19; k++) {
            double scaled = magnitude * POWERS_OF_TEN[k];
            if (scaled >= 1e15) {
                return 0;
            }
            double rounded = nearbyint(scaled);
            if (rounded / POWERS_OF_TEN[k] == magnitude) {
                mantissa = (unsigned long long)rounded;
                fraction = k;
                break;
            }
        }
    }
    if (fraction < 0) {
        return 0;
    }
    char digits[24];
    int count = 0;
    do {
        digits[count++] = (char)('0' + mantissa % 10);
        mantissa /= 10;
    } while (mantissa != 0);
    while (count <= fraction) { /* a leading 0 before the point */
        digits[count++] = '0';
    }
    for (int d = count - 1; d >= fraction; d--) {
        *out++ = digits[d];
    }
    *out++ = '.';
    if (fraction == 0) {
        *out++ = '0';
    }
    for (int d = fraction - 1; d >= 0; d--) {
        *out++ = digits[d];
    }
    return out - start;
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
            double plain;
            if (!is_integer && plain_decimal(raw + part_start, i - part_start, &plain)) {
                number = PyFloat_FromDouble(plain);
            }
            else {
                PyObject *text =
                    PyBytes_FromStringAndSize((const char *)raw + part_start, i - part_start);
                if (text != NULL) {
                    number = is_integer ? integer(text) : finite_or_text(PyFloat_FromString(text));
                    Py_DECREF(text);
                    number = number_or_text(number, raw + part_start, i - part_start);
                }
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

/* The tag as the DICOM JSON model keys it: 8 upper-case hex digits at out (no NUL). */
static void tag_hex(char *out, uint32_t tag)
{
    static const char HEX[] = "0123456789ABCDEF";
    for (int i = 7; i >= 0; i--) {
        out[i] = HEX[tag & 15];
        tag >>= 4;
    }
}

static PyObject *key_of(uint32_t tag)
{
    char key[8];
    tag_hex(key, tag);
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
    char fast[40];
    Py_ssize_t fast_length = short_repr(value, fast);
    if (fast_length > 0) {
        return put(text, fast, fast_length);
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
    char *out = text->data + text->length;
    if (frame->count > 0) {
        *out++ = ',';
    }
    *out++ = '"';
    tag_hex(out, tag);
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

/* --- The typed sink: one row of the typed header table, what typed.typed_json(meta, None)
 * writes of the same header, byte for byte (tests/test_header_sinks.py holds the two to each
 * other). It wraps the DICOM JSON sink: every event goes to that sink first, so one walk gives
 * both texts, and a sequence whose items leave the typed columns (a private one, a VR other than
 * the dictionary's, one nested too deep) keeps each item as the DICOM JSON text that sink wrote.
 *
 * The rules are typed.py's (its module docstring): a standard attribute is a member named by
 * its keyword, typed by its VR; DS and IS keep their text and get a numeric twin; a binary one
 * holds its bulk data URI or inline base64; private, unknown and repeating-group elements, and
 * values that do not fit (a malformed DA/DT/TM/DS/IS/AT, a VR the dictionary does not give,
 * several values where the dictionary says VM 1), go to OtherElements. Which attribute a tag
 * is comes from typed.py's table (configure_typed): C holds no dictionary of its own. A value
 * whose conversion Python decides (a DS or IS part that is no plain number) is handed to
 * typed.py's own function. --- */

typedef struct {
    uint32_t tag;
    const char *keyword; /* ASCII, NUL-terminated; owned by keyword_store */
    char vrs[3][2];      /* the dictionary's VRs ("US or SS"): any of them belongs here */
    int vr_count;
    int multiple;        /* VM other than 1: an ARRAY column */
    int column_string;   /* the column holds text (a binary value of it is typed) */
    int sequence;        /* the dictionary's first VR is SQ */
} TypedAttribute;

static TypedAttribute *typed_attributes;
static Py_ssize_t typed_attribute_count;
static PyObject *keyword_store;   /* the keywords' bytes, kept alive */
static PyObject *malformed_error; /* typed.Malformed */
static PyObject *decimal_number;  /* typed._decimal_number */
static PyObject *integer_number;  /* typed._integer_number */
static int max_typed_depth = -1;
/* Item levels inside a sequence kept whole (OtherElements) that this sink writes itself. */
#define MAX_CAPTURED_DEPTH 64

static const TypedAttribute *typed_attribute(uint32_t tag)
{
    Py_ssize_t low = 0, high = typed_attribute_count;
    while (low < high) {
        Py_ssize_t middle = (low + high) / 2;
        if (typed_attributes[middle].tag < tag) {
            low = middle + 1;
        }
        else {
            high = middle;
        }
    }
    return low < typed_attribute_count && typed_attributes[low].tag == tag ? &typed_attributes[low]
                                                                          : NULL;
}

static int attribute_has_vr(const TypedAttribute *attribute, const VRInfo *info)
{
    for (int i = 0; i < attribute->vr_count; i++) {
        if (attribute->vrs[i][0] == info->code[0] && attribute->vrs[i][1] == info->code[1]) {
            return 1;
        }
    }
    return 0;
}

/* What becomes of an element (typed._Columns._decide without a table shape). */
enum {
    D_VALUE,
    D_SEQUENCE,
    D_BINARY,
    D_OTHER,       /* not a column, no issue */
    D_VR_MISMATCH, /* the issues: typed.VR_MISMATCH, ... */
    D_TOO_DEEP,
    D_MULTIPLE,
    D_MALFORMED,
};
static const char *const ISSUES[] = {NULL, NULL, NULL, NULL, "vr_mismatch", "too_deep",
                                     "multiple_values", "malformed"};

enum { V_TEXT, V_NULL, V_NAME, V_INT, V_UINT, V_REAL, V_OBJECT };

/* One value of the element being read, as the walk gave it (raw bytes stay valid until the
 * element ends: they point into the reader's window). */
typedef struct {
    int type;
    int encoding;
    int count; /* a name's component groups */
    const unsigned char *raw[3];
    Py_ssize_t length[3];
    long long integer;
    unsigned long long unsigned_integer;
    double real;
    PyObject *object; /* owned */
} TypedValue;

typedef struct {
    uint32_t group;
    unsigned block;
    char *text; /* the creator's UTF-8 text (malloc) */
    Py_ssize_t length;
} Creator;

/* A data set being typed: the top level, then one per sequence item. */
typedef struct {
    int members;              /* members written into its JSON object */
    int skeleton_members;     /* tags written into its skeleton */
    Py_ssize_t prefix_length; /* its OtherElements tag path ("00081140[0].") */
    int depth;                /* sequence levels above it */
    Creator *creators;        /* its private creators so far (PS3.5 7.8.1) */
    int creator_count;
    int creator_capacity;
    /* the element being read */
    uint32_t tag;
    const VRInfo *info;
    const TypedAttribute *attribute;
    int decision;
    int items; /* items of the sequence element so far */
    /* the skeleton of its current item from here (its comma), and of the last one written */
    Py_ssize_t skeleton_item_start;
    Py_ssize_t skeleton_previous_start;
    Py_ssize_t skeleton_previous_length;
    int captured; /* the sequence element goes to OtherElements: items as DICOM JSON */
} TypedFrame;

enum { BINARY_NONE, BINARY_INLINE, BINARY_BULK };

/* An element's value as bytes: inline (InlineBinary) or a range of the file (a BulkDataURI,
 * PS3.18 F.2.6). */
typedef struct {
    int kind;
    const unsigned char *raw; /* inline */
    long long offset;         /* bulk */
    long long length;
} BinaryValue;

typedef struct {
    Sink base;
    JsonSink json;  /* gets every event first */
    Text row;       /* the typed row */
    Text other;     /* OtherElements' entries */
    Text prefix;    /* the current tag path */
    Text skeleton;  /* the standard tags present, what the row's columns depend on */
    int others;     /* entries in `other` */
    TypedFrame *frames;
    int depth;
    int capacity;
    TypedValue *values;
    int value_count;
    int value_capacity;
    BinaryValue binary; /* the current element's bytes, when they are its value */
    /* inside a captured sequence: items open below it (0: between its items) */
    int capturing;
    int capture_open;
    Py_ssize_t capture_start;
    int capture_items;
} TypedSink;

static TypedFrame *typed_frame(TypedSink *self)
{
    return &self->frames[self->depth];
}

static void typed_clear_values(TypedSink *self)
{
    for (int i = 0; i < self->value_count; i++) {
        Py_CLEAR(self->values[i].object);
    }
    self->value_count = 0;
    self->binary.kind = BINARY_NONE;
}

static TypedValue *typed_new_value(TypedSink *self, int type)
{
    if (self->value_count == self->value_capacity) {
        int wanted = self->value_capacity ? self->value_capacity * 2 : 16;
        TypedValue *grown = realloc(self->values, (size_t)wanted * sizeof(TypedValue));
        if (grown == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        self->values = grown;
        self->value_capacity = wanted;
    }
    TypedValue *value = &self->values[self->value_count++];
    memset(value, 0, sizeof *value);
    value->type = type;
    return value;
}

/* The tag's 8 hex digits (tag_hex) at the end of text. */
static int put_tag_hex(Text *text, uint32_t tag)
{
    char out[8];
    tag_hex(out, tag);
    return put(text, out, 8);
}

/* ,"Keyword": (a comma before all but the first member) */
static int typed_member(TypedSink *self, const char *keyword, const char *suffix)
{
    TypedFrame *frame = typed_frame(self);
    Text *row = &self->row;
    if ((frame->members++ > 0 && PUT_LITERAL(row, ",") < 0) || PUT_LITERAL(row, "\"") < 0
        || put(row, keyword, (Py_ssize_t)strlen(keyword)) < 0
        || (suffix != NULL && put(row, suffix, (Py_ssize_t)strlen(suffix)) < 0)) {
        return -1;
    }
    return PUT_LITERAL(row, "\":");
}

/* --- typed._text: a value as text, for OtherElements --- */

/* A float as typed._text writes it: an integral one below 1e16 as an integer, else repr. */
static int put_float_text(Text *text, double value)
{
    if (!isfinite(value)) { /* the DICOM JSON model holds these as their spelling */
        return isnan(value) ? PUT_LITERAL(text, "\"NaN\"")
                            : (value > 0 ? PUT_LITERAL(text, "\"Infinity\"")
                                         : PUT_LITERAL(text, "\"-Infinity\""));
    }
    if (floor(value) == value && fabs(value) < 1e16) {
        return PUT_LITERAL(text, "\"") < 0 || put_signed(text, (long long)value) < 0
                   ? -1
                   : PUT_LITERAL(text, "\"");
    }
    char fast[40];
    Py_ssize_t fast_length = short_repr(value, fast);
    if (fast_length > 0) {
        return PUT_LITERAL(text, "\"") < 0 || put(text, fast, fast_length) < 0
                   ? -1
                   : PUT_LITERAL(text, "\"");
    }
    char *repr = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (repr == NULL) {
        return -1;
    }
    int result = PUT_LITERAL(text, "\"") < 0 || put(text, repr, (Py_ssize_t)strlen(repr)) < 0
                     ? -1
                     : PUT_LITERAL(text, "\"");
    PyMem_Free(repr);
    return result;
}

/* The text of a value an object event carried (str, int, float, None). */
static int put_object_text(Text *text, PyObject *value)
{
    if (value == Py_None || PyUnicode_Check(value)) {
        return put_object(text, value, 0);
    }
    if (PyFloat_Check(value)) {
        return put_float_text(text, PyFloat_AS_DOUBLE(value));
    }
    PyObject *shown = PyObject_Str(value);
    if (shown == NULL) {
        return -1;
    }
    int result = put_object(text, shown, 0);
    Py_DECREF(shown);
    return result;
}

/* A person name as text: its groups joined by "=", trailing empty ones dropped (PS3.5 6.2). */
static int put_name_text(Text *text, const TypedValue *value)
{
    int count = value->count;
    while (count > 0 && value->length[count - 1] == 0) {
        count--;
    }
    Py_ssize_t total = count > 0 ? count - 1 : 0;
    for (int c = 0; c < count; c++) {
        total += value->length[c];
    }
    unsigned char *joined = malloc((size_t)total + 1);
    if (joined == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t n = 0;
    for (int c = 0; c < count; c++) {
        if (c > 0) {
            joined[n++] = '=';
        }
        memcpy(joined + n, value->raw[c], (size_t)value->length[c]);
        n += value->length[c];
    }
    int result = put_escaped(text, joined, n, value->encoding == LATIN_1);
    free(joined);
    return result;
}

static int put_value_text(Text *text, const TypedValue *value)
{
    switch (value->type) {
    case V_TEXT:
        return put_escaped(text, value->raw[0], value->length[0], value->encoding == LATIN_1);
    case V_NULL:
        return PUT_LITERAL(text, "null");
    case V_NAME:
        return put_name_text(text, value);
    case V_INT:
        return PUT_LITERAL(text, "\"") < 0 || put_signed(text, value->integer) < 0
                   ? -1
                   : PUT_LITERAL(text, "\"");
    case V_UINT:
        return PUT_LITERAL(text, "\"") < 0 || put_unsigned(text, value->unsigned_integer) < 0
                   ? -1
                   : PUT_LITERAL(text, "\"");
    case V_REAL:
        return put_float_text(text, value->real);
    default:
        return put_object_text(text, value->object);
    }
}

/* --- OtherElements entries (typed._other) --- */

static const Creator *find_creator(const TypedFrame *frame, uint32_t tag)
{
    uint32_t group = tag >> 16;
    unsigned block = (tag >> 8) & 0xFF;
    for (int i = 0; i < frame->creator_count; i++) {
        if (frame->creators[i].group == group && frame->creators[i].block == block) {
            return &frame->creators[i];
        }
    }
    return NULL;
}

/* {"tag":"<path><tag>","keyword":...,"vr":"XX"[,"private_creator":"..."] */
static int other_head(TypedSink *self, TypedFrame *frame)
{
    Text *other = &self->other;
    if ((self->others++ > 0 && PUT_LITERAL(other, ",") < 0) || PUT_LITERAL(other, "{\"tag\":\"") < 0
        || put(other, self->prefix.data, frame->prefix_length) < 0
        || put_tag_hex(other, frame->tag) < 0 || PUT_LITERAL(other, "\",\"keyword\":") < 0) {
        return -1;
    }
    if (frame->attribute != NULL) {
        if (PUT_LITERAL(other, "\"") < 0
            || put(other, frame->attribute->keyword, (Py_ssize_t)strlen(frame->attribute->keyword)) < 0
            || PUT_LITERAL(other, "\"") < 0) {
            return -1;
        }
    }
    else if (PUT_LITERAL(other, "null") < 0) {
        return -1;
    }
    if (PUT_LITERAL(other, ",\"vr\":\"") < 0 || put(other, frame->info->code, 2) < 0
        || PUT_LITERAL(other, "\"") < 0) {
        return -1;
    }
    /* the private creator of a private element (odd group), from its block (PS3.5 7.8.1) */
    if (frame->attribute == NULL && (frame->tag >> 16) & 1) {
        const Creator *creator = find_creator(frame, frame->tag);
        if (creator != NULL
            && (PUT_LITERAL(other, ",\"private_creator\":") < 0
                || put_escaped(other, (const unsigned char *)creator->text, creator->length, 0) < 0)) {
            return -1;
        }
    }
    return 0;
}

static int other_tail(TypedSink *self, int decision)
{
    Text *other = &self->other;
    if (ISSUES[decision] != NULL
        && (PUT_LITERAL(other, ",\"issue\":\"") < 0
            || put(other, ISSUES[decision], (Py_ssize_t)strlen(ISSUES[decision])) < 0
            || PUT_LITERAL(other, "\"") < 0)) {
        return -1;
    }
    return PUT_LITERAL(other, "}");
}

static int put_bulk_uri(TypedSink *self, Text *text)
{
    JsonSink *json = &self->json;
    if (PUT_LITERAL(text, "\"") < 0 || put(text, json->uri, json->uri_length) < 0
        || PUT_LITERAL(text, "?offset=") < 0
        || put_unsigned(text, (unsigned long long)self->binary.offset) < 0
        || PUT_LITERAL(text, "&length=") < 0
        || put_unsigned(text, (unsigned long long)self->binary.length) < 0) {
        return -1;
    }
    return PUT_LITERAL(text, "\"");
}

/* The entry of an element that is not a sequence, from its values. */
static int other_entry(TypedSink *self, TypedFrame *frame, int decision)
{
    Text *other = &self->other;
    if (other_head(self, frame) < 0) {
        return -1;
    }
    if (self->value_count > 0) {
        if (PUT_LITERAL(other, ",\"values\":[") < 0) {
            return -1;
        }
        for (int i = 0; i < self->value_count; i++) {
            if ((i > 0 && PUT_LITERAL(other, ",") < 0)
                || put_value_text(other, &self->values[i]) < 0) {
                return -1;
            }
        }
        if (PUT_LITERAL(other, "]") < 0) {
            return -1;
        }
    }
    else if (self->binary.kind == BINARY_INLINE) {
        if (PUT_LITERAL(other, ",\"values\":[") < 0
            || put_base64(other, self->binary.raw, self->binary.length) < 0
            || PUT_LITERAL(other, "]") < 0) {
            return -1;
        }
    }
    if (self->binary.kind == BINARY_BULK
        && (PUT_LITERAL(other, ",\"bulk_data_uri\":") < 0 || put_bulk_uri(self, other) < 0)) {
        return -1;
    }
    return other_tail(self, decision);
}

/* --- values into their column (typed._CONVERTERS, typed._TWINS) --- */

static int two_digits(const unsigned char *raw)
{
    return (raw[0] - '0') * 10 + (raw[1] - '0');
}

static int all_digits(const unsigned char *raw, Py_ssize_t length)
{
    for (Py_ssize_t i = 0; i < length; i++) {
        if (raw[i] < '0' || raw[i] > '9') {
            return 0;
        }
    }
    return 1;
}

static int days_in_month(int year, int month)
{
    static const int DAYS[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    return month == 2 && leap ? 29 : DAYS[month - 1];
}

static int valid_date(int year, int month, int day)
{
    return year >= 1 && month >= 1 && month <= 12 && day >= 1 && day <= days_in_month(year, month);
}

/* A fraction of a second, 1-6 digits, as microseconds. */
static int microseconds(const unsigned char *raw, Py_ssize_t length)
{
    int value = 0;
    for (Py_ssize_t i = 0; i < 6; i++) {
        value = value * 10 + (i < length ? raw[i] - '0' : 0);
    }
    return value;
}

/* `value` (>= 0) as `width` decimal digits at out; the count written. */
static int put_digits(char *out, int value, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        out[i] = (char)('0' + value % 10);
        value /= 10;
    }
    return width;
}

/* HH:MM:SS[.ffffff] at out, NUL-terminated; the count written. */
static int put_time_parts(char *out, int hour, int minute, int second, int micro)
{
    int n = put_digits(out, hour, 2);
    out[n++] = ':';
    n += put_digits(out + n, minute, 2);
    out[n++] = ':';
    n += put_digits(out + n, second, 2);
    if (micro != 0) {
        out[n++] = '.';
        n += put_digits(out + n, micro, 6);
    }
    out[n] = '\0';
    return n;
}

/* YYYY-MM-DD at out; the count written. */
static int put_date_parts(char *out, int year, int month, int day)
{
    int n = put_digits(out, year, 4);
    out[n++] = '-';
    n += put_digits(out + n, month, 2);
    out[n++] = '-';
    n += put_digits(out + n, day, 2);
    out[n] = '\0';
    return n;
}

/* typed.date_value: DA (PS3.5 6.2) as YYYY-MM-DD, or 1 when malformed. The retired dotted form
 * YYYY.MM.DD is read too. */
static int date_text(const unsigned char *raw, Py_ssize_t length, char *out)
{
    int year, month, day;
    if (length == 8 && all_digits(raw, 8)) {
        month = two_digits(raw + 4);
        day = two_digits(raw + 6);
    }
    else if (length == 10 && raw[4] == '.' && raw[7] == '.' && all_digits(raw, 4)
             && all_digits(raw + 5, 2) && all_digits(raw + 8, 2)) {
        month = two_digits(raw + 5);
        day = two_digits(raw + 8);
    }
    else {
        return 1;
    }
    year = two_digits(raw) * 100 + two_digits(raw + 2);
    if (!valid_date(year, month, day)) {
        return 1;
    }
    put_date_parts(out, year, month, day);
    return 0;
}

/* HH, HHMM, HHMMSS or HHMMSS.F{1,6} at raw: its parts, or 1 when it is none of those. A second
 * of 60 (a leap second) is read as 59, as pydicom does. */
static int time_parts(const unsigned char *raw, Py_ssize_t length, int *hour, int *minute,
                      int *second, int *micro)
{
    if (!(length == 2 || length == 4 || length == 6 || (length >= 8 && length <= 13 && raw[6] == '.'))
        || !all_digits(raw, length < 6 ? length : 6)
        || (length >= 8 && !all_digits(raw + 7, length - 7))) {
        return 1;
    }
    *hour = two_digits(raw);
    *minute = length >= 4 ? two_digits(raw + 2) : 0;
    *second = length >= 6 ? two_digits(raw + 4) : 0;
    *micro = length >= 8 ? microseconds(raw + 7, length - 7) : 0;
    if (*second == 60) {
        *second = 59;
    }
    return *hour > 23 || *minute > 59 || *second > 59;
}



/* typed.time_value: TM as HH:MM:SS[.ffffff], or 1 when malformed. */
static int time_text(const unsigned char *raw, Py_ssize_t length, char *out)
{
    int hour, minute, second, micro;
    if (time_parts(raw, length, &hour, &minute, &second, &micro)) {
        return 1;
    }
    put_time_parts(out, hour, minute, second, micro);
    return 0;
}

/* typed.datetime_value: DT (YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]) as ISO 8601, missing
 * components their first value; or 1 when malformed. */
static int datetime_text(const unsigned char *raw, Py_ssize_t length, char *out)
{
    int offset = 0, has_offset = 0;
    if (length >= 5 && (raw[length - 5] == '+' || raw[length - 5] == '-')) {
        if (!all_digits(raw + length - 4, 4)) {
            return 1;
        }
        offset = two_digits(raw + length - 4) * 60 + two_digits(raw + length - 2);
        if (raw[length - 5] == '-') {
            offset = -offset;
        }
        has_offset = 1;
        length -= 5;
        if (offset <= -24 * 60 || offset >= 24 * 60) {
            return 1; /* Python's timezone takes less than a day */
        }
    }
    Py_ssize_t digits = length > 14 ? 14 : length;
    if (length < 4 || digits % 2 || !all_digits(raw, digits)
        || (length > 14 && (raw[14] != '.' || length < 16 || length > 21
                            || !all_digits(raw + 15, length - 15)))) {
        return 1;
    }
    int year = two_digits(raw) * 100 + two_digits(raw + 2);
    int month = digits >= 6 ? two_digits(raw + 4) : 1;
    int day = digits >= 8 ? two_digits(raw + 6) : 1;
    int hour = digits >= 10 ? two_digits(raw + 8) : 0;
    int minute = digits >= 12 ? two_digits(raw + 10) : 0;
    int second = digits >= 14 ? two_digits(raw + 12) : 0;
    int micro = length > 14 ? microseconds(raw + 15, length - 15) : 0;
    if (second == 60) {
        second = 59;
    }
    if (!valid_date(year, month, day) || hour > 23 || minute > 59 || second > 59) {
        return 1;
    }
    int n = put_date_parts(out, year, month, day);
    out[n++] = 'T';
    n += put_time_parts(out + n, hour, minute, second, micro);
    if (has_offset) {
        int magnitude = offset < 0 ? -offset : offset;
        out[n++] = offset < 0 ? '-' : '+';
        n += put_digits(out + n, magnitude / 60, 2);
        out[n++] = ':';
        n += put_digits(out + n, magnitude % 60, 2);
        out[n] = '\0';
    }
    return 0;
}

/* A Python conversion (typed._decimal_number, typed._integer_number) of an object value into
 * the row: 1 when it raised typed.Malformed. */
static int put_converted(Text *text, PyObject *function, PyObject *value)
{
    PyObject *converted = PyObject_CallOneArg(function, value);
    if (converted == NULL) {
        if (PyErr_ExceptionMatches(malformed_error)) {
            PyErr_Clear();
            return 1;
        }
        return -1;
    }
    int result;
    if (PyFloat_Check(converted)) {
        double d = PyFloat_AS_DOUBLE(converted);
        /* orjson writes a non-finite float as null */
        result = isfinite(d) ? put_double(text, d) : PUT_LITERAL(text, "null");
    }
    else {
        result = put_object(text, converted, 0);
    }
    Py_DECREF(converted);
    return result;
}

/* One value into its column: 0, 1 when it does not fit (malformed), -1 on error. `twin`: the
 * DS/IS number twin instead of the text. */
static int put_typed_value(Text *text, const VRInfo *info, const TypedValue *value, int twin)
{
    char iso[40];
    if (value->type == V_NULL) {
        return PUT_LITERAL(text, "null");
    }
    const char *code = info->code;
    if (info->kind == K_PLAIN && (code[0] == 'D' || code[0] == 'T')) { /* DA DT TM */
        if (value->type != V_TEXT) {
            return 1;
        }
        int bad = code[0] == 'T'   ? time_text(value->raw[0], value->length[0], iso)
                  : code[1] == 'A' ? date_text(value->raw[0], value->length[0], iso)
                                   : datetime_text(value->raw[0], value->length[0], iso);
        return bad ? 1 : put_escaped(text, (const unsigned char *)iso, (Py_ssize_t)strlen(iso), 0);
    }
    switch (info->kind) {
    case K_PLAIN: /* AS CS UI */
    case K_TEXT:
    case K_SINGLE:
        if (value->type == V_TEXT) {
            return put_escaped(text, value->raw[0], value->length[0], value->encoding == LATIN_1);
        }
        return 1;
    case K_PN: {
        static const char *keys[3] = {"{\"Alphabetic\":", ",\"Ideographic\":", ",\"Phonetic\":"};
        if (value->type != V_NAME) {
            return 1;
        }
        for (int c = 0; c < 3; c++) {
            if (put(text, keys[c], (Py_ssize_t)strlen(keys[c])) < 0
                || (c < value->count
                        ? put_escaped(text, value->raw[c], value->length[c],
                                      value->encoding == LATIN_1)
                        : PUT_LITERAL(text, "null"))
                       < 0) {
                return -1;
            }
        }
        return PUT_LITERAL(text, "}");
    }
    case K_DS:
    case K_IS: {
        PyObject *object = value->object;
        if (value->type != V_OBJECT) {
            return 1;
        }
        if (!twin) { /* typed._decimal_text */
            if (PyBool_Check(object)
                || !(PyUnicode_Check(object) || PyLong_Check(object) || PyFloat_Check(object))) {
                return 1;
            }
            return put_object_text(text, object);
        }
        if (info->kind == K_DS && PyFloat_CheckExact(object)) {
            return put_double(text, PyFloat_AS_DOUBLE(object));
        }
        if (info->kind == K_IS && PyLong_CheckExact(object)) {
            int overflow;
            long long number = PyLong_AsLongLongAndOverflow(object, &overflow);
            if (number == -1 && PyErr_Occurred()) {
                return -1;
            }
            return overflow ? 1 : put_signed(text, number);
        }
        return put_converted(text, info->kind == K_DS ? decimal_number : integer_number, object);
    }
    case K_NUMBER:
        if (value->type == V_REAL) {
            return put_double(text, value->real);
        }
        if (value->type == V_INT) {
            return put_signed(text, value->integer);
        }
        if (value->type == V_UINT) {
            /* typed._bigint: BIGINT holds no more */
            return value->unsigned_integer > (unsigned long long)LLONG_MAX
                       ? 1
                       : put_unsigned(text, value->unsigned_integer);
        }
        return 1;
    default: /* AE UR AT: the converters' str */
        if (value->type != V_OBJECT || !PyUnicode_CheckExact(value->object)) {
            return 1;
        }
        if (code[0] == 'A' && code[1] == 'T') { /* typed._attribute_tag: 8 hex digits */
            Py_ssize_t length;
            const char *hex = PyUnicode_AsUTF8AndSize(value->object, &length);
            if (hex == NULL) {
                return -1;
            }
            unsigned long long tag = 0;
            if (length != 8) {
                return 1;
            }
            for (int i = 0; i < 8; i++) {
                char c = hex[i];
                int digit = c >= '0' && c <= '9'   ? c - '0'
                            : c >= 'a' && c <= 'f' ? c - 'a' + 10
                            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                   : -1;
                if (digit < 0) {
                    return 1;
                }
                tag = tag << 4 | (unsigned)digit;
            }
            return put_unsigned(text, tag);
        }
        return put_object(text, value->object, 0);
    }
}

/* The element's values into its column (and the DS/IS twin): typed._typed_dataset's value
 * branch. A value that does not fit takes back what was written of the member and sends the
 * element to OtherElements. */
static int typed_values(TypedSink *self, TypedFrame *frame)
{
    const TypedAttribute *attribute = frame->attribute;
    const VRInfo *info = frame->info;
    int has_twin = info->kind == K_DS || info->kind == K_IS;
    if (self->value_count == 0) {
        return 0;
    }
    if (!attribute->multiple && self->value_count > 1) {
        return other_entry(self, frame, D_MULTIPLE);
    }
    if (!attribute->multiple && self->values[0].type == V_NULL) {
        return 0;
    }
    Text *row = &self->row;
    for (int twin = 0; twin <= has_twin; twin++) {
        Py_ssize_t mark = row->length;
        int members = frame->members;
        if (typed_member(self, attribute->keyword, twin ? "_number" : NULL) < 0
            || (attribute->multiple && PUT_LITERAL(row, "[") < 0)) {
            return -1;
        }
        int bad = 0;
        for (int i = 0; !bad && i < self->value_count; i++) {
            if (i > 0 && PUT_LITERAL(row, ",") < 0) {
                return -1;
            }
            bad = put_typed_value(row, info, &self->values[i], twin);
            if (bad < 0) {
                return -1;
            }
        }
        if (bad) {
            row->length = mark;
            frame->members = members;
            return other_entry(self, frame, D_MALFORMED);
        }
        if (attribute->multiple && PUT_LITERAL(row, "]") < 0) {
            return -1;
        }
    }
    return 0;
}

/* --- the events --- */

static int typed_element(Sink *sink, uint32_t tag, const VRInfo *info)
{
    TypedSink *self = (TypedSink *)sink;
    if (json_element(&self->json.base, tag, info) < 0) {
        return -1;
    }
    if (self->capturing) {
        return 0;
    }
    TypedFrame *frame = typed_frame(self);
    const TypedAttribute *attribute = typed_attribute(tag);
    int binary = info->kind == K_BINARY;
    int decision;
    if (attribute == NULL || (binary && attribute_has_vr(attribute, info) && !attribute->column_string)) {
        decision = D_OTHER;
    }
    else if (attribute->sequence && frame->depth >= max_typed_depth) {
        decision = D_TOO_DEEP;
    }
    else if (!attribute_has_vr(attribute, info)) {
        decision = D_VR_MISMATCH;
    }
    else if (attribute->sequence) {
        decision = D_SEQUENCE;
    }
    else if (binary) {
        decision = D_BINARY;
    }
    else if (info->kind == K_SQ) {
        /* typed.py has no converter for it: the Python path decides */
        raise_unsupported("a sequence of an attribute that is no sequence");
        return -1;
    }
    else {
        decision = D_VALUE;
    }
    if (decision == D_SEQUENCE && info->kind != K_SQ) {
        /* a sequence attribute coded with another VR the dictionary allows: Python decides */
        raise_unsupported("a sequence attribute that is no sequence");
        return -1;
    }
    if (attribute != NULL) { /* ,"TAG":0 or ,"TAG":[ for a typed sequence's items */
        Text *skeleton = &self->skeleton;
        if ((frame->skeleton_members++ > 0 && PUT_LITERAL(skeleton, ",") < 0)
            || PUT_LITERAL(skeleton, "\"") < 0 || put_tag_hex(skeleton, tag) < 0
            || (decision == D_SEQUENCE ? PUT_LITERAL(skeleton, "\":[")
                                       : PUT_LITERAL(skeleton, "\":0")) < 0) {
            return -1;
        }
    }
    frame->tag = tag;
    frame->info = info;
    frame->attribute = attribute;
    frame->decision = decision;
    frame->items = 0;
    frame->captured = 0;
    frame->skeleton_previous_length = -1;
    typed_clear_values(self);
    if (info->kind == K_SQ) {
        if (decision == D_SEQUENCE) {
            return typed_member(self, attribute->keyword, NULL) < 0 ? -1
                                                                    : PUT_LITERAL(&self->row, "[");
        }
        /* items as their DICOM JSON text, in an entry opened now: nothing else is written into
         * OtherElements until the sequence ends */
        frame->captured = 1;
        self->capturing = 1;
        self->capture_open = 0;
        self->capture_items = 0;
        return other_head(self, frame);
    }
    return 0;
}

/* Each value callback lets the JSON twin write the value first (``written``: its status), then
 * takes the typed row's next value of ``type`` to fill: NULL with *status 0 while an item is
 * captured whole (its JSON text is the value), NULL with *status -1 on an error. */
static TypedValue *typed_value_after(TypedSink *self, int written, int type, int *status)
{
    *status = written < 0 ? -1 : 0;
    if (written < 0 || self->capturing) {
        return NULL;
    }
    TypedValue *value = typed_new_value(self, type);
    if (value == NULL) {
        *status = -1;
    }
    return value;
}

static int typed_text(Sink *sink, const unsigned char *raw, Py_ssize_t length, int encoding)
{
    TypedSink *self = (TypedSink *)sink;
    int status;
    TypedValue *value = typed_value_after(
        self, json_text(&self->json.base, raw, length, encoding), V_TEXT, &status);
    if (value != NULL) {
        value->raw[0] = raw;
        value->length[0] = length;
        value->encoding = encoding;
    }
    return status;
}

static int typed_null(Sink *sink)
{
    TypedSink *self = (TypedSink *)sink;
    int status;
    typed_value_after(self, json_null(&self->json.base), V_NULL, &status);
    return status;
}

static int typed_name(Sink *sink, const unsigned char *const *components, const Py_ssize_t *lengths,
                      int count, int encoding)
{
    TypedSink *self = (TypedSink *)sink;
    int status;
    TypedValue *value = typed_value_after(
        self, json_name(&self->json.base, components, lengths, count, encoding), V_NAME, &status);
    if (value != NULL) {
        value->count = count;
        value->encoding = encoding;
        for (int c = 0; c < count; c++) {
            value->raw[c] = components[c];
            value->length[c] = lengths[c];
        }
    }
    return status;
}

/* The number callbacks differ only in the number's C type, its JSON writer, its kind and the
 * TypedValue field that keeps it. */
#define TYPED_NUMBER(name, number_type, json_writer, kind, field)                               \
    static int name(Sink *sink, number_type number)                                             \
    {                                                                                           \
        TypedSink *self = (TypedSink *)sink;                                                    \
        int status;                                                                             \
        TypedValue *value =                                                                     \
            typed_value_after(self, json_writer(&self->json.base, number), kind, &status);      \
        if (value != NULL) {                                                                    \
            value->field = number;                                                              \
        }                                                                                       \
        return status;                                                                          \
    }

TYPED_NUMBER(typed_integer, long long, json_integer, V_INT, integer)
TYPED_NUMBER(typed_unsigned, unsigned long long, json_unsigned, V_UINT, unsigned_integer)
TYPED_NUMBER(typed_real, double, json_real, V_REAL, real)

static int typed_object(Sink *sink, PyObject *object)
{
    TypedSink *self = (TypedSink *)sink;
    /* None: an empty DS, IS or AE part among several (PS3.18 F.2.5) */
    int type = object == Py_None ? V_NULL : V_OBJECT;
    int status;
    TypedValue *value =
        typed_value_after(self, json_object(&self->json.base, object), type, &status);
    if (value != NULL && type == V_OBJECT) {
        value->object = Py_NewRef(object);
    }
    return status;
}

/* After the JSON sink wrote an InlineBinary or a BulkDataURI: the bytes are the element's value,
 * unless the element is inside a captured sequence (the captured text holds them). */
static int typed_binary_after(TypedSink *self, int written, BinaryValue binary)
{
    if (written < 0) {
        return -1;
    }
    if (!self->capturing) {
        self->binary = binary;
    }
    return 0;
}

static int typed_inline_binary(Sink *sink, const unsigned char *raw, Py_ssize_t length)
{
    TypedSink *self = (TypedSink *)sink;
    BinaryValue binary = {BINARY_INLINE, raw, 0, length};
    return typed_binary_after(self, json_inline_binary(&self->json.base, raw, length), binary);
}

static int typed_bulk(Sink *sink, long long offset, long long length)
{
    TypedSink *self = (TypedSink *)sink;
    BinaryValue binary = {BINARY_BULK, NULL, offset, length};
    return typed_binary_after(self, json_bulk(&self->json.base, offset, length), binary);
}

/* An item inside a sequence kept whole in OtherElements: its JSON text is captured as the JSON
 * sink writes it. */
static int captured_item_begin(TypedSink *self)
{
    if (self->capture_open++ == 0) {
        self->capture_start = self->json.text.length - 1; /* at its "{" */
    }
    else if (self->capture_open > MAX_CAPTURED_DEPTH) {
        /* typed.py writes so deep an item with Python's json (orjson stops at 254 levels,
         * three a sequence level), whose numbers differ from this text's: Python decides */
        raise_unsupported("a sequence kept whole nested too deep");
        return -1;
    }
    return 0;
}

static int captured_item_end(TypedSink *self)
{
    if (--self->capture_open > 0) {
        return 0;
    }
    Text *other = &self->other;
    const unsigned char *item = (const unsigned char *)self->json.text.data + self->capture_start;
    Py_ssize_t length = self->json.text.length - self->capture_start;
    return (self->capture_items++ == 0 ? PUT_LITERAL(other, ",\"values\":[")
                                       : PUT_LITERAL(other, ","))
                       < 0
                   ? -1
                   : put_escaped(other, item, length, 0);
}

/* An item of a sequence typed as ARRAY<STRUCT>: a struct of the row, a level of the tag path. */
static int row_item_begin(TypedSink *self)
{
    TypedFrame *parent = typed_frame(self);
    Text *row = &self->row;
    parent->skeleton_item_start = self->skeleton.length;
    if ((parent->items > 0
         && (PUT_LITERAL(row, ",") < 0 || PUT_LITERAL(&self->skeleton, ",") < 0))
        || PUT_LITERAL(row, "{") < 0 || PUT_LITERAL(&self->skeleton, "{") < 0) {
        return -1;
    }
    /* the items' tag path: <path><tag>[<index>]. */
    char index[24];
    int n = snprintf(index, sizeof index, "[%d].", parent->items++);
    Py_ssize_t prefix_length = parent->prefix_length + 8 + n;
    self->prefix.length = parent->prefix_length;
    if (put_tag_hex(&self->prefix, parent->tag) < 0 || put(&self->prefix, index, n) < 0
        || grow_frames((void **)&self->frames, &self->capacity, self->depth + 1,
                       sizeof(TypedFrame)) < 0) {
        return -1;
    }
    parent = typed_frame(self); /* grow_frames may have moved it */
    TypedFrame *frame = &self->frames[++self->depth];
    Creator *creators = frame->creators;
    int creator_capacity = frame->creator_capacity;
    for (int i = 0; i < frame->creator_count; i++) {
        free(creators[i].text);
    }
    memset(frame, 0, sizeof *frame);
    frame->creators = creators;
    frame->creator_capacity = creator_capacity;
    frame->prefix_length = prefix_length;
    frame->depth = parent->depth + 1;
    return 0;
}

static int row_item_end(TypedSink *self)
{
    self->depth--;
    if (PUT_LITERAL(&self->row, "}") < 0 || PUT_LITERAL(&self->skeleton, "}") < 0) {
        return -1;
    }
    /* An item whose skeleton is the previous item's is written once (typed.skeleton_json): a
     * multi-frame header's per-frame items then make one entry, not one a frame. */
    TypedFrame *parent = typed_frame(self);
    Text *skeleton = &self->skeleton;
    Py_ssize_t body = parent->skeleton_item_start
                      + (skeleton->data[parent->skeleton_item_start] == ',' ? 1 : 0);
    Py_ssize_t length = skeleton->length - body;
    if (parent->skeleton_previous_length == length
        && memcmp(skeleton->data + parent->skeleton_previous_start, skeleton->data + body,
                  (size_t)length) == 0) {
        skeleton->length = parent->skeleton_item_start;
    }
    else {
        parent->skeleton_previous_start = body;
        parent->skeleton_previous_length = length;
    }
    return 0;
}

static int typed_item_begin(Sink *sink)
{
    TypedSink *self = (TypedSink *)sink;
    int written = json_item_begin(&self->json.base);
    return written < 0 ? -1 : self->capturing ? captured_item_begin(self) : row_item_begin(self);
}

static int typed_item_end(Sink *sink)
{
    TypedSink *self = (TypedSink *)sink;
    int written = json_item_end(&self->json.base);
    return written < 0 ? -1 : self->capturing ? captured_item_end(self) : row_item_end(self);
}

/* Remembers a private creator element (gggg,0010-00FF) of an odd group whose first value is
 * text: typed._private_creators. */
static int typed_creator(TypedSink *self, TypedFrame *frame)
{
    uint32_t element = frame->tag & 0xFFFF;
    if (!((frame->tag >> 16) & 1) || element < 0x10 || element > 0xFF || self->value_count == 0) {
        return 0;
    }
    const TypedValue *first = &self->values[0];
    PyObject *decoded = NULL;
    if (first->type == V_TEXT) {
        decoded = decode(first->raw[0], first->length[0], first->encoding);
    }
    else if (first->type == V_OBJECT && PyUnicode_Check(first->object)) {
        decoded = Py_NewRef(first->object);
    }
    else {
        return 0;
    }
    if (decoded == NULL) {
        return -1;
    }
    Py_ssize_t length;
    const char *utf8 = PyUnicode_AsUTF8AndSize(decoded, &length);
    char *copy = utf8 == NULL ? NULL : malloc((size_t)length + 1);
    if (copy == NULL) {
        Py_DECREF(decoded);
        if (utf8 != NULL) {
            PyErr_NoMemory();
        }
        return -1;
    }
    memcpy(copy, utf8, (size_t)length);
    Py_DECREF(decoded);
    if (frame->creator_count == frame->creator_capacity) {
        int wanted = frame->creator_capacity ? frame->creator_capacity * 2 : 8;
        Creator *grown = realloc(frame->creators, (size_t)wanted * sizeof(Creator));
        if (grown == NULL) {
            free(copy);
            PyErr_NoMemory();
            return -1;
        }
        frame->creators = grown;
        frame->creator_capacity = wanted;
    }
    frame->creators[frame->creator_count++] =
        (Creator){frame->tag >> 16, element, copy, length};
    return 0;
}

static int typed_element_end(Sink *sink)
{
    TypedSink *self = (TypedSink *)sink;
    if (json_element_end(&self->json.base) < 0) {
        return -1;
    }
    if (self->capturing && self->capture_open > 0) {
        return 0;
    }
    TypedFrame *frame = typed_frame(self);
    if (self->capturing) { /* the captured sequence itself ends */
        self->capturing = 0;
        if (self->capture_items > 0 && PUT_LITERAL(&self->other, "]") < 0) {
            return -1;
        }
        return other_tail(self, frame->decision);
    }
    int result;
    switch (frame->decision) {
    case D_SEQUENCE:
        return PUT_LITERAL(&self->row, "]") < 0 ? -1 : PUT_LITERAL(&self->skeleton, "]");
    case D_VALUE:
        result = typed_values(self, frame);
        break;
    case D_BINARY:
        result = 0;
        if (self->binary.kind != BINARY_NONE) {
            result = typed_member(self, frame->attribute->keyword, NULL) < 0
                             || (self->binary.kind == BINARY_BULK
                                     ? put_bulk_uri(self, &self->row)
                                     : put_base64(&self->row, self->binary.raw, self->binary.length))
                                    < 0
                         ? -1
                         : 0;
        }
        break;
    default:
        result = other_entry(self, frame, frame->decision);
    }
    if (result == 0 && frame->attribute == NULL) {
        result = typed_creator(self, frame);
    }
    typed_clear_values(self);
    return result;
}

static const SinkOps TYPED_OPS = {
    typed_element, typed_text,          typed_null,   typed_name,       typed_integer,
    typed_unsigned, typed_real,         typed_object, typed_inline_binary, typed_bulk,
    typed_item_begin, typed_item_end,   typed_element_end,
};

static void typed_sink_close(TypedSink *self)
{
    typed_clear_values(self);
    free(self->values);
    for (int i = 0; i < self->capacity; i++) {
        for (int j = 0; j < self->frames[i].creator_count; j++) {
            free(self->frames[i].creators[j].text);
        }
        free(self->frames[i].creators);
    }
    free(self->frames);
    free(self->row.data);
    free(self->other.data);
    free(self->prefix.data);
    free(self->skeleton.data);
}

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

/* A walk of a source into a new dict through the Python-object sink: what the two object
 * entry points below share. Zeroed by its caller, which fills reader.local and reader.size. */
typedef struct {
    Reader reader;
    ObjectSink sink;
    Walk walk;
    PyObject *out;
} ObjectRead;

/* Hands back `result` (NULL: an exception is set) after freeing what `read` holds. */
static PyObject *object_read_close(ObjectRead *read, PyObject *result)
{
    object_sink_close(&read->sink);
    Py_XDECREF(read->out);
    close_source(&read->reader);
    return result;
}

/* 0 and `read` open, or -1 with an exception and nothing left to close. */
static int object_read_open(ObjectRead *read, PyObject *source, PyObject *bulk_uri)
{
    if (open_source(&read->reader, source) < 0) {
        return -1;
    }
    read->walk.reader = &read->reader;
    read->out = PyDict_New();
    if (read->out == NULL || object_sink_open(&read->sink, read->out, bulk_uri) < 0) {
        object_read_close(read, NULL);
        return -1;
    }
    return 0;
}

/* (the dict, the position the walk stopped at), or NULL after a failed walk; closes `read`. */
static PyObject *object_read_result(ObjectRead *read, int walked, long long position)
{
    return object_read_close(read, walked < 0 ? NULL : Py_BuildValue("OL", read->out, position));
}

/* fastmeta.read_fast's test of the file meta group it read into `out`: 1 when its Transfer
 * Syntax UID is there, not empty and not excluded (the data set is walked next), 0 when not,
 * -1 on an error. As result.get("00020010", {}).get("Value", [""])[0]. */
static int object_syntax_usable(PyObject *out)
{
    PyObject *element = PyDict_GetItemWithError(out, s_transfer_syntax_key);
    if (element == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *value = PyDict_GetItemWithError(element, s_value);
    if (value == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (!PyList_Check(value) || PyList_GET_SIZE(value) == 0) {
        return 0;
    }
    PyObject *syntax = PyList_GET_ITEM(value, 0);
    int truthy = PyObject_IsTrue(syntax);
    if (truthy <= 0) {
        return truthy;
    }
    int excluded = PySet_Contains(excluded_syntaxes, syntax);
    return excluded < 0 ? -1 : !excluded;
}

/* fastmeta.read_fast after the preamble check, into the Python-object sink: the file meta
 * group, the transfer syntax check, then the data set. */
static PyObject *read_elements(PyObject *module, PyObject *args)
{
    ObjectRead read = {0};
    PyObject *source, *bulk_uri;
    if (!PyArg_ParseTuple(args, "OOLO", &read.reader.local, &source, &read.reader.size,
                          &bulk_uri)) {
        return NULL;
    }
    if (excluded_syntaxes == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastmeta.configure() was not called");
        return NULL;
    }
    if (object_read_open(&read, source, bulk_uri) < 0) {
        return NULL;
    }
    int encoding = LATIN_1;
    long long position;
    if (walk(&read.walk, &read.sink.base, 132, -1, &encoding, 1, 1, 0, &position) < 0) {
        return object_read_close(&read, NULL);
    }
    int usable = object_syntax_usable(read.out);
    if (usable <= 0) {
        return object_read_close(&read, usable == 0 ? Py_NewRef(Py_None) : NULL);
    }
    encoding = LATIN_1; /* the data set starts with the default character set again */
    int walked = walk(&read.walk, &read.sink.base, position, -1, &encoding, 1, 0, 0, &position);
    return object_read_result(&read, walked, position);
}

/* fastmeta.read_trailing into the Python-object sink: the elements after the pixel data, to
 * the end of the file or the next pixel data element. */
static PyObject *read_trailing_elements(PyObject *module, PyObject *args)
{
    ObjectRead read = {0};
    long long position;
    PyObject *codec, *source, *bulk_uri;
    if (!PyArg_ParseTuple(args, "OOLLOO", &read.reader.local, &source, &read.reader.size,
                          &position, &codec, &bulk_uri)) {
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
    if (object_read_open(&read, source, bulk_uri) < 0) {
        return NULL;
    }
    int walked = walk(&read.walk, &read.sink.base, position, -1, &encoding, 1, 0, 0, &position);
    return object_read_result(&read, walked, position);
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

/* Opens the local file `local` and walks it into `outer`: the JSON text sink `json` itself, or
 * a sink that wraps it. 1 when the file took the common road (json->text holds its DICOM JSON),
 * 0 when it left it (a Python exception may be set; the caller decides). json->uri is the
 * caller's to free. */
static int walk_file(PyObject *local, JsonSink *json, Sink *outer)
{
    if (!PyUnicode_Check(local)) {
        PyErr_SetString(PyExc_TypeError, "takes a path string");
        return 0;
    }
    if (excluded_syntaxes == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastmeta.configure() was not called");
        return 0;
    }
    Reader reader;
    memset(&reader, 0, sizeof reader);
    reader.local = local;
    reader.fd = -1;
    reader.first_chunk = FIRST_CHUNK;
    Walk walk_state = {&reader, 1, {0}, 0};
    PyObject *encoded = NULL;
    int taken = 0;
    Py_ssize_t utf8_length;
    const char *utf8 = PyUnicode_AsUTF8AndSize(local, &utf8_length);
    if (utf8 == NULL) {
        goto done;
    }
    char *uri = file_uri(utf8, utf8_length, &json->uri_length);
    if (uri == NULL) {
        goto done;
    }
    json->uri = uri;
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
    if (grow_frames((void **)&json->frames, &json->capacity, 0, sizeof(JsonFrame)) < 0
        || PUT_LITERAL(&json->text, "{") < 0
        || walk(&walk_state, outer, 132, -1, &encoding, 1, 1, 0, &position) < 0) {
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
    if (walk(&walk_state, outer, position, -1, &encoding, 1, 0, 0, &position) < 0
        || pixels_and_after(&walk_state, outer, position, &encoding) < 0) {
        goto done;
    }
    if (json->frames[0].count == 0 || PUT_LITERAL(&json->text, "}") < 0) {
        goto done; /* no elements: not_dicom, said by the object path */
    }
    taken = 1;
done:
    if (reader.fd >= 0) {
        close(reader.fd);
    }
    free(reader.buffer);
    Py_XDECREF(encoded);
    return taken;
}

/* None for a file that left the common road, unless the error must stop the caller. */
static PyObject *road_left(void)
{
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL; /* KeyboardInterrupt and the like */
        }
        PyErr_Clear();
    }
    Py_RETURN_NONE;
}

/* read_json(local) -> bytes (UTF-8 JSON) | None */
static PyObject *read_json(PyObject *module, PyObject *local)
{
    JsonSink sink;
    memset(&sink, 0, sizeof sink);
    sink.base.ops = &JSON_OPS;
    PyObject *result = NULL;
    if (walk_file(local, &sink, &sink.base)) {
        result = PyBytes_FromStringAndSize(sink.text.data, sink.text.length);
    }
    free(sink.text.data);
    free(sink.frames);
    free((void *)sink.uri);
    return result != NULL ? result : road_left();
}

/* read_typed(local) -> (bytes, bytes, bytes) | None: the file's DICOM JSON (what read_json
 * gives), its typed row (what typed.typed_json(that JSON, None) gives) and its skeleton (what
 * typed.skeleton_json gives), from one walk. */
static PyObject *read_typed(PyObject *module, PyObject *local)
{
    if (typed_attributes == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastmeta.configure_typed() was not called");
        return NULL;
    }
    TypedSink sink;
    memset(&sink, 0, sizeof sink);
    sink.base.ops = &TYPED_OPS;
    sink.json.base.ops = &JSON_OPS;
    PyObject *result = NULL;
    if (grow_frames((void **)&sink.frames, &sink.capacity, 0, sizeof(TypedFrame)) == 0
        && PUT_LITERAL(&sink.row, "{") == 0 && PUT_LITERAL(&sink.skeleton, "{") == 0
        && walk_file(local, &sink.json, &sink.base)
        && (sink.frames[0].members == 0 || PUT_LITERAL(&sink.row, ",") == 0)
        && PUT_LITERAL(&sink.row, "\"OtherElements\":[") == 0
        && put(&sink.row, sink.other.data, sink.other.length) == 0
        && PUT_LITERAL(&sink.row, "]}") == 0 && PUT_LITERAL(&sink.skeleton, "}") == 0) {
        result = Py_BuildValue("(y#y#y#)", sink.json.text.data, sink.json.text.length,
                               sink.row.data, sink.row.length, sink.skeleton.data,
                               sink.skeleton.length);
    }
    free(sink.json.text.data);
    free(sink.json.frames);
    free((void *)sink.json.uri);
    typed_sink_close(&sink);
    return result != NULL ? result : road_left();
}

/* configure_typed(attributes, malformed, decimal_number, integer_number, max_depth): typed.py's
 * table of standard attributes, a list of (tag, keyword bytes, VRs text "US or SS", multiple,
 * column is text, sequence) in rising tag order, and its conversion helpers. */
static PyObject *configure_typed(PyObject *module, PyObject *args)
{
    PyObject *table, *malformed, *decimal, *integer_fn;
    int depth;
    if (!PyArg_ParseTuple(args, "O!OOOi", &PyList_Type, &table, &malformed, &decimal, &integer_fn,
                          &depth)) {
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(table);
    TypedAttribute *attributes = calloc((size_t)(count ? count : 1), sizeof(TypedAttribute));
    if (attributes == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *row = PyList_GET_ITEM(table, i);
        unsigned long tag;
        const char *keyword, *vrs;
        int multiple, column_string, sequence;
        if (!PyArg_ParseTuple(row, "kysppp", &tag, &keyword, &vrs, &multiple, &column_string,
                              &sequence)) {
            free(attributes);
            return NULL;
        }
        TypedAttribute *attribute = &attributes[i];
        attribute->tag = (uint32_t)tag;
        attribute->keyword = keyword; /* the bytes object lives in `table`, kept below */
        attribute->multiple = multiple;
        attribute->column_string = column_string;
        attribute->sequence = sequence;
        for (const char *c = vrs; *c && attribute->vr_count < 3;) {
            if (c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z'
                && (c[2] == '\0' || c[2] == ' ')) {
                attribute->vrs[attribute->vr_count][0] = c[0];
                attribute->vrs[attribute->vr_count][1] = c[1];
                attribute->vr_count++;
                c += 2;
            }
            else {
                c++;
            }
            while (*c == ' ') {
                c++;
            }
            if (c[0] == 'o' && c[1] == 'r') {
                c += 2;
            }
            while (*c == ' ') {
                c++;
            }
        }
        if (i > 0 && attributes[i - 1].tag >= attribute->tag) {
            free(attributes);
            PyErr_SetString(PyExc_ValueError, "attributes must come in rising tag order");
            return NULL;
        }
    }
    free(typed_attributes);
    typed_attributes = attributes;
    typed_attribute_count = count;
    Py_XSETREF(keyword_store, Py_NewRef(table));
    Py_XSETREF(malformed_error, Py_NewRef(malformed));
    Py_XSETREF(decimal_number, Py_NewRef(decimal));
    Py_XSETREF(integer_number, Py_NewRef(integer_fn));
    max_typed_depth = depth;
    Py_RETURN_NONE;
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
    {"read_typed", read_typed, METH_O,
     "read_typed(local) -> (json, typed row, skeleton) | None: read_json, its typed row and skeleton"},
    {"configure_typed", configure_typed, METH_VARARGS,
     "configure_typed(attributes, malformed, decimal_number, integer_number, max_depth)"},
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
