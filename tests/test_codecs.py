"""Decoding and transcoding (pixels_sql/dicom/codecs.py, transcode.py) against references not
written here: DCMTK's decompressors (dcmdjpeg, dcmdrle, dcmdjpls) and pydicom's decoders."""

from __future__ import annotations

import io
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGExtended12Bit,
    JPEGLSLossless,
    RLELossless,
)

from pixels_sql.dicom.codecs import decode_frame, decoding_plugins, encodable_syntaxes
from pixels_sql.dicom.transcode import (
    TranscodeError,
    check_encodable,
    image_facts,
    producible_syntaxes,
    transcode_frames,
    transcode_instance,
)
from pixels_sql.io.sources import open_source

LIMIT = 1 << 30


def corpus(name: str) -> str:
    path = get_testdata_file(name, download=False)
    assert path, name
    return str(path)


def read(source: str | bytes | Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source)


def dcmtk(tool: str, source: str | Path, target: Path) -> pydicom.Dataset:
    """``source`` decompressed by a DCMTK tool (Debian's dcmtk: scripts/check-dicom-tools)."""
    binary = shutil.which(tool)
    assert binary, f"{tool} (Debian's dcmtk) is missing: run `make dicom-tools`"
    subprocess.run([binary, str(source), str(target)], check=True, capture_output=True)
    dataset = read(target)
    assert dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    return dataset


TWELVE_BIT = ["JPEG-lossy.dcm", "JPGExtended.dcm"]


@pytest.mark.parametrize("name", TWELVE_BIT)
def test_12_bit_jpeg_extended_decodes_as_dcmdjpeg_does(name: str, tmp_path: Path) -> None:
    """PS3.5 A.4.1, 1.2.840.10008.1.2.4.51 with 12-bit samples: Pillow and python-gdcm's wheel
    refuse it, pylibjpeg-libjpeg fails on JPEG-lossy.dcm; imagecodecs decodes both exactly as
    DCMTK does, and a transcoding to Explicit VR Little Endian carries those samples."""
    assert "imagecodecs" in decoding_plugins(JPEGExtended12Bit)
    reference = dcmtk("dcmdjpeg", corpus(name), tmp_path / name).pixel_array
    assert reference.dtype == np.uint16 and int(reference.max()) >= 256  # really 12-bit
    header = read(corpus(name))
    with open_source(corpus(name)) as source:
        ours = decode_frame(source, header, None)
    assert np.array_equal(ours, reference)
    transcoded = read(transcode_instance(corpus(name), ExplicitVRLittleEndian, LIMIT))
    assert transcoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(transcoded.pixel_array, reference)
    # PS3.3 C.7.6.1.1.5: a decompressed lossy image still says it was lossy compressed.
    assert transcoded.LossyImageCompression == "01"
    assert transcoded.SOPInstanceUID == header.SOPInstanceUID


# Every kind of stored pixel data the transcoder reads: native little and big endian, RLE,
# JPEG-LS, JPEG 2000, JPEG baseline (lossy), multi-frame, colour, palette, 1-bit, 32-bit.
SOURCES = [
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "SC_rgb_rle_2frame.dcm",
    "SC_rgb_expb_2frame.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "OBXXXX1A_rle.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "liver.dcm",
    "liver_expb.dcm",
    "rtdose.dcm",
    "JPEG-lossy.dcm",
]


def original_pixels(name: str) -> np.ndarray:
    """pydicom's decode of the stored file (its own plugin choice)."""
    return read(corpus(name)).pixel_array


@pytest.mark.parametrize("name", SOURCES)
def test_every_producible_syntax_keeps_the_pixels(name: str) -> None:
    """Each target is produced (or refused up front by its encoder's profile) and decodes, with
    pydicom, to the original's pixels: no loss in any transcoding."""
    original = read(corpus(name))
    expected = original_pixels(name)
    produced = []
    for target in producible_syntaxes():
        try:
            check_encodable(image_facts(original.get), target)
        except TranscodeError as exc:
            assert exc.reason == "unsupported" and target not in (
                ExplicitVRLittleEndian,
                ImplicitVRLittleEndian,
                DeflatedExplicitVRLittleEndian,
            )
            continue
        try:
            data = transcode_instance(corpus(name), target, LIMIT)
        except TranscodeError as exc:  # the encoder itself refused (e.g. OpenJPEG, 32 bits)
            assert exc.reason == "unsupported", exc.message
            continue
        transcoded = read(data)
        assert transcoded.file_meta.TransferSyntaxUID == target
        assert transcoded.SOPInstanceUID == original.SOPInstanceUID
        assert transcoded.pixel_array.shape == expected.shape, target
        assert np.array_equal(transcoded.pixel_array, expected), target
        produced.append(target)
    assert ExplicitVRLittleEndian in produced and ImplicitVRLittleEndian in produced


