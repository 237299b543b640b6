"""Burned-in text found by OCR: Clean Pixel Data (PS3.15 E.3.1) for images no rule describes.

The engine is Tesseract (Debian's ``tesseract-ocr``, ``scripts/check-dicom-tools`` installs it;
``PIXELS_SQL_TESSERACT`` names another command), run as a process per image read with its
time bounded: an optional backend, so :func:`is_available` says whether it can be used.

Burned-in annotations are drawn by the modality in the brightest value over dark anatomy
(ultrasound and secondary-capture bands, dose screens), so an image is read as a mask of its
brightest pixels — anatomy's grey texture, which Tesseract otherwise reads as words, mostly
falls away — and enlarged when it is small (Tesseract reads text best ~20 pixels high;
modality fonts are 6 to 14). An image that is mostly bright (a scanned document) is read as
it is: its text is dark. Each word Tesseract is sure enough of becomes a region, padded by a
few pixels against anti-aliasing.

A multi-frame image is read on its first, middle and last frames (reading every frame of a
cine loop costs seconds per frame); the regions found are blacked out in every frame, as the
overlays of a cine loop stay put.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

import numpy as np

from pixels_sql import config
from pixels_sql.deid.pixels import DecodedImage
from pixels_sql.errors import DicomReadError

# When a word Tesseract reads counts as text: its confidence (0-100) reaches MIN_CONFIDENCE
# and it has MIN_CHARACTERS letters or digits (single marks are what it makes of anatomy's
# edges) — or, whatever its confidence, it has SURE_CHARACTERS: a name read badly (a caret
# between its parts, an odd font) is still text to black out.
MIN_CONFIDENCE = 50.0
MIN_CHARACTERS = 2
SURE_CHARACTERS = 4
PADDING = 2
# Small images are read enlarged (by a whole factor, at most MAX_SCALE) to about this many
# pixels on their longer side: a 640x480 ultrasound at twice its size, 320x240 at four times.
READ_SIZE = 1280
MAX_SCALE = 4
# The mask keeps the pixels at or above this percentile of the image's grey values — or at or
# above BRIGHT_ENOUGH (of 255) when the percentile is white itself (much text, or a white
# frame) — and never below mid-grey.
BRIGHT_PERCENTILE = 99.0
BRIGHT_ENOUGH = 217.0
# Page segmentation mode 11, "sparse text": as much text as possible, in no particular order —
# annotations are scattered words, not a page.
TESSERACT_ARGUMENTS = ("stdin", "stdout", "--psm", "11", "-l", "eng", "tsv")
TIMEOUT_SECONDS = 60.0


class OcrError(DicomReadError):
    """OCR could not read an image (``ocr_failed``)."""


class OcrUnavailable(RuntimeError):
    """No Tesseract where the settings say: a setting to fix, not a file's fault."""


@dataclass(frozen=True)
class TextRegion:
    """A word of burned-in text: where (pixels from the top left of ``frame``), what, and
    Tesseract's confidence (0-100)."""

    frame: int
    x: int
    y: int
    width: int
    height: int
    text: str
    confidence: float


def command() -> str:
    return config.settings.deid_tesseract


def is_available() -> bool:
    """Whether the Tesseract command of the settings runs here."""
    return _runs(command())


@cache
def _runs(name: str) -> bool:
    return shutil.which(name) is not None


def require() -> None:
    """Raise :class:`OcrUnavailable` unless :func:`is_available`."""
    if not is_available():
        raise OcrUnavailable(
            f"OCR needs Tesseract, and {command()!r} is not a command here: install Debian's"
            f" tesseract-ocr, or name the command with {config.settings.variable('deid_tesseract')}"
        )


