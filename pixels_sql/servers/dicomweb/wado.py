"""WADO-RS (PS3.18 10.4): retrieve instances, metadata, frames and bulk data of catalogued
instances (rendered images and thumbnails: rendered.py).

Every file read here is one the index lists for the UIDs in the URL, opened through the same
byte sources as dicom_meta; a request never names a path.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from pixels_sql.dicom.frames import (
    FRAME_MEDIA_TYPES,
    NATIVE_MEDIA_TYPE,
    FrameError,
    PixelLayout,
    frame_ranges,
    pixel_layout,
    pixel_source,
    read_ranges,
)
from pixels_sql.dicom.part10 import file_meta_prefix, is_part10
from pixels_sql.dicom.transcode import (
    DEFAULT_SYNTAX,
    FRAME_MEDIA_DEFAULT_SYNTAX,
    NATIVE_TARGETS,
    ImageFacts,
    StoredFrames,
    TranscodeError,
    check_encodable,
    check_json_encodable,
    json_image_facts,
    producible_syntaxes,
)
from pixels_sql.io.sources import open_source
from pixels_sql.servers.dicomweb.http import (
    HTTPError,
    MediaRange,
    Request,
    Response,
    multipart_response,
    parse_accept,
)
from pixels_sql.servers.dicomweb.query import QueryError, Resource, non_negative
from pixels_sql.servers.dicomweb.render import PoolJob, Runner, Task

if TYPE_CHECKING:
    from pixels_sql.servers.dicomweb.index import Instance
    from pixels_sql.servers.dicomweb.limits import HttpLimits
    from pixels_sql.servers.dicomweb.service import Service

DICOM = "application/dicom"
# Response bodies are read and sent this much at a time: a few copies of one chunk are alive at
# once (the read, h11's framing, the transport's buffer), whatever the size of the answer.
CHUNK = 256 * 1024
# Explicit VR Little Endian: what application/dicom and application/octet-stream mean without
# transfer-syntax (PS3.18 8.7.3.5.2); native pixel bytes of implicit and explicit little endian
# are the same.
EXPLICIT_LITTLE = str(DEFAULT_SYNTAX)
LITTLE_ENDIAN_NATIVE = frozenset({"1.2.840.10008.1.2", EXPLICIT_LITTLE})
# What a failed transcoding answers, by the worker's reason: what cannot be produced is a 406
# (PS3.18 8.7.3.5); what is over a limit a 400, as for frames over max_frames_bytes.
_FAILED_STATUS = {"too_large": 400}
_FRAME_LIST = re.compile(r"[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*")


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


def _asked_syntaxes(accept: list[MediaRange]) -> list[str]:
    """The transfer syntaxes asked for application/dicom, best first: ``*`` (as stored) or a
    UID; the default Explicit VR Little Endian where a range names none (PS3.18 8.7.3.5.2)."""
    asked = []
    for entry in accept:
        if entry.media_type in ("*/*", "multipart/related"):
            if entry.params.get("type", DICOM) not in (DICOM, "*/*"):
                continue
        elif entry.media_type != DICOM:
            continue
        asked.append(entry.params.get("transfer-syntax") or EXPLICIT_LITTLE)
    if not asked:
        raise HTTPError(406, 'instances are sent as multipart/related; type="application/dicom"')
    return asked


def _offered() -> str:
    return "*, " + ", ".join(producible_syntaxes())


def _instance_syntax(asked: list[str], stored: str, header: dict, sop_uid: str) -> str | None:
    """The syntax to send an instance in: None for its stored bytes, else the first asked one
    that can be produced from it; 406 naming what is offered if none can."""
    reasons = []
    for syntax in asked:
        if syntax in ("*", stored):
            return None
        try:
            check_json_encodable(header, syntax)
        except TranscodeError as exc:
            reasons.append(exc.message)
            continue
        return syntax
    raise HTTPError(
        406,
        f"instance {sop_uid} is stored in transfer syntax {stored}; "
        + "; ".join(dict.fromkeys(reasons))
        + f" (offered: {_offered()})",
    )


def _run(run: Runner, task: Task, what: str) -> Any:
    """A worker task's result; an HTTPError with its reason if it failed."""
    result, reason, message = run(task)
    if result is None:
        status = _FAILED_STATUS.get(reason, 406)
        raise HTTPError(
            status, f"{what} cannot be sent in the syntax asked for ({reason}): {message}"
        )
    return result


