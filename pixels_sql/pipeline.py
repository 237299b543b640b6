"""The ``sql/`` pipeline as one call: its scripts, run with the table upkeep that keeps re-runs
exact, and the run's summary."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixels_sql.config import DEFAULT_DATABASE
from pixels_sql.runner import run_statements
from pixels_sql.scripts import load_scripts
from pixels_sql.tables import PIPELINE_TABLES, exact_tables, writing

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The pipeline's scripts: sql/ of the source checkout, or the copy a wheel carries in the package.
_PACKAGED_PIPELINE = Path(__file__).resolve().parent / "sql"
PIPELINE_DIR = (
    _PACKAGED_PIPELINE
    if _PACKAGED_PIPELINE.is_dir()
    else Path(__file__).resolve().parent.parent / "sql"
)
VIEWS_SCRIPT = "90_views.sql"


def run_pipeline(
    spark: SparkSession,
    params: Mapping[str, str],
    scripts: Sequence[str | Path] = (PIPELINE_DIR,),
) -> str:
    """Run the pipeline (``path`` required; ``database``, ``glob``, ``thumbnail_size``) in
    ``spark`` — any session with the extension and ``pixels_sql.register`` — and return the
    summary. What killed runs left is removed first, rows replaced by a re-read file after
    (``tables.exact_tables``), as ``pixels-sql run`` does.
    """
    statements = load_scripts(scripts, params)
    database = params.get("database", DEFAULT_DATABASE)
    with exact_tables(spark, database):
        run_statements(spark, statements)
    return summary(spark, database)


def create_views(spark: SparkSession, database: str, **lock: Any) -> None:
    """Create the pipeline's views in ``database`` (90_views.sql, holding the writer lock;
    ``lock``: its options), for a catalog written before a view existed: readers such as
    the DICOMweb index read the views, whose rules live there only."""
    statements = load_scripts([PIPELINE_DIR / VIEWS_SCRIPT], {})
    with writing(spark, **lock):
        current = spark.catalog.currentDatabase()
        spark.catalog.setCurrentDatabase(database)
        try:
            run_statements(spark, statements)
        finally:
            spark.catalog.setCurrentDatabase(current)


def pipeline_views() -> list[str]:
    """The persistent views the pipeline's scripts make, in name order."""
    made = re.compile(r"^CREATE OR REPLACE VIEW (\w+)", re.MULTILINE)
    return sorted(
        name
        for script in sorted(PIPELINE_DIR.glob("*.sql"))
        for name in made.findall(script.read_text())
    )


def _made_here(spark: SparkSession, database: str) -> str:
    """'tables …; views …': what of the pipeline's own ``database`` holds (catalog lookups,
    no Spark job)."""
    present = {row.tableName for row in spark.sql(f"SHOW TABLES IN `{database}`").collect()}
    tables = [name for name in PIPELINE_TABLES if name in present]
    views = [name for name in pipeline_views() if name in present]
    return f"tables {', '.join(tables)}; views {', '.join(views)}"


def summary(spark: SparkSession, database: str) -> str:
    """Files, instances, series, studies, errors of every stage by reason, and where the
    tables live."""
    return summary_and_failures(spark, database)[0]


def failed_files(spark: SparkSession, database: str, since: str) -> int:
    """The live files catalogued at ``since`` or later that have no header (as
    :func:`summary_and_failures` counts them), in a query of their own."""
    return spark.sql(
        f"SELECT count_if({_failed_since(since)}) FROM `{database}`.object_catalog"
    ).first()[0]


def _failed_since(since: str) -> str:
    # ``since``: Spark's own text of a timestamp, read back in the session's time zone.
    return (
        "deleted_at IS NULL AND meta_error_reason IS NOT NULL"
        f" AND ingested_at >= TIMESTAMP'{since}'"
    )


