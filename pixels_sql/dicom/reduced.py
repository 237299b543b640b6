"""Reduced-resolution decoding for thumbnails: decode fewer pixels when the codec allows it.

JPEG 2000 (PS3.5 A.4.4, A.4.6) is a wavelet pyramid: OpenJPEG, through Pillow, can stop r
resolution levels short of full size, decoding an image 2^r times smaller in each direction for
a fraction of the work. JPEG baseline (PS3.5 A.4.1) lets libjpeg scale the inverse DCT by 1/2,
1/4 or 1/8 (Pillow's ``draft``). Both paths hand back stored values at a lower resolution; the
same Modality/VOI LUTs then apply. Anything these paths do not cover returns None and the caller
decodes the full frame with pydicom.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame

from pixels_sql.dicom.meta import PixelDataLocation

JPEG_2000_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Image Compression (Lossless Only)
        "1.2.840.10008.1.2.4.91",  # JPEG 2000 Image Compression
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
        "1.2.840.10008.1.2.4.203",  # HTJ2K
    }
)
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
# The reduced image keeps at least this many pixels per thumbnail pixel in each direction, so the
# final Lanczos resize still low-passes it as it would the full image (fidelity, see the tests).
OVERSAMPLING = 2


@dataclass(frozen=True)
class ReducedFrame:
    """Stored values at a reduced resolution, and where its samples sit.

    ``phase``: the JPEG 2000 low-pass band at level r samples the full grid at 2^r * i, not at
    the centre of each 2^r block, i.e. (2^r - 1) / 2^(r+1) of a reduced pixel up-left of where a
    uniform downscale would put it (ISO 15444-1 F.3.8). The resize corrects by this shift.
    """

    values: np.ndarray
    phase: float = 0.0


def reduced_frame(
    fp: BinaryIO,
    location: PixelDataLocation,
    header: Dataset,
    syntax: str,
    index: int,
    target: tuple[int, int],
) -> ReducedFrame | None:
    """Stored values of frame ``index`` at a resolution at least ``OVERSAMPLING`` times
    ``target`` (w, h), or None when no reduced path applies (then decode in full)."""
    rows, columns = int(header.Rows), int(header.Columns)
    factor = min(columns / target[0], rows / target[1]) / OVERSAMPLING
    if factor < 2 or not location.encapsulated:
        return None
    if syntax in JPEG_2000_SYNTAXES:
        return _jpeg_2000(fp, location, header, index, factor)
    if syntax == JPEG_BASELINE:
        oversampled = (target[0] * OVERSAMPLING, target[1] * OVERSAMPLING)
        return _jpeg_baseline(fp, location, header, index, oversampled)
    return None


def _codestream(fp: BinaryIO, location: PixelDataLocation, header: Dataset, index: int) -> bytes:
    """One frame's compressed bytes, read through the offset table or by walking fragments."""
    fp.seek(location.offset)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    return get_frame(fp, index, number_of_frames=frames)


def _jpeg_2000(
    fp: BinaryIO, location: PixelDataLocation, header: Dataset, index: int, factor: float
) -> ReducedFrame | None:
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    bits_stored = int(header.BitsStored)
    if int(header.get("PixelRepresentation", 0) or 0) != 0:
        return None  # Pillow does not carry the sign of signed codestreams
    codestream = _codestream(fp, location, header, index)
    info = _siz_and_cod(codestream)
    if info is None:
        return None
    signed, precision, levels = info
    if signed or precision != bits_stored:
        return None  # pydicom reconciles such mismatches; leave them to it
    if samples == 3 and precision != 8:
        return None
    if samples not in (1, 3):
        return None
    reduce = 0
    while reduce < levels and 2 ** (reduce + 1) <= factor:
        reduce += 1
    # Some codestreams refuse deeper levels than they declare ("broken data stream"): step back.
    for level in range(reduce, 0, -1):
        try:
            image = Image.open(io.BytesIO(codestream))
            image.reduce = level
            image.load()
        except (OSError, ValueError):
            continue
        array = np.asarray(image)
        if samples == 1 and array.dtype == np.uint16 and precision < 16:
            # Pillow scales samples up to 16 bits; shift back to the stored values.
            array = array >> (16 - precision)
        return ReducedFrame(array, (2**level - 1) / 2 ** (level + 1))
    return None


def _siz_and_cod(codestream: bytes) -> tuple[bool, int, int] | None:
    """(signed, precision, decomposition levels) from the SIZ and COD markers (ISO 15444-1
    A.5.1, A.6.1), or None if they cannot be found. A JP2 file wrapper is skipped."""
    start = codestream.find(b"\xff\x4f\xff\x51")  # SOC followed by SIZ
    if start < 0:
        return None
    siz = start + 2
    # SIZ: marker(2) Lsiz(2) Rsiz(2) Xsiz..YTOsiz(32) Csiz(2) then Ssiz of component 0.
    ssiz_at = siz + 2 + 2 + 2 + 32 + 2
    cod = codestream.find(b"\xff\x52", siz)
    # COD: marker(2) Lcod(2) Scod(1) SGcod(4) then SPcod starting with decomposition levels.
    levels_at = cod + 2 + 2 + 1 + 4
    if cod < 0 or len(codestream) <= max(ssiz_at, levels_at):
        return None
    ssiz = codestream[ssiz_at]
    return bool(ssiz & 0x80), (ssiz & 0x7F) + 1, codestream[levels_at]


def _jpeg_baseline(
    fp: BinaryIO,
    location: PixelDataLocation,
    header: Dataset,
    index: int,
    target: tuple[int, int],
) -> ReducedFrame | None:
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    if int(header.BitsStored) != 8 or samples not in (1, 3):
        return None
    photometric = str(header.get("PhotometricInterpretation", "")).upper()
    if samples == 3 and photometric not in ("YBR_FULL_422", "YBR_FULL"):
        # Colour JPEGs labelled RGB may or may not carry a colour transform; pydicom and
        # libjpeg decide that differently, so only the common YBR case takes this path.
        return None
    codestream = _codestream(fp, location, header, index)
    image = Image.open(io.BytesIO(codestream))
    mode = "RGB" if samples == 3 else "L"
    image.draft(mode, target)  # libjpeg scales the IDCT to the smallest size >= target
    image.load()
    if image.mode != mode:
        image = image.convert(mode)
    # libjpeg's scaled IDCT averages whole blocks: its samples are centred, no phase shift.
    return ReducedFrame(np.asarray(image))
