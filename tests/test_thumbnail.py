"""Thumbnails: identical across lossless encodings, faithful to pydicom's LUT pipeline, bounded."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)

from pixels_sql.dicom.meta import transfer_syntax
from pixels_sql.dicom.thumbnail import (
    AUTO_WINDOW_PERCENTILES,
    _lookup,
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
        "SC_rgb_expb_16bit.dcm",
        "SC_rgb_expb_32bit.dcm",
        "SC_rgb_rle_32bit.dcm",
    ],
    "SC_rgb_2frame": [
        "SC_rgb_2frame.dcm",
        "SC_rgb_expb_2frame.dcm",
        "SC_rgb_rle_2frame.dcm",
        "SC_rgb_16bit_2frame.dcm",
        "SC_rgb_expb_16bit_2frame.dcm",
        "SC_rgb_rle_16bit_2frame.dcm",
        "SC_rgb_32bit_2frame.dcm",
        "SC_rgb_expb_32bit_2frame.dcm",
        "SC_rgb_rle_32bit_2frame.dcm",
    ],
    "SC_rgb_small_odd": ["SC_rgb_small_odd.dcm", "SC_rgb_small_odd_big_endian.dcm"],
    "OBXXXX1A": ["OBXXXX1A.dcm", "OBXXXX1A_rle.dcm"],
    "OBXXXX1A_2frame": ["OBXXXX1A_2frame.dcm", "OBXXXX1A_rle_2frame.dcm"],
    "JPEG2000": ["JPEG2000.dcm", "JPEG2000_UNC.dcm"],
    "US1_examples": ["US1_J2KR.dcm", "examples_jpeg2k.dcm"],  # the same ultrasound image
    "liver": ["liver.dcm", "liver_expb.dcm"],  # 1-bit
    "liver_1frame": ["liver_1frame.dcm", "liver_expb_1frame.dcm"],
    "rtdose": ["rtdose.dcm", "rtdose_expb.dcm", "rtdose_rle.dcm"],  # 32-bit
    "rtdose_1frame": ["rtdose_1frame.dcm", "rtdose_expb_1frame.dcm", "rtdose_rle_1frame.dcm"],
    "ALOKA": ["gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm"],  # 16-bit palette
}


@pytest.mark.parametrize("size", [256, 64])
@pytest.mark.parametrize("family", sorted(LOSSLESS_FAMILIES))
def test_lossless_encodings_render_identical_png_bytes(family: str, size: int) -> None:
    renders = {name: render_thumbnail(corpus(name), size) for name in LOSSLESS_FAMILIES[family]}
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
    ("693_UNCR.dcm", "693_J2KR.dcm"),
]
TOLERANCES = [(256, 0.5, 2), (128, 2.0, 20), (64, 2.0, 20)]


@pytest.mark.parametrize(("full", "reduced"), REDUCED_FAMILIES)
@pytest.mark.parametrize(("size", "mean", "p99"), TOLERANCES)
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

    def spy(frame: np.ndarray, header: Dataset, index: int = 0, window=None) -> np.ndarray:
        sizes.append(frame.shape)
        return original(frame, header, index, window)

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
        ("rtplan.dcm", "no_pixel_data", "RT Plan"),
        ("waveform_ecg.dcm", "no_pixel_data", "ECG"),
        ("MR_truncated.dcm", "truncated", "pixel data"),
    ],
)
def test_unrenderable_files_give_reasons(name: str, reason: str, words: str) -> None:
    result = read_thumbnail_result(corpus(name))
    assert (result.data, result.reason) == (None, reason)
    assert words in result.message


@pytest.mark.parametrize("name", ["JPEG-lossy.dcm", "JPGExtended.dcm"])
def test_12_bit_jpeg_extended_renders_as_dcmtk_decodes_it(name: str, tmp_path: Path) -> None:
    """12-bit JPEG Extended (PS3.5 A.4.1, 1.2.840.10008.1.2.4.51): the thumbnail equals the one
    of DCMTK's decompression of the file (dcmdjpeg), and pydicom's reference pipeline on it."""
    dcmdjpeg = shutil.which("dcmdjpeg")
    assert dcmdjpeg, "dcmdjpeg (Debian's dcmtk) is missing: run `make dicom-tools`"
    decompressed = tmp_path / name
    subprocess.run([dcmdjpeg, corpus(name), str(decompressed)], check=True, capture_output=True)
    ours = render_thumbnail(corpus(name))
    assert pixels(ours).tolist() == pixels(render_thumbnail(str(decompressed))).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = pydicom.dcmread(decompressed, stop_before_pixels=True)
    reference = reference_rendering(str(decompressed), target_size(header, 256)).astype(float)
    assert np.abs(pixels(ours).astype(float) - reference).max() <= 4


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


def film_scan(rows: int = 2487, columns: int = 2048, seed: int = 8) -> np.ndarray:
    """A text-heavy film scan: 12-bit, lines of sharp high-contrast text on a dark, slightly
    noisy background, a ruled frame and a grey-level step wedge; no window in the file."""
    rng = np.random.default_rng(seed)
    canvas = Image.new("I", (columns, rows), 300)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=28)
    alphabet = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .:/-")
    for y in range(200, rows - 60, 88):
        draw.text((60, y), "".join(rng.choice(alphabet, 100)), fill=3900, font=font)
    draw.rectangle((20, 20, columns - 20, rows - 20), outline=3000, width=6)
    for step in range(8):
        draw.rectangle((60 + step * 120, 60, 180 + step * 120, 150), fill=300 + step * 500)
    values = np.asarray(canvas).astype(np.int64) + rng.integers(0, 40, (rows, columns))
    return np.clip(values, 0, 4095).astype(np.uint16)


def write_monochrome(
    path: Path, array: np.ndarray, syntax: str = ExplicitVRLittleEndian, **elements: object
) -> str:
    """``array`` (frames x rows x columns or rows x columns) as a secondary capture file."""
    dataset = new_dataset("1.2.840.10008.5.1.4.1.1.7", ExplicitVRLittleEndian)
    dataset.Modality = "OT"
    dataset.Rows, dataset.Columns = array.shape[-2:]
    if array.ndim == 3:
        dataset.NumberOfFrames = array.shape[0]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated = array.dtype.itemsize * 8
    dataset.BitsStored, dataset.HighBit = 12, 11
    dataset.PixelRepresentation = int(array.dtype.kind == "i")
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    dataset.PixelData = array.tobytes()
    if syntax == JPEG2000Lossless:
        dataset.compress(JPEG2000Lossless, array, encoding_plugin="pylibjpeg")
    elif syntax != ExplicitVRLittleEndian:
        dataset.file_meta.TransferSyntaxUID = syntax  # pydicom writes the pixels in its order
        if syntax == ExplicitVRBigEndian:
            dataset.PixelData = array.astype(array.dtype.newbyteorder(">")).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return str(path)


@pytest.fixture(scope="module")
def film_scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The film scan uncompressed and as JPEG 2000 lossless, without and with a window."""
    folder = tmp_path_factory.mktemp("film")
    scan = film_scan()
    window = {"WindowCenter": 2000, "WindowWidth": 4000}
    return {
        "plain": write_monochrome(folder / "plain.dcm", scan),
        "plain_j2k": write_monochrome(folder / "plain_j2k.dcm", scan, JPEG2000Lossless),
        "window": write_monochrome(folder / "window.dcm", scan, **window),
        "window_j2k": write_monochrome(folder / "window_j2k.dcm", scan, JPEG2000Lossless, **window),
    }


