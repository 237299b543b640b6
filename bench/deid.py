"""De-identification speed: pixels-sql's SQL function in Spark against dicognito and pydicom's
deid run single-process over the same files, same run.

    .venv/bin/python -m bench.deid [--files 10000] [--cores 2] [--baseline-files 10000]

Files: the first N of ``bench/data/meta-mr-20000`` (``bench.meta.generate_mr``: real MR
templates — Toshiba, Siemens with its private CSA headers, Philips — each file its own UIDs and
patient; made once). Every tool does the same work per file: read it, de-identify its header
(the Basic Profile, or the tool's default, which is nearest to it) and serialise the new file
in memory; no pixel cleaning.

- **pixels-sql**: ``SELECT sum(length(try_dicom_deidentify(path)))`` over a table of the paths
  in one local Spark session (``local[cores]``), after a warm-up query on a few files;
- **pixels-sql, one process**: the same transform (``pixels_sql.deid.transform``) in a loop;
- **dicognito** 0.19: ``Anonymizer().anonymize(dataset)`` then ``save_as`` to memory;
- **deid** 0.4 (pydicom/deid): ``replace_identifiers(files, save=False)`` with its default
  recipe, then ``save_as`` to memory.

Baselines run over ``--baseline-files`` of the files (default: all) and are reported per file
and scaled to N. Prints seconds, files per second and the ratios (target: pixels-sql in Spark
at least 10x dicognito), and writes ``bench/results/deid.{json,md}``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from bench.meta import RESULTS, files_of, generate_mr

TARGET = 10.0
KEY = "bench key: 32 bytes, not secret!"


def _timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def pixels_sql_spark(paths: list[str], cores: int) -> float:
    import pixels_sql

    home = Path(os.environ.get("TMPDIR", "/tmp")) / "pixels-sql-bench-deid"
    spark = pixels_sql.session(home, master=f"local[{cores}]")
    try:
        frame = spark.createDataFrame([(path,) for path in paths], "path string")
        frame.repartition(cores * 4).createOrReplaceTempView("bench_paths")
        query = "SELECT sum(length(try_dicom_deidentify(path))) AS bytes FROM bench_paths"
        warm = spark.createDataFrame([(path,) for path in paths[: cores * 8]], "path string")
        warm.createOrReplaceTempView("bench_warm")
        spark.sql(query.replace("bench_paths", "bench_warm")).collect()  # workers started
        result: list = []
        seconds = _timed(lambda: result.extend(spark.sql(query).collect()))
        if not result or not result[0].bytes:
            raise RuntimeError("pixels-sql wrote nothing")
        return seconds
    finally:
        spark.stop()


def pixels_sql_one_process(paths: list[str]) -> float:
    from pixels_sql.deid.files import deidentify
    from pixels_sql.deid.profile import Profile

    profile = Profile.of([])

    def run() -> None:
        for path in paths:
            deidentify(Path(path).read_bytes(), profile, KEY.encode())

    return _timed(run)


def dicognito(paths: list[str]) -> float:
    import pydicom
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()

    def run() -> None:
        for path in paths:
            dataset = pydicom.dcmread(path)
            anonymizer.anonymize(dataset)
            dataset.save_as(io.BytesIO())

    return _timed(run)


def deid(paths: list[str]) -> float:
    import logging

    from deid.dicom import replace_identifiers

    logging.getLogger("deid").setLevel(logging.ERROR)

    def run() -> None:
        for start in range(0, len(paths), 500):
            for dataset in replace_identifiers(dicom_files=paths[start : start + 500], save=False):
                dataset.save_as(io.BytesIO())

    return _timed(run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deid", description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--baseline-files", type=int, default=0, help="0: all the files")
    args = parser.parse_args(argv)
    os.environ["PIXELS_SQL_DEID_KEY"] = KEY
    paths = files_of(generate_mr(20_000))[: args.files]
    sample = paths[: args.baseline_files or len(paths)]
    scale = len(paths) / len(sample)
    warnings.simplefilter("ignore")
    seconds = {
        "pixels-sql (Spark)": pixels_sql_spark(paths, args.cores),
        "pixels-sql (one process)": pixels_sql_one_process(sample) * scale,
        "dicognito": dicognito(sample) * scale,
        "deid": deid(sample) * scale,
    }
    spark = seconds["pixels-sql (Spark)"]
    lines = [
        f"# De-identification of {len(paths)} MR files ({args.cores} cores;"
        f" baselines over {len(sample)} files, scaled)",
        "",
        "| tool | seconds | files/s | tool / pixels-sql (Spark) |",
        "|---|---|---|---|",
    ]
    for tool, spent in seconds.items():
        lines.append(f"| {tool} | {spent:.1f} | {len(paths) / spent:.0f} | {spent / spark:.1f}x |")
    ratio = seconds["dicognito"] / spark
    verdict = "met" if ratio >= TARGET else "NOT met"
    lines += ["", f"dicognito / pixels-sql (Spark): {ratio:.1f}x (target {TARGET:.0f}x: {verdict})"]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "deid.md").write_text(text + "\n")
    (RESULTS / "deid.json").write_text(
        json.dumps({"files": len(paths), "cores": args.cores, "seconds": seconds}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
