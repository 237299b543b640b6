"""Read a DICOM file's header into the DICOM JSON model (PS3.18 Annex F) without its pixels.

The reader never loads pixel data: it stops at the first Pixel Data element (PS3.5 7.5 / A.4),
records where the value lies and how long it is, and walks encapsulated fragments by their item
headers only. Binary values longer than :data:`INLINE_BINARY_MAX_BYTES` become a ``BulkDataURI``
naming the file and the byte range of the value (``?offset=&length=``), so a 1 GB multi-frame file
costs as little as a 1 MB one.

The reader API:

- :func:`read_json` — the DICOM JSON text as UTF-8 bytes (``dicom_meta``); raises
  :class:`DicomReadError`;
- :func:`read_model` — the same as Python objects (WADO-RS metadata, the dbx.pixels API,
  typed columns); raises likewise;
- :func:`read_result` — never raises: a :class:`MetaRow` of the JSON or the reason the file
  could not be read, and the warning about it (what the SQL functions return per file);
- :func:`read_typed_result` — :func:`read_result` with the header's typed row and skeleton
  (typed.py) from the same read (what the pipeline's read gives the typed header table);
- :func:`read_events` — the header as events into a sink of fastmeta's protocol (a filter in
  front of a sink).

Each is one walk of the elements (fastmeta.py, compiled or not) into a sink; files the walk
refuses go to the general backend (:func:`emit_dataset`: pydicom parses, the same events come
out).
"""

from __future__ import annotations

import base64
import os
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, NamedTuple

import orjson
import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pixels_sql.dicom import typed
from pixels_sql.dicom.bulk import (
    HUGE_VALUE_BYTES,
    INLINE_BINARY_MAX_BYTES,
    bulk_uri_factory,
)
from pixels_sql.dicom.encoding import (
    BINARY_VRS,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    ITEM_TAG,
    LONG_LENGTH_VRS,
    MAX_SEQUENCE_DEPTH,
    PIXEL_DATA_TAGS,
    SEQUENCE_DELIMITER_TAG,
    UNDEFINED_LENGTH,
)
from pixels_sql.dicom.fastmeta import (
    ObjectSink,
    Sink,
    codec_of,
    converter_of,
    decoded_values,
    dumps,
    emit_model,
    read_fast,
    read_trailing,
)
from pixels_sql.dicom.fastmeta import read_json as read_json_compiled
from pixels_sql.dicom.fastmeta import read_typed as read_typed_compiled
from pixels_sql.dicom.trailing import Prefix
from pixels_sql.dicom.trailing import find as find_trailing
from pixels_sql.errors import DicomReadError, classify
from pixels_sql.io.paths import to_local_path
from pixels_sql.io.sources import Source, display_name, open_source

# Use the fast reader (fastmeta.py) where it applies; the general reader otherwise. Module-level
# so tests and benchmarks can compare both.
FAST_READER = True
# pydicom expresses its threshold in base64 characters: inline when len(value) <= (t // 4) * 3.
_PYDICOM_THRESHOLD = INLINE_BINARY_MAX_BYTES // 3 * 4

_PIXEL_DATA_VR = {0x7FE00008: "OF", 0x7FE00009: "OD"}
# Groups a data set without the Part 10 preamble plausibly starts with (file meta, identifying).
_RAW_DATASET_FIRST_GROUPS = frozenset({0x0002, 0x0008})


@dataclass(frozen=True)
class MetaResult:
    """:class:`MetaRow` with the JSON as text (:meth:`MetaRow.decoded`)."""

    meta: str | None
    reason: str | None = None
    message: str | None = None


class MetaRow(NamedTuple):
    """One file's outcome (:func:`read_result`): the DICOM JSON as UTF-8 bytes, or the reason it
    could not be read; a file read with a warning (errors.WARNINGS) has its JSON, no reason and
    the warning as its message. (A tuple: the SQL functions carry it through the helper
    process's pipe for every file, and Arrow stores the bytes of a STRING value as they are.)"""

    meta: bytes | None
    reason: str | None = None
    message: str | None = None

    def decoded(self) -> MetaResult:
        """The same outcome with the JSON as ``str``."""
        return MetaResult(None if self.meta is None else self.meta.decode("utf-8"), *self[1:])


