"""The typed header table's cost: filling ``object_header`` against the JSON path, same files,
same run.

    .venv/bin/python -m bench.typed_header [--files 20000] [--cores 2] [--runs 3]

On ``bench/data/meta-mr-N`` (``bench.meta.generate_mr``: real MR headers — Toshiba, Siemens
with its private CSA headers, Philips — each file its own UIDs; made once), in one Spark session
(``local[cores]``), each run is one ``pixels-sql ingest --no-thumbnails`` into a fresh database,
timed statement by statement by the runner's progress calls:

- **JSON path**: the pipeline without the typed table — ``sql/20_meta.sql`` as it reads headers
  with no typed row (``dicom_meta_result``, the reads a plain view: nothing kept), no
  ``50_header.sql`` — its ``20_meta.sql``: every header read once and written into
  ``object_catalog`` with its DICOM JSON as ``meta`` (what issue 27 calls the ``dicom_meta``
  path);
- **typed path**: what the typed table adds to the pipeline as it is: the extra time of its
  ``20_meta.sql`` (each read also types the header, in the same walk, and the reads are kept for
  the run) plus ``50_header.sql`` (the plan from the reads' skeletons, ``ALTER TABLE … ADD
  COLUMNS``, the typed rows by ``from_json``, the upkeep of the rows to type or mark).

Each run ingests both ways, into fresh databases, in alternating order (page cache alike).
The first ``--warmup`` runs (default 1) are printed and kept apart, not in the medians: the
first ingest of a session compiles the JVM code of both paths, and whichever path goes first
pays it (run 1 gave 0.4x-1.6x). Each run also reports the driver JVM's seconds in its JIT
compilers and in garbage collection over its two ingests: on 2 cores the compilers spend 50-60 s
of CPU in a session's first run and ~20 s in each of the next few, mostly on Spark's own query
planning (the analyzer, optimizer and parser), and the typed path, with more and wider
statements, gains the most as they finish; the runs after the warm-up measure the engine a
long-lived session (``pixels-sql serve``) runs on. It prints both times per run and the ratio
typed / JSON of the medians (target: at most 1.5x), and writes
``bench/results/typed_header.{json,md}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.meta import RESULTS, generate_mr

JSON_SCRIPT = "20_meta.sql"
TYPED_SCRIPT = "50_header.sql"
TARGET = 1.5


class StatementClock:
    """Stands in for the progress display: the runner calls :meth:`statement` as each
    statement starts, so a script's time is from its first statement's start to the next
    script's."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, float]] = []
        self.expected_files = 0

    def statement(self, location: str, expected: int | None = None, unit: str = "") -> None:
        self.starts.append((location.rsplit("/", 1)[-1], time.perf_counter()))

    def statement_seconds(self, ended: float) -> list[tuple[str, float]]:
        """(``script.sql:line``, seconds) of each statement run, in order."""
        marks = [*self.starts, ("", ended)]
        return [
            (location, until - began)
            for (location, began), (_next, until) in itertools.pairwise(marks)
        ]

    def script_seconds(self, ended: float) -> dict[str, float]:
        seconds: dict[str, float] = {}
        for location, spent in self.statement_seconds(ended):
            script = location.rsplit(":", 1)[0]
            seconds[script] = seconds.get(script, 0.0) + spent
        return seconds


def json_only_scripts(into: Path) -> list[Path]:
    """The pipeline's scripts (no thumbnails) without the typed table: no 50_header.sql, and
    20_meta.sql reading headers with dicom_meta_result into a plain view (no typed row made,
    no read kept; the read dbt's instances model makes, ``dbt_sql.JSON_ONLY_READ``), as before
    the typed table read its rows from the reads."""
    from pixels_sql.dbt_sql import JSON_ONLY_READ, rewritten
    from pixels_sql.ingest.batch import pipeline_scripts

    into.mkdir(parents=True, exist_ok=True)
    scripts = []
    for script in pipeline_scripts(thumbnails=False):
        if script.name == TYPED_SCRIPT:
            continue
        text = script.read_text()
        if script.name == JSON_SCRIPT:
            kept_as_view = (
                "CACHE LAZY TABLE pixels_read AS",
                "CREATE OR REPLACE TEMPORARY VIEW pixels_read AS",
            )
            text = rewritten(text, (kept_as_view, *JSON_ONLY_READ), f"sql/{JSON_SCRIPT}")
        (into / script.name).write_text(text)
        scripts.append(into / script.name)
    return scripts


def ingest_timed(spark, folder: Path, database: str, scripts: list[Path] | None) -> dict:
    """One ingest (``scripts``: instead of the pipeline's own) into a fresh ``database``, each
    script's seconds."""
    from pixels_sql.ingest.batch import ingest_params, pipeline_scripts, run_and_report
    from pixels_sql.scripts import load_scripts

    spark.sql(f"DROP DATABASE IF EXISTS `{database}` CASCADE")
    params = ingest_params(str(folder), database)
    params.pop("thumbnail_size")
    statements = load_scripts(scripts or pipeline_scripts(thumbnails=False), params)
    clock = StatementClock()
    report = run_and_report(spark, statements, database, progress=clock)
    ended = time.perf_counter()
    return {
        "scripts": clock.script_seconds(ended),
        "statements": clock.statement_seconds(ended),
        "ingest_seconds": report.seconds,
    }


def jvm_busy_seconds(spark) -> tuple[float, float]:
    """The driver JVM's seconds so far in its JIT compilers (all their threads) and in garbage
    collection: while the compilers are this busy, the session is still warming (they share
    the cores with the tasks)."""
    management = spark._jvm.java.lang.management.ManagementFactory
    collected = sum(bean.getCollectionTime() for bean in management.getGarbageCollectorMXBeans())
    return management.getCompilationMXBean().getTotalCompilationTime() / 1000, collected / 1000


