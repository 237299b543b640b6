"""WADO-RS (PS3.18 10.4): retrieve instances, metadata, frames, bulk data, rendered images and
thumbnails of catalogued instances.

Every file read here is one the index lists for the UIDs in the URL, opened through the same
byte sources as dicom_meta; a request never names a path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pixels_sql.dicom.errors import DicomReadError
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
from pixels_sql.dicom.sources import open_source
from pixels_sql.dicom.thumbnail import render_thumbnail
from pixels_sql.servers.dicomweb.http import (
    HTTPError,
    MediaRange,
    Request,
    Response,
    json_response,
    multipart_response,
    parse_accept,
)
from pixels_sql.servers.dicomweb.query import check_uid

if TYPE_CHECKING:
    from pixels_sql.servers.dicomweb.app import Service
    from pixels_sql.servers.dicomweb.index import Instance

DICOM = "application/dicom"
CHUNK = 1 << 20
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
    """A byte range of a catalogued instance (its BulkDataURIs), as application/octet-stream."""
    _check(study, series, instance)
    if not (offset.isdigit() and length.isdigit()):
        raise HTTPError(400, "a bulk data range is /bulk/<offset>/<length> in bytes")
    (item,) = service.catalogued(study, series, instance)
    service.check_fresh(item)
    start, count = int(offset), int(length)
    with open_source(item.path) as source:
        if start + count > source.size:
            raise HTTPError(404, "the range lies outside the instance")
        source.fp.seek(start)
        data = source.fp.read(count)
    return multipart_response([(NATIVE_MEDIA_TYPE, [data])], NATIVE_MEDIA_TYPE)


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
    """Frames as stored: native frames' bytes, or an encapsulated frame's fragments."""
    _check(study, series, instance)
    if not _FRAME_LIST.fullmatch(frame_list):
        raise HTTPError(400, "frames are a comma-separated list of frame numbers from 1")
    numbers = [int(n) for n in frame_list.split(",")]
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
        try:
            ranges = frame_ranges(layout, pixels)
        except FrameError as exc:
            raise HTTPError(404, f"instance {instance}: {exc}") from None
        for number in numbers:
            if number > len(ranges):
                raise HTTPError(404, f"instance {instance} has {len(ranges)} frames")
        data = [read_ranges(pixels, ranges[number - 1]) for number in numbers]
    part_type = f"{media}; transfer-syntax={layout.transfer_syntax}"
    return multipart_response([(part_type, [frame]) for frame in data], media)


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


def _render(service: Service, request: Request, item: Instance, size: int) -> Response:
    fmt, media_type = _image_format(request)
    service.check_fresh(item)
    try:
        image = render_thumbnail(item.path, size, fmt)
    except DicomReadError as exc:
        raise HTTPError(404, f"instance {item.sop_uid} cannot be rendered: {exc.reason}") from None
    return Response(200, [("content-type", media_type)], image)


def rendered(
    service: Service, request: Request, study: str, series: str, instance: str
) -> Response:
    """The instance rendered as PNG or JPEG (the dicom_thumbnail renderer), at full size or
    fitted into ``viewport``."""
    _check(study, series, instance)
    (item,) = service.catalogued(study, series, instance)
    header = service.header(item)
    rows = (header.get("00280010", {}).get("Value") or [512])[0] or 512
    columns = (header.get("00280011", {}).get("Value") or [512])[0] or 512
    size = _viewport(request, min(max(int(rows), int(columns)), RENDERED_MAX))
    return _render(service, request, item, size)


def thumbnail(
    service: Service,
    request: Request,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Response:
    """A small rendering of the instance, or of the first instance of a series or study."""
    _check(study, series, instance)
    candidates = service.catalogued(study, series, instance)
    size = _viewport(request, THUMBNAIL_SIZE)
    last_error: HTTPError | None = None
    for item in candidates[:20]:  # the first instance that renders (a study may start with a SR)
        try:
            return _render(service, request, item, size)
        except HTTPError as exc:
            if exc.status == 406:
                raise
            last_error = exc
    raise last_error or HTTPError(404, "nothing to render")