def frames_to_read(count: int) -> list[int]:
    """The frames read of an image of ``count`` frames: the first, middle and last."""
    return sorted({0, count // 2, max(count - 1, 0)})


def grey_frames(pixels: np.ndarray, frames: int, samples: int, photometric: str) -> list[Any]:
    """``(frame number, 8-bit grey image as shown)`` of the frames :func:`frames_to_read`
    picks from a decoded ``pixels`` array (pydicom's pixel_array: frames first when several,
    samples last for colour; colour already RGB)."""
    stack = pixels if frames > 1 else pixels[None, ...]
    result = []
    for number in frames_to_read(frames):
        frame = stack[number].astype(np.float64)
        if samples == 3:
            # The brightest channel, not luma: annotations are drawn in saturated colours
            # (yellow, green), as bright as white in one channel at least.
            frame = frame.max(axis=-1)
        low, high = float(frame.min()), float(frame.max())
        scaled = (frame - low) * (255.0 / (high - low)) if high > low else frame * 0.0
        if photometric.strip().upper() == "MONOCHROME1":
            scaled = 255.0 - scaled  # PS3.3 C.7.6.3.1.2: the lowest value shows white
        result.append((number, scaled.astype(np.uint8)))
    return result


def prepared(grey: np.ndarray) -> tuple[np.ndarray, int]:
    """The image Tesseract reads (dark text on white) and its scale."""
    if float(np.median(grey)) > 127:
        page = grey  # a mostly bright image: its text is dark already
    else:
        percentile = float(np.percentile(grey, BRIGHT_PERCENTILE))
        threshold = max(min(percentile, BRIGHT_ENOUGH), 128.0)
        page = np.where(grey >= threshold, 0, 255).astype(np.uint8)
    scale = max(1, min(MAX_SCALE, round(READ_SIZE / max(grey.shape))))
    if scale > 1:
        page = page.repeat(scale, axis=0).repeat(scale, axis=1)
    return page, scale


def text_in_image(grey: np.ndarray, frame: int = 0, name: str = "<image>") -> list[TextRegion]:
    """The words Tesseract finds in an 8-bit grey image, in its coordinates."""
    from PIL import Image

    require()
    page, scale = prepared(grey)
    png = io.BytesIO()
    Image.fromarray(page).save(png, "PNG", compress_level=1)
    environment = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # Spark runs a task per core
    try:
        done = subprocess.run(
            [command(), *TESSERACT_ARGUMENTS],
            input=png.getvalue(),
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            env=environment,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise OcrError(name, "ocr_failed", f"Tesseract took over {TIMEOUT_SECONDS:g} s") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise OcrError(name, "ocr_failed", f"Tesseract failed: {detail[-1] if detail else ''}")
    rows, cols = grey.shape
    return [
        _padded(word, scale, frame, cols, rows)
        for word in _words(done.stdout.decode("utf-8", "replace"))
    ]


class _Word(NamedTuple):
    left: int
    top: int
    width: int
    height: int
    confidence: float
    text: str


def _words(tsv: str) -> list[_Word]:
    """The words of Tesseract's TSV (level 5 rows) that count as text (:data:`MIN_CONFIDENCE`,
    :data:`MIN_CHARACTERS`, :data:`SURE_CHARACTERS`)."""
    words = []
    for line in tsv.splitlines()[1:]:
        cells = line.split("\t")
        if len(cells) < 12 or cells[0] != "5":
            continue
        text, confidence = cells[11].strip(), float(cells[10])
        characters = sum(c.isalnum() for c in text)
        if characters < SURE_CHARACTERS and (
            confidence < MIN_CONFIDENCE or characters < MIN_CHARACTERS
        ):
            continue
        left, top, width, height = (int(cell) for cell in cells[6:10])
        words.append(_Word(left, top, width, height, confidence, text))
    return words


def _padded(word: _Word, scale: int, frame: int, columns: int, rows: int) -> TextRegion:
    x = max(word.left // scale - PADDING, 0)
    y = max(word.top // scale - PADDING, 0)
    right = min(-(-(word.left + word.width) // scale) + PADDING, columns)
    bottom = min(-(-(word.top + word.height) // scale) + PADDING, rows)
    return TextRegion(frame, x, y, right - x, bottom - y, word.text, round(word.confidence, 1))


def text_in_pixels(image: DecodedImage, name: str = "<image>") -> list[TextRegion]:
    """The burned-in text of a decoded image (the frames :func:`grey_frames` picks)."""
    found = []
    for number, grey in grey_frames(image.pixels, image.frames, image.samples, image.photometric):
        found.extend(text_in_image(grey, number, name))
    return found
