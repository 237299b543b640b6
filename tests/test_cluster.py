"""The README's "On a Spark cluster" recipe, run as written on a real standalone cluster.

A module-scoped fixture starts a standalone master and one worker (1 core, 1 GiB) with the
README's own `spark-class` commands, bound to 127.0.0.1. The test then takes the shell and
Python blocks of that README section, substitutes only the placeholders (environment, master,
shared folder, DICOM folder, worker folder) and runs them: the job on a folder of sample files,
then, in a new process, the `pixels-sql` query, which finds the job's tables in the metastore.
All blocks but the installation run: this test's own environment, where pixels-sql is
installed, plays the part of `/opt/pixels-sql` on every "machine".

The processes get no PYSPARK_*/SPARK_* variables from the test run and a PATH without the
environment's `bin/`: the `python3` found there has no pandas, so the executors run the UDFs
only because the recipe's `spark.pyspark.python` tells them which Python to use.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pixels_sql.dicom.meta import read_result
from pixels_sql.dicom.tags import tag_value
from pixels_sql.session import session_conf
from tests.conftest import SAMPLE_FILES, copy_samples
from tests.serving import free_port

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## On a Spark cluster"
VENV = Path(sys.prefix)  # the environment running the tests, with pixels-sql installed
# Settings of the embedded session that only make sense for a local master; every other one
# must appear, with the same value, in the README's cluster settings.
LOCAL_ONLY = {
    "spark.master",  # the cluster's
    "spark.app.name",
    "spark.ui.enabled",
    "spark.ui.showConsoleProgress",
    "spark.ui.host",
    "spark.driver.bindAddress",  # loopback: executors on other machines could not connect
    "spark.driver.host",
    "spark.sql.shuffle.partitions",
    "spark.sql.files.minPartitionNum",  # from the local core count
}
TIMEOUT = 300  # seconds per step: generous for a loaded 2-core machine


@dataclass(frozen=True)
class Recipe:
    """The blocks of the README section, by role."""

    install: str
    settings: str
    cluster: str
    job_name: str
    job: str
    submit: str
    query: str

    @classmethod
    def from_readme(cls) -> Recipe:
        text = README.read_text()
        start = text.index(SECTION)
        end = text.find("\n## ", start + len(SECTION))
        section = text[start : end if end != -1 else len(text)]
        blocks = re.findall(r"^```(\w+)\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)
        roles: dict[str, str] = {}

        def claim(role: str, body: str) -> None:
            assert role not in roles, f"two README blocks look like the {role} step:\n{body}"
            roles[role] = body

        for language, body in blocks:
            if language == "python":
                claim("job", body)
            elif language != "bash":
                raise AssertionError(f"README cluster section: unexpected {language} block")
            elif "pip install" in body:
                claim("install", body)
            elif body.startswith("VENV="):
                claim("settings", body)
            elif "deploy.master.Master" in body:
                claim("cluster", body)
            elif "spark-submit" in body:
                claim("submit", body)
            elif "pixels-sql sql" in body:
                claim("query", body)
            else:
                raise AssertionError(f"README cluster block this test does not run:\n{body}")
        named = re.match(r"#\s*(\w+\.py)\b", roles["job"])
        assert named, "the job block's first line names its file: # pixels_job.py ..."
        return cls(job_name=named.group(1), **roles)


@dataclass(frozen=True)
class Cluster:
    recipe: Recipe
    values: dict[str, str]  # README placeholder -> this run's value
    env: dict[str, str]
    root: Path
    work_dir: Path  # the worker's: one folder per application, executor logs inside

    def fill(self, text: str) -> str:
        for placeholder, value in self.values.items():
            text = text.replace(placeholder, value)
        return text

    def shell(self, block: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """A README block in bash, after the settings block (as one would paste them)."""
        script = "set -euo pipefail\n" + self.fill(self.recipe.settings) + self.fill(block)
        started = time.monotonic()
        completed = subprocess.run(
            ["bash", "-c", script],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        print(f"{block.splitlines()[-1][:60]}: {time.monotonic() - started:.0f} s")
        return completed

    def applications(self) -> list[Path]:
        return sorted(self.work_dir.glob("app-*"))


def shared_archive_options() -> list[str]:
    """The JVM options tests/conftest.py gives the drivers the suite starts for its class
    archive (in SPARK_SUBMIT_OPTS), if it made one: pyspark's classpath, as here."""
    options = os.environ.get("SPARK_SUBMIT_OPTS", "").split()
    return [option for option in options if option.startswith(("-XX:SharedArchiveFile=", "-Xlog:"))]


