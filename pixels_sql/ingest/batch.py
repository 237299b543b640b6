"""One incremental run of the pipeline over a folder: new, changed and deleted files.

The work is the ``sql/`` scripts (the same ``pixels-sql run sql`` runs); this module picks them,
runs them with the table upkeep that keeps re-runs exact (tables.py), reads the counts the
scripts select on the way (files to read by kind, deletions) and reports them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pixels_sql.pipeline import (
    DEFAULT_DATABASE,
    PIPELINE_DIR,
    failed_files,
    summary_and_failures,
)
from pixels_sql.runner import run_statements
from pixels_sql.scripts import Statement, load_scripts, script_files
from pixels_sql.tables import exact_tables

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from pixels_sql.progress import Progress

THUMBNAILS_SCRIPT = "40_thumbnails.sql"
# Columns of the scripts' SELECT statements that the report collects.
COUNTED = (
    "files_to_read",
    "images_to_render",
    "new_files",
    "changed_files",
    "retried_files",
    "reread_files",
    "zip_members",
    "deleted_files",
    "deleted_thumbnails",
)


def _count(column: str) -> property:
    """A report attribute: the count the scripts selected as ``column`` (0 when none did)."""
    return property(lambda report: report.counts.get(column, 0))


@dataclass
class IngestReport:
    """What one run did. ``failed``: files read in this run whose header could not be read."""

    database: str
    counts: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    seconds: float = 0.0
    tables: str = ""  # the catalog's summary after the run (pipeline.summary)

    new = _count("new_files")
    changed = _count("changed_files")
    retried = _count("retried_files")
    reread = _count("reread_files")
    deleted = _count("deleted_files")
    members = _count("zip_members")

    def line(self) -> str:
        """One line: what changed in this run."""
        # Rows of an older dicom_meta JSON version read again (once, after an upgrade).
        reread = f" {self.reread} re-read (newer dicom_meta)," if self.reread else ""
        return (
            f"ingest: {self.new} new, {self.changed} changed,{reread} {self.deleted} deleted,"
            f" {self.failed} failed ({self.retried} retried; {self.members} zip members read)"
            f" in {self.seconds:.1f}s"
        )


def pipeline_scripts(thumbnails: bool = True) -> list[Path]:
    """The pipeline's scripts in order, without the thumbnail step when ``thumbnails`` is off."""
    files = script_files([PIPELINE_DIR])
    return [path for path in files if thumbnails or path.name != THUMBNAILS_SCRIPT]


def ingest_params(
    path: str,
    database: str = DEFAULT_DATABASE,
    *,
    glob: str = "*",
    thumbnail_size: int = 256,
    extract_zip: str | None = None,
    viewer_url: str | None = None,
) -> dict[str, str]:
    params = {
        "path": path,
        "database": database,
        "glob": glob,
        "thumbnail_size": str(thumbnail_size),
    }
    if extract_zip:
        params["extract_zip"] = extract_zip
    if viewer_url:
        params["viewer_url"] = viewer_url
    return params


def ingest(
    spark: SparkSession,
    path: str,
    database: str = DEFAULT_DATABASE,
    *,
    thumbnails: bool = True,
    thumbnail_size: int = 256,
    glob: str = "*",
    extract_zip: str | None = None,
    progress: Progress | None = None,
    log: TextIO | None = None,
    viewer_url: str | None = None,
) -> IngestReport:
    """Bring ``database``'s tables up to date with the folder at ``path`` (a local folder or a
    URI Spark can list): read new and changed files, mark deleted ones, render thumbnails
    (unless ``thumbnails`` is False), refresh the views. Zip archives are read member by member
    in place, or with ``extract_zip`` (a folder) written there and the files catalogued.
    ``viewer_url``: a pixels-sql serve's address, for the views' viewer_url columns.
    ``spark`` is any session with the extension and the functions (``pixels_sql.session()``,
    ``pixels_sql.connect()``)."""
    params = ingest_params(
        path,
        database,
        glob=glob,
        thumbnail_size=thumbnail_size,
        extract_zip=extract_zip,
        viewer_url=viewer_url,
    )
    if not thumbnails:
        params.pop("thumbnail_size")
    statements = load_scripts(pipeline_scripts(thumbnails), params)
    return run_and_report(spark, statements, database, progress=progress, log=log)


def run_and_report(
    spark: SparkSession,
    statements: list[Statement],
    database: str,
    *,
    progress: Progress | None = None,
    log: TextIO | None = None,
    on_row: Callable[[Statement, Mapping[str, object]], None] | None = None,
    summarise: bool = True,
) -> IngestReport:
    """Run pipeline statements with the table upkeep; collect the counts they select (and the
    catalog's summary after them, unless ``summarise`` is off)."""
    report = IngestReport(database)
    started = time.monotonic()

    def count(statement: Statement, columns: list[str], rows: list) -> str | None:
        if not rows or not set(columns) & set(COUNTED):
            return None
        row = dict(zip(columns, rows[0], strict=True))
        report.counts.update({key: int(value or 0) for key, value in row.items()})
        if on_row is not None:
            on_row(statement, row)
        return ", ".join(f"{key} {value}" for key, value in row.items())

    # As Spark's text, so that TIMESTAMP'<since>' reads back in the session's time zone (a
    # datetime comes to Python in the process's local zone).
    since = spark.sql("SELECT CAST(current_timestamp() AS STRING) AS now").first()[0]
    with exact_tables(spark, database):
        run_statements(spark, statements, on_rows=count, progress=progress, log=log)
    report.seconds = time.monotonic() - started  # the run's, without the summary
    # No file read (the listing counted none): no row of this run can have failed.
    read = report.counts.get("files_to_read") != 0
    if summarise:
        # The failed files are counted by the summary's query (a Spark job fewer).
        report.tables, report.failed = summary_and_failures(
            spark, database, since if read else None
        )
    elif read:
        report.failed = failed_files(spark, database, since)
    return report


def print_report(report: IngestReport, out: TextIO | None = None) -> None:
    print(report.line(), file=out)
    print(report.tables, file=out)