def _memory_chunks(data: bytes) -> Iterator[bytes]:
    """Bytes made in a worker, sent CHUNK at a time."""
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        yield bytes(view[start : start + CHUNK])


def retrieve(service: Service, request: Request, resource: Resource) -> Response | PoolJob:
    """The instances in multipart/related; type="application/dicom": as stored when that is
    asked (``transfer-syntax=*`` or the stored one), else transcoded in the render pool's
    workers (PS3.18 8.7.3; default Explicit VR Little Endian). Stored bytes are streamed; a
    transcoded instance is made whole in a worker, one at a time."""
    asked = _asked_syntaxes(parse_accept(request.headers.get("accept")))
    instances = service.catalogued(resource)
    plan: list[tuple[Instance, bytes, str, str | None]] = []
    for item in instances:
        service.check_fresh(item)
        prefix, syntax = _as_part10(item)
        target = None
        if asked != ["*"]:
            target = _instance_syntax(asked, syntax, service.header(item), item.sop_uid)
        plan.append((item, prefix, syntax, target))
    if all(target is None for *_, target in plan):
        return multipart_response(
            (
                (f"{DICOM}; transfer-syntax={syntax}", _file_chunks(item.path, prefix))
                for item, prefix, syntax, _ in plan
            ),
            DICOM,
        )
    limit = service.limits.max_transcode_bytes

    def task(item: Instance, target: str) -> Task:
        return ("instance", item.path, target, limit)

    def build(run: Runner) -> Response:
        # The first transcoded instance is made before the status is sent, so that a single
        # instance that cannot be produced is a 406 with its reason; later ones while the
        # body is sent (one in memory at a time), a failure then cutting the body short.
        first = next(i for i, (*_, target) in enumerate(plan) if target is not None)
        item, _, _, target = plan[first]
        made = {first: _run(run, task(item, target), f"instance {item.sop_uid}")}

        def parts() -> Iterator[tuple[str, Iterator[bytes]]]:
            for number, (item, prefix, syntax, target) in enumerate(plan):
                if target is None:
                    yield f"{DICOM}; transfer-syntax={syntax}", _file_chunks(item.path, prefix)
                    continue
                data = made.pop(number, None)
                if data is None:
                    data = _run(run, task(item, target), f"instance {item.sop_uid}")
                yield f"{DICOM}; transfer-syntax={target}", _memory_chunks(data)

        return multipart_response(parts(), DICOM)

    return PoolJob(build)


def metadata(service: Service, request: Request, resource: Resource) -> Response:
    """The instances' DICOM JSON; BulkDataURIs point at this service's bulk data resource."""
    parts = [
        service.public_header_json(item, request.base_url) for item in service.catalogued(resource)
    ]
    body = b"[" + b",".join(parts) + b"]"
    return Response(200, [("content-type", "application/dicom+json")], body)


def bulk(
    service: Service, request: Request, resource: Resource, offset: str, length: str
) -> Response | PoolJob:
    """A byte range of a catalogued instance (its BulkDataURIs), as application/octet-stream,
    read and sent a chunk at a time. The range of encapsulated Pixel Data answers as its frames
    do (PS3.18 8.7.4, 10.4.1.1.3: bulk data of Pixel Data is retrieved as frames): each frame a
    part, native by default, as stored for ``transfer-syntax=*``."""
    try:
        start, count = non_negative("offset", offset), non_negative("length", length)
    except QueryError:
        raise HTTPError(400, "a bulk data range is /bulk/<offset>/<length> in bytes") from None
    (item,) = service.catalogued(resource)
    service.check_fresh(item)
    try:
        layout = pixel_layout(service.header(item))
    except FrameError:
        layout = None
    if (
        layout is not None
        and layout.encapsulated
        and layout.inline is None
        and (layout.offset, layout.length) == (start, count)
    ):
        numbers = list(range(1, layout.frames + 1))
        return _frames_answer(service, request, item, layout, numbers)
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


