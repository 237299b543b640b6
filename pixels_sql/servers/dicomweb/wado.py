"""WADO-RS (PS3.18 10.4): retrieve instances, metadata, frames, bulk data, rendered images and
thumbnails of catalogued instances.

Every file read here is one the index lists for the UIDs in the URL, opened through the same
byte sources as dicom_meta; a request never names a path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from pixels_sql.dicom.frames import (
    NATIVE_MEDIA_TYPE,
    FrameError,
    PixelLayout,
    frame_ranges,
    pixel_layout,
    pixel_source,
    read_ranges,
)
from pixels_sql.dicom.part10 import file_meta_prefix, is_part10
from pixels_sql.io.sources import open_source
from pixels_sql.servers.dicomweb.http import (
    HTTPError,
    MediaRange,
    RenderJob,
    Request,
    Response,
    json_response,
    multipart_response,
    parse_accept,
)
from pixels_sql.servers.dicomweb.query import QueryError, check_uid, non_negative

if TYPE_CHECKING:
    from pixels_sql.servers.dicomweb.index import Instance
    from pixels_sql.servers.dicomweb.limits import HttpLimits
    from pixels_sql.servers.dicomweb.service import Service

DICOM = "application/dicom"
# Response bodies are read and sent this much at a time: a few copies of one chunk are alive at
# once (the read, h11's framing, the transport's buffer), whatever the size of the answer.
CHUNK = 256 * 1024
# Explicit VR Little Endian: what application/octet-stream means without transfer-syntax
# (PS3.18 8.7.3.5.2); native pixel bytes of implicit and explicit little endian are the same.
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
LITTLE_ENDIAN_NATIVE = frozenset({"1.2.840.10008.1.2", EXPLICIT_LITTLE})
_FRAME_LIST = re.compile(r"[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*")
_VIEWPORT = re.compile(r"([1-9][0-9]{0,4}),([1-9][0-9]{0,4})")
THUMBNAIL_SIZE = 128
RENDERED_MAX = 4096


def _check(*uids: str | None) -> None:
    for uid in uids:
        if uid is not None:
            check_uid(uid)


def _wants(accept: list[MediaRange], media_type: str) -> MediaRange | None:
    """The first range accepting ``media_type`` (wildcards included)."""
    major = media_type.split("/")[0]
    for entry in accept:
        if entry.media_type in (media_type, "*/*", f"{major}/*"):
            return entry
    return None


def _file_chunks(path: str, prefix: bytes) -> Iterator[bytes]:
    if prefix:
        yield prefix
    with open_source(path) as source:
        while chunk := source.fp.read(CHUNK):
            yield chunk


def _as_part10(item: Instance) -> tuple[bytes, str]:
    """What to send before the file's bytes (nothing, or the File Meta Information of a bare
    data set) and the instance's transfer syntax."""
    with open_source(item.path) as source:
        if is_part10(source.fp):
            # PS3.10 without a Transfer Syntax UID in its meta: implicit VR little endian.
            return b"", item.transfer_syntax or "1.2.840.10008.1.2"
        return file_meta_prefix(source.name, source.fp, source.size)


