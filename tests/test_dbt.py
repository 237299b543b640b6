"""The dbt/ project against a real ``pixels-sql serve``: ``dbt build`` passes, a second build
reads only the files added since, and its tables equal the sql/ pipeline's on the same files.

One server (its own home, free ports) serves the whole module: two dbt builds (dbt in its own
venv, .venv-dbt, created by ``scripts/dbt-build --install`` when missing), the pipeline run
through the same server over the same folder, then both read back through a Spark Connect
client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from chispa import assert_df_equality

from tests.conftest import SAMPLE_FILES, copy_samples
from tests.corpus import PYDICOM_TEST_FILES
from tests.serving import free_port

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

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


@dataclass
class Builds:
    first: list[dict[str, Any]]
    second: list[dict[str, Any]]
    # path -> (ingest_run, ingested_at) of the instances rows after the first build
    first_runs: dict[str, tuple[str, Any]]
    first_thumbnails: dict[str, Any]  # path -> created_at


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
    work = tmp_path_factory.mktemp("dbt-work")
    first = dbt_build(server, dbt_venv, folder, work / "first")
    instances = connect_session.table(f"{DBT_SCHEMA}.instances")
    first_runs = {
        row.path: (row.ingest_run, row.ingested_at)
        for row in instances.select("path", "ingest_run", "ingested_at").collect()
    }
    first_thumbnails = {
        row.path: row.created_at
        for row in connect_session.table(f"{DBT_SCHEMA}.thumbnails").collect()
    }

    copy_samples(folder, SECOND_FILES)
    (folder / "bad" / "_empty.dcm").touch()  # zero bytes, _-named: listed, reason empty

    # The pipeline over the same files, through the same server (a Connect client of it), in
    # its own database. It runs alongside the second build: much of either is waiting (polls,
    # worker start-up), and the test's time budget is a few minutes.
    pipeline = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pixels_sql.cli",
            "run",
            str(REPO / "sql"),
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
    try:
        # The second build: the two models that read files, and their tests (views need no
        # rebuild: they read the tables at query time).
        second = dbt_build(server, dbt_venv, folder, work / "second", "instances", "thumbnails")
    finally:
        try:
            out, err = pipeline.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            pipeline.kill()
            pipeline.wait()
            raise
    assert pipeline.returncode == 0, out[-3000:] + err[-3000:]
    return Builds(first, second, first_runs, first_thumbnails)


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
    assert models >= {"instances", "thumbnails", "series", "studies", "errors"}
    assert sum(node.startswith("test.") for node in first) >= 20
    # The second build ran the two models that read files, and their tests.
    second = [result["unique_id"] for result in builds.second]
    models = {node.split(".")[-1] for node in second if node.startswith("model.")}
    assert models == {"instances", "thumbnails"}
    assert any(node.startswith("test.") for node in second)


def test_second_build_reads_only_new_files(builds: Builds, connect_session: SparkSession) -> None:
    rows = connect_session.table(f"{DBT_SCHEMA}.instances").collect()
    runs = {row.path: (row.ingest_run, row.ingested_at) for row in rows}
    assert len(rows) == len(runs) == len(FIRST_FILES) + len(SECOND_FILES) + 1
    # The first build's rows are untouched: same run id and read time.
    assert {path: runs[path] for path in builds.first_runs} == builds.first_runs
    # Every new file was read by the second build, in one run of its own.
    new_runs = {run for path, (run, _) in runs.items() if path not in builds.first_runs}
    (first_run,) = {run for run, _ in builds.first_runs.values()}
    assert len(new_runs) == 1 and first_run not in new_runs
    thumbnails = {
        row.path: row.created_at
        for row in connect_session.table(f"{DBT_SCHEMA}.thumbnails").collect()
    }
    assert {path: thumbnails[path] for path in builds.first_thumbnails} == builds.first_thumbnails
    assert len(thumbnails) > len(builds.first_thumbnails)


# dbt model -> (pipeline table or view, columns compared). Left out: when a row was written
# and by which run (ingested_at, ingest_run, created_at, seen_at); meta compared as JSON text.
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
        ],
    ),
    "errors": ("object_errors", ["path", "stage", "reason", "message"]),
    "series": ("series_catalog", ["*"]),
    "studies": ("study_catalog", ["*"]),
}


def _rows(spark: SparkSession, table: str, columns: list[str]) -> DataFrame:
    return spark.table(table).selectExpr(*columns)


@pytest.mark.parametrize("model", list(PAIRS))
def test_tables_equal_the_pipeline(
    builds: Builds, connect_session: SparkSession, model: str
) -> None:
    pipeline_table, columns = PAIRS[model]
    built = _rows(connect_session, f"{DBT_SCHEMA}.{model}", columns)
    expected = _rows(connect_session, f"{PIPELINE_DB}.{pipeline_table}", columns)
    assert expected.count() > 0
    assert_df_equality(
        built, expected, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True
    )
