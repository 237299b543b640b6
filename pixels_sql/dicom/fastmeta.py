"""A fast header reader: DICOM JSON straight from the element stream, without pydicom objects.

It covers what most files are — a Part 10 file in explicit VR little endian (every compressed
transfer syntax is), with the default, Latin-1 or UTF-8 character set — and converts each value
exactly as pydicom's ``Dataset.to_json_dict`` does (the conformance test holds both to it).
Anything else returns None and the caller uses the pydicom-based reader: implicit VR or big
endian files, deflated data sets, UN values (pydicom re-types them from its dictionary),
ISO 2022 or other character sets, undefined-length non-sequence values, values it cannot
parse the way pydicom would.

The element loop also exists compiled (``_fastmeta.c``, built at install time when a C compiler
is present): same steps, same objects, ~2.8x faster per file. :func:`is_available` says
whether it was built; :data:`COMPILED` chooses it. The compiled module also writes a whole
local file's JSON text in one call (:func:`read_json`): the same conversions written as text
instead of built as objects, for files on the common road.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

from pixels_sql.dicom.bulk import HUGE_VALUE_BYTES, INLINE_BINARY_MAX_BYTES, BulkUri
from pixels_sql.dicom.encoding import (
    BINARY_VRS,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
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
_IMPLICIT_OR_BIG_OR_DEFLATED = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.2", DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}
)
# Specific Character Set values handled here, as Python codecs (PS3.3 C.12.1.1.2).
_CHARSETS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
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


class _Reader:
    """Elements from a file, through a window of bytes that slides forward on demand."""

    __slots__ = ("base", "buffer", "chunk", "fp", "local", "size")

    def __init__(self, local: str, fp: BinaryIO, size: int) -> None:
        self.local, self.fp, self.size = local, fp, size
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
    """(DICOM JSON of the file meta and data set up to the pixel data, position after them),
    or None when the file needs the general reader.

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
        reader = _Reader(local, fp, size)
        result: dict[str, Any] = {}
        position = _parse(reader, 132, None, result, "latin_1", bulk_uri, top=True, meta=True)
        syntax = result.get("00020010", {}).get("Value", [""])[0]
        if not syntax or syntax in _IMPLICIT_OR_BIG_OR_DEFLATED:
            return None
        position = _parse(reader, position, None, result, "latin_1", bulk_uri, top=True)
    except _GENERAL_READER_CASES:
        return None
    return result, position


def read_json(local: str) -> bytes | None:
    """The DICOM JSON (UTF-8) of the local file ``local`` — what ``meta.dumps`` writes of the
    object path's result, byte for byte — read in one compiled call; None when the compiled
    loop is not in use or the file leaves its common road (then the object path runs)."""
    if not COMPILED or _fastmeta is None:
        return None
    return _fastmeta.read_json(local)


def read_trailing(
    local: str,
    fp: BinaryIO,
    size: int,
    position: int,
    codec: str,
    bulk_uri: BulkUri,
    native: int | bytes | None = None,
) -> dict[str, Any] | None:
    """DICOM JSON of the elements from ``position`` (after the pixel data) to the end of the
    file, or None when they need the general reader (another pixel data element, a value it
    cannot convert, a truncated value: the general reader describes those)."""
    result: dict[str, Any] = {}
    try:
        if COMPILED and _fastmeta is not None and native is not None:
            result, stop = _fastmeta.read_trailing_elements(
                local, native, size, position, codec, bulk_uri
            )
        else:
            reader = _Reader(local, fp, size)
            stop = _parse(reader, position, None, result, codec, bulk_uri, top=True)
    except (*_GENERAL_READER_CASES, DicomReadError):
        return None
    return result if stop == size else None


def codec_of(meta: dict[str, Any]) -> str | None:
    """The Python codec of the top-level Specific Character Set of a data set read by
    :func:`read_fast` (None if it is not one of ``_CHARSETS``)."""
    element = meta.get("00080005")
    if element is None:
        return "latin_1"
    return _CHARSETS.get("\\".join(element.get("Value", [])).strip())


