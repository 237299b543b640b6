"""Incremental ingest (pixels_sql.ingest): new, changed and deleted files, and zip archives read
in place, against a clean single run of the same folder."""

from __future__ import annotations

import os
import shutil
import time
import warnings
import zipfile
from pathlib import Path

import pydicom
import pytest
from chispa import assert_df_equality

from pixels_sql.dicom.thumbnail import render_thumbnail
from pixels_sql.ingest import ingest
from pixels_sql.io.paths import path_tags
from tests.conftest import copy_samples
from tests.corpus import PYDICOM_TEST_FILES

INCREMENTAL = "ingest_incremental"
CLEAN = "ingest_clean"
# What a live catalog row is made of (ingested_at and ingest_run differ between runs).
ROW_COLUMNS = (
    "path, length, relative_path, local_path, extension, path_tags, SOPInstanceUID,"
    " SeriesInstanceUID, StudyInstanceUID, Modality, meta_error_reason,"
    " CAST(meta AS STRING) AS meta"
)


def live_rows(spark, database: str):
    return spark.sql(
        f"SELECT {ROW_COLUMNS} FROM {database}.object_catalog WHERE deleted_at IS NULL"
    )


def sop_instance_uid(path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID)


def touch_later(path: Path) -> None:
    """A modification time clearly after the first run's (file systems keep whole seconds)."""
    later = time.time() + 5
    os.utime(path, (later, later))


@pytest.fixture(scope="module")
def changed_folder(spark, tmp_path_factory: pytest.TempPathFactory):
    """A folder ingested once, then changed (two files added, one rewritten in place with
    another image, one deleted) and ingested twice more: the three reports."""
    for database in (INCREMENTAL, CLEAN):
        spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
    folder = copy_samples(tmp_path_factory.mktemp("ingest"))
    first = ingest(spark, str(folder), INCREMENTAL, thumbnail_size=64)

    shutil.copyfile(PYDICOM_TEST_FILES / "JPEG2000.dcm", folder / "ct" / "added_j2k.dcm")
    shutil.copyfile(PYDICOM_TEST_FILES / "SC_rgb_small_odd.dcm", folder / "added_rgb.dcm")
    rewritten = folder / "ct" / "CT_small.dcm"
    shutil.copyfile(PYDICOM_TEST_FILES / "MR_small.dcm", rewritten)
    touch_later(rewritten)
    (folder / "mr" / "MR_small_RLE.dcm").unlink()
    second = ingest(spark, str(folder), INCREMENTAL, thumbnail_size=64)
    third = ingest(spark, str(folder), INCREMENTAL, thumbnail_size=64)
    clean = ingest(spark, str(folder), CLEAN, thumbnail_size=64)
    yield folder, (first, second, third, clean)
    spark.sql("USE default")


def test_reports_count_new_changed_deleted(changed_folder) -> None:
    folder, (first, second, third, clean) = changed_folder
    files = sum(1 for path in folder.rglob("*") if path.is_file())
    assert (first.new, first.changed, first.deleted) == (files - 2 + 1, 0, 0)
    assert (second.new, second.changed, second.deleted) == (2, 1, 1)
    # Failures of this run: the rewritten file is good, the added ones too.
    assert second.failed == 0
    assert (third.new, third.changed, third.deleted, third.failed) == (0, 0, 0, 0)
    assert clean.new == files
    assert "2 new, 1 changed, 1 deleted, 0 failed" in second.line()