@pytest.mark.parametrize(
    ("name", "target", "tool"),
    [
        ("MR_small.dcm", RLELossless, "dcmdrle"),
        ("SC_rgb_jpeg_gdcm.dcm", RLELossless, "dcmdrle"),
        ("SC_rgb_rle_2frame.dcm", JPEGLSLossless, "dcmdjpls"),
        ("JPEG-lossy.dcm", JPEGLSLossless, "dcmdjpls"),
        ("OBXXXX1A_rle.dcm", JPEGLSLossless, "dcmdjpls"),
        ("MR_small.dcm", JPEGLSLossless, "dcmdjpls"),
    ],
)
def test_encodings_decode_with_dcmtk_to_the_original_pixels(
    name: str, target: str, tool: str, tmp_path: Path
) -> None:
    """Our RLE (pylibjpeg-rle) and JPEG-LS (CharLS) encodings read back by DCMTK's own
    decompressors give the stored image's pixels."""
    encoded = tmp_path / "encoded.dcm"
    encoded.write_bytes(transcode_instance(corpus(name), target, LIMIT))
    assert read(encoded).file_meta.TransferSyntaxUID == target
    decoded = dcmtk(tool, encoded, tmp_path / "decoded.dcm")
    assert np.array_equal(decoded.pixel_array, original_pixels(name))


def test_negative_signed_samples_survive_jpeg_ls(tmp_path: Path) -> None:
    """Signed 16-bit samples below zero (PS3.5 A.4.3: coded as their bit patterns) come back
    from DCMTK's dcmdjpls and from pydicom as they were; signed samples not filling their
    container are refused up front (the encoder here cannot set the precision)."""
    dataset = read(corpus("MR_small.dcm"))
    values = dataset.pixel_array.astype(np.int16) - 1000
    assert values.min() < 0
    dataset.PixelData = values.astype("<i2").tobytes()
    signed = tmp_path / "signed.dcm"
    dataset.save_as(signed)
    encoded = tmp_path / "encoded.dcm"
    encoded.write_bytes(transcode_instance(str(signed), JPEGLSLossless, LIMIT))
    assert np.array_equal(read(encoded).pixel_array, values)
    assert np.array_equal(dcmtk("dcmdjpls", encoded, tmp_path / "decoded.dcm").pixel_array, values)
    dataset.BitsStored, dataset.HighBit = 12, 11
    with pytest.raises(TranscodeError, match="cannot hold this image"):
        check_encodable(image_facts(dataset.get), JPEGLSLossless)


def test_only_lossless_encapsulated_syntaxes_are_offered() -> None:
    assert set(encodable_syntaxes()) == {RLELossless, JPEGLSLossless, JPEG2000Lossless}
    facts = image_facts(read(corpus("MR_small.dcm")).get)
    for lossy in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.81"):
        with pytest.raises(TranscodeError, match="not produced here; transcoding offers"):
            check_encodable(facts, lossy)
    with pytest.raises(TranscodeError, match="cannot hold this image"):
        check_encodable(image_facts(read(corpus("liver.dcm")).get), RLELossless)


def test_over_the_byte_limit_is_too_large() -> None:
    with pytest.raises(TranscodeError) as caught:
        transcode_instance(corpus("emri_small.dcm"), RLELossless, 1000)
    assert caught.value.reason == "too_large"


