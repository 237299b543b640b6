"""Object storage: the pipeline, the functions and list_files over s3:// against a real
S3-compatible server on loopback (moto's, tests/s3_server.py), compared with the same files on a
local disk; header reads by bounded byte ranges; throttling retried."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from chispa import assert_df_equality

from pixels_sql.dicom.meta import read_result
from pixels_sql.io import storage
from pixels_sql.pipeline import run_pipeline
from tests.conftest import copy_samples
from tests.corpus import PYDICOM_TEST_FILES
from tests.s3_server import S3Server, running_s3_server

ROOT = Path(__file__).parent.parent
BUCKET = "pixels-corpus"
PREFIX = "archive/2026"
BIG_OBJECTS = 12
BIG_ROWS, BIG_COLUMNS = 1025, 2560  # 16-bit: 5,248,000 bytes of pixel data, >= 5 MB as in bench/
BIG_PIXEL_BYTES = BIG_ROWS * BIG_COLUMNS * 2


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_s3_server() as server:
        saved = {name: os.environ.get(name) for name in server.env}
        os.environ.update(server.env)
        storage._FILESYSTEMS.clear()
        try:
            yield server
        finally:
            storage._FILESYSTEMS.clear()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def upload(s3: S3Server, folder: Path, bucket: str, prefix: str) -> None:
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())


def two_member_zip(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(PYDICOM_TEST_FILES / "CT_small.dcm", "series/ct.dcm")
        archive.write(PYDICOM_TEST_FILES / "MR_small.dcm", "series/mr.dcm")
    return target


@pytest.fixture(scope="module")
def corpus(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample folder (good, broken and non-DICOM files, a zip archive, an empty file) on
    disk and under s3://BUCKET/PREFIX."""
    folder = copy_samples(tmp_path_factory.mktemp("s3-corpus"))
    two_member_zip(folder / "zips" / "two.zip")
    (folder / "bad" / "empty.dcm").write_bytes(b"")
    upload(s3, folder, BUCKET, PREFIX)
    return folder


def pixels_sql(
    s3: S3Server, *args: str, home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, "-m", "pixels_sql.cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, **s3.env, "PYTHONWARNINGS": "ignore", **(env or {})},
    )
    assert completed.returncode == 0, failure_text(completed.stderr)
    return completed


def failure_text(stderr: str) -> str:
    """A failed run's stderr for an assertion: a JVM failure's tail is stack frames, so its
    message lines (the causes) come first, then the tail."""
    causes = [line for line in stderr.splitlines() if not line.strip().startswith("at ")]
    return "\n".join(causes[-40:]) + "\n...\n" + stderr[-2000:]


def run_table(spark, home: Path, name: str) -> object:
    """A table written by a ``pixels-sql`` run on ``home``, read from its files."""
    return spark.read.parquet(str(home / "warehouse" / "pixels.db" / name))


def catalog_rows(table, *bases: str) -> object:
    """The path-independent columns of an object_catalog, with ``bases`` (the catalogued
    folder's URIs) cut out of the paths inside ``meta``."""
    from pyspark.sql import functions as F

    meta = F.col("meta").cast("string")
    for base in bases:
        meta = F.replace(meta, F.lit(base), F.lit("<base>"))
    return table.select(
        "relative_path",
        "length",
        "extension",
        meta.alias("meta"),
        "StudyInstanceUID",
        "SOPInstanceUID",
        "Modality",
        "NumberOfFrames",
        "meta_error_reason",
    ).orderBy("relative_path")


