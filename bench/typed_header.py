"""The typed header table's cost: filling ``object_header`` against the JSON path, same files,
same run.

    .venv/bin/python -m bench.typed_header [--files 20000] [--cores 2] [--runs 3]

On ``bench/data/meta-mr-N`` (``bench.meta.generate_mr``: real MR headers — Toshiba, Siemens
with its private CSA headers, Philips — each file its own UIDs; made once), in one Spark session
(``local[cores]``), each run is one ``pixels-sql ingest --no-thumbnails`` into a fresh database,
timed statement by statement by the runner's progress calls:

- **JSON path**: ``sql/20_meta.sql`` — every header read once by ``dicom_meta_result`` and
  written into ``object_catalog`` with its DICOM JSON as ``meta`` (what issue 27 calls the
  ``dicom_meta`` path);
- **typed path**: ``sql/50_header.sql`` — the same headers typed from the stored ``meta`` into
  ``object_header``: the headers' shapes, the plan, ``ALTER TABLE … ADD COLUMNS``, the typed
  rows (``dicom_header_typed`` + ``from_json``).

It prints both times per run and the ratio typed / JSON of the best runs (target: at most
1.5x), and writes ``bench/results/typed_header.{json,md}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
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


def run_once(spark, folder: Path, database: str) -> dict[str, float]:
    from pixels_sql.ingest.batch import ingest

    spark.sql(f"DROP DATABASE IF EXISTS `{database}` CASCADE")
    clock = StatementClock()
    report = ingest(spark, str(folder), database, thumbnails=False, progress=clock)
    ended = time.perf_counter()
    seconds = clock.script_seconds(ended)
    typed_statements = {
        location: round(spent, 2)
        for location, spent in clock.statement_seconds(ended)
        if location.startswith(TYPED_SCRIPT)
    }
    rows = spark.sql(f"SELECT count(*) FROM `{database}`.object_header").first()[0]
    columns = len(spark.table(f"`{database}`.object_header").columns)
    return {
        "json_seconds": seconds[JSON_SCRIPT],
        "typed_seconds": seconds[TYPED_SCRIPT],
        "ingest_seconds": report.seconds,
        "header_rows": rows,
        "header_columns": columns,
        "typed_statements": typed_statements,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import pixels_sql

    folder = generate_mr(args.files)
    home = Path(tempfile.mkdtemp(prefix="pixels-bench-typed-"))
    spark = pixels_sql.session(home, master=f"local[{args.cores}]")
    database = "bench_typed_header"
    runs = []
    try:
        for number in range(args.runs):
            result = run_once(spark, folder, database)
            if result["header_rows"] != args.files:
                raise RuntimeError(f"{result['header_rows']} typed rows for {args.files} files")
            runs.append(result)
            print(
                f"run {number + 1}: JSON path {result['json_seconds']:.1f} s, typed path"
                f" {result['typed_seconds']:.1f} s"
                f" ({result['typed_seconds'] / result['json_seconds']:.2f}x;"
                f" {result['header_columns']} columns), ingest {result['ingest_seconds']:.1f} s",
                flush=True,
            )
            slowest = sorted(result["typed_statements"].items(), key=lambda item: -item[1])[:4]
            print("  slowest typed statements: " + ", ".join(f"{k} {v}s" for k, v in slowest))
        spark.sql(f"DROP DATABASE IF EXISTS `{database}` CASCADE")
    finally:
        spark.stop()
        shutil.rmtree(home, ignore_errors=True)
    best_json = min(run["json_seconds"] for run in runs)
    best_typed = min(run["typed_seconds"] for run in runs)
    ratio = best_typed / best_json
    load = os.getloadavg()[0]
    summary = {
        "files": args.files,
        "cores": args.cores,
        "runs": runs,
        "best_json_seconds": best_json,
        "best_typed_seconds": best_typed,
        "ratio": ratio,
        "target": TARGET,
        "load_average_at_end": load,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "typed_header.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# Typed header table vs JSON path ({args.files} MR headers, local[{args.cores}])",
        "",
        "| run | JSON path (20_meta.sql) s | typed path (50_header.sql) s | ratio |",
        "|---|---|---|---|",
        *(
            f"| {number} | {run['json_seconds']:.1f} | {run['typed_seconds']:.1f} |"
            f" {run['typed_seconds'] / run['json_seconds']:.2f}x |"
            for number, run in enumerate(runs, 1)
        ),
        "",
        f"best: {best_json:.1f} s vs {best_typed:.1f} s: **{ratio:.2f}x** (target <= {TARGET}x);"
        f" load average at the end {load:.1f}",
    ]
    (RESULTS / "typed_header.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