def retrieve(
    service: Service,
    request: Request,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Response:
    """The instances as stored, in multipart/related; type="application/dicom"."""
    _check(study, series, instance)
    accept = parse_accept(request.headers.get("accept"))
    chosen = None
    for entry in accept:
        if entry.media_type in ("*/*", "multipart/related"):
            if entry.params.get("type", DICOM) in (DICOM, "*/*"):
                chosen = entry
                break
        elif entry.media_type == DICOM:
            chosen = entry
            break
    if chosen is None:
        raise HTTPError(406, 'instances are sent as multipart/related; type="application/dicom"')
    instances = service.catalogued(study, series, instance)
    wanted_syntax = chosen.params.get("transfer-syntax", "*")
    prepared = []
    for item in instances:
        service.check_fresh(item)
        prefix, syntax = _as_part10(item)
        if wanted_syntax not in ("*", syntax):
            raise HTTPError(
                406,
                f"instance {item.sop_uid} is stored in transfer syntax {syntax}"
                " and is not transcoded: ask for transfer-syntax=*",
            )
        prepared.append((item, prefix, syntax))
    parts = (
        (f"{DICOM}; transfer-syntax={syntax}", _file_chunks(item.path, prefix))
        for item, prefix, syntax in prepared
    )
    return multipart_response(parts, DICOM)


def metadata(
    service: Service,
    request: Request,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Response:
    """The instances' DICOM JSON; BulkDataURIs point at this service's bulk data resource."""
    _check(study, series, instance)
    results = []
    for item in service.catalogued(study, series, instance):
        results.append(service.public_header(item, request.base_url))
    return json_response(results)


def bulk(
    service: Service,
    request: Request,
    study: str,
    series: str,
    instance: str,
    offset: str,
    length: str,
) -> Response:
    """A byte range of a catalogued instance (its BulkDataURIs), as application/octet-stream,
    read and sent a chunk at a time."""
    _check(study, series, instance)
    try:
        start, count = non_negative("offset", offset), non_negative("length", length)
    except QueryError:
        raise HTTPError(400, "a bulk data range is /bulk/<offset>/<length> in bytes") from None
    (item,) = service.catalogued(study, series, instance)
    service.check_fresh(item)
    with open_source(item.path) as source:
        if start + count > source.size:
            raise HTTPError(404, "the range lies outside the instance")
    chunks = _range_chunks(item.path, [(start, count)])
    return multipart_response([(NATIVE_MEDIA_TYPE, chunks)], NATIVE_MEDIA_TYPE)


def _range_chunks(path: str, ranges: list[tuple[int, int]]) -> Iterator[bytes]:
    """The bytes of ``ranges`` of a file, at most CHUNK at a time (the file is opened when the
    body is sent, and closed when it is done or the client goes)."""
    with open_source(path) as source:
        for offset, length in ranges:
            source.fp.seek(offset)
            while length > 0:
                chunk = source.fp.read(min(CHUNK, length))
                if not chunk:
                    raise OSError(f"{path} ended before its catalogued range")
                length -= len(chunk)
                yield chunk


def _frame_media(layout: PixelLayout, accept: list[MediaRange]) -> str | None:
    """The media type to send the frames in, or None if the Accept header rules it out."""
    stored = layout.transfer_syntax
    for entry in accept:
        if entry.media_type not in ("*/*", "multipart/related"):
            continue
        part_type = entry.params.get("type", NATIVE_MEDIA_TYPE)
        syntax = entry.params.get("transfer-syntax")
        if part_type == "*/*":
            return layout.media_type
        if part_type == NATIVE_MEDIA_TYPE:
            if syntax == "*" or syntax == stored:
                return NATIVE_MEDIA_TYPE
            little_endian = (syntax or EXPLICIT_LITTLE) == EXPLICIT_LITTLE
            if not layout.encapsulated and little_endian and stored in LITTLE_ENDIAN_NATIVE:
                return NATIVE_MEDIA_TYPE
        elif (
            layout.encapsulated and part_type == layout.media_type and syntax in (None, "*", stored)
        ):
            return layout.media_type
    return None


def frames(
    service: Service,
    request: Request,
    study: str,
    series: str,
    instance: str,
    frame_list: str,
) -> Response:
    """Frames as stored: native frames' bytes, or an encapsulated frame's fragments, read and
    sent one chunk at a time (a list may repeat a frame: it is read again, never held)."""
    limits = service.limits
    _check(study, series, instance)
    if not _FRAME_LIST.fullmatch(frame_list):
        raise HTTPError(400, "frames are a comma-separated list of frame numbers from 1")
    numbers = [int(n) for n in frame_list.split(",")]
    if len(numbers) > limits.max_frames:
        raise HTTPError(
            400, f"{len(numbers)} frames asked for: at most {limits.max_frames} in one request"
        )
    (item,) = service.catalogued(study, series, instance)
    header = service.header(item)
    try:
        layout = pixel_layout(header)
    except FrameError as exc:
        raise HTTPError(404, f"instance {instance}: {exc}") from None
    media = _frame_media(layout, parse_accept(request.headers.get("accept")))
    if media is None:
        raise HTTPError(
            406,
            f"frames are stored as {layout.media_type} (transfer syntax"
            f" {layout.transfer_syntax}) and are not transcoded: ask for"
            ' multipart/related; type="application/octet-stream"; transfer-syntax=*',
        )
    with open_source(item.path) as source:
        pixels = pixel_source(layout, source.fp)
        if pixels is not source.fp:
            # Pixel data the header holds inline (pixel_source: e.g. of a deflated data set,
            # inflated to be read) is already in memory: its frames are cut from it.
            return _inflated_frames(layout, pixels, numbers, media, instance, limits)
        try:
            ranges = frame_ranges(layout, pixels)
        except FrameError as exc:
            raise HTTPError(404, f"instance {instance}: {exc}") from None
    for number in numbers:
        if number > len(ranges):
            raise HTTPError(404, f"instance {instance} has {len(ranges)} frames")
    total = sum(length for number in numbers for _, length in ranges[number - 1])
    _check_frames_bytes(total, limits)
    part_type = f"{media}; transfer-syntax={layout.transfer_syntax}"
    parts = ((part_type, _range_chunks(item.path, ranges[number - 1])) for number in numbers)
    return multipart_response(parts, media)


def _check_frames_bytes(total: int, limits: HttpLimits) -> None:
    if total > limits.max_frames_bytes:
        raise HTTPError(
            400,
            f"the frames asked for add up to {total} bytes: at most"
            f" {limits.max_frames_bytes} in one request (ask in several)",
        )


def _inflated_frames(
    layout: PixelLayout,
    pixels: BinaryIO,
    numbers: list[int],
    media: str,
    instance: str,
    limits: HttpLimits,
) -> Response:
    try:
        ranges = frame_ranges(layout, pixels)
    except FrameError as exc:
        raise HTTPError(404, f"instance {instance}: {exc}") from None
    for number in numbers:
        if number > len(ranges):
            raise HTTPError(404, f"instance {instance} has {len(ranges)} frames")
    _check_frames_bytes(sum(n for number in numbers for _, n in ranges[number - 1]), limits)
    part_type = f"{media}; transfer-syntax={layout.transfer_syntax}"

    def frame(number: int) -> Iterator[bytes]:
        yield read_ranges(pixels, ranges[number - 1])

    return multipart_response(((part_type, frame(number)) for number in numbers), media)


def _image_format(request: Request) -> tuple[str, str]:
    accept = parse_accept(request.headers.get("accept"))
    for entry in accept:
        if entry.media_type in ("image/png", "image/*", "*/*"):
            return "png", "image/png"
        if entry.media_type == "image/jpeg":
            return "jpeg", "image/jpeg"
    raise HTTPError(406, "rendered images are image/png or image/jpeg")


def _viewport(request: Request, default: int) -> int:
    for name, value in request.query:
        if name == "viewport":
            match = _VIEWPORT.fullmatch(value)
            if match is None:
                raise HTTPError(400, "viewport is <width>,<height> in pixels")
            return min(max(int(match.group(1)), int(match.group(2))), RENDERED_MAX)
    return default


def rendered(
    service: Service, request: Request, study: str, series: str, instance: str
) -> RenderJob:
    """The instance rendered as PNG or JPEG (the dicom_thumbnail renderer), at full size or
    fitted into ``viewport``; the render pool makes it (app.py)."""
    _check(study, series, instance)
    fmt, media_type = _image_format(request)
    (item,) = service.catalogued(study, series, instance)
    header = service.header(item)
    rows = (header.get("00280010", {}).get("Value") or [512])[0] or 512
    columns = (header.get("00280011", {}).get("Value") or [512])[0] or 512
    size = _viewport(request, min(max(int(rows), int(columns)), RENDERED_MAX))
    return RenderJob([(item.sop_uid, item.path)], size, fmt, media_type)


def thumbnail(
    service: Service,
    request: Request,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> RenderJob:
    """A small rendering of the instance, or of the first instance of a series or study that
    renders (a study may start with a SR)."""
    _check(study, series, instance)
    fmt, media_type = _image_format(request)
    size = _viewport(request, THUMBNAIL_SIZE)
    candidates = []
    last_error: HTTPError | None = None
    for item in service.catalogued(study, series, instance)[:20]:
        try:
            service.check_fresh(item)
        except HTTPError as exc:
            last_error = exc
            continue
        candidates.append((item.sop_uid, item.path))
    if not candidates:
        raise last_error or HTTPError(404, "nothing to render")
    return RenderJob(candidates, size, fmt, media_type)