@pytest.mark.parametrize("variant", ["plain", "window"])
@pytest.mark.parametrize(("size", "mean", "p99"), TOLERANCES)
def test_text_heavy_film_scan_agrees_across_lossless_encodings(
    film_scans: dict[str, str], variant: str, size: int, mean: float, p99: float
) -> None:
    """Before: mean 15 / p99 26 levels apart without a window (the percentile window of the
    reduced image is not the full image's), mean 3.3 / p99 17 with one (wavelet aliasing)."""
    ours = pixels(render_thumbnail(film_scans[f"{variant}_j2k"], size)).astype(float)
    reference = pixels(render_thumbnail(film_scans[variant], size)).astype(float)
    difference = np.abs(ours - reference)
    assert difference.mean() <= mean
    assert np.percentile(difference, 99) <= p99


def test_sharp_detail_check_keeps_natural_images_reduced() -> None:
    """The aliasing check sends text to the full decode but not MR2 or RG1 at 256 px."""
    from pixels_sql.dicom.thumbnail import sharp_detail

    assert not sharp_detail(np.full((50, 50), 100, dtype=np.uint8))
    stripes = np.zeros((50, 50), dtype=np.uint8)
    stripes[:, ::3] = 255  # one-pixel lines: the second difference is 255-510 levels
    assert sharp_detail(stripes)
    assert sharp_detail(np.stack([stripes] * 3, axis=2))


