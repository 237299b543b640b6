"""The header walker: DICOM elements as events, into sinks.

One element walk reads a header and holds every value rule once — VR conversion (multi-value
splitting, DS/IS to numbers, PN component groups, AT, binary numbers), the character set, the
padding of each value (PS3.5 6.2), PS3.18 F.2.5 (no Value for an empty value, null for an
empty value among several), inline binary against a ``BulkDataURI`` byte range, group lengths
(PS3.5 7.2), the nesting limit, truncation, and what it leaves to the general reader — and
tells a **sink** what it found. Backends that emit the events:

- the compiled walk (``_fastmeta.c``, built at install time when a C compiler is present;
  :func:`is_available`, :data:`COMPILED`) with two sinks written in C: the DICOM JSON text
  (:func:`read_json`, the bytes of ``dicom_meta``) and the Python-object model
  (:func:`read_fast`, :func:`read_trailing`);
- its pure-Python twin below (:func:`walk`), the same steps where no compiler was present,
  into any sink: :class:`ObjectSink`, :class:`TextSink`, or yours;
- the general reader (``meta.py``): pydicom parses what the walk refuses (implicit VR, big
  endian, deflated data sets, UN values, other character sets, undefined-length values) and
  its elements are emitted as the same events (``meta.emit_dataset``).

They cover what most files are — a Part 10 file in explicit VR little endian (every compressed
transfer syntax is) with the default, Latin-1 or UTF-8 character set — and convert each value as
pydicom's ``Dataset.to_json_dict`` does, with F.2.5 applied (the conformance tests hold the
readers to pydicom and to DCMTK's ``dcm2json``).

**The sink protocol.** A sink is any object with these methods; an element is
``element(tag, vr)``, then at most one of ``values``, ``inline_binary``, ``bulk``, or its
sequence items, then ``element_end()``:

- ``element(tag: int, vr: str)`` — an element begins (tag as ``0xGGGGEEEE``);
- ``values(values: list)`` — its values, never empty (an empty element has no ``values``
  call): ``str``, ``int``, ``float``, ``None`` (an empty value among several), the strings
  ``"NaN"``/``"Infinity"``/``"-Infinity"`` for non-finite numbers, a person name as
  ``{"Alphabetic": …, "Ideographic": …, "Phonetic": …}`` (only the groups present);
- ``inline_binary(data: bytes)`` — a binary value short enough to inline;
- ``bulk(uri: str)`` — a value described by its byte range (``?offset=&length=``);
- ``item_begin()`` / ``item_end()`` — around each item of a sequence (``vr == "SQ"``), the
  item's elements in between;
- ``element_end()`` — the element ends.

Top-level elements come in file order (the file meta group, the data set, the pixel data
element, the elements after it); :class:`ObjectSink` sorts the top level as the DICOM JSON
model wants. The C sinks receive the same events with typed values (text as raw bytes in the
data set's character set, binary numbers as C numbers, a name's groups as byte ranges: see the
comment above ``walk()`` in ``_fastmeta.c``); a Python sink receives each element's values
collected in one ``values`` call. A **filter** is a sink that passes events on to another
sink, changed or not (a tag selection, de-identification): it can sit in front of any sink,
because every sink speaks the same events (:func:`meta.read_events`).
"""

from __future__ import annotations

import base64
import json
import math
import struct
import threading
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

import orjson

from pixels_sql.dicom.bulk import HUGE_VALUE_BYTES, INLINE_BINARY_MAX_BYTES, BulkUri
from pixels_sql.dicom.encoding import (
    BINARY_VRS,
    CHARSET_CODECS,
    IMPLICIT_OR_BIG_OR_DEFLATED,
    ITEM_DELIMITER_TAG,
    ITEM_TAG,
    LONG_LENGTH_VRS,
    MAX_SEQUENCE_DEPTH,
    PIXEL_DATA_TAGS,
    SEQUENCE_DELIMITER_TAG,
    SHORT_LENGTH_VRS,
    UNDEFINED_LENGTH,
)
from pixels_sql.errors import DicomReadError

try:
    from pixels_sql.dicom import _fastmeta
except ImportError:  # installed without a C compiler: the pure-Python loop below does the work
    _fastmeta = None

