"""Render a DICOM image as a small PNG/JPEG the way a viewer shows it (PS3.3 C.11, PS3.4 N.2).

The pipeline per image: pick one frame (the middle one of a multi-frame image), decode only that
frame, apply the Modality LUT (rescale or Modality LUT Sequence), the VOI LUT (window, VOI LUT
Sequence, VOI LUT Function) or a robust window when the file gives none, invert MONOCHROME1,
apply a palette, and resize to the physical aspect ratio (Pixel Spacing / Pixel Aspect Ratio).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

from pixels_sql.dicom.codecs import decode_frame, full_dataset, syntax_name
from pixels_sql.dicom.encoding import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, PIXEL_DATA_TAGS
from pixels_sql.dicom.meta import locate_pixel_data, read_pydicom_header, transfer_syntax
from pixels_sql.dicom.reduced import reduced_frame
from pixels_sql.errors import DicomReadError, classify
from pixels_sql.io.sources import Source, display_name, open_source

DEFAULT_MAX_SIZE = 256
FORMATS = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF"}
# Robust window for images without VOI attributes: these percentiles of the modality values.
AUTO_WINDOW_PERCENTILES = (0.5, 99.5)
# Integer frames whose values span fewer than this many levels are mapped through a lookup table.
MAX_LUT_ENTRIES = 1 << 20
# Decode JPEG 2000 / JPEG baseline at a reduced resolution when the thumbnail is much smaller than
# the image (see reduced.py). Module-level so tests and benchmarks can compare both paths.
REDUCED_DECODING = True
# The pixel budget: a frame with more samples than this (Rows x Columns x SamplesPerPixel, 32- and
# 64-bit samples counted 4 times) is never decoded whole. Native frames are read subsampled
# (every k-th row and column, reduced.py); JPEG 2000 and JPEG baseline frames are decoded at a
# reduced resolution within the budget; anything else fails with reason ``too_large``. 2^25 =
# 33.5 M samples: mammograms (4096 x 5120, 21 M) and 5792 x 5792 frames still render from every
# pixel. A budget-sized 16-bit frame costs ~6 bytes per sample here (pydicom's read buffer and
# array, the 8-bit display image; the lookup runs in blocks of rows), ~200 MiB; 32-bit and float
# samples take the floating-point pipeline (~40 bytes each), hence their weight.
PIXEL_BUDGET = 1 << 25
# A reduced JPEG 2000 image showing sharp, high-contrast detail (text, graphics, burnt-in
# annotations) is decoded again in full: the wavelet low-pass band (ISO 15444-1 F.3.8, the 5/3
# filter passes half its band unattenuated) aliases such detail into the thumbnail by up to ~20
# levels where the full decode's Lanczos filter removes it. "Sharp": more than SHARP_SHARE of the
# reduced pixels have a second difference (4c - n - s - e - w) / 4 above SHARP_LEVELS of 255.
# Measured at 4x reduction: text-bearing film scans 0.6-23% of pixels, MR2 of pydicom-data 0.14%
# (0.5% at 8x: its 64 px thumbnails decode in full), RG1 and RG3 under 0.01%.
SHARP_LEVELS = 64
SHARP_SHARE = 0.003
# to_display works on blocks of about this many samples, so that its int64 lookup offsets (8
# bytes a sample) and float temporaries never exist for a whole frame.
BLOCK_SAMPLES = 1 << 20
# Functional group macros holding a frame's rescale and window (PS3.3 C.7.6.16.2.9 / .10).
_FUNCTIONAL_GROUP_FIELDS = (
    ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept", "RescaleType")),
    ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")),
)


class RenderOptionsError(ValueError):
    """Options this image cannot take (a frame it does not have, a region outside it): the
    caller's mistake, not the file's."""


# VOI LUT Functions a caller may ask for (PS3.3 C.11.2.1.3).
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
JPEG_QUALITY = 90


@dataclass(frozen=True)
class RenderOptions:
    """What a caller may choose of a rendering beyond its size (what PS3.18 8.3.5.1 lets a
    rendered resource's request ask for); None: the thumbnail's own choice.

    ``frame``: the frame, from 1 (else the middle one); ``window``: (center, width, VOI LUT
    function) in place of the image's VOI (PS3.3 C.11.2), monochrome images only; ``region``:
    (column, row, width, height) of the frame to render, in its pixels; ``box``: (width,
    height) the image is fitted into (never enlarged) instead of a square of ``max_size``;
    ``quality``: JPEG quality, 1-100."""

    frame: int | None = None
    window: tuple[float, float, str] | None = None
    region: tuple[int, int, int, int] | None = None
    box: tuple[int, int] | None = None
    quality: int | None = None

    def __post_init__(self) -> None:
        if self.frame is not None and self.frame < 1:
            raise ValueError(f"frames are numbered from 1, got {self.frame}")
        if self.window is not None and (self.window[1] <= 0 or self.window[2] not in VOI_FUNCTIONS):
            raise ValueError(f"a window is (center, width > 0, one of {VOI_FUNCTIONS})")
        if self.region is not None and (min(self.region[:2]) < 0 or min(self.region[2:]) < 1):
            raise ValueError("a region is (column >= 0, row >= 0, width >= 1, height >= 1)")
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise ValueError(f"JPEG quality is 1 to 100, got {self.quality}")


DEFAULT_OPTIONS = RenderOptions()


@dataclass(frozen=True)
class ThumbnailResult:
    """A rendered image, or the reason it could not be rendered."""

    data: bytes | None
    reason: str | None = None
    message: str | None = None


def render_thumbnail(
    path: str,
    max_size: int = DEFAULT_MAX_SIZE,
    fmt: str = "png",
    options: RenderOptions = DEFAULT_OPTIONS,
) -> bytes:
    """PNG (or JPEG) bytes of the image in ``path``, its longer side at most ``max_size`` pixels;
    ``options``: a frame, window, region, box or JPEG quality of the caller's (the rendered
    resources of DICOMweb, PS3.18 8.3.5).

    Raises :class:`DicomReadError` (reasons ``no_pixel_data``, ``undecodable`` and those of the
    header reader) when the file cannot be rendered, :class:`RenderOptionsError` when the image
    cannot take ``options``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown thumbnail format {fmt!r}; use one of {', '.join(FORMATS)}")
    if max_size < 1:
        raise ValueError(f"max_size must be a positive number of pixels, got {max_size}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open_source(path) as source:
                image = _render(source, max_size, options)
    except (DicomReadError, RenderOptionsError):
        raise
    except Exception as exc:  # a decoder or LUT failure is data about the file
        raise classify(display_name(path), exc) from exc
    return encode(image, fmt, options.quality)


def read_thumbnail_result(
    path: str, max_size: int = DEFAULT_MAX_SIZE, fmt: str = "png"
) -> ThumbnailResult:
    """Like :func:`render_thumbnail` but returns failures as data instead of raising."""
    try:
        return ThumbnailResult(render_thumbnail(path, max_size, fmt))
    except DicomReadError as exc:
        return ThumbnailResult(None, exc.reason, exc.message)


def encode(image: Image.Image, fmt: str, quality: int | None = None) -> bytes:
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.save(buffer, "JPEG", quality=quality or JPEG_QUALITY)
    elif fmt == "gif":
        image.save(buffer, "GIF")  # colour images lose colours to GIF's 256-entry palette
    else:
        # Level 3: half the time of zlib's default 6 for ~10% larger thumbnails.
        image.save(buffer, "PNG", compress_level=3)
    return buffer.getvalue()


def _render(source: Source, max_size: int, options: RenderOptions) -> Image.Image:
    local, fp, size = source.name, source.fp, source.size
    header = read_pydicom_header(local, fp, size)
    syntax = transfer_syntax(header)
    location = None
    if syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        header = full_dataset(fp)  # PS3.5 A.5: nothing is readable without inflating
        has_pixels = any(tag in header for tag in PIXEL_DATA_TAGS)
    else:
        # Also checks that the pixel data is all there (else: truncated).
        location = locate_pixel_data(
            local, fp, size, header.original_encoding, header.get("BitsAllocated")
        )
        has_pixels = location is not None
    if not has_pixels:
        raise DicomReadError(
            local, "no_pixel_data", f"{_describe(header)} has no pixel data to render"
        )
    frames = int(header.get("NumberOfFrames", 1) or 1)
    index = frames // 2  # the middle frame of a multi-frame image
    if options.frame is not None:
        if options.frame > frames:
            raise RenderOptionsError(f"frame {options.frame} of an image of {frames} frames")
        index = options.frame - 1
    region = _region(header, options.region)
    size_out = target_size(header, max_size, region and region[2:], options.box)
    budget = frame_budget(header)
    over_budget = frame_samples(header) > budget
    reduced = None
    window = options.window
    # A percentile window taken from a reduced image is not the full image's: averaging
    # narrows the histogram (noise, thin bright text), by up to ~100 levels measured. Such
    # images decode in full unless over the budget (then the window is the reduced one's).
    # A region is cut from the full frame.
    reducible = REDUCED_DECODING and not automatic_window(header, index, window) and not region
    if location is not None and (over_budget or reducible):
        reduced = reduced_frame(fp, location, header, syntax, index, size_out, budget)
    if region is not None and over_budget:
        raise DicomReadError(
            local, "too_large", "a region is cut from the full frame, which is over the budget"
        )
    if reduced is None and over_budget:
        raise DicomReadError(
            local,
            "too_large",
            f"the {int(header.Rows)}x{int(header.Columns)} frame"
            f" ({frame_samples(header)} samples) is over the pixel budget of {budget}"
            f" samples and {syntax_name(syntax)} ({syntax}) cannot be decoded at a reduced size",
        )
    if reduced is not None:
        rendered, phase = to_display(reduced.values, header, index, window), reduced.phase
        if not (reduced.wavelet and not over_budget and sharp_detail(rendered)):
            return resize(rendered, size_out, phase)
    frame = decode_frame(source, header, index if frames > 1 else None)
    display = to_display(frame, header, index, window)
    if region is not None:
        column, row, width, height = region
        display = display[row : row + height, column : column + width]
    return resize(display, size_out)


def _region(
    header: Dataset, region: tuple[int, int, int, int] | None
) -> tuple[int, int, int, int] | None:
    """The region within the frame (cut at its edges), as (column, row, width, height); None
    for the whole frame."""
    if region is None:
        return None
    column, row, width, height = region
    rows, columns = int(header.Rows), int(header.Columns)
    if column >= columns or row >= rows:
        raise RenderOptionsError(f"the region starts outside the {columns}x{rows} frame")
    return column, row, min(width, columns - column), min(height, rows - row)


def frame_samples(header: Dataset) -> int:
    """Rows x Columns x SamplesPerPixel: the samples of one frame."""
    return int(header.Rows) * int(header.Columns) * int(header.get("SamplesPerPixel", 1) or 1)


def frame_budget(header: Dataset) -> int:
    """:data:`PIXEL_BUDGET` in samples of this image: a quarter for 32- and 64-bit samples."""
    return PIXEL_BUDGET // (4 if int(header.get("BitsAllocated", 16) or 16) > 16 else 1)


def sharp_detail(display: np.ndarray) -> bool:
    """Whether more than :data:`SHARP_SHARE` of the display image's pixels (any channel) have a
    second difference above :data:`SHARP_LEVELS`: detail a wavelet low-pass band aliases."""
    if min(display.shape[:2]) < 3:
        return False
    grey = display.astype(np.int16)
    centre = grey[1:-1, 1:-1]
    second = 4 * centre - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    sharp = np.abs(second) > 4 * SHARP_LEVELS
    if sharp.ndim == 3:
        sharp = sharp.any(axis=2)
    return float(sharp.mean()) > SHARP_SHARE


def _describe(header: Dataset) -> str:
    modality = header.get("Modality")
    sop_class = header.get("SOPClassUID")
    name = getattr(sop_class, "name", None) if sop_class else None
    return f"this {name or 'data set'}" + (f" ({modality})" if modality else "")


def to_display(
    frame: np.ndarray,
    header: Dataset,
    index: int = 0,
    window: tuple[float, float, str] | None = None,
) -> np.ndarray:
    """Map decoded stored values to 8-bit display values (grey HxW or RGB HxWx3); ``window``
    in place of the image's VOI (monochrome only)."""
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    integers = frame.dtype.kind in "iu"
    low, high = (int(frame.min(initial=0)), int(frame.max(initial=0))) if integers else (0, 0)
    by_value = integers and high - low < MAX_LUT_ENTRIES
    if photometric == "PALETTE COLOR":
        if by_value:  # the palette is a per-value lookup: look up each distinct index once
            counts = _value_counts(frame, low, high)
            rgb = apply_color_lut(_domain(frame, low, high), header)
            return _lookup(frame, low, _palette_to_uint8(rgb[counts > 0], rgb, header))
        return _palette_to_uint8(apply_color_lut(frame, header), None, header)
    if frame.ndim == 3:
        # RGB, or YBR already converted to RGB by the decoder / pydicom (PS3.3 C.7.6.3.1.2).
        scale = float(2 ** int(header.get("BitsStored", 8) or 8) - 1)
        out = np.empty(frame.shape, dtype=np.uint8)
        for rows in _row_blocks(frame):
            out[rows] = _to_uint8(frame[rows].astype(np.float64) / scale)
        return out
    lut_view = frame_lut_view(header, index, window)
    invert = photometric == "MONOCHROME1"  # PS3.3 C.7.6.3.1.2: minimum value is white
    if by_value:
        # Stored values are integers: run the LUT pipeline once per distinct value and index
        # the frame into the result, instead of computing in floating point per pixel. The
        # histogram (a pass over the frame) only feeds the percentile window: a frame with a
        # window or VOI LUT of its own (most CT and MR) skips it.
        counts = _value_counts(frame, low, high) if _automatic_voi(lut_view) else None
        table = _monochrome_unit(_domain(frame, low, high), lut_view, counts, invert)
        return _lookup(frame, low, _to_uint8(table))
    return _to_uint8(_monochrome_unit(frame, lut_view, None, invert))


def _row_blocks(frame: np.ndarray) -> list[slice]:
    """Slices of whole rows of about :data:`BLOCK_SAMPLES` samples each."""
    per_row = max(1, frame[:1].size)
    step = max(1, BLOCK_SAMPLES // per_row)
    return [slice(start, start + step) for start in range(0, frame.shape[0], step)]


def _value_counts(frame: np.ndarray, low: int, high: int) -> np.ndarray:
    """How often each value low..high occurs in the integer ``frame``."""
    counts = np.zeros(high - low + 1, dtype=np.int64)
    for rows in _row_blocks(frame):
        offsets = frame[rows].astype(np.int64).ravel() - low
        counts += np.bincount(offsets, minlength=high - low + 1)
    return counts


def _domain(frame: np.ndarray, low: int, high: int) -> np.ndarray:
    return np.arange(low, high + 1, dtype=np.int64).astype(frame.dtype)


def _lookup(frame: np.ndarray, low: int, table: np.ndarray) -> np.ndarray:
    """``table[frame - low]``, a block of rows at a time (index arrays exist per block only):
    8- and 16-bit samples by their bit pattern, wider ones through int64 offsets."""
    out = np.empty(frame.shape + table.shape[1:], dtype=table.dtype)
    if frame.dtype.kind in "iu" and frame.dtype.itemsize <= 2 and frame.dtype.isnative:
        # 8- and 16-bit samples index a table laid out by their bit pattern (at most 65,536
        # entries) directly: no int64 copy and subtraction per block.
        unsigned = np.dtype(f"u{frame.dtype.itemsize}")
        full = np.zeros((1 << 8 * frame.dtype.itemsize, *table.shape[1:]), dtype=table.dtype)
        full[_domain(frame, low, low + len(table) - 1).view(unsigned)] = table
        bits = frame.view(unsigned)
        for rows in _row_blocks(frame):
            out[rows] = full[bits[rows]]
        return out
    for rows in _row_blocks(frame):
        out[rows] = table[frame[rows].astype(np.int64) - low]
    return out


def _palette_to_uint8(used: np.ndarray, rgb: np.ndarray | None, header: Dataset) -> np.ndarray:
    """Palette entries ``rgb`` (or ``used`` itself) to 8 bits; ``used``: the entries in use."""
    bits = _palette_bits(header)
    if bits == 16 and int(used.max(initial=0)) < 256:
        # Some writers store 8-bit entries in a table declared 16-bit (PS3.3 C.7.6.3.1.5);
        # viewers take entries that all fit in 8 bits as 8-bit, and so do we.
        bits = 8
    entries = used if rgb is None else rgb
    return _to_uint8(entries.astype(np.float64) / float(2**bits - 1))


def _monochrome_unit(
    stored: np.ndarray, view: Dataset, counts: np.ndarray | None, invert: bool
) -> np.ndarray:
    """Modality LUT then VOI to [0, 1]; ``counts`` weighs each stored value (histogram)."""
    values = apply_modality_lut(stored, view)
    scaled = voi(values, view, counts)
    return 1.0 - scaled if invert else scaled


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


def _palette_bits(header: Dataset) -> int:
    descriptor = header.get("RedPaletteColorLookupTableDescriptor")
    if descriptor is not None and len(descriptor) == 3:
        return 16 if int(descriptor[2]) > 8 else 8
    return 16


def frame_lut_view(
    header: Dataset, index: int, window: tuple[float, float, str] | None = None
) -> Dataset:
    """A data set with the rescale and window that apply to frame ``index``: ``window``
    (center, width, function) when given, in place of any VOI LUT or window of the file.

    Enhanced multi-frame objects keep them in functional groups (PS3.3 C.7.6.16.2.9 Pixel Value
    Transformation, C.7.6.16.2.10 Frame VOI LUT), per frame or shared; the top level otherwise.
    """
    view = _functional_groups_view(header, index)
    if window is None:
        return view
    windowed = Dataset()
    windowed.update(view)
    windowed.WindowCenter, windowed.WindowWidth, windowed.VOILUTFunction = window
    if "VOILUTSequence" in windowed:
        del windowed.VOILUTSequence
    return windowed


def _functional_groups_view(header: Dataset, index: int) -> Dataset:
    groups = []
    if "PerFrameFunctionalGroupsSequence" in header:
        per_frame = header.PerFrameFunctionalGroupsSequence
        if index < len(per_frame):
            groups.append(per_frame[index])
    if "SharedFunctionalGroupsSequence" in header and header.SharedFunctionalGroupsSequence:
        groups.append(header.SharedFunctionalGroupsSequence[0])
    if not groups:
        return header
    view = Dataset()
    view.update(header)
    for sequence, fields in _FUNCTIONAL_GROUP_FIELDS:
        for group in groups:
            if sequence in group and group[sequence].value:
                item = group[sequence][0]
                for field in fields:
                    if field in item:
                        setattr(view, field, item[field].value)
                break
    return view


def voi(values: np.ndarray, view: Dataset, counts: np.ndarray | None = None) -> np.ndarray:
    """VOI transform to [0, 1] (PS3.3 C.11.2): VOI LUT Sequence, else window, else automatic."""
    if "VOILUTSequence" in view and view.VOILUTSequence:
        item = view.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2])
        return apply_voi(values, view, 0).astype(np.float64) / float(2**bits - 1)
    center, width = _first_window(view)
    if center is not None and width is not None and width > 0:
        function = str(view.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        return window(values.astype(np.float64), center, width, function)
    return auto_window(values.astype(np.float64), view, counts)


def _first_window(view: Dataset) -> tuple[float | None, float | None]:
    center, width = view.get("WindowCenter"), view.get("WindowWidth")
    if center is None or width is None or center == "" or width == "":
        return None, None
    if not isinstance(center, (int, float)):
        center = center[0] if len(center) else None
    if not isinstance(width, (int, float)):
        width = width[0] if len(width) else None
    if center is None or width is None:
        return None, None
    return float(center), float(width)


def window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """VOI LUT Function (PS3.3 C.11.2.1.2): LINEAR, LINEAR_EXACT or SIGMOID, to [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width <= 1:  # LINEAR needs width >= 1; width 1 is a threshold at the center
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def auto_window(values: np.ndarray, view: Dataset, counts: np.ndarray | None = None) -> np.ndarray:
    """No VOI in the file: 8-bit unsigned data as stored, else a percentile window.

    ``counts`` (one per value) makes ``values`` a histogram of the image rather than the image.
    """
    if _shown_as_stored(view):
        return values / float(2 ** int(view.get("BitsStored", 16) or 16) - 1)
    if counts is None:
        low, high = np.percentile(values, AUTO_WINDOW_PERCENTILES)
        present = values
    else:
        low, high = weighted_percentiles(values, counts, AUTO_WINDOW_PERCENTILES)
        present = values[counts > 0]
    if high <= low:
        low, high = float(present.min()), float(present.max())
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _shown_as_stored(view: Dataset) -> bool:
    """8-bit unsigned values without a Modality LUT are display values already."""
    bits = int(view.get("BitsStored", 16) or 16)
    rescaled = "RescaleSlope" in view or "ModalityLUTSequence" in view
    return bits <= 8 and int(view.get("PixelRepresentation", 0) or 0) == 0 and not rescaled


def automatic_window(
    header: Dataset, index: int, window: tuple[float, float, str] | None = None
) -> bool:
    """Whether frame ``index`` of a monochrome image gets the percentile window (no VOI LUT,
    no usable window, not 8-bit values shown as stored, none asked for): see :func:`voi`."""
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or window is not None:
        return False
    return _automatic_voi(frame_lut_view(header, index))


def _automatic_voi(view: Dataset) -> bool:
    """Whether :func:`voi` takes the percentile window for ``view`` (see automatic_window)."""
    if "VOILUTSequence" in view and view.VOILUTSequence:
        return False
    center, width = _first_window(view)
    if center is not None and width is not None and width > 0:
        return False
    return not _shown_as_stored(view)


def weighted_percentiles(
    values: np.ndarray, counts: np.ndarray, percentiles: tuple[float, ...]
) -> list[float]:
    """``np.percentile`` (linear method) of the data where ``values[i]`` occurs ``counts[i]``
    times, without expanding it."""
    order = np.argsort(values, kind="stable")
    ordered, cumulative = values[order], np.cumsum(counts[order])
    total = int(cumulative[-1])
    results = []
    for percentile in percentiles:
        position = percentile / 100.0 * (total - 1)
        below = int(np.floor(position))
        above = min(below + 1, total - 1)
        low = ordered[np.searchsorted(cumulative, below, side="right")]
        high = ordered[np.searchsorted(cumulative, above, side="right")]
        results.append(float(low + (high - low) * (position - below)))
    return results


def target_size(
    header: Dataset,
    max_size: int,
    region: tuple[int, int] | None = None,
    box: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """(width, height) of the thumbnail: physical aspect ratio, longer side ≤ ``max_size``, or
    within ``box`` (width, height) when given; ``region``: (width, height) of the part of the
    frame shown, else the frame.

    Computed from Rows/Columns and the pixel spacing, never from the decoded array, so every
    decode path gives the same size. Images smaller than ``max_size`` are not enlarged.
    """
    columns, rows = region if region is not None else (int(header.Columns), int(header.Rows))
    row_spacing, column_spacing = _spacing(header)
    physical_height = rows * row_spacing
    physical_width = columns * column_spacing
    # Keep the sampling of the denser axis; stretch the other to the physical ratio.
    scale_to_pixels = min(row_spacing, column_spacing)
    height = physical_height / scale_to_pixels
    width = physical_width / scale_to_pixels
    if box is not None:
        shrink = min(1.0, box[0] / width, box[1] / height)
    else:
        shrink = min(1.0, max_size / max(height, width))
    return max(1, round(width * shrink)), max(1, round(height * shrink))


def _spacing(header: Dataset) -> tuple[float, float]:
    """(row spacing, column spacing): adjacent rows' distance first (PS3.3 10.7.1.3)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = header.get(keyword)
        if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
            return float(value[0]), float(value[1])
    ratio = header.get("PixelAspectRatio")  # vertical \ horizontal (PS3.3 C.7.6.3.1.7)
    if ratio is not None and len(ratio) == 2 and int(ratio[0]) > 0 and int(ratio[1]) > 0:
        return float(ratio[0]), float(ratio[1])
    return 1.0, 1.0


def resize(display: np.ndarray, size: tuple[int, int], phase: float = 0.0) -> Image.Image:
    """Lanczos resize to ``size``; ``phase`` shifts the source grid (reduced JPEG 2000 frames)."""
    if phase == 0.0:
        image = Image.fromarray(display)
        if image.size == size:
            return image
        return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    # Pillow's box may not leave the image: pad by replicating edges, then shift the box.
    margin = 2
    widths = ((margin, margin), (margin, margin)) + (((0, 0),) if display.ndim == 3 else ())
    image = Image.fromarray(np.pad(display, widths, mode="edge"))
    height, width = display.shape[:2]
    box = (margin + phase, margin + phase, margin + width + phase, margin + height + phase)
    return image.resize(size, Image.Resampling.LANCZOS, box=box)
