"""De-identification speed: pixels-sql's SQL function in Spark against dicognito and pydicom's
deid run single-process over the same files, same run.

    .venv/bin/python -m bench.deid [--files 10000] [--cores 2] [--baseline-files 10000]

Files: the first N of ``bench/data/meta-mr-20000`` (``bench.meta.generate_mr``: real MR
templates — Toshiba, Siemens with its private CSA headers, Philips — each file its own UIDs and
patient; made once). Every tool does the same work per file: read it, de-identify its header
(the Basic Profile, or the tool's default, which is nearest to it) and serialise the new file
in memory; no pixel cleaning. Then the OCR step's cost per image (``--ocr-images``, copies of
a 640x480 colour ultrasound with burned-in text): one process with and without the option
``ocr``, and in Spark with it.

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


def pixels_sql_spark(paths: list[str], cores: int, ocr: bool = False) -> float:
    import pixels_sql

    home = Path(os.environ.get("TMPDIR", "/tmp")) / "pixels-sql-bench-deid"
    spark = pixels_sql.session(home, master=f"local[{cores}]")
    try:
        frame = spark.createDataFrame([(path,) for path in paths], "path string")
        frame.repartition(cores * 4).createOrReplaceTempView("bench_paths")
        arguments = "path, 'basic', array('ocr')" if ocr else "path"
        query = f"SELECT sum(length(try_dicom_deidentify({arguments}))) AS bytes FROM bench_paths"
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


def ocr_images(count: int) -> list[str]:
    """``count`` copies of pydicom's US1_UNCR.dcm (a 640x480 colour ultrasound whose header
    band, labels and measurements are burned in), made once under bench/data."""
    from pydicom.data import get_testdata_file

    folder = RESULTS.parent / "data" / f"ocr-us-{count}"
    if not folder.exists():
        staging = folder.with_name(folder.name + ".partial")
        staging.mkdir(parents=True, exist_ok=True)
        data = Path(get_testdata_file("US1_UNCR.dcm")).read_bytes()
        for number in range(count):
            (staging / f"{number:05d}.dcm").write_bytes(data)
        staging.rename(folder)
    return sorted(str(path) for path in folder.glob("*.dcm"))


def ocr_seconds_per_image(paths: list[str]) -> dict[str, float]:
    """One process: seconds per image to de-identify with the option 'ocr' and without, and
    the difference: the OCR step's cost (decoding, Tesseract, cleaning, writing)."""
    from pixels_sql.deid.files import deidentify
    from pixels_sql.deid.pixels import PixelPolicy
    from pixels_sql.deid.profile import Profile

    profile = Profile.of([])
    contents = [Path(path).read_bytes() for path in paths]
    cleaned = []

    def run(policy: PixelPolicy) -> None:
        for data in contents:
            cleaned.append(
                len(deidentify(data, profile, KEY.encode(), policy=policy).cleaned_regions)
            )

    header = _timed(lambda: run(PixelPolicy())) / len(paths)
    with_ocr = _timed(lambda: run(PixelPolicy(ocr=True))) / len(paths)
    if not any(cleaned):
        raise RuntimeError("OCR found no text")
    return {"header only": header, "with ocr": with_ocr, "ocr step": with_ocr - header}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deid", description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--baseline-files", type=int, default=0, help="0: all the files")
    parser.add_argument("--ocr-images", type=int, default=100, help="0: no OCR measurement")
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
    ocr: dict[str, float] = {}
    if args.ocr_images:
        images = ocr_images(args.ocr_images)
        ocr = ocr_seconds_per_image(images)
        ocr["spark, with ocr"] = pixels_sql_spark(images, args.cores, ocr=True) / len(images)
        lines += [
            "",
            f"OCR (option 'ocr') on {len(images)} 640x480 colour ultrasounds with burned-in text,"
            " milliseconds per image:",
            "",
            "| | ms/image |",
            "|---|---|",
            *(f"| {name} | {spent * 1000:.1f} |" for name, spent in ocr.items()),
        ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "deid.md").write_text(text + "\n")
    (RESULTS / "deid.json").write_text(
        json.dumps(
            {"files": len(paths), "cores": args.cores, "seconds": seconds, "ocr": ocr}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
