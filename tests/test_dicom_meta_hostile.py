"""Bad input: every kind of broken, huge or hostile file gives a reason, never a crash."""

from __future__ import annotations

import errno
import json
import os
import random
import struct
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pixels_sql.dicom.encoding import MAX_SEQUENCE_DEPTH
from pixels_sql.dicom.meta import read_model, read_result
from tests.corpus import PYDICOM_TEST_FILES, new_dataset, with_peak_memory
from tests.mutants import write_nested

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
    meta, peak = with_peak_memory(lambda: read_model(str(path)))
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
    element = read_model(str(path))["0040A160"]
    assert element["vr"] == "UT" and byte_range(element["BulkDataURI"])[1] == 5 * 1024 * 1024


def test_value_running_past_the_end_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "short.dcm"
    write_dataset(path, ExplicitVRLittleEndian, StudyComments="x" * 2000)
    data = path.read_bytes()
    path.write_bytes(data[:-500])
    result = read_result(str(path)).decoded()
    assert result.reason == "truncated"
    assert "(0032,4000)" in result.message


def test_bogus_fragment_item_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "frag.dcm"
    write_dataset(path, "1.2.840.10008.1.2.4.50", Rows=8, Columns=8, BitsAllocated=8)
    # Append encapsulated Pixel Data whose second item has a wrong tag.
    element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    items = struct.pack("<HHI", 0xFFFE, 0xE000, 0) + struct.pack("<HHI", 0x1234, 0x5678, 4)
    path.write_bytes(path.read_bytes() + element + items + b"\0" * 4)
    result = read_result(str(path)).decoded()
    assert result.reason == "corrupt"
    assert "fragment item" in result.message


# Seeded noise: unseeded bytes after "DICM" read as a file meta group 1 time in 65,536 (02 00).
_NOISE = random.Random(27).randbytes(5000)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"\0" * 128 + b"DICM" + _NOISE[:2000]), None),
        (lambda p: p.write_bytes(_NOISE), "not_dicom"),
        (lambda p: p.write_text("<html>not an image</html>"), "not_dicom"),
        (lambda p: p.mkdir(), "unreadable"),
        (lambda p: None, "not_found"),
    ],
    ids=["empty", "random-after-preamble", "random", "html", "directory", "missing"],
)
def test_broken_files_give_reasons(tmp_path: Path, make, reason: str | None) -> None:
    path = tmp_path / "file.dcm"
    make(path)
    result = read_result(str(path)).decoded()
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
        return read_result(handle.name).decoded()


def test_pydicom_reads_the_generated_files(tmp_path: Path) -> None:
    """The generators above write valid DICOM: pydicom reads what they wrote."""
    path = tmp_path / "ok.dcm"
    write_dataset(path, ExplicitVRLittleEndian, StudyDescription="fine")
    assert pydicom.dcmread(path).StudyDescription == "fine"
    assert read_model(str(path))["00081030"]["Value"] == ["fine"]


def _readers(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[[], None]]:
    """Switches selecting each of the three header readers."""
    from pixels_sql.dicom import fastmeta, meta

    def compiled() -> None:
        monkeypatch.setattr(meta, "FAST_READER", True)
        monkeypatch.setattr(fastmeta, "COMPILED", True)

    def python_loop() -> None:
        monkeypatch.setattr(meta, "FAST_READER", True)
        monkeypatch.setattr(fastmeta, "COMPILED", False)

    def general() -> None:
        monkeypatch.setattr(meta, "FAST_READER", False)

    return {"compiled": compiled, "python": python_loop, "general": general}


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("undefined", [False, True])
def test_nesting_limit_is_the_same_in_every_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, undefined: bool, implicit: bool
) -> None:
    """MAX_SEQUENCE_DEPTH levels are read (the same JSON by every reader); one more, or
    thousands, give too_deep — never a RecursionError out of the function."""
    at_limit = write_nested(
        tmp_path / "limit.dcm", MAX_SEQUENCE_DEPTH, undefined=undefined, implicit=implicit
    )
    texts = set()
    for select in _readers(monkeypatch).values():
        select()
        result = read_result(str(at_limit)).decoded()
        assert result.reason is None, result.message
        texts.add(result.meta)
        for depth in (MAX_SEQUENCE_DEPTH + 1, 450, 5000):
            deep = write_nested(
                tmp_path / f"d{depth}.dcm", depth, undefined=undefined, implicit=implicit
            )
            assert read_result(str(deep)).decoded().reason == "too_deep", depth
    assert len(texts) == 1
    meta = json.loads(texts.pop())
    levels = 0
    node = meta
    while "0040A730" in node:
        node = node["0040A730"]["Value"][0]
        levels += 1
    assert levels == MAX_SEQUENCE_DEPTH
    assert node["00080100"]["Value"] == ["X"]


@pytest.mark.parametrize(
    ("raised", "reason"),
    [
        (KeyError("a bug of ours"), "corrupt"),
        (MemoryError(), "too_large"),
        (RecursionError("maximum recursion depth exceeded"), "too_deep"),
        (OSError("No tag to read at file position 0x1f4"), "corrupt"),  # pydicom's, no errno
        (OSError(errno.EIO, "Input/output error"), "unreadable"),
        (PermissionError(errno.EACCES, "Permission denied"), "unreadable"),
    ],
)
def test_any_exception_becomes_a_reason(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException, reason: str
) -> None:
    from pixels_sql.dicom import meta

    def fail(source: object) -> None:
        raise raised

    monkeypatch.setattr(meta, "_read_meta", fail)
    monkeypatch.setattr(meta, "read_json_compiled", lambda local: None)  # the object path's guard
    result = read_result(str(CT)).decoded()
    assert (result.meta, result.reason) == (None, reason)
    assert type(raised).__name__ in result.message

    # The compiled one-call path is inside the same guard.
    monkeypatch.setattr(meta, "read_json_compiled", fail)
    result = read_result(str(CT)).decoded()
    assert (result.meta, result.reason) == (None, reason)
    assert type(raised).__name__ in result.message


def test_serialiser_failure_becomes_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON serialiser runs inside the guard too (it once raised RecursionError outside)."""
    from pixels_sql.dicom import meta

    def deep_dumps(value: object) -> str:
        raise RecursionError("maximum recursion depth exceeded while encoding a JSON object")

    monkeypatch.setattr(meta, "dumps", deep_dumps)
    monkeypatch.setattr(meta, "read_json_compiled", lambda local: None)  # the path that calls dumps
    assert read_result(str(CT)).decoded().reason == "too_deep"


def test_a_named_pipe_is_not_opened(tmp_path: Path) -> None:
    """Opening a FIFO would block the reader until a writer comes: it is refused unopened."""
    pipe = tmp_path / "pipe.dcm"
    os.mkfifo(pipe)
    result = read_result(str(pipe)).decoded()
    assert (result.meta, result.reason) == (None, "not_regular")