def clean_env(root: Path) -> dict[str, str]:
    """This process's environment minus Spark/PySpark/pixels-sql settings and the venv's bin/."""
    archive = shared_archive_options()
    dropped = ("PYSPARK_", "SPARK_", "PIXELS_SQL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    venv_bin = (VENV / "bin").resolve()
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != venv_bin]
    env["PATH"] = os.pathsep.join(path)
    env.update(
        SPARK_LOCAL_IP="127.0.0.1",  # every daemon, driver and executor on loopback
        SPARK_LOCAL_DIRS=str(root / "scratch"),
        SPARK_DAEMON_MEMORY="256m",  # master and worker heaps
        # The master's REST submission server would take the fixed port 6066.
        SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false",
        # Test-only speed-up for the short-lived JVMs on a small machine: C1 only (roughly
        # halves the start-up CPU of a Spark JVM here), one GC thread, and the suite's class
        # archive (a JVM whose classpath does not match it says so on stderr, runs without).
        JAVA_TOOL_OPTIONS=" ".join(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", *archive]),
    )
    return env


def spark_class_commands(block: str) -> list[str]:
    """The `spark-class` lines of the cluster block, without the trailing `&` and comment."""
    commands = []
    for line in block.splitlines():
        if "bin/spark-class" in line:
            commands.append(re.sub(r"\s*&\s*(#.*)?$", "", line.strip()))
    assert len(commands) == 2, block
    return commands


def wait_for(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise AssertionError(f"{log.name}: no {text!r} (exit status {process.poll()}):\n{tail}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a daemon started by the fixture and what it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    recipe = Recipe.from_readme()
    root = tmp_path_factory.mktemp("cluster")
    port = free_port()
    values = {
        "/opt/pixels-sql": str(VENV),
        "spark-master.example": "127.0.0.1",
        "7077": str(port),
        "/shared/pixels": str(root / "shared"),
        "/shared/dicom": str(root / "dicom"),
        "/tmp/spark-work": str(root / "work"),
    }
    whole = "\n".join(
        [recipe.settings, recipe.cluster, recipe.job, recipe.submit, recipe.query, recipe.install]
    )
    for placeholder in values:
        assert placeholder in whole, f"README cluster section lost its {placeholder!r}"
    (root / "scratch").mkdir()
    env = clean_env(root)
    cluster = Cluster(recipe, values, env, root, root / "work")
    master_cmd, worker_cmd = spark_class_commands(cluster.fill(recipe.cluster))
    # Test-only flags: fixed free ports for the web UIs, a small worker, loopback.
    daemons = [
        ("master", f"{master_cmd} --webui-port {free_port()}", "I have been elected leader"),
        (
            "worker",
            f"{worker_cmd} --host 127.0.0.1 --cores 1 --memory 1g --webui-port {free_port()}",
            "Successfully registered with master",
        ),
    ]
    started: list[subprocess.Popen[bytes]] = []
    try:
        for name, command, ready in daemons:
            log = root / f"{name}.log"
            script = "set -euo pipefail\n" + cluster.fill(recipe.settings) + f"exec {command}\n"
            with open(log, "wb") as handle:
                process = subprocess.Popen(
                    ["bash", "-c", script],
                    cwd=root,
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            started.append(process)
            wait_for(log, ready, process, TIMEOUT)
        yield cluster
    finally:
        for process in reversed(started):
            stop(process)


@dataclass(frozen=True)
class Expected:
    """What the pipeline should record for a sample file, read here without Spark."""

    uid: str | None  # SOPInstanceUID
    reason: str | None  # meta_error_reason
    modality: str | None

    @classmethod
    def of(cls, name: str) -> Expected:
        result = read_result(str(SAMPLE_FILES[name])).decoded()
        meta = json.loads(result.meta) if result.meta else None
        if meta is None:
            return cls(None, result.reason, None)
        return cls(tag_value(meta, "SOPInstanceUID"), result.reason, tag_value(meta, "Modality"))


def catalog_rows(shared: Path) -> dict[str, tuple[str | None, str | None, object]]:
    """The rows of the table the job wrote, straight from its Parquet files in the warehouse."""
    folder = shared / "warehouse" / "pixels.db" / "object_catalog"
    columns = ["relative_path", "SOPInstanceUID", "meta_error_reason", "ingested_at"]
    table = pq.read_table(folder, columns=columns).to_pylist()
    paths = [row["relative_path"] for row in table]
    assert len(paths) == len(set(paths)), paths
    return {
        row["relative_path"]: (row["SOPInstanceUID"], row["meta_error_reason"], row["ingested_at"])
        for row in table
    }


def python_tasks(application: Path) -> int:
    """Python UDF tasks the application's executors ran (from the worker's executor logs)."""
    logs = list(application.glob("*/stderr"))
    assert logs, f"no executor log under {application}"
    marker = "Starting Python task execution"
    return sum(log.read_text(errors="replace").count(marker) for log in logs)


def summary_lines(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


def check(completed: subprocess.CompletedProcess[str], what: str) -> None:
    assert completed.returncode == 0, (
        f"{what} failed ({completed.returncode}):\n{completed.stdout[-2000:]}\n"
        f"{completed.stderr[-4000:]}"
    )


def test_readme_cluster_recipe(cluster: Cluster) -> None:
    recipe = cluster.recipe
    shared = Path(cluster.values["/shared/pixels"])
    job_dir = cluster.root / "job"
    job_dir.mkdir()
    (job_dir / recipe.job_name).write_text(cluster.fill(recipe.job))
    copy_samples(Path(cluster.values["/shared/dicom"]))
    expected = {name: Expected.of(name) for name in SAMPLE_FILES}
    assert any(e.uid for e in expected.values()) and any(e.reason for e in expected.values())

    # The job: a driver here, one executor on the worker.
    completed = cluster.shell(recipe.submit, job_dir)
    check(completed, "spark-submit")
    summary = summary_lines(completed.stdout)
    assert summary["files"] == str(len(SAMPLE_FILES))
    assert summary["table location"] == f"file:{shared}/warehouse/pixels.db/object_catalog"
    # The table's files are in the shared warehouse, one row per file, as read here.
    rows = catalog_rows(shared)
    assert {path: row[:2] for path, row in rows.items()} == {
        name: (e.uid, e.reason) for name, e in expected.items()
    }
    # The UDFs ran in the executor the worker started (a driver runs no tasks on a cluster).
    (application,) = cluster.applications()
    assert python_tasks(application) >= 2

    # The settings the README writes include the embedded session's, with the same values:
    # the same metastore and warehouse as a `--home` folder, the same tuning.
    written = dict(
        line.split(None, 1)
        for line in (job_dir / "pixels-cluster.conf").read_text().splitlines()
        if line.strip()
    )
    embedded = session_conf(shared, master=cluster.fill("spark://127.0.0.1:7077"))
    assert written["spark.master"] == embedded["spark.master"]
    assert written["spark.pyspark.python"] == str(VENV / "bin" / "python")
    options = written.pop("spark.driver.extraJavaOptions").split()
    assert set(options) <= set(embedded.pop("spark.driver.extraJavaOptions").split())
    missing = {k: v for k, v in embedded.items() if k not in LOCAL_ONLY and written.get(k) != v}
    assert not missing, (
        f"the README's cluster settings lack {missing}: add them there, or to LOCAL_ONLY in"
        " tests/test_cluster.py if they only matter for a local master"
    )

    # A new process, another Spark application, finds the job's tables in the metastore.
    try:
        completed = cluster.shell(recipe.query, job_dir)
    finally:
        # The query may have started the home's warm engine: it would idle on for minutes.
        home = ["--home", str(shared)]
        stopped = [str(VENV / "bin" / "pixels-sql"), "stop", *home]
        subprocess.run(stopped, env=cluster.env, capture_output=True, timeout=120, check=False)
    check(completed, "pixels-sql sql")
    lines = completed.stdout.strip().splitlines()
    assert [cell.strip() for cell in lines[0].split("|")] == ["Modality", "files"]
    counted = {
        cells[0].strip(): int(cells[1])
        for cells in (line.split("|") for line in lines[2:])
        if len(cells) == 2
    }
    assert counted == dict(Counter(e.modality or "NULL" for e in expected.values()))
    assert catalog_rows(shared) == rows  # read, not rewritten
