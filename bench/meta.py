"""Metadata benchmark: dicom_meta vs the pixels method, same files, same Spark session.

    .venv/bin/python -m bench.meta [--sizes 1000,10000] [--pipeline 10000] [--listing 10000]
                                   [--big-file] [--profile]

- generates (once, into bench/data/meta-N/) N files from real corpus templates with new UIDs,
  grouped into studies and series (CT, an MR with Siemens private CSA headers, an MR, a
  multi-frame MR): realistic header sizes, vendor private tags, real pixel data behind them;
- for each size, runs in ONE Spark session (local[2]) on the same listing:
  `count(dicom_meta(path))` and `count(pixels_baseline(path))`, where the baseline is the seed's
  method — ``pydicom.dcmread(defer_size=1000, stop_before_pixels=True)`` then
  ``Dataset.to_json_dict()`` — and prints files/s per core and the ratio; plus the same two
  functions in one Python process over the first 1,000 files (per-core cost without Spark);
- ``--pipeline N``: the sql/ pipeline (catalog → meta → typed table → views, no thumbnails) on
  meta-N in a fresh process: wall time and peak RSS of the driver JVM and of the Python workers;
- ``--listing N``: `read_files` listing of meta-N vs a Python `os.walk`, same run;
- ``--big-file``: peak memory of `dicom_meta` on a generated 1 GiB multi-frame file vs a 1 MiB
  one, each in a fresh process (ru_maxrss) and with tracemalloc;
- ``--profile``: pyinstrument profiles of both methods on 300 files into bench/results/.

Results: bench/results/meta.json and meta.md (and printed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pixels_sql.dicom import fastmeta
from pixels_sql.dicom.meta import read_json
from pixels_sql.io.paths import to_local_path

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data"
RESULTS = ROOT / "results"
# (pydicom-data / pydicom test file, share of the files)
TEMPLATES = [
    ("CT_small.dcm", 0.4),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", 0.3),
    ("MR_small.dcm", 0.2),
    ("emri_small.dcm", 0.1),
]
# Bumped when the generated files change: older sets in bench/data are made again.
GENERATOR_VERSION = "2"
FILES_PER_SERIES = 20
SERIES_PER_STUDY = 5


def pixels_baseline_meta(path: str) -> str:
    """The seed's (dbx.pixels) metadata method for one file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path, defer_size=1000, stop_before_pixels=True)
        return json.dumps(dataset.to_json_dict())


def ours_meta(path: str) -> str:
    return read_json(path).decode()


def ours_python_meta(path: str) -> str:
    """dicom_meta as installed without a C compiler: the pure-Python element loop."""
    fastmeta.COMPILED = False
    try:
        return read_json(path).decode()
    finally:
        fastmeta.COMPILED = True


# --- data -------------------------------------------------------------------------------------


