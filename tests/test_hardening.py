"""Hostile input through the real CLI pipeline: every file one row, kills lose and double nothing.

One folder holds seeded mutants of the public corpus (byte flips, truncation, huge and
undefined lengths, VR swaps, fragment lengths, garbage after the preamble), sequences nested
100 to 5,000 levels, good files, a zero-byte file, a `_`-named file and folder, a symlink loop,
a dangling link, a named pipe, and files on which an exception or a native abort is injected
into the metadata and the thumbnail stage (tests/inject/sitecustomize.py). Its name has a
quote, `${x}`, `[1]`, a space and non-ASCII. `pixels-sql run sql` must finish with exactly one
row per file, every good file's metadata and thumbnail, and Python processes under 1 GiB.

Then one home goes through a chain of runs, each killed (the whole process tree, SIGKILL) at
another point — while listing, while header rows are written, while thumbnails are written —
and a last run that finishes: its tables must equal those of the clean run, and one more run
must read nothing and change nothing. (One chain rather than one kill-and-rerun per point:
every kill is followed by a run that must take over from it, and CI keeps three JVM pipeline
runs fewer.) PIXELS_SQL_FUZZ_MUTANTS sets the mutant count (`make fuzz` runs 5,000).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from chispa import assert_df_equality

from pixels_sql.pipeline import PIPELINE_DIR
from pixels_sql.scripts import load_scripts
from tests.conftest import SAMPLE_FILES, copy_samples, kill_after, printed_value
from tests.corpus import PYDICOM_TEST_FILES, corpus_files
from tests.mutants import write_mutants

ROOT = Path(__file__).parent.parent
INJECT = Path(__file__).parent / "inject"
# 80 in CI (each of the 8 pipeline runs here reads them all; CI must stay under 30 min),
# 5,000 in `make fuzz`.
MUTANTS = int(os.environ.get("PIXELS_SQL_FUZZ_MUTANTS", "80"))
HOSTILE_NAME = "O'Brien ${x} scans [1] é"
GOOD = {name for name in SAMPLE_FILES if not name.startswith("bad/")}
IMAGES = GOOD - {"rt/rtplan.dcm", "raw/no_preamble"}  # no pixel data
ONE_GIB = 1 << 30
# Both tables in one query (each query is a JVM start): catalog rows, then thumbnail rows.
DUMP = (
    "SELECT 'catalog' AS kind, path, meta_error_reason AS reason, SOPInstanceUID,"
    " CAST(meta AS STRING) AS detail FROM object_catalog"
    " UNION ALL SELECT 'thumbnail', path, thumbnail_error_reason, NULL,"
    " sha2(thumbnail, 256) FROM object_thumbnails"
)
SCHEMA = "kind STRING, path STRING, reason STRING, SOPInstanceUID STRING, detail STRING"
# Where the chain of killed runs is killed: (script, start of the statement that runs then,
# seconds after the statement before it finished).
KILL_POINTS = [
    ("10_catalog.sql", "CREATE TABLE IDENTIFIER(pixels_listing_table)", 0.2),  # while listing
    ("20_meta.sql", "INSERT INTO object_catalog", 1.0),  # while the header rows are written
    ("40_thumbnails.sql", "INSERT INTO object_thumbnails", 0.5),  # while thumbnails are
]


def pixels_sql(
    *args: str, home: Path, inject: bool = False, **popen: object
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PIXELS_SQL_FILE_TIMEOUT": "120"}
    if inject:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(INJECT), env.get("PYTHONPATH")]))
        env["PIXELS_SQL_TEST_INJECT"] = "1"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pixels_sql.cli",
            *args,
            "--home",
            str(home),
            "--master",
            "local[2]",
        ],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the test kills the whole tree
        **popen,
    )


def finish(process: subprocess.Popen[str], timeout: float = 900) -> tuple[str, str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-4000:]
    return out, err


def build_folder(base: Path) -> Path:
    folder = copy_samples(base / HOSTILE_NAME / "data")
    sources = [p for p in corpus_files() if p.suffix in (".dcm", "")]
    write_mutants(folder / "mutants", sources, MUTANTS)
    (folder / "empty.dcm").touch()
    shutil.copyfile(PYDICOM_TEST_FILES / "CT_small.dcm", folder / "_0001.dcm")
    (folder / "_sub").mkdir()
    shutil.copyfile(PYDICOM_TEST_FILES / "MR_small.dcm", folder / "_sub" / "_0002.dcm")
    (folder / "ct" / "loop").symlink_to("..")
    (folder / "dangling.dcm").symlink_to(base / "nowhere.dcm")
    os.mkfifo(folder / "pipe.dcm")
    for name in (
        "inject-meta-abort",
        "inject-meta-raise",
        "inject-thumb-abort",
        "inject-thumb-raise",
    ):
        shutil.copyfile(PYDICOM_TEST_FILES / "CT_small.dcm", folder / f"{name}.dcm")
    return folder


def regular_files(folder: Path) -> set[str]:
    """Every file a listing must give a row for (symlinked folders not followed twice)."""
    found = set()
    for directory, folders, files in os.walk(folder):
        folders[:] = [f for f in folders if not f.startswith(".")]
        found |= {os.path.join(directory, f) for f in files if not f.startswith(".")}
    return found


class PeakRss:
    """Largest VmHWM of the Python processes in a process group, sampled while it runs."""

    def __init__(self, group: int) -> None:
        self.group, self.peak, self._stop = group, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    text = status.read_text()
                    if os.getpgid(int(status.parent.name)) != self.group:
                        continue
                    cmdline = (status.parent / "cmdline").read_bytes()
                except (OSError, ProcessLookupError):
                    continue
                if b"java" in cmdline.split(b"\0")[0]:
                    continue
                for line in text.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_folder(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory, hostile: Path) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("clean-home")
    process = pixels_sql("run", "sql", "--param", f"path={hostile}", home=home, inject=True)
    rss = PeakRss(process.pid)
    out, err = finish(process)
    yield {"home": home, "out": out, "err": err, "peak_rss": rss.stop()}


def query(home: Path, sql: str) -> list[dict]:
    out, _ = finish(pixels_sql("sql", sql, "--format", "json", "--limit", "1000000", home=home))
    # Split on newlines only: DICOM text may hold U+2028 or U+0085, which splitlines() takes
    # for line breaks and JSON lines keep unescaped.
    return [json.loads(line) for line in out.split("\n") if line.startswith("{")]


_CLEAN: list[dict] = []


def clean_rows(clean_run: dict, kind: str) -> list[dict]:
    """The clean run's ``kind`` rows (``catalog`` or ``thumbnail``), queried once."""
    if not _CLEAN:
        _CLEAN.extend(query(clean_run["home"], DUMP))
    return [row for row in _CLEAN if row["kind"] == kind]


