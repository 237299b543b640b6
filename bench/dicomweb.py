"""DICOMweb benchmark (issue 11): QIDO-RS study searches on a catalog of 10,000 studies /
100,000 instances, and WADO-RS frames of a 512 x 512 uncompressed image, over real HTTP; and
(issue 31) the same kinds of requests beside Orthanc + its DICOMweb plugin on the same files.

    .venv/bin/python -m bench.dicomweb [--studies 10000] [--instances-per-study 10] [--runs 200]
        [--orthanc-studies 2000] [--results dicomweb]

Generates its data once into bench/data/ (not committed): ``--studies`` studies of two series,
``--instances-per-study`` small files each (16 x 16 16-bit images from pydicom's ``MR_small``,
~2 KB, written from one template's bytes with UIDs, patient name and study date replaced by
same-length values), plus one 512 x 512 16-bit explicit VR image
(``pixels_sql.dicom.synthetic.monochrome_image`` of pydicom's ``CT_small``) and its copy in
RLE Lossless (same pixels, same series). Then, in one run:

1. ``pixels_sql.ingest.ingest(spark, tree, 'bench_dicomweb', thumbnails=False)`` on a fresh
   home (timed), and the DICOMweb service of ``pixels-sql serve`` started on that session
   (``start_dicomweb``: the index build is timed).
2. QIDO-RS: ``--runs`` study searches over HTTP (one keep-alive ``requests`` session), cycling
   through five kinds — the first page of all studies (``limit=100``), a patient-name wildcard,
   a study-date range, ``ModalitiesInStudy``, one study by UID — p50/p95/max per kind and over
   all. Baseline, same run: the same five searches as Spark SQL over the ``study_catalog`` view
   (what a gateway that queries Spark per request would pay), 10 rounds, p50/p95.
3. WADO-RS frames: ``--runs`` requests of frame 1 of the 512 x 512 image
   (``transfer-syntax=*``), checked to be the file's pixel bytes. Baseline, same run: reading the
   file with pydicom and taking ``PixelData`` (what a naive server does per request).

4. Beside Orthanc (issue 31; ``--orthanc-studies 0`` skips it): Debian's Orthanc 1.10 and its
   DICOMweb plugin (tests/orthanc_peer.py: HTTP on loopback, no DICOM port, no remote access,
   otherwise Orthanc's defaults) loaded by REST upload (8 threads) with the tree of
   ``--orthanc-studies`` studies (the first studies of the full tree, byte for byte, with large
   images of their own), which pixels-sql catalogues too (a database of its own on the same
   session, unless it is the full tree): both servers hold the same files. Loading all 100,000
   files into Orthanc takes long; 2,000 studies (20,002 files) load in under a minute here.
   Then, ``--runs`` requests per measure and server, the servers taking turns, one keep-alive
   connection each (http.client: URLs as written, Orthanc not decoding %XX): the five QIDO
   searches; frame 1 of the 512 x 512 image with ``transfer-syntax=*`` and with none (native
   default); the transcoded frame (frame 1 of the RLE copy asked as native octet-stream, so
   decoded per request); the metadata of a 5-instance series. p50/p95 each, every answer
   checked once (the image's pixels in a frame, QIDO result counts equal on both), and the
   ratio pixels-sql / Orthanc.

Targets (issue 11): QIDO p95 < 300 ms, frame p95 < 100 ms; (issue 31) pixels-sql at or below
Orthanc on each side-by-side measure. Results: bench/results/<--results>.json and .md (and
printed).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import pydicom
import requests
from pydicom.uid import RLELossless, generate_uid

from bench.ingest import _uid, git_state, tree_template
from bench.meta import DATA, RESULTS
from pixels_sql.dicom.synthetic import monochrome_image

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

GENERATOR_VERSION = "2"  # 2: the 512 x 512 image's RLE copy (the transcoded frame)
DATABASE = "bench_dicomweb"
PEER_DATABASE = "bench_dicomweb_peer"  # the files Orthanc holds, when fewer than the full tree
SERIES_PER_STUDY = 2
TEMPLATE_NAME = b"CompressedSamples^MR1"  # MR_small's PatientName (21 characters)
TEMPLATE_DATE = b"20040826"  # its StudyDate (and series, acquisition, content dates)
FRAME_SIZE = 512


def _name(study: int) -> bytes:
    name = f"Patient^{study:013d}".encode()
    assert len(name) == len(TEMPLATE_NAME)
    return name


def _date(study: int) -> bytes:
    return f"{2000 + study % 20}{study % 12 + 1:02d}{study % 28 + 1:02d}".encode()


def _part(args: tuple[int, int, int, str, bytes]) -> int:
    start, stop, per_study, folder, template = args
    root = Path(folder)
    for study in range(start, stop):
        data = template.replace(_uid("study", 0), _uid("study", study))
        data = data.replace(TEMPLATE_NAME, _name(study)).replace(TEMPLATE_DATE, _date(study))
        target = root / f"study{study:06d}"
        target.mkdir(parents=True, exist_ok=True)
        for number in range(per_study):
            index = study * per_study + number
            series = study * SERIES_PER_STUDY + number % SERIES_PER_STUDY
            instance = data.replace(_uid("series", 0), _uid("series", series)).replace(
                _uid("instance", 0), _uid("instance", index)
            )
            (target / f"{number:03d}.dcm").write_bytes(instance)
    return (stop - start) * per_study


def generate(studies: int, per_study: int) -> Path:
    """bench/data/dicomweb-S-I/ with tree/ (the studies, and large/ with the 512 x 512 image)."""
    folder = DATA / f"dicomweb-{studies}-{per_study}"
    done = folder / ".complete"
    if done.exists() and done.read_text().split() == [str(studies * per_study), GENERATOR_VERSION]:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    tree = folder / "tree"
    tree.mkdir(parents=True)
    started = time.perf_counter()
    template = tree_template(folder)
    for needle in (TEMPLATE_NAME, TEMPLATE_DATE):
        if needle not in template:
            raise RuntimeError(f"the template has no {needle!r} to replace")
    chunk = 1000
    parts = [
        (start, min(start + chunk, studies), per_study, str(tree), template)
        for start in range(0, studies, chunk)
    ]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        written = sum(pool.map(_part, parts))
    large = tree / "large"
    large.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monochrome_image(
            pydicom.data.get_testdata_file("CT_small.dcm", download=False),
            large / "ct512.dcm",
            rows=FRAME_SIZE,
            columns=FRAME_SIZE,
        )
        # The same image stored compressed (RLE Lossless, PS3.5 G: the lossless syntax that
        # pydicom encodes by itself and Orthanc's DCMTK decodes), in the same series: its
        # frame asked as native bytes is the transcoded frame both servers decode per request.
        dataset = pydicom.dcmread(large / "ct512.dcm")
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.compress(RLELossless, encoding_plugin="pydicom")
        dataset.save_as(large / "ct512_rle.dcm", enforce_file_format=True)
    done.write_text(f"{written} {GENERATOR_VERSION}\n")
    print(
        f"generated {written} files in {tree} ({time.perf_counter() - started:.0f}s)",
        file=sys.stderr,
    )
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "n": len(ordered),
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max_ms": 1000 * ordered[-1],
    }


def qido_searches(study_uid: str) -> dict[str, tuple[dict[str, str], str]]:
    """Each kind: the QIDO-RS parameters and the same search in Spark SQL (baseline)."""
    return {
        "first page": ({"limit": "100"}, "SELECT * FROM study_catalog ORDER BY StudyDate DESC"),
        "patient wildcard": (
            {"PatientName": "patient^00000000012*"},
            "SELECT * FROM study_catalog WHERE lower(PatientName) LIKE 'patient^00000000012%'",
        ),
        "date range": (
            {"StudyDate": "20050101-20050331", "limit": "100"},
            "SELECT * FROM study_catalog"
            " WHERE StudyDate BETWEEN DATE'2005-01-01' AND DATE'2005-03-31'",
        ),
        "modality": (
            {"ModalitiesInStudy": "MR", "limit": "100"},
            "SELECT * FROM study_catalog WHERE array_contains(modalities, 'MR')",
        ),
        "one study": (
            {"StudyInstanceUID": study_uid},
            f"SELECT * FROM study_catalog WHERE StudyInstanceUID = '{study_uid}'",
        ),
    }


def measure_qido(
    spark: SparkSession, base: str, runs: int, study_uid: str, expected_studies: int
) -> dict[str, Any]:
    searches = qido_searches(study_uid)
    http = requests.Session()
    total = http.get(f"{base}/studies", params={"limit": "10000"}, timeout=120).json()
    if len(total) != min(expected_studies, 10000):
        raise RuntimeError(f"QIDO found {len(total)} studies, expected {expected_studies}")
    for parameters, _ in searches.values():  # warm-up round
        http.get(f"{base}/studies", params=parameters, timeout=60).raise_for_status()
    timings: dict[str, list[float]] = {kind: [] for kind in searches}
    counts: dict[str, int] = {}
    kinds = list(searches)
    for run in range(runs):
        kind = kinds[run % len(kinds)]
        started = time.perf_counter()
        answer = http.get(f"{base}/studies", params=searches[kind][0], timeout=60)
        answer.raise_for_status()
        found = answer.json()
        timings[kind].append(time.perf_counter() - started)
        counts[kind] = len(found)
    baseline: dict[str, list[float]] = {kind: [] for kind in searches}
    spark.sql(f"USE {DATABASE}")
    for _ in range(10):
        for kind, (_, sql) in searches.items():
            started = time.perf_counter()
            spark.sql(sql).limit(100).collect()
            baseline[kind].append(time.perf_counter() - started)
    every = [s for values in timings.values() for s in values]
    every_baseline = [s for values in baseline.values() for s in values]
    return {
        "studies_found_unfiltered": len(total),
        "kinds": {
            kind: {
                **percentiles(timings[kind]),
                "results": counts.get(kind),
                "spark_sql": percentiles(baseline[kind]),
            }
            for kind in searches
        },
        "all": percentiles(every),
        "spark_sql_all": percentiles(every_baseline),
    }


def measure_frames(base: str, runs: int, path: Path) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path)
    url = (
        f"{base}/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
        f"/instances/{dataset.SOPInstanceUID}/frames/1"
    )
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    http = requests.Session()
    first = http.get(url, headers={"Accept": accept}, timeout=60)
    first.raise_for_status()
    if dataset.PixelData not in first.content:
        raise RuntimeError("the frame is not the file's pixel data")
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = http.get(url, headers={"Accept": accept}, timeout=60)
        answer.raise_for_status()
        timings.append(time.perf_counter() - started)
    baseline = []
    for _ in range(max(20, runs // 4)):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = pydicom.dcmread(path).PixelData
        baseline.append(time.perf_counter() - started)
    return {
        "frame_bytes": len(dataset.PixelData),
        "http": percentiles(timings),
        "pydicom_read": percentiles(baseline),
        "checked": len(pixels) == len(dataset.PixelData),
    }


# --- Beside Orthanc (issue 31) ------------------------------------------------------------------

QIDO_RAW_SAFE = "^*?,-."  # a search's characters sent as typed (Orthanc 1.10 does not decode %XX)
AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
NATIVE = 'multipart/related; type="application/octet-stream"'


class Connection:
    """One keep-alive HTTP/1.1 connection to a server (http.client): the URL goes out as
    written. requests would percent-encode '^' and '*' in a search, which Orthanc 1.10 does not
    decode (tests/test_dicomweb_peer.py), so both servers get the same raw URLs."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port, self.prefix = parts.hostname or "", parts.port or 80, parts.path
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=300)

    def get(self, path: str, accept: str) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.connection.request("GET", self.prefix + path, headers={"Accept": accept})
                answer = self.connection.getresponse()
                return answer.status, answer.read()
            except (http.client.HTTPException, OSError):
                self.connection.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=300)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def load_orthanc(orthanc_url: str, files: list[Path], threads: int = 8) -> float:
    """Every file POSTed to Orthanc's REST API (/instances), ``threads`` at a time."""
    local = threading.local()

    def upload(path: Path) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        answer = local.session.post(f"{orthanc_url}/instances", data=path.read_bytes(), timeout=300)
        answer.raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(upload, files):
            pass
    return time.perf_counter() - started


