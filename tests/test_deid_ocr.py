"""Burned-in text found by OCR (pixels_sql/deid/ocr.py) and blacked out by de-identification:
text rendered with Pillow onto corpus images, and the real annotations of a corpus ultrasound.
Tesseract is the real one (scripts/check-dicom-tools installs Debian's tesseract-ocr)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from pixels_sql.deid import ocr
from pixels_sql.deid.files import burned_in_text_file, deidentify, profile_of
from pixels_sql.deid.pixels import PixelPolicy
from pixels_sql.deid.profile import Profile
from pixels_sql.deid.transform import burned_in_text
from pixels_sql.errors import DicomReadError

KEY = b"an OCR test key, 32 bytes long.."
OCR = PixelPolicy(ocr=True)
# What a modality draws: a name and an ID in a header band, 16-pixel type.
BURNED = ((20, 12, "SMITH^JANE"), (20, 40, "ID 4421907"))


def _burn(
    path: str, lines=BURNED, *, size: int = 16, frame: int | None = None, invert: bool = False
) -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """The corpus file at ``path`` with ``lines`` drawn in its whitest value (in ``frame`` of a
    multi-frame image; MONOCHROME1 when ``invert``), written uncompressed; and each line's box
    (x, y, width, height)."""
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array.copy()
    bits = dataset.BitsStored
    signed = dataset.PixelRepresentation == 1
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if invert:
        pixels = (high + low - pixels).astype(pixels.dtype)
        dataset.PhotometricInterpretation = "MONOCHROME1"
    white = low if invert else high
    font = ImageFont.load_default(size=size)
    mask = Image.new("L", (dataset.Columns, dataset.Rows), 0)
    draw = ImageDraw.Draw(mask)
    boxes = []
    for x, y, text in lines:
        draw.text((x, y), text, fill=255, font=font)
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        boxes.append((left, top, right - left, bottom - top))
    drawn = np.asarray(mask) > 127
    target = pixels[frame] if frame is not None else pixels
    target[drawn] = white
    dataset.PixelData = pixels.tobytes()
    dataset["PixelData"].VR = "OW" if pixels.dtype.itemsize > 1 else "OB"
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    output = io.BytesIO()
    dataset.save_as(output, enforce_file_format=True)
    return output.getvalue(), boxes


def _covered(box: tuple[int, int, int, int], regions) -> float:
    """The share of ``box``'s pixels inside the union of ``regions``."""
    x, y, width, height = box
    mask = np.zeros((y + height + 1, x + width + 1), bool)
    for region in regions:
        mask[region.y : region.y + region.height, region.x : region.x + region.width] = True
    return float(mask[y : y + height, x : x + width].mean())


def _texts(found) -> str:
    return " ".join(region.text for region in found)


def test_tesseract_is_installed_by_the_project() -> None:
    assert ocr.is_available(), "scripts/check-dicom-tools installs tesseract-ocr"


def test_ocr_finds_text_rendered_onto_a_corpus_image() -> None:
    data, boxes = _burn(get_testdata_file("examples_overlay.dcm"))
    found = burned_in_text(data, "mr")
    assert "SMITH" in _texts(found) and "4421907" in _texts(found), _texts(found)
    for box in boxes:
        assert _covered(box, found) > 0.9, (box, found)
    assert {region.frame for region in found} == {0}
    # The anatomy of the clean image reads as no text.
    clean = Path(get_testdata_file("examples_overlay.dcm")).read_bytes()
    assert burned_in_text(clean, "clean") == []


def test_ocr_reads_the_real_annotations_of_a_corpus_ultrasound() -> None:
    # pydicom's US1_UNCR.dcm carries its site's name and the scan's labels in its pixels.
    data = Path(get_testdata_file("US1_UNCR.dcm")).read_bytes()
    words = _texts(burned_in_text(data, "US1_UNCR"))
    for word in ("BAPTIST", "MED", "CTR", "LYMPH", "NODE"):
        assert word in words, words


