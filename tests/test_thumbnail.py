"""Thumbnails: identical across lossless encodings, faithful to pydicom's LUT pipeline, bounded."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian

from pixels_sql.dicom.meta import transfer_syntax
from pixels_sql.dicom.thumbnail import (
    AUTO_WINDOW_PERCENTILES,
    read_thumbnail_result,
    render_thumbnail,
    target_size,
    weighted_percentiles,
)
from tests.corpus import new_dataset, with_peak_memory

GOLDEN = Path(__file__).parent / "golden"


def corpus(name: str) -> str:
    path = get_testdata_file(name, download=False)
    assert path, name
    return str(path)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


# Lossless encodings of one image that take the same (full-resolution) decode path: each family
# must give byte-identical PNGs.
LOSSLESS_FAMILIES = {
    "MR_small": [
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_implicit.dcm",
    ],
    "US1": ["US1_UNCR.dcm", "US1_J2KR.dcm"],  # 640x480 -> 256: too little to reduce
    "693": ["693_UNCR.dcm", "693_J2KR.dcm"],
    "emri": [
        "emri_small.dcm",
        "emri_small_RLE.dcm",
        "emri_small_big_endian.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
    ],
    "SC_rgb": [
        "SC_rgb.dcm",
        "SC_rgb_expb.dcm",
        "SC_rgb_rle.dcm",
        "SC_rgb_16bit.dcm",
        "SC_rgb_32bit.dcm",
        "SC_rgb_rle_16bit.dcm",
        "SC_rgb_gdcm2k_uncompressed.dcm",
        "SC_rgb_jpeg_gdcm.dcm",
    ],
    "SC_rgb_2frame": ["SC_rgb_2frame.dcm", "SC_rgb_expb_2frame.dcm", "SC_rgb_rle_2frame.dcm"],
    "OBXXXX1A": ["OBXXXX1A.dcm", "OBXXXX1A_rle.dcm"],
    "OBXXXX1A_2frame": ["OBXXXX1A_2frame.dcm", "OBXXXX1A_rle_2frame.dcm"],
    "JPEG2000": ["JPEG2000.dcm", "JPEG2000_UNC.dcm"],
}


@pytest.mark.parametrize("family", sorted(LOSSLESS_FAMILIES))
def test_lossless_encodings_render_identical_png_bytes(family: str) -> None:
    renders = {name: render_thumbnail(corpus(name)) for name in LOSSLESS_FAMILIES[family]}
    assert len(set(renders.values())) == 1, {n: len(b) for n, b in renders.items()}


# Lossless JPEG 2000 files large enough for the reduced-resolution path, beside the uncompressed
# encoding of the same pixels (full decode). They agree within this tolerance on the 0-255 scale:
# mean absolute difference <= 0.5 and 99th percentile <= 2 at the default 256 px; <= 2 and <= 20
# for the smaller sizes, where more levels are skipped. (The wavelet low-pass band is not the
# Lanczos filter: isolated edge pixels differ by up to ~15, hence a percentile, not a maximum.)
REDUCED_FAMILIES = [
    ("MR2_UNCR.dcm", "MR2_J2KR.dcm"),
    ("RG1_UNCR.dcm", "RG1_J2KR.dcm"),
    ("RG3_UNCR.dcm", "RG3_J2KR.dcm"),
    ("US1_UNCR.dcm", "US1_J2KR.dcm"),
]


@pytest.mark.parametrize(("full", "reduced"), REDUCED_FAMILIES)
@pytest.mark.parametrize(("size", "mean", "p99"), [(256, 0.5, 2), (128, 2.0, 20), (64, 2.0, 20)])
def test_reduced_resolution_agrees_with_full_decode(
    full: str, reduced: str, size: int, mean: float, p99: float
) -> None:
    ours = pixels(render_thumbnail(corpus(reduced), size)).astype(float)
    reference = pixels(render_thumbnail(corpus(full), size)).astype(float)
    difference = np.abs(ours - reference)
    assert difference.mean() <= mean
    assert np.percentile(difference, 99) <= p99


def test_reduced_paths_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The J2K files above really decode fewer pixels (else the test above proves nothing)."""
    import pixels_sql.dicom.thumbnail as thumbnail

    sizes: list[tuple[int, ...]] = []
    original = thumbnail.to_display

    def spy(frame: np.ndarray, header: Dataset, index: int = 0) -> np.ndarray:
        sizes.append(frame.shape)
        return original(frame, header, index)

    monkeypatch.setattr(thumbnail, "to_display", spy)
    render_thumbnail(corpus("MR2_J2KR.dcm"))  # 1024 -> 256: one level, 512 (2x oversampling)
    render_thumbnail(corpus("RG3_J2KR.dcm"), 64)  # 1760 -> 64: three levels, 220
    render_thumbnail(corpus("MR2_UNCR.dcm"))  # uncompressed: full frame
    assert sizes == [(512, 512), (220, 220), (1024, 1024)]