def read_model(path: str) -> dict[str, Any]:
    """The DICOM JSON model (PS3.18 F.2) of the file at ``path`` (a local path, a ``file:`` URI,
    an archive member or an object in storage: io.sources) as Python objects — what WADO-RS
    metadata and the dbx.pixels API serve.

    Keys are 8-digit upper-case hex tags in tag order, the File Meta Information (group 0002)
    included, group-length elements (gggg,0000) excluded (PS3.5 7.2 retires them outside group
    0002, and they describe the encoding, not the data).

    Raises :class:`DicomReadError` with a reason code when the file is not readable DICOM.
    Bytes after the last complete element (trailing.py) are not read: :func:`read_result`
    gives the warning about them.
    """
    return _read_warned(path)[0]


def read_json(path: str) -> bytes:
    """:func:`read_model` as compact DICOM JSON text in UTF-8 — the bytes of ``dicom_meta``
    (Arrow stores a STRING value's bytes as they are: no decoding and encoding of 5-10 KB per
    file). Raises as :func:`read_model`."""
    return _read_json_warned(path)[0]


def read_result(path: str) -> MetaRow:
    """:func:`read_json` that never raises: the JSON, or the reason the file could not be read;
    with the warning about the file (errors.WARNINGS) as its message.

    Any exception — the reader's, the serialiser's (a RecursionError on absurd nesting, a
    MemoryError) or a bug of ours — becomes a reason: one file never fails a batch.
    """
    try:
        text, warning = _read_json_warned(path)
        return MetaRow(text, None, warning)
    except Exception as exc:
        error = classify(display_name(path), exc)
        return MetaRow(None, error.reason, error.message)


class TypedMetaRow(NamedTuple):
    """One file's outcome (:func:`read_typed_result`): :class:`MetaRow` with the header's typed
    row and skeleton (UTF-8 JSON, NULL with the JSON when the file could not be read)."""

    meta: bytes | None
    typed: bytes | None
    skeleton: bytes | None
    reason: str | None = None
    message: str | None = None


def read_typed_result(path: str) -> TypedMetaRow:
    """:func:`read_result` with, from the same read, the header's typed row
    (``typed.typed_json(json, None)``: every attribute in its column, no table's columns to fit)
    and its skeleton (``typed.skeleton_json``, what the row's columns depend on). The compiled
    walk writes the three in one pass; a file off its road is read as :func:`read_result` reads
    it and its model typed in Python. Never raises."""
    try:
        local = _compiled_local(path)
        read = read_typed_compiled(local) if local is not None else None
        if read is not None:
            return TypedMetaRow(*read)
        text, warning = _read_json_warned(path)
        model = orjson.loads(text)
        return TypedMetaRow(
            text,
            typed.typed_json(text, None).encode(),
            typed.skeleton_json(model).encode(),
            None,
            warning,
        )
    except Exception as exc:
        error = classify(display_name(path), exc)
        return TypedMetaRow(None, None, None, error.reason, error.message)


def read_events(path: str, sink: Sink) -> str | None:
    """The header of the file at ``path`` as events into ``sink`` (fastmeta's sink protocol:
    a filter in front of a sink, a sink of your own), in tag order at the top level; returns
    the warning about the file, or None. Raises as :func:`read_model`.

    The model is read first (the compiled walk fills its own object sink, and a file with bytes
    after its data set is read twice: a sink sees only the read that counts), then replayed."""
    model, warning = _read_warned(path)
    emit_model(model, sink)
    return warning


def _read_warned(path: str) -> tuple[dict[str, Any], str | None]:
    """:func:`read_model` and the warning about the file (errors.WARNINGS), or None."""
    try:
        with warnings.catch_warnings():
            # pydicom warns about recoverable oddities (wrong VR, bad charset); the value is kept.
            warnings.simplefilter("ignore")
            with open_source(path) as source:
                return _read_meta(source)
    except DicomReadError:
        raise
    except Exception as exc:  # any parser failure is data about the file, not a crash
        raise classify(display_name(path), exc) from exc


