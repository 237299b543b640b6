"""The public test corpus: pydicom's bundled test files plus the pydicom-data package."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import generate_uid

T = TypeVar("T")

PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def pydicom_data_dir() -> Path:
    """Folder of the pydicom-data package's files (installed as the ``data_store`` module)."""
    import data_store  # the pydicom-data distribution

    return Path(data_store.__file__).parent / "data"


def corpus_files() -> list[Path]:
    """Every regular file of both corpora, sorted (non-DICOM neighbours included on purpose)."""
    files = [p for p in PYDICOM_TEST_FILES.rglob("*") if p.is_file()]
    files += [p for p in pydicom_data_dir().rglob("*") if p.is_file()]
    return sorted(files)


# The sample of a `corrupt` file (tests/conftest.py SAMPLE_FILES): checked in, made by
# declared_deflated_bytes (test_dicom_meta_conformance checks they agree).
DECLARED_DEFLATED = Path(__file__).parent / "data" / "declared_deflated.dcm"


def declared_deflated_bytes() -> bytes:
    """A small Part 10 file whose File Meta Information declares Deflated Explicit VR Little
    Endian (PS3.5 A.5) over a data set that is not deflated: its bytes after the meta are no
    deflate stream, so no reader can make a data set of them (reason ``corrupt``)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "2.25.27027027027027027027027027027"
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    meta.ImplementationClassUID = "2.25.2727"
    dataset = Dataset()
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.PatientID = "NOT-DEFLATED"
    dataset.Modality = "OT"
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, dataset)
    return head.getvalue() + body.getvalue()


# Files in the corpus that are not readable DICOM, with the reason pixels-sql gives. Each entry is
# checked: a file missing from here that fails, or listed here and read, fails the test.
EXPECTED_UNREADABLE: dict[str, str] = {
    "MR_truncated.dcm": "truncated",
    "rtplan_truncated.dcm": "truncated",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated",
    "no_meta.dcm": "not_dicom",  # 0x20 before the first tag: no element at byte 0
    "README.txt": "not_dicom",
    "README": "not_dicom",
    "crayons.icc": "not_dicom",
    "rtplan.dump": "not_dicom",
    "rtstruct.dump": "not_dicom",
    "test1.json": "not_dicom",
    "test_PN.json": "not_dicom",
    "zipMR.gz": "not_dicom",
}


def with_peak_memory(function: Callable[[], T]) -> tuple[T, int]:
    """``function()``'s result and the peak bytes Python allocated while it ran."""
    tracemalloc.start()
    try:
        result = function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def new_dataset(sop_class: str, transfer_syntax: str) -> Dataset:
    """An empty Part 10 data set with file meta, a new SOP Instance UID, ready for elements."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return dataset
