"""Transcoding: an instance or its frames in another transfer syntax (PS3.18 8.7.3, 8.7.4).

Pixel data is decoded and encoded by :mod:`pixels_sql.dicom.codecs` only. What can be produced:

- the native syntaxes of :data:`NATIVE_TARGETS` from anything that decodes (a lossy JPEG is
  decompressed: no further loss, and LossyImageCompression stays "01", PS3.3 C.7.6.1.1.5);
- the lossless encapsulated syntaxes an installed encoder provides (``encodable_syntaxes``);
- never a lossy encoding: those syntaxes are offered only as stored (``transfer-syntax=*``).

The SOP Instance UID is kept: a lossless re-encoding, or the decompression of a lossy one, does
not change the image a receiver sees (PS3.18 8.7.3.5 allows the origin server to convert).
Decoders are native code that can crash or run long on hostile data: servers call these
functions in worker processes (servers/dicomweb/render.py), never in their own.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder, get_encoder, iter_pixels, pixel_array
from pydicom.pixels.encoders.base import ENCODING_PROFILES
from pydicom.pixels.utils import compress, decompress
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from pixels_sql.dicom import codecs
from pixels_sql.dicom.codecs import encoding_plugins, full_dataset, syntax_name, with_plugins
from pixels_sql.dicom.meta import transfer_syntax
from pixels_sql.io.sources import open_source

# PS3.18 8.7.3.5.2: the default transfer syntax of application/dicom and of native frames.
DEFAULT_SYNTAX = ExplicitVRLittleEndian
# Native syntaxes produced from anything decodable (PS3.5 A.1, A.2, A.5).
NATIVE_TARGETS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
NATIVE_SYNTAXES = frozenset({*NATIVE_TARGETS, ExplicitVRBigEndian})
# Syntaxes whose compression is always lossy (the DCT processes of PS3.5 A.4.1, 10918-1): a
# decompressed image says so in LossyImageCompression (PS3.3 C.7.6.1.1.5) if it did not.
ALWAYS_LOSSY = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
}
# PS3.18 Table 8.7.3-2 (8.7.4): a frame media type and the lossless syntax it means when the
# request names none (image/jpeg is lossy by default: only ever sent as stored).
FRAME_MEDIA_DEFAULT_SYNTAX = {
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
}


class TranscodeError(Exception):
    """Not produced: ``reason`` is ``unsupported`` (no encoder for this image), ``undecodable``
    (no decoder reads the stored pixel data) or ``too_large`` (over the caller's byte limit)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def producible_syntaxes() -> tuple[str, ...]:
    """Every syntax :func:`transcode_instance` may produce here (the stored one aside)."""
    return (*NATIVE_TARGETS, *codecs.encodable_syntaxes())


@dataclass(frozen=True)
class ImageFacts:
    """The Image Pixel attributes an encoder's profile checks (PS3.5 8.2), after decoding."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    frames: int

    @property
    def decoded_photometric(self) -> str:
        """pydicom's decoders give YBR colour as RGB (``as_rgb``)."""
        if self.samples_per_pixel == 3 and self.photometric.startswith("YBR"):
            return "RGB"
        return self.photometric

    def frame_encoding_options(self) -> dict[str, Any]:
        """pydicom's ``Encoder.encode`` keywords for one decoded frame of this image: its
        Image Pixel attributes, the decoded photometric interpretation, pixels interleaved."""
        # The other fields are the encoder's keywords by the same names.
        options = {k: v for k, v in asdict(self).items() if k not in ("photometric", "frames")}
        options["photometric_interpretation"] = self.decoded_photometric
        options["planar_configuration"] = 0
        options["number_of_frames"] = 1
        return options

    @property
    def native_bytes(self) -> int:
        bits = self.rows * self.columns * self.samples_per_pixel * self.bits_allocated
        return self.frames * ((bits + 7) // 8)


def image_facts(get: Any) -> ImageFacts | None:
    """The facts from ``get(keyword, default)`` (a pydicom Dataset's get, or a DICOM JSON
    reader); None without Rows/Columns (no image)."""
    rows, columns = get("Rows", None), get("Columns", None)
    if not rows or not columns:
        return None
    return ImageFacts(
        rows=int(rows),
        columns=int(columns),
        samples_per_pixel=int(get("SamplesPerPixel", 1) or 1),
        bits_allocated=int(get("BitsAllocated", 8) or 8),
        bits_stored=int(get("BitsStored", None) or get("BitsAllocated", 8) or 8),
        pixel_representation=int(get("PixelRepresentation", 0) or 0),
        photometric=str(get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2"),
        frames=max(1, int(get("NumberOfFrames", 1) or 1)),
    )


# The Image Pixel attributes image_facts reads, by their DICOM JSON keys (PS3.18 F.2).
_JSON_KEYS = {
    "Rows": "00280010",
    "Columns": "00280011",
    "SamplesPerPixel": "00280002",
    "BitsAllocated": "00280100",
    "BitsStored": "00280101",
    "PixelRepresentation": "00280103",
    "PhotometricInterpretation": "00280004",
    "NumberOfFrames": "00280008",
}


# Float and Double Float Pixel Data (PS3.3 C.7.6.24): native only, no encapsulated syntax holds
# them (PS3.5 A.4).
FLOAT_PIXEL_KEYWORDS = ("FloatPixelData", "DoubleFloatPixelData")
FLOAT_PIXEL_KEYS = ("7FE00008", "7FE00009")


def check_json_encodable(meta: dict[str, Any], target: str) -> None:
    """:func:`check_encodable` from an instance's DICOM JSON (float pixel data included)."""
    check_encodable(json_image_facts(meta), target, any(k in meta for k in FLOAT_PIXEL_KEYS))


def json_image_facts(meta: dict[str, Any]) -> ImageFacts | None:
    """:func:`image_facts` of an instance's DICOM JSON; None without Pixel Data."""
    if "7FE00010" not in meta:
        return None

    def get(keyword: str, default: Any) -> Any:
        values = meta.get(_JSON_KEYS[keyword], {}).get("Value")
        return values[0] if values and values[0] is not None else default

    return image_facts(get)


def check_encodable(facts: ImageFacts | None, target: str, float_pixels: bool = False) -> None:
    """TranscodeError ``unsupported`` if ``target`` is neither native nor an installed lossless
    encoder, or if its encoder's profile (PS3.5 8.2, as pydicom lists it) rules the decoded
    image out. Checked before any decoding, from the attributes alone."""
    if target in NATIVE_TARGETS:
        return
    available = codecs.encodable_syntaxes()
    if target not in available:
        raise TranscodeError("unsupported", _not_offered(target))
    if float_pixels:
        raise TranscodeError(
            "unsupported", f"{syntax_name(target)} ({target}) cannot hold float pixel data"
        )
    if facts is None:
        return  # no image: the data set is written in the syntax, nothing to encode
    for photometric, samples, representations, allocated, stored in ENCODING_PROFILES.get(
        UID(target), []
    ):
        if (
            facts.decoded_photometric == photometric
            and facts.samples_per_pixel == samples
            and facts.pixel_representation in representations
            and facts.bits_allocated in allocated
            and facts.bits_stored in stored
        ):
            signed_part = facts.pixel_representation and facts.bits_stored != facts.bits_allocated
            if target == "1.2.840.10008.1.2.4.80" and signed_part:
                break  # signed samples must fill their container for CharLS (codecs.py)
            return
    raise TranscodeError(
        "unsupported",
        f"{syntax_name(target)} ({target}) cannot hold this image"
        f" ({facts.decoded_photometric}, {facts.samples_per_pixel} samples,"
        f" {facts.bits_allocated}/{facts.bits_stored} bits,"
        f" pixel representation {facts.pixel_representation})",
    )


def _not_offered(target: str) -> str:
    offered = ", ".join(producible_syntaxes())
    name = syntax_name(target) if UID(target).is_valid else "an unknown syntax"
    return f"{name} ({target}) is not produced here; transcoding offers {offered}"


def transcode_instance(path: str, target: str, max_bytes: int) -> bytes:
    """The instance in ``path`` as a PS3.10 file in transfer syntax ``target``."""
    with open_source(path) as source:
        dataset = full_dataset(source.fp)
    if "TransferSyntaxUID" not in (dataset.file_meta or {}):
        dataset.file_meta = dataset.file_meta or FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = transfer_syntax(dataset)
    stored = UID(dataset.file_meta.TransferSyntaxUID)
    facts = image_facts(dataset.get) if "PixelData" in dataset else None
    check_encodable(facts, target, any(k in dataset for k in FLOAT_PIXEL_KEYWORDS))
    if facts is not None and facts.native_bytes > max_bytes:
        raise TranscodeError(
            "too_large",
            f"the decoded pixel data would take {facts.native_bytes} bytes: at most"
            f" {max_bytes} are transcoded in one piece (ask for transfer-syntax=*)",
        )
    if facts is not None:
        _to_native_little_endian(dataset, stored)
    elif stored == ExplicitVRBigEndian:
        # No image, but binary values read big endian all the same (PS3.5 A.3).
        _swap_words(dataset)
        dataset.set_original_encoding(dataset.original_encoding[0], True)
    if UID(target).is_encapsulated:
        if facts is not None:
            _compress(dataset, UID(target))
        else:
            dataset.file_meta.TransferSyntaxUID = target
    else:
        dataset.file_meta.TransferSyntaxUID = target
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.save_as(
            buffer,
            implicit_vr=target == ImplicitVRLittleEndian,
            little_endian=True,
            enforce_file_format=True,
        )
    return buffer.getvalue()


def _to_native_little_endian(dataset: Dataset, stored: UID) -> None:
    """Decode encapsulated or big endian Pixel Data in place to native little endian."""
    if stored.is_encapsulated:
        try:
            with_plugins(
                stored,
                lambda plugin: decompress(
                    dataset, decoding_plugin=plugin, generate_instance_uid=False
                ),
            )
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            raise TranscodeError(
                "undecodable", f"{syntax_name(stored)} ({stored}): {codecs.first_line(exc)}"
            ) from exc
        method = ALWAYS_LOSSY.get(str(stored))
        if method and "LossyImageCompression" not in dataset:
            dataset.LossyImageCompression = "01"
            if "LossyImageCompressionMethod" not in dataset:
                dataset.LossyImageCompressionMethod = method
    elif stored == ExplicitVRBigEndian:
        facts = image_facts(dataset.get)
        array = pixel_array(dataset)
        assert facts is not None
        _swap_words(dataset)
        # The swapped data set is little endian now (save_as refuses to convert it).
        dataset.set_original_encoding(dataset.original_encoding[0], True)
        dataset.PixelData = native_bytes(array, facts, planar=_planar(dataset))
        dataset["PixelData"].VR = "OB" if facts.bits_allocated <= 8 else "OW"
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


# The byte size of one word of the binary VRs pydicom keeps as raw bytes (PS3.5 Table 6.2-1).
_WORD_SIZES = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _swap_words(dataset: Dataset) -> None:
    """Byte-swap the words of binary values read big endian (PS3.5 A.3: OW, OL, OF, OD and OV
    are kept as raw bytes by pydicom; numbers of other VRs are parsed, and written anew)."""

    def swap(_: Dataset, element: Any) -> None:
        size = _WORD_SIZES.get(element.VR)
        if size and isinstance(element.value, bytes | bytearray) and len(element.value) % size == 0:
            words = np.frombuffer(element.value, dtype=f">u{size}")
            element.value = words.astype(f"<u{size}").tobytes()

    dataset.walk(swap)


def _planar(dataset: Dataset) -> bool:
    return int(dataset.get("SamplesPerPixel", 1) or 1) > 1 and bool(
        int(dataset.get("PlanarConfiguration", 0) or 0)
    )


def _compress(dataset: Dataset, target: UID) -> None:
    failures = []
    for plugin in encoding_plugins(target):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compress(dataset, target, encoding_plugin=plugin, generate_instance_uid=False)
            return
        except (RuntimeError, ValueError) as exc:
            failures.append(f"{plugin}: {codecs.first_line(exc)}")
    raise TranscodeError(
        "unsupported", f"{syntax_name(target)} ({target}): " + "; ".join(failures or ["none"])
    )


def native_bytes(array: np.ndarray, facts: ImageFacts, planar: bool = False) -> bytes:
    """Decoded samples as native little endian pixel data of ``facts.bits_allocated`` bits a
    sample (PS3.5 8.1.1: 1-bit samples packed, first pixel in the lowest bit); ``planar``:
    colour by plane (PlanarConfiguration 1, PS3.3 C.7.6.3.1.3)."""
    if planar and array.ndim >= 3 and array.shape[-1] == facts.samples_per_pixel:
        array = np.moveaxis(array, -1, -3)
    if facts.bits_allocated == 1:
        return np.packbits(array.astype(np.uint8).ravel(), bitorder="little").tobytes()
    if array.dtype.kind in "iu":
        dtype = np.dtype(f"<{array.dtype.kind}{facts.bits_allocated // 8}")
    else:
        dtype = array.dtype.newbyteorder("<")
    return np.ascontiguousarray(array.astype(dtype, copy=False)).tobytes()


@dataclass(frozen=True)
class StoredFrames:
    """What a server already knows of an encapsulated instance's frames (frames.py): where
    each frame's fragments lie in the file and what the image is. With it, frames are decoded
    from their own bytes, without parsing the data set again."""

    syntax: str
    facts: ImageFacts
    planar: bool
    # For each frame, from the first: its fragments' value (offset, length) in the file.
    ranges: list[list[tuple[int, int]]]


# An empty Basic Offset Table item (PS3.5 A.4): a frame's fragments behind it make an
# encapsulated value of one frame, for pydicom's decoders.
_EMPTY_OFFSET_TABLE = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"


def _check_frames_size(facts: ImageFacts, count: int, max_bytes: int) -> None:
    one = facts.native_bytes // facts.frames
    if one * count > max_bytes:
        raise TranscodeError(
            "too_large",
            f"the decoded frames asked for add up to {one * count} bytes: at most"
            f" {max_bytes} in one request (ask in several)",
        )


def _undecodable(stored: str, exc: BaseException) -> TranscodeError:
    return TranscodeError(
        "undecodable", f"{syntax_name(stored)} ({stored}): {codecs.first_line(exc)}"
    )


def decoded_frames(
    path: str, numbers: list[int], max_bytes: int, stored_frames: StoredFrames | None = None
) -> tuple[list[np.ndarray], ImageFacts, bool]:
    """Frames ``numbers`` (from 1) of the instance in ``path``, decoded (each distinct frame
    once, reading only the frames asked for), with the image's facts and whether its native
    frames are colour-by-plane."""
    wanted = sorted({number - 1 for number in numbers})
    with open_source(path) as source:
        fp: BinaryIO = source.fp
        decoded = None
        if stored_frames is not None:
            _check_frames_size(stored_frames.facts, len(numbers), max_bytes)
            facts, planar = stored_frames.facts, stored_frames.planar
            with contextlib.suppress(TranscodeError):  # then decoded from the data set, below
                decoded = decode_fragments(fp, wanted, stored_frames)
        if decoded is None:
            fp.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                header = pydicom.dcmread(fp, force=True, stop_before_pixels=True)
            stored = transfer_syntax(header)
            found = image_facts(header.get)
            if found is None:
                raise TranscodeError("unsupported", "the instance has no image")
            facts, planar = found, _planar(header)
            _check_frames_size(facts, len(numbers), max_bytes)
            source_of: Dataset | BinaryIO = fp
            if stored == DeflatedExplicitVRLittleEndian:
                source_of = full_dataset(fp)  # PS3.5 A.5: nothing is readable without inflating
            try:
                # pydicom parses the data set once and reads only the frames asked for.
                decoded = with_plugins(
                    stored, lambda plugin: _read_frames(source_of, wanted, stored, plugin)
                )
            except (RuntimeError, NotImplementedError, ValueError) as exc:
                raise _undecodable(stored, exc) from exc
    by_index = dict(zip(wanted, decoded, strict=True))
    return [by_index[number - 1] for number in numbers], facts, planar


def decode_fragments(
    fp: BinaryIO, indices: list[int], stored_frames: StoredFrames
) -> list[np.ndarray]:
    """Each frame of ``indices`` decoded from its fragments alone."""
    syntax = UID(stored_frames.syntax)
    decoder = get_decoder(syntax)
    description = _frame_description(stored_frames)
    frames = []
    for index in indices:
        value = _frame_value(fp, stored_frames.ranges[index])

        def decode(plugin: str, value: bytes = value) -> np.ndarray:
            return decoder.as_array(value, decoding_plugin=plugin, **description)[0]

        try:
            frames.append(with_plugins(syntax, decode))
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            raise _undecodable(syntax, exc) from exc
    return frames


def _rle_native_frames(
    path: str, numbers: list[int], max_bytes: int, stored_frames: StoredFrames
) -> list[bytes] | None:
    """Native frames of a one-sample RLE Lossless image, as its decoder's bytes: RLE codes the
    frame's bytes themselves (PS3.5 G.2, one segment per byte of a sample), so what it gives
    back is the native frame, byte for byte, without the array pydicom would build and check
    (a quarter of the time). None for any other image: the general path decodes it."""
    facts = stored_frames.facts
    if (
        stored_frames.syntax != RLELossless
        or facts.samples_per_pixel != 1
        or facts.bits_allocated not in (8, 16, 32)
    ):
        return None
    _check_frames_size(facts, len(numbers), max_bytes)
    size = facts.rows * facts.columns * facts.bits_allocated // 8
    decoder = get_decoder(RLELossless)
    description = _frame_description(stored_frames)
    made: dict[int, bytes] = {}
    with open_source(path) as source:
        for number in sorted(set(numbers)):
            value = _frame_value(source.fp, stored_frames.ranges[number - 1])

            def decode(plugin: str, value: bytes = value) -> bytes:
                return bytes(decoder.as_buffer(value, decoding_plugin=plugin, **description)[0])

            try:
                frame = with_plugins(RLELossless, decode)
            except (RuntimeError, NotImplementedError, ValueError):
                return None  # the general path says why
            if len(frame) != size:
                return None
            made[number] = frame
    return [made[number] for number in numbers]


def _frame_description(stored_frames: StoredFrames) -> dict[str, Any]:
    """What pydicom's decoders are told of one frame of ``stored_frames`` (its image pixel
    attributes, PS3.3 C.7.6.3)."""
    facts = stored_frames.facts
    return {
        "rows": facts.rows,
        "columns": facts.columns,
        "samples_per_pixel": facts.samples_per_pixel,
        "bits_allocated": facts.bits_allocated,
        "bits_stored": facts.bits_stored,
        "pixel_representation": facts.pixel_representation,
        "photometric_interpretation": facts.photometric,
        "planar_configuration": int(stored_frames.planar),
        "number_of_frames": 1,
    }


def _frame_value(fp: BinaryIO, ranges: list[tuple[int, int]]) -> bytes:
    """A frame's fragments as an encapsulated value of one frame (an empty Basic Offset Table
    first, PS3.5 A.4), for pydicom's decoders."""
    items = [_EMPTY_OFFSET_TABLE]
    for offset, length in ranges:
        fp.seek(offset - 8)  # the fragment's item header and value
        items.append(fp.read(8 + length))
    return b"".join(items)


def _read_frames(
    source: Dataset | BinaryIO, indices: list[int], stored: UID, plugin: str
) -> list[np.ndarray]:
    if isinstance(source, Dataset):
        return [pixel_array(source, index=index, decoding_plugin=plugin) for index in indices]
    source.seek(0)
    return list(
        iter_pixels(source, indices=indices, transfer_syntax_uid=stored, decoding_plugin=plugin)
    )


def transcode_frames(
    path: str,
    numbers: list[int],
    target: str,
    max_bytes: int,
    stored_frames: StoredFrames | None = None,
) -> list[bytes]:
    """Frames ``numbers`` of ``path``: native little endian bytes (``target`` native), or each
    frame encoded alone in the lossless encapsulated ``target`` (PS3.18 8.7.4)."""
    if stored_frames is not None and not UID(target).is_encapsulated:
        unpacked = _rle_native_frames(path, numbers, max_bytes, stored_frames)
        if unpacked is not None:
            return unpacked
    frames, facts, planar = decoded_frames(path, numbers, max_bytes, stored_frames)
    if not UID(target).is_encapsulated:
        planar = planar and not facts.photometric.startswith("YBR")
        return [native_bytes(frame, facts, planar) for frame in frames]
    check_encodable(facts, target)
    encoder = get_encoder(UID(target))
    frame_options = facts.frame_encoding_options()
    out = []
    for frame in frames:
        failures = []
        for plugin in encoding_plugins(UID(target)):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out.append(encoder.encode(frame, encoding_plugin=plugin, **frame_options))
                break
            except (RuntimeError, ValueError) as exc:
                failures.append(f"{plugin}: {codecs.first_line(exc)}")
        else:
            raise TranscodeError(
                "unsupported", f"{syntax_name(target)} ({target}): " + "; ".join(failures)
            )
    return out
