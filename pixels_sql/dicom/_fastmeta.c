/*
 * The compiled twin of fastmeta.py's element loop: DICOM JSON straight from the element stream
 * of an explicit VR little endian Part 10 file.
 *
 * It follows fastmeta.py step for step and builds the same Python objects (the conformance and
 * differential tests hold the two to each other). Values whose exact Python conversion is
 * fiddly (AE, UR, AT, and DS/IS values with characters other than digits, signs, points,
 * exponents, spaces and NULs) are handed to fastmeta.py's converters, as is the Specific
 * Character Set. Conditions that make fastmeta.py give up raise the same exception types
 * (EOFError, fastmeta.Unsupported, ValueError, UnicodeDecodeError), and truncation raises the
 * DicomReadError that fastmeta.py builds.
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
static PyObject *converters;         /* VR name -> (vr, raw, encoding) -> dict */
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

/* {"vr": vr} */
static PyObject *empty_value(PyObject *vr)
{
    PyObject *out = PyDict_New();
    if (out != NULL && PyDict_SetItem(out, s_vr, vr) < 0) {
        Py_CLEAR(out);
    }
    return out;
}

/* {"vr": vr, key: value}; steals `value`. */
static PyObject *with_value(PyObject *vr, PyObject *key, PyObject *value)
{
    if (value == NULL) {
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (out == NULL || PyDict_SetItem(out, s_vr, vr) < 0 || PyDict_SetItem(out, key, value) < 0) {
        Py_XDECREF(out);
        Py_DECREF(value);
        return NULL;
    }
    Py_DECREF(value);
    return out;
}

/* fastmeta._values: no Value when there is one empty part; among several, an empty part is
 * null (PS3.18 F.2.5). Steals `parts`. */
static PyObject *values(PyObject *vr, PyObject *parts)
{
    if (parts == NULL) {
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(parts);
    if (count == 1 && PyUnicode_GET_LENGTH(PyList_GET_ITEM(parts, 0)) == 0) {
        Py_DECREF(parts);
        return empty_value(vr);
    }
    for (Py_ssize_t i = 0; count > 1 && i < count; i++) {
        if (PyUnicode_GET_LENGTH(PyList_GET_ITEM(parts, i)) == 0) {
            Py_INCREF(Py_None);
            PyList_SetItem(parts, i, Py_None); /* releases the empty string */
        }
    }
    return with_value(vr, s_value, parts);
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

/* Split raw at backslashes; each part trimmed of trailing spaces/NULs when `strip_parts`. */
static PyObject *split_parts(const unsigned char *raw, Py_ssize_t length, int encoding, int strip_parts)
{
    PyObject *parts = PyList_New(0);
    if (parts == NULL) {
        return NULL;
    }
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= length; i++) {
        if (i < length && raw[i] != '\\') {
            continue;
        }
        Py_ssize_t part_length = i - start;
        if (strip_parts) {
            part_length = rstrip_space_nul(raw + start, part_length);
        }
        PyObject *part = decode(raw + start, part_length, encoding);
        if (part == NULL || PyList_Append(parts, part) < 0) {
            Py_XDECREF(part);
            Py_DECREF(parts);
            return NULL;
        }
        Py_DECREF(part);
        start = i + 1;
    }
    return parts;
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

/* The values of a DS or IS value: strip spaces (and trailing NULs), split at backslashes,
 * float()/int() each part (a non-finite float as its JSON spelling), None for an empty part
 * among several (PS3.18 F.2.5). Each goes to take(context, value, index); 0 when the whole
 * value is empty (no Value), 1 when values were taken, -1 on error. */
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

static int append_number(void *parts, PyObject *number, Py_ssize_t index)
{
    (void)index;
    return PyList_Append((PyObject *)parts, number);
}

/* DS / IS as objects: {"vr": vr, "Value": [numbers]}, or no Value when empty. */
static PyObject *numbers_text(PyObject *vr, const unsigned char *raw, Py_ssize_t length, int is_integer)
{
    PyObject *parts = PyList_New(0);
    if (parts == NULL) {
        return NULL;
    }
    int found = each_number(raw, length, is_integer, append_number, parts);
    if (found <= 0) {
        Py_DECREF(parts);
        return found < 0 ? NULL : empty_value(vr);
    }
    return with_value(vr, s_value, parts);
}

static PyObject *person_name(PyObject *vr, const unsigned char *raw, Py_ssize_t length, int encoding)
{
    length = rstrip_space_nul(raw, length);
    if (length == 0) {
        return empty_value(vr);
    }
    PyObject *text = decode(raw, length, encoding);
    if (text == NULL) {
        return NULL;
    }
    PyObject *names = PyUnicode_Split(text, s_backslash, -1);
    Py_DECREF(text);
    if (names == NULL) {
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        Py_DECREF(names);
        return NULL;
    }
    static PyObject **component_keys[3] = {&s_alphabetic, &s_ideographic, &s_phonetic};
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++) {
        if (PyUnicode_GET_LENGTH(PyList_GET_ITEM(names, i)) == 0) {
            /* an empty value among several: null (PS3.18 F.2.5) */
            if (PyList_Append(out, Py_None) < 0) {
                Py_DECREF(names);
                Py_DECREF(out);
                return NULL;
            }
            continue;
        }
        PyObject *components = PyUnicode_Split(PyList_GET_ITEM(names, i), s_equals, -1);
        PyObject *entry = components == NULL ? NULL : PyDict_New();
        int failed = entry == NULL;
        for (Py_ssize_t c = 0; !failed && c < 3 && c < PyList_GET_SIZE(components); c++) {
            failed = PyDict_SetItem(entry, *component_keys[c], PyList_GET_ITEM(components, c)) < 0;
        }
        Py_XDECREF(components);
        if (failed || PyList_Append(out, entry) < 0) {
            Py_XDECREF(entry);
            Py_DECREF(names);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(entry);
    }
    Py_DECREF(names);
    return with_value(vr, s_value, out);
}

static uint64_t little_endian(const unsigned char *raw, int size)
{
    uint64_t value = 0;
    for (int i = size - 1; i >= 0; i--) {
        value = value << 8 | raw[i];
    }
    return value;
}

static PyObject *numbers(const VRInfo *info, const unsigned char *raw, Py_ssize_t length)
{
    int size = info->number_size;
    if (length % size) {
        PyErr_Format(unsupported_error, "%U value of %zd bytes", info->name, length);
        return NULL;
    }
    Py_ssize_t count = length / size;
    PyObject *list = PyList_New(count);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t bits = little_endian(raw + i * size, size);
        PyObject *number;
        if (info->number_type == 'f') {
            if (size == 4) {
                uint32_t narrow = (uint32_t)bits;
                float f;
                memcpy(&f, &narrow, 4);
                number = finite_or_text(PyFloat_FromDouble((double)f));
            }
            else {
                double d;
                memcpy(&d, &bits, 8);
                number = finite_or_text(PyFloat_FromDouble(d));
            }
        }
        else if (info->number_type == 's') {
            int64_t signed_value;
            if (size == 2) {
                signed_value = (int16_t)bits;
            }
            else if (size == 4) {
                signed_value = (int32_t)bits;
            }
            else {
                signed_value = (int64_t)bits;
            }
            number = PyLong_FromLongLong(signed_value);
        }
        else {
            number = PyLong_FromUnsignedLongLong(bits);
        }
        if (number == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, number);
    }
    return with_value(info->name, s_value, list);
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

static PyObject *convert(const VRInfo *info, const unsigned char *raw, Py_ssize_t length, int encoding)
{
    switch (info->kind) {
    case K_PLAIN:
        /* each value loses its trailing padding (PS3.5 6.2), as fastmeta._plain */
        return values(info->name, split_parts(raw, length, LATIN_1, 1));
    case K_TEXT:
        return values(info->name, split_parts(raw, length, encoding, 1));
    case K_SINGLE: {
        PyObject *text = decode(raw, rstrip_space_nul(raw, length), encoding);
        if (text == NULL) {
            return NULL;
        }
        if (PyUnicode_GET_LENGTH(text) == 0) {
            Py_DECREF(text);
            return empty_value(info->name);
        }
        PyObject *list = PyList_New(1);
        if (list == NULL) {
            Py_DECREF(text);
            return NULL;
        }
        PyList_SET_ITEM(list, 0, text);
        return with_value(info->name, s_value, list);
    }
    case K_PN:
        return person_name(info->name, raw, length, encoding);
    case K_DS:
    case K_IS:
        if (!plain_number_text(raw, length)) {
            return delegate(info->name, raw, length, encoding);
        }
        return numbers_text(info->name, raw, length, info->kind == K_IS);
    case K_NUMBER:
        return numbers(info, raw, length);
    default:
        return delegate(info->name, raw, length, encoding);
    }
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

/* out[key_of(tag)] = value; steals `value`. */
static int store(PyObject *out, uint32_t tag, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    PyObject *key = key_of(tag);
    int result = key == NULL ? -1 : PyDict_SetItem(out, key, value);
    Py_XDECREF(key);
    Py_DECREF(value);
    return result;
}

static int bulk(Reader *reader, PyObject *out, uint32_t tag, PyObject *vr, long long at, long long length)
{
    PyObject *uri = PyObject_CallFunction(reader->bulk_uri, "LL", at, length);
    return store(out, tag, with_value(vr, s_bulk_data_uri, uri));
}

/* A text or number value: read it, follow a Specific Character Set, convert and store it
 * (an empty value as {"vr": vr}, after the character set check, as fastmeta._parse does). */
static int store_value(Reader *reader, PyObject *out, uint32_t tag, const VRInfo *info,
                       long long value_at, long long length, int top, int *encoding)
{
    const unsigned char *raw = window(reader, value_at, length);
    if (raw == NULL) {
        return -1;
    }
    if (tag == SPECIFIC_CHARACTER_SET_TAG) {
        *encoding = charset(raw, length, top);
        if (*encoding < 0) {
            return -1;
        }
    }
    PyObject *value = length == 0 ? empty_value(info->name) : convert(info, raw, length, *encoding);
    return store(out, tag, value);
}

/* The first step of parse() and json_parse(): the element header at `position` (its first 12
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

/* A sequence item's header at `position` (sequence() and json_sequence()): 0 with its tag and
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

static int sequence(Reader *reader, long long position, uint32_t length, PyObject *items,
                    int encoding, int depth, long long *stop);

/* fastmeta._parse: elements from `position` until `end` (< 0: none), an item delimiter, the
 * pixel data at the top level, or the end of group 0002 when `meta`; the stop in *stop. */
static int parse(Reader *reader, long long position, long long end, PyObject *out, int encoding,
                 int top, int meta, int depth, long long *stop)
{
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
        if (info != NULL && info->is_short) {
            long long length = p[6] | p[7] << 8;
            long long value_at = position + 8;
            position = value_at + length;
            if (position > size) {
                return raise_truncated(reader, group, element, length, value_at);
            }
            if (element == 0) { /* group length (PS3.5 7.2) */
                continue;
            }
            if (length == 0) {
                if (store(out, tag, empty_value(info->name)) < 0) {
                    return -1;
                }
                continue;
            }
            if (store_value(reader, out, tag, info, value_at, length, top, &encoding) < 0) {
                return -1;
            }
            continue;
        }
        uint32_t length;
        found = long_head(reader, p, position, tag, info, top, &length, stop);
        if (found <= 0) {
            return found;
        }
        long long value_at = position + 12;
        if (info->kind == K_SQ) {
            PyObject *items = PyList_New(0);
            if (items == NULL) {
                return -1;
            }
            if (sequence(reader, value_at, length, items, encoding, depth + 1, &position) < 0) {
                Py_DECREF(items);
                return -1;
            }
            if (element == 0) {
                Py_DECREF(items);
                continue;
            }
            /* An empty sequence is an empty attribute: no Value (PS3.18 F.2.5). */
            PyObject *sequence_json;
            if (PyList_GET_SIZE(items) == 0) {
                Py_DECREF(items);
                sequence_json = empty_value(info->name);
            }
            else {
                sequence_json = with_value(info->name, s_value, items);
            }
            if (store(out, tag, sequence_json) < 0) {
                return -1;
            }
            continue;
        }
        if (length == UNDEFINED_LENGTH || info->kind == K_UN) {
            raise_unsupported("value of undefined length or unknown type");
            return -1;
        }
        position = value_at + length;
        if (position > size) {
            return raise_truncated(reader, group, element, length, value_at);
        }
        if (element == 0) {
            continue;
        }
        if (info->kind == K_BINARY) {
            int result;
            if (length == 0) {
                result = store(out, tag, empty_value(info->name));
            }
            else if (length > inline_binary_max) {
                result = bulk(reader, out, tag, info->name, value_at, length);
            }
            else {
                const unsigned char *raw = window(reader, value_at, length);
                if (raw == NULL) {
                    return -1;
                }
                result = store(out, tag, with_value(info->name, s_inline_binary, base64_text(raw, length)));
            }
            if (result < 0) {
                return -1;
            }
            continue;
        }
        if (length > huge_value) {
            if (bulk(reader, out, tag, info->name, value_at, length) < 0) {
                return -1;
            }
            continue;
        }
        if (store_value(reader, out, tag, info, value_at, length, top, &encoding) < 0) {
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

static int sequence(Reader *reader, long long position, uint32_t length, PyObject *items,
                    int encoding, int depth, long long *stop)
{
    if (depth > max_depth) {
        raise_unsupported("sequences nested too deep");
        return -1;
    }
    long long end = length == UNDEFINED_LENGTH ? -1 : position + length;
    while (end < 0 || position < end) {
        uint32_t tag, item_length;
        if (item_head(reader, position, &tag, &item_length) < 0) {
            return -1;
        }
        position += 8;
        if (tag == SEQUENCE_DELIMITER_TAG) {
            *stop = position;
            return 0;
        }
        PyObject *item = PyDict_New();
        if (item == NULL) {
            return -1;
        }
        long long item_end = item_length == UNDEFINED_LENGTH ? -1 : position + item_length;
        if (parse(reader, position, item_end, item, encoding, 0, 0, depth, &position) < 0
            || PyList_Append(items, item) < 0) {
            Py_DECREF(item);
            return -1;
        }
        Py_DECREF(item);
    }
    *stop = position;
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

/* fastmeta.read_fast after the preamble check: the file meta group, the transfer syntax check,
 * then the data set. */
static PyObject *read_elements(PyObject *module, PyObject *args)
{
    Reader reader = {0};
    PyObject *source;
    if (!PyArg_ParseTuple(args, "OOLO", &reader.local, &source, &reader.size, &reader.bulk_uri)) {
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
    long long position;
    if (parse(&reader, 132, -1, out, LATIN_1, 1, 1, 0, &position) < 0) {
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
    if (parse(&reader, position, -1, out, LATIN_1, 1, 0, 0, &position) < 0) {
        goto done;
    }
    result = Py_BuildValue("OL", out, position);
done:
    Py_DECREF(out);
    close_source(&reader);
    return result;
}

/* fastmeta.read_trailing: the elements after the pixel data, to the end of the file or the
 * next pixel data element. */
static PyObject *read_trailing_elements(PyObject *module, PyObject *args)
{
    Reader reader = {0};
    long long position;
    PyObject *codec;
    PyObject *source;
    if (!PyArg_ParseTuple(args, "OOLLOO", &reader.local, &source, &reader.size, &position,
                          &codec, &reader.bulk_uri)) {
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
    if (parse(&reader, position, -1, out, encoding, 1, 0, 0, &position) == 0) {
        result = Py_BuildValue("OL", out, position);
    }
    Py_DECREF(out);
    close_source(&reader);
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * read_json(): the whole file in one call, written as JSON text.
 *
 * The object path above builds a dict per element, then meta.py finds the pixel data, reads the
 * elements after it, sorts the keys and orjson writes the text: ~60 us a file, five times the
 * element loop's own work. This path opens the file, walks the same elements with the same
 * conversions and writes the text that orjson would write of the object path's result, byte for
 * byte (a test holds the two to each other over the corpus and damaged copies of it).
 *
 * It takes only the common road. Anything else — an element out of tag order (the object path
 * sorts, or keeps the first position of a repeated tag), an integer beyond 64 bits (orjson
 * refuses it), an implicit VR pixel data element, a path whose URI needs normalising,
 * any error — returns None, and the caller runs the object path, which decides and describes.
 * ------------------------------------------------------------------------------------------- */

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

/* What a converter of the object path built (fastmeta.py's, or the C ones above): None, str,
 * int, finite float, list, dict with str keys — written as orjson writes it. Anything else (an
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

/* An element a converter of the object path built (NULL: its error), written; `element` is
 * released. */
static int put_converted(Text *text, PyObject *element)
{
    if (element == NULL) {
        return -1;
    }
    int result = put_object(text, element, 0);
    Py_DECREF(element);
    return result;
}

/* {"vr":"XX" — the start of every element's object. */
static int put_vr(Text *text, const VRInfo *info)
{
    if (reserve(text, 12) < 0) {
        return -1;
    }
    char *out = text->data + text->length;
    memcpy(out, "{\"vr\":\"", 7);
    out[7] = info->code[0];
    out[8] = info->code[1];
    out[9] = '"';
    text->length += 10;
    return 0;
}

static int put_empty(Text *text, const VRInfo *info)
{
    return put_vr(text, info) < 0 ? -1 : PUT_LITERAL(text, "}");
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

typedef struct {
    Reader reader;
    Text text;
    const char *uri; /* the file's URI: the base of its BulkDataURIs */
    Py_ssize_t uri_length;
    char syntax[72]; /* the Transfer Syntax UID's first value */
    int syntax_length;
} JsonFile;

/* {"vr":"XX","BulkDataURI":"<uri>?offset=N&length=M"} (bulk.bulk_uri_factory) */
static int put_bulk(JsonFile *file, const VRInfo *info, long long at, long long length)
{
    Text *text = &file->text;
    /* The URI is percent-encoded (no quote, backslash or control character to escape). */
    if (put_vr(text, info) < 0 || PUT_LITERAL(text, ",\"BulkDataURI\":\"") < 0
        || put(text, file->uri, file->uri_length) < 0 || PUT_LITERAL(text, "?offset=") < 0
        || put_unsigned(text, (unsigned long long)at) < 0 || PUT_LITERAL(text, "&length=") < 0
        || put_unsigned(text, (unsigned long long)length) < 0) {
        return -1;
    }
    return PUT_LITERAL(text, "\"}");
}

/* fastmeta._plain / _text: parts split at backslashes, each without trailing spaces/NULs; one
 * empty part is no Value, an empty part among several null (PS3.18 F.2.5). */
static int put_parts(Text *text, const VRInfo *info, const unsigned char *raw, Py_ssize_t length,
                     int encoding)
{
    int several = memchr(raw, '\\', (size_t)length) != NULL;
    if (!several && rstrip_space_nul(raw, length) == 0) {
        return put_empty(text, info);
    }
    if (put_vr(text, info) < 0 || PUT_LITERAL(text, ",\"Value\":[") < 0) {
        return -1;
    }
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= length; i++) {
        if (i < length && raw[i] != '\\') {
            continue;
        }
        if (start > 0 && PUT_LITERAL(text, ",") < 0) {
            return -1;
        }
        Py_ssize_t part_length = rstrip_space_nul(raw + start, i - start);
        int failed = part_length == 0 ? PUT_LITERAL(text, "null")
                                      : put_string(text, raw + start, part_length, encoding);
        if (failed < 0) {
            return -1;
        }
        start = i + 1;
    }
    return PUT_LITERAL(text, "]}");
}

/* DS / IS (numbers_text above), written: the same values, each written as it is made. */
typedef struct {
    Text *text;
    const VRInfo *info;
} NumberWriter;

static int write_number(void *context, PyObject *number, Py_ssize_t index)
{
    NumberWriter *writer = context;
    int opened = index == 0 ? put_vr(writer->text, writer->info) < 0
                                  || PUT_LITERAL(writer->text, ",\"Value\":[") < 0
                            : PUT_LITERAL(writer->text, ",") < 0;
    return opened ? -1 : put_object(writer->text, number, 0);
}

static int put_numbers_text(Text *text, const VRInfo *info, const unsigned char *raw,
                            Py_ssize_t length, int is_integer)
{
    NumberWriter writer = {text, info};
    int found = each_number(raw, length, is_integer, write_number, &writer);
    if (found < 0) {
        return -1;
    }
    return found == 0 ? put_empty(text, info) : PUT_LITERAL(text, "]}");
}

/* US SS UL SL FL FD SV UV (numbers above), written. */
static int put_binary_numbers(Text *text, const VRInfo *info, const unsigned char *raw,
                              Py_ssize_t length)
{
    int size = info->number_size;
    if (length % size) {
        PyErr_Format(unsupported_error, "%U value of %zd bytes", info->name, length);
        return -1;
    }
    if (put_vr(text, info) < 0 || PUT_LITERAL(text, ",\"Value\":[") < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < length / size; i++) {
        uint64_t bits = little_endian(raw + i * size, size);
        if (i > 0 && PUT_LITERAL(text, ",") < 0) {
            return -1;
        }
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
            failed = put_double(text, d);
        }
        else if (info->number_type == 's') {
            long long value = size == 2 ? (int16_t)bits : size == 4 ? (int32_t)bits : (int64_t)bits;
            failed = put_signed(text, value);
        }
        else {
            failed = put_unsigned(text, bits);
        }
        if (failed < 0) {
            return -1;
        }
    }
    return PUT_LITERAL(text, "]}");
}

/* convert() above, written: the text and binary number VRs (most of a header's elements) are
 * written directly; names, decimal and integer strings and the values fastmeta.py converts are
 * built as objects by convert() and those written. */
static int put_value(Text *text, const VRInfo *info, const unsigned char *raw, Py_ssize_t length,
                     int encoding)
{
    switch (info->kind) {
    case K_PLAIN:
        return put_parts(text, info, raw, length, LATIN_1);
    case K_TEXT:
        return put_parts(text, info, raw, length, encoding);
    case K_SINGLE: {
        Py_ssize_t kept = rstrip_space_nul(raw, length);
        if (kept == 0) {
            return put_empty(text, info);
        }
        if (put_vr(text, info) < 0 || PUT_LITERAL(text, ",\"Value\":[") < 0
            || put_string(text, raw, kept, encoding) < 0) {
            return -1;
        }
        return PUT_LITERAL(text, "]}");
    }
    case K_DS:
    case K_IS:
        if (plain_number_text(raw, length)) {
            return put_numbers_text(text, info, raw, length, info->kind == K_IS);
        }
        return put_converted(text, convert(info, raw, length, encoding));
    case K_NUMBER:
        return put_binary_numbers(text, info, raw, length);
    default:
        return put_converted(text, convert(info, raw, length, encoding));
    }
}

/* One JSON object's members so far: keys must come in rising tag order here. */
typedef struct {
    int count;
    uint32_t last;
} Members;

/* ,"GGGGEEEE": */
static int put_key(Text *text, Members *members, uint32_t tag)
{
    if (members->count > 0 && tag <= members->last) {
        raise_unsupported("elements out of tag order");
        return -1;
    }
    if (reserve(text, 12) < 0) {
        return -1;
    }
    static const char HEX[] = "0123456789ABCDEF";
    char *out = text->data + text->length;
    if (members->count > 0) {
        *out++ = ',';
    }
    *out++ = '"';
    uint32_t digits = tag;
    for (int i = 7; i >= 0; i--) {
        out[i] = HEX[digits & 15];
        digits >>= 4;
    }
    out += 8;
    *out++ = '"';
    *out++ = ':';
    text->length = out - text->data;
    members->count++;
    members->last = tag;
    return 0;
}

static int json_sequence(JsonFile *file, long long position, uint32_t length, int encoding,
                         int depth, long long *stop);

/* parse() above, written: elements from `position` until `end` (< 0: none), an item delimiter,
 * the pixel data at the top level, or the end of group 0002 when `meta`. */
static int json_parse(JsonFile *file, long long position, long long end, Members *members,
                      int *encoding, int top, int meta, int depth, long long *stop)
{
    Reader *reader = &file->reader;
    Text *text = &file->text;
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
                if (element == 0) {
                    raise_unsupported("a sequence as group length");
                    return -1;
                }
                if (put_key(text, members, tag) < 0) {
                    return -1;
                }
                Py_ssize_t mark = text->length;
                if (put_vr(text, info) < 0 || PUT_LITERAL(text, ",\"Value\":[") < 0) {
                    return -1;
                }
                Py_ssize_t items_at = text->length;
                if (json_sequence(file, value_at, (uint32_t)length, *encoding, depth + 1,
                                  &position) < 0) {
                    return -1;
                }
                if (text->length == items_at) { /* no items: no Value (PS3.18 F.2.5) */
                    text->length = mark;
                    if (put_empty(text, info) < 0) {
                        return -1;
                    }
                }
                else if (PUT_LITERAL(text, "]}") < 0) {
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
        if (element == 0) { /* group length (PS3.5 7.2) */
            continue;
        }
        if (put_key(text, members, tag) < 0) {
            return -1;
        }
        if (length == 0) {
            /* parse() asks charset() about an empty long-VR character set (store_value) */
            if (!info->is_short && info->kind != K_BINARY && tag == SPECIFIC_CHARACTER_SET_TAG) {
                *encoding = charset((const unsigned char *)"", 0, top);
                if (*encoding < 0) {
                    return -1;
                }
            }
            if (put_empty(text, info) < 0) {
                return -1;
            }
            continue;
        }
        int failed;
        if (info->kind == K_BINARY) {
            if (length > inline_binary_max) {
                failed = put_bulk(file, info, value_at, length);
            }
            else {
                const unsigned char *raw = window(reader, value_at, length);
                failed = raw == NULL || put_vr(text, info) < 0
                         || PUT_LITERAL(text, ",\"InlineBinary\":") < 0
                         || put_base64(text, raw, length) < 0 || PUT_LITERAL(text, "}") < 0;
            }
        }
        else if (!info->is_short && length > huge_value) {
            failed = put_bulk(file, info, value_at, length);
        }
        else {
            const unsigned char *raw = window(reader, value_at, length);
            if (raw == NULL) {
                return -1;
            }
            if (tag == SPECIFIC_CHARACTER_SET_TAG) {
                if (info->kind != K_PLAIN) {
                    /* CS mis-encoded (as a number, a name...): meta.py's codec_of cannot read
                     * it back, and the object path says what that makes of the file */
                    raise_unsupported("character set with another VR");
                    return -1;
                }
                *encoding = charset(raw, length, top);
                if (*encoding < 0) {
                    return -1;
                }
            }
            else if (meta && tag == 0x00020010u) { /* read_fast: the first value, stripped */
                const unsigned char *slash = memchr(raw, '\\', (size_t)length);
                Py_ssize_t first = rstrip_space_nul(raw, slash == NULL ? length : slash - raw);
                if (info->kind != K_PLAIN || first == 0
                    || first >= (Py_ssize_t)sizeof file->syntax) {
                    raise_unsupported("transfer syntax");
                    return -1;
                }
                memcpy(file->syntax, raw, (size_t)first);
                file->syntax[first] = '\0';
                file->syntax_length = (int)first;
            }
            failed = put_value(text, info, raw, length, *encoding);
        }
        if (failed) {
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

static int json_sequence(JsonFile *file, long long position, uint32_t length, int encoding,
                         int depth, long long *stop)
{
    if (depth > max_depth) {
        raise_unsupported("sequences nested too deep");
        return -1;
    }
    Text *text = &file->text;
    long long end = length == UNDEFINED_LENGTH ? -1 : position + length;
    int items = 0;
    while (end < 0 || position < end) {
        uint32_t tag, item_length;
        if (item_head(&file->reader, position, &tag, &item_length) < 0) {
            return -1;
        }
        position += 8;
        if (tag == SEQUENCE_DELIMITER_TAG) {
            *stop = position;
            return 0;
        }
        if ((items++ > 0 && PUT_LITERAL(text, ",") < 0) || PUT_LITERAL(text, "{") < 0) {
            return -1;
        }
        Members members = {0, 0};
        int item_encoding = encoding;
        long long item_end = item_length == UNDEFINED_LENGTH ? -1 : position + item_length;
        if (json_parse(file, position, item_end, &members, &item_encoding, 0, 0, depth,
                       &position) < 0
            || PUT_LITERAL(text, "}") < 0) {
            return -1;
        }
    }
    *stop = position;
    return 0;
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

/* meta._pixels_and_after, written: the pixel data element at `position` described by its
 * byte range (its value never read), then the elements after it to the end of the file. */
static int json_pixels_and_after(JsonFile *file, long long position, Members *members,
                                 int *encoding)
{
    Reader *reader = &file->reader;
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
    Text *text = &file->text;
    if (put_key(text, members, tag) < 0) {
        return -1;
    }
    int failed;
    if (length == 0) {
        failed = put_empty(text, info);
    }
    else if (length > inline_binary_max) {
        failed = put_bulk(file, info, offset, length);
    }
    else {
        const unsigned char *raw = window(reader, offset, length);
        failed = raw == NULL || put_vr(text, info) < 0
                 || PUT_LITERAL(text, ",\"InlineBinary\":") < 0 || put_base64(text, raw, length) < 0
                 || PUT_LITERAL(text, "}") < 0;
    }
    if (failed) {
        return -1;
    }
    if (after < size) { /* e.g. Data Set Trailing Padding (PS3.10 7.2), to the end */
        long long stop;
        if (json_parse(file, after, -1, members, encoding, 1, 0, 0, &stop) < 0) {
            return -1;
        }
        if (stop != size) {
            raise_unsupported("elements after the pixel data the object path describes");
            return -1;
        }
    }
    return 0;
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
    JsonFile file;
    memset(&file, 0, sizeof file);
    file.reader.local = local;
    file.reader.fd = -1;
    file.reader.first_chunk = FIRST_CHUNK;
    PyObject *encoded = NULL;
    char *uri = NULL;
    PyObject *result = NULL;
    Py_ssize_t utf8_length;
    const char *utf8 = PyUnicode_AsUTF8AndSize(local, &utf8_length);
    if (utf8 == NULL) {
        goto done;
    }
    uri = file_uri(utf8, utf8_length, &file.uri_length);
    if (uri == NULL) {
        goto done;
    }
    file.uri = uri;
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
    file.reader.fd = fd;
    if (status.st_size < 132) {
        goto done;
    }
    file.reader.size = status.st_size;
    const unsigned char *magic = window(&file.reader, 128, 4);
    if (magic == NULL || memcmp(magic, "DICM", 4) != 0) {
        goto done;
    }
    Members members = {0, 0};
    int encoding = LATIN_1;
    long long position;
    if (PUT_LITERAL(&file.text, "{") < 0
        || json_parse(&file, 132, -1, &members, &encoding, 1, 1, 0, &position) < 0) {
        goto done;
    }
    if (file.syntax_length == 0) {
        goto done; /* no transfer syntax: the general reader's case */
    }
    int excluded = syntax_excluded(file.syntax);
    if (excluded != 0) {
        goto done;
    }
    encoding = LATIN_1; /* fastmeta.read_fast: the data set starts with the default again */
    if (json_parse(&file, position, -1, &members, &encoding, 1, 0, 0, &position) < 0
        || json_pixels_and_after(&file, position, &members, &encoding) < 0) {
        goto done;
    }
    if (members.count == 0 || PUT_LITERAL(&file.text, "}") < 0) {
        goto done; /* no elements: not_dicom, said by the object path */
    }
    result = PyBytes_FromStringAndSize(file.text.data, file.text.length);
done:
    if (file.reader.fd >= 0) {
        close(file.reader.fd);
    }
    free(file.reader.buffer);
    free(file.text.data);
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
