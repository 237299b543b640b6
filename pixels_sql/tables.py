"""Keep the pipeline's tables exact across kills and re-runs.

Each run of a pipeline step appends its rows to ``object_catalog`` / ``object_thumbnails`` as
one new partition (``ingest_run``). Spark writes the partition's files first and registers the
partition in the metastore last, and readers see registered partitions only: a run's rows
appear all at once or not at all. What a killed run leaves behind is invisible but takes disk,
and Spark's output committer would publish a killed job's finished task files with the next
job's (both use ``_temporary/0``): :func:`prepare` removes all of it before a run.

A file read again (a failed file that changed) gets its new row in the new partition; the older
row — in a small partition of failed rows (``<run>-failed``) — is then dropped by
:func:`supersede`, which rewrites each partition holding such rows into a
new folder and points the partition at it — one metastore update, so again all or nothing. A
kill between the two leaves the older row visible until the next run's :func:`supersede`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixels_sql.dicom.attributes import CATALOG_COLUMNS
from pixels_sql.functions import is_connect_client
from pixels_sql.home import catalog_writer
from pixels_sql.scripts import escape_string

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PIPELINE_TABLES = ("object_catalog", "object_thumbnails", "object_header")
# The working tables of 10_catalog.sql and 50_header.sql: one each per run, named by their
# session variables pixels_listing_table (pixels_listing before run-private names) and
# pixels_header_todo_table. Tables left by killed runs are dropped before the next run, which
# holds the writer lock, so none is another's.
_WORKING_TABLE = re.compile(r"pixels_listing(_[0-9a-f]{32})?|pixels_header_todo_[0-9a-f]{32}")
PARTITION_COLUMN = "ingest_run"
# Folder (inside a table's location) for rewritten partitions.
REWRITTEN = "rewritten"
_RUN_VALUE = re.compile(r"[0-9]{17}(-failed|-deleted)?")


class TableLayoutError(Exception):
    """A pipeline table made by an older version: not partitioned by ingest_run."""


@contextlib.contextmanager
def exact_tables(spark: SparkSession, database: str) -> Iterator[None]:
    """Around a pipeline run: the catalog's writer lock (:func:`writing`) held throughout,
    :func:`prepare` before, :func:`supersede` after it succeeded."""
    with writing(spark):
        prepare(spark, database)
        yield
        supersede(spark, database)


def catalog_home(spark: SparkSession) -> Path | None:
    """The home folder of ``spark``'s catalog (its warehouse is ``<home>/warehouse``, as
    ``pixels_sql.session()`` and ``pixels-sql serve`` set it), or None for a warehouse that
    is not a local folder (a cluster's: no file lock can span its writers)."""
    warehouse = spark.conf.get("spark.sql.warehouse.dir") or ""
    if warehouse.startswith("file:"):
        warehouse = urllib.parse.urlparse(warehouse).path
    elif "://" in warehouse or not warehouse.startswith("/"):
        return None
    return Path(warehouse).parent


@contextlib.contextmanager
def writing(spark: SparkSession, **lock: Any) -> Iterator[None]:
    """Hold the writer lock of ``spark``'s home (``home.catalog_writer``; ``lock``: its
    options) for the block: a run that writes the pipeline's tables waits for the one under
    way. Everything that writes them comes through here: :func:`exact_tables` and a stream's
    :func:`prepare`."""
    home = catalog_home(spark)
    if home is None:
        yield
        return
    with catalog_writer(home, **lock):
        yield


def prepare(spark: SparkSession, database: str) -> list[str]:
    """Remove what killed runs left in ``database``'s pipeline tables; the paths removed."""
    if not spark.catalog.databaseExists(database):
        return []
    removed: list[str] = []
    for table in PIPELINE_TABLES:
        if not spark.catalog.tableExists(f"{database}.{table}"):
            continue
        metadata = _table_info(spark, database, table)
        if metadata.partition_columns != [PARTITION_COLUMN]:
            raise TableLayoutError(
                f"{database}.{table} was made by an earlier pixels-sql (not partitioned by"
                f" {PARTITION_COLUMN}): drop it (DROP TABLE {database}.{table}) and run again"
            )
        _add_missing_columns(spark, database, table)
        locations = _partition_locations(spark, database, table)
        referenced = {_normal(location) for location in locations.values()}
        removed += _remove_unreferenced(spark, metadata.location, referenced)
    removed += _remove_working_tables(spark, database)
    return removed


def _remove_working_tables(spark: SparkSession, database: str) -> list[str]:
    """Drop the working tables of killed runs, and the folders of those killed before their
    CTAS registered the table. Only under the writer lock: then no other run is under way."""
    removed = []
    tables = spark.sql(
        f"SHOW TABLES IN `{database}` LIKE 'pixels_listing*|pixels_header_todo*'"
    ).collect()
    for row in tables:
        if not row.isTemporary and _WORKING_TABLE.fullmatch(row.tableName):
            spark.sql(f"DROP TABLE IF EXISTS `{database}`.`{row.tableName}`")
            removed.append(f"{database}.{row.tableName}")
    root = _database_location(spark, database)
    files = _files(spark)
    if files.exists(root):
        for entry, _is_dir in files.list(root):
            if _WORKING_TABLE.fullmatch(entry.rstrip("/").rsplit("/", 1)[-1]):
                files.delete(entry)
                removed.append(_normal(entry))
    return removed


# Columns added to the pipeline's tables after their first release: a table made before gets
# them (NULL in its older rows) when a run starts.
ADDED_COLUMNS = {
    "object_catalog": {
        column.name: column.sql_type
        for column in CATALOG_COLUMNS
        if column.name in ("deleted_at", "meta_json_version")
    },
    "object_thumbnails": {"deleted_at": "TIMESTAMP"},
    # Its attribute columns come and go with the headers (sql/50_header.sql adds them).
    "object_header": {},
}


def _add_missing_columns(spark: SparkSession, database: str, table: str) -> None:
    name = f"`{database}`.`{table}`"
    present = {field.name for field in spark.table(name).schema}
    missing = [
        f"`{column}` {kind}"
        for column, kind in ADDED_COLUMNS[table].items()
        if column not in present
    ]
    if missing:
        spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({', '.join(missing)})")


def supersede(spark: SparkSession, database: str) -> int:
    """Drop every row of a path that has a newer row (from a later run); the rows dropped."""
    tables = [t for t in PIPELINE_TABLES if spark.catalog.tableExists(f"{database}.{t}")]
    if not tables:
        return 0
    # One query for every table (a Spark job costs up to a second on a small machine, and
    # every run ends here): each table's partitions holding rows a later run superseded.
    rows = " UNION ALL ".join(
        f"SELECT '{table}' AS pipeline_table, path, {PARTITION_COLUMN} AS run"
        f" FROM `{database}`.`{table}`"
        for table in tables
    )
    stale = spark.sql(
        f"""SELECT pipeline_table, run, count_if(run < newest) AS stale, count(*) AS total
            FROM (
              SELECT pipeline_table, path, run,
                     max(run) OVER (PARTITION BY pipeline_table, path) AS newest
              FROM ({rows}))
            GROUP BY 1, 2 HAVING stale > 0"""
    ).collect()
    dropped = 0
    for table in tables:
        runs = [row for row in stale if row.pipeline_table == table]
        if not runs:
            continue
        metadata = _table_info(spark, database, table)
        locations = _partition_locations(spark, database, table)
        for row in runs:
            whole = row.stale == row.total
            _rewrite_without_older_rows(spark, database, table, row.run, metadata, whole)
            _delete(spark, locations[row.run])
            dropped += row.stale
        spark.sql(f"REFRESH TABLE `{database}`.`{table}`")
    return dropped


def _rewrite_without_older_rows(
    spark: SparkSession, database: str, table: str, run: str, metadata: TableInfo, whole: bool
) -> None:
    """Point partition ``run`` at a copy without its superseded rows (or drop it when they are
    all of it, ``whole``). The caller deletes the old folder."""
    if not _RUN_VALUE.fullmatch(run):
        raise ValueError(f"unexpected {PARTITION_COLUMN} value {run!r} in {database}.{table}")
    name = f"`{database}`.`{table}`"
    columns = ", ".join(
        f"`{field.name}`" for field in spark.table(name).schema if field.name != PARTITION_COLUMN
    )
    keep = (
        f"FROM {name} AS t WHERE {PARTITION_COLUMN} = '{run}' AND NOT EXISTS"
        f" (SELECT 1 FROM {name} AS n WHERE n.path = t.path AND n.{PARTITION_COLUMN} > '{run}')"
    )
    spec = f"PARTITION ({PARTITION_COLUMN} = '{run}')"
    if whole:
        spark.sql(f"ALTER TABLE {name} DROP IF EXISTS {spec}")
    else:
        target = f"{metadata.location.rstrip('/')}/{REWRITTEN}/{run}-{time.time_ns()}"
        spark.sql(
            f"INSERT OVERWRITE DIRECTORY '{escape_string(target)}'"
            f" USING {metadata.provider} SELECT {columns} {keep}"
        )
        spark.sql(f"ALTER TABLE {name} {spec} SET LOCATION '{escape_string(target)}'")


@dataclass(frozen=True)
class TableInfo:
    location: str
    provider: str
    partition_columns: list[str]


def _table_info(spark: SparkSession, database: str, table: str) -> TableInfo:
    """Location, provider and partition columns, read with SQL (also over Spark Connect)."""
    details = {
        row.col_name: row.data_type
        for row in spark.sql(f"DESCRIBE TABLE EXTENDED `{database}`.`{table}`").collect()
    }
    partitions = [
        column.name
        for column in spark.catalog.listColumns(f"`{database}`.`{table}`")
        if column.isPartition
    ]
    return TableInfo(details["Location"], details.get("Provider", "parquet"), partitions)


def _partition_locations(spark: SparkSession, database: str, table: str) -> dict[str, str]:
    """``{ingest_run: location}`` of the table's registered partitions."""
    if is_connect_client(spark):
        return _partition_locations_sql(spark, database, table)
    external = spark._jsparkSession.sharedState().externalCatalog()
    partitions = external.listPartitions(database, table, spark._jvm.scala.Option.empty())
    locations = {}
    iterator = partitions.iterator()
    while iterator.hasNext():
        partition = iterator.next()
        locations[str(partition.spec().apply(PARTITION_COLUMN))] = str(partition.location())
    return locations


def _partition_locations_sql(spark: SparkSession, database: str, table: str) -> dict[str, str]:
    # A Spark Connect client has no catalog API for partition locations: one DESCRIBE each.
    name = f"`{database}`.`{table}`"
    locations = {}
    for row in spark.sql(f"SHOW PARTITIONS {name}").collect():
        run = row[0].split("=", 1)[1]
        if not _RUN_VALUE.fullmatch(run):
            raise ValueError(f"unexpected {PARTITION_COLUMN} value {run!r} in {name}")
        described = spark.sql(
            f"DESCRIBE TABLE EXTENDED {name} PARTITION ({PARTITION_COLUMN} = '{run}')"
        ).collect()
        locations[run] = next(r.data_type for r in described if r.col_name == "Location")
    return locations


def _database_location(spark: SparkSession, database: str) -> str:
    rows = spark.sql(f"DESCRIBE DATABASE EXTENDED `{database}`").collect()
    return next(row.info_value for row in rows if row.info_name == "Location")


def _normal(location: str) -> str:
    return location.rstrip("/").replace("file:///", "file:/")


def _remove_unreferenced(spark: SparkSession, root: str, referenced: set[str]) -> list[str]:
    """Delete entries of a table folder that no registered partition uses (and no ancestor of
    one): leftovers of killed runs, ``_temporary`` and ``.spark-staging-*`` folders."""
    files = _files(spark)
    if not files.exists(root):
        return []
    removed = []
    pending = [root]
    while pending:
        folder = pending.pop()
        for entry, is_dir in files.list(folder):
            child = _normal(entry)
            if child in referenced:
                continue
            if is_dir and any(ref.startswith(child + "/") for ref in referenced):
                pending.append(entry)  # holds a partition deeper down
                continue
            files.delete(entry)
            removed.append(child)
    return removed


def _delete(spark: SparkSession, location: str) -> bool:
    files = _files(spark)
    return files.exists(location) and files.delete(location)


class _HadoopFiles:
    """Any file system the Spark application has (local, HDFS, ...), through its JVM."""

    def __init__(self, spark: SparkSession) -> None:
        self._spark = spark

    def _resolve(self, location: str) -> tuple[Any, Any]:
        path = self._spark._jvm.org.apache.hadoop.fs.Path(location)
        return path, path.getFileSystem(self._spark._jsc.hadoopConfiguration())

    def exists(self, location: str) -> bool:
        path, fs = self._resolve(location)
        return bool(fs.exists(path))

    def list(self, location: str) -> list[tuple[str, bool]]:
        path, fs = self._resolve(location)
        return [(str(s.getPath()), bool(s.isDirectory())) for s in fs.listStatus(path)]

    def delete(self, location: str) -> bool:
        path, fs = self._resolve(location)
        return bool(fs.delete(path, True))


class _LocalFiles:
    """The local file system, for a Spark Connect client of ``pixels-sql serve`` (same machine,
    same home): it has no JVM to reach Hadoop's file systems through."""

    @staticmethod
    def _path(location: str) -> Path:
        if location.startswith("file:"):
            return Path(urllib.parse.urlparse(location).path)
        if "://" in location:
            raise ValueError(f"{location}: only local tables can be kept exact over Spark Connect")
        return Path(location)

    def exists(self, location: str) -> bool:
        return os.path.lexists(self._path(location))

    def list(self, location: str) -> list[tuple[str, bool]]:
        folder = self._path(location)
        return [
            (f"file:{child}", child.is_dir() and not child.is_symlink())
            for child in sorted(folder.iterdir())
        ]

    def delete(self, location: str) -> bool:
        path = self._path(location)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        return True


def _files(spark: SparkSession) -> _HadoopFiles | _LocalFiles:
    return _LocalFiles() if is_connect_client(spark) else _HadoopFiles(spark)
