"""Rendered resources (PS3.18 8.3.5, 10.4.1.1.3) and thumbnails (PS3.18 10.4.1.1.4): study,
series, instance and frames as consumer images, made by dicom_thumbnail's renderer
(pixels_sql/dicom/thumbnail.py) in the render pool's worker processes.

- An instance is rendered from its first frame (``/frames/{n}/rendered`` for another); a study
  or a series is a ``multipart/related`` response with one part per instance that renders, in
  series and instance order (instances without an image, such as a structured report, are
  left out); several frames are one part each.
- Media types: ``image/jpeg`` (the default, PS3.18 Table 8.7.4-1 *), ``image/png``,
  ``image/gif``, each single-frame.
- Parameters (PS3.18 8.3.5.1): ``viewport=vw,vh`` fits the image into ``vw`` x ``vh`` (never
  enlarged), ``viewport=vw,vh,sx,sy,sw,sh`` renders that region of the frame (a negative
  ``sw`` or ``sh``, a flip, is refused); ``window=center,width[,linear|linear-exact|sigmoid]``
  replaces the image's VOI (PS3.3 C.11.2; monochrome images); ``quality=1..100`` for JPEG.
  ``annotation`` and an ``iccprofile`` other than ``no`` are ignored with a Warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pixels_sql.dicom.thumbnail import VOI_FUNCTIONS, RenderOptions
from pixels_sql.servers.dicomweb.http import (
    HTTPError,
    RenderJob,
    Request,
    Response,
    multipart_response,
    parse_accept,
    warning_headers,
)
from pixels_sql.servers.dicomweb.query import Resource
from pixels_sql.servers.dicomweb.render import PoolJob, Runner
from pixels_sql.servers.dicomweb.wado import frame_numbers, image_layout

if TYPE_CHECKING:
    from pixels_sql.servers.dicomweb.index import Instance
    from pixels_sql.servers.dicomweb.service import Service

# Media type -> the renderer's format; the first is the default (PS3.18 8.7.4: image/jpeg).
IMAGE_TYPES = {"image/jpeg": "jpeg", "image/png": "png", "image/gif": "gif"}
DEFAULT_IMAGE_TYPE = "image/jpeg"
THUMBNAIL_SIZE = 128
# The longer side of a rendering at most (a larger image is shrunk, a viewport capped).
RENDERED_MAX = 4096
_SIZE = r"[1-9][0-9]{0,4}"
_VIEWPORT = re.compile(
    rf"({_SIZE}),({_SIZE})(?:,([0-9]{{1,5}}),([0-9]{{1,5}}),(-?{_SIZE}),(-?{_SIZE}))?"
)
_NUMBER = re.compile(r"[+-]?([0-9]{1,9}(\.[0-9]{0,6})?|\.[0-9]{1,6})")
# PS3.18 8.3.5.1.4 writes the VOI LUT Function in lower case with a hyphen.
_FUNCTIONS = {name.lower().replace("_", "-"): name for name in VOI_FUNCTIONS}


def image_type(request: Request, several: bool = False) -> str:
    """The media type of the images asked for: from Accept, each part's type of a multipart
    one when ``several`` images are sent; 406 if none is offered."""
    for entry in parse_accept(request.headers.get("accept")):
        media_type = entry.media_type
        if several and media_type == "multipart/related":
            media_type = entry.params.get("type", DEFAULT_IMAGE_TYPE)
        if media_type in IMAGE_TYPES:
            return media_type
        if media_type in ("*/*", "image/*"):
            return DEFAULT_IMAGE_TYPE
    offered = ", ".join(IMAGE_TYPES)
    raise HTTPError(406, f"rendered images are {offered} (each image a part when several)")


def render_options(request: Request, frame: int | None = None) -> tuple[RenderOptions, list[str]]:
    """The options and warnings of a rendered request's query parameters (PS3.18 8.3.5.1);
    400 for a malformed one. The size is RENDERED_MAX: an image is never enlarged, so that is
    its own size unless larger, or a viewport's."""
    window, region, box, quality, warnings = None, None, None, None, []
    for name, value in request.query:
        if name == "viewport":
            box, region = _viewport(value)
        elif name == "window":
            window = _window(value)
        elif name == "quality":
            if not re.fullmatch(r"[0-9]{1,3}", value) or not 1 <= int(value) <= 100:
                raise HTTPError(400, "quality is a number from 1 to 100")
            quality = int(value)
        elif name == "annotation":
            warnings.append("annotation is not supported: images carry no burned-in text")
        elif name == "iccprofile":
            if value != "no":
                warnings.append("iccprofile is not supported: no ICC profile is embedded")
        else:
            warnings.append(f"the parameter {name[:40]} is not supported: ignored")
    options = RenderOptions(frame=frame, window=window, region=region, box=box, quality=quality)
    return options, warnings


def _viewport(value: str) -> tuple[tuple[int, int], tuple[int, int, int, int] | None]:
    match = _VIEWPORT.fullmatch(value)
    if match is None:
        raise HTTPError(400, "viewport is vw,vh or vw,vh,sx,sy,sw,sh in pixels")
    width, height = (min(int(match.group(n)), RENDERED_MAX) for n in (1, 2))
    if match.group(3) is None:
        return (width, height), None
    column, row, region_width, region_height = (int(match.group(n)) for n in range(3, 7))
    if region_width < 0 or region_height < 0:
        raise HTTPError(400, "a viewport's negative sw or sh (a flip) is not supported")
    return (width, height), (column, row, region_width, region_height)


