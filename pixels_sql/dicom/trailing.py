"""Where a file's data elements end, when bytes that are not elements follow them.

Files arrive with bytes after their data set: zero padding, a second copy of the file appended
by a faulty transfer, random garbage. pydicom reads such files; a header reader that takes the
extra bytes for elements would fail the whole file (``truncated``) or invent elements. The
header readers (meta.py) read the data set up to the offset :func:`find` gives and return the
header with the warning ``trailing_bytes`` (errors.WARNINGS).

The top-level element stream is walked by element headers only: values are skipped by their
length, undefined-length values walked item by item to their delimiter (PS3.5 7.5). After at
least one complete element of the data set, the trailing bytes start at the first position
where

- fewer bytes remain than an element header takes (8, or 12 for a long explicit VR: PS3.5
  7.1.2);
- the tag is not greater than the previous element's: the elements of a data set are in
  ascending tag order (PS3.5 7.1). Zero padding reads as (0000,0000), a second file starts
  with its preamble or group 0002;
- in an explicit VR data set, the two VR bytes are not a VR (PS3.5 6.2). Item and delimiter
  tags (group FFFE) have no VR (PS3.5 7.5), and Pixel Data written with an implicit VR header
  is read as the readers read it.

An element that passes these checks but whose value runs past the end of the file was cut
short (``truncated``, as the readers say) when its tag is one a writer puts there: in the
public data dictionary, a private creator, or a private element whose creator came before it
(PS3.5 7.8.1). Any other tag with a length past the end is trailing bytes: random bytes make
such headers.

A deflated data set (PS3.5 A.5) is one deflate stream: the bytes after the end of the stream
are its trailing bytes. A walk that cannot
be followed (an undefined-length value without its delimiter) is left to the readers: no
offset.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.datadict import dictionary_has_tag

from pixels_sql.dicom.encoding import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    ITEM_DELIMITER_TAG,
    ITEM_TAG,
    LONG_LENGTH_VRS,
    PIXEL_DATA_TAGS,
    SEQUENCE_DELIMITER_TAG,
    SHORT_LENGTH_VRS,
    UNDEFINED_LENGTH,
)
from pixels_sql.errors import warning_message
from pixels_sql.io.ranged import RangedReader

WARNING = "trailing_bytes"
_IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
_EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_TRANSFER_SYNTAX_TAG = 0x00020010
_WINDOW = 1 << 16
# A walk that takes more steps than this (millions of empty items in a hostile file) is not
# followed: the readers judge the file.
MAX_STEPS = 2_000_000


@dataclass(frozen=True)
class Trailing:
    """Bytes ``offset``..``size`` of a file are not data elements, for the reason ``why``."""

    offset: int
    size: int
    why: str

    @property
    def message(self) -> str:
        count = self.size - self.offset
        return warning_message(
            WARNING,
            f"the {count} byte{'s' if count != 1 else ''} from offset {self.offset} to the end"
            f" of the file are not a data element ({self.why}); the elements before them are"
            " read",
        )


class _Bytes:
    """Reads of a file at any position, through one window of bytes."""

    def __init__(self, fp: BinaryIO, size: int) -> None:
        self.fp, self.size = fp, size
        self.base = 0
        self.buffer = b""

    def read(self, position: int, count: int) -> bytes:
        start = position - self.base
        if start < 0 or start + count > len(self.buffer):
            self.fp.seek(position)
            self.buffer = self.fp.read(max(count, _WINDOW))
            self.base, start = position, 0
        return self.buffer[start : start + count]


def find(fp: BinaryIO, size: int) -> Trailing | None:
    """Where the bytes after the last complete element of the file ``fp`` (``size`` bytes)
    start, or None when there are none (or the walk cannot tell)."""
    data = _Bytes(fp, size)
    head = data.read(0, 132)
    if size >= 132 and head[128:132] == b"DICM":
        found = _meta_group(data, 132)
        if found is None:
            return None
        start, syntax = found
        if syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            return _after_deflate_stream(fp, start, size)
        endian = ">" if syntax == _EXPLICIT_VR_BIG_ENDIAN else "<"
        # As pydicom reads it: the first element says whether the data set is in implicit VR,
        # whatever the transfer syntax (or its absence) declares.
        implicit = not _is_vr(data.read(start + 4, 2))
    else:
        encoding = _raw_encoding(head)
        if encoding is None:
            return None
        start, (implicit, endian) = 0, encoding
    return _walk(data, start, implicit, endian)


def _after_deflate_stream(fp: BinaryIO, start: int, size: int) -> Trailing | None:
    """The bytes after the deflate stream starting at ``start`` (raw deflate, RFC 1951), the
    stream inflated in bounded steps without keeping what it inflates to."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    fp.seek(start)
    position = start
    while position < size and not inflater.eof:
        chunk = fp.read(min(_WINDOW, size - position))
        if not chunk:
            return None
        position += len(chunk)
        data = chunk
        while data and not inflater.eof:
            try:
                inflater.decompress(data, _WINDOW)
            except zlib.error:
                return None  # a damaged stream: the readers say what it is
            data = inflater.unconsumed_tail
    if not inflater.eof or not inflater.unused_data:
        return None
    offset = size - len(inflater.unused_data) - (size - position)
    return Trailing(offset, size, "they follow the end of the deflated data set (PS3.5 A.5)")