def _read_json_warned(path: str) -> tuple[bytes, str | None]:
    """:func:`read_json` and the warning about the file, or None."""
    local = _compiled_local(path)
    text = read_json_compiled(local) if local is not None else None
    if text is not None:
        # The compiled writer reads only files whose elements run cleanly to the end: nothing
        # to warn about.
        return text, None
    model, warning = _read_warned(path)
    return dumps(model), warning


def _compiled_local(path: str) -> str | None:
    """The path the compiled walk opens for ``path``, None when the fast reader is off. The
    walk writes a local file's text in one call (a zip member or an object in storage is not a
    path it opens: it returns None for those, and for any file off its common road)."""
    if not FAST_READER:
        return None
    local = to_local_path(path)
    if not local.startswith("/") and "://" not in local:
        # Joined, not normalised: "link/../x" is for the kernel to resolve (through the link),
        # so a path with "." or ".." segments is left to the object path.
        local = os.path.join(os.getcwd(), local)
    return local


def _read_meta(source: Source) -> tuple[dict[str, Any], str | None]:
    """The header, and the warning about bytes after its last complete element (or None).

    A read that did not end cleanly at the end of the file (it failed, or the general reader
    ran, which takes whatever it can parse for elements) has the file walked for trailing
    bytes (trailing.py); when there are, the header is what the same reader reads of the bytes
    before them."""
    try:
        result, clean = _read_once(source)
    except Exception as exc:
        if not _may_be_trailing_bytes(exc):
            raise
        trailing = find_trailing(source.fp, source.size)
        if trailing is None:
            raise
        return _read_once(_before(source, trailing.offset))[0], trailing.message
    if not clean:
        trailing = find_trailing(source.fp, source.size)
        if trailing is not None:
            return _read_once(_before(source, trailing.offset))[0], trailing.message
    return result, None


# Failures that bytes after the data set can cause (the readers take them for an element);
# not those of the file system, of an archive, or of a budget.
_PARSE_REASONS = frozenset({"truncated", "corrupt", "not_dicom"})


def _may_be_trailing_bytes(exc: Exception) -> bool:
    if isinstance(exc, DicomReadError):
        return exc.reason in _PARSE_REASONS
    if isinstance(exc, OSError):
        return exc.errno is None  # pydicom's "no tag to read" (errors.classify)
    return not isinstance(exc, (MemoryError, RecursionError))


def _before(source: Source, offset: int) -> Source:
    """``source`` ending at ``offset`` (the compiled loop reads no further than the size it is
    given, from a descriptor or from longer bytes)."""
    return replace(source, size=offset, fp=Prefix(source.fp, offset))


def _read_once(source: Source) -> tuple[dict[str, Any], bool]:
    """The header, and whether the read took every byte to the end of the file as elements."""
    sink = ObjectSink()
    clean = _read_fast(source, sink) if FAST_READER else None
    if clean is None:
        _read_general(source.name, source.fp, source.size, source.uri, sink)
        clean = False
    if not sink.model:
        raise DicomReadError(source.name, "not_dicom", "no data elements found")
    return sink.result(), clean


def _read_fast(source: Source, sink: ObjectSink) -> bool | None:
    """The fast walk (compiled or pure, fastmeta.py) into ``sink``: the header, then the pixel
    data and what follows; whether it read to the end of the file, or None (``sink`` untouched)
    when the file is the general reader's."""
    local, fp, size = source.name, source.fp, source.size
    bulk_uri = bulk_uri_factory(source.uri, False)
    fast = read_fast(local, fp, size, bulk_uri, source.native)
    if fast is None:
        return None
    model, position = fast
    sink.update(model)
    fp.seek(position)
    bits_allocated = model.get("00280100", {}).get("Value", [None])[0]
    return _pixels_and_after(
        local,
        fp,
        size,
        (False, True),
        bits_allocated,
        bulk_uri,
        sink,
        codec_of(model),
        source.native,
    )


