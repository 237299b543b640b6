"""The intake (servers/intake.py), the one path by which instances arrive from the network, and
the index rows it makes for them before the catalog holds them (servers/dicomweb/index.py).

The end-to-end paths (STOW-RS, C-STORE from DCMTK and Orthanc, kill -9) are in
test_dicomweb.py, test_writers.py and test_dimse.py; here the intake's rules one by one, and the
Python twin of the index's catalog query held equal to it on the corpus."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from pixels_sql.dicom.meta import read_model
from pixels_sql.ingest import ingest
from pixels_sql.io.paths import to_local_path
from pixels_sql.servers.dicomweb.index import (
    CatalogIndex,
    build_database,
    catalog_query,
    index_row,
    put_instance,
)
from pixels_sql.servers.intake import (
    CANNOT_UNDERSTAND,
    DUPLICATE_SOP_INSTANCE,
    STUDY_MISMATCH,
    Intake,
    Outcome,
)
from tests.conftest import SAMPLE_FILES, copy_samples
from tests.corpus import PYDICOM_TEST_FILES, pydicom_data_dir

DATABASE = "intake_test"


def encoded(dataset: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=False)
    return out.getvalue()


def instance(study: str | None = None, **changes: object) -> pydicom.Dataset:
    dataset = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")
    dataset.StudyInstanceUID = study or generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(dataset, keyword, value)
    return dataset


@pytest.fixture
def intake(spark, tmp_path: Path) -> Intake:
    # A real index of a database with no catalog yet: what a first `serve` of a home has.
    return Intake(CatalogIndex(spark, "intake_no_catalog_yet"), tmp_path / "landing")


def landed_files(intake: Intake) -> list[Path]:
    return sorted(p for p in intake.landing.rglob("*.dcm") if ".incoming" not in p.parts)


def test_an_instance_lands_under_its_uids_and_is_in_the_index_at_once(intake: Intake) -> None:
    dataset = instance()
    receipt = intake.receive(encoded(dataset), "test")
    assert receipt.outcome is Outcome.STORED and receipt.acknowledged
    target = (
        intake.landing
        / dataset.StudyInstanceUID
        / dataset.SeriesInstanceUID
        / f"{dataset.SOPInstanceUID}.dcm"
    )
    assert receipt.path == target and target.read_bytes() == encoded(dataset)
    served = intake.index.instance(str(dataset.SOPInstanceUID))
    assert served is not None and to_local_path(served.path) == str(target)
    assert intake.index.counts() == {"studies": 1, "series": 1, "instances": 1}
    assert not list((intake.landing / ".incoming").iterdir())  # no partial file left


def test_the_same_bytes_again_write_nothing_and_other_bytes_replace(intake: Intake) -> None:
    dataset = instance()
    first = intake.receive(encoded(dataset), "test")
    written = first.path.stat().st_mtime_ns
    again = intake.receive(io.BytesIO(encoded(dataset)), "test")  # a stream this time
    assert again.outcome is Outcome.ALREADY_HELD
    assert first.path.stat().st_mtime_ns == written
    dataset.InstanceNumber = 42
    newer = intake.receive(encoded(dataset), "test")
    assert newer.outcome is Outcome.REPLACED and newer.path == first.path
    assert first.path.read_bytes() == encoded(dataset)
    assert intake.index.counts()["instances"] == 1


def test_a_newer_version_in_another_series_moves(intake: Intake) -> None:
    dataset = instance()
    first = intake.receive(encoded(dataset), "test")
    dataset.SeriesInstanceUID = generate_uid()
    moved = intake.receive(encoded(dataset), "test")
    assert moved.outcome is Outcome.REPLACED and moved.path != first.path
    assert not first.path.exists() and landed_files(intake) == [moved.path]
    assert intake.index.counts() == {"studies": 1, "series": 1, "instances": 1}


def test_other_bytes_for_a_file_of_the_owner_are_refused(intake: Intake, tmp_path: Path) -> None:
    dataset = instance()
    own = tmp_path / "owner" / "a.dcm"
    own.parent.mkdir()
    dataset.save_as(own, enforce_file_format=False)
    status = own.stat()
    # As the index holds an instance catalogued from the owner's folder.
    intake.index.add(
        index_row(read_model(str(own)), f"file:{own}", status.st_size, status.st_mtime_ns // 10**6)
    )
    assert intake.receive(own.read_bytes(), "test").outcome is Outcome.ALREADY_HELD
    dataset.InstanceNumber = 9
    refused = intake.receive(encoded(dataset), "test")
    assert refused.outcome is Outcome.REFUSED and refused.reason == DUPLICATE_SOP_INSTANCE
    assert landed_files(intake) == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", CANNOT_UNDERSTAND),
        (b"not DICOM at all" * 20, CANNOT_UNDERSTAND),
        ((PYDICOM_TEST_FILES / "rtplan_truncated.dcm").read_bytes()[:300], CANNOT_UNDERSTAND),
    ],
)
def test_what_cannot_be_read_is_refused_and_nothing_kept(
    intake: Intake, content: bytes, reason: int
) -> None:
    receipt = intake.receive(content, "test")
    assert receipt.outcome is Outcome.REFUSED and receipt.reason == reason and receipt.message
    assert landed_files(intake) == [] and not list((intake.landing / ".incoming").iterdir())


def test_an_instance_without_uids_or_of_another_study_is_refused(intake: Intake) -> None:
    dataset = instance()
    del dataset.SeriesInstanceUID
    receipt = intake.receive(encoded(dataset), "test")
    assert receipt.reason == CANNOT_UNDERSTAND and "series_uid" in receipt.message
    other = intake.receive(encoded(instance()), "test", study=generate_uid())
    assert other.reason == STUDY_MISMATCH and landed_files(intake) == []


def test_start_removes_partial_files_of_a_killed_process(intake: Intake) -> None:
    incoming = intake.landing / ".incoming"
    incoming.mkdir(parents=True)
    (incoming / "deadbeef.part").write_bytes(b"half an instance")
    intake.batch_seconds = 3600.0  # no cataloguing run in this test
    intake.start()
    try:
        assert not list(incoming.iterdir())
    finally:
        intake.stop()


# -- the index of received instances ---------------------------------------------------------


def _tables(connection: sqlite3.Connection) -> dict[str, list[tuple]]:
    return {
        table: sorted(connection.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
        for table in ("studies", "series", "instances")
    }


def test_put_instance_makes_what_a_rebuild_makes(tmp_path: Path) -> None:
    study = generate_uid()
    rows = []
    for number, (name, modality) in enumerate([("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")]):
        dataset = pydicom.dcmread(PYDICOM_TEST_FILES / name)
        dataset.StudyInstanceUID = study
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SOPInstanceUID = generate_uid()
        dataset.Modality = modality
        path = tmp_path / f"{number}.dcm"
        dataset.save_as(path, enforce_file_format=False)
        rows.append(index_row(read_model(str(path)), f"file:{path}", 1, 1))
    built = build_database(rows)
    grown = build_database(rows[:1])
    put_instance(grown, rows[1])
    assert _tables(grown) == _tables(built)
    # Replacing an instance by one in another series leaves no empty series behind.
    moved = {**rows[1], "SeriesInstanceUID": rows[0]["SeriesInstanceUID"]}
    put_instance(grown, moved)
    assert _tables(grown) == _tables(build_database([rows[0], moved]))
    # The first instance of a series and study received again, with other series and study
    # attributes: the series and the study take them, as a rebuild would.
    changed = {**rows[0], "SeriesDate": "20250102", "StudyDescription": "AGAIN"}
    changed["study_json"] = changed["study_json"].replace("}", ',"00081030":{"vr":"LO"}}', 1)
    put_instance(grown, changed)
    assert _tables(grown) == _tables(build_database([changed, moved]))


@pytest.fixture(scope="module")
def catalogued(spark, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    folder = tmp_path_factory.mktemp("intake-corpus")
    copy_samples(folder, SAMPLE_FILES)
    for name in (
        "rtplan.dcm",
        "MR_small_bigendian.dcm",
        "SC_rgb_jpeg_gdcm.dcm",
        "nested_priv_SQ.dcm",
        # RequestAttributesSequence with an item, and empty (the index's sequence column).
        "examples_overlay.dcm",
        "JPGLosslessP14SV1_1s_1f_8b.dcm",
    ):
        source = PYDICOM_TEST_FILES / name
        shutil.copy(source if source.exists() else pydicom_data_dir() / name, folder / name)
    spark.sql(f"DROP DATABASE IF EXISTS {DATABASE} CASCADE")
    ingest(spark, str(folder), DATABASE, thumbnails=False)
    spark.sql(f"USE {DATABASE}")
    rows = [row.asDict() for row in spark.sql(catalog_query(DATABASE)).collect()]
    spark.sql("USE default")
    return rows


def test_index_rows_of_received_instances_equal_the_catalog_s(catalogued: list[dict]) -> None:
    """The Python twin (index_row, for an instance received before the catalog holds it) and
    the Spark query the index is built from agree on every file of the corpus."""
    assert len(catalogued) >= 6
    for row in catalogued:
        local = to_local_path(row["path"])
        status = os.stat(local)
        # What the intake notes of a file it landed: a rebuild knows by these that the catalog
        # holds the file as received.
        assert (row["length"], row["modified_ms"]) == (
            status.st_size,
            status.st_mtime_ns // 1_000_000,
        ), local
        twin = index_row(read_model(local), row["path"], row["length"], row["modified_ms"])
        assert set(twin) == set(row), local
        for key, value in row.items():
            if key.endswith("_json"):
                if value is not None:  # the catalog query keeps a study's JSON once
                    assert json.loads(twin[key]) == json.loads(value), (local, key)
            else:
                assert twin[key] == value, (local, key)