def run_once(spark, folder: Path, baseline: list[Path], number: int) -> dict[str, float]:
    order = ["json", "typed"] if number % 2 == 0 else ["typed", "json"]
    compiling, collecting = jvm_busy_seconds(spark)
    timed = {
        way: ingest_timed(spark, folder, f"bench_typed_{way}", baseline if way == "json" else None)
        for way in order
    }
    compiled, collected = jvm_busy_seconds(spark)
    json_path = timed["json"]["scripts"][JSON_SCRIPT]
    with_typed = timed["typed"]["scripts"]
    typed_seconds = with_typed[JSON_SCRIPT] - json_path + with_typed[TYPED_SCRIPT]
    database = "bench_typed_typed"
    rows = spark.sql(f"SELECT count(*) FROM `{database}`.object_header").first()[0]
    columns = len(spark.table(f"`{database}`.object_header").columns)
    typed_statements = {
        location: round(spent, 2)
        for location, spent in timed["typed"]["statements"]
        if location.startswith((TYPED_SCRIPT, JSON_SCRIPT))
    }
    return {
        "json_seconds": json_path,
        "typed_seconds": typed_seconds,
        "meta_with_typed_seconds": with_typed[JSON_SCRIPT],
        "header_script_seconds": with_typed[TYPED_SCRIPT],
        "ingest_json_only_seconds": timed["json"]["ingest_seconds"],
        "ingest_seconds": timed["typed"]["ingest_seconds"],
        "header_rows": rows,
        "header_columns": columns,
        "typed_statements": typed_statements,
        "jit_seconds": compiled - compiling,
        "gc_seconds": collected - collecting,
    }


def table_row(label: str, run: dict) -> str:
    """One run as a row of the results table."""
    return (
        f"| {label} | {run['json_seconds']:.2f} | {run['typed_seconds']:.2f}"
        f" ({run['meta_with_typed_seconds']:.2f}, {run['header_script_seconds']:.2f}) |"
        f" {run['typed_seconds'] / run['json_seconds']:.2f}x |"
        f" {run['ingest_json_only_seconds']:.1f} / {run['ingest_seconds']:.1f} |"
        f" {run['jit_seconds']:.0f} / {run['gc_seconds']:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="runs left out of the medians")
    args = parser.parse_args()

    import pixels_sql

    folder = generate_mr(args.files)
    home = Path(tempfile.mkdtemp(prefix="pixels-bench-typed-"))
    spark = pixels_sql.session(home, master=f"local[{args.cores}]")
    baseline = json_only_scripts(home / "json-only")
    runs = []
    warmups = []
    try:
        for number in range(args.warmup + args.runs):
            result = run_once(spark, folder, baseline, number)
            if result["header_rows"] != args.files:
                raise RuntimeError(f"{result['header_rows']} typed rows for {args.files} files")
            warming = number < args.warmup
            (warmups if warming else runs).append(result)
            label = f"warm-up {number + 1}" if warming else f"run {number + 1 - args.warmup}"
            print(
                f"{label}: JSON path {result['json_seconds']:.2f} s, typed path"
                f" {result['typed_seconds']:.2f} s"
                f" ({result['typed_seconds'] / result['json_seconds']:.2f}x: 20_meta.sql"
                f" {result['meta_with_typed_seconds']:.2f} s with the typed rows,"
                f" 50_header.sql {result['header_script_seconds']:.2f} s;"
                f" {result['header_columns']} columns), ingest"
                f" {result['ingest_json_only_seconds']:.1f} s without the typed table,"
                f" {result['ingest_seconds']:.1f} s with; the JVM compiled for"
                f" {result['jit_seconds']:.0f} s and collected for {result['gc_seconds']:.1f} s",
                flush=True,
            )
            slowest = sorted(result["typed_statements"].items(), key=lambda item: -item[1])[:5]
            print("  slowest statements: " + ", ".join(f"{k} {v}s" for k, v in slowest))
        for way in ("json", "typed"):
            spark.sql(f"DROP DATABASE IF EXISTS `bench_typed_{way}` CASCADE")
    finally:
        spark.stop()
        shutil.rmtree(home, ignore_errors=True)
    best_json = statistics.median(run["json_seconds"] for run in runs)
    best_typed = statistics.median(run["typed_seconds"] for run in runs)
    ratio = best_typed / best_json
    load = os.getloadavg()[0]
    summary = {
        "files": args.files,
        "cores": args.cores,
        "warmup_runs": warmups,
        "runs": runs,
        "median_json_seconds": best_json,
        "median_typed_seconds": best_typed,
        "ratio": ratio,
        "target": TARGET,
        "load_average_at_end": load,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "typed_header.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# Typed header table vs JSON path ({args.files} MR headers, local[{args.cores}])",
        "",
        "| run | JSON path s | typed path s (20_meta.sql with typed rows, 50_header.sql) | ratio"
        " | ingest without / with the typed table s | JVM JIT / GC s (both ingests) |",
        "|---|---|---|---|---|---|",
        *(table_row(f"warm-up {number}", run) for number, run in enumerate(warmups, 1)),
        *(table_row(str(number), run) for number, run in enumerate(runs, 1)),
        "",
        f"median of the runs after the warm-up: {best_json:.2f} s vs {best_typed:.2f} s:"
        f" **{ratio:.2f}x** (target <="
        f" {TARGET}x); load average at the end {load:.1f}",
    ]
    (RESULTS / "typed_header.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
