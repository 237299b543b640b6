"""Bad input: every kind of broken, huge or hostile file gives a reason, never a crash."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pixels_sql.dicom.meta import read_meta, read_meta_result
from tests.corpus import PYDICOM_TEST_FILES, new_dataset, with_peak_memory

CT = PYDICOM_TEST_FILES / "CT_small.dcm"


def write_dataset(path: Path, transfer_syntax: str, **elements: object) -> Dataset:
    dataset = new_dataset("1.2.840.10008.5.1.4.1.1.7", transfer_syntax)
    dataset.PatientName = "Hostile^File"
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)
    return dataset


def byte_range(uri: str) -> tuple[int, int]:
    query = parse_qs(urlsplit(uri).query)
    return int(query["offset"][0]), int(query["length"][0])


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_huge_header_value_is_described_not_read(tmp_path: Path, syntax: str) -> None:
    """A 64 MiB binary value before the pixel data costs no memory: it becomes a byte range."""
    path = tmp_path / "big.dcm"
    blob = os.urandom(1024) * (64 * 1024)
    dataset = write_dataset(path, syntax)
    dataset.add_new(0x00091010, "LO", "PIXELS TEST")  # private creator
    dataset.add_new(0x00091011, "OB", blob)
    dataset.add_new(0x60003000, "OW", blob[:4096])  # Overlay Data, public binary VR
    dataset.save_as(path, enforce_file_format=True)
    meta, peak = with_peak_memory(lambda: read_meta(str(path)))
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes"
    overlay = meta["60003000"]
    offset, length = byte_range(overlay["BulkDataURI"])
    with open(path, "rb") as handle:
        handle.seek(offset)
        assert handle.read(length) == blob[:4096]
    # Implicit VR: the private element's VR is unknown without reading it, and it is huge.
    offset, length = byte_range(meta["00091011"]["BulkDataURI"])
    expected_vr = "OB" if syntax == ExplicitVRLittleEndian else "UN"
    assert (meta["00091011"]["vr"], length) == (expected_vr, len(blob))


def test_huge_text_value_is_referenced(tmp_path: Path) -> None:
    path = tmp_path / "text.dcm"
    write_dataset(path, ExplicitVRLittleEndian, TextValue="x" * (5 * 1024 * 1024))
    element = read_meta(str(path))["0040A160"]
    assert element["vr"] == "UT" and byte_range(element["BulkDataURI"])[1] == 5 * 1024 * 1024


def test_value_running_past_the_end_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "short.dcm"
    write_dataset(path, ExplicitVRLittleEndian, StudyComments="x" * 2000)
    data = path.read_bytes()
    path.write_bytes(data[:-500])
    result = read_meta_result(str(path))
    assert result.reason == "truncated"
    assert "(0032,4000)" in result.message


def test_bogus_fragment_item_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "frag.dcm"
    write_dataset(path, "1.2.840.10008.1.2.4.50", Rows=8, Columns=8, BitsAllocated=8)
    # Append encapsulated Pixel Data whose second item has a wrong tag.
    element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    items = struct.pack("<HHI", 0xFFFE, 0xE000, 0) + struct.pack("<HHI", 0x1234, 0x5678, 4)
    path.write_bytes(path.read_bytes() + element + items + b"\0" * 4)
    result = read_meta_result(str(path))
    assert result.reason == "corrupt"
    assert "fragment item" in result.message


def test_deeply_nested_sequences_do_not_crash(tmp_path: Path) -> None:
    path = tmp_path / "nested.dcm"
    write_dataset(path, ExplicitVRLittleEndian)
    depth = 5000
    opening = struct.pack("<HH2sHI", 0x0040, 0x0275, b"SQ", 0, 0xFFFFFFFF) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF
    )
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    path.write_bytes(path.read_bytes() + opening * depth + closing * depth)
    result = read_meta_result(str(path))
    assert result.meta is not None or result.reason in {"corrupt", "truncated"}


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"\0" * 128 + b"DICM" + os.urandom(2000)), None),
        (lambda p: p.write_bytes(os.urandom(5000)), "not_dicom"),
        (lambda p: p.write_text("<html>not an image</html>"), "not_dicom"),
        (lambda p: p.mkdir(), "unreadable"),
        (lambda p: None, "not_found"),
    ],
    ids=["empty", "random-after-preamble", "random", "html", "directory", "missing"],
)
def test_broken_files_give_reasons(tmp_path: Path, make, reason: str | None) -> None:
    path = tmp_path / "file.dcm"
    make(path)
    result = read_meta_result(str(path))
    assert result.meta is None
    if reason is None:  # garbage after a valid preamble: any reason, as long as there is one
        assert result.reason in {"corrupt", "truncated", "not_dicom"}
    else:
        assert result.reason == reason
    assert result.message


def test_every_truncation_of_a_real_file_is_handled() -> None:
    data = CT.read_bytes()
    reasons: set[str | None] = set()
    for cut in range(0, len(data), 97):
        result = _read_bytes(data[:cut])
        assert (result.meta is None) == (result.reason is not None)
        reasons.add(result.reason)
    assert "truncated" in reasons and "empty" in reasons


def _read_bytes(data: bytes):
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".dcm") as handle:
        handle.write(data)
        handle.flush()
        return read_meta_result(handle.name)


def test_pydicom_reads_the_generated_files(tmp_path: Path) -> None:
    """The generators above write valid DICOM: pydicom reads what they wrote."""
    path = tmp_path / "ok.dcm"
    write_dataset(path, ExplicitVRLittleEndian, StudyDescription="fine")
    assert pydicom.dcmread(path).StudyDescription == "fine"
    assert read_meta(str(path))["00081030"]["Value"] == ["fine"]