@pytest.mark.parametrize("name", ["emri_small_jpeg_2k_lossless.dcm", "SC_rgb_rle_2frame.dcm"])
def test_frames_decode_to_native_bytes_and_encode_alone(name: str) -> None:
    expected = original_pixels(name)
    frames = int(read(corpus(name)).NumberOfFrames)
    numbers = list(range(1, frames + 1))
    native = transcode_frames(corpus(name), numbers, ExplicitVRLittleEndian, LIMIT)
    for index, frame in enumerate(native):
        want = expected[index].astype(expected.dtype.newbyteorder("<"))
        assert frame == want.tobytes()
    encoded = transcode_frames(corpus(name), [frames, 1], JPEG2000Lossless, LIMIT)
    import imagecodecs  # an independent reader of a bare JPEG 2000 codestream (OpenJPEG)

    assert np.array_equal(imagecodecs.jpeg2k_decode(encoded[0]), expected[frames - 1])
    assert np.array_equal(imagecodecs.jpeg2k_decode(encoded[1]), expected[0])


def one_bit_multiframe(path: Path, rows: int, columns: int, frames: int) -> np.ndarray:
    """A 1-bit SEG-like multi-frame file, frames packed one after the other (PS3.5 8.1.1)."""
    rng = np.random.default_rng(7)
    masks = rng.integers(0, 2, size=(frames, rows, columns), dtype=np.uint8)
    dataset = read(corpus("liver.dcm"))
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = rows, columns, frames
    dataset.PixelData = np.packbits(masks.ravel(), bitorder="little").tobytes()
    del dataset.PerFrameFunctionalGroupsSequence
    dataset.save_as(path)
    return masks


def test_one_bit_frames_inside_a_byte_are_repacked_from_bit_0(tmp_path: Path) -> None:
    """5x5 frames of 1 bit: frame 2 starts at bit 25, inside byte 3. Each frame comes back
    packed on its own from bit 0 (PS3.5 8.1.1), as pydicom unpacks the file."""
    path = tmp_path / "seg.dcm"
    masks = one_bit_multiframe(path, 5, 5, 3)
    assert np.array_equal(read(path).pixel_array, masks)
    frames = transcode_frames(str(path), [1, 2, 3], ExplicitVRLittleEndian, LIMIT)
    for frame, mask in zip(frames, masks, strict=True):
        assert frame == np.packbits(mask.ravel(), bitorder="little").tobytes()
        assert len(frame) == 4  # 25 bits


ENCAPSULATED = [
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "SC_rgb_rle_2frame.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "JPEG-lossy.dcm",
    "US1_J2KR.dcm",
    "OBXXXX1A_rle.dcm",
]


@pytest.mark.parametrize("name", ENCAPSULATED)
def test_frames_decoded_from_their_fragments_equal_pydicoms(name: str) -> None:
    """What a server knows of the frames (frames.py: their fragments' byte ranges, the image's
    attributes from its DICOM JSON) decodes each frame alone, as pydicom decodes the file."""
    from pixels_sql.dicom.frames import frame_ranges, pixel_layout
    from pixels_sql.dicom.meta import read_model
    from pixels_sql.dicom.transcode import StoredFrames, decode_fragments, json_image_facts

    meta = read_model(corpus(name))
    layout = pixel_layout(meta)
    with open(corpus(name), "rb") as fp:
        ranges = frame_ranges(layout, fp)
        planar = (meta.get("00280006", {}).get("Value") or [0])[0] == 1
        facts = json_image_facts(meta)
        assert facts is not None
        stored = StoredFrames(layout.transfer_syntax, facts, planar, ranges)
        frames = decode_fragments(fp, list(range(layout.frames)), stored)
    expected = original_pixels(name)
    expected = expected if layout.frames > 1 else expected[np.newaxis]
    assert len(frames) == len(expected)
    for frame, want in zip(frames, expected, strict=True):
        assert np.array_equal(frame, want)


def test_a_big_endian_instance_without_an_image_becomes_little_endian(tmp_path: Path) -> None:
    """An RT plan written Explicit VR Big Endian (PS3.5 A.3, retired): no pixel data to decode,
    but its values are read and written again in the asked little endian syntax."""
    from pydicom.filewriter import dcmwrite

    plan = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    plan.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    path = tmp_path / "plan_big_endian.dcm"
    dcmwrite(path, plan, implicit_vr=False, little_endian=False, force_encoding=True)
    for target in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        made = pydicom.dcmread(io.BytesIO(transcode_instance(str(path), target, 1 << 30)))
        assert made.file_meta.TransferSyntaxUID == target
        assert made.BeamSequence[0].BeamName == plan.BeamSequence[0].BeamName
        assert len(made) == len(plan)