def test_ocr_reads_monochrome1_and_colour_images() -> None:
    data, boxes = _burn(get_testdata_file("examples_overlay.dcm"), invert=True)
    found = burned_in_text(data, "monochrome1")
    assert "SMITH" in _texts(found), _texts(found)
    assert all(_covered(box, found) > 0.9 for box in boxes)
    colour = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))
    rgb = colour.pixel_array.copy()
    rgb[:60, 200:450] = 0  # room for the text, away from the image's own
    image = Image.fromarray(rgb)
    ImageDraw.Draw(image).text((210, 10), "DOE^JOHN", fill=(255, 255, 0), font=_font(18))
    colour.PixelData = np.asarray(image).tobytes()
    written = io.BytesIO()
    colour.save_as(written, enforce_file_format=True)
    assert "JOHN" in _texts(burned_in_text(written.getvalue(), "colour"))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def test_a_multi_frame_image_is_read_on_its_first_middle_and_last_frames(tmp_path: Path) -> None:
    assert ocr.frames_to_read(1) == [0]
    assert ocr.frames_to_read(10) == [0, 5, 9]
    single = pydicom.dcmread(get_testdata_file("examples_overlay.dcm"))
    frames = np.stack([single.pixel_array] * 3)
    single.NumberOfFrames = 3
    single.PixelData = frames.tobytes()
    stacked = io.BytesIO()
    single.save_as(stacked, enforce_file_format=True)
    path = tmp_path / "cine.dcm"
    path.write_bytes(stacked.getvalue())
    data, _ = _burn(str(path), frame=1)  # the text in the middle frame only
    done = deidentify(data, Profile.of([]), KEY, name="cine", policy=OCR)
    assert done.cleaned_regions and {r.source for r in done.cleaned_regions} == {"ocr"}
    output = pydicom.dcmread(io.BytesIO(done.data)).pixel_array
    for frame in range(3):  # blacked out in every frame, as a cine loop's overlays stay put
        for region in done.cleaned_regions:
            window = output[frame, region.y : region.y + region.height, region.x :][
                :, : region.width
            ]
            assert (window == 0).all()


def test_deidentify_with_ocr_blacks_out_the_text_and_nothing_else() -> None:
    data, boxes = _burn(get_testdata_file("examples_overlay.dcm"))
    source = pydicom.dcmread(io.BytesIO(data))
    source.BurnedInAnnotation = "YES"  # cleaned by OCR: written, not refused
    flagged = io.BytesIO()
    source.save_as(flagged, enforce_file_format=True)
    profile, policy = profile_of(["ocr"])
    done = deidentify(flagged.getvalue(), profile, KEY, name="mr", policy=policy)
    output = pydicom.dcmread(io.BytesIO(done.data))
    expected = source.pixel_array.copy()
    for region in done.cleaned_regions:
        expected[region.y : region.y + region.height, region.x : region.x + region.width] = 0
    assert (output.pixel_array == expected).all()
    assert all(_covered(box, done.cleaned_regions) > 0.9 for box in boxes)
    assert output.BurnedInAnnotation == "NO"
    codes = [item.CodeValue for item in output.DeidentificationMethodCodeSequence]
    assert "113101" in codes  # Clean Pixel Data Option (PS3.16 CID 7050)
    # No OCR reader left any of the text: read again, the copy has none.
    assert burned_in_text(done.data, "copy") == []


def test_an_image_flagged_burned_in_where_ocr_finds_nothing_is_still_refused() -> None:
    source = pydicom.dcmread(get_testdata_file("examples_overlay.dcm"))
    source.BurnedInAnnotation = "YES"
    data = io.BytesIO()
    source.save_as(data, enforce_file_format=True)
    with pytest.raises(DicomReadError) as refused:
        deidentify(data.getvalue(), Profile.of([]), KEY, name="mr", policy=OCR)
    assert refused.value.reason == "burned_in_unhandled"
    assert "OCR found no text" in str(refused.value)
    allowed = PixelPolicy(allow_burned_in=True, ocr=True)
    done = deidentify(data.getvalue(), Profile.of([]), KEY, name="mr", policy=allowed)
    assert done.cleaned_regions == []


def test_without_ocr_the_header_walk_is_unchanged_and_with_it_pixels_are_read() -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    plain = deidentify(data, Profile.of([]), KEY, name="ct")
    read = deidentify(data, Profile.of([]), KEY, name="ct", policy=OCR)
    assert plain.cleaned_regions == read.cleaned_regions == []
    assert plain.sop_instance_uid == read.sop_instance_uid and plain.uids == read.uids


def test_bad_input_and_a_missing_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = burned_in_text_file("/nonexistent/file.dcm")
    assert missing.regions is None and missing.reason == "not_found"
    header_only = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del header_only.PixelData
    no_pixels = io.BytesIO()
    header_only.save_as(no_pixels, enforce_file_format=True)
    with pytest.raises(DicomReadError) as no_image:
        burned_in_text(no_pixels.getvalue(), "header")
    assert no_image.value.reason == "no_pixel_data"
    with pytest.raises(DicomReadError) as junk:
        burned_in_text(b"not a DICOM file at all" * 10, "junk")
    assert junk.value.reason == "not_dicom"
    monkeypatch.setenv("PIXELS_SQL_TESSERACT", "no-such-tesseract")
    with pytest.raises(ocr.OcrUnavailable, match="PIXELS_SQL_TESSERACT"):
        profile_of(["ocr"])
    profile_of(["retain_safe_private"])  # only the option that needs it asks for it


def test_the_pseudo_options_are_spelt_as_the_others_and_listed_when_one_is_unknown() -> None:
    profile, policy = profile_of(["Allow-Burned-In", "retain safe private"])
    assert policy == PixelPolicy(allow_burned_in=True) and profile.options == {
        "retain_safe_private"
    }
    with pytest.raises(ValueError, match=r"known: .*tcia, allow_burned_in, ocr$"):
        profile_of(["keep_faces"])
