"""Fixtures: one SparkSession for the whole run (local[2]), small copies of the corpus."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.corpus import DECLARED_DEFLATED, PYDICOM_TEST_FILES, pydicom_data_dir

# A small, varied folder: good files of several modalities and encodings plus broken ones.
# The commands the tests run start a Spark of their own, as before the warm engine: an engine
# outlives its command (minutes), and one per test home would hold dozens of JVMs.
# tests/test_engine.py runs the engine itself.
os.environ.setdefault("PIXELS_SQL_ENGINE", "off")
# The de-identification key of the session's Python workers and of the commands tests run
# (they read it from the environment the JVM started with): a test key, not a secret.
TEST_DEID_KEY = "the pixels-sql test suite's key"
os.environ.setdefault("PIXELS_SQL_DEID_KEY", TEST_DEID_KEY)

SAMPLE_FILES = {
    "ct/CT_small.dcm": PYDICOM_TEST_FILES / "CT_small.dcm",
    "mr/MR_small.dcm": PYDICOM_TEST_FILES / "MR_small.dcm",
    "mr/MR_small_RLE.dcm": PYDICOM_TEST_FILES / "MR_small_RLE.dcm",
    "mr/MR_small_bigendian.dcm": PYDICOM_TEST_FILES / "MR_small_bigendian.dcm",
    "rt/rtplan.dcm": PYDICOM_TEST_FILES / "rtplan.dcm",
    "us/US1_J2KR.dcm": pydicom_data_dir() / "US1_J2KR.dcm",
    "mf/emri_small.dcm": pydicom_data_dir() / "emri_small.dcm",
    "raw/no_preamble": PYDICOM_TEST_FILES / "ExplVR_BigEndNoMeta.dcm",
    "bad/MR_truncated.dcm": PYDICOM_TEST_FILES / "MR_truncated.dcm",
    "bad/README.txt": PYDICOM_TEST_FILES / "README.txt",
    "bad/declared_deflated.dcm": DECLARED_DEFLATED,
}
README = PYDICOM_TEST_FILES / "README.txt"


def copy_samples(target: Path, names: dict[str, Path] = SAMPLE_FILES) -> Path:
    for relative, source in names.items():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    return target


# Test-only speed-up of the Spark driver JVMs the suite starts (this process's session, and
# every pixels-sql command, server and job it runs: dozens), as tests/test_cluster.py does for
# its daemons. A driver JVM spends most of its start-up loading and verifying classes from
# pyspark's jars and compiling them: with a dynamic CDS archive of those classes (written by a
# small ingest, about one JVM start) and C1 only, a session's start plus its first query took
# 8 s of CPU instead of 31 s here. What the JVMs run is unchanged. The archive's classpath is
# pyspark's, so it serves every driver spark-submit starts (SPARK_SUBMIT_OPTS); a JVM that
# cannot use it runs without it. This process's own session, long-lived and busy, keeps the
# optimising compiler.
#
# The archive is kept between runs in $PIXELS_SQL_TEST_CACHE (default
# ~/.cache/pixels-sql-tests; `make test` passes it), under a key of everything a JVM checks
# before it maps an archive: the JVM, pyspark's jars (paths, sizes, times), the options; plus
# the extension jar. A run that finds its key's archive starts no archive job; runs that need
# the same new archive at once write it once (a lock file).
CDS_ARCHIVE_JOB = """
import sys
from pathlib import Path
import pixels_sql
from pixels_sql.ingest import ingest

home, folder = Path(sys.argv[1]), Path(sys.argv[2])
spark = pixels_sql.session(home, master="local[2]")
ingest(spark, str(folder), thumbnails=False)
spark.stop()
"""
# C1 only (see above), with tiered compilation's code cache size: a C1-only JVM
# gets 48 MiB instead of 240 MiB, which test_dbt's server filled within two minutes; it then ran
# on interpreted ("CodeCache is full. Compiler has been disabled" on its stderr), its code
# sweeper busy too.
C1_ONLY = ("-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=240m")
CACHE_ENV = "PIXELS_SQL_TEST_CACHE"
# The product's own class archive (pixels_sql/jvm_classes.py) is off in the suite: the JVMs use
# the archive above, and nothing is written to the user's cache. test_engine checks the
# product's archive with a folder of its own.
os.environ["PIXELS_SQL_CLASS_ARCHIVE"] = "off"
# Archives of other keys (an older jar or pyspark) unused for this long are removed.
STALE_ARCHIVE_SECONDS = 24 * 3600


def _spark_submit_opts(*options: str) -> str:
    return " ".join(filter(None, [os.environ.get("SPARK_SUBMIT_OPTS", ""), *options]))


def cache_dir() -> Path:
    """Where tests keep what outlives a run (outside the checkout)."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return Path(chosen).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pixels-sql-tests"