def _frame_choice(
    layout: PixelLayout, facts: ImageFacts | None, accept: list[MediaRange]
) -> tuple[str, str | None]:
    """(media type, transfer syntax to transcode to or None for the stored frames) of the
    first acceptable range that can be answered (PS3.18 8.7.4); 406 naming what is offered."""
    stored = layout.transfer_syntax
    for entry in accept:
        if entry.media_type not in ("*/*", "multipart/related"):
            continue
        part_type = entry.params.get("type", NATIVE_MEDIA_TYPE)
        syntax = entry.params.get("transfer-syntax")
        if part_type == "*/*":
            if syntax in (None, "*", stored):
                return layout.media_type, _unaligned(layout)
            # Any media type, a named syntax: that syntax's own (PS3.18 Table 8.7.3-2).
            native = NATIVE_MEDIA_TYPE if syntax in LITTLE_ENDIAN_NATIVE else None
            part_type = FRAME_MEDIA_TYPES.get(syntax, native) or part_type
        if part_type == NATIVE_MEDIA_TYPE:
            if syntax in ("*", stored):
                return NATIVE_MEDIA_TYPE, _unaligned(layout)
            if (syntax or EXPLICIT_LITTLE) in LITTLE_ENDIAN_NATIVE:
                if not layout.encapsulated and stored in LITTLE_ENDIAN_NATIVE:
                    return NATIVE_MEDIA_TYPE, _unaligned(layout)
                return NATIVE_MEDIA_TYPE, EXPLICIT_LITTLE  # decoded (PS3.18 8.7.4)
            continue
        if layout.encapsulated and part_type == layout.media_type and syntax in (None, "*", stored):
            return layout.media_type, None
        target = syntax or FRAME_MEDIA_DEFAULT_SYNTAX.get(part_type)
        if target is None or FRAME_MEDIA_TYPES.get(target) != part_type:
            continue
        try:
            check_encodable(facts, target)
        except TranscodeError:
            continue
        return part_type, target
    offered = ", ".join(
        f"{media}; transfer-syntax={syntax}" for syntax, media in _offered_frames(layout, facts)
    )
    raise HTTPError(
        406,
        f"frames are stored as {layout.media_type} (transfer syntax {layout.transfer_syntax});"
        f" offered: {offered}",
    )


def _unaligned(layout: PixelLayout) -> str | None:
    """1-bit frames that do not start on a byte boundary are repacked to start at bit 0 (a
    native frame of its own, PS3.5 8.1.1): by the transcoder, as for another syntax."""
    return None if layout.byte_aligned or layout.frames == 1 else EXPLICIT_LITTLE


def _offered_frames(layout: PixelLayout, facts: ImageFacts | None) -> list[tuple[str, str]]:
    offered = [("*", layout.media_type), (EXPLICIT_LITTLE, NATIVE_MEDIA_TYPE)]
    for syntax in producible_syntaxes():
        if syntax in NATIVE_TARGETS or syntax == layout.transfer_syntax:
            continue
        try:
            check_encodable(facts, syntax)
        except TranscodeError:
            continue
        offered.append((syntax, FRAME_MEDIA_TYPES[syntax]))
    return offered


def frames(
    service: Service, request: Request, resource: Resource, frame_list: str
) -> Response | PoolJob:
    """Frames as stored (native frames' bytes, or an encapsulated frame's fragments, read and
    sent one chunk at a time: a list may repeat a frame, read again, never held), or decoded to
    native bytes or encoded in another syntax by the render pool's workers (PS3.18 8.7.4)."""
    numbers = frame_numbers(frame_list, service.limits.max_frames)
    (item,) = service.catalogued(resource)
    return _frames_answer(service, request, item, image_layout(service, item), numbers)


def frame_numbers(frame_list: str, limit: int) -> list[int]:
    """The frame numbers of a frames resource's path (PS3.18 8.3.3.1: a comma-separated list,
    from 1), at most ``limit`` of them; 400 otherwise."""
    if not _FRAME_LIST.fullmatch(frame_list):
        raise HTTPError(400, "frames are a comma-separated list of frame numbers from 1")
    numbers = [int(n) for n in frame_list.split(",")]
    if len(numbers) > limit:
        raise HTTPError(400, f"{len(numbers)} frames asked for: at most {limit} in one request")
    return numbers