def _frame_url(path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    return (
        f"/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
        f"/instances/{dataset.SOPInstanceUID}/frames/1"
    )


def _search_path(parameters: dict[str, str]) -> str:
    return "/studies?" + "&".join(
        f"{key}={quote(value, safe=QIDO_RAW_SAFE)}" for key, value in parameters.items()
    )


def versus_requests(
    studies: int, large: Path
) -> dict[str, tuple[list[tuple[str, str]], Callable[[bytes], str]]]:
    """Each measure: the requests it cycles through (path, Accept), and a check of an answer
    (an empty string when right)."""
    study = studies // 2
    searches = qido_searches(_uid("study", study).decode())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = pydicom.dcmread(large / "ct512.dcm").PixelData

    def has_pixels(body: bytes) -> str:
        return "" if pixels in body else f"not the image's pixels ({len(body)} bytes)"

    def is_json(body: bytes) -> str:
        return "" if isinstance(json.loads(body), list) else "not a JSON array"

    metadata = (
        f"/studies/{_uid('study', study).decode()}"
        f"/series/{_uid('series', study * SERIES_PER_STUDY).decode()}/metadata"
    )
    return {
        "QIDO-RS study search": (
            [(_search_path(p), "application/dicom+json") for p, _ in searches.values()],
            is_json,
        ),
        "frame, transfer-syntax=*": ([(_frame_url(large / "ct512.dcm"), AS_STORED)], has_pixels),
        "frame, native default": ([(_frame_url(large / "ct512.dcm"), NATIVE)], has_pixels),
        "transcoded frame (RLE stored, asked native)": (
            [(_frame_url(large / "ct512_rle.dcm"), NATIVE)],
            has_pixels,
        ),
        "series metadata": ([(metadata, "application/dicom+json")], is_json),
    }


def measure_versus(
    servers: dict[str, str], runs: int, studies: int, large: Path
) -> dict[str, dict[str, Any]]:
    """Each measure on each server, ``runs`` requests each, the servers taking turns (one
    keep-alive connection each): p50/p95, the answers checked once, and their sizes compared
    (QIDO: the number of results of each search)."""
    results: dict[str, dict[str, Any]] = {}
    connections = {name: Connection(base) for name, base in servers.items()}
    for measure, (paths, check) in versus_requests(studies, large).items():
        row: dict[str, Any] = {}
        timings: dict[str, list[float]] = {name: [] for name in servers}
        for name, connection in connections.items():
            answers = []
            for path, accept in paths:  # warm-up and checks
                status, body = connection.get(path, accept)
                problem = check(body) if status == 200 else f"{status}: {body[:200]!r}"
                if problem:
                    row[name] = {"error": f"{path}: {problem}"}
                    break
                answers.append(len(json.loads(body)) if accept.endswith("json") else "ok")
            else:
                row[name] = {"answers": answers}
        for run in range(runs):
            path, accept = paths[run % len(paths)]
            for name, connection in connections.items():
                if "error" in row[name]:
                    continue
                started = time.perf_counter()
                status, _ = connection.get(path, accept)
                timings[name].append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"{name} {path}: {status}")
        for name in servers:
            if timings[name]:
                row[name].update(percentiles(timings[name]))
        results[measure] = row
    return results