_UNPACK_ELEMENT = struct.Struct("<HH2sH").unpack_from  # tag, VR, 2-byte length (or reserved)
_UNPACK_I = struct.Struct("<I").unpack_from
_UNPACK_HHI = struct.Struct("<HHI").unpack_from

_SHORT_VRS = SHORT_LENGTH_VRS


class _VRNames(dict):
    """bytes VR -> str, decoded once per distinct VR."""

    def __missing__(self, key: bytes) -> str:
        value = self[key] = key.decode("ascii")
        return value


_VR_NAMES = _VRNames()
_NUMBER_FORMATS = {
    "US": "H",
    "SS": "h",
    "UL": "L",
    "SL": "l",
    "FL": "f",
    "FD": "d",
    "SV": "q",
    "UV": "Q",
}
_CHUNK = 1 << 16
_KEYS: dict[int, str] = {}


# Use the compiled element loop when it was built. Module-level so that tests and benchmarks can
# compare it with the pure-Python one.
COMPILED = True


def is_available() -> bool:
    """Whether the compiled element loop was built at install time."""
    return _fastmeta is not None


class Unsupported(Exception):
    """This file needs the general (pydicom) reader."""


# What makes the fast reader (either loop) leave a file to the general reader: values it cannot
# convert exactly, and a premature end of file, which the general reader describes.
_GENERAL_READER_CASES = (EOFError, Unsupported, ValueError, UnicodeDecodeError, struct.error)


class Sink(Protocol):
    """The events a backend emits (see the module docstring)."""

    def element(self, tag: int, vr: str) -> None: ...
    def values(self, values: list[Any]) -> None: ...
    def inline_binary(self, data: bytes) -> None: ...
    def bulk(self, uri: str) -> None: ...
    def item_begin(self) -> None: ...
    def item_end(self) -> None: ...
    def element_end(self) -> None: ...


def key_of(tag: int) -> str:
    """The DICOM JSON key of a tag: 8 upper-case hex digits (PS3.18 F.2.1)."""
    key = _KEYS.get(tag)
    if key is None:
        key = _KEYS[tag] = f"{tag:08X}"
    return key


class ObjectSink:
    """The DICOM JSON model as Python objects: ``{"GGGGEEEE": {"vr": …, "Value" | "InlineBinary"
    | "BulkDataURI": …}}`` (PS3.18 F.2), what the compiled walk's object sink builds too.

    ``model`` is filled in event order; :meth:`result` gives it sorted by tag at the top level
    (a repeated tag keeps its first position and its last value)."""

    __slots__ = ("_element", "_out", "_stack", "model")

    def __init__(self) -> None:
        self.model: dict[str, Any] = {}
        self._out = self.model
        self._stack: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self._element: dict[str, Any] = {}

    def element(self, tag: int, vr: str) -> None:
        # Stored at once and filled in place: a repeated tag keeps its first position.
        key = _KEYS.get(tag) or key_of(tag)
        self._out[key] = self._element = {"vr": vr}

    def values(self, values: list[Any]) -> None:
        self._element["Value"] = values

    def inline_binary(self, data: bytes) -> None:
        self._element["InlineBinary"] = base64.b64encode(data).decode("ascii")

    def bulk(self, uri: str) -> None:
        self._element["BulkDataURI"] = uri

    def item_begin(self) -> None:
        item: dict[str, Any] = {}
        self._element.setdefault("Value", []).append(item)
        self._stack.append((self._out, self._element))
        self._out = item

    def item_end(self) -> None:
        self._out, self._element = self._stack.pop()

    def element_end(self) -> None:
        pass

    def update(self, model: dict[str, Any]) -> None:
        """Top-level elements already in model form (what the compiled object sink built)."""
        self.model.update(model)

    def result(self) -> dict[str, Any]:
        return dict(sorted(self.model.items()))


class TextSink(ObjectSink):
    """The DICOM JSON text (UTF-8) of the events: byte for byte what the compiled walk's text
    sink writes, which is orjson's text of the object model (:func:`dumps`)."""

    __slots__ = ()

    def text(self) -> bytes:
        return dumps(self.result())