def _read_general(local: str, fp: BinaryIO, size: int, uri: str, sink: ObjectSink) -> None:
    """The general backend: pydicom parses the header, its elements are emitted as events."""
    fp.seek(0)
    dataset = read_pydicom_header(local, fp, size)
    after_header = fp.tell()  # converting deferred values below moves the file position
    deflated = transfer_syntax(dataset) == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    if deflated:
        # PS3.5 A.5: the whole data set is one deflate stream, so there is no header-only
        # read and no file offset for a value; pydicom inflates it in memory.
        fp.seek(0)
        dataset = pydicom.dcmread(fp)
    bulk_uri = bulk_uri_factory(uri, deflated)

    for part in (dataset.file_meta, dataset):
        if part is None:
            continue
        _check_lengths(local, part, size, deflated)
        emit_dataset(part, 0, bulk_uri, sink)

    if not deflated:
        fp.seek(after_header)
        encoding = dataset.original_encoding
        bits_allocated = dataset.get("BitsAllocated")
        _pixels_and_after(local, fp, size, encoding, bits_allocated, bulk_uri, sink)


def _pixels_and_after(
    local: str,
    fp: BinaryIO,
    size: int,
    encoding: tuple[bool, bool],
    bits_allocated: Any,
    bulk_uri: Callable[[int | None, int], str],
    sink: ObjectSink,
    fast_codec: str | None = None,
    native: int | bytes | None = None,
) -> bool:
    """The pixel data element at the current position (if any) as events, described by its
    byte range, then the elements after it (e.g. Data Set Trailing Padding, PS3.10 7.2);
    whether the fast reader read them to the end of the file (else the general reader did, or
    bytes that are no pixel data element remain: trailing.py judges those).

    ``fast_codec``: the text codec when the header came from the fast reader, which then also
    reads the trailing elements if it can (from ``native``, what the compiled loop reads)."""
    start = fp.tell()
    location = locate_pixel_data(local, fp, size, encoding, bits_allocated)
    if location is None:
        return start >= size
    _pixel_data_events(fp, location, bulk_uri, sink)
    after_pixels = fp.tell()
    if after_pixels < size:  # elements after the pixel data: parse them if present
        fast = None
        if fast_codec is not None:
            fast = read_trailing(local, fp, size, after_pixels, fast_codec, bulk_uri, native)
        if fast is not None:
            sink.update(fast)
            return True
        fp.seek(after_pixels)
        is_implicit, is_little_endian = encoding
        trailing = read_dataset(
            fp, is_implicit, is_little_endian, defer_size=INLINE_BINARY_MAX_BYTES
        )
        _check_lengths(local, trailing, size, False)
        emit_dataset(trailing, 0, bulk_uri, sink)
        return False
    return True


def read_pydicom_header(local: str, fp: BinaryIO, size: int) -> Dataset:
    """pydicom's Dataset of the header (up to the pixel data) of the file open as ``fp``."""
    # Values longer than the inline limit are deferred (not read); binary ones are then described
    # by offset and length only, so a huge private blob in the header costs no memory.
    return _read_pydicom(
        local, fp, size, stop_before_pixels=True, defer_size=INLINE_BINARY_MAX_BYTES
    )


def read_pydicom_file(local: str, fp: BinaryIO, size: int) -> Dataset:
    """pydicom's Dataset of the whole file open as ``fp``, pixel data included, every value
    read; a value that runs past the end of the file is ``truncated``."""
    dataset = _read_pydicom(local, fp, size, stop_before_pixels=False, defer_size=None)
    _check_lengths(
        local, dataset, size, transfer_syntax(dataset) == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    )
    return dataset