def summary_and_failures(
    spark: SparkSession, database: str, since: str | None = None
) -> tuple[str, int]:
    """:func:`summary`, and from the same query the live files catalogued at ``since`` (a
    timestamp as Spark writes it, in the session's time zone) or later that have no header (a
    run's failed files; 0 without ``since``)."""
    catalog = f"`{database}`.object_catalog"
    if not spark.catalog.tableExists(f"{database}.object_catalog"):
        return f"no object_catalog in database {database}", 0
    failed = f"count_if({_failed_since(since)})" if since is not None else "0"
    # One query (each Spark job costs up to a second on a small machine, and every run prints
    # this): the catalog's counts, joined to the errors by stage and reason with the thumbnails
    # counted on the way. Deleted files (deleted_at set) are counted apart; everything else is
    # the live catalog. An instance is a row with a header: meta is NULL exactly when
    # meta_error_reason is set (20_meta.sql), and the small column is read instead of the
    # VARIANT (a million headers in 4,096-row batches ran the 1 GiB local heap out of memory
    # here). Likewise thumbnails by their reason, not their bytes.
    live = "deleted_at IS NULL"
    totals = f"""SELECT count_if({live}) AS files,
                   count_if({live} AND meta_error_reason IS NULL) AS instances,
                   count(DISTINCT CASE WHEN {live} THEN SeriesInstanceUID END) AS series,
                   count(DISTINCT CASE WHEN {live} THEN StudyInstanceUID END) AS studies,
                   count_if(deleted_at IS NOT NULL) AS deleted,
                   {failed} AS failed
            FROM {catalog}"""
    rows = (
        "SELECT CASE WHEN length IS NULL THEN 'catalog' ELSE 'meta' END AS stage,"
        f" meta_error_reason AS reason, false AS rendered FROM {catalog} WHERE {live}"
    )
    has_thumbnails = spark.catalog.tableExists(f"{database}.object_thumbnails")
    if has_thumbnails:
        table = f"`{database}`.object_thumbnails"
        rows += (
            " UNION ALL SELECT 'thumbnail', thumbnail_error_reason,"
            " thumbnail_error_reason IS NULL"
            f" FROM {table} WHERE {live}"
        )
    joined = spark.sql(
        f"""SELECT t.*, g.stage, g.reason, g.stage_files, g.rendered
            FROM ({totals}) AS t
            LEFT JOIN (
              SELECT stage, reason, count(*) AS stage_files, count_if(rendered) AS rendered
              FROM ({rows}) GROUP BY 1, 2
            ) AS g ON true"""
    ).collect()
    counts = joined[0]
    deleted = counts.deleted
    grouped = [row for row in joined if row.stage is not None]
    thumbnails = sum(row.rendered for row in grouped) if has_thumbnails else None
    # no_pixel_data is not an error: reports and plans have no image to render.
    reasons = sorted(
        (
            row
            for row in grouped
            if row.reason is not None
            and not (row.stage == "thumbnail" and row.reason == "no_pixel_data")
        ),
        key=lambda row: (row.stage, -row.stage_files, row.reason),
    )
    stages: dict[str, list[str]] = {}
    for row in reasons:
        stages.setdefault(row.stage, []).append(f"{row.reason} {row.stage_files}")
    by_stage = "; ".join(f"{stage}: {', '.join(parts)}" for stage, parts in stages.items())
    location = spark.sql(f"DESCRIBE TABLE EXTENDED {catalog}").where("col_name = 'Location'")
    where = location.first()
    lines = [
        f"files: {counts.files}",
        f"instances: {counts.instances}",
        f"series: {counts.series}",
        f"studies: {counts.studies}",
        *([f"deleted: {deleted}"] if deleted else []),
        *([f"thumbnails: {thumbnails}"] if thumbnails is not None else []),
        f"errors: {sum(row.stage_files for row in reasons)}"
        + (f" ({by_stage})" if by_stage else ""),
        f"database: {database} ({_made_here(spark, database)})",
        f"table location: {where.data_type if where else '?'}",
        f"warehouse: {spark.conf.get('spark.sql.warehouse.dir')}",
    ]
    return "\n".join(lines), counts.failed