def readme_block(heading: str) -> str:
    """The first bash block under a README heading."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(heading) :]
    block = section[section.index("```bash\n") + len("```bash\n") :]
    return block[: block.index("```")]


@pytest.fixture(scope="module")
def s3_run(s3: S3Server, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's object-storage lines, run as written: only the endpoint, the credentials
    and the bucket are ours (no region: the README sets none). Its home is returned."""
    work = tmp_path_factory.mktemp("s3-readme")
    (work / ".venv").symlink_to(ROOT / ".venv")
    block = readme_block("## Files in object storage")
    assert "pixels-sql ingest s3://my-bucket/dicom" in block
    script = (
        block.replace("https://s3.example.org", s3.url)
        .replace("AWS_ACCESS_KEY_ID=…", f"AWS_ACCESS_KEY_ID={s3.env['AWS_ACCESS_KEY_ID']}")
        .replace(
            "AWS_SECRET_ACCESS_KEY=…", f"AWS_SECRET_ACCESS_KEY={s3.env['AWS_SECRET_ACCESS_KEY']}"
        )
        .replace("s3://my-bucket/dicom", f"s3://{BUCKET}/{PREFIX}")
    )
    assert "…" not in script
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    s3.reset()
    completed = subprocess.run(
        ["/bin/bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=work,
        env={**env, "PYTHONWARNINGS": "ignore", "PIXELS_SQL_HOME": str(work / "home")},
    )
    assert completed.returncode == 0, failure_text(completed.stderr)
    assert "ingest: 14 new, 0 changed, 0 deleted" in completed.stdout, completed.stdout
    return work / "home"


def test_list_files_lists_objects_as_it_lists_a_folder(s3: S3Server, tmp_path: Path) -> None:
    client = s3.client()
    client.create_bucket(Bucket="listing")
    for key, body in {
        "top/a.dcm": b"x" * 10,
        "top/B.DCM": b"y" * 11,
        "top/empty.dcm": b"",
        "top/.hidden.dcm": b"h",
        "top/.cache/c.dcm": b"c",
        "top/marker/": b"",
        "top/deep/er/d.dcm": b"d" * 5,
        "top/deep/note.txt": b"t",
        "topping/not-under-top.dcm": b"z",
    }.items():
        client.put_object(Bucket="listing", Key=key, Body=body)

    def listed(path: str, glob: str = "*", recursive: bool = True) -> list[tuple[str, int]]:
        return [(e.path, e.length) for e in storage.list_objects(path, glob, recursive)]

    assert listed("s3://listing/top") == [
        ("s3://listing/top/B.DCM", 11),
        ("s3://listing/top/a.dcm", 10),
        ("s3://listing/top/deep/er/d.dcm", 5),
        ("s3://listing/top/deep/note.txt", 1),
        ("s3://listing/top/empty.dcm", 0),  # zero-byte objects are listed (a failed upload)
    ]
    assert listed("s3://listing/top/", glob="*.{dcm,DCM}", recursive=False) == [
        ("s3://listing/top/B.DCM", 11),
        ("s3://listing/top/a.dcm", 10),
        ("s3://listing/top/empty.dcm", 0),
    ]
    assert listed("s3://listing/top/deep/er/d.dcm") == [("s3://listing/top/deep/er/d.dcm", 5)]
    assert listed("s3a://listing/top/deep/er") == [("s3a://listing/top/deep/er/d.dcm", 5)]
    entry = next(storage.list_objects("s3://listing/top/a.dcm"))
    assert entry.modification_time is not None and entry.modification_time.tzinfo is not None
    with pytest.raises(ValueError, match="path does not exist: s3://listing/nothing"):
        listed("s3://listing/nothing")
    with pytest.raises(ValueError, match="path does not exist"):
        listed("s3://no-such-bucket/x")


def test_a_missing_file_system_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if pixels-sql[gcs] were not installed
    storage._FILESYSTEMS.pop((os.getpid(), "gcs"), None)
    with pytest.raises(storage.StorageUnavailable, match=r"pip install 'pixels-sql\[gcs\]'"):
        storage.filesystem("gs://bucket/a.dcm")
    result = read_result("gs://bucket/a.dcm").decoded()
    # Recorded as unreadable: the next ingest, with the package installed, reads it again.
    assert result.reason == "unreadable" and "pixels-sql[gcs]" in (result.message or "")


def test_pipeline_on_s3_equals_the_local_pipeline(
    spark, s3: S3Server, corpus: Path, s3_run: Path
) -> None:
    run_pipeline(spark, {"path": str(corpus), "database": "s3_reference"})
    # BulkDataURIs name a file by its file:// URI, a zip member's archive by Spark's file: path.
    local = catalog_rows(
        spark.table("s3_reference.object_catalog"), corpus.as_uri(), f"file:{corpus}"
    )
    remote = catalog_rows(run_table(spark, s3_run, "object_catalog"), f"s3://{BUCKET}/{PREFIX}")
    # Named first: chispa's report of a difference is one very wide table.
    local_rows = {row.relative_path: row for row in local.collect()}
    remote_rows = {row.relative_path: row for row in remote.collect()}
    assert len(local_rows) == 14 and remote_rows.keys() == local_rows.keys()
    assert [name for name in local_rows if local_rows[name] != remote_rows[name]] == []
    assert_df_equality(remote, local, ignore_nullable=True)
    # Every good file has its header, the bad ones their reasons, zip members included.
    reasons = {name: row.meta_error_reason for name, row in remote_rows.items()}
    assert reasons["bad/empty.dcm"] == "empty"
    assert reasons["bad/MR_truncated.dcm"] == "truncated"
    assert reasons["zips/two.zip/series/ct.dcm"] is None
    # BulkDataURIs carry the object URI (the pixel data of a file read by byte range).
    ct = remote_rows["ct/CT_small.dcm"].meta
    assert '"BulkDataURI":"<base>/ct/CT_small.dcm?offset=' in ct


def test_thumbnails_from_s3_equal_the_local_ones(spark, s3_run: Path) -> None:
    remote = run_table(spark, s3_run, "object_thumbnails")
    local = spark.table("s3_reference.object_thumbnails")
    prefix = f"s3://{BUCKET}/{PREFIX}/"

    def by_name(frame, cut: str) -> dict[str, bytes | None]:
        return {
            row.path.replace(cut, ""): (row.thumbnail, row.thumbnail_error_reason)
            for row in frame.collect()
        }

    remote_thumbnails = by_name(remote, prefix)
    local_thumbnails = {
        name.replace("file:", "").replace(str(corpus_folder(spark)) + "/", ""): value
        for name, value in by_name(local, "").items()
    }
    assert remote_thumbnails.keys() == local_thumbnails.keys()
    assert remote_thumbnails == local_thumbnails
    assert sum(1 for thumbnail, _reason in remote_thumbnails.values() if thumbnail) >= 6


def corpus_folder(spark) -> str:
    row = spark.sql(
        "SELECT path FROM s3_reference.object_catalog WHERE path LIKE '%/ct/CT_small.dcm'"
    ).first()
    return row.path.removeprefix("file:").removesuffix("/ct/CT_small.dcm")


def test_every_object_read_of_the_run_is_a_range_request(s3: S3Server, s3_run: Path) -> None:
    # The run's requests: listings (no per-object request for names, sizes, times), metadata
    # requests (HEAD) and ranged GETs; never a whole-object GET.
    gets = [
        r
        for r in s3.requests()
        if r["method"] == "GET" and "list-type" not in r["query"] and r["path"] != f"/{BUCKET}"
    ]
    assert gets, "the run read no object"
    assert all(r["range"] and r["range"].startswith("bytes=") for r in gets), gets[:3]
    listings = [r for r in s3.requests() if "list-type" in r["query"]]
    assert 1 <= len(listings) <= 20


@pytest.fixture(scope="module")
def big_objects(s3: S3Server) -> list[str]:
    """Objects of >= 5 MB: a real CT header followed by 5 MB of pixel data."""
    dataset = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")
    dataset.Rows, dataset.Columns = BIG_ROWS, BIG_COLUMNS
    dataset.PixelData = bytes(BIG_PIXEL_BYTES)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    client = s3.client()
    client.create_bucket(Bucket="big")
    paths = []
    for index in range(BIG_OBJECTS):
        client.put_object(Bucket="big", Key=f"ct/{index:03}.dcm", Body=buffer.getvalue())
        paths.append(f"s3://big/ct/{index:03}.dcm")
    return paths


def test_header_reads_fetch_a_bounded_range(s3: S3Server, big_objects: list[str]) -> None:
    s3.reset()
    results = [read_result(path).decoded() for path in big_objects]
    assert all(result.meta and result.reason is None for result in results)
    meta = json.loads(results[0].meta or "{}")
    assert meta["7FE00010"]["BulkDataURI"].startswith(big_objects[0] + "?offset=")
    requests = s3.requests()
    gets = [r for r in requests if r["method"] == "GET"]
    heads = [r for r in requests if r["method"] == "HEAD"]
    # One size request a file, one 64 KiB range from byte 0 for the header, and a small range
    # for what follows the pixel data (CT_small ends with a few elements after it).
    assert len(heads) == len(big_objects)
    by_object: dict[str, list[str]] = {}
    for request in gets:
        by_object.setdefault(request["path"], []).append(request["range"])
    assert len(by_object) == len(big_objects)
    for ranges in by_object.values():
        assert ranges[0] == f"bytes=0-{storage.MIN_FETCH_BYTES - 1}" and len(ranges) <= 2, ranges
    fetched = sum(r["bytes"] for r in gets)
    total = len(big_objects) * (BIG_PIXEL_BYTES + 1000)
    assert fetched <= 0.02 * total


def test_throttled_requests_are_retried_and_every_file_lands(
    spark, s3: S3Server, corpus: Path, s3_run: Path, tmp_path: Path
) -> None:
    s3.reset()
    s3.throttle(every=3)
    try:
        home = tmp_path / "throttled-home"
        pixels_sql(
            s3,
            "run",
            "sql/00_database.sql",
            "sql/10_catalog.sql",
            "sql/20_meta.sql",
            "--param",
            f"path=s3://{BUCKET}/{PREFIX}",
            home=home,
        )
        throttled = [r for r in s3.requests() if r["status"] == 503]
    finally:
        s3.throttle(every=0)
    assert len(throttled) >= 10
    base = f"s3://{BUCKET}/{PREFIX}"
    assert_df_equality(
        catalog_rows(run_table(spark, home, "object_catalog"), base),
        catalog_rows(run_table(spark, s3_run, "object_catalog"), base),
        ignore_nullable=True,
    )


# A session configured the Spark way (S3A settings, no AWS variables in the environment):
# read_files of a bucket, its content column, and a format object storage does not give here.
SESSION_JOB = """
import json, sys
import pixels_sql

url, home, key, secret = sys.argv[1:5]
spark = pixels_sql.session(home, master="local[2]", conf={
    "spark.hadoop.fs.s3a.endpoint": url,
    "spark.hadoop.fs.s3a.access.key": key,
    "spark.hadoop.fs.s3a.secret.key": secret,
    "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
})
row = spark.sql(
    "SELECT count(*) AS files, sum(length(content)) AS bytes,"
    " count_if(try_dicom_meta(path) IS NOT NULL) AS dicom"
    " FROM read_files('s3://%s', recursiveFileLookup => true)" % sys.argv[5]
).first()
dcm = spark.sql(
    "SELECT count(*) AS n FROM read_files('s3://%s', pathGlobFilter => '*.dcm')" % sys.argv[6]
).first()
try:
    spark.sql("SELECT * FROM read_files('s3://%s', format => 'parquet')" % sys.argv[5]).collect()
    error = None
except Exception as exc:
    error = str(exc)
# dbx.pixels' Quick Start on the bucket (pixels_sql.pixels).
from pixels_sql.pixels import Catalog
from pixels_sql.pixels.dicom import *

catalog = Catalog(spark)
catalog_df = catalog.catalog("s3://%s" % sys.argv[5])
meta_df = DicomMetaExtractor(catalog).transform(catalog_df)
thumbnail_df = DicomThumbnailExtractor().transform(meta_df)
catalog.save(thumbnail_df)
loaded = catalog.load()
quick_start = {
    "rows": loaded.count(),
    "with_meta": loaded.where("meta IS NOT NULL").count(),
    "with_thumbnail": loaded.where("thumbnail IS NOT NULL").count(),
    "s3_paths": loaded.where("path LIKE 's3://%%' OR path LIKE 'zip://%%::s3://%%'").count(),
}
print(json.dumps({**row.asDict(), "top_level_dcm": dcm.n, "error": error, **quick_start}))
"""


def test_read_files_and_dbx_pixels_api_on_a_bucket_with_spark_settings(
    s3: S3Server, corpus: Path, tmp_path: Path
) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            SESSION_JOB,
            s3.url,
            str(tmp_path / "home"),
            s3.env["AWS_ACCESS_KEY_ID"],
            s3.env["AWS_SECRET_ACCESS_KEY"],
            f"{BUCKET}/{PREFIX}",
            f"{BUCKET}/{PREFIX}/mr",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    files = [path for path in corpus.rglob("*") if path.is_file()]
    readable = [path for path in files if read_result(str(path)).decoded().meta is not None]
    assert result["files"] == len(files) == 13
    assert result["bytes"] == sum(path.stat().st_size for path in files)
    assert result["dicom"] == len(readable)
    assert result["top_level_dcm"] == len(list((corpus / "mr").glob("*.dcm"))) == 3
    assert "binaryFile format only" in result["error"]
    # The Quick Start over the bucket: every object a row (the zip's two members instead of it).
    assert result["rows"] == result["s3_paths"] == 14
    assert result["with_meta"] == len(readable) + 2  # + the two members
    assert result["with_thumbnail"] >= 6


def test_a_stream_of_a_bucket_says_what_to_run_instead(spark, tmp_path: Path) -> None:
    from pixels_sql.ingest.stream import StreamError, start_stream

    path = f"s3://{BUCKET}/{PREFIX}"
    with pytest.raises(StreamError, match=f"Run `pixels-sql ingest {path}` on a schedule"):
        start_stream(spark, path, str(tmp_path / "checkpoint"), database="s3_stream")
    assert not (tmp_path / "checkpoint").exists()