def _generate_part(args: tuple[int, int, int, str]) -> int:
    start, stop, seed, folder = args
    rng = random.Random(seed)
    templates = []
    for name, share in TEMPLATES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            templates.append(
                (pydicom.dcmread(pydicom.data.get_testdata_file(name, download=False)), share)
            )

    def uid(*names: object) -> str:
        # Derived from the file's place in the set: the same set, byte for byte, every time.
        return generate_uid(entropy_srcs=["pixels-sql bench", *map(str, names)])

    for index in range(start, stop):
        series_index = index // FILES_PER_SERIES
        dataset = rng.choices([t for t, _ in templates], [s for _, s in templates])[0]
        dataset.StudyInstanceUID = uid("study", series_index // SERIES_PER_STUDY)
        dataset.SeriesInstanceUID = uid("series", series_index)
        dataset.SOPInstanceUID = uid("instance", index)
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.InstanceNumber = index % FILES_PER_SERIES + 1
        target = (
            Path(folder)
            / f"study{index // (FILES_PER_SERIES * SERIES_PER_STUDY):05d}"
            / f"series{index // FILES_PER_SERIES:06d}"
            / f"{index:07d}.dcm"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset.save_as(target)
    return stop - start


def generate(files: int) -> Path:
    """bench/data/meta-N with N files (reproducible layout; made once)."""
    folder = DATA / f"meta-{files}"
    done = folder / ".complete"
    if done.exists() and done.read_text().split() == [str(files), GENERATOR_VERSION]:
        return folder
    if folder.exists():
        shutil.rmtree(folder)  # made by another version of this generator
    from concurrent.futures import ProcessPoolExecutor

    chunk = 2000
    parts = [
        (start, min(start + chunk, files), start, str(folder)) for start in range(0, files, chunk)
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        written = sum(pool.map(_generate_part, parts))
    done.write_text(f"{written} {GENERATOR_VERSION}\n")
    print(f"generated {written} files in {folder} ({time.perf_counter() - started:.0f}s)")
    return folder


# The real MR headers of item 2 of issue 13: bench/scale.py's MR study templates (Toshiba,
# Siemens with its private CSA headers, Philips), as whole studies of 5 series x 20 files.
MR_TEMPLATES = ("MR_small.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm", "MR2_UNCR.dcm")


def generate_mr(files: int) -> Path:
    """bench/data/meta-mr-N: N copies of real MR headers, each file its own UIDs, each study
    its own patient (bench/scale.py writes them; made once)."""
    from bench import scale

    folder = DATA / f"meta-mr-{files}"
    done = folder / ".complete"
    version = f"{GENERATOR_VERSION}-{scale.GENERATOR_VERSION}"
    if done.exists() and done.read_text().split() == [str(files), version]:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    names = [template.name for template in scale.TEMPLATES]
    indexes = [names.index(name) for name in MR_TEMPLATES]
    per_study = FILES_PER_SERIES * SERIES_PER_STUDY
    studies = []
    for number, first in enumerate(range(0, files, per_study)):
        left = min(per_study, files - first)  # the last study may be short
        series = tuple(
            min(FILES_PER_SERIES, left - start) for start in range(0, left, FILES_PER_SERIES)
        )
        template = indexes[number % len(indexes)]
        studies.append(scale.Study(number, template, scale.FIRST_STUDY_DATE, series))
    started = time.perf_counter()
    written, _size = scale._write_studies((studies, str(folder), 0))
    if written != files:
        raise RuntimeError(f"generated {written} MR files, expected {files}")
    done.write_text(f"{written} {version}\n")
    print(f"generated {written} MR files in {folder} ({time.perf_counter() - started:.0f}s)")
    return folder


def files_of(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*.dcm"))


# --- measurements -----------------------------------------------------------------------------


def python_rate(function: Callable[[str], str], paths: list[str]) -> float:
    """Files per second in this process (one core), median of 3 passes after a warm-up."""
    for path in paths[:20]:
        function(path)
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        for path in paths:
            function(path)
        rates.append(len(paths) / (time.perf_counter() - started))
    return statistics.median(rates)


def spark_rates(spark, folder: Path, files: int, cores: int) -> dict[str, float]:
    """Both functions over the same listing, cached once so that neither pays for it; the
    listing and a no-op pandas UDF (the per-query constant of any Python UDF) are timed too."""
    listing_query = (
        f"SELECT path FROM read_files('{folder}', recursiveFileLookup => true,"
        " pathGlobFilter => '*.dcm')"
    )
    started = time.perf_counter()
    # A DataFrame cached and then named, not `CACHE TABLE name AS query`: a view defined by SQL
    # is analysed again by every query that names it, and analysing read_files lists the folder
    # again (~0.5 s for 10k files) before the cached rows are found.
    listing = spark.sql(listing_query).cache()
    listing.count()
    listing.createOrReplaceTempView("bench_listing")
    rates: dict[str, float] = {"listing_seconds": time.perf_counter() - started}
    try:
        # Warm-up, untimed: two passes of the fast queries over the whole set. The first runs
        # of a query over thousands of rows are slower while the JVM compiles the Arrow and row
        # code they run (10k files, 2026-11-27: ours 0.62-0.88 s in its first four runs,
        # 0.47-0.49 s in the next four); the page cache gets the headers too.
        for function in ("bench_noop", "dicom_meta"):
            for _ in range(2):
                spark.sql(f"SELECT count({function}(path)) FROM bench_listing").first()
        # Then the best of a few runs each, as timeit does. The baseline (16 s a run) is bound
        # by Python, not by the JVM's warm-up: two runs.
        for name, function, runs in (
            ("noop", "bench_noop", 5),
            ("ours", "dicom_meta", 5),
            ("ours_python", "bench_dicom_meta_python", 3),
            ("baseline", "pixels_baseline", 2),
        ):
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                query = f"SELECT count({function}(path)) FROM bench_listing"
                counted = spark.sql(query).first()[0]
                times.append(time.perf_counter() - started)
                if counted != files:
                    raise RuntimeError(f"{function} counted {counted} of {files}")
            elapsed = min(times)
            rates[name] = files / elapsed / cores
            rates[f"{name}_seconds"] = elapsed
            rates[f"{name}_all_seconds"] = times
        # The same query reading the files itself, as the pipeline does (listing included).
        started = time.perf_counter()
        spark.sql(f"SELECT count(dicom_meta(path)) FROM ({listing_query})").collect()
        rates["ours_with_listing_seconds"] = time.perf_counter() - started
    finally:
        spark.catalog.dropTempView("bench_listing")
        listing.unpersist()
    return rates


def start_spark(cores: int):
    from pyspark.sql.functions import pandas_udf

    import pixels_sql

    home = Path(tempfile.mkdtemp(prefix="pixels-bench-"))
    spark = pixels_sql.session(home, master=f"local[{cores}]")

    @pandas_udf("string")
    def pixels_baseline(paths: pd.Series) -> pd.Series:
        return pd.Series([pixels_baseline_meta(to_local_path(p)) for p in paths], dtype=object)

    spark.udf.register("pixels_baseline", pixels_baseline)

    @pandas_udf("string")
    def bench_dicom_meta_python(paths: pd.Series) -> pd.Series:
        return pd.Series([ours_python_meta(p) for p in paths], dtype=object)

    spark.udf.register("bench_dicom_meta_python", bench_dicom_meta_python)

    @pandas_udf("string")
    def bench_noop(paths: pd.Series) -> pd.Series:
        return paths

    spark.udf.register("bench_noop", bench_noop)
    # Warm up the Python workers (imports) outside the timings.
    warm = DATA / "meta-warmup"
    if not warm.exists():
        _generate_part((0, 50, 0, str(warm)))
    for function in ("dicom_meta", "bench_dicom_meta_python", "pixels_baseline", "bench_noop"):
        spark.sql(
            f"SELECT count({function}(path)) FROM read_files('{warm}', recursiveFileLookup => true)"
        ).collect()
    return spark


class TreeMemory:
    """Peak RSS of a process tree, sampled from /proc: the JVM and the Python workers apart."""

    def __init__(self, root_pid: int, interval: float = 0.25) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.peak_jvm = 0
        self.peak_python_worker = 0
        self.peak_python_workers_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _children(self) -> dict[int, list[int]]:
        tree: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            tree.setdefault(parent, []).append(int(entry))
        return tree

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            tree = self._children()
            pending, seen = [self.root_pid], []
            while pending:
                pid = pending.pop()
                seen.append(pid)
                pending.extend(tree.get(pid, []))
            workers = []
            for pid in seen:
                try:
                    with open(f"/proc/{pid}/status") as handle:
                        status = handle.read()
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        command = handle.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                rss = next(
                    (
                        int(line.split()[1]) * 1024
                        for line in status.splitlines()
                        if line.startswith("VmRSS:")
                    ),
                    0,
                )
                if "java" in command.split(" ")[0]:
                    self.peak_jvm = max(self.peak_jvm, rss)
                elif (
                    "pyspark.daemon" in command
                    or "pyspark/daemon" in command
                    or ("python" in command and pid != self.root_pid)
                ):
                    workers.append(rss)
            if workers:
                self.peak_python_worker = max(self.peak_python_worker, max(workers))
                self.peak_python_workers_total = max(self.peak_python_workers_total, sum(workers))


def run_sampled(command: list[str]) -> tuple[str, str, float, TreeMemory]:
    """Run ``command`` to its end, sampling the memory of its process tree: its stdout, its
    stderr, its seconds and the samples. Fails with the end of its stderr unless it exits 0."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeMemory(process.pid) as memory:
        out, err = process.communicate()
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]} exited with {process.returncode}: {err[-2000:]}")
    return out, err, elapsed, memory


def pipeline(folder: Path, cores: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="pixels-pipeline-"))
    scripts = [
        ROOT.parent / "sql" / name
        for name in ("00_database.sql", "10_catalog.sql", "20_meta.sql", "90_views.sql")
    ]
    command = [
        sys.executable,
        "-m",
        "pixels_sql.cli",
        "run",
        *map(str, scripts),
        "--param",
        f"path={folder}",
        "--home",
        str(home),
        "--master",
        f"local[{cores}]",
    ]
    out, _err, elapsed, memory = run_sampled(command)
    summary = {
        line.split(": ")[0]: line.split(": ", 1)[1] for line in out.splitlines() if ": " in line
    }
    return {
        "seconds": elapsed,
        "files": int(summary.get("files", "0")),
        "instances": int(summary.get("instances", "0")),
        "peak_rss_jvm_mib": memory.peak_jvm / 2**20,
        "peak_rss_python_worker_mib": memory.peak_python_worker / 2**20,
        "peak_rss_python_workers_total_mib": memory.peak_python_workers_total / 2**20,
    }


def listing(spark, folder: Path) -> dict[str, float]:
    started = time.perf_counter()
    spark_count = spark.sql(
        f"SELECT count(*) FROM read_files('{folder}', recursiveFileLookup => true)"
    ).first()[0]
    spark_seconds = time.perf_counter() - started
    started = time.perf_counter()
    walk_count = sum(
        1
        for root, _dirs, names in os.walk(folder)
        for name in names
        if not name.startswith((".", "_"))
    )
    walk_seconds = time.perf_counter() - started
    return {
        "files": spark_count,
        "read_files_seconds": spark_seconds,
        "os_walk_files": walk_count,
        "os_walk_seconds": walk_seconds,
    }


def big_file_memory() -> dict[str, float]:
    """1 GiB vs 1 MiB native multi-frame files: peak memory of reading their metadata."""
    results = {}
    for label, frames in (("1MiB", 2), ("1GiB", 2048)):
        path = DATA / f"multiframe-{label}.dcm"
        if not path.exists():
            _write_multiframe(path, frames)
        code = (
            "import resource, sys, tracemalloc\n"
            "from pixels_sql.dicom.meta import read_json\n"
            "read_json(sys.argv[1]).decode()\n"  # warm: imports and caches
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "tracemalloc.start(); text = read_json(sys.argv[1]).decode()\n"
            "peak = tracemalloc.get_traced_memory()[1]\n"
            "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(before, after, peak, len(text))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
        ).stdout.split()
        results[label] = {
            "file_bytes": path.stat().st_size,
            "max_rss_mib": int(out[1]) / 1024,
            "tracemalloc_peak_kib": int(out[2]) / 1024,
            "json_chars": int(out[3]),
        }
    return results


def _write_multiframe(path: Path, frames: int) -> None:
    template = pydicom.dcmread(pydicom.data.get_testdata_file("emri_small.dcm", download=False))
    rows = columns = 512
    dataset = template
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = rows, columns, frames
    dataset.SOPInstanceUID = generate_uid()
    frame = np.zeros((rows, columns), dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write the header with a tiny placeholder, then stream the frames: never 1 GiB in memory.
    dataset.PixelData = b"\0\0"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.save_as(path)
    data = path.read_bytes()
    marker = b"\xe0\x7f\x10\x00OW\x00\x00" + (2).to_bytes(4, "little")
    at = data.rindex(marker)
    with open(path, "wb") as handle:
        handle.write(data[:at])
        handle.write(b"\xe0\x7f\x10\x00OW\x00\x00" + (len(frame) * frames).to_bytes(4, "little"))
        for _ in range(frames):
            handle.write(frame)


def profile(paths: list[str]) -> dict[str, str]:
    from pyinstrument import Profiler

    outputs = {}
    for label, function in (
        ("ours", ours_meta),
        ("ours-python", ours_python_meta),
        ("baseline", pixels_baseline_meta),
    ):
        profiler = Profiler(interval=0.0005)
        profiler.start()
        for path in paths:
            function(path)
        profiler.stop()
        target = RESULTS / f"profile-meta-{label}.txt"
        target.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        outputs[label] = str(target.relative_to(ROOT.parent))
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated file counts")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--pipeline",
        type=int,
        action="append",
        default=[],
        help="run the sql/ pipeline on meta-N (repeatable)",
    )
    parser.add_argument(
        "--listing",
        type=int,
        action="append",
        default=[],
        help="read_files vs os.walk on meta-N (repeatable)",
    )
    parser.add_argument(
        "--mr",
        type=int,
        action="append",
        default=[],
        help="also in Spark: N copies of real MR headers (repeatable)",
    )
    parser.add_argument("--big-file", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    report: dict[str, object] = {"cores": args.cores, "templates": TEMPLATES}

    folders = {n: generate(n) for n in sorted({*sizes, *args.pipeline, *args.listing})}
    sample = files_of(folders[min(folders)])[:1000] if folders else []
    if sample:
        ours, base = python_rate(ours_meta, sample), python_rate(pixels_baseline_meta, sample)
        ours_python = python_rate(ours_python_meta, sample)
        report["one_process"] = {
            "files": len(sample),
            "ours": ours,
            "ours_python": ours_python,
            "baseline": base,
            "ratio": ours / base,
            "ratio_python": ours_python / base,
        }
    if sizes or args.listing or args.mr:
        spark = start_spark(args.cores)
        report["spark"] = {}
        spark_sets = [(n, folders[n], n) for n in sizes]
        spark_sets += [(f"{n} MR", generate_mr(n), n) for n in args.mr]
        for key, folder, n in spark_sets:
            rates = spark_rates(spark, folder, n, args.cores)
            rates["ratio"] = rates["ours"] / rates["baseline"]
            report["spark"][key] = rates
        report["listing"] = {n: listing(spark, folders[n]) for n in args.listing}
        spark.stop()
    report["pipeline"] = {n: pipeline(folders[n], args.cores) for n in args.pipeline}
    if args.big_file:
        report["big_file"] = big_file_memory()
    if args.profile and sample:
        report["profiles"] = profile(sample[:300])

    (RESULTS / "meta.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    markdown = render(report)
    (RESULTS / "meta.md").write_text(markdown + "\n")
    print(markdown)


def render(report: dict) -> str:
    lines = ["| measurement | ours | baseline (pixels method) | ratio |", "|---|---|---|---|"]
    if "one_process" in report:
        one = report["one_process"]
        lines.append(
            f"| files/s, 1 process, {one['files']} files | {one['ours']:.0f} |"
            f" {one['baseline']:.0f} | {one['ratio']:.2f}x |"
        )
        lines.append(
            f"| same, pure-Python element loop (installed without a C compiler) |"
            f" {one['ours_python']:.0f} | {one['baseline']:.0f} | {one['ratio_python']:.2f}x |"
        )
    for n, rates in report.get("spark", {}).items():
        lines.append(
            f"| files/s per core, Spark local[{report['cores']}], {n} files |"
            f" {rates['ours']:.0f} | {rates['baseline']:.0f} | {rates['ratio']:.2f}x |"
        )
        lines.append(
            f"| same, {n} files, seconds (listing {rates['listing_seconds']:.2f} s, cached"
            f" first; a no-op pandas UDF {rates['noop_seconds']:.2f} s; ours reading the files"
            f" itself {rates['ours_with_listing_seconds']:.2f} s) | {rates['ours_seconds']:.2f} |"
            f" {rates['baseline_seconds']:.2f} | |"
        )
        lines.append(
            f"| same, pure-Python element loop, files/s per core | {rates['ours_python']:.0f} |"
            f" {rates['baseline']:.0f} | {rates['ours_python'] / rates['baseline']:.2f}x |"
        )
    for n, result in report.get("listing", {}).items():
        lines.append(
            f"| listing {n} files: read_files vs os.walk (s) |"
            f" {result['read_files_seconds']:.2f} | {result['os_walk_seconds']:.2f} |"
            f" {result['os_walk_seconds'] / result['read_files_seconds']:.2f}x |"
        )
    for n, result in report.get("pipeline", {}).items():
        lines.append(
            f"| sql/ pipeline, {n} files: {result['seconds']:.0f} s, driver JVM peak"
            f" {result['peak_rss_jvm_mib']:.0f} MiB, largest Python worker"
            f" {result['peak_rss_python_worker_mib']:.0f} MiB (all workers"
            f" {result['peak_rss_python_workers_total_mib']:.0f} MiB) | | | |"
        )
    if "big_file" in report:
        small, big = report["big_file"]["1MiB"], report["big_file"]["1GiB"]
        lines.append(
            f"| dicom_meta peak memory, 1 GiB vs 1 MiB file: max RSS {big['max_rss_mib']:.0f}"
            f" vs {small['max_rss_mib']:.0f} MiB, tracemalloc {big['tracemalloc_peak_kib']:.0f}"
            f" vs {small['tracemalloc_peak_kib']:.0f} KiB | | |"
            f" {big['max_rss_mib'] / small['max_rss_mib']:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