def _window(value: str) -> tuple[float, float, str]:
    parts = value.split(",")
    if len(parts) not in (2, 3) or not all(_NUMBER.fullmatch(part) for part in parts[:2]):
        raise HTTPError(400, "window is center,width[,linear|linear-exact|sigmoid]")
    function = _FUNCTIONS.get(parts[2] if len(parts) == 3 else "linear")
    if function is None:
        raise HTTPError(400, f"a window's function is one of {', '.join(_FUNCTIONS)}")
    center, width = float(parts[0]), float(parts[1])
    if width <= 0:
        raise HTTPError(400, "a window's width must be positive")
    return center, width, function


def _image(run: Runner, item: Instance, fmt: str, options: RenderOptions) -> Any:
    """The rendering of one instance, or an HTTPError saying why there is none."""
    image, reason, message = run(("render", item.path, RENDERED_MAX, fmt, options))
    if image is not None:
        return image
    if reason == "bad_request":
        raise HTTPError(400, f"instance {item.sop_uid}: {message}")
    if reason == "error":
        raise RuntimeError(f"rendering {item.path} failed: {message}")
    raise HTTPError(404, f"instance {item.sop_uid} cannot be rendered: {reason}")


def _answer(media_type: str, image: bytes, warnings: list[str]) -> Response:
    return Response(200, [("content-type", media_type), *warning_headers(warnings)], image)


def rendered(service: Service, request: Request, resource: Resource) -> PoolJob:
    """The instance rendered (its first frame), fitted into ``viewport`` if given."""
    media_type = image_type(request)
    (item,) = service.catalogued(resource)
    service.check_fresh(item)
    options, warnings = render_options(request, frame=1)

    def build(run: Runner) -> Response:
        return _answer(media_type, _image(run, item, IMAGE_TYPES[media_type], options), warnings)

    return PoolJob(build)


def rendered_frames(
    service: Service, request: Request, resource: Resource, frame_list: str
) -> PoolJob:
    """Frames of the instance rendered: one image, or a part for each of several frames."""
    numbers = frame_numbers(frame_list, service.limits.max_rendered_images)
    several = len(numbers) > 1
    media_type = image_type(request, several)
    (item,) = service.catalogued(resource)
    frames = image_layout(service, item).frames
    if max(numbers) > frames:
        raise HTTPError(404, f"instance {item.sop_uid} has {frames} frames")
    base, warnings = render_options(request)
    fmt = IMAGE_TYPES[media_type]

    def options(number: int) -> RenderOptions:
        return RenderOptions(number, base.window, base.region, base.box, base.quality)

    def build(run: Runner) -> Response:
        first = _image(run, item, fmt, options(numbers[0]))
        if not several:
            return _answer(media_type, first, warnings)

        def parts() -> Iterator[tuple[str, list[bytes]]]:
            yield media_type, [first]
            for number in numbers[1:]:
                yield media_type, [_image(run, item, fmt, options(number))]

        response = multipart_response(parts(), media_type)
        response.headers += warning_headers(warnings)
        return response

    return PoolJob(build)


def rendered_instances(service: Service, request: Request, resource: Resource) -> PoolJob:
    """A study or series rendered: a part for each instance that renders (PS3.18 10.4.1.1.3),
    its first frame. The first image is made before the status is sent (404 when no instance
    renders); the others while the body is sent, one at a time."""
    media_type = image_type(request, several=True)
    instances = service.catalogued(resource)
    limit = service.limits.max_rendered_images
    if len(instances) > limit:
        raise HTTPError(
            400,
            f"{len(instances)} instances: at most {limit} are rendered in one request"
            " (ask for each series, or raise max_rendered_images)",
        )
    options, warnings = render_options(request, frame=1)
    fmt = IMAGE_TYPES[media_type]

    def attempt(run: Runner, item: Instance) -> bytes | None:
        try:
            service.check_fresh(item)
            return _image(run, item, fmt, options)
        except HTTPError as exc:
            if exc.status == 400:
                raise
            return None  # no image (a report, a changed file): not a part

    def build(run: Runner) -> Response:
        position, first = 0, None
        while first is None:
            if position == len(instances):
                raise HTTPError(404, "no instance of it renders")
            first = attempt(run, instances[position])
            position += 1

        def parts() -> Iterator[tuple[str, list[bytes]]]:
            yield media_type, [first]
            for item in instances[position:]:
                image = attempt(run, item)
                if image is not None:
                    yield media_type, [image]

        response = multipart_response(parts(), media_type)
        response.headers += warning_headers(warnings)
        return response

    return PoolJob(build)


def thumbnail(service: Service, request: Request, resource: Resource) -> RenderJob:
    """A small rendering of the instance, or of the first instance of a series or study that
    renders (a study may start with a SR); ``viewport=vw,vh`` for another size."""
    media_type = image_type(request)
    size = THUMBNAIL_SIZE
    for name, value in request.query:
        if name == "viewport":
            box, _ = _viewport(value)
            size = max(box)
    candidates = []
    last_error: HTTPError | None = None
    for item in service.catalogued(resource)[:20]:
        try:
            service.check_fresh(item)
        except HTTPError as exc:
            last_error = exc
            continue
        candidates.append((item.sop_uid, item.path))
    if not candidates:
        raise last_error or HTTPError(404, "nothing to render")
    return RenderJob(candidates, size, IMAGE_TYPES[media_type], media_type)