def _meta_group(data: _Bytes, position: int) -> tuple[int, str] | None:
    """(where the data set starts, its transfer syntax) after the File Meta Information (group
    0002, always explicit VR little endian: PS3.10 7.1)."""
    syntax = ""
    while position + 8 <= data.size:
        header = data.read(position, 12)
        group, element = struct.unpack_from("<HH", header)
        if group != 0x0002:
            break
        step = _element(header, position, data.size, False, "<")
        if isinstance(step, str) or step[1] == UNDEFINED_LENGTH:
            return None
        value_at, length, _vr = step
        if value_at + length > data.size:
            return None
        if group << 16 | element == _TRANSFER_SYNTAX_TAG:
            syntax = data.read(value_at, length).decode("latin_1").strip(" \0")
        position = value_at + length
    return position, syntax


def _raw_encoding(head: bytes) -> tuple[bool, str] | None:
    """(implicit VR, struct endian) of a data set without the Part 10 header, as the readers
    accept one (meta.read_pydicom_header: a file meta or identifying group first)."""
    if len(head) < 8:
        return None
    for endian in ("<", ">"):
        group = struct.unpack_from(endian + "H", head)[0]
        if group in (0x0002, 0x0008):
            return (not _is_vr(head[4:6])), endian
    return None


def _is_vr(candidate: bytes) -> bool:
    return candidate in SHORT_LENGTH_VRS or candidate in LONG_LENGTH_VRS


def _element(
    header: bytes, position: int, size: int, implicit: bool, endian: str
) -> tuple[int, int, bytes] | str:
    """(value offset, length, VR or b"") of the element whose header is ``header`` (at
    ``position``), or a string saying why these bytes are not an element header."""
    group, element = struct.unpack_from(endian + "HH", header)
    tag = group << 16 | element
    if implicit or group == 0xFFFE:
        return position + 8, struct.unpack_from(endian + "I", header, 4)[0], b""
    vr = header[4:6]
    if vr in SHORT_LENGTH_VRS:
        return position + 8, struct.unpack_from(endian + "H", header, 6)[0], vr
    if vr in LONG_LENGTH_VRS:
        if position + 12 > size:
            return f"a {vr.decode()} element header needs 12 bytes, {size - position} remain"
        return position + 12, struct.unpack_from(endian + "I", header, 8)[0], vr
    if tag in PIXEL_DATA_TAGS:
        return position + 8, struct.unpack_from(endian + "I", header, 4)[0], b""
    return f"the bytes {vr!r} at offset {position + 4} are not a VR (PS3.5 6.2)"


