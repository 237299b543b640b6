"""Object storage: bytes transferred to read the metadata of large objects, against a baseline.

``python -m bench.object_storage --objects 1000`` (``make bench-object-storage``) starts a real
S3-compatible server on loopback (moto's, with the request recorder of tests/s3_server.py),
uploads ``--objects`` DICOM objects of at least 5 MB each (real headers of several corpus
templates — CT, MR, US, RT dose — followed by their pixel data grown past 5 MB), then:

1. runs the metadata pipeline (``pixels-sql run`` of sql/00_database.sql, 10_catalog.sql and
   20_meta.sql with ``--param path=s3://...``) and counts, from the server's log, every request
   and every body byte it sent: listings, size requests, ranged reads;
2. as the baseline, in the same run, reads the headers of ``--baseline`` of the objects the way
   a notebook does without pixels-sql: ``pydicom.dcmread(fs.open(path), stop_before_pixels=True)``
   on an fsspec file with its default read-ahead cache, and counts its bytes the same way.

Target (issue 12): the pipeline's bytes ≤ 2% of the objects' total size. The report goes to
bench/results/object_storage.md (and .json).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom

from bench.ingest import git_state
from bench.meta import RESULTS
from tests.corpus import PYDICOM_TEST_FILES, pydicom_data_dir
from tests.s3_server import S3Server, running_s3_server

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "bench-objects"
PREFIX = "archive"
MIN_OBJECT_BYTES = 5_000_000
TARGET_PERCENT = 2.0
# Real headers of several modalities; each gets pixel data of its own geometry past 5 MB.
TEMPLATES = {
    "ct": PYDICOM_TEST_FILES / "CT_small.dcm",
    "mr": PYDICOM_TEST_FILES / "MR_small.dcm",
    "rtdose": PYDICOM_TEST_FILES / "rtdose.dcm",
    "us": pydicom_data_dir() / "US1_UNCR.dcm",
}


def template_bytes(path: Path, index: int) -> bytes:
    """The template's header with uncompressed pixel data of at least 5 MB (frames added, or
    rows, as the geometry allows); the UIDs made unique per object."""
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    frame_bytes = (
        int(dataset.Rows)
        * int(dataset.Columns)
        * int(dataset.get("SamplesPerPixel", 1))
        * (int(dataset.BitsAllocated) // 8)
    )
    frames = -(-(MIN_OBJECT_BYTES + index % 7 * 65536) // frame_bytes)
    if "NumberOfFrames" in dataset or frames > 1:
        dataset.NumberOfFrames = frames
        dataset.PixelData = bytes(frames * frame_bytes)
    dataset["PixelData"].VR = "OW" if int(dataset.BitsAllocated) > 8 else "OB"
    dataset.SOPInstanceUID = f"1.2.826.0.1.3680043.10.1234.{index}"
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def upload(server: S3Server, count: int) -> tuple[list[str], int]:
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    names = sorted(TEMPLATES)

    def put(index: int) -> tuple[str, int]:
        kind = names[index % len(names)]
        body = template_bytes(TEMPLATES[kind], index)
        key = f"{PREFIX}/{kind}/{index // 100:03}/{index:05}.dcm"
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
        return f"s3://{BUCKET}/{key}", len(body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        uploaded = list(pool.map(put, range(count)))
    return [path for path, _size in uploaded], sum(size for _path, size in uploaded)


def traffic(requests: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = {"requests": 0, "listings": 0, "heads": 0, "gets": 0, "unranged_gets": 0, "bytes": 0}
    for request in requests:
        counts["requests"] += 1
        counts["bytes"] += request["bytes"]
        if "list-type" in request["query"]:
            counts["listings"] += 1
        elif request["method"] == "HEAD":
            counts["heads"] += 1
        elif request["method"] == "GET":
            counts["gets"] += 1
            counts["unranged_gets"] += not request["range"]
    return counts


def run_pipeline(server: S3Server, home: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pixels_sql.cli",
            "run",
            "sql/00_database.sql",
            "sql/10_catalog.sql",
            "sql/20_meta.sql",
            "--param",
            f"path=s3://{BUCKET}/{PREFIX}",
            "--home",
            str(home),
        ],
        cwd=ROOT,
        env={**os.environ, **server.env, "PYTHONWARNINGS": "ignore"},
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started


def baseline_headers(server: S3Server, paths: list[str]) -> float:
    """pydicom over fsspec's default file: what a notebook does without pixels-sql."""
    import s3fs

    fs = s3fs.S3FileSystem(
        endpoint_url=server.url,
        key=server.env["AWS_ACCESS_KEY_ID"],
        secret=server.env["AWS_SECRET_ACCESS_KEY"],
        skip_instance_cache=True,
    )
    started = time.perf_counter()
    for path in paths:
        with fs.open(path, "rb") as handle:
            pydicom.dcmread(handle, stop_before_pixels=True)
    return time.perf_counter() - started