def rows_by_path(rows: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for row in rows:
        found.setdefault(row["path"], []).append(row)
    return found


def test_every_file_has_exactly_one_row(clean_run: dict, hostile: Path) -> None:
    catalog = rows_by_path(clean_rows(clean_run, "catalog"))
    expected = regular_files(hostile) - {str(hostile / "ct" / "loop")}
    local = {path.removeprefix("file:"): rows for path, rows in catalog.items()}
    assert set(local) == expected
    assert all(len(rows) == 1 for rows in local.values())
    reasons = {Path(p).name: rows[0]["reason"] for p, rows in local.items()}
    assert reasons["empty.dcm"] == "empty"
    assert reasons["dangling.dcm"] == "not_found"
    assert reasons["pipe.dcm"] == "not_regular"
    assert reasons["_0001.dcm"] is None and reasons["_0002.dcm"] is None
    assert reasons["inject-meta-abort.dcm"] == "decoder_crash"
    assert reasons["inject-meta-raise.dcm"] == "corrupt"
    for depth in (100, 128):
        assert reasons[f"nested_{depth}_defined.dcm"] is None
        assert reasons[f"nested_{depth}_undefined.dcm"] is None
    for depth in (129, 250, 1000, 5000):
        assert reasons[f"nested_{depth}_defined.dcm"] == "too_deep"
        assert reasons[f"nested_{depth}_undefined.dcm"] == "too_deep"
    for name in GOOD:
        assert local[str(hostile / name)][0]["detail"] is not None, name


def test_every_good_image_has_a_thumbnail_and_injected_failures_have_reasons(
    clean_run: dict, hostile: Path
) -> None:
    thumbnails = rows_by_path(clean_rows(clean_run, "thumbnail"))
    local = {path.removeprefix("file:"): rows for path, rows in thumbnails.items()}
    assert all(len(rows) == 1 for rows in local.values())
    for name in IMAGES:
        assert local[str(hostile / name)][0]["detail"] is not None, name
    assert local[str(hostile / "inject-thumb-abort.dcm")][0]["reason"] == "decoder_crash"
    assert local[str(hostile / "inject-thumb-raise.dcm")][0]["reason"] == "corrupt"


def test_summary_counts_errors_of_every_stage(clean_run: dict) -> None:
    (line,) = [x for x in clean_run["out"].splitlines() if x.startswith("errors: ")]
    assert "catalog: not_found 1, not_regular 1" in line
    assert "thumbnail: " in line and "decoder_crash" in line.split("thumbnail: ")[1]


def test_every_instance_has_one_typed_header_row(clean_run: dict) -> None:
    """Hostile files through the typed header table (sql/50_header.sql): each readable file one
    object_header row, whatever its values; the unreadable ones have their reason and none."""
    rows = query(
        clean_run["home"],
        "SELECT c.path, c.meta_error_reason AS reason, count(h.path) AS typed"
        " FROM object_catalog AS c LEFT JOIN object_header AS h"
        " ON h.path = c.path AND h.deleted_at IS NULL"
        " WHERE c.deleted_at IS NULL GROUP BY 1, 2",
    )
    assert any(row["typed"] for row in rows)
    for row in rows:
        assert row["typed"] == (0 if row["reason"] else 1), row


def test_python_processes_stay_under_one_gib(clean_run: dict) -> None:
    assert 0 < clean_run["peak_rss"] < ONE_GIB, clean_run["peak_rss"]


def assert_same_rows(spark: object, expected: list[dict], actual: list[dict]) -> None:
    assert_df_equality(
        spark.createDataFrame(expected, SCHEMA),
        spark.createDataFrame(actual, SCHEMA),
        ignore_row_order=True,
    )


def done_before(script: str, statement_start: str) -> str:
    """The progress line saying that the statement before the one holding ``statement_start``
    in ``script`` finished (the CLI prints ``<file>:<line>: ok``)."""
    statements = load_scripts([PIPELINE_DIR], {"path": "/data"}, check=False)
    for previous, statement in itertools.pairwise(statements):
        if Path(statement.source).name == script and statement_start in statement.sql:
            return f"{Path(previous.source).name}:{previous.line}: ok"
    raise AssertionError(f"no statement starting {statement_start!r} in {script}")


def test_runs_killed_at_every_stage_then_a_rerun_give_the_clean_rows_and_a_noop_rerun(
    tmp_path: Path, clean_run: dict, hostile: Path, spark: object
) -> None:
    home = tmp_path / "home"
    run = ("run", "sql", "--param", f"path={hostile}")
    for index, (script, statement_start, delay) in enumerate(KILL_POINTS):
        seen = kill_after(
            pixels_sql(*run, home=home, inject=True), done_before(script, statement_start), delay
        )
        # Every run after the first takes over the home of the one killed before it.
        assert ("taking over" in seen) == (index > 0), seen[-3000:]
    _, err = finish(pixels_sql(*run, home=home, inject=True))
    assert "taking over" in err
    expected = clean_rows(clean_run, "catalog") + clean_rows(clean_run, "thumbnail")
    assert_same_rows(spark, expected, query(home, DUMP))
    # Once more, without the injected faults: only what may pass is tried again — the dangling
    # link (its partition is replaced) — and no row changes.
    out, _ = finish(pixels_sql(*run, home=home))
    assert printed_value(out, "files_to_read") == "1"
    assert_same_rows(spark, expected, query(home, DUMP))