def _parse(
    reader: _Reader,
    position: int,
    end: int | None,
    out: dict[str, Any],
    encoding: str,
    bulk_uri: BulkUri,
    *,
    top: bool = False,
    meta: bool = False,
    depth: int = 0,
) -> int:
    """Parse elements from ``position`` until ``end`` (or an item delimiter, or the pixel data
    at the top level, or the end of group 0002 when ``meta``); return the stop position."""
    size, local = reader.size, reader.local
    keys = _KEYS
    converters = _CONVERTERS
    short_vrs = _SHORT_VR_CONVERTERS
    limit = size if end is None else min(end, size)
    buffer, base = reader.buffer, reader.base
    available = len(buffer)
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
        if short is not None:
            # The common case: a 2-byte-length VR, a text or number value read from the window.
            vr, converter = short
            value_at = position + 8
            position = value_at + length
            if position > size:
                raise truncated_error(local, size, group, element, length, value_at)
            if element == 0:  # group length (PS3.5 7.2)
                continue
            key = keys.get(tag)
            if key is None:
                key = keys[tag] = f"{tag:08X}"
            if length == 0:
                out[key] = {"vr": vr}
                continue
            # (Inlined twin of the general path below: this loop runs once per element.)
            start = value_at - base
            if start + length > available:
                start = reader.window(value_at, length)
                buffer, base = reader.buffer, reader.base
                available = len(buffer)
            raw = buffer[start : start + length]
            if tag == 0x00080005:
                encoding = _charset(raw, top)
            out[key] = converter(vr, raw, encoding)
            continue
        if tag == ITEM_DELIMITER_TAG:
            return position + 8
        if top and tag in PIXEL_DATA_TAGS:
            return position
        if vr_bytes in LONG_LENGTH_VRS:
            if position + 12 > size:
                raise EOFError
            (length,) = _UNPACK_I(buffer, at + 8)
            value_at = position + 12
        else:
            raise Unsupported(f"VR {vr_bytes!r}: implicit VR element, or a VR not handled here")
        key = keys.get(tag)
        if key is None:
            key = keys[tag] = f"{tag:08X}"
        vr = _VR_NAMES[vr_bytes]
        if vr == "SQ":
            items: list[dict[str, Any]] = []
            position = _sequence(reader, value_at, length, items, encoding, bulk_uri, depth + 1)
            buffer, base = reader.buffer, reader.base
            available = len(buffer)
            if element:
                # An empty sequence is an empty attribute: no Value (PS3.18 F.2.5).
                out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            continue
        if length == UNDEFINED_LENGTH or vr == "UN":
            raise Unsupported(f"{vr} value of undefined length or unknown type")
        position = value_at + length
        if position > size:
            raise truncated_error(local, size, group, element, length, value_at)
        if element == 0:  # group length (PS3.5 7.2)
            continue
        if vr in BINARY_VRS:
            if length == 0:
                out[key] = {"vr": vr}
            elif length > INLINE_BINARY_MAX_BYTES:
                out[key] = {"vr": vr, "BulkDataURI": bulk_uri(value_at, length)}
            else:
                start = _slice_start(reader, value_at, length)
                buffer, base = reader.buffer, reader.base
                available = len(buffer)
                data = buffer[start : start + length]
                out[key] = {"vr": vr, "InlineBinary": base64.b64encode(data).decode()}
            continue
        if length > HUGE_VALUE_BYTES:
            out[key] = {"vr": vr, "BulkDataURI": bulk_uri(value_at, length)}
            continue
        start = value_at - base
        if start + length > available:
            start = reader.window(value_at, length)
            buffer, base = reader.buffer, reader.base
            available = len(buffer)
        raw = buffer[start : start + length]
        if tag == 0x00080005:
            encoding = _charset(raw, top)
        if length == 0:
            out[key] = {"vr": vr}
        else:
            out[key] = converters[vr](vr, raw, encoding)
    if end is None and top:
        return position
    if position > size:
        raise EOFError
    return position


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


def _charset(raw: bytes, top: bool) -> str:
    if not top:
        raise Unsupported("character set changed inside a sequence item")
    value = raw.decode("latin_1").rstrip(" \x00").strip()
    codec = _CHARSETS.get(value)
    if codec is None:
        raise Unsupported(f"character set {value!r}")
    return codec