def catalogued(home: Path) -> dict[str, int]:
    """Rows and failures of the run's object_catalog (read back with pyarrow, no Spark)."""
    import pyarrow.dataset as ds

    table = ds.dataset(
        str(home / "warehouse" / "pixels.db" / "object_catalog"), partitioning="hive"
    ).to_table(columns=["path", "meta_error_reason"])
    reasons = table.column("meta_error_reason").to_pylist()
    return {"rows": table.num_rows, "failed": sum(reason is not None for reason in reasons)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--baseline", type=int, default=100, help="objects the baseline reads")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    with running_s3_server() as server, tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        paths, total = upload(server, args.objects)
        upload_seconds = time.perf_counter() - started
        print(f"uploaded {len(paths)} objects, {total / 1e9:.2f} GB in {upload_seconds:.0f} s")

        server.reset()
        pipeline_seconds = run_pipeline(server, Path(work) / "home")
        ours = traffic(server.requests())
        rows = catalogued(Path(work) / "home")
        sample = paths[: args.baseline]
        sample_total = total * len(sample) // len(paths)  # objects are within 8% of each other
        server.reset()
        baseline_seconds = baseline_headers(server, sample)
        base = traffic(server.requests())

    ours_percent = 100 * ours["bytes"] / total
    base_percent = 100 * base["bytes"] / sample_total
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "git": git_state(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "objects": len(paths),
        "total_bytes": total,
        "upload_seconds": round(upload_seconds, 1),
        "pipeline": {**ours, "seconds": round(pipeline_seconds, 1), **rows},
        "pipeline_percent": round(ours_percent, 3),
        "baseline": {**base, "objects": len(sample), "seconds": round(baseline_seconds, 1)},
        "baseline_percent": round(base_percent, 3),
    }
    met = "met" if ours_percent <= TARGET_PERCENT else "NOT met"
    markdown = "\n".join(
        [
            "# Object storage benchmark",
            "",
            f"{report['when']} · git {report['git']} · {report['cpus']} CPUs · moto S3 server on"
            f" loopback · {len(paths)} objects, {total / 1e9:.2f} GB (each ≥ 5 MB)",
            "",
            "| metadata read | objects | requests | listings | HEAD | ranged GET | whole GET |"
            " bytes sent | % of objects' size | bytes/object | seconds |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            f"| pixels-sql pipeline (00, 10, 20) | {len(paths)} | {ours['requests']} |"
            f" {ours['listings']} | {ours['heads']} | {ours['gets'] - ours['unranged_gets']} |"
            f" {ours['unranged_gets']} | {ours['bytes']:,} | {ours_percent:.2f}% |"
            f" {ours['bytes'] // len(paths):,} | {pipeline_seconds:.0f} |",
            f"| baseline: pydicom on fsspec's default file | {len(sample)} | {base['requests']} |"
            f" {base['listings']} | {base['heads']} | {base['gets'] - base['unranged_gets']} |"
            f" {base['unranged_gets']} | {base['bytes']:,} | {base_percent:.2f}% |"
            f" {base['bytes'] // len(sample):,} | {baseline_seconds:.0f} |",
            "",
            f"Rows catalogued: {rows['rows']} ({rows['failed']} failed). Ratio baseline/pixels-sql"
            f" bytes per object: {base_percent / ours_percent:.0f}x.",
            f"Target: ≤ {TARGET_PERCENT}% of the objects' size ({ours_percent:.2f}%: {met}).",
        ]
    )
    (RESULTS / "object_storage.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "object_storage.md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
