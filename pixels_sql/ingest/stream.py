"""Ingest as a stream: Spark Structured Streaming's file source finds new files, and each
micro-batch runs the pipeline's own statements on them (``foreachBatch``).

The file source lists ``path`` on every trigger and hands each new file to one micro-batch; the
checkpoint folder records which files were handed out and which batches finished, so a stopped
or killed stream restarts where it was. A batch replayed after a kill finds its files already
catalogued (the listing compares them with the catalog) and reads nothing twice: every file is
in the catalog exactly once.

What a stream does not see (the file source's rules): files removed or rewritten in place
(a path is handed out once), zero-byte files, and names starting with ``_`` or ``.``. The batch
``ingest`` sees all of those; run it now and then beside a stream to record deletions.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pixels_sql.ingest.batch import ingest_params, pipeline_scripts, run_and_report
from pixels_sql.io import storage
from pixels_sql.pipeline import DEFAULT_DATABASE
from pixels_sql.scripts import Statement, load_scripts
from pixels_sql.tables import prepare, writing

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

# The statement of 10_catalog.sql that lists the folder: a stream defines this view itself.
LISTED_VIEW = "pixels_listed"
CHECKPOINT_RECORD = "pixels-sql.json"
TRIGGERS = ("once", "available-now")
DEFAULT_TRIGGER = "10 seconds"
# The binaryFile source's fixed schema (a stream must be given one); only the first three
# columns are selected, so no file's content is read.
BINARY_FILE_SCHEMA = "path STRING, modificationTime TIMESTAMP, length BIGINT, content BINARY"
_INTERVAL = re.compile(r"\d+(\.\d+)?\s*(ms|milliseconds?|s|seconds?|m|minutes?|h|hours?)")


class StreamError(Exception):
    """A stream that cannot start (bad trigger, a checkpoint of another destination)."""


@dataclass
class StreamReport:
    """What a stream did: its micro-batches' counts, summed."""

    database: str
    batches: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failed: int = 0

    def add(self, counts: dict[str, int], failed: int) -> None:
        self.batches += 1
        for key, value in counts.items():
            self.counts[key] = self.counts.get(key, 0) + value
        self.failed += failed

    def line(self) -> str:
        return (
            f"stream: {self.batches} micro-batches, {self.counts.get('new_files', 0)} new,"
            f" {self.failed} failed ({self.counts.get('zip_members', 0)} zip members read)"
        )


def trigger_options(trigger: str) -> dict[str, Any]:
    """``DataStreamWriter.trigger`` keywords for ``once``, ``available-now`` or an interval."""
    if trigger == "once":
        return {"once": True}
    if trigger == "available-now":
        return {"availableNow": True}
    if _INTERVAL.fullmatch(trigger.strip()):
        return {"processingTime": trigger.strip()}
    raise StreamError(
        f"--trigger must be once, available-now or an interval such as '30 seconds', not"
        f" {trigger!r}"
    )


def batch_statements(
    path: str,
    database: str,
    *,
    thumbnails: bool = True,
    thumbnail_size: int = 256,
    extract_zip: str | None = None,
) -> list[Statement]:
    """The pipeline's statements for one micro-batch: without the folder listing (the batch
    is the listing) and without deletions (a stream sees new files only)."""
    params = ingest_params(path, database, thumbnail_size=thumbnail_size, extract_zip=extract_zip)
    params["deletions"] = "false"
    params.pop("glob")  # the file source filters names (pathGlobFilter)
    if not thumbnails:
        params.pop("thumbnail_size")
    statements = load_scripts(pipeline_scripts(thumbnails), params)
    listing = f"CREATE OR REPLACE TEMPORARY VIEW {LISTED_VIEW} AS"
    kept = [statement for statement in statements if listing not in statement.sql]
    if len(kept) != len(statements) - 1:
        raise AssertionError(f"10_catalog.sql must define {LISTED_VIEW} in one statement")
    return kept


def check_checkpoint(checkpoint: str, database: str, path: str) -> None:
    """One checkpoint per destination: record it, or refuse a checkpoint made for another."""
    folder = Path(checkpoint)
    record = folder / CHECKPOINT_RECORD
    wanted = {"database": database, "path": path}
    if record.exists():
        found = json.loads(record.read_text(encoding="utf-8"))
        if found != wanted:
            raise StreamError(
                f"checkpoint {checkpoint} belongs to the stream of {found.get('path')} into"
                f" database {found.get('database')}: give each destination its own checkpoint"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(wanted), encoding="utf-8")