def run_orthanc_side(
    folder: Path, tree: Path, orthanc_studies: int, servers: dict[str, str]
) -> tuple[dict[str, Any], Any]:
    """Orthanc + its DICOMweb plugin (tests/orthanc_peer.py's configuration: HTTP on loopback,
    no DICOM port, no remote access; otherwise Orthanc's defaults) with every file of ``tree``
    (``orthanc_studies`` studies and the large images); returns its load report and the peer."""
    from tests.orthanc_peer import Orthanc

    files = sorted(tree.rglob("*.dcm"))
    orthanc = Orthanc(folder, dicomweb=True).start()
    seconds = load_orthanc(orthanc.url, files)
    servers["Orthanc"] = orthanc.dicomweb_url
    stats = requests.get(f"{orthanc.url}/statistics", timeout=60).json()
    return {
        "studies": orthanc_studies,
        "files": len(files),
        "load_seconds": seconds,
        "instances_per_s": len(files) / seconds,
        "counted": {k: stats.get(k) for k in ("CountStudies", "CountSeries", "CountInstances")},
        "version": requests.get(f"{orthanc.url}/system", timeout=60).json().get("Version"),
    }, orthanc


def render_versus(report: dict[str, Any]) -> list[str]:
    side, versus = report["orthanc"], report["versus"]
    peer = (
        "its catalog above"
        if "peer_ingest_seconds" not in report
        else f"a catalog of its own, ingested in {report['peer_ingest_seconds']:.0f} s"
    )
    lines = [
        "",
        f"## Beside Orthanc {side['version']} + DICOMweb plugin (same run, same files)",
        "",
        f"Orthanc holds {side['studies']} studies of this generator and 512 x 512 images"
        f" ({side['files']} files, REST upload with 8 threads in {side['load_seconds']:.0f} s,"
        f" {side['instances_per_s']:.0f} files/s; {side['counted']}), and pixels-sql the same"
        f" files ({peer}). Requests alternate between the servers, {report['runs']} each per"
        " measure, one keep-alive connection each.",
        "",
        "| measure | pixels-sql p50 ms | p95 ms | Orthanc p50 ms | p95 ms |"
        " ratio p50 | ratio p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for measure, row in versus.items():
        ours, theirs = row["pixels-sql"], row["Orthanc"]
        cells = []
        for side_row in (ours, theirs):
            if "error" in side_row:
                cells += ["error", "error"]
            else:
                cells += [f"{side_row['p50_ms']:.1f}", f"{side_row['p95_ms']:.1f}"]
        if "error" in ours or "error" in theirs:
            ratios = ["-", "-"]
        else:
            ratios = [
                f"{ours['p50_ms'] / theirs['p50_ms']:.2f}x",
                f"{ours['p95_ms'] / theirs['p95_ms']:.2f}x",
            ]
        lines.append(f"| {measure} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    lines += ["", "Ratios are pixels-sql / Orthanc (below 1: pixels-sql faster)."]
    for measure, row in versus.items():
        for name in ("pixels-sql", "Orthanc"):
            if "error" in row[name]:
                lines.append(f"- {measure}, {name}: {row[name]['error']}")
        both = all("answers" in row[n] for n in ("pixels-sql", "Orthanc"))
        if both and row["pixels-sql"]["answers"] != row["Orthanc"]["answers"]:
            lines.append(
                f"- {measure}: answers differ, pixels-sql {row['pixels-sql']['answers']},"
                f" Orthanc {row['Orthanc']['answers']}"
            )
    return lines


def render(report: dict[str, Any]) -> str:
    qido, frames = report["qido"], report["frames"]
    lines = [
        "# DICOMweb benchmark",
        "",
        f"{report['date']} · git {report['git']} · {report['machine_cpus']} CPUs ·"
        f" local[{report['cores']}] · {report['instances']} instances in"
        f" {report['studies']} studies",
        "",
        f"- ingest: {report['ingest_seconds']:.0f} s; index build: {report['index_seconds']:.1f}"
        f" s ({report['index_counts']})",
        "",
        "| QIDO-RS study search | results | p50 ms | p95 ms | max ms | Spark SQL p50 ms |"
        " Spark SQL p95 ms | p95 ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, row in qido["kinds"].items():
        base = row["spark_sql"]
        lines.append(
            f"| {kind} | {row['results']} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} |"
            f" {row['max_ms']:.1f} | {base['p50_ms']:.0f} | {base['p95_ms']:.0f} |"
            f" {base['p95_ms'] / row['p95_ms']:.0f}x |"
        )
    every, every_base = qido["all"], qido["spark_sql_all"]
    lines.append(
        f"| **all ({every['n']})** | | {every['p50_ms']:.1f} | {every['p95_ms']:.1f} |"
        f" {every['max_ms']:.1f} | {every_base['p50_ms']:.0f} | {every_base['p95_ms']:.0f} |"
        f" {every_base['p95_ms'] / every['p95_ms']:.0f}x |"
    )
    http, base = frames["http"], frames["pydicom_read"]
    lines += [
        "",
        f"| WADO-RS frame ({frames['frame_bytes']} bytes) | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|",
        f"| over HTTP ({http['n']}) | {http['p50_ms']:.1f} | {http['p95_ms']:.1f} |"
        f" {http['max_ms']:.1f} |",
        f"| baseline: pydicom read of the file ({base['n']}) | {base['p50_ms']:.1f} |"
        f" {base['p95_ms']:.1f} | {base['max_ms']:.1f} |",
        "",
        f"Targets: QIDO p95 {every['p95_ms']:.0f} ms (< 300:"
        f" {'met' if every['p95_ms'] < 300 else 'MISSED'}), frame p95 {http['p95_ms']:.0f} ms"
        f" (< 100: {'met' if http['p95_ms'] < 100 else 'MISSED'}).",
    ]
    if "versus" in report:
        lines += render_versus(report)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10000)
    parser.add_argument("--instances-per-study", type=int, default=10)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--orthanc-studies",
        type=int,
        default=2000,
        help="studies loaded into Orthanc for the side-by-side measures (0: no Orthanc)",
    )
    parser.add_argument(
        "--results",
        default="dicomweb",
        help="the results' file name in bench/results/ (.json, .md): smoke runs name their own",
    )
    args = parser.parse_args()
    orthanc_studies = min(args.orthanc_studies, args.studies)
    RESULTS.mkdir(exist_ok=True)
    folder = generate(args.studies, args.instances_per_study)
    tree = folder / "tree"

    import pixels_sql
    from pixels_sql.ingest import ingest
    from pixels_sql.servers.dicomweb.server import start_dicomweb
    from pixels_sql.servers.dicomweb.service import ServiceOptions

    report: dict[str, Any] = {
        "cores": args.cores,
        "machine_cpus": os.cpu_count(),
        "git": git_state(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "studies": args.studies,
        "instances": args.studies * args.instances_per_study + 2,
        "runs": args.runs,
    }
    home = Path(tempfile.mkdtemp(prefix="pixels-bench-dicomweb-"))
    spark = pixels_sql.session(home, master=f"local[{args.cores}]")
    server = peer_server = None
    orthanc = None
    try:
        started = time.perf_counter()
        ingest(spark, str(tree), DATABASE, thumbnails=False)
        report["ingest_seconds"] = time.perf_counter() - started
        port = free_port()
        server = start_dicomweb(spark, DATABASE, "127.0.0.1", port, ServiceOptions())
        report["index_seconds"] = server.app.index.build_seconds
        report["index_counts"] = server.app.index.counts()
        base = f"http://127.0.0.1:{port}/dicomweb"
        study_uid = _uid("study", args.studies // 2).decode()
        report["qido"] = measure_qido(spark, base, args.runs, study_uid, args.studies + 1)
        report["frames"] = measure_frames(base, args.runs, tree / "large" / "ct512.dcm")
        if orthanc_studies:
            # Both servers hold the same files: the tree of --orthanc-studies studies (the
            # first studies of the full tree, same bytes, and large images of their own),
            # catalogued into a database of its own on this session when it is not the
            # full tree.
            peer_tree, peer_base = tree, base
            if orthanc_studies != args.studies:
                peer_tree = generate(orthanc_studies, args.instances_per_study) / "tree"
                started = time.perf_counter()
                ingest(spark, str(peer_tree), PEER_DATABASE, thumbnails=False)
                report["peer_ingest_seconds"] = time.perf_counter() - started
                peer_port = free_port()
                peer_server = start_dicomweb(
                    spark, PEER_DATABASE, "127.0.0.1", peer_port, ServiceOptions()
                )
                peer_base = f"http://127.0.0.1:{peer_port}/dicomweb"
            servers = {"pixels-sql": peer_base}
            report["orthanc"], orthanc = run_orthanc_side(
                home / "orthanc", peer_tree, orthanc_studies, servers
            )
            report["versus"] = measure_versus(
                servers, args.runs, orthanc_studies, peer_tree / "large"
            )
    finally:
        if orthanc is not None:
            orthanc.stop()
        if peer_server is not None:
            peer_server.stop()
        if server is not None:
            server.stop()
        spark.stop()
        shutil.rmtree(home, ignore_errors=True)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    markdown = render(report)
    (RESULTS / f"{args.results}.md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