def emit_model(model: dict[str, Any], sink: Sink) -> None:
    """A model's elements as events into ``sink`` (for a sink fed from a model the compiled
    object sink built, or from a reader that ran twice: ``meta.read_events``)."""
    for key, element in model.items():
        sink.element(int(key, 16), element["vr"])
        if "InlineBinary" in element:
            sink.inline_binary(base64.b64decode(element["InlineBinary"]))
        elif "BulkDataURI" in element:
            sink.bulk(element["BulkDataURI"])
        elif "Value" in element:
            if element["vr"] == "SQ":
                for item in element["Value"]:
                    sink.item_begin()
                    emit_model(item, sink)
                    sink.item_end()
            else:
                sink.values(element["Value"])
        sink.element_end()


def dumps(model: dict[str, Any]) -> bytes:
    """Serialise a DICOM JSON model as UTF-8 JSON. The walks already spell NaN and infinities
    (legal in FL/FD/DS) as JSON strings (:func:`finite_or_text`)."""
    try:
        return orjson.dumps(model)
    except (TypeError, orjson.JSONEncodeError):
        # e.g. an integer beyond 64 bits: the standard library writes it
        text = json.dumps(_replace_non_finite(model), separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8")


def _replace_non_finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return finite_or_text(value)
    if isinstance(value, dict):
        return {key: _replace_non_finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_non_finite(item) for item in value]
    return value


class _Reader:
    """Elements from a file, through a window of bytes that slides forward on demand."""

    __slots__ = ("base", "buffer", "bulk_uri", "chunk", "fp", "local", "size")

    def __init__(self, local: str, fp: BinaryIO, size: int, bulk_uri: BulkUri) -> None:
        self.local, self.fp, self.size, self.bulk_uri = local, fp, size, bulk_uri
        self.base = 0
        self.buffer = b""
        # A file read by range requests (storage.RangedFile) fetches its own windows: asking
        # for less than a local read would make the next request cover only what is parsed.
        self.chunk = getattr(fp, "read_chunk", _CHUNK)

    def window(self, position: int, count: int) -> int:
        """Make ``count`` bytes at file ``position`` available; return their buffer index."""
        start = position - self.base
        if start >= 0 and start + count <= len(self.buffer):
            return start
        if position + count > self.size:
            raise EOFError
        self.fp.seek(position)
        self.buffer = self.fp.read(max(count, self.chunk))
        self.base = position
        return 0


def read_fast(
    local: str, fp: BinaryIO, size: int, bulk_uri: BulkUri, native: int | bytes | None = None
) -> tuple[dict[str, Any], int] | None:
    """(DICOM JSON model of the file meta and data set up to the pixel data, in file order;
    position after them), or None when the file needs the general reader.

    ``native``: what the compiled loop reads — the file's descriptor or its bytes in memory;
    without it (a member streamed from an archive) the Python loop reads ``fp``."""
    if size < 132:
        return None
    fp.seek(128)
    if fp.read(4) != b"DICM":
        return None
    try:
        if COMPILED and _fastmeta is not None and native is not None:
            return _fastmeta.read_elements(local, native, size, bulk_uri)
        sink = ObjectSink()
        position = walk(local, fp, size, bulk_uri, sink)
    except _GENERAL_READER_CASES:
        return None
    return None if position is None else (sink.model, position)


def walk(local: str, fp: BinaryIO, size: int, bulk_uri: BulkUri, sink: Sink) -> int | None:
    """The pure-Python walk of a Part 10 file's meta group and data set up to the pixel data
    into ``sink``; the position after them, or None when the transfer syntax is the general
    reader's. Raises what makes the file the general reader's (``Unsupported``, EOFError, ...)
    or :class:`DicomReadError` (truncated); ``sink`` may then hold part of the file."""
    reader = _Reader(local, fp, size, bulk_uri)
    # The file meta group first into a model of its own: the transfer syntax is read from it
    # as from the compiled walk's (``00020010``'s first value; a repeated element's last).
    meta = ObjectSink()
    position = _parse(reader, 132, None, meta, "latin_1", top=True, meta=True)
    syntax = meta.model.get("00020010", {}).get("Value", [""])[0]
    if not syntax or syntax in IMPLICIT_OR_BIG_OR_DEFLATED:
        return None
    if isinstance(sink, ObjectSink):
        sink.update(meta.model)
    else:
        emit_model(meta.model, sink)
    return _parse(reader, position, None, sink, "latin_1", top=True)


def read_json(local: str) -> bytes | None:
    """The DICOM JSON (UTF-8) of the local file ``local`` — what :class:`TextSink` writes of
    the object path's events, byte for byte — read in one compiled call into the C text sink;
    None when the compiled loop is not in use or the file leaves its common road (then the
    object path runs)."""
    if not COMPILED or _fastmeta is None:
        return None
    return _fastmeta.read_json(local)


def read_typed(local: str) -> tuple[bytes, bytes, bytes] | None:
    """:func:`read_json` and, from the same walk, the header's typed row and skeleton: what
    ``typed.typed_json(json, None)`` and ``typed.skeleton_json`` write of that JSON, byte for
    byte (the compiled typed sink; tests/test_typed_header.py holds them to each other). None
    when the compiled loop is not in use or the file leaves its common road: then the caller
    reads the file as :func:`read_json`'s callers do and types the model in Python."""
    if not COMPILED or _fastmeta is None:
        return None
    if not _typed_configured:
        _configure_typed()
    return _fastmeta.read_typed(local)


_typed_configured = False
# configure_typed replaces the C table a read in another thread may be using (it releases the
# GIL while it reads): the table is set once, under this lock.
_typed_lock = threading.Lock()


def _configure_typed() -> None:
    global _typed_configured
    from pixels_sql.dicom import typed

    with _typed_lock:
        if _typed_configured:
            return
        _fastmeta.configure_typed(
            typed.compiled_table(),
            typed.Malformed,
            typed.decimal_number,
            typed.integer_number,
            typed.MAX_TYPED_DEPTH,
        )
        _typed_configured = True


def read_trailing(
    local: str,
    fp: BinaryIO,
    size: int,
    position: int,
    codec: str,
    bulk_uri: BulkUri,
    native: int | bytes | None = None,
) -> dict[str, Any] | None:
    """DICOM JSON model of the elements from ``position`` (after the pixel data) to the end of
    the file, or None when they need the general reader (another pixel data element, a value
    it cannot convert, a truncated value: the general reader describes those)."""
    try:
        if COMPILED and _fastmeta is not None and native is not None:
            result, stop = _fastmeta.read_trailing_elements(
                local, native, size, position, codec, bulk_uri
            )
        else:
            sink = ObjectSink()
            reader = _Reader(local, fp, size, bulk_uri)
            stop = _parse(reader, position, None, sink, codec, top=True)
            result = sink.model
    except (*_GENERAL_READER_CASES, DicomReadError):
        return None
    return result if stop == size else None


def codec_of(meta: dict[str, Any]) -> str | None:
    """The Python codec of the top-level Specific Character Set of a data set read by
    :func:`read_fast` (None if it is not one of ``CHARSET_CODECS``)."""
    element = meta.get("00080005")
    if element is None:
        return "latin_1"
    return CHARSET_CODECS.get("\\".join(element.get("Value", [])).strip())


def _parse(
    reader: _Reader,
    position: int,
    end: int | None,
    sink: Sink,
    encoding: str,
    *,
    top: bool = False,
    meta: bool = False,
    depth: int = 0,
) -> int:
    """Walk elements from ``position`` until ``end`` (or an item delimiter, or the pixel data
    at the top level, or the end of group 0002 when ``meta``) into ``sink``; return the stop
    position."""
    size, local = reader.size, reader.local
    converters = _CONVERTERS
    short_vrs = _SHORT_VR_CONVERTERS
    limit = size if end is None else min(end, size)
    buffer, base = reader.buffer, reader.base
    available = len(buffer)
    element_event, values_event, end_event = sink.element, sink.values, sink.element_end
    # Step for step the compiled walk() (_fastmeta.c): the differential test holds them equal.
    while position < limit:
        at = position - base
        if at < 0 or at + 12 > available:
            if position + 8 > size:
                if end is None and top:
                    return position
                raise EOFError
            at = reader.window(position, 12 if position + 12 <= size else 8)
            buffer, base = reader.buffer, reader.base
            available = len(buffer)
        group, element, vr_bytes, length = _UNPACK_ELEMENT(buffer, at)
        tag = group << 16 | element
        if meta and group != 0x0002:
            return position
        short = short_vrs.get(vr_bytes)
        if short is not None:  # a 2-byte length (PS3.5 Table 7.1-2): text or numbers
            vr, converter = short
            value_at = position + 8
        else:
            if tag == ITEM_DELIMITER_TAG:
                return position + 8
            if top and tag in PIXEL_DATA_TAGS:
                return position
            if vr_bytes not in LONG_LENGTH_VRS:
                raise Unsupported(f"VR {vr_bytes!r}: implicit VR element, or a VR not handled")
            if position + 12 > size:
                raise EOFError
            (length,) = _UNPACK_I(buffer, at + 8)
            value_at = position + 12
            vr = _VR_NAMES[vr_bytes]
            if vr == "SQ":
                # A sequence coded as a group length is walked but no attribute (PS3.5 7.2).
                target = sink if element else _DISCARD
                target.element(tag, vr)
                position = _sequence(reader, value_at, length, target, encoding, depth + 1)
                target.element_end()
                buffer, base = reader.buffer, reader.base
                available = len(buffer)
                continue
            if length == UNDEFINED_LENGTH or vr == "UN":
                raise Unsupported(f"{vr} value of undefined length or unknown type")
            converter = None
        position = value_at + length
        if position > size:
            raise truncated_error(local, size, group, element, length, value_at)
        if element == 0:  # group length (PS3.5 7.2): describes the encoding, not the data
            continue
        if length == 0:
            # an empty character set in a long text VR still goes through _charset
            if short is None and tag == 0x00080005 and vr not in BINARY_VRS:
                encoding = _charset(b"", top)
            element_event(tag, vr)
            end_event()
            continue
        if short is None and vr in BINARY_VRS:
            element_event(tag, vr)
            if length > INLINE_BINARY_MAX_BYTES:
                sink.bulk(reader.bulk_uri(value_at, length))
            else:
                start = _slice_start(reader, value_at, length)
                buffer, base = reader.buffer, reader.base
                available = len(buffer)
                sink.inline_binary(buffer[start : start + length])
            end_event()
            continue
        if length > HUGE_VALUE_BYTES:
            element_event(tag, vr)
            sink.bulk(reader.bulk_uri(value_at, length))
            end_event()
            continue
        start = value_at - base
        if start + length > available:
            start = reader.window(value_at, length)
            buffer, base = reader.buffer, reader.base
            available = len(buffer)
        raw = buffer[start : start + length]
        if tag == 0x00080005:
            encoding = _charset(raw, top)
        values = (converter or converters[vr])(vr, raw, encoding)
        element_event(tag, vr)
        if values:
            values_event(values)
        end_event()
    if end is None and top:
        return position
    if position > size:
        raise EOFError
    return position


class _Discard:
    """A sink that keeps nothing."""

    __slots__ = ()

    def element(self, tag: int, vr: str) -> None:
        pass

    def values(self, values: list[Any]) -> None:
        pass

    def inline_binary(self, data: bytes) -> None:
        pass

    def bulk(self, uri: str) -> None:
        pass

    def item_begin(self) -> None:
        pass

    def item_end(self) -> None:
        pass

    def element_end(self) -> None:
        pass


_DISCARD = _Discard()


def truncated_error(
    local: str, size: int, group: int, element: int, length: int, value_at: int
) -> DicomReadError:
    return DicomReadError(
        local,
        "truncated",
        f"element ({group:04X},{element:04X}) declares {length} bytes at offset {value_at}"
        f" but the file has {size} bytes",
    )


def _slice_start(reader: _Reader, position: int, count: int) -> int:
    start = position - reader.base
    if start < 0 or start + count > len(reader.buffer):
        return reader.window(position, count)
    return start


def charset_codec(raw: bytes) -> str | None:
    """The codec the walks over a file's bytes decode its text with, from the value of its
    Specific Character Set (0008,0005) as the file holds it (b"" without one): one of
    :data:`CHARSET_CODECS`, or None for a character set they leave to the general reader."""
    return CHARSET_CODECS.get(_charset_text(raw))


def _charset_text(raw: bytes) -> str:
    return raw.decode("latin_1").rstrip(" \x00").strip()


def _charset(raw: bytes, top: bool) -> str:
    if not top:
        raise Unsupported("character set changed inside a sequence item")
    codec = charset_codec(raw)
    if codec is None:
        raise Unsupported(f"character set {_charset_text(raw)!r}")
    return codec


def _sequence(
    reader: _Reader,
    position: int,
    length: int,
    sink: Sink,
    encoding: str,
    depth: int,
) -> int:
    if depth > MAX_SEQUENCE_DEPTH:
        raise Unsupported("sequences nested too deep")
    end = None if length == UNDEFINED_LENGTH else position + length
    while end is None or position < end:
        at = reader.window(position, 8)
        group, element, item_length = _UNPACK_HHI(reader.buffer, at)
        tag = group << 16 | element
        position += 8
        if tag == SEQUENCE_DELIMITER_TAG:
            return position
        if tag != ITEM_TAG:
            raise Unsupported(f"({group:04X},{element:04X}) where a sequence item should be")
        sink.item_begin()
        item_end = None if item_length == UNDEFINED_LENGTH else position + item_length
        position = _parse(reader, position, item_end, sink, encoding, depth=depth)
        sink.item_end()
    return position


# The value rules. A converter turns a value's bytes into its list of values (empty: no Value).


def _values(parts: list[str]) -> list[str | None]:
    """Split values: none when there is one empty part; among several values, an empty one is
    null (PS3.18 F.2.5)."""
    if len(parts) == 1:
        return parts if parts[0] else []
    return [part or None for part in parts]


def _plain(vr: str, raw: bytes, encoding: str) -> list[str | None]:
    # AS, CS, DA, DT, TM, UI: ASCII; each value loses its trailing padding (PS3.5 6.2: not
    # significant), not only the last one as pydicom's multi_string does.
    return _values([part.rstrip(" \x00") for part in raw.decode("latin_1").split("\\")])


def _text(vr: str, raw: bytes, encoding: str) -> list[str | None]:
    # SH, LO, UC: each value loses its trailing padding (pydicom's convert_text).
    return _values([part.rstrip("\x00 ") for part in raw.decode(encoding).split("\\")])


def _single_text(vr: str, raw: bytes, encoding: str) -> list[str | None]:
    # ST, LT, UT: one value, backslashes included.
    return _values([raw.decode(encoding).rstrip("\x00 ")])


def _application_entity(vr: str, raw: bytes, encoding: str) -> list[str | None]:
    return _values([part.strip() for part in raw.decode("latin_1").split("\\")])


def _uri(vr: str, raw: bytes, encoding: str) -> list[str | None]:
    return _values([raw.decode("latin_1").rstrip()])


def _person_name(vr: str, raw: bytes, encoding: str) -> list[dict[str, str] | None]:
    text = raw.rstrip(b"\x00 ").decode(encoding)
    if not text:
        return []
    names: list[dict[str, str] | None] = []
    for name in text.split("\\"):
        if not name:
            names.append(None)  # PS3.18 F.2.5: an empty value among several is null
            continue
        components = name.split("=")
        entry = {"Alphabetic": components[0]}
        if len(components) > 1:
            entry["Ideographic"] = components[1]
        if len(components) > 2:
            entry["Phonetic"] = components[2]
        names.append(entry)
    return names


def _decimal(vr: str, raw: bytes, encoding: str) -> list[float | str | None]:
    parts = raw.decode("latin_1").strip().rstrip(" \x00").split("\\")
    if len(parts) == 1 and not parts[0]:
        return []
    return [_decimal_value(part) for part in parts]


def _integer_string(vr: str, raw: bytes, encoding: str) -> list[int | None]:
    parts = raw.decode("latin_1").strip().rstrip(" \x00").split("\\")
    if len(parts) == 1 and not parts[0]:
        return []
    # PS3.18 F.2.5: an empty value among several is null.
    return [_integer_value(part) if part.strip() else None for part in parts]


def _attribute_tags(vr: str, raw: bytes, encoding: str) -> list[str]:
    if len(raw) % 4:
        raise Unsupported("AT value length")
    pairs = struct.unpack(f"<{len(raw) // 2}H", raw)
    return [f"{pairs[i]:04X}{pairs[i + 1]:04X}" for i in range(0, len(pairs), 2)]


def _number_converter(code: str) -> Callable[[str, bytes, str], list[Any]]:
    single = struct.Struct("<" + code)  # standard sizes, not the platform's
    size = single.size
    floats = code in "fd"

    def convert(vr: str, raw: bytes, encoding: str) -> list[Any]:
        if len(raw) == size:  # the usual single value
            values: list[Any] = list(single.unpack(raw))
        elif len(raw) % size:
            raise Unsupported(f"{vr} value of {len(raw)} bytes")
        else:
            values = list(struct.unpack(f"<{len(raw) // size}{code}", raw))
        if floats:
            values = [finite_or_text(float(v)) for v in values]
        return values

    return convert


_CONVERTERS: dict[str, Callable[[str, bytes, str], list[Any]]] = {
    **{vr: _plain for vr in ("AS", "CS", "DA", "DT", "TM", "UI")},
    **{vr: _text for vr in ("SH", "LO", "UC")},
    **{vr: _single_text for vr in ("ST", "LT", "UT")},
    **{vr: _number_converter(code) for vr, code in _NUMBER_FORMATS.items()},
    "AE": _application_entity,
    "UR": _uri,
    "PN": _person_name,
    "DS": _decimal,
    "IS": _integer_string,
    "AT": _attribute_tags,
}


def _decimal_value(text: str) -> float | str | None:
    """One DS value; empty is null (PS3.18 F.2.5), a non-finite one its JSON spelling, one that
    is no number its text (:func:`_integer_value`)."""
    if not text.strip():
        return None
    try:
        return finite_or_text(float(text))
    except ValueError:
        return text.strip(" ")


def _integer_value(text: str) -> int | str:
    """One IS value, or its text without the spaces around it when it is no integer ("1.5",
    "1x"): DCMTK's dcm2json writes such a value as a JSON string, and one malformed value does
    not cost the file its header (the typed table lists it in header_issues)."""
    try:
        return _integer(text)
    except ValueError:
        return text.strip(" ")


def finite_or_text(value: float) -> float | str:
    """JSON has no NaN or infinities: they are written as the strings "NaN", "Infinity" and
    "-Infinity" (what the DICOM JSON serialisers of DCMTK and pydicom agree on)."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


# VRs whose values pydicom's multi_string leaves with their padding but the last one's.
_PADDED_VRS = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})


def decoded_values(vr: str, values: list[Any]) -> list[Any]:
    """The value rules for values another decoder made (the general reader's, pydicom's): each
    value of a padded VR without its trailing padding (PS3.5 6.2), an empty value among several
    null (PS3.18 F.2.5: ``""`` or a person name with no group), non-finite numbers spelled as
    JSON strings — what the walk's converters do to the bytes. Text comes out as ``str``
    (pydicom's UI values are a subclass of it), as the walk's own sinks give it."""
    if any(value.__class__ is not str and isinstance(value, str) for value in values):
        values = [str(value) if isinstance(value, str) else value for value in values]
    if len(values) > 1:
        padded = vr in _PADDED_VRS
        fixed: list[Any] = []
        for value in values:
            if isinstance(value, str):
                if padded:
                    value = value.rstrip(" \x00")
                fixed.append(value or None)
            elif isinstance(value, dict) and not any(value.values()):
                fixed.append(None)
            else:
                fixed.append(value)
        values = fixed
    if vr in ("FL", "FD", "DS"):
        values = [finite_or_text(value) if isinstance(value, float) else value for value in values]
    return values


def converter_of(vr: str) -> Callable[[str, bytes, str], list[Any]] | None:
    """The converter of a text or number VR (``converter(vr, raw_bytes, codec)`` -> values),
    or None."""
    return _CONVERTERS.get(vr)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        value = float(text)  # pydicom's IS accepts "1.0"; anything else goes to pydicom
        if not value.is_integer():
            raise
        return int(value)


# 2-byte-length VR -> (VR name, converter): one lookup per element in the common case.
_SHORT_VR_CONVERTERS = {
    vr: (vr.decode("ascii"), _CONVERTERS[vr.decode("ascii")]) for vr in _SHORT_VRS
}

if _fastmeta is not None:
    _fastmeta.configure(
        Unsupported,
        _charset,
        truncated_error,
        _CONVERTERS,
        IMPLICIT_OR_BIG_OR_DEFLATED,
        INLINE_BINARY_MAX_BYTES,
        HUGE_VALUE_BYTES,
        MAX_SEQUENCE_DEPTH,
    )