def _archive_key() -> str:
    from pixels_sql.jvm_classes import runtime_key
    from pixels_sql.session import jar_path

    return runtime_key(jar_path(), f"{CDS_ARCHIVE_JOB}\0{os.environ.get('SPARK_SUBMIT_OPTS', '')}")


def _write_archive(archive: Path, work: Path) -> None:
    """Run the archive job; its archive lands at ``archive`` whole or not at all."""
    partial = archive.with_name(f"{archive.name}.{os.getpid()}.partial")
    folder = work / "data"
    copy_samples(folder, {"CT_small.dcm": SAMPLE_FILES["ct/CT_small.dcm"], "x.txt": README})
    # capture_output: run() returns once the pipes close, i.e. after the JVM (which writes the
    # archive as it exits, after the Python process) is gone.
    subprocess.run(
        [sys.executable, "-c", CDS_ARCHIVE_JOB, str(work / "home"), str(folder)],
        capture_output=True,
        timeout=600,
        env={
            **os.environ,
            "SPARK_SUBMIT_OPTS": _spark_submit_opts(f"-XX:ArchiveClassesAtExit={partial}"),
        },
    )
    if partial.is_file():
        os.replace(partial, archive)


def _remove_stale_archives(cache: Path, keep: Path) -> None:
    for old in cache.iterdir():
        try:
            stale = time.time() - old.stat().st_mtime > STALE_ARCHIVE_SECONDS
            if stale and old.stem != keep.stem:
                old.unlink()
        except OSError:
            pass


def cached_archive(work: Path) -> Path | None:
    """This JVM and pyspark's archive from the cache, written first when missing; None when
    the archive job could not write one."""
    import fcntl

    cache = cache_dir() / "jvm-classes"
    cache.mkdir(parents=True, exist_ok=True)
    key = _archive_key()
    archive = cache / f"spark-driver-{key}.jsa"
    with (cache / f"spark-driver-{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run writing this archive: wait for it
        if not archive.is_file():
            _write_archive(archive, work)
    if not archive.is_file():
        return None
    os.utime(archive)  # in use: not stale
    _remove_stale_archives(cache, archive)
    return archive


# Test modules that start no JVM (no Spark session, no pixels-sql command): they run first, while
# the archive job (~100 s when the JDK, pyspark or the jar changed, as on every fresh CI
# checkout) runs beside them; the first test that may start a JVM waits for the archive.
NO_JVM_MODULES = frozenset(
    {
        "test_archives.py",
        "test_deid.py",
        "test_dicom_meta_compiled.py",
        "test_dicom_meta_conformance.py",
        "test_dicom_meta_dcmtk.py",
        "test_dicom_meta_hostile.py",
        "test_docs.py",
        "test_gallery.py",
        "test_header_sinks.py",
        "test_isolation.py",
        "test_jvm_classes.py",
        "test_progress.py",
        "test_scripts.py",
        "test_tags.py",
        "test_thumbnail.py",
    }
)


def _starts_no_jvm(node: pytest.Item | pytest.Collector) -> bool:
    # Outside tests/: the doctests of pixels_sql/ (not those of pixels_sql/pixels/, which need
    # Spark: tests/test_pixels_api.py runs them).
    return node.path.name in NO_JVM_MODULES or node.path.parent.name != "tests"


# `make test` runs the modules on two workers (pytest-xdist, a module per worker at a time):
# the longest start first, so that neither worker is left with one of them at the end. The
# order of the slowest modules in a run (pytest's --durations), longest first.
LONGEST_MODULES = (
    "test_writers.py",
    "test_deidentify.py",
    "test_hardening.py",
    "test_ingest_kill.py",
    "test_serve.py",
    "test_dbt.py",
    "test_engine.py",
    "test_object_storage.py",
    "test_cli.py",
    "test_cluster.py",
    "test_security.py",
)


def _start_order(item: pytest.Item) -> tuple[bool, int]:
    name = item.path.name
    longest = LONGEST_MODULES.index(name) if name in LONGEST_MODULES else len(LONGEST_MODULES)
    return (not _starts_no_jvm(item), longest)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_start_order)  # stable: the order within a module is kept