def _smooth_image(rows: int, columns: int, dtype: str, seed: int = 3) -> np.ndarray:
    """Gradients, discs and mild noise in 12 bits: an image a strided read keeps faithfully."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float64)
    values = 600 + 1500 * (x / columns) + 800 * np.sin(y / rows * 6)
    for cy, cx, radius in ((0.3, 0.3, 0.15), (0.6, 0.7, 0.2), (0.8, 0.2, 0.1)):
        inside = (y - cy * rows) ** 2 + (x - cx * columns) ** 2 < (radius * rows) ** 2
        values[inside] += 1200
    values += rng.normal(0, 20, values.shape)
    if np.dtype(dtype).kind == "i":
        values -= 2048
    return np.clip(np.rint(values), -2048 if np.dtype(dtype).kind == "i" else 0, 4095).astype(dtype)


@pytest.mark.parametrize(
    ("case", "dtype", "syntax", "frames"),
    [
        ("16-bit", "<u2", ExplicitVRLittleEndian, 1),
        ("signed 12 of 16 bits", "<i2", ExplicitVRLittleEndian, 1),
        ("big endian", "<u2", ExplicitVRBigEndian, 1),
        ("implicit VR", "<u2", ImplicitVRLittleEndian, 1),
        ("32-bit", "<u4", ExplicitVRLittleEndian, 1),
        ("multi-frame", "<u2", ExplicitVRLittleEndian, 3),
    ],
)
def test_over_budget_native_frames_are_read_subsampled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, dtype: str, syntax: str, frames: int
) -> None:
    import pixels_sql.dicom.thumbnail as thumbnail

    rows, columns = 1600, 1200
    image = _smooth_image(rows, columns, dtype)
    volume = np.stack([image // 2, image, image // 3]) if frames == 3 else image
    if case == "signed 12 of 16 bits":
        # Unused high bits set (PS3.5 8.1.1): only the low 12 bits carry the value.
        volume = (volume.astype("<u2") ^ 0x7000).view("<i2")
    path = write_monochrome(tmp_path / "big.dcm", volume, syntax)
    full = pixels(render_thumbnail(path))
    frames_seen: list[tuple[int, ...]] = []
    original = thumbnail.to_display

    def spy(frame: np.ndarray, header: Dataset, index: int = 0, window=None) -> np.ndarray:
        frames_seen.append(frame.shape)
        return original(frame, header, index, window)

    monkeypatch.setattr(thumbnail, "to_display", spy)
    monkeypatch.setattr(thumbnail, "PIXEL_BUDGET", 500_000)  # step 2 (4: 32-bit count 4 times)
    subsampled = pixels(render_thumbnail(path))
    step = 4 if dtype == "<u4" else 2
    start = (step - 1) // 2  # centred in each step x step block
    assert frames_seen == [(len(range(start, rows, step)), len(range(start, columns, step)))]
    # Strided samples skip the low-pass the full decode's Lanczos filter gives: noise and disc
    # edges alias (measured mean 0.88, p99 6 where 400 rows become 256).
    difference = np.abs(subsampled.astype(float) - full.astype(float))
    assert difference.mean() <= 1.5, case
    assert np.percentile(difference, 99) <= 8, case


@pytest.mark.parametrize("planar", [0, 1])
def test_subsampled_values_equal_pydicom_at_the_same_positions(tmp_path: Path, planar: int) -> None:
    """RGB, both planar configurations (PS3.3 C.7.6.3.1.3), middle frame of two."""
    from pixels_sql.dicom.meta import locate_pixel_data, read_pydicom_header
    from pixels_sql.dicom.reduced import subsampled_native

    rng = np.random.default_rng(5)
    volume = rng.integers(0, 256, (2, 301, 203, 3), dtype=np.uint8)
    dataset = new_dataset("1.2.840.10008.5.1.4.1.1.7", ExplicitVRLittleEndian)
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = 301, 203, 2
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 3, "RGB"
    dataset.PlanarConfiguration = planar
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelRepresentation = 0
    stored = volume.transpose(0, 3, 1, 2) if planar else volume
    dataset.PixelData = np.ascontiguousarray(stored).tobytes()
    path = tmp_path / "rgb.dcm"
    dataset.save_as(path, enforce_file_format=True)
    size = path.stat().st_size
    with open(path, "rb") as fp:
        header = read_pydicom_header(str(path), fp, size)
        location = locate_pixel_data(str(path), fp, size, header.original_encoding, 8)
        reduced = subsampled_native(fp, location, header, ExplicitVRLittleEndian, 1, 10_000)
    assert reduced is not None
    step = 5  # the smallest k with ceil(301/k) * ceil(203/k) * 3 <= 10,000
    start = (step - 1) // 2
    expected = pydicom.dcmread(path).pixel_array[1][start::step, start::step]
    assert np.array_equal(reduced.values, expected)
    assert reduced.phase == 0.0  # odd step, centred samples


def test_over_budget_frame_without_a_reduced_decoder_is_too_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pixels_sql.dicom.thumbnail as thumbnail

    monkeypatch.setattr(thumbnail, "PIXEL_BUDGET", 1000)
    result = read_thumbnail_result(corpus("MR_small_RLE.dcm"))
    assert (result.data, result.reason) == (None, "too_large")
    assert "64x64" in result.message and "budget of 1000 samples" in result.message
    assert "RLE Lossless" in result.message
    # JPEG 2000 decodes within the budget at a deeper resolution level than the size asks for
    # (2 instead of 1: 440 x 440), close to the full decode of the uncompressed twin.
    monkeypatch.setattr(thumbnail, "PIXEL_BUDGET", 300_000)
    ours = pixels(render_thumbnail(corpus("RG3_J2KR.dcm"))).astype(float)
    monkeypatch.setattr(thumbnail, "PIXEL_BUDGET", 1 << 25)
    reference = pixels(render_thumbnail(corpus("RG3_UNCR.dcm"))).astype(float)
    assert np.abs(ours - reference).mean() <= 0.5


BIG_FILE_JOB = """
import resource, sys
from pixels_sql.dicom.thumbnail import render_thumbnail
render_thumbnail(sys.argv[2])  # imports and first-use allocations of every library involved
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
png = render_thumbnail(sys.argv[1])
print(len(png), before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def test_big_uncompressed_frame_renders_in_bounded_memory(tmp_path: Path) -> None:
    """8192 x 8192 x 16 bits (128 MiB, twice the budget): peak RSS of the whole process."""
    rows = columns = 8192
    path = tmp_path / "big.dcm"
    header = new_dataset("1.2.840.10008.5.1.4.1.1.7", ExplicitVRLittleEndian)
    header.Rows, header.Columns = rows, columns
    header.SamplesPerPixel, header.PhotometricInterpretation = 1, "MONOCHROME2"
    header.BitsAllocated, header.BitsStored, header.HighBit = 16, 12, 11
    header.PixelRepresentation = 0
    band = np.tile((np.arange(columns, dtype=np.uint16) % 4096), (512, 1))
    header.PixelData = band.tobytes()  # placeholder: its length becomes the real one below
    header.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    tail = data.rindex(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\0\0")
    with open(path, "wb") as out:  # rewrite the Pixel Data length, then stream 16 bands
        out.write(data[: tail + 8] + struct.pack("<I", rows * columns * 2))
        for _ in range(rows // 512):
            out.write(band.tobytes())
    completed = subprocess.run(
        [sys.executable, "-c", BIG_FILE_JOB, str(path), corpus("MR_small.dcm")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    length, before, after = map(int, completed.stdout.split())
    assert length > 0
    # The frame alone is 128 MiB; read with step 2 it is 32 MiB, its display image 16 MiB.
    # Measured: the peak grows by ~75 MiB (from ~140 MiB with the libraries loaded).
    assert after - before < 110 * 1024 * 1024, f"peak RSS grew by {(after - before) >> 20} MiB"


MUTANT_JOB = """
import sys
from pixels_sql.dicom.thumbnail import read_thumbnail_result
for path in sys.argv[1:]:
    result = read_thumbnail_result(path)
    print(result.reason or "rendered", flush=True)
"""


def test_damaged_jpeg_ls_never_aborts_the_process(tmp_path: Path) -> None:
    """python-gdcm 3.2.6 aborted the process (std::terminate) on seed 38 of these mutants of
    MR_small_jpeg_ls_lossless.dcm (3 bytes of the JPEG-LS header replaced); the raising
    decoders report them as data."""
    import random

    from pydicom.uid import JPEGLSLossless

    from pixels_sql.dicom.codecs import decoding_plugins

    assert "gdcm" not in decoding_plugins(JPEGLSLossless)
    source = Path(corpus("MR_small_jpeg_ls_lossless.dcm")).read_bytes()
    codestream = source.index(b"\xff\xd8\xff", source.rindex(b"\xe0\x7f\x10\x00"))
    paths = []
    for seed in range(60):
        rng = random.Random(seed)
        data = bytearray(source)
        for _ in range(3):
            data[rng.randrange(codestream, codestream + 40)] = rng.randrange(256)
        paths.append(tmp_path / f"mutant-{seed}.dcm")
        paths[-1].write_bytes(bytes(data))
    completed = subprocess.run(
        [sys.executable, "-c", MUTANT_JOB, *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    reasons = completed.stdout.split()
    assert len(reasons) == len(paths)
    assert set(reasons) <= {"rendered", "undecodable", "corrupt", "truncated"}
    assert "undecodable" in reasons


@pytest.mark.parametrize("dtype", ["u1", "i1", "<u2", "<i2", ">u2", ">i2", "<u4", "<i4"])
def test_lookup_indexes_each_sample_by_its_value(dtype):
    """to_display's per-value table lookup, direct by bit pattern for 8- and 16-bit samples and
    by offset otherwise, equals ``table[value - low]`` for every integer layout (byte order,
    sign, a strided view)."""
    kind = np.dtype(dtype)
    rng = np.random.default_rng(13)
    if kind.itemsize == 1:
        low, high = np.iinfo(kind).min, np.iinfo(kind).max
    else:
        low, high = (-3000, 3000) if kind.kind == "i" else (3, 5000)
    whole = rng.integers(low, high + 1, (40, 44)).astype(kind)
    for frame in (whole, whole[1::2, ::3]):
        low = int(frame.min())
        for channels in ((), (3,)):
            table = rng.integers(0, 256, (int(frame.max()) - low + 1, *channels)).astype(np.uint8)
            expected = table[frame.astype(np.int64) - low]
            np.testing.assert_array_equal(_lookup(frame, low, table), expected)
