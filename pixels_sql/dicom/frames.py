"""Where each frame of a file's pixel data lies, from its DICOM JSON and its bytes.

WADO-RS frame retrieval (PS3.18 8.7.4) returns frames as stored where it can: for native
(uncompressed) pixel data a frame is a fixed-size slice of the value; for encapsulated pixel data
(PS3.5 A.4) a frame is one or more fragments. This module says which byte ranges of the file make
each frame, so a server can send them without decoding anything. Frames that are not byte ranges
(1-bit frames starting inside a byte) and frames in another syntax are made by transcode.py.
"""

from __future__ import annotations

import base64
import io
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from pixels_sql.dicom.bulk import bulk_range
from pixels_sql.dicom.encoding import ITEM_TAG, SEQUENCE_DELIMITER_TAG, UNDEFINED_LENGTH

# Native transfer syntaxes (PS3.5 A.1, A.2; A.5 deflated has no byte ranges, see below).
NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})
DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
# PS3.18 Table 8.7.3-2 (and 8.7.4): the media type of a frame in each encapsulated syntax.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
NATIVE_MEDIA_TYPE = "application/octet-stream"
PIXEL_DATA_KEY = "7FE00010"
# A JPEG family codestream ends with EOI/EOC (FF D9); a frame spread over fragments ends in the
# fragment that ends with it (PS3.5 A.4: a fragment is padded to even length with 00).
_END_OF_CODESTREAM = b"\xff\xd9"


class FrameError(Exception):
    """The frames cannot be located (no pixel data, deflated, inconsistent fragments)."""


@dataclass(frozen=True)
class PixelLayout:
    """What locating frames needs from an instance's DICOM JSON."""

    transfer_syntax: str
    offset: int  # of the Pixel Data value in the file
    length: int
    frames: int
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    photometric: str = ""
    # A short value is inline in the JSON (InlineBinary): then offsets count in these bytes.
    inline: bytes | None = None

    @property
    def encapsulated(self) -> bool:
        return self.transfer_syntax not in NATIVE_SYNTAXES

    @property
    def media_type(self) -> str:
        if not self.encapsulated:
            return NATIVE_MEDIA_TYPE
        return FRAME_MEDIA_TYPES.get(self.transfer_syntax, "application/octet-stream")

    @property
    def byte_aligned(self) -> bool:
        """Whether every native frame starts on a byte boundary: always, but for 1-bit pixel
        data whose frames hold a number of samples that is no multiple of 8 (PS3.5 8.1.1 packs
        1-bit frames one after the other, without padding)."""
        samples = self.rows * self.columns * self.samples_per_pixel
        return self.encapsulated or self.bits_allocated % 8 == 0 or samples % 8 == 0

    @property
    def native_frame_bytes(self) -> int:
        bits = self.rows * self.columns * self.samples_per_pixel * self.bits_allocated
        if self.photometric == "YBR_FULL_422":
            bits = bits * 2 // 3  # PS3.3 C.7.6.3.1.2: two chroma samples per two pixels
        return (bits + 7) // 8


def _first(meta: dict[str, Any], key: str, default: Any = None) -> Any:
    values = meta.get(key, {}).get("Value")
    return values[0] if values and values[0] is not None else default


def pixel_layout(meta: dict[str, Any]) -> PixelLayout:
    """The layout of the Pixel Data described in ``meta`` (the instance's DICOM JSON, whose
    Pixel Data element is a BulkDataURI with the byte range, as dicom_meta writes it)."""
    element = meta.get(PIXEL_DATA_KEY)
    if element is None:
        raise FrameError("the instance has no Pixel Data")
    syntax = _first(meta, "00020010", "1.2.840.10008.1.2")
    if syntax == DEFLATED_SYNTAX:
        raise FrameError("deflated pixel data has no byte range in the file")
    inline = None
    if "InlineBinary" in element:
        inline = base64.b64decode(element["InlineBinary"])
        offset, length = 0, len(inline)
    elif "BulkDataURI" in element:
        byte_range = bulk_range(element["BulkDataURI"])
        if byte_range is None:
            raise FrameError("the Pixel Data has no byte range")
        offset, length = byte_range
    else:
        raise FrameError("the Pixel Data is empty")
    return PixelLayout(
        transfer_syntax=syntax,
        offset=offset,
        length=length,
        inline=inline,
        frames=max(1, int(_first(meta, "00280008", 1))),
        rows=int(_first(meta, "00280010", 0)),
        columns=int(_first(meta, "00280011", 0)),
        samples_per_pixel=int(_first(meta, "00280002", 1)),
        bits_allocated=int(_first(meta, "00280100", 8)),
        photometric=str(_first(meta, "00280004", "")),
    )


