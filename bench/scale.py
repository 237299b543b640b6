"""Scale benchmark (issue 13): a synthetic archive of N files, ingested end to end.

    .venv/bin/python -m bench.scale [--files 1000000] [--files 100000] [--cores 2]
                                    [--generate-only]

1. Generates (once per N, into bench/data/scale-N/, not committed; a later run checks the
   marker and reuses it) a tree laid out like a PACS export:
   ``tree/<study date>/<accession>/<series number>/IM<instance>.dcm``. Each study takes one
   template from :data:`TEMPLATES` — real headers from pydicom's test files and pydicom-data
   (GE CT, Toshiba and Siemens MR with its private CSA headers, Philips MR and ultrasound, a
   multi-frame MR, JPEG, JPEG 2000 and big-endian files, RT plans and doses) — with its pixel
   data cut to a small frame, so a file is mostly header (~0.8-47 KB; 1,000,000 files ~15 GB).
   Every file has its own UIDs and each study its own patient and accession: the template's
   bytes are written with same-length placeholders replaced, so a million files take minutes
   to write, not pydicom hours. The layout comes from a seeded random generator: the same N
   gives the same tree.
2. Runs ``pixels-sql ingest <tree> --no-thumbnails`` (catalog, metadata, typed table, views) on
   a fresh home, ``local[<cores>]``, as a subprocess, sampling the memory of its process tree
   (peak RSS of the driver JVM and of each Python worker) every 0.25 s; then the same command
   again (the no-op run: nothing to read; ``--no-noop`` skips it). Reports wall time, files/s
   and the memory peaks per N, and each statement's seconds from the ingest log.

3. First, in one session of its own: ``read_files`` and ``list_files`` of each tree (``count(*)``)
   against ``os.walk`` of it, names only (the baseline) and with an ``lstat`` per file; untimed
   warm-up rounds, then best of 10, each timed run right after an untimed one of its own, in
   turns; and ``read_files`` of a folder of one file, Spark's floor (``--listing-only``: only
   this).

Results: bench/results/scale.json and scale.md (scale-listing.* with ``--listing-only``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from bench.meta import DATA, RESULTS, ROOT, run_sampled

# Bumped when the generated files change: older sets in bench/data are made again.
GENERATOR_VERSION = "1"
SEED = 13


@dataclass(frozen=True)
class Template:
    """A test file as a study template: how often studies use it, its series per study and
    files per series (ranges), and the frame size its uncompressed pixel data is cut to."""

    name: str
    weight: int
    series: tuple[int, int]
    files: tuple[int, int]
    crop: int | None = None


TEMPLATES = (
    Template("CT_small.dcm", 30, (2, 4), (40, 120), crop=64),  # GE CT
    Template("MR_small.dcm", 15, (3, 6), (15, 30)),  # Toshiba MR, 64x64
    Template("MR-SIEMENS-DICOM-WithOverlays.dcm", 15, (3, 6), (15, 30), crop=32),  # CSA
    Template("MR2_UNCR.dcm", 10, (3, 6), (15, 30), crop=64),  # Philips MR
    Template("emri_small.dcm", 5, (1, 3), (1, 4)),  # multi-frame MR
    Template("OBXXXX1A.dcm", 5, (1, 2), (1, 20), crop=48),  # Philips ultrasound
    Template("JPEG-lossy.dcm", 5, (1, 3), (1, 10)),  # GE NM, JPEG extended
    Template("JPEG2000.dcm", 5, (1, 3), (1, 10)),  # GE NM, JPEG 2000
    Template("SC_rgb_jpeg_gdcm.dcm", 3, (1, 2), (1, 5)),  # secondary capture, JPEG lossless
    Template("ExplVR_BigEnd.dcm", 3, (1, 2), (1, 10)),  # GE ultrasound, big endian
    Template("rtplan.dcm", 2, (1, 1), (1, 2)),  # RT plan: no pixel data
    Template("rtdose.dcm", 2, (1, 1), (1, 2)),  # RT dose, implicit VR
)

# Placeholders: same length as the values written in their place (so no lengths change).
UID_ROOT = "1.2.826.0.1.3680043.10.1313."  # a benchmark root; + kind digit + "." + 14 digits
UID_KINDS = {"study": 1, "series": 2, "instance": 3}
UID_DIGITS = 14
PATIENT_ID_LENGTH = 10  # "PSC" + 7 digits
ACCESSION_LENGTH = 10  # "ACC" + 7 digits
FIRST_STUDY_DATE = "20150101"


def _uid(kind: str, number: int) -> str:
    return f"{UID_ROOT}{UID_KINDS[kind]}.{10**UID_DIGITS - 1 - number:0{UID_DIGITS}d}"


def _patient(number: int) -> str:
    return f"PSC{number:07d}"


def _accession(number: int) -> str:
    return f"ACC{number:07d}"


def _placeholder(kind: str) -> bytes:
    # The largest number: never one a real file gets (numbers count from 0).
    if kind in UID_KINDS:
        return _uid(kind, 0).encode()
    return {"patient": b"PSC9999999", "accession": b"ACC9999999"}[kind]


def template_bytes(template: Template) -> tuple[bytes, dict[str, list[int]]]:
    """The template file's bytes with placeholder UIDs, patient and accession (pixel data cut to
    ``crop`` x ``crop``), and where each placeholder starts."""
    path = pydicom.data.get_testdata_file(template.name, download=False)
    if path is None:
        raise RuntimeError(f"{template.name}: not in pydicom's test files or pydicom-data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path)
        if template.crop and "PixelData" in dataset:
            frames = dataset.pixel_array
            if int(dataset.get("NumberOfFrames") or 1) > 1:
                frames = frames[0]
            cropped = np.ascontiguousarray(frames[: template.crop, : template.crop])
            dataset.Rows, dataset.Columns = cropped.shape[:2]
            if "NumberOfFrames" in dataset:
                dataset.NumberOfFrames = 1
            if dataset.get("SamplesPerPixel", 1) > 1:
                dataset.PlanarConfiguration = 0  # the array's order: pixel by pixel
            dataset.PixelData = cropped.tobytes()
            dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.StudyInstanceUID = _uid("study", 0)
        dataset.SeriesInstanceUID = _uid("series", 0)
        dataset.SOPInstanceUID = _uid("instance", 0)
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.PatientID = _placeholder("patient").decode()
        dataset.AccessionNumber = _placeholder("accession").decode()
        dataset.StudyDate = FIRST_STUDY_DATE
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    offsets = {}
    for kind in (*UID_KINDS, "patient", "accession"):
        found = [m.start() for m in re.finditer(re.escape(_placeholder(kind)), data)]
        if not found:
            raise RuntimeError(f"{template.name}: placeholder {kind} not written")
        offsets[kind] = found
    # The study date: the template's date element, where the value sits.
    offsets["date"] = [m.start() for m in re.finditer(FIRST_STUDY_DATE.encode(), data)]
    return data, offsets


@dataclass(frozen=True)
class Study:
    number: int
    template: int
    date: str
    series: tuple[int, ...]  # files per series


def plan(files: int) -> list[Study]:
    """The studies of an N-file tree: the same for the same N (seeded)."""
    generator = random.Random(SEED)
    weights = [t.weight for t in TEMPLATES]
    studies: list[Study] = []
    total = 0
    day = 0
    while total < files:
        index = generator.choices(range(len(TEMPLATES)), weights)[0]
        template = TEMPLATES[index]
        counts = []
        for _ in range(generator.randint(*template.series)):
            count = min(generator.randint(*template.files), files - total)
            if count <= 0:
                break
            counts.append(count)
            total += count
        if generator.random() < 0.002:  # ~500 studies a day
            day += 1
        date = time.strftime("%Y%m%d", time.gmtime(1420070400 + day * 86400))
        studies.append(Study(len(studies), index, date, tuple(counts)))
    return studies


def _write_studies(args: tuple[list[Study], str, int]) -> tuple[int, int]:
    studies, folder, first_instance = args
    templates = [template_bytes(t) for t in TEMPLATES]
    root = Path(folder)
    written = size = 0
    instance = first_instance
    series_number = 0
    for study in studies:
        data, offsets = templates[study.template]
        values = {
            "study": _uid("study", study.number).encode(),
            "patient": _patient(study.number // 2).encode(),  # two studies a patient
            "accession": _accession(study.number).encode(),
            "date": study.date.encode(),
        }
        for position, count in enumerate(study.series):
            series_number = study.number * 10 + position
            values["series"] = _uid("series", series_number).encode()
            target = root / study.date / _accession(study.number) / f"{position + 1:03d}"
            target.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                values["instance"] = _uid("instance", instance).encode()
                buffer = bytearray(data)
                for kind, value in values.items():
                    for offset in offsets[kind]:
                        buffer[offset : offset + len(value)] = value
                (target / f"IM{number + 1:05d}.dcm").write_bytes(buffer)
                instance += 1
                written += 1
                size += len(buffer)
    return written, size


def generate(files: int) -> Path:
    """bench/data/scale-N/ with tree/ and the .complete marker (made once, then reused)."""
    folder = DATA / f"scale-{files}"
    tree = folder / "tree"
    done = folder / ".complete"
    if done.exists():
        marker = json.loads(done.read_text())
        if marker.get("files") == files and marker.get("version") == GENERATOR_VERSION:
            return folder
    if folder.exists():
        shutil.rmtree(folder)
    tree.mkdir(parents=True)
    started = time.perf_counter()
    studies = plan(files)
    # Contiguous runs of studies per worker; instance numbers continue across runs.
    workers = os.cpu_count() or 2
    chunks: list[tuple[list[Study], str, int]] = []
    step = max(1, len(studies) // (workers * 8))
    first = 0
    for start in range(0, len(studies), step):
        part = studies[start : start + step]
        chunks.append((part, str(tree), first))
        first += sum(sum(s.series) for s in part)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_write_studies, chunks))
    written = sum(r[0] for r in results)
    size = sum(r[1] for r in results)
    if written != files:
        raise RuntimeError(f"generated {written} files, expected {files}")
    done.write_text(
        json.dumps(
            {"files": files, "version": GENERATOR_VERSION, "bytes": size, "studies": len(studies)}
        )
    )
    print(
        f"generated {written} files ({size / 1e9:.1f} GB, {len(studies)} studies) in {tree}"
        f" ({time.perf_counter() - started:.0f} s)",
        file=sys.stderr,
    )
    return folder


STATEMENT_LINE = re.compile(r"(\S+\.sql:\d+): ok \(([\d.]+)s\)")


def ingest(tree: Path, cores: int, home: Path) -> dict[str, Any]:
    """``pixels-sql ingest`` as a user runs it, timed, its process tree's memory sampled."""
    command = [
        sys.executable,
        "-m",
        "pixels_sql.cli",
        "ingest",
        str(tree),
        "--no-thumbnails",
        "--home",
        str(home),
        "--master",
        f"local[{cores}]",
    ]
    load = os.getloadavg()
    out, err, elapsed, memory = run_sampled(command)
    statements = [(m.group(1), float(m.group(2))) for m in STATEMENT_LINE.finditer(err)]
    summary = {
        line.split(": ")[0].strip(): line.split(": ", 1)[1]
        for line in out.splitlines()
        if ": " in line
    }
    return {
        "seconds": elapsed,
        "summary": summary,
        "statements": statements,
        "peak_rss_jvm_mib": memory.peak_jvm / 2**20,
        "peak_rss_python_worker_mib": memory.peak_python_worker / 2**20,
        "peak_rss_python_workers_total_mib": memory.peak_python_workers_total / 2**20,
        "load_average_start": load,
        "load_average_end": os.getloadavg(),
    }


