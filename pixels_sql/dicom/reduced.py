"""Reduced-resolution decoding for thumbnails: decode fewer pixels when the codec allows it.

JPEG 2000 (PS3.5 A.4.4, A.4.6) is a wavelet pyramid: OpenJPEG, through Pillow, can stop r
resolution levels short of full size, decoding an image 2^r times smaller in each direction for
a fraction of the work. JPEG baseline (PS3.5 A.4.1) lets libjpeg scale the inverse DCT by 1/2,
1/4 or 1/8 (Pillow's ``draft``). Both paths hand back stored values at a lower resolution; the
same Modality/VOI LUTs then apply. Anything these paths do not cover returns None and the caller
decodes the full frame with pydicom.

Frames larger than the caller's pixel budget are never decoded in full: native (uncompressed)
frames are read subsampled, every k-th row and column straight from the file; JPEG 2000 and JPEG
baseline frames are decoded at a resolution within the budget, or not at all.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import convert_color_space

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
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
# Float Pixel Data and Double Float Pixel Data (PS3.3 C.7.6.3.1.4): IEEE floats of this many bytes.
_FLOAT_BYTES = {0x7FE00008: 4, 0x7FE00009: 8}
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
    wavelet: bool = False  # a JPEG 2000 low-pass band (the caller checks it for aliasing)


def reduced_frame(
    fp: BinaryIO,
    location: PixelDataLocation,
    header: Dataset,
    syntax: str,
    index: int,
    target: tuple[int, int],
    budget: int | None = None,
) -> ReducedFrame | None:
    """Stored values of frame ``index`` at a resolution at least ``OVERSAMPLING`` times
    ``target`` (w, h), or None when no reduced path applies (then decode in full).

    With a ``budget`` (samples), the result never holds more samples than that, and a native
    frame holding more is read subsampled (:func:`subsampled_native`); None then means that
    nothing here decodes the frame within the budget.
    """
    rows, columns = int(header.Rows), int(header.Columns)
    if not location.encapsulated:
        samples = int(header.get("SamplesPerPixel", 1) or 1)
        if budget is None or rows * columns * samples <= budget:
            return None  # pydicom reads one native frame as cheaply as we could
        return subsampled_native(fp, location, header, syntax, index, budget)
    factor = min(columns / target[0], rows / target[1]) / OVERSAMPLING
    if factor < 2:
        return None
    if syntax in JPEG_2000_SYNTAXES:
        return _jpeg_2000(fp, location, header, index, factor, budget)
    if syntax == JPEG_BASELINE:
        oversampled = (target[0] * OVERSAMPLING, target[1] * OVERSAMPLING)
        return _jpeg_baseline(fp, location, header, index, oversampled, budget)
    return None


def subsampled_native(
    fp: BinaryIO,
    location: PixelDataLocation,
    header: Dataset,
    syntax: str,
    index: int,
    budget: int,
) -> ReducedFrame | None:
    """Every k-th row and column of native frame ``index``, k the smallest step that fits the
    frame in ``budget`` samples, read row by row from the file (seek, read one row, keep every
    k-th sample): memory is the result plus one row, never the frame.

    Values equal pydicom's decode at the same positions: byte order, sign, unused high bits
    cleared or sign-extended (PS3.5 8.1.1, as pydicom's ``correct_unused_bits``), YBR_FULL
    converted to RGB. None for layouts it does not read: BitsAllocated 1 (frames packed across
    byte boundaries, PS3.5 8.1.1), YBR_*_422 (two pixels share chroma samples, PS3.3 C.7.6.3.1.2),
    more than 3 samples, and 8-bit OW data in big endian (byte-swapped in pairs, PS3.5 A.3).
    """
    rows, columns = int(header.Rows), int(header.Columns)
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    allocated = int(header.get("BitsAllocated", 0) or 0)
    photometric = str(header.get("PhotometricInterpretation", "")).upper()
    big_endian = syntax == EXPLICIT_VR_BIG_ENDIAN
    if location.tag in _FLOAT_BYTES:
        kind, item = "f", _FLOAT_BYTES[location.tag]
    elif allocated in (8, 16, 32, 64):
        kind = "i" if int(header.get("PixelRepresentation", 0) or 0) else "u"
        item = allocated // 8
    else:
        return None
    if samples not in (1, 3) or (samples == 3 and photometric not in ("RGB", "YBR_FULL")):
        return None
    if big_endian and item == 1 and location.vr == "OW":
        return None
    step = 2
    while -(-rows // step) * -(-columns // step) * samples > budget:
        step += 1
    start = (step - 1) // 2  # centred in its k x k block: fewer edge samples lost
    planar = samples == 3 and int(header.get("PlanarConfiguration", 0) or 0) == 1
    stored = np.dtype(f"{'>' if big_endian else '<'}{kind}{item}")
    row_samples = columns if planar else columns * samples
    row_bytes, plane_bytes = row_samples * item, rows * columns * item
    frame_bytes = rows * columns * samples * item
    if (index + 1) * frame_bytes > location.length:
        raise ValueError(f"There is insufficient pixel data to contain {index + 1} frames")
    frame_start = location.offset + index * frame_bytes
    kept = range(start, rows, step)
    width = len(range(start, columns, step))
    out = np.empty((len(kept), width, samples), dtype=stored.newbyteorder("="))
    for plane in range(samples if planar else 1):
        for position, row in enumerate(kept):
            fp.seek(frame_start + plane * plane_bytes + row * row_bytes)
            data = fp.read(row_bytes)
            if len(data) != row_bytes:
                raise EOFError(f"pixel data row {row} ends early")
            values = np.frombuffer(data, stored)
            if planar:
                out[position, :, plane] = values[start::step]
            else:
                out[position] = values.reshape(columns, samples)[start::step]
    if kind in "iu" and 0 < int(header.get("BitsStored", allocated) or allocated) < allocated:
        shift = allocated - int(header.BitsStored)
        np.left_shift(out, shift, out=out)
        np.right_shift(out, shift, out=out)  # arithmetic for signed: sign extension
    values = out[..., 0] if samples == 1 else out
    if photometric == "YBR_FULL":
        values = convert_color_space(values, "YBR_FULL", "RGB")
    # Sample i sits at full-grid position start + k*i; a uniform downscale puts reduced pixel i
    # at k*i + (k-1)/2: shift the resize by the difference, in reduced pixels.
    return ReducedFrame(values, (step - 1 - 2 * start) / (2 * step))


def _codestream(fp: BinaryIO, location: PixelDataLocation, header: Dataset, index: int) -> bytes:
    """One frame's compressed bytes, read through the offset table or by walking fragments."""
    fp.seek(location.offset)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    return get_frame(fp, index, number_of_frames=frames)


def _jpeg_2000(
    fp: BinaryIO,
    location: PixelDataLocation,
    header: Dataset,
    index: int,
    factor: float,
    budget: int | None,
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
    rows, columns = int(header.Rows), int(header.Columns)

    def over_budget(level: int) -> bool:
        return budget is not None and -(-rows >> level) * -(-columns >> level) * samples > budget

    reduce = 0
    while reduce < levels and (2 ** (reduce + 1) <= factor or over_budget(reduce)):
        reduce += 1
    # Some codestreams refuse deeper levels than they declare ("broken data stream"): step back.
    for level in range(reduce, 0, -1):
        if over_budget(level):
            return None  # stepping back only grows the image
        try:
            image = Image.open(io.BytesIO(codestream))
            image.reduce = level
            image.load()
        except Image.DecompressionBombError:
            return None  # Pillow refuses > 179 Mpixel images at open, before any reduction
        except (OSError, ValueError):
            continue
        array = np.asarray(image)
        if samples == 1 and array.dtype == np.uint16 and precision < 16:
            # Pillow scales samples up to 16 bits; shift back to the stored values.
            array = array >> (16 - precision)
        return ReducedFrame(array, (2**level - 1) / 2 ** (level + 1), wavelet=True)
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
    budget: int | None,
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
    try:
        image = Image.open(io.BytesIO(codestream))
    except Image.DecompressionBombError:
        return None  # Pillow refuses > 179 Mpixel images at open, before any scaling
    mode = "RGB" if samples == 3 else "L"
    image.draft(mode, target)  # libjpeg scales the IDCT to the smallest size >= target
    if budget is not None and image.size[0] * image.size[1] * samples > budget:
        return None  # 1/8 is libjpeg's smallest scale
    image.load()
    if image.mode != mode:
        image = image.convert(mode)
    # libjpeg's scaled IDCT averages whole blocks: its samples are centred, no phase shift.
    return ReducedFrame(np.asarray(image))
