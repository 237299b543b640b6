"""The dbt/ project against a real ``pixels-sql serve``: ``dbt build`` passes, a second build
reads only the files added or changed since and marks the deleted ones, and after each build
its tables equal the sql/ pipeline's run over the same folder: zip members read in place, a
modified file's new row in place of its old one, a deleted file's row with deleted_at.

One server (its own home, free ports) serves the whole module: two dbt builds (dbt in its own
venv, .venv-dbt, created by ``scripts/dbt-build --install`` when missing), each beside a
pipeline run through the same server over the same folder, then both read back through a
Spark Connect client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pixels_sql.dbt_sql import SCRIPTS
from pixels_sql.io.archives import member_path
from tests.conftest import SAMPLE_FILES, copy_samples
from tests.corpus import PYDICOM_TEST_FILES
from tests.hostile_archives import build_zip_slip
from tests.serving import free_port

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

REPO = Path(__file__).resolve().parent.parent
DBT_DIR = REPO / "dbt"
DBT = REPO / ".venv-dbt" / "bin" / "dbt"
DBT_SCHEMA = "dbt_test"
PIPELINE_DB = "pipeline_db"
READY_PREFIX = "pixels-sql serve: ready"

# The first build's folder: good files of three modalities and one that is not DICOM.
FIRST_FILES = {
    name: SAMPLE_FILES[name]
    for name in ("ct/CT_small.dcm", "mr/MR_small.dcm", "rt/rtplan.dcm", "bad/README.txt")
}
# A zip archive read in place: a DICOM member and one that is not DICOM. Before the second build
# it is written again without the second member (the first is read again: its archive changed;
# the second is deleted).
SERIES_ZIP = "zips/series.zip"
SERIES_MEMBERS = {
    "series/MR_small_RLE.dcm": SAMPLE_FILES["mr/MR_small_RLE.dcm"],
    "notes/README.txt": SAMPLE_FILES["bad/README.txt"],
}
# Changed before the second build: other bytes (and a later time) in place of the first ones.
MODIFIED = "mr/MR_small.dcm"
MODIFIED_SOURCE = SAMPLE_FILES["mr/MR_small_bigendian.dcm"]
# Deleted before the second build (an RT plan: its thumbnail row is no_pixel_data).
DELETED = "rt/rtplan.dcm"
# Added before the second build: more good files, a truncated one, one whose header reads but
# whose pixels do not decode (12-bit JPEG: a thumbnail error); and a zero-byte _-named file.
SECOND_FILES = {
    **{
        name: SAMPLE_FILES[name]
        for name in ("mr/MR_small_RLE.dcm", "us/US1_J2KR.dcm", "bad/MR_truncated.dcm")
    },
    "lossy/JPEG-lossy.dcm": PYDICOM_TEST_FILES / "JPEG-lossy.dcm",
}


@dataclass
class Server:
    home: Path
    jdbc_port: int
    process: subprocess.Popen[str]
    lines: list[str]


@pytest.fixture(scope="module")
def dbt_venv() -> Path:
    # CI starts from a fresh checkout: the same script as `make dbt` creates .venv-dbt (a no-op
    # when its stamp is newer than dbt/requirements.txt).
    completed = subprocess.run(
        [str(REPO / "scripts" / "dbt-build"), "--install"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert DBT.exists()
    return DBT


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("dbt-home")
    jdbc_port, connect_port, http_port = free_port(), free_port(), free_port()
    # Spark logs to <home>/logs; what serve itself says when it cannot start goes to stderr.
    stderr_path = home / "serve-stderr.txt"
    stderr = stderr_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pixels_sql.cli",
            "serve",
            "--home",
            str(home),
            "--master",
            "local[2]",
            "--jdbc-port",
            str(jdbc_port),
            "--connect-port",
            str(connect_port),
            "--http-port",
            str(http_port),
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith(READY_PREFIX):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 240
        while not ready.wait(0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"serve not ready (exit status {process.poll()}): {lines}"
                    f" {stderr_path.read_text()[-3000:]}"
                )
        yield Server(home, jdbc_port, process, lines)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            stderr.close()
    assert status == 0, f"{lines} {stderr_path.read_text()[-3000:]}"


def dbt_build(
    server: Server, dbt: Path, folder: Path, work: Path, *select: str
) -> list[dict[str, Any]]:
    """``dbt build`` over ``folder`` (of the ``select``ed models, or all), run by
    ``scripts/dbt-build`` — what ``make dbt`` runs — on the test server's home; its node
    results (run_results.json)."""
    assert dbt.exists()
    target = work / "target"
    completed = subprocess.run(
        [
            str(REPO / "scripts" / "dbt-build"),
            *(["--select", *select] if select else []),
            # Build output and logs stay out of the source tree.
            "--target-path",
            str(target),
            "--log-path",
            str(work / "logs"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "PIXELS_SQL_HOME": str(server.home),
            "DICOM_PATH": str(folder),
            # Were the running server not found, the script would start one on this port,
            # which is taken: it fails rather than building elsewhere.
            "PIXELS_SQL_JDBC_PORT": str(server.jdbc_port),
            "PIXELS_SQL_DBT_SCHEMA": DBT_SCHEMA,
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        },
    )
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-2000:]
    assert f"using the server running on {server.home}" in completed.stderr, completed.stderr
    return json.loads((target / "run_results.json").read_text())["results"]


def run_pipeline(server: Server, folder: Path) -> subprocess.Popen[str]:
    """``pixels-sql run`` over ``folder`` into PIPELINE_DB of the sql/ scripts the dbt models
    are made of, through the test server (a Connect client of it), started: the caller waits
    for it (:func:`finish`)."""
    scripts = ["00_database.sql", *SCRIPTS]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pixels_sql.cli",
            "run",
            *(str(REPO / "sql" / script) for script in scripts),
            "--home",
            str(server.home),
            "--param",
            f"path={folder}",
            "--param",
            f"database={PIPELINE_DB}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(pipeline: subprocess.Popen[str]) -> None:
    try:
        out, err = pipeline.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        pipeline.kill()
        pipeline.wait()
        raise
    assert pipeline.returncode == 0, out[-3000:] + err[-3000:]


def write_zip(archive: Path, members: dict[str, Path]) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for name, source in members.items():
            out.write(source, name)


# dbt model -> (pipeline table or view, columns compared). Left out: when a row was written
# (ingested_at, deleted_at, created_at, seen_at) and the run's time in ingest_run, which differ
# between two runs by construction; compared instead: whether a row is live, and the kind of
# partition it is in (ingest_run's suffix: '' read, 'failed', 'deleted'). meta compared as JSON
# text.
RUN_KIND = "regexp_extract(ingest_run, '[a-z]*$', 0) AS run_kind"
INSTANCE_COLUMNS = [
    "rowId",
    "path",
    "modificationTime",
    "length",
    "relative_path",
    "local_path",
    "extension",
    "path_tags",
    "to_json(meta) AS meta",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "TransferSyntaxUID",
    "PatientID",
    "PatientName",
    "AccessionNumber",
    "Modality",
    "BodyPartExamined",
    "Manufacturer",
    "StudyDate",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "`Rows`",
    "`Columns`",
    "NumberOfFrames",
    "meta_error_reason",
    "meta_error_message",
    "deleted_at IS NULL AS live",
    "meta_json_version",
    RUN_KIND,
]
PAIRS = {
    "instances": ("object_catalog", INSTANCE_COLUMNS),
    "thumbnails": (
        "object_thumbnails",
        [
            "path",
            "thumbnail",
            "thumbnail_size",
            "thumbnail_error_reason",
            "thumbnail_error_message",
            "deleted_at IS NULL AS live",
            RUN_KIND,
        ],
    ),
    "errors": ("object_errors", ["path", "stage", "reason", "message"]),
    "series": ("series_catalog", ["*"]),
    "studies": ("study_catalog", ["*"]),
    # The same MR instance is a file and a zip member with other bytes: two copies, a conflict;
    # CT_small is also the hostile archive's good member: two identical copies.
    "instance_copies": ("instance_copies", ["path", "SOPInstanceUID", "copies", "served"]),
    # The typed header table: every column but the times (None: the pipeline table's).
    "header": ("object_header", None),
    "header_issues": ("header_issues", ["path", "tag", "keyword", "vr", "values", "issue"]),
    "instance_conflicts": (
        "instance_conflicts",
        [
            "SOPInstanceUID",
            "served_path",
            "conflicting_path",
            "served_length",
            "conflicting_length",
        ],
    ),
}


# Views that may rightly be empty on the test's files (no value left its typed column).
MAY_BE_EMPTY = {"header_issues"}
TIMES = {"ingested_at", "deleted_at", "created_at", "ingest_run"}


def compared_columns(spark: SparkSession, model: str) -> list[str]:
    """PAIRS' columns of ``model``; for the typed header table, every column of the pipeline's
    but the times, by name (the two tables may have added their columns in another order)."""
    table, columns = PAIRS[model]
    if columns is not None:
        return columns
    names = sorted(set(spark.table(f"{PIPELINE_DB}.{table}").columns) - TIMES)
    return [f"`{name}`" for name in names] + ["deleted_at IS NULL AS live", RUN_KIND]


def table_rows(spark: SparkSession, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    """The rows of ``table`` as sorted tuples of ``columns`` (Spark Connect rows compare by
    value; sorted by their text, which orders rows holding NULLs and arrays too)."""
    return sorted(
        (tuple(row) for row in spark.table(table).selectExpr(*columns).collect()), key=repr
    )


@dataclass
class Builds:
    first: list[dict[str, Any]]
    second: list[dict[str, Any]]
    folder: Path
    # path -> (ingest_run, ingested_at) of the instances rows after the first build
    first_runs: dict[str, tuple[str, Any]]
    first_thumbnails: dict[str, Any]  # path -> created_at
    # model -> (dbt rows, pipeline rows) after the first build (PAIRS' columns)
    first_tables: dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]


@pytest.fixture(scope="module")
def connect_session(server: Server) -> Iterator[SparkSession]:
    from pixels_sql.servers.discovery import connect

    # Creating a Connect session marks the whole process as Connect mode (an environment
    # variable): undone afterwards, or later tests' classic sessions would become Connect ones.
    was_connect = "SPARK_CONNECT_MODE_ENABLED" in os.environ
    session = connect(server.home)
    try:
        yield session
    finally:
        session.stop()
        if not was_connect:
            os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)


@pytest.fixture(scope="module")
def builds(
    server: Server,
    dbt_venv: Path,
    connect_session: SparkSession,
    tmp_path_factory: pytest.TempPathFactory,
) -> Builds:
    folder = copy_samples(tmp_path_factory.mktemp("dicom"), FIRST_FILES)
    write_zip(folder / SERIES_ZIP, SERIES_MEMBERS)
    # Hostile members beside a good one: listed with unsafe_member, never read.
    build_zip_slip(folder / "zips")
    work = tmp_path_factory.mktemp("dbt-work")

    # Each build runs beside the pipeline over the same files, through the same server, in its
    # own database: much of either is waiting (polls, worker start-up), and the test's time
    # budget is a few minutes.
    pipeline = run_pipeline(server, folder)
    try:
        first = dbt_build(server, dbt_venv, folder, work / "first")
    finally:
        finish(pipeline)
    instances = connect_session.table(f"{DBT_SCHEMA}.instances")
    first_runs = {
        row.path: (row.ingest_run, row.ingested_at)
        for row in instances.select("path", "ingest_run", "ingested_at").collect()
    }
    first_thumbnails = {
        row.path: row.created_at
        for row in connect_session.table(f"{DBT_SCHEMA}.thumbnails").collect()
    }
    first_tables = {
        model: (
            table_rows(
                connect_session, f"{DBT_SCHEMA}.{model}", compared_columns(connect_session, model)
            ),
            table_rows(
                connect_session, f"{PIPELINE_DB}.{table}", compared_columns(connect_session, model)
            ),
        )
        for model, (table, _) in PAIRS.items()
    }

    copy_samples(folder, SECOND_FILES)
    (folder / "bad" / "_empty.dcm").touch()  # zero bytes, _-named: listed, reason empty
    modified = folder / MODIFIED
    previous = modified.stat().st_mtime
    copy_samples(folder, {MODIFIED: MODIFIED_SOURCE})
    os.utime(modified, (previous + 10, previous + 10))  # a later time, whatever the clock's grain
    (folder / DELETED).unlink()
    archive = folder / SERIES_ZIP
    previous = archive.stat().st_mtime
    write_zip(archive, {"series/MR_small_RLE.dcm": SERIES_MEMBERS["series/MR_small_RLE.dcm"]})
    os.utime(archive, (previous + 10, previous + 10))

    pipeline = run_pipeline(server, folder)
    try:
        # The second build: the tables (the two models that read files, the typed headers),
        # and their tests (views need no rebuild: they read the tables at query time).
        second = dbt_build(
            server, dbt_venv, folder, work / "second", "instances", "thumbnails", "header"
        )
    finally:
        finish(pipeline)
    # This session read the tables before their superseded partitions were rewritten (by other
    # sessions): it lists their files again, as any reader of a table that a run rewrote must.
    for table in (
        f"{DBT_SCHEMA}.instances",
        f"{DBT_SCHEMA}.thumbnails",
        f"{DBT_SCHEMA}.header",
        f"{PIPELINE_DB}.object_catalog",
        f"{PIPELINE_DB}.object_thumbnails",
        f"{PIPELINE_DB}.object_header",
    ):
        connect_session.sql(f"REFRESH TABLE {table}")
    return Builds(first, second, folder, first_runs, first_thumbnails, first_tables)


def test_dbt_build_passes_models_and_tests(builds: Builds) -> None:
    for results in (builds.first, builds.second):
        failed = {
            result["unique_id"]: result["status"]
            for result in results
            if result["status"] not in ("success", "pass")
        }
        assert not failed, failed
    first = [result["unique_id"] for result in builds.first]
    models = {node.split(".")[-1] for node in first if node.startswith("model.")}
    assert models >= {"instances", "thumbnails", *PAIRS}
    assert sum(node.startswith("test.") for node in first) >= 20
    # The generated accepted_values tests ran: every Modality Defined Term, every reason.
    assert any("accepted_values_instances_Modality" in node and "__RWV__" in node for node in first)
    assert any("accepted_values_errors_reason" in node and "zip_bomb" in node for node in first)
    # The second build ran the table models, and their tests.
    second = [result["unique_id"] for result in builds.second]
    models = {node.split(".")[-1] for node in second if node.startswith("model.")}
    assert models == {"instances", "thumbnails", "header"}
    assert any(node.startswith("test.") for node in second)


def _uri(folder: Path, relative: str) -> str:
    return f"file:{folder / relative}"


def test_zip_members_are_read_in_place(builds: Builds, connect_session: SparkSession) -> None:
    archive = _uri(builds.folder, SERIES_ZIP)
    rows = {
        row.path: row
        for row in connect_session.table(f"{DBT_SCHEMA}.instances")
        .where("path LIKE 'zip://%'")
        .collect()
    }
    good = rows[member_path("series/MR_small_RLE.dcm", archive)]
    assert good.Modality == "MR" and good.meta_error_reason is None and good.deleted_at is None
    assert good.relative_path == f"{SERIES_ZIP}/series/MR_small_RLE.dcm"
    gone = rows[member_path("notes/README.txt", archive)]
    assert gone.meta_error_reason == "not_dicom" and gone.deleted_at is not None
    reasons = {row.meta_error_reason for path, row in rows.items() if "slip.zip" in path}
    assert reasons == {None, "unsafe_member"}
    # The archive itself is no row: its members are.
    paths = connect_session.table(f"{DBT_SCHEMA}.instances").select("path").collect()
    assert archive not in {row.path for row in paths}


def test_second_build_reads_only_new_and_changed_files(
    builds: Builds, connect_session: SparkSession
) -> None:
    folder = builds.folder
    rows = {row.path: row for row in connect_session.table(f"{DBT_SCHEMA}.instances").collect()}
    archive = _uri(folder, SERIES_ZIP)
    changed = {
        _uri(folder, MODIFIED),
        member_path("series/MR_small_RLE.dcm", archive),  # its archive was written again
    }
    deleted = {_uri(folder, DELETED), member_path("notes/README.txt", archive)}
    unchanged = set(builds.first_runs) - changed - deleted
    added = set(rows) - set(builds.first_runs)
    assert len(added) == len(SECOND_FILES) + 1
    # One row per path: the older rows of changed and deleted files are gone.
    assert len(rows) == len(builds.first_runs) + len(added)
    # Untouched files keep their row: same run and read time.
    assert {p: (rows[p].ingest_run, rows[p].ingested_at) for p in unchanged} == {
        p: builds.first_runs[p] for p in unchanged
    }
    # New and changed files were read by the second build, in one run of its own.
    new_runs = {rows[p].ingest_run.split("-")[0] for p in added | changed}
    (first_run,) = {run.split("-")[0] for run, _ in builds.first_runs.values()}
    assert len(new_runs) == 1 and first_run not in new_runs
    for path in changed:
        assert rows[path].ingested_at > builds.first_runs[path][1]
        assert rows[path].deleted_at is None
    assert rows[_uri(folder, MODIFIED)].TransferSyntaxUID == "1.2.840.10008.1.2.2"  # big endian
    # A deleted file's last row again, with deleted_at; out of the views.
    for path in deleted:
        assert rows[path].deleted_at is not None
        assert rows[path].ingested_at == builds.first_runs[path][1]
        assert rows[path].ingest_run.endswith("-deleted")
    errors = connect_session.table(f"{DBT_SCHEMA}.errors").select("path").collect()
    assert not deleted & {row.path for row in errors}

    thumbnails = {
        row.path: row for row in connect_session.table(f"{DBT_SCHEMA}.thumbnails").collect()
    }
    kept = set(builds.first_thumbnails) - changed - deleted
    assert {p: thumbnails[p].created_at for p in kept} == {
        p: builds.first_thumbnails[p] for p in kept
    }
    # Rendered again for the changed image; the deleted plan's row marked.
    modified = thumbnails[_uri(folder, MODIFIED)]
    assert modified.created_at > builds.first_thumbnails[_uri(folder, MODIFIED)]
    assert modified.deleted_at is None and modified.thumbnail_error_reason is None
    plan = thumbnails[_uri(folder, DELETED)]
    assert plan.thumbnail_error_reason == "no_pixel_data" and plan.deleted_at is not None
    assert len(thumbnails) > len(builds.first_thumbnails)


@pytest.mark.parametrize("model", list(PAIRS))
def test_tables_equal_the_pipeline_after_the_first_build(builds: Builds, model: str) -> None:
    built, expected = builds.first_tables[model]
    assert expected or model in MAY_BE_EMPTY
    assert built == expected


@pytest.mark.parametrize("model", list(PAIRS))
def test_tables_equal_the_pipeline_after_add_modify_delete(
    builds: Builds, connect_session: SparkSession, model: str
) -> None:
    pipeline_table, _ = PAIRS[model]
    columns = compared_columns(connect_session, model)
    built = table_rows(connect_session, f"{DBT_SCHEMA}.{model}", columns)
    expected = table_rows(connect_session, f"{PIPELINE_DB}.{pipeline_table}", columns)
    assert expected or model in MAY_BE_EMPTY
    assert built == expected