def test_big_endian_palette_with_8_bit_entries_matches_within_rounding() -> None:
    """OBXXXX1A_expb stores its 16-bit-declared palette with 8-bit entries (PS3.3 C.7.6.3.1.5)."""
    ours = pixels(render_thumbnail(corpus("OBXXXX1A_expb.dcm"))).astype(int)
    little = pixels(render_thumbnail(corpus("OBXXXX1A.dcm"))).astype(int)
    assert np.abs(ours - little).max() <= 2


def reference_rendering(path: str, size: tuple[int, int]) -> np.ndarray:
    """pydicom's own pipeline: full decode, apply_modality_lut + apply_voi_lut, Pillow resize."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path, force=True)
        if "TransferSyntaxUID" not in dataset.file_meta:  # a bare data set (no Part 10 header)
            dataset.file_meta.TransferSyntaxUID = transfer_syntax(dataset)
        array = dataset.pixel_array
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    frame = array[frames // 2] if frames > 1 else array
    photometric = dataset.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, dataset).astype(float)
        unit = rgb / (65535.0 if rgb.max() > 255 else 255.0)
    elif frame.ndim == 3:
        unit = frame.astype(float) / (2 ** int(dataset.BitsStored) - 1)
    else:
        values = apply_modality_lut(frame, dataset)
        if "VOILUTSequence" in dataset:
            bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
            unit = apply_voi_lut(values, dataset).astype(float) / (2**bits - 1)
        elif "WindowCenter" in dataset:
            low, high = pydicom_window_range(dataset)
            unit = (apply_voi_lut(values, dataset).astype(float) - low) / (high - low)
        else:
            values = values.astype(float)
            bits = int(dataset.BitsStored)
            rescaled = "RescaleSlope" in dataset or "ModalityLUTSequence" in dataset
            if bits <= 8 and dataset.PixelRepresentation == 0 and not rescaled:
                unit = values / (2**bits - 1)
            else:
                low, high = np.percentile(values, AUTO_WINDOW_PERCENTILES)
                if high <= low:
                    low, high = values.min(), values.max()
                unit = np.clip((values - low) / (high - low), 0, 1)
        if photometric == "MONOCHROME1":
            unit = 1.0 - unit
    image = Image.fromarray(np.clip(np.rint(unit * 255), 0, 255).astype(np.uint8))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS))


def pydicom_window_range(dataset: Dataset) -> tuple[float, float]:
    """The output range apply_windowing maps a window onto (pydicom 3 behaviour)."""
    bits = int(dataset.BitsStored)
    if dataset.PixelRepresentation == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    if "RescaleSlope" in dataset:
        low, high = low * slope + intercept, high * slope + intercept
    return low, high


# (file, what it covers)
GOLDEN_FILES = [
    ("CT_small.dcm", "CT, signed 16-bit, rescale, automatic window"),
    ("693_UNCR.dcm", "CT with window center/width"),
    ("MR_small.dcm", "MR, signed 16-bit, window"),
    ("RG3_UNCR.dcm", "MONOCHROME1 with window"),
    ("RG1_UNCR.dcm", "MONOCHROME1 15-bit, large"),
    ("mlut_18.dcm", "Modality LUT Sequence"),
    ("vlut_04.dcm", "VOI LUT Sequence"),
    ("OT-PAL-8-face.dcm", "PALETTE COLOR, 8-bit"),
    ("gdcm-US-ALOKA-16.dcm", "PALETTE COLOR, 16-bit entries"),
    ("SC_ybr_full_uncompressed.dcm", "YBR_FULL"),
    ("US1_UNCR.dcm", "RGB ultrasound"),
    ("emri_small.dcm", "multi-frame: middle frame"),
    ("SC_rgb_16bit.dcm", "RGB 16-bit"),
    ("rtdose_1frame.dcm", "32-bit unsigned"),
    ("liver.dcm", "1-bit multi-frame"),
]


@pytest.mark.parametrize(("name", "covers"), GOLDEN_FILES, ids=[n for n, _ in GOLDEN_FILES])
def test_matches_pydicom_reference_rendering(name: str, covers: str) -> None:
    path = corpus(name)
    ours = pixels(render_thumbnail(path)).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    reference = reference_rendering(path, target_size(header, 256)).astype(float)
    assert ours.shape == reference.shape, covers
    assert np.abs(ours - reference).mean() <= 0.5, covers
    # Windowing is implemented independently of pydicom's: rounding may differ by a few levels.
    assert np.abs(ours - reference).max() <= 4, covers


@pytest.mark.parametrize(
    ("name", "golden", "size"),
    [
        ("693_UNCR.dcm", "693_UNCR_256.png", 256),
        ("OT-PAL-8-face.dcm", "OT-PAL-8-face_128.png", 128),
    ],
)
def test_hand_checked_golden_images(name: str, golden: str, size: int) -> None:
    expected = pixels((GOLDEN / golden).read_bytes())
    assert np.array_equal(pixels(render_thumbnail(corpus(name), size)), expected)


def test_sizes_keep_aspect_and_never_enlarge() -> None:
    assert pixels(render_thumbnail(corpus("US1_UNCR.dcm"))).shape == (192, 256, 3)
    assert pixels(render_thumbnail(corpus("MR_small.dcm"))).shape == (64, 64)
    assert pixels(render_thumbnail(corpus("RG1_UNCR.dcm"), 128)).shape == (128, 121)
    header = Dataset()
    header.Rows, header.Columns, header.PixelSpacing = 100, 100, [2.0, 1.0]  # rows twice as far
    assert target_size(header, 256) == (100, 200)
    header.PixelSpacing = None
    header.PixelAspectRatio = [1, 2]
    assert target_size(header, 64) == (64, 32)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(corpus("MR_small.dcm"))
    dataset.PhotometricInterpretation = "MONOCHROME1"
    flipped = tmp_path / "mono1.dcm"
    dataset.save_as(flipped)
    normal = pixels(render_thumbnail(corpus("MR_small.dcm"))).astype(int)
    inverted = pixels(render_thumbnail(str(flipped))).astype(int)
    assert np.array_equal(inverted, 255 - normal)


def test_jpeg_output() -> None:
    data = render_thumbnail(corpus("CT_small.dcm"), 64, "jpeg")
    assert data[:2] == b"\xff\xd8"
    assert Image.open(io.BytesIO(data)).size == (64, 64)


@pytest.mark.parametrize(
    ("name", "reason", "words"),
    [
        ("JPEG-lossy.dcm", "undecodable", "JPEG Extended"),
        ("rtplan.dcm", "no_pixel_data", "RT Plan"),
        ("waveform_ecg.dcm", "no_pixel_data", "ECG"),
        ("MR_truncated.dcm", "truncated", "pixel data"),
    ],
)
def test_unrenderable_files_give_reasons(name: str, reason: str, words: str) -> None:
    result = read_thumbnail_result(corpus(name))
    assert (result.data, result.reason) == (None, reason)
    assert words in result.message


def test_one_frame_of_a_large_multi_frame_file_is_decoded(tmp_path: Path) -> None:
    """Rendering the middle frame of a 100 MB file touches one 512x512 frame."""
    frames, rows, columns = 200, 512, 512
    path = tmp_path / "multi.dcm"
    dataset = new_dataset("1.2.840.10008.5.1.4.1.1.4", ExplicitVRLittleEndian)
    dataset.Modality = "MR"
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = rows, columns, frames
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = 0
    volume = np.zeros((frames, rows, columns), dtype=np.uint16)
    volume[frames // 2, rows // 4 : rows // 2, :] = 4000  # only the middle frame has a band
    dataset.PixelData = volume.tobytes()
    dataset.save_as(path, enforce_file_format=True)
    del volume, dataset
    png, peak = with_peak_memory(lambda: render_thumbnail(str(path)))
    assert peak < 30 * 1024 * 1024, f"peak {peak} bytes for a {path.stat().st_size} byte file"
    image = pixels(png)
    assert image[80, 128] == 255 and image[200, 128] == 0


def test_weighted_percentiles_equal_numpy_on_the_expanded_data() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        data = rng.integers(-50, 300, size=int(rng.integers(1, 3000))) * rng.choice([1, -1]) * 0.7
        values, counts = np.unique(data, return_counts=True)
        ours = weighted_percentiles(values, counts, (0.0, 0.5, 50.0, 99.5, 100.0))
        assert np.allclose(ours, np.percentile(data, (0.0, 0.5, 50.0, 99.5, 100.0)))


def _mr_small() -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(corpus("MR_small.dcm"))


def test_deflated_image_frame_is_undecodable_naming_the_syntax(tmp_path: Path) -> None:
    """PS3.5 A.4.11 (newer than pydicom 3.0): each frame deflated on its own."""
    dataset = _mr_small()
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    dataset.PixelData = encapsulate([compressor.compress(dataset.PixelData) + compressor.flush()])
    dataset["PixelData"].VR = "OB"
    # pydicom refuses to write a transfer syntax it does not know: write a 22-character one,
    # then put the real UID (21 characters + NUL padding) in its place.
    dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    path = tmp_path / "deflated-frame.dcm"
    dataset.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    assert data.count(b"1.2.840.10008.1.2.4.50") == 1
    path.write_bytes(data.replace(b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.8.1\0"))
    result = read_thumbnail_result(str(path))
    assert (result.data, result.reason) == (None, "undecodable")
    assert "Deflated Image Frame Compression (1.2.840.10008.1.2.8.1)" in result.message


def test_one_bit_rle_segmentation_is_undecodable_naming_the_syntax(tmp_path: Path) -> None:
    dataset = _mr_small()
    mask = (np.arange(64 * 64).reshape(64, 64) % 7 == 0).astype(np.uint8)
    packed = np.packbits(mask.ravel(), bitorder="little").tobytes()
    segment = b"".join(
        bytes([len(packed[i : i + 128]) - 1]) + packed[i : i + 128]  # PS3.5 G.3.1 literal runs
        for i in range(0, len(packed), 128)
    )
    rle_header = struct.pack("<16I", 1, 64, *([0] * 14))
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 1, 1, 0
    dataset.PixelRepresentation = 0
    dataset.SOPClassUID, dataset.Modality = "1.2.840.10008.5.1.4.1.1.66.4", "SEG"
    dataset.PixelData = encapsulate([rle_header + segment])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.5"
    path = tmp_path / "seg.dcm"
    dataset.save_as(path, enforce_file_format=True)
    result = read_thumbnail_result(str(path))
    assert (result.data, result.reason) == (None, "undecodable")
    assert result.message.startswith("RLE Lossless (1.2.840.10008.1.2.5)")