def _known(tag: int, creators: set[int]) -> bool:
    """Whether a writer puts ``tag`` in a data set: a public one, a group length, a private
    creator, or a private element of a block whose creator (``creators``: group << 8 | block)
    came before it (PS3.5 7.8.1)."""
    group, element = tag >> 16, tag & 0xFFFF
    if element == 0 or dictionary_has_tag(tag):
        return True
    if not group & 1:
        return False
    if 0x0010 <= element <= 0x00FF:
        return True
    return element >= 0x1000 and (group << 8 | element >> 8) in creators


def _walk(data: _Bytes, position: int, implicit: bool, endian: str) -> Trailing | None:
    size = data.size
    previous = -1
    creators: set[int] = set()
    for _ in range(MAX_STEPS):
        if position == size:
            return None
        if position + 8 > size:
            why = f"{size - position} bytes cannot hold an element header (8 bytes)"
            return Trailing(position, size, why) if previous >= 0 else None
        header = data.read(position, 12)
        group, element = struct.unpack_from(endian + "HH", header)
        tag = group << 16 | element
        if previous >= 0 and tag <= previous:
            why = (
                f"the tag ({group:04X},{element:04X}) does not follow"
                f" ({previous >> 16:04X},{previous & 0xFFFF:04X}): data elements are in"
                " ascending tag order (PS3.5 7.1)"
            )
            return Trailing(position, size, why)
        step = _element(header, position, size, implicit, endian)
        if isinstance(step, str):
            return Trailing(position, size, step) if previous >= 0 else None
        value_at, length, vr = step
        if length == UNDEFINED_LENGTH:
            end = _undefined_end(data, value_at, implicit or vr == b"UN", endian)
            if end is None:
                return None
            position = end
        else:
            if value_at + length > size:
                if previous >= 0 and not _known(tag, creators):
                    why = (
                        f"({group:04X},{element:04X}) is no tag a writer puts there and"
                        f" declares {length} bytes, past the end of the file"
                    )
                    return Trailing(position, size, why)
                return None  # cut short inside the value: truncated, said by the readers
            position = value_at + length
        if group & 1 and 0x0010 <= element <= 0x00FF:
            creators.add(group << 8 | element)
        previous = tag
    return None


def _undefined_end(data: _Bytes, position: int, implicit: bool, endian: str) -> int | None:
    """Where an undefined-length value starting at ``position`` ends (after its sequence
    delimiter): items of defined length are skipped whole, items and values of undefined
    length are walked until their delimiters. The content of an undefined-length UN value is
    in implicit VR (PS3.5 6.2.2). None if the walk cannot be followed."""
    size = data.size
    levels = [implicit]  # whether each open value or item is in implicit VR
    for _ in range(MAX_STEPS):
        if position + 8 > size:
            return None
        header = data.read(position, 12)
        group, element = struct.unpack_from(endian + "HH", header)
        tag = group << 16 | element
        if group == 0xFFFE:
            (length,) = struct.unpack_from(endian + "I", header, 4)
            if tag == ITEM_TAG:
                position += 8 if length == UNDEFINED_LENGTH else 8 + length
                if length == UNDEFINED_LENGTH:
                    levels.append(levels[-1])
            elif tag in (ITEM_DELIMITER_TAG, SEQUENCE_DELIMITER_TAG):
                position += 8
                levels.pop()
                if not levels:
                    return position
            else:
                return None
            continue
        step = _element(header, position, size, levels[-1], endian)
        if isinstance(step, str):
            return None
        value_at, length, vr = step
        if length == UNDEFINED_LENGTH:
            levels.append(levels[-1] or vr == b"UN")
            position = value_at
        else:
            position = value_at + length
    return None


class Prefix(RangedReader):
    """The first ``limit`` bytes of ``fp``, as a seekable file that ends there."""

    def __init__(self, fp: BinaryIO, limit: int) -> None:
        super().__init__(limit)
        self._fp = fp

    def read_range(self, position: int, end: int) -> bytes:
        self._fp.seek(position)
        return self._fp.read(end - position)