def check_streamable(spark: SparkSession, path: str) -> None:
    """Spark's file stream source lists through Hadoop: object storage that no Hadoop file
    system of the application reads (s3:// on the pyspark wheel, which has no hadoop-aws)
    cannot be streamed; say what works instead."""
    from pixels_sql.functions import is_connect_client

    if not storage.is_remote(path) or is_connect_client(spark):
        return  # a Spark Connect client cannot ask; the server's stream fails on its own
    jvm = spark._jvm
    conf = spark._jsparkSession.sessionState().newHadoopConf()
    if not jvm.pixelssql.FileListing.hadoopLists(path, conf):
        raise StreamError(
            f"{path}: a stream lists through a Hadoop file system, and this Spark has none for"
            f" {storage.scheme(path)}:// (e.g. hadoop-aws for s3a://). Run `pixels-sql ingest"
            f" {path}` on a schedule instead: each run reads only new and changed objects"
        )


def start_stream(
    spark: SparkSession,
    path: str,
    checkpoint: str,
    database: str = DEFAULT_DATABASE,
    *,
    trigger: str = DEFAULT_TRIGGER,
    thumbnails: bool = True,
    thumbnail_size: int = 256,
    glob: str = "*",
    extract_zip: str | None = None,
    max_files_per_trigger: int | None = None,
    report: StreamReport | None = None,
    log: TextIO | None = None,
) -> StreamingQuery:
    """Start streaming the files that appear under ``path`` into ``database``'s tables; the
    query runs until stopped (or, with ``once``/``available-now``, until it has caught up).
    ``checkpoint`` is the folder recording progress: one per destination."""
    options = trigger_options(trigger)
    check_streamable(spark, path)
    check_checkpoint(checkpoint, database, path)
    statements = batch_statements(
        path,
        database,
        thumbnails=thumbnails,
        thumbnail_size=thumbnail_size,
        extract_zip=extract_zip,
    )
    report = report if report is not None else StreamReport(database)
    spark.sql(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    with writing(spark):  # its removals must not meet another run's files being written
        prepare(spark, database)  # what a killed batch left behind

    def process(batch: DataFrame, batch_id: int) -> None:
        session = batch.sparkSession
        batch.select("path", "modificationTime", "length").selectExpr(
            "*", "CAST(NULL AS STRING) AS reason", "CAST(NULL AS STRING) AS message"
        ).createOrReplaceTempView(LISTED_VIEW)
        outcome = run_and_report(session, statements, database, summarise=False)
        report.add(outcome.counts, outcome.failed)
        if log is not None:
            print(
                f"micro-batch {batch_id}: {outcome.new} new, {outcome.failed} failed,"
                f" {outcome.members} zip members, {outcome.seconds:.1f}s",
                file=log,
                flush=True,
            )

    reader = (
        spark.readStream.format("binaryFile")
        .schema(BINARY_FILE_SCHEMA)
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", glob)
    )
    if max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", str(max_files_per_trigger))
    files = reader.load(path).select("path", "modificationTime", "length")
    return (
        files.writeStream.foreachBatch(process)
        .option("checkpointLocation", checkpoint)
        .queryName(f"pixels-sql ingest {database}")
        .trigger(**options)
        .start()
    )


@contextmanager
def _stop_requests() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set the event instead of killing the process (main thread only)."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: requested.set())
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_stream(
    spark: SparkSession,
    path: str,
    checkpoint: str,
    database: str = DEFAULT_DATABASE,
    *,
    log: TextIO | None = sys.stderr,
    stop_timeout: float = 600.0,
    **options: Any,
) -> StreamReport:
    """:func:`start_stream` and wait: until it ends by itself (``once``, ``available-now``) or
    SIGINT/SIGTERM arrives; then the micro-batch under way finishes before the stream stops
    (at most ``stop_timeout`` seconds; a batch cut short is run again on restart)."""
    report = StreamReport(database)
    with _stop_requests() as requested:
        query = start_stream(spark, path, checkpoint, database, report=report, log=log, **options)
        if log is not None:
            print(f"streaming {path} into {database} (checkpoint {checkpoint})", file=log)
        while query.isActive and not requested.is_set():
            query.awaitTermination(1)
        if query.isActive:
            if log is not None:
                print(
                    "pixels-sql ingest: stopping (the micro-batch under way finishes first)",
                    file=log,
                    flush=True,
                )
            deadline = time.monotonic() + stop_timeout
            while query.status.get("isTriggerActive") and time.monotonic() < deadline:
                time.sleep(0.2)
            query.stop()
            if log is not None:
                print("pixels-sql ingest: stopped", file=log, flush=True)
    exception = query.exception()
    if exception is not None:
        raise StreamError(str(exception).split("JVM stacktrace:", 1)[0].strip())
    return report
