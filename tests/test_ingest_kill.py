"""kill -9 of a real `pixels-sql ingest` (batch and --stream) over 600 files, then a re-run: the
tables equal those of a clean single run — nothing lost, nothing doubled, no stale working table
or lock left in the way.

Each kill comes once the statement it interrupts is writing (Spark's output committer has made
the table's _temporary folder), and the test checks that it did interrupt it: the table has no
partition of that run in place yet (for the stream: the checkpoint has the first micro-batch
committed, not the second). So the kills land where they must on a fast machine as on a slow
one, and a few hundred files are enough (it was 2,000 and fixed delays).

The clean single run is the same ingest in this test process's session (its own database):
the same scripts and functions, without one more JVM start for the run and one for reading
its tables back."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import pytest
from chispa import assert_df_equality

from tests.conftest import kill_after
from tests.corpus import PYDICOM_TEST_FILES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ROOT = Path(__file__).parent.parent
FILES = 600
ZIPPED = 60  # of FILES, in one archive
PER_SERIES = 75
# The stream's files per trigger: the FILES - ZIPPED + 2 files it lists (the archive and a
# README among them) make two micro-batches.
PER_TRIGGER = 300
DATABASE = "pixels"
CLEAN_DATABASE = "kill_clean"
# Both tables in one query (one JVM start per home): catalog rows, then thumbnail rows.
DUMP = (
    "SELECT 'catalog' AS kind, path, meta_error_reason AS reason, SOPInstanceUID, relative_path,"
    " CAST(meta AS STRING) AS detail, deleted_at IS NULL AS live FROM {database}.object_catalog"
    " UNION ALL SELECT 'thumbnail', path, thumbnail_error_reason, NULL, NULL,"
    " sha2(thumbnail, 256), deleted_at IS NULL FROM {database}.object_thumbnails"
)
SCHEMA = (
    "kind STRING, path STRING, reason STRING, SOPInstanceUID STRING, relative_path STRING,"
    " detail STRING, live BOOLEAN"
)


def pixels_sql(*args: str, home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pixels_sql.cli", *args, "--home", str(home)],
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the test kills the whole tree
    )


def finish(process: subprocess.Popen[str], timeout: float = 900) -> tuple[str, str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-4000:]
    return out, err


def query(home: Path, sql: str) -> list[dict]:
    process = pixels_sql("sql", sql, "--format", "json", "--limit", "1000000", home=home)
    out, _ = finish(process)
    return [json.loads(line) for line in out.split("\n") if line.startswith("{")]


def table_dir(home: Path, table: str) -> Path:
    return home / "warehouse" / f"{DATABASE}.db" / table


def writing(home: Path, table: str) -> Callable[[], bool]:
    """Whether an INSERT into ``table`` runs: its job made the table's _temporary folder (it
    goes when the job commits; a killed run's is removed by the next run)."""
    return lambda: (table_dir(home, table) / "_temporary").is_dir()


def runs_in_place(home: Path, table: str) -> list[str]:
    """The table's partition folders: an INSERT's rows move there when its job commits."""
    return [path.name for path in table_dir(home, table).glob("ingest_run=*")]


def build_folder(folder: Path) -> Path:
    """FILES copies of CT_small with their own UIDs (a few series), ZIPPED of them in a zip."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        template = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")
    archive = zipfile.ZipFile(folder / "archive.zip", "w", zipfile.ZIP_DEFLATED)
    with archive:
        for index in range(FILES):
            series = index // PER_SERIES
            template.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1{series % 3}"
            template.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.2{series}"
            template.SOPInstanceUID = f"1.2.826.0.1.3680043.10.3.{index}"
            template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
            template.InstanceNumber = index
            if index < ZIPPED:
                buffer = folder / "member.tmp"
                template.save_as(buffer)
                archive.write(buffer, f"zipped/{index:05d}.dcm")
                buffer.unlink()
            else:
                target = folder / f"series{series}" / f"{index:05d}.dcm"
                target.parent.mkdir(exist_ok=True)
                template.save_as(target)
    (folder / "README.txt").write_text("not DICOM")
    return folder


@pytest.fixture(scope="module")
def many_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_folder(tmp_path_factory.mktemp("many"))


@pytest.fixture(scope="module")
def clean(spark: SparkSession, many_files: Path) -> DataFrame:
    from pixels_sql.ingest.batch import ingest

    report = ingest(spark, str(many_files), CLEAN_DATABASE, thumbnail_size=32, log=io.StringIO())
    assert (report.new, report.changed, report.deleted, report.failed) == (FILES + 1, 0, 0, 1)
    rows = spark.sql(DUMP.format(database=CLEAN_DATABASE))
    assert {row.kind for row in rows.select("kind").distinct().collect()} == {
        "catalog",
        "thumbnail",
    }
    return rows


def assert_same_tables(spark: SparkSession, clean: DataFrame, home: Path) -> None:
    assert_df_equality(
        spark.createDataFrame(query(home, DUMP.format(database=DATABASE)), SCHEMA),
        clean,
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_kills_mid_metadata_then_mid_thumbnails_then_a_rerun_give_the_clean_rows(
    tmp_path: Path, many_files: Path, clean: DataFrame, spark: SparkSession
) -> None:
    home = tmp_path / "home"
    ingest = ("ingest", str(many_files), "--thumbnail-size", "32")
    # 20_meta.sql's INSERT comes right after 10_catalog.sql's counts: kill while it writes.
    run = pixels_sql(*ingest, home=home)
    seen = kill_after(run, "files_to_read", 0.5, until=writing(home, "object_catalog"))
    assert f"zip_members {ZIPPED}" in seen
    assert runs_in_place(home, "object_catalog") == [], "the kill came after the INSERT"
    # The re-run reads what the killed one did not commit; kill it while it renders thumbnails.
    run = pixels_sql(*ingest, home=home)
    seen = kill_after(run, "images_to_render", 0.5, until=writing(home, "object_thumbnails"))
    assert "new_files" in seen
    assert runs_in_place(home, "object_catalog") != []
    assert runs_in_place(home, "object_thumbnails") == [], "the kill came after the INSERT"
    out, _ = finish(pixels_sql(*ingest, home=home))
    assert "ingest:" in out
    assert_same_tables(spark, clean, home)


def test_stream_killed_mid_batch_restarts_from_its_checkpoint_exactly_once(
    tmp_path: Path, many_files: Path, clean: DataFrame, spark: SparkSession
) -> None:
    home, checkpoint = tmp_path / "home", tmp_path / "checkpoint"
    stream = (
        "ingest",
        str(many_files),
        "--stream",
        "--checkpoint",
        str(checkpoint),
        "--trigger",
        "available-now",
        "--max-files-per-trigger",
        str(PER_TRIGGER),
        "--thumbnail-size",
        "32",
    )
    # Two micro-batches; kill in the middle of the second one (while it writes its header
    # rows), after the first one committed.
    run = pixels_sql(*stream, home=home)
    kill_after(run, "micro-batch 0:", 0.5, until=writing(home, "object_catalog"))
    assert (checkpoint / "commits" / "0").is_file()
    assert not (checkpoint / "commits" / "1").exists(), "the kill came after the micro-batch"
    out, err = finish(pixels_sql(*stream, home=home))
    assert "stream:" in out, err[-3000:]
    assert_same_tables(spark, clean, home)