def pixel_source(layout: PixelLayout, fp: BinaryIO) -> BinaryIO:
    """What the ranges of :func:`frame_ranges` address: the file, or the inline value."""
    return fp if layout.inline is None else io.BytesIO(layout.inline)


def frame_ranges(layout: PixelLayout, fp: BinaryIO) -> list[list[tuple[int, int]]]:
    """For each frame, the (offset, length) ranges that make it, in order, in ``fp`` as
    :func:`pixel_source` gives it."""
    if not layout.encapsulated:
        return _native_ranges(layout)
    return _encapsulated_ranges(layout, fp)


def _native_ranges(layout: PixelLayout) -> list[list[tuple[int, int]]]:
    size = layout.native_frame_bytes
    if not layout.byte_aligned and layout.frames > 1:
        # PS3.5 8.1.1: 1-bit frames are packed without padding between frames, so a frame may
        # start inside a byte: no byte range holds it (a server repacks it, transcode.py).
        raise FrameError(
            f"frames of {layout.rows}x{layout.columns} 1-bit samples do not start at byte"
            " boundaries"
        )
    if size <= 0 or size * layout.frames > layout.length:
        raise FrameError(
            f"{layout.frames} frames of {size} bytes do not fit the {layout.length}-byte value"
        )
    return [[(layout.offset + index * size, size)] for index in range(layout.frames)]


def fragments(fp: BinaryIO, offset: int, length: int) -> tuple[bytes, list[tuple[int, int]]]:
    """The Basic Offset Table's bytes and each fragment's (offset, length) in the file, walking
    the items of encapsulated pixel data (PS3.5 A.4) by their headers only."""
    position, end = offset, offset + length
    items: list[tuple[int, int]] = []
    while position + 8 <= end:
        fp.seek(position)
        group, element, item_length = struct.unpack("<HHI", fp.read(8))
        tag = group << 16 | element
        if tag == SEQUENCE_DELIMITER_TAG:
            break
        if tag != ITEM_TAG or item_length == UNDEFINED_LENGTH or position + 8 + item_length > end:
            raise FrameError(f"no fragment item at offset {position}")
        items.append((position + 8, item_length))
        position += 8 + item_length
    if not items:
        raise FrameError("encapsulated pixel data without a Basic Offset Table item")
    table_at, table_length = items[0]
    fp.seek(table_at)
    return fp.read(table_length), items[1:]


def _encapsulated_ranges(layout: PixelLayout, fp: BinaryIO) -> list[list[tuple[int, int]]]:
    table, found = fragments(fp, layout.offset, layout.length)
    if not found:
        raise FrameError("encapsulated pixel data without fragments")
    if len(found) == layout.frames:  # one fragment per frame: the usual case, RLE always
        return [[fragment] for fragment in found]
    if layout.frames == 1:
        return [found]
    if table:
        return _by_offset_table(table, found, layout.frames)
    return _by_end_of_codestream(fp, found, layout.frames)


def _by_offset_table(
    table: bytes, found: list[tuple[int, int]], frames: int
) -> list[list[tuple[int, int]]]:
    # PS3.5 A.4: each offset counts from the first fragment item's first byte.
    starts = list(struct.unpack(f"<{len(table) // 4}I", table[: len(table) // 4 * 4]))
    if len(starts) != frames:
        raise FrameError(f"the Basic Offset Table has {len(starts)} entries for {frames} frames")
    first_item = found[0][0] - 8
    grouped: list[list[tuple[int, int]]] = [[] for _ in range(frames)]
    frame = -1
    for fragment in found:
        relative = fragment[0] - 8 - first_item
        while frame + 1 < frames and starts[frame + 1] <= relative:
            frame += 1
        if frame < 0:
            raise FrameError("the Basic Offset Table does not start at the first fragment")
        grouped[frame].append(fragment)
    if any(not group for group in grouped):
        raise FrameError("the Basic Offset Table names a frame without fragments")
    return grouped


def _by_end_of_codestream(
    fp: BinaryIO, found: list[tuple[int, int]], frames: int
) -> list[list[tuple[int, int]]]:
    grouped: list[list[tuple[int, int]]] = [[]]
    for fragment in found:
        grouped[-1].append(fragment)
        offset, length = fragment
        fp.seek(offset + max(0, length - 4))
        if fp.read(min(4, length)).rstrip(b"\x00").endswith(_END_OF_CODESTREAM):
            grouped.append([])
    if not grouped[-1]:
        grouped.pop()
    if len(grouped) != frames:
        raise FrameError(
            f"{len(found)} fragments without an offset table could not be split into {frames}"
            " frames"
        )
    return grouped


def read_ranges(fp: BinaryIO, ranges: list[tuple[int, int]]) -> bytes:
    """The bytes of a frame: its ranges read and joined."""
    parts = []
    for offset, length in ranges:
        fp.seek(offset)
        parts.append(fp.read(length))
    return b"".join(parts)