def measure(files: int, cores: int, noop_run: bool = True) -> dict[str, Any]:
    folder = generate(files)
    marker = json.loads((folder / ".complete").read_text())
    home = Path(tempfile.mkdtemp(prefix="pixels-bench-scale-"))
    try:
        first = ingest(folder / "tree", cores, home)
        noop = ingest(folder / "tree", cores, home) if noop_run else None
    finally:
        shutil.rmtree(home, ignore_errors=True)
    catalogued = int(first["summary"].get("files", "0"))
    return {
        "files": files,
        "tree_bytes": marker["bytes"],
        "studies": marker["studies"],
        "catalogued": catalogued,
        "files_per_second": files / first["seconds"],
        "first": first,
        "noop": noop,
    }


LISTING_WARMUP_ROUNDS = 8
# Timed rounds: the best of 10. This VM's speed swings by tens of per cent within minutes,
# more for Spark's many threads than for one Python loop; the best of more rounds finds both
# sides at their quiet speed.
LISTING_ROUNDS = 10


def listing(trees: list[Path], cores: int) -> list[dict[str, Any]]:
    """``read_files`` and ``list_files`` of each tree against ``os.walk`` (names only, as the
    issue's baseline, and with an ``lstat`` per file, which the listings need for the length
    and time they give), after untimed warm-up rounds, best of 10 each (every timed run right
    after an untimed one of its own), in turns, in one session; and the same ``read_files``
    query over a folder of one file, the part of its time that is Spark's per query."""
    import pixels_sql

    home = Path(tempfile.mkdtemp(prefix="pixels-bench-scale-listing-"))
    one_file = home / "one-file"
    one_file.mkdir()
    (one_file / "IM1.dcm").write_bytes(b"DICM")
    spark = pixels_sql.session(home, master=f"local[{cores}]")
    queries = {
        "read_files": "SELECT count(*) FROM read_files(:path, recursiveFileLookup => true)",
        "list_files": "SELECT count(*) FROM list_files(:path)",
    }

    def walk(tree: Path, with_stat: bool) -> int:
        count = 0
        for folder, _folders, names in os.walk(tree):
            for name in names:
                if with_stat:
                    os.lstat(os.path.join(folder, name))
                count += 1
        return count

    results = []
    try:
        for tree in trees:
            contenders: dict[str, Callable[[], int]] = {
                **{
                    name: (
                        lambda query=query, tree=tree: spark.sql(
                            query, args={"path": str(tree)}
                        ).first()[0]
                    )
                    for name, query in queries.items()
                },
                "os_walk": lambda tree=tree: walk(tree, False),
                "os_walk_lstat": lambda tree=tree: walk(tree, True),
                # Spark's own floor: the same query over a folder of one file.
                "read_files_one_file": lambda: spark.sql(
                    queries["read_files"], args={"path": str(one_file)}
                ).first()[0],
            }
            times: dict[str, list[float]] = {}
            counts: dict[str, int] = {}
            # Untimed rounds first (JMH's warm-up iterations): the JVM compiles the walk's code,
            # and both sides find the folders in the kernel's cache. The JVM needs several:
            # 100k files, 2026-11-27, read_files took 0.31 s at best in its first rounds and
            # 0.18 s once compiled, os.walk 0.06 s from its second.
            for _ in range(LISTING_WARMUP_ROUNDS):
                for contender in contenders.values():
                    contender()
            # Then the timed rounds; in each, every contender runs once untimed and once timed,
            # in an order that turns each round. Whatever ran just before (the other side's walk
            # filling the caches, the JVM idle meanwhile) costs the first run after it: 100k,
            # the query timed right after os.walk + lstat took 0.34-0.35 s, the next one 0.25 s.
            names = list(contenders)
            for round_number in range(LISTING_ROUNDS):
                turn = round_number % len(names)
                for name in names[turn:] + names[:turn]:
                    contenders[name]()
                    started = time.perf_counter()
                    counts[name] = contenders[name]()
                    times.setdefault(name, []).append(time.perf_counter() - started)
            best = {name: min(runs) for name, runs in times.items()}
            results.append(
                {
                    "tree": str(tree),
                    "counts": counts,
                    "best_seconds": best,
                    "runs": times,
                    "ratio_read_files_to_os_walk": best["read_files"] / best["os_walk"],
                    "ratio_list_files_to_os_walk": best["list_files"] / best["os_walk"],
                }
            )
    finally:
        spark.stop()
        shutil.rmtree(home, ignore_errors=True)
    return results


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Scale benchmark, {report['date']} ({report['git']}), local[{report['cores']}] on"
        f" {report['machine_cpus']} CPUs",
        "",
        "| files | tree | first ingest (s) | files/s | no-op re-run (s) | driver JVM peak RSS"
        " (MiB) | largest Python worker (MiB) | all Python workers (MiB) | load (start/end) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in report["runs"]:
        first = result["first"]
        check = "" if result["catalogued"] == result["files"] else " CHECK FAILED: catalogued "
        lines.append(
            f"| {result['files']:,}{check} | {result['tree_bytes'] / 1e9:.1f} GB,"
            f" {result['studies']:,} studies | {first['seconds']:.0f} |"
            f" {result['files_per_second']:.0f} |"
            f" {result['noop']['seconds'] if result['noop'] else float('nan'):.0f} |"
            f" {first['peak_rss_jvm_mib']:.0f} | {first['peak_rss_python_worker_mib']:.0f} |"
            f" {first['peak_rss_python_workers_total_mib']:.0f} |"
            f" {first['load_average_start'][0]:.1f} / {first['load_average_end'][0]:.1f} |"
        )
    if report.get("listing"):
        lines += [
            "",
            f"| listing (s, best of {LISTING_ROUNDS} after a warm-up) | read_files | list_files |"
            " os.walk (baseline) | read_files / os.walk | list_files / os.walk | os.walk + lstat |"
            " read_files of one file (Spark's floor) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for result in report["listing"]:
            best, counts = result["best_seconds"], result["counts"]
            trees = {name: count for name, count in counts.items() if name != "read_files_one_file"}
            check = "" if len(set(trees.values())) == 1 else f" CHECK FAILED: counts {counts}"
            lines.append(
                f"| {counts['os_walk']:,} files{check} | {best['read_files']:.2f} |"
                f" {best['list_files']:.2f} | {best['os_walk']:.2f} |"
                f" {result['ratio_read_files_to_os_walk']:.1f}x |"
                f" {result['ratio_list_files_to_os_walk']:.1f}x | {best['os_walk_lstat']:.2f} |"
                f" {best['read_files_one_file']:.3f} |"
            )
    for result in report["runs"]:
        lines += ["", f"Statements of the first ingest of {result['files']:,} files (s):", ""]
        lines += [f"- {label}: {seconds:.1f}" for label, seconds in result["first"]["statements"]]
    return "\n".join(lines)


def git_state() -> str:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return head or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--files", type=int, action="append", help="tree sizes (default: 100000 and 1000000)"
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--no-noop", action="store_true", help="skip the no-op re-run")
    parser.add_argument(
        "--listing-only", action="store_true", help="only read_files/list_files vs os.walk"
    )
    args = parser.parse_args()
    sizes = args.files or [100000, 1000000]
    if args.generate_only:
        for files in sizes:
            generate(files)
        return
    report: dict[str, Any] = {
        "cores": args.cores,
        "machine_cpus": os.cpu_count(),
        "git": git_state(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "listing": listing([generate(files) / "tree" for files in sizes], args.cores),
        "runs": []
        if args.listing_only
        else [measure(files, args.cores, not args.no_noop) for files in sizes],
    }
    RESULTS.mkdir(exist_ok=True)
    name = "scale-listing" if args.listing_only else "scale"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    markdown = render(report)
    (RESULTS / f"{name}.md").write_text(markdown + "\n")
    print(markdown)
    if "CHECK FAILED" in markdown:
        sys.exit(1)


if __name__ == "__main__":
    main()
