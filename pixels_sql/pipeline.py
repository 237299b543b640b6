"""The ``sql/`` pipeline as one call: its scripts, run with the table upkeep that keeps re-runs
exact, and the run's summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pixels_sql.scripts import keep_values_as_written, load_scripts
from pixels_sql.tables import exact_tables

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The pipeline's scripts: sql/ of the source checkout, or the copy a wheel carries in the package.
_PACKAGED_PIPELINE = Path(__file__).resolve().parent / "sql"
PIPELINE_DIR = (
    _PACKAGED_PIPELINE
    if _PACKAGED_PIPELINE.is_dir()
    else Path(__file__).resolve().parent.parent / "sql"
)
DEFAULT_DATABASE = "pixels"


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
    keep_values_as_written(spark)
    with exact_tables(spark, database):
        for statement in statements:
            spark.sql(statement.sql)
    return summary(spark, database)


def summary(spark: SparkSession, database: str) -> str:
    """Files, instances, series, studies, errors of every stage by reason, and where the
    tables live."""
    catalog = f"`{database}`.object_catalog"
    if not spark.catalog.tableExists(f"{database}.object_catalog"):
        return f"no object_catalog in database {database}"
    # Deleted files (deleted_at set) are counted apart; everything else is the live catalog.
    counts = spark.sql(
        f"""SELECT count(*) AS files,
                   count(meta) AS instances,
                   count(DISTINCT SeriesInstanceUID) AS series,
                   count(DISTINCT StudyInstanceUID) AS studies
            FROM {catalog} WHERE deleted_at IS NULL"""
    ).first()
    deleted = spark.sql(f"SELECT count(*) FROM {catalog} WHERE deleted_at IS NOT NULL").first()[0]
    errors = (
        "SELECT CASE WHEN length IS NULL THEN 'catalog' ELSE 'meta' END AS stage,"
        f" meta_error_reason AS reason FROM {catalog} WHERE deleted_at IS NULL"
    )
    thumbnails = None
    if spark.catalog.tableExists(f"{database}.object_thumbnails"):
        table = f"`{database}`.object_thumbnails"
        thumbnails = spark.sql(
            f"SELECT count(thumbnail) FROM {table} WHERE deleted_at IS NULL"
        ).first()[0]
        # no_pixel_data is not an error: reports and plans have no image to render.
        errors += (
            f" UNION ALL SELECT 'thumbnail', thumbnail_error_reason FROM {table}"
            " WHERE thumbnail_error_reason != 'no_pixel_data' AND deleted_at IS NULL"
        )
    reasons = spark.sql(
        f"""SELECT stage, reason, count(*) AS files FROM ({errors})
            WHERE reason IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2"""
    ).collect()
    stages: dict[str, list[str]] = {}
    for row in reasons:
        stages.setdefault(row.stage, []).append(f"{row.reason} {row.files}")
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
        f"errors: {sum(row.files for row in reasons)}" + (f" ({by_stage})" if by_stage else ""),
        f"database: {database} (tables object_catalog, object_thumbnails; views object_errors,"
        " series_catalog, study_catalog)",
        f"table location: {where.data_type if where else '?'}",
        f"warehouse: {spark.conf.get('spark.sql.warehouse.dir')}",
    ]
    return "\n".join(lines)