def _read_pydicom(
    local: str, fp: BinaryIO, size: int, stop_before_pixels: bool, defer_size: int | None
) -> Dataset:
    options = {"stop_before_pixels": stop_before_pixels, "defer_size": defer_size}
    try:
        return pydicom.dcmread(fp, **options)
    except InvalidDicomError:
        # PS3.10 7.1 requires the preamble, but many archives hold bare data sets (ACR-NEMA
        # style). Read those only when the first bytes look like a data element.
        fp.seek(0)
        head = fp.read(8)
        if not _looks_like_raw_dataset(head, size):
            raise DicomReadError(
                local, "not_dicom", "no 'DICM' prefix at byte 128 and no data element at byte 0"
            ) from None
        fp.seek(0)
        return pydicom.dcmread(fp, force=True, **options)


def _looks_like_raw_dataset(head: bytes, size: int) -> bool:
    if len(head) < 8:
        return False
    for endian in ("<", ">"):
        group, _element = struct.unpack(endian + "HH", head[:4])
        if group not in _RAW_DATASET_FIRST_GROUPS:
            continue
        if _is_vr(head[4:6]):
            return True  # explicit VR
        (length,) = struct.unpack(endian + "I", head[4:8])
        return length < size  # implicit VR: the first value must fit in the file
    return False


def _is_vr(candidate: bytes) -> bool:
    return len(candidate) == 2 and candidate.isalpha() and candidate.isupper()


def transfer_syntax(dataset: Dataset) -> UID:
    """The file's transfer syntax; for a bare data set, the encoding pydicom detected."""
    meta = dataset.file_meta
    if meta is not None and "TransferSyntaxUID" in meta:
        return UID(meta.TransferSyntaxUID)
    implicit, little = dataset.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _check_lengths(local: str, dataset: Dataset, size: int, deflated: bool) -> None:
    """pydicom silently accepts short reads; a value that runs past the end is a truncated file."""
    if deflated:
        return
    for raw in dataset._dict.values():
        if (
            isinstance(raw, RawDataElement)
            and raw.length != UNDEFINED_LENGTH
            and raw.value_tell + raw.length > size
        ):
            raise DicomReadError(
                local,
                "truncated",
                f"element ({raw.tag >> 16:04X},{raw.tag & 0xFFFF:04X}) declares {raw.length} bytes"
                f" at offset {raw.value_tell} but the file has {size} bytes",
            )


def emit_dataset(
    dataset: Dataset,
    base: int,
    bulk_uri: Callable[[int | None, int], str],
    sink: Sink,
    depth: int = 0,
) -> None:
    """The general backend: the elements of a pydicom data set as the walk's events, with the
    walk's value rules (fastmeta.decoded_values) applied to pydicom's values, into ``sink``.
    Element offsets are relative to ``base`` in the file.

    pydicom parses a defined-length sequence from a copy of its value bytes, so the offsets of
    the elements inside are relative to that value's start; an undefined-length sequence is
    parsed in place and keeps its parent's frame.
    """

    def handler(bulk: DataElement) -> str:
        return bulk_uri(base + bulk.file_tell, len(bulk.value))

    # Iterating a pydicom Dataset yields elements (converting them); keys() yields tags.
    for tag in dataset.keys():  # noqa: SIM118
        if tag & 0xFFFF == 0:  # group length (PS3.5 7.2): describes the encoding, not the data
            continue
        raw = dataset._dict[tag]
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
            vr = _deferred_binary_vr(raw)
            if vr is not None:
                sink.element(int(tag), vr)
                sink.bulk(bulk_uri(base + raw.value_tell, raw.length))
                sink.element_end()
                continue
        numbers = _numbers_by_walk(raw)
        if numbers is not None:
            # DS and IS by the walk's rule, not pydicom's (which reads IS "1.5" as 1 and refuses
            # "1e"): one rule for every reader, a value that is no number kept as its text.
            vr, values = numbers
            sink.element(int(tag), vr)
            if values:
                sink.values(values)
            sink.element_end()
            continue
        element = dataset[tag]
        if element.VR == "SQ":
            if depth >= MAX_SEQUENCE_DEPTH:
                # classify() reports it as too_deep, like an interpreter RecursionError.
                raise RecursionError(f"sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels")
            item_base = base if element.is_undefined_length else base + element.file_tell
            sink.element(int(tag), "SQ")
            for item in element.value:
                sink.item_begin()
                emit_dataset(item, item_base, bulk_uri, sink, depth + 1)
                sink.item_end()
            sink.element_end()
            continue
        try:
            converted = element.to_json_dict(
                bulk_data_element_handler=handler, bulk_data_threshold=_PYDICOM_THRESHOLD
            )
            vr, values = converted["vr"], converted.get("Value")
        except (ValueError, IndexError) as exc:
            # pydicom cannot convert an empty value among several DS/IS/PN values
            # ("1\\\\2"); the walk's converters can (PS3.18 F.2.5: null).
            converted = {}
            vr, values = _converted_by_walk(raw, dataset, exc)
        vr = str(vr)  # pydicom's VR is a str enum; the sinks take the two letters as str
        sink.element(int(tag), vr)
        if values:
            sink.values(decoded_values(vr, values))
        elif "InlineBinary" in converted:
            sink.inline_binary(base64.b64decode(converted["InlineBinary"]))
        elif "BulkDataURI" in converted:
            sink.bulk(converted["BulkDataURI"])
        sink.element_end()