class JvmClasses:
    """The archive job, run on a thread from the start of the session when a selected test may
    start a JVM; :meth:`ready` waits for it and points every driver JVM started from then on at
    the archive."""

    def __init__(self, work: Path, needed: bool) -> None:
        self._before = os.environ.get("SPARK_SUBMIT_OPTS")
        self._archive: Path | None = None
        self._own_session: str | None = None
        self._job: threading.Thread | None = None  # running, or not yet waited for
        if needed:
            self._job = threading.Thread(target=self._make, args=(work,), daemon=True)
            self._job.start()

    def _make(self, work: Path) -> None:
        self._archive = cached_archive(work)

    def ready(self) -> str | None:
        """The JVM options for this process's own session (None: no archive could be made)."""
        if self._job is not None:
            self._job.join()
            self._job = None
            if self._archive is not None:
                # A JVM that cannot use the archive says so on stdout, which commands print
                # results to: JVM warnings go to stderr instead.
                shared = (
                    f"-XX:SharedArchiveFile={self._archive} -Xlog:disable -Xlog:all=warning:stderr"
                )
                self._own_session = _spark_submit_opts(shared)
                os.environ["SPARK_SUBMIT_OPTS"] = _spark_submit_opts(shared, *C1_ONLY)
        return self._own_session

    def restore(self) -> None:
        if self._job is not None:
            self._job.join()  # never waited for: it ends before its work folder goes
        if self._before is None:
            os.environ.pop("SPARK_SUBMIT_OPTS", None)
        else:
            os.environ["SPARK_SUBMIT_OPTS"] = self._before


@pytest.fixture(scope="session")
def jvm_classes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JvmClasses]:
    # A run of only the modules that start no JVM makes no archive (a JVM start of its own).
    needed = not all(_starts_no_jvm(item) for item in request.session.items)
    classes = JvmClasses(tmp_path_factory.mktemp("jvm-classes"), needed)
    yield classes
    classes.restore()


# Module scope: autouse fixtures come first within their scope, so this runs before a module's
# own fixtures that start a server or a command.
@pytest.fixture(scope="module", autouse=True)
def shared_jvm_classes(request: pytest.FixtureRequest, jvm_classes: JvmClasses) -> None:
    """Before a module that may start a driver JVM: the archive is ready and in
    SPARK_SUBMIT_OPTS."""
    if not _starts_no_jvm(request.node):
        jvm_classes.ready()


@pytest.fixture(scope="session")
def spark_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pixels-home")


@pytest.fixture(scope="session")
def spark(spark_home: Path, jvm_classes: JvmClasses) -> Iterator[object]:
    import pixels_sql

    own_session = jvm_classes.ready()
    subprocesses = os.environ.get("SPARK_SUBMIT_OPTS")
    if own_session is not None:
        os.environ["SPARK_SUBMIT_OPTS"] = own_session
    try:
        session = pixels_sql.session(spark_home, master="local[2]")
    finally:
        if subprocesses is not None:
            os.environ["SPARK_SUBMIT_OPTS"] = subprocesses
    yield session
    session.stop()


# The session setting that turns off the listing's C folder reader (NativeFolders).
FOLDER_READER_CONF = "spark.pixels_sql.listing.native"


@pytest.fixture(params=["native", "java.nio"])
def folder_reader(request: pytest.FixtureRequest, spark) -> Iterator[str]:
    """A listing test runs twice: folders read by the jar's C library, then through java.nio
    (where the library does not load): both must give the same rows."""
    spark.conf.set(FOLDER_READER_CONF, "true" if request.param == "native" else "false")
    try:
        yield request.param
    finally:
        spark.conf.unset(FOLDER_READER_CONF)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_samples(tmp_path_factory.mktemp("samples"))


def printed_value(printed: str, column: str) -> str:
    """The first row's value of ``column`` in a table the CLI printed (header, rule, rows)."""
    lines = printed.split("\n")
    header = next(index for index, line in enumerate(lines) if column in line.split(" | "))
    names = [name.strip() for name in lines[header].split(" | ")]
    return lines[header + 2].split(" | ")[names.index(column)].strip()


def kill_after(
    process: subprocess.Popen[str],
    marker: str,
    delay: float,
    until: Callable[[], bool] | None = None,
    timeout: float = 600,
) -> str:
    """Read the process's stderr until ``marker``, then (given ``until``) wait until
    ``until()`` holds while the process runs, wait ``delay`` seconds, SIGKILL its whole process
    group (it must have been started with ``start_new_session``: driver JVM, Python workers,
    helpers); what it printed."""
    seen = ""
    assert process.stderr is not None
    while marker not in seen:
        line = process.stderr.readline()
        assert line, f"the run ended before {marker!r}: {seen[-3000:]}"
        seen += line
    deadline = time.monotonic() + timeout
    while until is not None and not until():
        assert process.poll() is None, f"the run ended before the kill point: {seen[-3000:]}"
        assert time.monotonic() < deadline, f"no kill point in {timeout} s: {seen[-3000:]}"
        time.sleep(0.02)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return seen
