"""Bytes after the last complete element (zero padding, random garbage, a second copy of the
file, a few bytes too short for an element header): every header reader returns the header of
the file before them, byte for byte what it gives for the file alone, with the warning
``trailing_bytes`` (pixels_sql/dicom/trailing.py). A value cut short is still ``truncated``.

The mutants are made from the public corpus by tests/mutants.py (seeded); their headers are
compared with the original file's as pydicom reads it (the same elements) and as each reader
reads it (the same JSON).
"""

from __future__ import annotations

import io
import json
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from pixels_sql.dicom import fastmeta, trailing
from pixels_sql.dicom import meta as meta_module
from pixels_sql.dicom.meta import MetaRow, read_result
from pixels_sql.ingest import ingest
from pixels_sql.io.paths import to_file_uri
from pixels_sql.pixels import Catalog
from pixels_sql.pixels.dicom import DicomMetaExtractor
from tests.corpus import EXPECTED_UNREADABLE, PYDICOM_TEST_FILES, corpus_files
from tests.mutants import TRAILING_KINDS, with_trailing_bytes

READERS = ("one-call", "compiled", "python", "general")
# Every third readable corpus file (up to 600 KB): 70-odd files of every kind the corpus has
# (implicit and explicit VR, big endian, deflated, encapsulated, no pixel data, bare data
# sets), four mutants each.
SAMPLE = [
    path
    for path in corpus_files()
    if path.name not in EXPECTED_UNREADABLE and 0 < path.stat().st_size <= 600_000
][::3]


@pytest.fixture(scope="module")
def mutants(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Path, str]]:
    """(original, mutant, kind) for each sample file and kind of trailing bytes; only files
    that read without a warning of their own."""
    folder = tmp_path_factory.mktemp("trailing")
    made = []
    for index, path in enumerate(SAMPLE):
        original = read_result(str(path))
        if original.reason is not None or original.message is not None:
            continue
        data = path.read_bytes()
        for kind in TRAILING_KINDS:
            target = folder / f"{index:03d}_{kind}_{path.name}"
            target.write_bytes(with_trailing_bytes(data, kind, index))
            made.append((path, target, kind))
    assert len(made) >= 4 * 41
    return made


@pytest.fixture(params=READERS)
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The one-call compiled JSON writer, the compiled element loop (the object path), the
    pure-Python loop and the general (pydicom) reader."""
    monkeypatch.setattr(meta_module, "FAST_READER", request.param != "general")
    monkeypatch.setattr(fastmeta, "COMPILED", request.param in ("one-call", "compiled"))
    if request.param != "one-call":
        # The object path: read_json's None is what makes read_result take it.
        monkeypatch.setattr(meta_module, "read_json", lambda local: None)
    yield request.param


def pydicom_keys(path: Path) -> list[str]:
    """The file's elements as pydicom reads them, group lengths left out (as dicom_meta)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path, force=True)
    tags = list(dataset.file_meta.keys()) if dataset.file_meta is not None else []
    tags += list(dataset.keys())
    return sorted(f"{int(tag):08X}" for tag in tags if int(tag) & 0xFFFF)


def as_if_at(row: MetaRow, original: Path, mutant: Path) -> bytes:
    """The original's JSON with its BulkDataURIs naming the mutant (same offsets)."""
    assert row.meta is not None
    return row.meta.replace(to_file_uri(str(original)).encode(), to_file_uri(str(mutant)).encode())


def test_every_mutant_keeps_its_header(mutants: list[tuple[Path, Path, str]], reader: str) -> None:
    failures = []
    for original, mutant, kind in mutants:
        expected = read_result(str(original))
        got = read_result(str(mutant))
        size = original.stat().st_size
        problem = None
        if got.reason is not None:
            problem = f"{got.reason}: {got.message}"
        elif got.meta != as_if_at(expected, original, mutant):
            problem = "a different header"
        elif not (got.message or "").startswith(
            f"trailing_bytes: the {mutant.stat().st_size - size}"
        ):
            problem = f"warning {got.message!r}"
        elif f"from offset {size} to the end" not in got.message:
            problem = f"warning at another offset: {got.message!r}"
        elif sorted(json.loads(got.meta)) != pydicom_keys(original):
            problem = "elements other than pydicom's of the original"
        if problem is not None:
            failures.append((mutant.name, kind, problem))
    assert failures == [], f"{len(failures)} of {len(mutants)}: {failures[:5]}"