def _raw_vr(raw: Any) -> str | None:
    """The VR of an element pydicom has not converted yet (its value still the file's bytes):
    the file's, or in an implicit VR file the dictionary's (PS3.5 7.1.3); else None."""
    if not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes):
        return None
    if raw.VR:
        return str(raw.VR)
    tag = int(raw.tag)
    return pydicom.datadict.dictionary_VR(tag) if pydicom.datadict.dictionary_has_tag(tag) else None


def _numbers_by_walk(raw: Any) -> tuple[str, list[Any]] | None:
    """A DS or IS element pydicom has not converted yet, as the walk converts it, else None."""
    vr = _raw_vr(raw)
    if vr not in ("DS", "IS"):
        return None
    converter = converter_of(vr)
    assert converter is not None
    return vr, converter(vr, raw.value, "latin_1")


def _converted_by_walk(raw: Any, dataset: Dataset, error: Exception) -> tuple[str, list[Any]]:
    vr = _raw_vr(raw)
    converter = None if vr is None else converter_of(vr)
    if vr is None or converter is None:
        raise error
    codecs = getattr(dataset, "_character_set", None) or ["latin_1"]
    return vr, converter(vr, raw.value, codecs[0] if len(codecs) == 1 else "latin_1")


def _unpack_tag(header: bytes, is_little_endian: bool) -> int:
    group, element = struct.unpack("<HH" if is_little_endian else ">HH", header)
    return group << 16 | element


@dataclass(frozen=True)
class PixelDataLocation:
    """Where a pixel data element's value lies in its file."""

    tag: int
    vr: str
    offset: int
    length: int  # for encapsulated data: the fragment items, without the sequence delimiter
    encapsulated: bool


def locate_pixel_data(
    local: str, fp: BinaryIO, size: int, encoding: tuple[bool, bool], bits_allocated: Any
) -> PixelDataLocation | None:
    """Read the pixel data element header at the current position (where ``read_pydicom_header``
    stopped) and find its value's extent without reading the value; None if there is none.

    Leaves ``fp`` just after the value. Raises ``truncated`` when the value runs past the end.
    """
    is_implicit, is_little_endian = encoding
    start = fp.tell()
    head = fp.read(4)
    if len(head) < 4 or _unpack_tag(head, is_little_endian) not in PIXEL_DATA_TAGS:
        fp.seek(start)
        return None
    endian = "<" if is_little_endian else ">"
    tag = _unpack_tag(head, is_little_endian)
    vr_or_length = _read_exact(local, fp, 4)
    vr_bytes: bytes | None = vr_or_length[:2]
    if is_implicit or not _is_vr(vr_or_length[:2]):
        # Some writers switch to implicit VR encoding for this element alone (pydicom accepts it).
        vr_bytes = None
        (length,) = struct.unpack(endian + "I", vr_or_length)
    elif vr_bytes in LONG_LENGTH_VRS:
        (length,) = struct.unpack(endian + "I", _read_exact(local, fp, 4))
    else:
        (length,) = struct.unpack(endian + "H", vr_or_length[2:])
    offset = fp.tell()
    undefined = length == UNDEFINED_LENGTH
    if undefined:
        length = _encapsulated_length(local, fp, offset, size)
    elif offset + length > size:
        raise DicomReadError(
            local,
            "truncated",
            f"pixel data at offset {offset} declares {length} bytes but only {size - offset}"
            " remain in the file",
        )
    else:
        fp.seek(offset + length)
    vr = _pixel_data_vr(tag, vr_bytes, undefined, is_implicit, bits_allocated)
    return PixelDataLocation(tag, vr, offset, length, undefined)