def _sequence(
    reader: _Reader,
    position: int,
    length: int,
    items: list[dict[str, Any]],
    encoding: str,
    bulk_uri: BulkUri,
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
        item: dict[str, Any] = {}
        item_end = None if item_length == UNDEFINED_LENGTH else position + item_length
        position = _parse(reader, position, item_end, item, encoding, bulk_uri, depth=depth)
        items.append(item)
    return position


def _values(vr: str, parts: list[Any]) -> dict[str, Any]:
    """An element from its split values: no Value when empty; among several values, an empty
    one is null (PS3.18 F.2.5)."""
    if len(parts) == 1:
        return {"vr": vr, "Value": parts} if parts[0] else {"vr": vr}
    return {"vr": vr, "Value": [part or None for part in parts]}


def _plain(vr: str, raw: bytes, encoding: str) -> dict[str, Any]:
    # AS, CS, DA, DT, TM, UI: ASCII; each value loses its trailing padding (PS3.5 6.2: not
    # significant), not only the last one as pydicom's multi_string does.
    return _values(vr, [part.rstrip(" \x00") for part in raw.decode("latin_1").split("\\")])


def _text(vr: str, raw: bytes, encoding: str) -> dict[str, Any]:
    # SH, LO, UC: each value loses its trailing padding (pydicom's convert_text).
    return _values(vr, [part.rstrip("\x00 ") for part in raw.decode(encoding).split("\\")])


def _single_text(vr: str, raw: bytes, encoding: str) -> dict[str, Any]:
    # ST, LT, UT: one value, backslashes included.
    return _values(vr, [raw.decode(encoding).rstrip("\x00 ")])


def _application_entity(vr: str, raw: bytes, encoding: str) -> dict[str, Any]:
    return _values(vr, [part.strip() for part in raw.decode("latin_1").split("\\")])


def _uri(vr: str, raw: bytes, encoding: str) -> dict[str, Any]:
    return _values(vr, [raw.decode("latin_1").rstrip()])


def _person_name(vr: str, raw: bytes, encoding: str) -> dict[str, Any]:
    text = raw.rstrip(b"\x00 ").decode(encoding)
    if not text:
        return {"vr": vr}
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
    return {"vr": vr, "Value": names}


def _decimal(vr: str, raw: bytes, encoding: str) -> dict[str, Any]:
    parts = raw.decode("latin_1").strip().rstrip(" \x00").split("\\")
    if len(parts) == 1 and not parts[0]:
        return {"vr": vr}
    return {"vr": vr, "Value": [_decimal_value(part) for part in parts]}


def _integer_string(vr: str, raw: bytes, encoding: str) -> dict[str, Any]:
    parts = raw.decode("latin_1").strip().rstrip(" \x00").split("\\")
    if len(parts) == 1 and not parts[0]:
        return {"vr": vr}
    # PS3.18 F.2.5: an empty value among several is null.
    return {"vr": vr, "Value": [_integer(part) if part.strip() else None for part in parts]}


def _attribute_tags(vr: str, raw: bytes, encoding: str) -> dict[str, Any]:
    if len(raw) % 4:
        raise Unsupported("AT value length")
    pairs = struct.unpack(f"<{len(raw) // 2}H", raw)
    return {
        "vr": vr,
        "Value": [f"{pairs[i]:04X}{pairs[i + 1]:04X}" for i in range(0, len(pairs), 2)],
    }


def _number_converter(code: str) -> Callable[[str, bytes, str], dict[str, Any]]:
    single = struct.Struct("<" + code)  # standard sizes, not the platform's
    size = single.size
    floats = code in "fd"

    def convert(vr: str, raw: bytes, encoding: str) -> dict[str, Any]:
        if len(raw) == size:  # the usual single value
            values: list[Any] = list(single.unpack(raw))
        elif len(raw) % size:
            raise Unsupported(f"{vr} value of {len(raw)} bytes")
        else:
            values = list(struct.unpack(f"<{len(raw) // size}{code}", raw))
        if floats:
            values = [finite_or_text(float(v)) for v in values]
        return {"vr": vr, "Value": values}

    return convert


_CONVERTERS: dict[str, Callable[[str, bytes, str], dict[str, Any]]] = {
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
    """One DS value; empty is null (PS3.18 F.2.5), a non-finite one its JSON spelling."""
    if not text.strip():
        return None
    return finite_or_text(float(text))


def finite_or_text(value: float) -> float | str:
    """JSON has no NaN or infinities: they are written as the strings "NaN", "Infinity" and
    "-Infinity" (what the DICOM JSON serialisers of DCMTK and pydicom agree on)."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def fastmeta_converter(vr: str) -> Callable[[str, bytes, str], dict[str, Any]] | None:
    """The converter of a text or number VR (``converter(vr, raw_bytes, codec)``), or None."""
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
        _IMPLICIT_OR_BIG_OR_DEFLATED,
        INLINE_BINARY_MAX_BYTES,
        HUGE_VALUE_BYTES,
        MAX_SEQUENCE_DEPTH,
    )
