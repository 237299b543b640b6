"""Ingest benchmark (issue 10): zip members read in place, and the incremental no-op re-run.

    .venv/bin/python -m bench.ingest [--zips 100] [--members 5] [--size 512] [--files 100000]
                                     [--runs 3] [--no-churn]

Generates its data once into bench/data/ (not committed), then measures in ONE Spark session
(``pixels_sql.session(home, master='local[2]')`` on a fresh temporary home):

1. Zips (``--zips 0`` skips): ``--zips`` deflated archives of ``--members`` files each (one
   archive = one series), every file a single-frame ``--size`` x ``--size`` 16-bit explicit VR
   image made by ``pixels_sql.dicom.synthetic.monochrome_image`` from pydicom's ``CT_small``
   (new UIDs; ~520 KB at 512). The same files also lie unzipped beside the archives. Three ways
   to the same headers, each forced whole by ``count(dicom_meta_result(...).meta)`` and checked
   to count every file:

   - in place: ``list_files`` of the archives, ``LATERAL inline(zip_members(f.path))``,
     ``dicom_meta_result(m.path)``: each member inflated in memory, nothing written;
   - extract then read: ``zip_extract`` of every member into a fresh folder, then
     ``dicom_meta_result`` over ``list_files`` of that folder; each step timed, total = both.
     Members are written to <archive name>/<member>, as ``ingest --extract-zip`` lays them out
     (member names repeat across archives, as in real exports);
   - plain: ``dicom_meta_result`` over ``list_files`` of the unzipped copies: the floor (no
     inflating; only the header bytes are read).

   One untimed round first (Python workers, page cache), then ``--runs`` rounds with the three
   interleaved in each, so that the machine's other load falls on all of them alike. The best
   run of each counts (as in bench/meta.py; for extract+read the best per-round total); every
   run is kept. Ratios: extract+read / in place, in place / plain.

2. Incremental (``--files 0`` skips): a tree of ``--files`` small files (16x16 16-bit images
   made from pydicom's ``MR_small``, ~2 KB; 20 per series folder, 5 series per study folder),
   written from one template's bytes with its three UIDs replaced by same-length ones, so that
   100,000 files take seconds to write rather than pydicom minutes.
   ``pixels_sql.ingest.ingest(spark, tree, 'bench_ingest', thumbnails=False)`` runs on a fresh
   database: the first run (every file read), the same again over the unchanged tree (the no-op
   run: must say 0 new, 0 changed, 0 deleted), their ratio; then, unless ``--no-churn``, a run
   after 1% of the files got a new modification time (changed) and 1% were moved out of the tree
   (deleted; they are moved back afterwards, and at the next start if the run was killed).
   Each statement's seconds are taken at statement boundaries (a progress hook of ``ingest``);
   the ingest log on stderr prints the statements as they finish.

Results: bench/results/ingest.json and ingest.md (and printed).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

from bench.meta import DATA, RESULTS, ROOT
from pixels_sql.dicom.synthetic import monochrome_image

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Bumped when the generated files change: older sets in bench/data are made again.
GENERATOR_VERSION = "1"
ZIP_TEMPLATE = "CT_small.dcm"  # pydicom: a real 128x128 16-bit CT, tiled to --size
TREE_TEMPLATE = "MR_small.dcm"  # pydicom: a real 64x64 16-bit MR, cropped to TREE_SIZE
TREE_SIZE = 16
FILES_PER_SERIES = 20
SERIES_PER_STUDY = 5
DATABASE = "bench_ingest"
# Placeholder UIDs of the tree template: <pydicom root><kind>.<12 digits>, so every file's UIDs
# have the same length as the template's and its bytes can be patched without re-encoding.
UID_KINDS = {"study": 1, "series": 2, "instance": 3}
UID_NUMBER_BASE = 10**11  # keeps the last component 12 digits long and without a leading 0
CHURN_EVERY = 100  # 1%: files i % 100 == 0 are touched, i % 100 == 50 moved out


# --- zips -------------------------------------------------------------------------------------


def _set_uid(*names: object) -> str:
    # Derived from the file's place in the set: the same set every time it is made.
    return generate_uid(entropy_srcs=["pixels-sql bench ingest", *map(str, names)])


def _zip_part(args: tuple[int, int, int, int, str]) -> int:
    start, stop, members, size, folder = args
    template = pydicom.data.get_testdata_file(ZIP_TEMPLATE, download=False)
    written = 0
    for archive in range(start, stop):
        for member in range(members):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                monochrome_image(
                    template,
                    Path(folder) / f"a{archive:04d}" / f"IM{member + 1:04d}.dcm",
                    rows=size,
                    columns=size,
                    study=_set_uid("zip study", archive),
                    series=_set_uid("zip series", archive),
                )
            written += 1
    return written


def generate_zips(zips: int, members: int, size: int) -> Path:
    """bench/data/ingest-zips-ZxM-S/ with plain/aNNNN/IMnnnn.dcm and zips/aNNNN.zip (made once).
    The marker sits outside both folders: list_files would list it as a file."""
    folder = DATA / f"ingest-zips-{zips}x{members}-{size}"
    done = folder / ".complete"
    if done.exists() and done.read_text().split() == [str(zips * members), GENERATOR_VERSION]:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    started = time.perf_counter()
    plain, archives = folder / "plain", folder / "zips"
    chunk = max(1, zips // (2 * (os.cpu_count() or 2)))
    parts = [
        (start, min(start + chunk, zips), members, size, str(plain))
        for start in range(0, zips, chunk)
    ]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        written = sum(pool.map(_zip_part, parts))
    archives.mkdir(parents=True)
    for series in sorted(plain.iterdir()):
        with zipfile.ZipFile(archives / f"{series.name}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(series.iterdir()):
                zf.write(path, path.name)
    done.write_text(f"{written} {GENERATOR_VERSION}\n")
    print(f"generated {written} files in {zips} zips in {folder}", file=sys.stderr)
    print(f"  ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    return folder


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def zip_queries(zips: Path, plain: Path) -> dict[str, str]:
    members = (
        f"FROM list_files('{zips}') AS f, LATERAL inline(zip_members(f.path)) AS m"
        " WHERE m.reason IS NULL"
    )
    return {
        "in_place": f"SELECT count(dicom_meta_result(m.path).meta) {members}",
        # {destination} is filled in per run: a fresh folder each time, so every member is
        # written (zip_extract keeps a file already there with the same time and size).
        "extract": (
            "SELECT count(zip_extract(m.path, '{destination}',"
            " concat(regexp_extract(f.path, '[^/]+$', 0), '/', m.member),"
            f" unix_seconds(f.modificationTime)).path) {members}"
        ),
        "read_extracted": "SELECT count(dicom_meta_result(path).meta) FROM list_files('{folder}')",
        "plain": f"SELECT count(dicom_meta_result(path).meta) FROM list_files('{plain}')",
    }


def _timed_count(spark: SparkSession, query: str) -> tuple[float, int]:
    started = time.perf_counter()
    counted = spark.sql(query).first()[0]
    return time.perf_counter() - started, int(counted)


def measure_zips(spark: SparkSession, folder: Path, expected: int, runs: int) -> dict[str, Any]:
    queries = zip_queries(folder / "zips", folder / "plain")
    scratch = DATA / "ingest-extracted"
    times: dict[str, list[float]] = {
        key: [] for key in ("in_place", "extract", "read_extracted", "plain")
    }
    problems: list[str] = []
    load_start = os.getloadavg()
    # Round 0 is the untimed warm-up: Python workers start, the files enter the page cache.
    for round_number in range(runs + 1):
        destination = scratch / f"run-{round_number}"
        shutil.rmtree(scratch, ignore_errors=True)
        destination.mkdir(parents=True)
        results = {
            "in_place": _timed_count(spark, queries["in_place"]),
            "extract": _timed_count(
                spark, queries["extract"].replace("{destination}", str(destination))
            ),
        }
        results["read_extracted"] = _timed_count(
            spark, queries["read_extracted"].replace("{folder}", str(destination))
        )
        results["plain"] = _timed_count(spark, queries["plain"])
        for key, (seconds, counted) in results.items():
            if counted != expected:
                problems.append(
                    f"zips: {key} counted {counted} of {expected} (round {round_number})"
                )
            if round_number > 0:
                times[key].append(seconds)
        print(
            f"zips round {round_number}{' (warm-up)' if round_number == 0 else ''}: "
            + ", ".join(f"{key} {seconds:.2f}s" for key, (seconds, _) in results.items()),
            file=sys.stderr,
            flush=True,
        )
    shutil.rmtree(scratch, ignore_errors=True)
    totals = [a + b for a, b in zip(times["extract"], times["read_extracted"], strict=True)]
    best = {key: min(values) for key, values in times.items()}
    best["extract_and_read"] = min(totals)
    return {
        "files": expected,
        "archives": len(list((folder / "zips").glob("*.zip"))),
        "zip_bytes": folder_bytes(folder / "zips"),
        "plain_bytes": folder_bytes(folder / "plain"),
        "queries": queries,
        "runs": runs,
        "all_seconds": {**times, "extract_and_read": totals},
        "best_seconds": best,
        "ratio_extract_and_read_to_in_place": best["extract_and_read"] / best["in_place"],
        "ratio_in_place_to_plain": best["in_place"] / best["plain"],
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "problems": problems,
    }


# --- tree -------------------------------------------------------------------------------------


def _uid(kind: str, number: int) -> bytes:
    return f"{PYDICOM_ROOT_UID}{UID_KINDS[kind]}.{UID_NUMBER_BASE + number}".encode()


def tree_template(scratch: Path) -> bytes:
    """One small file's bytes with placeholder UIDs (number 0 of each kind), checked to hold
    each placeholder where expected: the study and series UIDs once, the instance UID twice (the
    file meta's MediaStorageSOPInstanceUID too)."""
    source = pydicom.data.get_testdata_file(TREE_TEMPLATE, download=False)
    path = scratch / "template.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monochrome_image(
            source,
            path,
            rows=TREE_SIZE,
            columns=TREE_SIZE,
            study=_uid("study", 0).decode(),
            series=_uid("series", 0).decode(),
        )
        dataset = pydicom.dcmread(path)
    path.unlink()
    dataset.SOPInstanceUID = _uid("instance", 0).decode()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    for kind, times in (("study", 1), ("series", 1), ("instance", 2)):
        if data.count(_uid(kind, 0)) != times:
            raise RuntimeError(f"tree template: {kind} UID found {data.count(_uid(kind, 0))}x")
    return data


