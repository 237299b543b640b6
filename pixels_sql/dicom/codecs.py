"""Decode and encode pixel data: the one place that picks a codec for a transfer syntax.

Decoding goes through pydicom's decoders (pydicom.pixels), naming the plugin each time; the
plugins tried, in order, are :data:`RAISING_PLUGINS`. Two backends are added to pydicom's own
here, each registered as a pydicom plugin (a module-level ``is_available(uid)`` and
``DE/ENCODER_DEPENDENCIES``, as pydicom's plugins have them):

- ``imagecodecs`` decoding JPEG Extended (PS3.5 A.4.1, 1.2.840.10008.1.2.4.51) with 12-bit
  samples: Pillow refuses 12-bit JPEG, python-gdcm's wheel is built without it ("Unsupported
  JPEG data precision 12") and pylibjpeg-libjpeg fails on some streams ("scan start must be
  zero" on pydicom's JPEG-lossy.dcm). imagecodecs bundles libjpeg-turbo 3 with 12-bit support;
  its samples equal DCMTK's dcmdjpeg on both corpus files (tests/test_codecs.py).
- ``imagecodecs`` encoding JPEG-LS Lossless (PS3.5 A.4.3, 1.2.840.10008.1.2.4.80) with CharLS
  (pydicom's own JPEG-LS encoder needs pyjpegls, which is not a dependency).

Encoding (transcoding, :mod:`pixels_sql.dicom.transcode`) offers lossless encoders only, and
never python-gdcm (see :data:`RAISING_PLUGINS`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder, get_encoder, pixel_array
from pydicom.uid import (
    UID,
    JPEG2000Lossless,
    JPEGExtended12Bit,
    JPEGLSLossless,
    RLELossless,
)

from pixels_sql.dicom.encoding import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, PIXEL_DATA_TAGS
from pixels_sql.dicom.meta import transfer_syntax
from pixels_sql.errors import DicomReadError

if TYPE_CHECKING:
    from pydicom.pixels.decoders.base import DecodeRunner
    from pydicom.pixels.encoders.base import EncodeRunner

    from pixels_sql.io.sources import Source

# pydicom decoding plugins that report damaged data by raising a Python exception, in the order we
# try them. python-gdcm is left out on purpose: on some damaged JPEG-LS streams it throws a C++
# exception nothing catches and the whole process aborts (std::terminate, SIGABRT), taking a
# Spark Python worker and every other row of its batch with it. pydicom 3 tries gdcm first when
# it is installed, so decode_frame names the plugin instead, and uses gdcm only for transfer
# syntaxes that none of these decodes. Pillow first: its libjpeg-turbo decodes JPEG baseline to
# the same samples as gdcm's IJG libjpeg (every corpus thumbnail unchanged); pylibjpeg's libjpeg
# differs by a level here and there. imagecodecs (registered below for 12-bit JPEG Extended
# only) comes before pylibjpeg, which fails on some 12-bit streams it decodes.
RAISING_PLUGINS = ("pillow", "imagecodecs", "pylibjpeg", "pyjpegls", "pydicom")
# Encoding plugins, in order: pylibjpeg's (Rust RLE, OpenJPEG) before pydicom's pure-Python RLE
# encoder (tens of times slower); never gdcm (above).
ENCODING_PLUGINS = ("pylibjpeg", "imagecodecs", "pydicom")
# The lossless encapsulated syntaxes an encoder may produce (PS3.5 A.4.2 RLE, A.4.3 JPEG-LS,
# A.4.4 JPEG 2000): which are offered depends on what is installed (encodable_syntaxes).
LOSSLESS_ENCAPSULATED = (RLELossless, JPEGLSLossless, JPEG2000Lossless)
IMAGECODECS = "imagecodecs"

DECODER_DEPENDENCIES = {JPEGExtended12Bit: ("imagecodecs>=2024.1.1",)}
ENCODER_DEPENDENCIES = {JPEGLSLossless: ("imagecodecs>=2024.1.1",)}


def imagecodecs_available() -> bool:
    """Whether the imagecodecs package is installed (its JPEG 8/12-bit and JPEG-LS codecs)."""
    return importlib.util.find_spec("imagecodecs") is not None


def is_available(uid: str) -> bool:
    """pydicom's plugin protocol: whether this module's backend serves ``uid``."""
    if not imagecodecs_available():
        return False
    import imagecodecs

    if uid == JPEGExtended12Bit:
        return bool(imagecodecs.JPEG8.available)
    if uid == JPEGLSLossless:
        return bool(imagecodecs.JPEGLS.available)
    return False


def _decode_jpeg_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """pydicom decoding plugin: one JPEG Extended frame by libjpeg-turbo (imagecodecs), its
    samples as the codestream holds them (8- or 12-bit precision, PS3.5 A.4.1)."""
    import imagecodecs

    if runner.samples_per_pixel != 1:
        # The colour transform is pydicom's to apply (as with Pillow's plugin): keep the
        # codestream's components as they are (no YCbCr to RGB here).
        colorspace = imagecodecs.JPEG8.CS.YCbCr
        if runner.photometric_interpretation == "RGB":
            colorspace = imagecodecs.JPEG8.CS.RGB
        frame = imagecodecs.jpeg8_decode(src, colorspace=colorspace, outcolorspace=colorspace)
    else:
        frame = imagecodecs.jpeg8_decode(src)
    if frame.dtype.itemsize * 8 != runner.bits_allocated:
        runner.set_option("bits_allocated", frame.dtype.itemsize * 8)
    return frame.astype(frame.dtype.newbyteorder("<"), copy=False).tobytes()


def _encode_jpegls_frame(src: bytes, runner: EncodeRunner) -> bytes:
    """pydicom encoding plugin: one frame as lossless JPEG-LS (CharLS through imagecodecs,
    NEAR = 0: ISO 14495-1 lossless mode)."""
    import imagecodecs

    if runner.get_option("jls_error", 0):
        raise ValueError("only lossless JPEG-LS (NEAR 0) is encoded here")
    bits = runner.bits_allocated
    if runner.pixel_representation == 1 and runner.bits_stored != bits:
        # PS3.5 A.4.3: JPEG-LS codes signed samples as their two's complement bit pattern in
        # BitsStored bits; CharLS here takes the precision from the sample size, so only
        # samples filling their container (the pattern is the container's) are encoded.
        raise ValueError("signed samples are JPEG-LS encoded here only when BitsStored fills")
    dtype = np.dtype(f"<u{bits // 8}")  # signed samples: their bit patterns
    shape: tuple[int, ...] = (runner.rows, runner.columns)
    if runner.samples_per_pixel > 1:
        shape = (*shape, runner.samples_per_pixel)
    array = np.frombuffer(src, dtype=dtype).reshape(shape)
    if runner.planar_configuration == 1 and runner.samples_per_pixel > 1:
        array = np.frombuffer(src, dtype=dtype).reshape(
            runner.samples_per_pixel, runner.rows, runner.columns
        )
        array = np.moveaxis(array, 0, -1)
    return bytes(imagecodecs.jpegls_encode(np.ascontiguousarray(array), level=0))


def _register() -> None:
    """Add this module's plugins to pydicom's decoders and encoders (once per process)."""
    plugins = (
        (get_decoder(JPEGExtended12Bit), "_decode_jpeg_frame"),
        (get_encoder(JPEGLSLossless), "_encode_jpegls_frame"),
    )
    for coder, function in plugins:
        with contextlib.suppress(ValueError):  # already added (a reloaded module)
            coder.add_plugin(IMAGECODECS, (__name__, function))


def decoding_plugins(syntax: UID) -> tuple[str, ...]:
    """pydicom plugin names to try in turn for ``syntax``: those of :data:`RAISING_PLUGINS` that
    are installed, else ``""`` (pydicom's choice among what is installed: gdcm alone)."""
    if not syntax.is_encapsulated:
        return ("",)  # native pixel data: pydicom decodes it itself, no plugin involved
    try:
        available = get_decoder(syntax).available_plugins
    except NotImplementedError:
        return ("",)  # pydicom's own error names the syntax
    return tuple(name for name in RAISING_PLUGINS if name in available) or ("",)


def encoding_plugins(syntax: UID) -> tuple[str, ...]:
    """pydicom encoding plugins for ``syntax`` among :data:`ENCODING_PLUGINS`, in that order."""
    try:
        available = get_encoder(syntax).available_plugins
    except NotImplementedError:
        return ()
    return tuple(name for name in ENCODING_PLUGINS if name in available)


def encodable_syntaxes() -> tuple[UID, ...]:
    """The lossless encapsulated syntaxes an installed encoder produces."""
    return tuple(uid for uid in LOSSLESS_ENCAPSULATED if encoding_plugins(uid))


def decode_frame(source: Source, header: Dataset, index: int | None) -> np.ndarray:
    """Decode one frame (``index``) or the single image (None), reading only that frame;
    YBR colour comes back as RGB (pydicom's ``as_rgb``)."""
    local, fp = source.name, source.fp
    syntax = transfer_syntax(header)
    if not syntax.is_transfer_syntax:
        # A transfer syntax newer than pydicom's table (e.g. Deflated Image Frame Compression,
        # PS3.5 A.4.11): no installed codec knows it.
        raise DicomReadError(
            local,
            "undecodable",
            f"{syntax_name(syntax)} ({syntax}): no installed codec decodes this transfer syntax",
        )
    try:
        if syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            # PS3.5 A.5: one deflate stream; the header is then the whole inflated data set.
            whole = any(tag in header for tag in PIXEL_DATA_TAGS)
            return pixel_array(header if whole else full_dataset(fp), index=index)
        return with_plugins(
            syntax,
            lambda plugin: _seek_and_decode(fp, index, syntax, plugin),
        )
    except (RuntimeError, NotImplementedError) as exc:
        raise DicomReadError(
            local, "undecodable", f"{syntax_name(syntax)} ({syntax}): {first_line(exc)}"
        ) from exc


def _seek_and_decode(fp: BinaryIO, index: int | None, syntax: UID, plugin: str) -> np.ndarray:
    fp.seek(0)
    return pixel_array(fp, index=index, transfer_syntax_uid=syntax, decoding_plugin=plugin)


def with_plugins(syntax: UID, decode: Any) -> Any:
    """``decode(plugin)`` for each of :func:`decoding_plugins` in turn until one succeeds;
    RuntimeError naming every plugin's failure if none does."""
    failures = []
    for plugin in decoding_plugins(syntax):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return decode(plugin)
        except RuntimeError as exc:  # pydicom wraps every plugin failure in RuntimeError
            failures.append(exc)
    raise failures[0] if len(failures) == 1 else RuntimeError(_plugin_failures(failures))


def _plugin_failures(failures: list[RuntimeError]) -> str:
    """One message for several single-plugin failures, in pydicom's wording."""
    details = []
    for exc in failures:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        details.extend(lines[1:] or lines)  # pydicom's first line is its generic preamble
    return "Unable to decode as exceptions were raised by all available plugins: " + "; ".join(
        details
    )


# Transfer syntaxes added to PS3.5 after pydicom 3.0's UID table, for readable messages.
NEWER_SYNTAX_NAMES = {
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}


def syntax_name(syntax: UID | str) -> str:
    return NEWER_SYNTAX_NAMES.get(str(syntax), UID(str(syntax)).name)


def full_dataset(fp: BinaryIO) -> Dataset:
    """The whole data set of ``fp`` (from its start), pixel data included."""
    import pydicom

    fp.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(fp, force=True)


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:3])


_register()