def _pixel_data_events(
    fp: BinaryIO,
    location: PixelDataLocation,
    bulk_uri: Callable[[int | None, int], str],
    sink: Sink,
) -> None:
    """The pixel data element described by offset and length only (inline when short)."""
    sink.element(location.tag, location.vr)
    if location.length == 0:
        pass
    elif location.length <= INLINE_BINARY_MAX_BYTES:
        resume = fp.tell()
        fp.seek(location.offset)
        sink.inline_binary(fp.read(location.length))
        fp.seek(resume)
    else:
        sink.bulk(bulk_uri(location.offset, location.length))
    sink.element_end()


def _pixel_data_vr(
    tag: int, vr_bytes: bytes | None, undefined: bool, is_implicit: bool, bits_allocated: Any
) -> str:
    if vr_bytes is not None:
        return vr_bytes.decode("ascii")
    if tag in _PIXEL_DATA_VR:
        return _PIXEL_DATA_VR[tag]
    # PS3.5 A.4: encapsulated is OB; A.1: implicit VR is OW; A.2: OW when BitsAllocated > 8.
    if undefined:
        return "OB"
    if is_implicit:
        return "OW"
    return "OW" if int(bits_allocated or 16) > 8 else "OB"


def _encapsulated_length(local: str, fp: BinaryIO, offset: int, size: int) -> int:
    """Walk the fragment items of encapsulated pixel data (PS3.5 A.4) by their headers only."""
    position = offset
    while True:
        if position + 8 > size:
            raise DicomReadError(
                local, "truncated", "encapsulated pixel data has no sequence delimiter"
            )
        fp.seek(position)
        group, element, item_length = struct.unpack("<HHI", fp.read(8))
        tag = group << 16 | element
        if tag == SEQUENCE_DELIMITER_TAG:
            fp.seek(position + 8)
            return position - offset
        if tag != ITEM_TAG or item_length == UNDEFINED_LENGTH:
            raise DicomReadError(
                local,
                "corrupt",
                f"expected a fragment item at offset {position}, found tag"
                f" ({group:04X},{element:04X})",
            )
        position += 8 + item_length


def _deferred_binary_vr(raw: RawDataElement) -> str | None:
    """The VR under which a deferred value is described by byte range, or None to read it.

    Binary VRs always qualify: explicit VR files carry the VR, and for implicit VR the public
    dictionary must give one unambiguous binary VR. UN is left to pydicom below the huge-value
    limit, since pydicom replaces it with the dictionary VR when it knows the tag (PS3.5 6.2.2).
    """
    dictionary_vr = None
    if pydicom.datadict.dictionary_has_tag(int(raw.tag)):
        dictionary_vr = pydicom.datadict.dictionary_VR(int(raw.tag))
    vr = raw.VR or dictionary_vr
    if vr in BINARY_VRS:
        return vr
    if raw.length > HUGE_VALUE_BYTES and raw.length != UNDEFINED_LENGTH:
        return (vr or "UN").split(" or ")[0]
    return None


def _read_exact(local: str, fp: BinaryIO, count: int) -> bytes:
    data = fp.read(count)
    if len(data) != count:
        raise DicomReadError(local, "truncated", "the file ends inside the pixel data header")
    return data