def tree_path(index: int) -> Path:
    series = index // FILES_PER_SERIES
    return (
        Path(f"study{series // SERIES_PER_STUDY:05d}") / f"series{series:06d}" / f"{index:07d}.dcm"
    )


def _tree_part(args: tuple[int, int, str, bytes]) -> int:
    start, stop, folder, template = args
    root = Path(folder)
    for index in range(start, stop):
        series = index // FILES_PER_SERIES
        data = (
            template.replace(_uid("study", 0), _uid("study", series // SERIES_PER_STUDY))
            .replace(_uid("series", 0), _uid("series", series))
            .replace(_uid("instance", 0), _uid("instance", index))
        )
        target = root / tree_path(index)
        if index == start or index % FILES_PER_SERIES == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return stop - start


def generate_tree(files: int) -> Path:
    """bench/data/ingest-tree-N/ with tree/ (the N files) beside held/ (where the churn run
    parks the files it deletes) and the .complete marker (made once)."""
    folder = DATA / f"ingest-tree-{files}"
    tree, held = folder / "tree", folder / "held"
    restore(held, tree)  # a killed churn run left files out of the tree
    done = folder / ".complete"
    if done.exists() and done.read_text().split() == [str(files), GENERATOR_VERSION]:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    tree.mkdir(parents=True)
    started = time.perf_counter()
    template = tree_template(folder)
    chunk = 10000
    parts = [
        (start, min(start + chunk, files), str(tree), template) for start in range(0, files, chunk)
    ]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        written = sum(pool.map(_tree_part, parts))
    done.write_text(f"{written} {GENERATOR_VERSION}\n")
    print(
        f"generated {written} files of {len(template)} bytes in {tree}"
        f" ({time.perf_counter() - started:.0f}s)",
        file=sys.stderr,
    )
    return folder


def restore(held: Path, tree: Path) -> int:
    """Move the files parked in ``held`` back to the same place in ``tree``."""
    if not held.exists():
        return 0
    moved = 0
    for path in sorted(p for p in held.rglob("*") if p.is_file()):
        target = tree / path.relative_to(held)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
        moved += 1
    shutil.rmtree(held)
    return moved


class StatementClock:
    """Stands in for ``pixels_sql.progress.Progress``: ``ingest`` calls :meth:`statement` as
    each statement starts, so the boundaries give every statement's seconds, also those the
    ingest log prints only counts for."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, float]] = []
        self.expected_files: int | None = None

    def statement(self, label: str, expected: int | None = None, unit: str = "") -> None:
        self.starts.append((label, time.monotonic()))


def statement_heads(tree: Path) -> dict[str, str]:
    """``{location: first words}`` of the pipeline's statements, to name them in the report."""
    from pixels_sql.ingest.batch import ingest_params, pipeline_scripts
    from pixels_sql.scripts import load_scripts

    params = ingest_params(str(tree), DATABASE)
    params.pop("thumbnail_size")  # as ingest(thumbnails=False) does: no script takes it then
    heads = {}
    for statement in load_scripts(pipeline_scripts(thumbnails=False), params):
        code = [line for line in statement.sql.splitlines() if not line.lstrip().startswith("--")]
        words = " ".join(" ".join(code).split()[:5])
        heads[short_location(statement.location)] = words[:70]
    return heads


def short_location(location: str) -> str:
    """``/…/sql/10_catalog.sql:82`` as ``10_catalog.sql:82``."""
    return Path(location).name


def timed_ingest(spark: SparkSession, tree: Path) -> dict[str, Any]:
    from pixels_sql.ingest import ingest

    clock = StatementClock()
    load = os.getloadavg()
    started = time.monotonic()
    # The clock has the two members of Progress that ingest uses.
    report = ingest(spark, str(tree), DATABASE, thumbnails=False, progress=clock, log=sys.stderr)
    ended = time.monotonic()
    print(report.line(), file=sys.stderr, flush=True)
    finished = started + report.seconds  # the end of run_statements, before the summary
    statements = []
    if clock.starts:
        statements.append(
            ("(before the first statement: table upkeep)", clock.starts[0][1] - started)
        )
        for (label, begun), (_, following) in zip(clock.starts, clock.starts[1:], strict=False):
            statements.append((short_location(label), following - begun))
        label, begun = clock.starts[-1]
        statements.append(
            (f"{short_location(label)} (+ table upkeep, failed count)", finished - begun)
        )
    statements.append(("(catalog summary, after the run)", ended - finished))
    return {
        "seconds": report.seconds,
        "wall_seconds": ended - started,
        "new": report.new,
        "changed": report.changed,
        "deleted": report.deleted,
        "retried": report.retried,
        "failed": report.failed,
        "counts": report.counts,
        "line": report.line(),
        "statements": statements,
        "load_average_start": load,
        "load_average_end": os.getloadavg(),
    }


def churn(folder: Path, files: int) -> tuple[int, int]:
    """Touch 1% of the tree's files (a new modification time) and move another 1% out."""
    tree, held = folder / "tree", folder / "held"
    touched = moved = 0
    for index in range(0, files, CHURN_EVERY):
        path = tree / tree_path(index)
        status = path.stat()
        # 10 s later than it was: another time for the catalog, whatever its precision.
        os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 10 * 10**9))
        touched += 1
    for index in range(CHURN_EVERY // 2, files, CHURN_EVERY):
        target = held / tree_path(index)
        target.parent.mkdir(parents=True, exist_ok=True)
        (tree / tree_path(index)).rename(target)
        moved += 1
    return touched, moved


def measure_incremental(
    spark: SparkSession, folder: Path, files: int, with_churn: bool
) -> dict[str, Any]:
    tree = folder / "tree"
    heads = statement_heads(tree)
    spark.sql(f"DROP DATABASE IF EXISTS {DATABASE} CASCADE")
    problems: list[str] = []
    runs: dict[str, Any] = {}
    runs["first"] = timed_ingest(spark, tree)
    if runs["first"]["new"] != files or runs["first"]["failed"]:
        problems.append(f"first run: {runs['first']['line']} (expected {files} new, 0 failed)")
    runs["noop"] = timed_ingest(spark, tree)
    if any(runs["noop"][key] for key in ("new", "changed", "deleted", "retried", "failed")):
        problems.append(f"no-op run did something: {runs['noop']['line']}")
    result: dict[str, Any] = {"files": files, "runs": runs}
    if with_churn:
        touched, moved = churn(folder, files)
        try:
            runs["churn"] = timed_ingest(spark, tree)
        finally:
            restore(folder / "held", tree)
        result.update(touched=touched, moved=moved)
        got = runs["churn"]
        if (got["new"], got["changed"], got["deleted"]) != (0, touched, moved):
            problems.append(
                f"churn run: {got['line']} (expected 0 new, {touched} changed, {moved} deleted)"
            )
    result["ratio_noop_to_first"] = runs["noop"]["seconds"] / runs["first"]["seconds"]
    result["heads"] = heads
    # Every file of the tree has the template's length: the first one stands for all.
    result["tree_bytes"] = files * (tree / tree_path(0)).stat().st_size
    result["problems"] = problems
    return result


# --- report -----------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    lines: list[str] = []
    zips = report.get("zips")
    if zips:
        best, every = zips["best_seconds"], zips["all_seconds"]

        def runs_of(key: str) -> str:
            return ", ".join(f"{s:.2f}" for s in every[key])

        lines += [
            f"Zips: {zips['archives']} deflated archives, {zips['files']} files"
            f" ({zips['zip_bytes'] / 2**20:.0f} MiB zipped, {zips['plain_bytes'] / 2**20:.0f} MiB"
            f" plain); Spark local[{report['cores']}], best of {zips['runs']} after a warm-up;"
            f" load average (1 min) {zips['load_average_start'][0]:.1f} at the start,"
            f" {zips['load_average_end'][0]:.1f} at the end.",
            "",
            "| measurement | seconds (best) | runs |",
            "|---|---|---|",
            f"| in place: `dicom_meta_result` of `zip_members` | {best['in_place']:.2f} |"
            f" {runs_of('in_place')} |",
            f"| extract: `zip_extract` of every member | {best['extract']:.2f} |"
            f" {runs_of('extract')} |",
            f"| read the extracted files | {best['read_extracted']:.2f} |"
            f" {runs_of('read_extracted')} |",
            f"| **extract + read** | **{best['extract_and_read']:.2f}** |"
            f" {runs_of('extract_and_read')} |",
            f"| plain files, `dicom_meta_result` (the floor) | {best['plain']:.2f} |"
            f" {runs_of('plain')} |",
            f"| ratio extract+read / in place | {zips['ratio_extract_and_read_to_in_place']:.2f}x"
            " | |",
            f"| ratio in place / plain | {zips['ratio_in_place_to_plain']:.2f}x | |",
            "",
        ]
    incremental = report.get("incremental")
    if incremental:
        runs = incremental["runs"]
        names = {"first": "first run", "noop": "no-op re-run", "churn": "1% touched, 1% deleted"}
        lines += [
            f"Incremental: {incremental['files']} files"
            f" ({incremental['tree_bytes'] / 2**20:.0f} MiB), `ingest(..., thumbnails=False)`"
            f" on a fresh database, Spark local[{report['cores']}].",
            "",
            "| run | seconds | with the summary | new | changed | deleted | failed |"
            " load (1 min) start / end |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, run in runs.items():
            lines.append(
                f"| {names[key]} | {run['seconds']:.1f} | {run['wall_seconds']:.1f} |"
                f" {run['new']} | {run['changed']} | {run['deleted']} | {run['failed']} |"
                f" {run['load_average_start'][0]:.1f} / {run['load_average_end'][0]:.1f} |"
            )
        lines += [
            f"| **ratio no-op / first** | **{incremental['ratio_noop_to_first']:.3f}x** |"
            " | | | | | |",
            "",
            "Seconds per statement:",
            "",
            "| statement | " + " | ".join(names[key] for key in runs) + " |",
            "|---|" + "---|" * len(runs),
        ]
        heads = incremental["heads"]
        for position, (label, _) in enumerate(runs["first"]["statements"]):
            location, _, note = label.partition(" ")
            name = f"{location} `{heads[location]}` {note}".rstrip() if location in heads else label
            cells = []
            for run in runs.values():
                statements = run["statements"]
                cells.append(f"{statements[position][1]:.2f}" if position < len(statements) else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    problems = [*(zips or {}).get("problems", []), *(incremental or {}).get("problems", [])]
    for problem in problems:
        lines.append(f"CHECK FAILED: {problem}")
    return "\n".join(lines).rstrip()


def git_state() -> str:
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zips", type=int, default=100, help="zip archives (0: skip the part)")
    parser.add_argument("--members", type=int, default=5, help="files per zip archive")
    parser.add_argument("--size", type=int, default=512, help="rows = columns of a zipped image")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds of the zip queries")
    parser.add_argument(
        "--files", type=int, default=100000, help="files of the incremental tree (0: skip)"
    )
    parser.add_argument(
        "--no-churn", action="store_true", help="skip the run after 1%% touched, 1%% deleted"
    )
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    zip_folder = generate_zips(args.zips, args.members, args.size) if args.zips else None
    tree_folder = generate_tree(args.files) if args.files else None

    import pixels_sql

    report: dict[str, Any] = {
        "cores": args.cores,
        "machine_cpus": os.cpu_count(),
        "git": git_state(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    home = Path(tempfile.mkdtemp(prefix="pixels-bench-ingest-"))
    started = time.perf_counter()
    spark = pixels_sql.session(home, master=f"local[{args.cores}]")
    report["session_seconds"] = time.perf_counter() - started
    try:
        if zip_folder is not None:
            report["zips"] = measure_zips(spark, zip_folder, args.zips * args.members, args.runs)
        if tree_folder is not None:
            report["incremental"] = measure_incremental(
                spark, tree_folder, args.files, not args.no_churn
            )
    finally:
        spark.stop()
        shutil.rmtree(home, ignore_errors=True)

    (RESULTS / "ingest.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    markdown = render(report)
    (RESULTS / "ingest.md").write_text(markdown + "\n")
    print(markdown)
    if "CHECK FAILED" in markdown:
        sys.exit(1)


if __name__ == "__main__":
    main()