def test_the_one_call_writer_defers_every_mutant(mutants: list[tuple[Path, Path, str]]) -> None:
    """The compiled JSON writer never gives text for a file with trailing bytes (its text could
    not carry the warning): None, so the object path reads and warns."""
    if not fastmeta.is_available():
        pytest.fail("the compiled header reader is not built (make setup builds it)")
    written = [
        original for original, _mutant, _kind in mutants if fastmeta.read_json(str(original))
    ]
    assert len(written) > 20
    assert [m.name for _o, m, _k in mutants if fastmeta.read_json(str(m)) is not None] == []


CT_SMALL = PYDICOM_TEST_FILES / "CT_small.dcm"
RTPLAN = PYDICOM_TEST_FILES / "rtplan.dcm"


def end_of(path: Path, keyword: str) -> int:
    """The offset just after the top-level element ``keyword`` of the file at ``path``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = pydicom.dcmread(path, stop_before_pixels=True, defer_size=0)._dict
    element = raw[pydicom.datadict.tag_for_keyword(keyword)]
    return element.value_tell + element.length


def read_bytes_as(tmp_path: Path, name: str, data: bytes) -> MetaRow:
    path = tmp_path / name
    path.write_bytes(data)
    return read_result(str(path))


def test_a_value_cut_short_is_still_truncated(tmp_path: Path, reader: str) -> None:
    data = CT_SMALL.read_bytes()
    row = read_bytes_as(tmp_path, "cut.dcm", data[: end_of(CT_SMALL, "PatientName") - 3])
    assert (row.meta, row.reason) == (None, "truncated")


def test_a_header_cut_short_is_trailing_bytes(tmp_path: Path, reader: str) -> None:
    """A file that ends 5 bytes into an element header: the elements before it, a warning."""
    data = RTPLAN.read_bytes()
    boundary = end_of(RTPLAN, "PatientName")
    whole = read_bytes_as(tmp_path, "before.dcm", data[:boundary])
    row = read_bytes_as(tmp_path, "cut.dcm", data[: boundary + 5])
    assert row.reason is None
    assert row.meta == whole.meta.replace(b"before.dcm", b"cut.dcm")
    assert row.message == (
        f"trailing_bytes: the 5 bytes from offset {boundary} to the end of the file are not a"
        " data element (5 bytes cannot hold an element header (8 bytes)); the elements before"
        " them are read"
    )


@pytest.mark.parametrize(
    ("tag", "vr", "expected"),
    [
        # (FFFA,FFFA) Digital Signatures Sequence: a known element, cut short.
        (0xFFFAFFFA, b"SQ", "truncated"),
        # A private element with no creator before it: no writer puts it there.
        (0xFFF1_1234, b"OB", "trailing_bytes"),
    ],
)
def test_a_value_past_the_end_is_truncated_only_for_a_known_tag(
    tmp_path: Path, reader: str, tag: int, vr: bytes, expected: str
) -> None:
    header = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr + b"\0\0" + struct.pack("<I", 1000)
    row = read_bytes_as(tmp_path, "past.dcm", RTPLAN.read_bytes() + header + b"\1" * 10)
    if expected == "truncated":
        assert (row.meta, row.reason) == (None, "truncated")
    else:
        assert row.reason is None
        assert (row.message or "").startswith(
            f"trailing_bytes: the 22 bytes from offset {RTPLAN.stat().st_size}"
        )
        assert "(FFF1,1234) is no tag a writer puts there" in row.message


# Corpus files that do end with bytes after their data set, and what those bytes are.
HAS_TRAILING_BYTES = {
    "image_dfl.dcm": "8 bytes after the deflate stream: the CRC-32 and length of the inflated"
    " data set (a gzip trailer, which PS3.5 A.5's raw deflate does not have)",
}


def test_a_file_without_trailing_bytes_is_not_walked_as_if_it_had() -> None:
    """The walk finds nothing in whole files of every encoding (it must not cut good ones)."""
    for path in SAMPLE:
        if path.name in HAS_TRAILING_BYTES:
            with path.open("rb") as handle:
                assert trailing.find(handle, path.stat().st_size) is not None, path.name
            continue
        with path.open("rb") as handle:
            found = trailing.find(handle, path.stat().st_size)
        assert found is None, (path.name, found)


def test_prefix_ends_where_it_is_told() -> None:
    view = trailing.Prefix(io.BytesIO(b"0123456789"), 4)
    assert view.read() == b"0123"
    view.seek(2)
    assert view.read(10) == b"23"
    assert view.seek(0, io.SEEK_END) == 4
    assert view.read(1) == b""


def test_spark_dicom_meta_keeps_the_header(spark, mutants: list[tuple[Path, Path, str]]) -> None:
    frame = spark.createDataFrame([(str(m),) for _o, m, _k in mutants], "path STRING")
    frame.createOrReplaceTempView("trailing_mutants")
    rows = spark.sql(
        "SELECT path, dicom_meta(path) AS meta, dicom_meta_result(path) AS result,"
        " dicom_meta_error(path) AS error FROM trailing_mutants"
    ).collect()
    by_path = {row.path: row for row in rows}
    failures = []
    for original, mutant, _kind in mutants:
        row = by_path[str(mutant)]
        expected = as_if_at(read_result(str(original)), original, mutant).decode()
        if (
            row.meta != expected
            or row.result.meta != expected
            or row.result.reason is not None
            or row.error is not None
            or not (row.result.message or "").startswith("trailing_bytes: ")
        ):
            failures.append(mutant.name)
    assert failures == []


def test_the_catalog_keeps_the_header_and_the_warning(
    spark, mutants: list[tuple[Path, Path, str]], tmp_path: Path
) -> None:
    """Through the pipeline (ingest: 20_meta.sql) and the Catalog API (DicomMetaExtractor): a
    file with trailing bytes is catalogued with its header, no reason, the warning as its
    message, and is not an error; a whole file beside it has no message."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    for _original, mutant, kind in mutants[:8]:
        (folder / f"{kind}_{mutant.name}").write_bytes(mutant.read_bytes())
    (folder / "whole.dcm").write_bytes(CT_SMALL.read_bytes())
    database = "trailing_bytes_catalog"
    spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
    ingest(spark, str(folder), database, thumbnails=False)
    rows = spark.sql(
        f"SELECT relative_path, meta IS NOT NULL AS has_meta, meta_error_reason,"
        f" meta_error_message FROM {database}.object_catalog"
    ).collect()
    api = (
        DicomMetaExtractor(Catalog(spark, table=f"{database}.object_catalog"))
        .transform(spark.createDataFrame([(str(p),) for p in folder.iterdir()], "path STRING"))
        .collect()
    )
    errors = spark.sql(f"SELECT count(*) FROM {database}.object_errors").first()[0]
    spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
    spark.sql("USE default")
    assert len(rows) == 9 and errors == 0
    for row in rows:
        assert row.has_meta and row.meta_error_reason is None, row
        if row.relative_path == "whole.dcm":
            assert row.meta_error_message is None
        else:
            assert row.meta_error_message.startswith("trailing_bytes: the "), row
    assert sorted(
        (Path(r.path).name, r.meta is not None, r.meta_error_reason, r.meta_error_message)
        for r in api
    ) == sorted((r.relative_path, True, None, r.meta_error_message) for r in rows)