def image_layout(service: Service, item: Instance) -> PixelLayout:
    """Where the instance's frames lie (frames.py); 404 for an instance without an image."""
    try:
        return pixel_layout(service.header(item))
    except FrameError as exc:
        raise HTTPError(404, f"instance {item.sop_uid}: {exc}") from None


def _frames_answer(
    service: Service, request: Request, item: Instance, layout: PixelLayout, numbers: list[int]
) -> Response | PoolJob:
    limits = service.limits
    for number in numbers:
        if number > layout.frames:
            raise HTTPError(404, f"instance {item.sop_uid} has {layout.frames} frames")
    header = service.header(item)
    facts = json_image_facts(header)
    media, target = _frame_choice(layout, facts, parse_accept(request.headers.get("accept")))
    with open_source(item.path) as source:
        pixels = pixel_source(layout, source.fp)
        if target is not None:
            stored_frames = None
            if layout.encapsulated and pixels is source.fp and facts is not None:
                # The worker decodes each frame from its fragments, parsing nothing again.
                with contextlib.suppress(FrameError):
                    planar = (header.get("00280006", {}).get("Value") or [0])[0] == 1
                    ranges = frame_ranges(layout, pixels)
                    if len(ranges) == layout.frames:
                        stored_frames = StoredFrames(layout.transfer_syntax, facts, planar, ranges)
            return _transcoded_frames(item, numbers, media, target, limits, stored_frames)
        if pixels is not source.fp:
            # Pixel data the header holds inline (pixel_source: e.g. of a deflated data set,
            # inflated to be read) is already in memory: its frames are cut from it.
            return _inflated_frames(layout, pixels, numbers, media, item.sop_uid, limits)
        ranges = _asked_ranges(layout, pixels, numbers, item.sop_uid, limits)
    part_type = f"{media}; transfer-syntax={layout.transfer_syntax}"
    parts = ((part_type, _range_chunks(item.path, ranges[number - 1])) for number in numbers)
    return multipart_response(parts, media)


def _transcoded_frames(
    item: Instance,
    numbers: list[int],
    media: str,
    target: str,
    limits: HttpLimits,
    stored_frames: StoredFrames | None,
) -> PoolJob:
    """Frames decoded (and encoded in ``target`` when it is encapsulated) by a worker, all
    before the status is sent: at most max_transcode_bytes (and max_frames_bytes) of them."""
    limit = min(limits.max_frames_bytes, limits.max_transcode_bytes)
    task = ("frames", item.path, numbers, target, limit, stored_frames)

    def build(run: Runner) -> Response:
        made: list[bytes] = _run(run, task, f"frames of instance {item.sop_uid}")
        part_type = f"{media}; transfer-syntax={target}"
        return multipart_response(((part_type, _memory_chunks(f)) for f in made), media)

    return PoolJob(build)


def _asked_ranges(
    layout: PixelLayout, pixels: BinaryIO, numbers: list[int], instance: str, limits: HttpLimits
) -> list[list[tuple[int, int]]]:
    """Each frame's byte ranges in ``pixels``, once the frames asked for (``numbers``) are
    found there and add up to at most max_frames_bytes."""
    try:
        ranges = frame_ranges(layout, pixels)
    except FrameError as exc:
        raise HTTPError(404, f"instance {instance}: {exc}") from None
    for number in numbers:
        if number > len(ranges):
            raise HTTPError(404, f"instance {instance} has {len(ranges)} frames")
    total = sum(length for number in numbers for _, length in ranges[number - 1])
    if total > limits.max_frames_bytes:
        raise HTTPError(
            400,
            f"the frames asked for add up to {total} bytes: at most"
            f" {limits.max_frames_bytes} in one request (ask in several)",
        )
    return ranges


def _inflated_frames(
    layout: PixelLayout,
    pixels: BinaryIO,
    numbers: list[int],
    media: str,
    instance: str,
    limits: HttpLimits,
) -> Response:
    ranges = _asked_ranges(layout, pixels, numbers, instance, limits)
    part_type = f"{media}; transfer-syntax={layout.transfer_syntax}"

    def frame(number: int) -> Iterator[bytes]:
        yield read_ranges(pixels, ranges[number - 1])

    return multipart_response(((part_type, frame(number)) for number in numbers), media)