def test_live_rows_equal_a_clean_single_run(spark, changed_folder) -> None:
    assert_df_equality(
        live_rows(spark, INCREMENTAL),
        live_rows(spark, CLEAN),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    # One row per path: the rewritten file's older row and the deleted file's live row are gone.
    duplicated = spark.sql(
        f"SELECT path FROM {INCREMENTAL}.object_catalog GROUP BY path HAVING count(*) > 1"
    ).collect()
    assert duplicated == []


def test_rewritten_file_carries_its_new_uid(spark, changed_folder) -> None:
    folder, _ = changed_folder
    rewritten = folder / "ct" / "CT_small.dcm"
    row = spark.sql(
        f"""SELECT SOPInstanceUID, Modality FROM {INCREMENTAL}.object_catalog
            WHERE relative_path = 'ct/CT_small.dcm'"""
    ).first()
    assert row.SOPInstanceUID == sop_instance_uid(rewritten)
    assert row.SOPInstanceUID != sop_instance_uid(PYDICOM_TEST_FILES / "CT_small.dcm")
    assert row.Modality == "MR"
    thumbnail = spark.sql(
        f"""SELECT thumbnail FROM {INCREMENTAL}.object_thumbnails
            WHERE path LIKE '%/ct/CT_small.dcm' AND deleted_at IS NULL"""
    ).collect()
    assert [bytes(r.thumbnail) for r in thumbnail] == [render_thumbnail(str(rewritten), 64)]


def test_deleted_file_has_deleted_at_and_leaves_the_views(spark, changed_folder) -> None:
    deleted = spark.sql(
        f"""SELECT deleted_at, SOPInstanceUID, SeriesInstanceUID
            FROM {INCREMENTAL}.object_catalog WHERE relative_path = 'mr/MR_small_RLE.dcm'"""
    ).collect()
    assert len(deleted) == 1 and deleted[0].deleted_at is not None
    assert deleted[0].SOPInstanceUID == sop_instance_uid(PYDICOM_TEST_FILES / "MR_small_RLE.dcm")
    thumbnails = spark.sql(
        f"""SELECT deleted_at FROM {INCREMENTAL}.object_thumbnails
            WHERE path LIKE '%/mr/MR_small_RLE.dcm'"""
    ).collect()
    assert len(thumbnails) == 1 and thumbnails[0].deleted_at is not None
    for view in ("series_catalog", "study_catalog", "object_errors"):
        assert_df_equality(
            spark.table(f"{INCREMENTAL}.{view}").drop("seen_at"),
            spark.table(f"{CLEAN}.{view}").drop("seen_at"),
            ignore_row_order=True,
            ignore_nullable=True,
        )
    series = spark.sql(
        f"""SELECT instances FROM {INCREMENTAL}.series_catalog
            WHERE SeriesInstanceUID = '{deleted[0].SeriesInstanceUID}'"""
    ).collect()
    clean_series = spark.sql(
        f"""SELECT count(*) AS n FROM {CLEAN}.object_catalog
            WHERE SeriesInstanceUID = '{deleted[0].SeriesInstanceUID}'"""
    ).first()
    assert sum(r.instances for r in series) == clean_series.n


def test_a_deleted_file_that_comes_back_is_live_again(spark, tmp_path: Path) -> None:
    database = "ingest_comeback"
    spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
    target = tmp_path / "CT_small.dcm"
    shutil.copyfile(PYDICOM_TEST_FILES / "CT_small.dcm", target)
    shutil.copyfile(PYDICOM_TEST_FILES / "MR_small.dcm", tmp_path / "MR_small.dcm")
    ingest(spark, str(tmp_path), database, thumbnails=False)
    target.unlink()
    assert ingest(spark, str(tmp_path), database, thumbnails=False).deleted == 1
    shutil.copyfile(PYDICOM_TEST_FILES / "CT_small.dcm", target)
    back = ingest(spark, str(tmp_path), database, thumbnails=False)
    assert (back.new, back.deleted) == (1, 0)
    rows = spark.sql(
        f"SELECT path, deleted_at FROM {database}.object_catalog ORDER BY path"
    ).collect()
    assert [r.deleted_at for r in rows] == [None, None]


def test_files_outside_the_ingested_folder_are_not_deleted(spark, tmp_path: Path) -> None:
    database = "ingest_two_folders"
    spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, name in ((first, "CT_small.dcm"), (second, "MR_small.dcm")):
        folder.mkdir()
        shutil.copyfile(PYDICOM_TEST_FILES / name, folder / name)
    ingest(spark, str(first), database, thumbnails=False)
    report = ingest(spark, str(second), database, thumbnails=False)
    assert (report.new, report.deleted) == (1, 0)
    assert (
        spark.sql(
            f"SELECT count(*) FROM {database}.object_catalog WHERE deleted_at IS NULL"
        ).first()[0]
        == 2
    )


def test_rows_of_an_older_meta_json_version_are_read_again(spark, tmp_path: Path) -> None:
    """A table written before the PS3.18 F.2.5 fixes gets the current JSON on the next run."""
    database = "ingest_reread"
    spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copyfile(PYDICOM_TEST_FILES / name, tmp_path / name)
    ingest(spark, str(tmp_path), database, thumbnails=False)
    # What an older pixels-sql left: CT_small's newest row without a version, with the JSON of
    # version 1 (an empty sequence as "Value": []).
    from pyspark.sql import functions as F

    older = (
        spark.table(f"{database}.object_catalog")
        .where(F.col("path").endswith("CT_small.dcm"))
        .withColumn("meta", F.parse_json(F.lit('{"00081115":{"vr":"SQ","Value":[]}}')))
        .withColumn("meta_json_version", F.lit(None).cast("int"))
        .withColumn("ingest_run", F.date_format(F.current_timestamp(), "yyyyMMddHHmmssSSS"))
    )
    older.write.insertInto(f"{database}.object_catalog")
    report = ingest(spark, str(tmp_path), database, thumbnails=False)
    assert (report.new, report.changed, report.reread) == (0, 0, 1)
    assert "1 re-read (newer dicom_meta)" in report.line()
    rows = spark.sql(
        f"""SELECT path, meta_json_version, CAST(meta AS STRING) LIKE '%"Value":[]%' AS old_json
            FROM {database}.object_catalog ORDER BY path"""
    ).collect()
    assert [(r.meta_json_version, r.old_json) for r in rows] == [(2, False), (2, False)]
    assert ingest(spark, str(tmp_path), database, thumbnails=False).reread == 0


ZIPPED = "ingest_zipped"
EXTRACTED = "ingest_extracted"
ZIPPED_NAMES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm", "README.txt")


@pytest.fixture(scope="module")
def zipped_folder(spark, tmp_path_factory: pytest.TempPathFactory):
    """A folder with plain files, a zip of the same files in a subfolder and a zip holding a
    Zip Slip member beside a good one; ingested in place and with --extract-zip."""
    root = tmp_path_factory.mktemp("zipped")
    plain = root / "plain"
    plain.mkdir()
    for name in ZIPPED_NAMES:
        shutil.copyfile(PYDICOM_TEST_FILES / name, plain / name)
    with zipfile.ZipFile(root / "archive.zip", "w", zipfile.ZIP_DEFLATED) as out:
        for name in ZIPPED_NAMES:
            out.write(plain / name, f"series/{name}")
    with zipfile.ZipFile(root / "hostile.ZIP", "w", zipfile.ZIP_DEFLATED) as out:
        out.write(plain / "CT_small.dcm", "good.dcm")
        out.writestr("../escaped.dcm", (plain / "MR_small.dcm").read_bytes())
    extracted = tmp_path_factory.mktemp("extracted")
    for database in (ZIPPED, EXTRACTED):
        spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
    in_place = ingest(spark, str(root), ZIPPED, thumbnail_size=64)
    written = ingest(spark, str(root), EXTRACTED, thumbnail_size=64, extract_zip=str(extracted))
    yield root, extracted, in_place, written
    spark.sql("USE default")


def test_zip_members_read_in_place_equal_the_plain_files(spark, zipped_folder) -> None:
    root, _, in_place, _ = zipped_folder
    assert in_place.members == len(ZIPPED_NAMES) + 2
    rows = spark.sql(
        f"""SELECT path, relative_path, local_path, extension, path_tags, meta_error_reason,
                   CAST(meta AS STRING) AS meta, t.thumbnail
            FROM {ZIPPED}.object_catalog AS c
            LEFT JOIN {ZIPPED}.object_thumbnails AS t USING (path)"""
    ).collect()
    by_relative = {row.relative_path: row for row in rows}
    for name in ZIPPED_NAMES:
        plain = by_relative[f"plain/{name}"]
        member = by_relative[f"archive.zip/series/{name}"]
        assert member.path == f"zip://series/{name}::file:{root}/archive.zip"
        assert member.local_path == f"zip://series/{name}::{root}/archive.zip"
        assert member.extension == plain.extension
        words = path_tags(name)
        assert member.path_tags == [*path_tags(str(root)), "archive", "zip", "series", *words]
        assert member.meta_error_reason == plain.meta_error_reason
        if plain.meta is not None:
            # The same header; bulk data is referenced inside the archive.
            assert member.meta == plain.meta.replace(f"file://{root}/plain/{name}", member.path)
        assert member.thumbnail == plain.thumbnail


def test_hostile_members_are_recorded_and_good_ones_land(spark, zipped_folder) -> None:
    root, _, _, _ = zipped_folder
    errors = spark.sql(
        f"SELECT path, stage, reason FROM {ZIPPED}.object_errors WHERE path LIKE 'zip://%'"
    ).collect()
    # A member's row has its declared length, so the view files its listing reason under
    # stage 'meta' (the stage is 'catalog' only for rows without a length).
    assert sorted((e.path, e.stage, e.reason) for e in errors) == [
        (f"zip://../escaped.dcm::file:{root}/hostile.ZIP", "meta", "unsafe_member"),
        (f"zip://series/README.txt::file:{root}/archive.zip", "meta", "not_dicom"),
    ]
    good = spark.sql(
        f"""SELECT Modality FROM {ZIPPED}.object_catalog
            WHERE path = 'zip://good.dcm::file:{root}/hostile.ZIP'"""
    ).first()
    assert good.Modality == "CT"


def test_extract_zip_writes_the_archive_content_and_catalogues_it(spark, zipped_folder) -> None:
    root, extracted, in_place, written = zipped_folder
    assert written.members == in_place.members
    with zipfile.ZipFile(root / "archive.zip") as archive:
        for name in ZIPPED_NAMES:
            on_disk = extracted / "archive.zip" / "series" / name
            assert on_disk.read_bytes() == archive.read(f"series/{name}")
    assert (extracted / "hostile.ZIP" / "good.dcm").is_file()
    # Nothing of the Zip Slip member anywhere: not beside the destination, not in it.
    assert not any(path.name == "escaped.dcm" for path in root.parent.rglob("*"))
    assert not any(path.name == "escaped.dcm" for path in extracted.parent.rglob("*"))
    # The extracted files are catalogued in place of the members, with the same rows.
    columns = "relative_path, extension, meta_error_reason, SOPInstanceUID, Modality"
    assert_df_equality(
        spark.sql(f"SELECT {columns} FROM {EXTRACTED}.object_catalog"),
        spark.sql(f"SELECT {columns} FROM {ZIPPED}.object_catalog"),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    paths = {
        row.path
        for row in spark.sql(
            f"SELECT path FROM {EXTRACTED}.object_catalog WHERE relative_path LIKE 'archive.zip/%'"
        ).collect()
    }
    assert paths == {f"file:{extracted}/archive.zip/series/{name}" for name in ZIPPED_NAMES}


def test_extracting_again_writes_nothing(spark, zipped_folder) -> None:
    root, extracted, _, _ = zipped_folder
    on_disk = extracted / "archive.zip" / "series" / "CT_small.dcm"
    before = on_disk.stat()
    again = ingest(spark, str(root), EXTRACTED, thumbnail_size=64, extract_zip=str(extracted))
    assert (again.new, again.changed, again.deleted) == (0, 0, 0)
    after = on_disk.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
