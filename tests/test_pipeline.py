"""The sql/ pipeline end to end on the session's metastore: catalog, meta, views, re-runs."""

from __future__ import annotations

import datetime
import io
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from pixels_sql.cli import execute
from pixels_sql.dicom.thumbnail import render_thumbnail
from pixels_sql.io.paths import path_tags
from pixels_sql.pipeline import PIPELINE_DIR
from pixels_sql.scripts import load_scripts
from tests.conftest import copy_samples, printed_value
from tests.corpus import EXPECTED_UNREADABLE, PYDICOM_TEST_FILES, corpus_files, pydicom_data_dir

DATABASE = "pipeline_test"


def run_pipeline(spark, folder: Path) -> str:
    out = io.StringIO()
    statements = load_scripts([PIPELINE_DIR], {"path": str(folder), "database": DATABASE})
    execute(spark, statements, out=out)
    return out.getvalue()


@pytest.fixture(scope="module")
def ingested(spark, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = copy_samples(tmp_path_factory.mktemp("pipeline"))
    spark.sql(f"DROP DATABASE IF EXISTS {DATABASE} CASCADE")
    printed = run_pipeline(spark, folder)
    assert f"{len(list(folder.rglob('*.*'))) + 1}" in printed  # files_to_read
    yield folder
    spark.sql("USE default")


def pydicom_dataset(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def test_one_row_per_file_and_errors_recorded(spark, ingested: Path) -> None:
    files = sorted(p for p in ingested.rglob("*") if p.is_file())
    rows = spark.sql(
        f"SELECT relative_path, meta IS NOT NULL AS ok FROM {DATABASE}.object_catalog"
    ).collect()
    assert sorted(r.relative_path for r in rows) == sorted(
        str(p.relative_to(ingested)) for p in files
    )
    errors = spark.sql(
        f"""SELECT regexp_extract(path, '[^/]+$', 0) AS name, reason, message, seen_at
            FROM {DATABASE}.object_errors ORDER BY name"""
    ).collect()
    assert [(e.name, e.reason) for e in errors] == [
        ("MR_truncated.dcm", "truncated"),
        ("README.txt", "not_dicom"),
        ("declared_deflated.dcm", "corrupt"),
    ]
    assert all(e.message and isinstance(e.seen_at, datetime.datetime) for e in errors)


def test_typed_columns_match_pydicom(spark, ingested: Path) -> None:
    rows = spark.sql(
        f"""SELECT * FROM {DATABASE}.object_catalog WHERE meta IS NOT NULL"""
    ).collect()
    assert len(rows) == 8
    for row in rows:
        dataset = pydicom_dataset(Path(row.local_path))
        assert row.SOPInstanceUID == dataset.get("SOPInstanceUID")
        assert row.StudyInstanceUID == dataset.get("StudyInstanceUID")
        assert row.SeriesInstanceUID == dataset.get("SeriesInstanceUID")
        assert row.Modality == dataset.get("Modality")
        assert row.PatientID == (dataset.get("PatientID") or None)
        if dataset.get("StudyDate"):
            assert row.StudyDate == datetime.datetime.strptime(dataset.StudyDate, "%Y%m%d").date()
        assert row.SeriesNumber == (
            int(dataset.SeriesNumber) if dataset.get("SeriesNumber") not in (None, "") else None
        )
        assert row.Rows == dataset.get("Rows")
        meta_file = dataset.file_meta
        assert row.TransferSyntaxUID == (meta_file.get("TransferSyntaxUID") if meta_file else None)
        assert row.extension == ("dcm" if row.local_path.endswith(".dcm") else "")
        assert row.path_tags == path_tags(row.path)


def test_variant_meta_is_queryable_with_databricks_functions(spark, ingested: Path) -> None:
    row = spark.sql(
        f"""SELECT variant_get(meta, '$.00100010.Value[0].Alphabetic', 'string') AS name,
                   dicom_tag(meta, 'PatientName') AS via_function
            FROM {DATABASE}.object_catalog WHERE relative_path = 'ct/CT_small.dcm'"""
    ).first()
    assert (
        row.name
        == row.via_function
        == str(pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm").PatientName)
    )


def test_thumbnails_for_every_image(spark, ingested: Path) -> None:
    rows = spark.sql(
        f"""SELECT c.relative_path, t.thumbnail, t.thumbnail_error_reason AS reason
            FROM {DATABASE}.object_catalog c JOIN {DATABASE}.object_thumbnails t USING (path)"""
    ).collect()
    by_path = {r.relative_path: r for r in rows}
    assert len(rows) == 8  # every file with a header, nothing for the 3 broken ones
    without_pixels = {"rt/rtplan.dcm", "raw/no_preamble"}  # an RT Plan and an RT Ion Plan
    assert {p for p, r in by_path.items() if r.reason == "no_pixel_data"} == without_pixels
    for relative, row in by_path.items():
        if relative not in without_pixels:
            assert bytes(row.thumbnail) == render_thumbnail(str(ingested / relative)), relative
    stages = spark.sql(f"SELECT DISTINCT stage FROM {DATABASE}.object_errors").collect()
    assert [s.stage for s in stages] == ["meta"]  # no_pixel_data is not an error


def test_series_and_study_views(spark, ingested: Path) -> None:
    good = [p for p in ingested.rglob("*") if p.is_file() and p.parent.name != "bad"]
    datasets = [pydicom_dataset(p) for p in good]
    expected_series = {(d.StudyInstanceUID, d.SeriesInstanceUID) for d in datasets}
    expected_studies = {d.StudyInstanceUID for d in datasets}
    series = spark.sql(
        f"SELECT StudyInstanceUID, SeriesInstanceUID, instances FROM {DATABASE}.series_catalog"
    ).collect()
    studies = spark.sql(
        f"SELECT StudyInstanceUID, instances, series FROM {DATABASE}.study_catalog"
    ).collect()
    assert {(s.StudyInstanceUID, s.SeriesInstanceUID) for s in series} == expected_series
    assert {s.StudyInstanceUID for s in studies} == expected_studies
    assert sum(s.instances for s in studies) == len(datasets)
    assert sum(s.series for s in studies) == len(expected_series)


def test_rerun_adds_nothing_and_new_files_are_incremental(spark, ingested: Path) -> None:
    def snapshot() -> dict[str, datetime.datetime]:
        rows = spark.sql(f"SELECT path, ingested_at FROM {DATABASE}.object_catalog").collect()
        assert len(rows) == len({r.path for r in rows}), "duplicate paths"
        return {r.path: r.ingested_at for r in rows}

    before = snapshot()
    printed = run_pipeline(spark, ingested)
    assert printed_value(printed, "files_to_read") == "0"
    assert snapshot() == before

    added = ingested / "new" / "CT_small_copy.dcm"
    added.parent.mkdir()
    shutil.copyfile(PYDICOM_TEST_FILES / "CT_small.dcm", added)
    run_pipeline(spark, ingested)
    after = snapshot()
    assert set(after) - set(before) == {f"file:{added}"}
    thumbnails = spark.sql(f"SELECT path FROM {DATABASE}.object_thumbnails").collect()
    assert len(thumbnails) == len({t.path for t in thumbnails}) == 9
    assert {path: after[path] for path in before} == before


def test_whole_public_corpus(spark, tmp_path: Path) -> None:
    """Every file of both corpora lands: good ones with meta, each bad one with its reason."""
    files = corpus_files()
    target = tmp_path / "corpus"
    shutil.copytree(PYDICOM_TEST_FILES, target / "pydicom")
    shutil.copytree(pydicom_data_dir(), target / "pydicom-data")
    statements = load_scripts([PIPELINE_DIR], {"path": str(target), "database": "corpus_test"})
    try:
        execute(spark, statements, out=io.StringIO())
        rows = spark.sql(
            """SELECT regexp_extract(path, '[^/]+$', 0) AS name, meta_error_reason AS reason
               FROM corpus_test.object_catalog"""
        ).collect()
        undecodable = spark.sql(
            """SELECT regexp_extract(path, '[^/]+$', 0) AS name, message
               FROM corpus_test.object_errors
               WHERE stage = 'thumbnail' AND reason = 'undecodable'"""
        ).collect()
    finally:
        spark.sql("DROP DATABASE IF EXISTS corpus_test CASCADE")
        spark.sql("USE default")
    listed = [p for p in files if not p.name.startswith(("_", "."))]
    assert len(rows) == len(listed)
    failed = {(r.name, r.reason) for r in rows if r.reason is not None}
    assert failed == set(EXPECTED_UNREADABLE.items())
    assert sum(1 for r in rows if r.reason is None) == sum(
        1 for p in listed if p.name not in EXPECTED_UNREADABLE
    )
    # The known-undecodable images get a thumbnail row whose reason names the transfer syntax.
    assert {(u.name, u.message.split(": ")[0]) for u in undecodable} == {
        (
            "JPEG2000-embedded-sequence-delimiter.dcm",
            "JPEG 2000 Image Compression (1.2.840.10008.1.2.4.91)",
        ),
    }


def test_progress_counts_what_finished_tasks_wrote(spark, tmp_path: Path) -> None:
    """On a real Spark: the JSON progress of a writing statement counts the rows its finished
    tasks wrote (200 per task here), never a fraction made up from task counts."""
    import json
    import time

    from pixels_sql.progress import Progress

    spark.udf.register("pixels_test_slowly", lambda x: time.sleep(0.005) or x, "long")
    stream = io.StringIO()
    with Progress(spark.sparkContext, stream, interval=0.05, mode="json") as progress:
        progress.statement("write", 1200, "rows")
        spark.range(0, 1200, 1, 6).selectExpr("pixels_test_slowly(id) AS id").write.parquet(
            str(tmp_path / "written")
        )
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert events, "no progress while the statement ran"
    assert all(event["statement"] == "write" and event["tasks"] == 6 for event in events)
    assert all(event["done"] == 200 * event["tasks_done"] for event in events), events
    assert any(0 < event["done"] < 1200 for event in events), events
