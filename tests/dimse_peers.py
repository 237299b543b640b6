"""DICOM peers for the DIMSE tests, all real processes on loopback: DCMTK's storescp (a C-STORE
receiver that keeps data sets as received), DCMTK's storescu driven by a configuration that
proposes each file's own transfer syntax, Orthanc (a PACS, tests/orthanc_peer.py) with its own
configuration; and the corpus of every transfer syntax the tests send."""

from __future__ import annotations

import contextlib
import struct
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
from pydicom.filereader import read_file_meta_info
from pydicom.uid import generate_uid

from tests.corpus import PYDICOM_TEST_FILES, pydicom_data_dir

# The DIMSE tests' PACS, shared with the DICOMweb comparison (re-exported).
from tests.orthanc_peer import Orthanc as Orthanc

# One file per transfer syntax (pydicom's corpus and pydicom-data); two are relabelled where the
# corpus has no file of that syntax and the codestream is valid for it: a lossless JPEG-LS
# stream is a near-lossless one with NEAR=0 (PS3.5 A.4.3), and HTJ2K transfer syntaxes take
# JPEG 2000 Part 1 codestreams too (PS3.5 A.4.11).
TEMPLATES = {
    "1.2.840.10008.1.2": ("rtplan.dcm", None),
    "1.2.840.10008.1.2.1": ("CT_small.dcm", None),
    "1.2.840.10008.1.2.1.99": ("image_dfl.dcm", None),
    "1.2.840.10008.1.2.2": ("SC_rgb_small_odd_big_endian.dcm", None),
    "1.2.840.10008.1.2.4.50": ("SC_rgb_small_odd_jpeg.dcm", None),
    "1.2.840.10008.1.2.4.51": ("JPEG-lossy.dcm", None),
    "1.2.840.10008.1.2.4.70": ("SC_rgb_jpeg_gdcm.dcm", None),
    "1.2.840.10008.1.2.4.80": ("MR_small_jpeg_ls_lossless.dcm", None),
    "1.2.840.10008.1.2.4.81": ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.81"),
    "1.2.840.10008.1.2.4.90": ("MR_small_jp2klossless.dcm", None),
    "1.2.840.10008.1.2.4.91": ("JPEG2000.dcm", None),
    "1.2.840.10008.1.2.4.201": ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.201"),
    "1.2.840.10008.1.2.5": ("SC_rgb_rle.dcm", None),
}
# Syntaxes DCMTK 3.6.7 (Debian 12) does not know: storescu refuses to send them ("Unsupported
# transfer syntax"); the tests send those with pynetdicom (pixels-sql store).
DCMTK_UNKNOWN = {"1.2.840.10008.1.2.4.201"}
# The patients and studies the corpus files are spread over (PatientName, PatientID, date).
PATIENTS = [("Doe^John", "P-001", "20190305"), ("DOE^JANE", "P-002", "20200615")]


def syntax_of(path: Path) -> str:
    return str(read_file_meta_info(path).TransferSyntaxUID)


def template_path(name: str) -> Path:
    local = PYDICOM_TEST_FILES / name
    return local if local.exists() else pydicom_data_dir() / name


def read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def build_corpus(folder: Path) -> list[Path]:
    """One file per transfer syntax of TEMPLATES, with UIDs of their own: two patients, one
    study each, each file a series of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    studies = [generate_uid() for _ in PATIENTS]
    written = []
    for number, (syntax, (name, relabel)) in enumerate(sorted(TEMPLATES.items())):
        dataset = read(template_path(name))
        patient = number % len(PATIENTS)
        dataset.PatientName, dataset.PatientID, dataset.StudyDate = PATIENTS[patient]
        dataset.StudyInstanceUID = studies[patient]
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SeriesNumber = number + 1
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        if relabel:
            dataset.file_meta.TransferSyntaxUID = relabel
        path = folder / f"{number:02d}-{syntax}.dcm"
        dataset.save_as(path, enforce_file_format=False)
        written.append(path)
    return written


def data_set_bytes(path: Path) -> bytes:
    """A PS3.10 file's data set: the bytes after its File Meta Information (what DIMSE
    carries; the meta information is each receiver's own, PS3.10 7.1)."""
    content = path.read_bytes()
    # PS3.10 7.1: 'DICM' at 128, then (0002,0000) File Meta Information Group Length, UL.
    assert content[128:132] == b"DICM" and content[132:138] == b"\x02\x00\x00\x00UL", path
    return content[144 + struct.unpack("<I", content[140:144])[0] :]


def storescu_config(files: list[Path], target: Path) -> Path:
    """A storescu configuration (its -xf file) proposing, for each file, its SOP class in its
    own transfer syntax, one presentation context each: files go as stored, never converted."""
    pairs = sorted(
        {
            (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
            for meta in (read_file_meta_info(path) for path in files)
        }
    )
    syntaxes = sorted({syntax for _, syntax in pairs})
    lines = ["[[TransferSyntaxes]]"]
    for number, syntax in enumerate(syntaxes):
        lines += [f"[TS{number}]", f"TransferSyntax1 = {syntax}"]
    lines += ["[[PresentationContexts]]", "[AsStored]"]
    for number, (sop_class, syntax) in enumerate(pairs, start=1):
        lines.append(f"PresentationContext{number} = {sop_class}\\TS{syntaxes.index(syntax)}")
    lines += ["[[Profiles]]", "[AsStored]", "PresentationContexts = AsStored"]
    target.write_text("\n".join(lines) + "\n")
    return target


def storescu(files: list[Path], port: int, config: Path, calling: str = "STORESCU") -> None:
    result = subprocess.run(
        [
            *("storescu", "-aet", calling, "-aec", "PIXELS", "-xf", str(config), "AsStored"),
            *("127.0.0.1", str(port), *map(str, files)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@contextlib.contextmanager
def storescp(folder: Path, port: int, ae_title: str = "DEST") -> Iterator[int]:
    """DCMTK's storescp on ``port``, accepting every transfer syntax it knows (+xa) and
    writing data sets bit for bit as received (+B); yields the port."""
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        ["storescp", "-aet", ae_title, "+xa", "+B", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_port(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(30)


def _wait_port(port: int, process: subprocess.Popen, seconds: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the peer exited: {process.stderr.read() if process.stderr else ''}"
            )
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def received_by_uid(folder: Path) -> dict[str, Path]:
    """The files a storescp (or getscu) wrote, by SOP Instance UID."""
    return {str(read(path).SOPInstanceUID): path for path in folder.iterdir() if path.is_file()}
