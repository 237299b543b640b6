"""Thumbnail benchmark: dicom_thumbnail vs a pixels-style baseline, same files, same run.

    .venv/bin/python -m bench.thumbnails [--files 24] [--rows 2048] [--columns 2560]

For each transfer syntax it generates (once, into bench/data/) a set of large single-frame
images from a real template with new UIDs, then measures thumbnails per second per core:

- in one Python process (one core): our renderer, and the baseline — what dbx.pixels did:
  ``pydicom.dcmread`` of the whole file, ``pixel_array``, min/max scaling to 8 bits, Pillow
  ``thumbnail`` to 256 px, PNG;
- through Spark SQL on ``local[2]`` in one session: ``try_dicom_thumbnail(path)`` and the
  baseline registered as a pandas UDF over the same ``read_files`` listing (per core = / 2).

Writes bench/results/thumbnails.json and .md, and prints the table with the ratios.

    .venv/bin/python -m bench.thumbnails --huge [--huge-side 32768]

instead measures one 256 px thumbnail of a single 32768 x 32768 16-bit frame (2 GiB, written
once to bench/data/ a band at a time): wall time and peak RSS of a fresh process.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from PIL import Image

from pixels_sql.dicom.synthetic import monochrome_image
from pixels_sql.dicom.thumbnail import render_thumbnail

ROOT = Path(__file__).resolve().parent
SYNTAXES = {
    "explicit": "Explicit VR Little Endian",
    "jpeg2000": "JPEG 2000 Lossless",
    "jpeg-baseline": "JPEG Baseline (8-bit)",
}
TEMPLATE = "MR2_UNCR.dcm"  # pydicom-data: a real 1024x1024 12-bit MR


def baseline_thumbnail(path: str, max_size: int = 256) -> bytes:
    """The pixels-style thumbnail: full read, full decode, min/max to 8 bits, Pillow resize."""
    dataset = pydicom.dcmread(path)
    array = dataset.pixel_array
    if array.ndim == 3 and int(dataset.get("SamplesPerPixel", 1)) == 1:
        array = array[array.shape[0] // 2]
    low, high = float(array.min()), float(array.max())
    scaled = ((array - low) / max(high - low, 1) * 255).astype(np.uint8)
    image = Image.fromarray(scaled)
    image.thumbnail((max_size, max_size))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def generate(
    folder: Path, files: int, rows: int, columns: int, only: list[str] | None = None
) -> dict[str, list[Path]]:
    template = pydicom.data.get_testdata_file(TEMPLATE, download=False)
    sets: dict[str, list[Path]] = {}
    for syntax in only or SYNTAXES:
        target = folder / f"{syntax}-{rows}x{columns}"
        paths = sorted(target.glob("*.dcm"))
        if len(paths) < files:
            paths = [
                monochrome_image(
                    template,
                    target / f"{index:05d}.dcm",
                    rows=rows,
                    columns=columns,
                    encoding=syntax,
                )
                for index in range(files)
            ]
        sets[syntax] = paths[:files]
    return sets


def per_second(function: Callable[[str], bytes], paths: list[Path], repeats: int = 3) -> float:
    function(str(paths[0]))  # warm caches and imports
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for path in paths:
            function(str(path))
        rates.append(len(paths) / (time.perf_counter() - started))
    return statistics.median(rates)


def spark_rates(sets: dict[str, list[Path]], cores: int) -> dict[str, dict[str, float]]:
    from pyspark.sql.functions import pandas_udf

    import pixels_sql

    spark = pixels_sql.session(ROOT / "data" / "spark-home", master=f"local[{cores}]")

    @pandas_udf("binary")
    def pixels_baseline(paths: pd.Series) -> pd.Series:
        from pixels_sql.io.paths import to_local_path

        return pd.Series([baseline_thumbnail(to_local_path(p)) for p in paths], dtype=object)

    spark.udf.register("pixels_baseline", pixels_baseline)
    results: dict[str, dict[str, float]] = {}
    for syntax, paths in sets.items():
        folder = paths[0].parent
        # The query reads the whole folder, which may hold more files than --files asked for
        # (it keeps those of an earlier, larger run): rates count what it read.
        files = len(list(folder.glob("*.dcm")))
        rates = {"files": files}
        for name, function in (("ours", "try_dicom_thumbnail"), ("baseline", "pixels_baseline")):
            query = (
                f"SELECT count({function}(path)) FROM read_files('{folder}',"
                " pathGlobFilter => '*.dcm')"
            )
            spark.sql(query).collect()  # warm-up: Python workers, imports
            # Best of 3, as timeit does: one run of ~1 s (48 files) swings by a third with
            # whatever else the machine does, and ours is near Spark's per-query constant.
            times = []
            for _ in range(3):
                started = time.perf_counter()
                counted = spark.sql(query).first()[0]
                times.append(time.perf_counter() - started)
                assert counted == files, (syntax, name, counted)
            rates[name] = files / min(times) / cores
            rates[f"{name}_seconds"] = times
        results[syntax] = rates
    spark.stop()
    return results


HUGE_JOB = """
import resource, sys, time
from pixels_sql.dicom.thumbnail import render_thumbnail
started = time.perf_counter()
png = render_thumbnail(sys.argv[1])
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, len(png))
"""


def huge_frame(path: Path, side: int) -> Path:
    """A side x side 16-bit explicit VR little endian frame, written without holding it."""
    if path.exists():
        return path
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.Modality, dataset.Rows, dataset.Columns = "OT", side, side
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = 0
    dataset.PixelData = b"\0\0"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    head = buffer.getvalue()[:-6]  # up to the Pixel Data length field
    band_rows = 256
    y, x = np.mgrid[0:band_rows, 0:side]
    with open(path, "wb") as out:
        out.write(head + struct.pack("<I", side * side * 2))
        for top in range(0, side, band_rows):
            rows = y + top  # a diagonal gradient under a 512-pixel checkerboard
            band = (x + rows) * 4095 // (2 * side) + ((x // 512 + rows // 512) % 2) * 800
            out.write(np.clip(band, 0, 4095).astype("<u2").tobytes())
    return path


def huge(side: int) -> None:
    path = huge_frame(ROOT / "data" / f"huge-{side}x{side}.dcm", side)
    completed = subprocess.run(
        [sys.executable, "-c", HUGE_JOB, str(path)], capture_output=True, text=True, check=True
    )
    seconds, peak_kib, length = completed.stdout.split()
    print(
        f"{side}x{side} 16-bit ({path.stat().st_size / 2**30:.2f} GiB): one 256 px thumbnail"
        f" in {float(seconds):.2f} s, peak RSS {int(peak_kib) / 1024:.0f} MiB, PNG {length} bytes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=24, help="files per transfer syntax")
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--columns", type=int, default=2560)
    parser.add_argument("--cores", type=int, default=2, help="Spark local[N]")
    parser.add_argument("--no-spark", action="store_true", help="only the one-process numbers")
    parser.add_argument(
        "--syntax", action="append", choices=sorted(SYNTAXES), help="only these (repeatable)"
    )
    parser.add_argument("--huge", action="store_true", help="only the 32768^2 frame measurement")
    parser.add_argument("--huge-side", type=int, default=32768)
    args = parser.parse_args()
    if args.huge:
        huge(args.huge_side)
        return

    sets = generate(ROOT / "data", args.files, args.rows, args.columns, args.syntax)
    rows = []
    for syntax, paths in sets.items():
        ours = per_second(render_thumbnail, paths)
        baseline = per_second(baseline_thumbnail, paths)
        rows.append({"syntax": syntax, "ours": ours, "baseline": baseline})
    spark = {} if args.no_spark else spark_rates(sets, args.cores)

    lines = [
        f"Thumbnails per second per core, {args.files} files of {args.columns}x{args.rows}"
        f" per syntax, template {TEMPLATE}, 256 px PNG ({platform.processor() or 'cpu'},"
        f" {os.cpu_count()} cores)",
        "",
        "| transfer syntax | ours (1 process) | baseline (1 process) | ratio |"
        + (" ours (Spark) | baseline (Spark) | ratio |" if spark else ""),
        "|---|---|---|---|" + ("---|---|---|" if spark else ""),
    ]
    for row in rows:
        line = (
            f"| {SYNTAXES[row['syntax']]} | {row['ours']:.1f} | {row['baseline']:.1f} |"
            f" {row['ours'] / row['baseline']:.2f}x |"
        )
        if spark:
            rates = spark[row["syntax"]]
            row["spark_ours"], row["spark_baseline"] = rates["ours"], rates["baseline"]
            line += (
                f" {rates['ours']:.1f} | {rates['baseline']:.1f} |"
                f" {rates['ours'] / rates['baseline']:.2f}x |"
            )
        lines.append(line)
    table = "\n".join(lines)
    results = ROOT / "results"
    results.mkdir(exist_ok=True)
    (results / "thumbnails.md").write_text(table + "\n")
    (results / "thumbnails.json").write_text(
        json.dumps(
            {"files": args.files, "rows": args.rows, "columns": args.columns, "results": rows},
            indent=2,
        )
        + "\n"
    )
    print(table)


if __name__ == "__main__":
    main()
