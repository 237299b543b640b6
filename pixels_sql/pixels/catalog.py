"""dbx.pixels' ``Catalog`` on pixels-sql: list a folder, save it as the pipeline's tables.

``catalog(path)`` lists files with the ``list_files`` table function (zip archives expanded
into their members with ``zip_members``, or extracted with ``zip_extract``); ``save(df)`` runs
the pipeline's own statements (``sql/``, through ``pixels_sql.ingest``) over the files of
``df``, so the table it writes is ``object_catalog`` exactly as ``pixels-sql ingest`` writes it
— incremental, every file a row, thumbnails in ``object_thumbnails`` — and ``serve``,
DICOMweb, the views and dbt all see it. With ``streaming=True`` the save is the stream ingest
(``pixels_sql.ingest.stream``).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from pixels_sql.dicom.attributes import CATALOG_COLUMN_NAMES
from pixels_sql.ingest.batch import IngestReport, run_and_report
from pixels_sql.ingest.stream import (
    BINARY_FILE_SCHEMA,
    LISTED_VIEW,
    StreamError,
    StreamReport,
    batch_statements,
    start_stream,
)
from pixels_sql.io.paths import to_local_path
from pixels_sql.pipeline import DEFAULT_DATABASE
from pixels_sql.pixels.dicom.extractors import LISTING_MESSAGE, LISTING_REASON, PNG_ANNOTATION
from pixels_sql.pixels.transformers import (
    METADATA_KEY,
    STREAMS,
    UnsupportedError,
    archive_of,
    path_columns,
    strip_folder,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# dbx.pixels' defaults (Unity Catalog names). On open-source Spark there is no `main` catalog:
# the default table is pixels-sql's own (database `pixels`), and volumes are folders.
DBX_DEFAULT_TABLE = "main.pixels_solacc.object_catalog"
DBX_DEFAULT_VOLUME = "main.pixels_solacc.pixels_volume"
TABLE = "object_catalog"
SESSION_CATALOG = "spark_catalog"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Columns a DataFrame may carry into save(): object_catalog's (the attribute registry's), the
# transformers' and the listing's, and dbx.pixels' own extras.
KNOWN_COLUMNS = frozenset(
    {
        *CATALOG_COLUMN_NAMES,
        "thumbnail",
        "original_path",
        LISTING_REASON,
        LISTING_MESSAGE,
        "thumbnail_error_reason",
        "thumbnail_error_message",
        # dbx.pixels adds these; pixels-sql has no use for them.
        "is_anon",
        "file_type",
        "tags",
        "_corrupt_record",
    }
)


@dataclass(frozen=True)
class CatalogSettings:
    """What ``catalog()`` was asked, kept on the ``path`` column for ``save()``."""

    path: str
    pattern: str = "*"
    recurse: bool = True
    streaming: bool = False
    extract_zip: str | None = None
    checkpoint_base: str | None = None
    trigger: str = "available-now"
    max_files_per_trigger: int | None = None


def database_of(spark: SparkSession, table: str) -> str:
    """The database whose ``object_catalog`` a dbx.pixels table name means.

    dbx.pixels' default ``main.pixels_solacc.object_catalog`` is pixels-sql's own table,
    ``pixels.object_catalog``; ``<database>.object_catalog`` and
    ``spark_catalog.<database>.object_catalog`` name a database of the session catalog, a bare
    ``object_catalog`` the current database. The pipeline writes ``object_catalog`` and
    ``object_thumbnails`` side by side, so the table's own name must be ``object_catalog``.

    >>> database_of(spark, "main.pixels_solacc.object_catalog")
    'pixels'
    >>> database_of(spark, "radiology.object_catalog")
    'radiology'
    >>> database_of(spark, "main.radiology.object_catalog")
    Traceback (most recent call last):
    ...
    pixels_sql.pixels.transformers.UnsupportedError: table 'main.radiology.object_catalog': ...
    """
    if table == DBX_DEFAULT_TABLE:
        return DEFAULT_DATABASE
    parts = [part.strip("`") for part in table.split(".")]
    if len(parts) == 3:
        catalog, database, name = parts
        if catalog.lower() != SESSION_CATALOG:
            raise UnsupportedError(
                f"table {table!r}: pixels-sql writes to the session catalog ({SESSION_CATALOG}),"
                f" there is no Unity Catalog {catalog!r} here: name it"
                f" '{database}.{TABLE}' (the dbx.pixels default {DBX_DEFAULT_TABLE} is"
                f" pixels-sql's own {DEFAULT_DATABASE}.{TABLE})"
            )
    elif len(parts) == 2:
        database, name = parts
    elif len(parts) == 1:
        database, name = spark.catalog.currentDatabase(), parts[0]
    else:
        raise ValueError(f"table {table!r}: expected [catalog.]database.{TABLE}")
    if name != TABLE:
        raise UnsupportedError(
            f"table {table!r}: the pipeline's table is always named {TABLE} (with"
            f" object_thumbnails and the views beside it in its database): use"
            f" table='{database}.{TABLE}', one database per catalog"
        )
    if not _IDENTIFIER.fullmatch(database):
        raise ValueError(f"table {table!r}: {database!r} is not a plain database name")
    return database


def home_folder(spark: SparkSession) -> str:
    """The folder holding the session's warehouse: the pixels-sql home (``--home``).

    >>> os.path.isdir(os.path.join(home_folder(spark), "warehouse"))
    True
    """
    warehouse = spark.conf.get("spark.sql.warehouse.dir") or "spark-warehouse"
    return os.path.dirname(strip_folder(to_local_path(warehouse)))


def volume_folder(spark: SparkSession, volume: str) -> str:
    """The folder a dbx.pixels volume means: a Unity Catalog name ``catalog.schema.volume``
    becomes ``<home>/volumes/catalog/schema/volume`` (as ``/Volumes/catalog/schema/volume``
    on Databricks); a folder or URI is used as it is.

    >>> volume_folder(spark, "/data/pixels") == "/data/pixels"
    True
    >>> volume_folder(spark, "main.pixels_solacc.pixels_volume").endswith(
    ...     "/volumes/main/pixels_solacc/pixels_volume")
    True
    """
    if "/" in volume or volume.startswith("file:"):
        return strip_folder(volume)
    parts = volume.split(".")
    if len(parts) != 3 or not all(_IDENTIFIER.fullmatch(part) for part in parts):
        raise ValueError(f"volume {volume!r}: expected catalog.schema.volume or a folder")
    return os.path.join(home_folder(spark), "volumes", *parts)


def normalise_folder(path: str) -> str:
    """A folder to catalog as the pipeline compares it: local paths (``file:`` URIs too)
    absolute, without a trailing slash; other URIs as given.

    >>> normalise_folder("file:///data/dicom/"), normalise_folder("s3a://bucket/dicom/")
    ('/data/dicom', 's3a://bucket/dicom')
    """
    if path.startswith("file:"):
        path = to_local_path(path)
    elif "://" in path or path.startswith("dbfs:"):
        return path.rstrip("/")
    return os.path.abspath(os.path.expanduser(path)).rstrip("/") or "/"


class Catalog:
    """dbx.pixels' ``Catalog``: catalog a folder of files, save it for SQL, load it back.

    ``table`` names the catalog table (dbx.pixels' default ``main.pixels_solacc.object_catalog``
    is pixels-sql's ``pixels.object_catalog``, where ``pixels-sql serve``, DICOMweb and the
    views look; see :func:`database_of`). ``volume`` is where zip archives are extracted and
    stream checkpoints kept by default (a Unity Catalog name maps to a folder of the home;
    see :func:`volume_folder`).

    >>> from pixels_sql.pixels import Catalog
    >>> Catalog(spark)
    Catalog(spark, table="main.pixels_solacc.object_catalog")
    >>> Catalog(spark).table
    'pixels.object_catalog'
    """

    def __init__(
        self,
        spark: SparkSession,
        table: str = DBX_DEFAULT_TABLE,
        volume: str = DBX_DEFAULT_VOLUME,
    ) -> None:
        if spark is None:
            raise ValueError("Catalog(spark): a SparkSession with pixels-sql's functions")
        self._spark = spark
        self._table = table
        self.database = database_of(spark, table)
        self._volume = volume
        self.volume_path = volume_folder(spark, volume)
        self._last: CatalogSettings | None = None

    def __repr__(self) -> str:
        return f'Catalog(spark, table="{self._table}")'

    @property
    def table(self) -> str:
        """The table this catalog saves to and loads, as Spark names it here."""
        return f"{self.database}.{TABLE}"

    def catalog(
        self,
        path: str,
        pattern: str = "*",
        recurse: bool = True,
        streaming: bool = False,
        streamCheckpointBasePath: str | None = None,
        triggerProcessingTime: str | None = None,
        triggerAvailableNow: bool | None = None,
        extractZip: bool = False,
        extractZipBasePath: str | None = None,
        maxFilesPerTrigger: int | None = 50000,
        maxUnzippedRecordsPerFile: int = 102400,
        maxZipElementsPerPartition: int = 32,
        detectFileType: bool = False,
        zipRepartition: int | None = None,
        useManagedFileEvents: bool = False,
        includeExistingFiles: bool = True,
        allowOverwrites: bool = False,
        maxFileAge: str | None = None,
        maxUnzipWorkers: int = 1,
    ) -> DataFrame:
        """The files under ``path`` as a DataFrame: one row per file, as the pipeline lists it.

        Columns: ``rowId`` (``xxhash64(path)``, as in the table), ``path``,
        ``modificationTime``, ``length``, ``relative_path``, ``local_path``, ``extension``,
        ``path_tags``, ``original_path`` (the listed file: the archive of a zip member) and
        ``listing_reason``/``listing_message`` (why an entry cannot be read: a dangling link,
        a pipe, an unreadable folder, a hostile zip member). Zero-byte and ``_``-named files
        are rows too (``list_files``). ``pattern`` filters file names, ``recurse=False``
        lists the folder's own files only.

        Zip archives are listed member by member and read in place (``zip_members``); with
        ``extractZip=True`` they are extracted now to ``extractZipBasePath`` (default
        ``<volume>/unzipped``) by ``zip_extract`` and the rows are the written files.

        ``streaming=True`` returns a streaming DataFrame of the files as they arrive; ``save``
        then runs the stream ingest with its checkpoint under ``streamCheckpointBasePath``
        (default ``<volume>/checkpoints``), ``triggerAvailableNow`` (the default) or
        ``triggerProcessingTime``, and ``maxFilesPerTrigger``.
        ``maxUnzippedRecordsPerFile``, ``maxZipElementsPerPartition``, ``zipRepartition`` and
        ``maxUnzipWorkers`` tune dbx.pixels' unzip job and change nothing here. Options with
        no counterpart (``detectFileType``, Auto Loader's ``useManagedFileEvents``,
        ``includeExistingFiles=False``, ``allowOverwrites=True``, ``maxFileAge``) raise
        :class:`UnsupportedError` naming the alternative.

        >>> from pixels_sql.pixels import Catalog
        >>> catalog = Catalog(spark, table="pixels_examples.object_catalog")
        >>> catalog_df = catalog.catalog(folder)
        >>> [(r.relative_path, r.extension, r.length) for r in catalog_df.orderBy("path").collect()]
        [('CT_small.dcm', 'dcm', 39206), ('MR_small.dcm', 'dcm', 9830), ('README.txt', 'txt', 15936)]
        >>> catalog.catalog(folder, pattern="*.dcm").count()
        2
        >>> catalog.catalog(folder, streaming=True, streamCheckpointBasePath=f"{workdir}/cp").isStreaming
        True
        """  # noqa: E501 - doctest lines
        if detectFileType:
            raise UnsupportedError(
                "catalog(detectFileType=True): there is no libmagic file_type column; every"
                " file is read as DICOM and a file that is not gets meta_error_reason"
                " 'not_dicom' (dicom_meta_error(path) in SQL)"
            )
        if streaming:
            self._check_stream_options(
                recurse, useManagedFileEvents, includeExistingFiles, allowOverwrites, maxFileAge
            )
        if triggerProcessingTime is not None and triggerAvailableNow:
            raise ValueError(
                "catalog(): set one trigger, triggerProcessingTime or triggerAvailableNow"
            )
        folder = normalise_folder(path)
        extract = None
        if extractZip:
            extract = strip_folder(extractZipBasePath or f"{self.volume_path}/unzipped")
            os.makedirs(extract, exist_ok=True)
        settings = CatalogSettings(
            path=folder,
            pattern=pattern,
            recurse=recurse,
            streaming=streaming,
            extract_zip=extract,
            checkpoint_base=strip_folder(
                streamCheckpointBasePath or f"{self.volume_path}/checkpoints"
            ),
            trigger=triggerProcessingTime or "available-now",
            max_files_per_trigger=maxFilesPerTrigger,
        )
        self._last = settings
        if streaming:
            listed = (
                self._spark.readStream.format("binaryFile")
                .schema(BINARY_FILE_SCHEMA)
                .option("recursiveFileLookup", "true")
                .option("pathGlobFilter", pattern)
                .load(folder)
                .select(
                    "path",
                    "modificationTime",
                    "length",
                    F.lit(None).cast("string").alias("reason"),
                    F.lit(None).cast("string").alias("message"),
                )
            )
        else:
            listed = self._listing(settings)
        files = _files(listed, settings)
        if extract and not streaming:
            # Extracted now, once, as dbx.pixels does before it returns (the save extracts
            # again and finds every file in place: zip_extract keeps an identical file).
            files = files.localCheckpoint()
        files = files.withColumn(
            "path",
            F.col("path").alias("path", metadata={METADATA_KEY: {"catalog": asdict(settings)}}),
        )
        if streaming:
            STREAMS[id(files)] = files
        return files

    @staticmethod
    def _check_stream_options(
        recurse: bool,
        useManagedFileEvents: bool,
        includeExistingFiles: bool,
        allowOverwrites: bool,
        maxFileAge: str | None,
    ) -> None:
        batch = "the batch catalog(path) + save(df), run again, sees rewritten files"
        problems = {
            "recurse=False": (
                not recurse,
                "the stream ingest lists sub-folders too; narrow it with pattern= instead",
            ),
            "useManagedFileEvents=True": (
                useManagedFileEvents,
                "Databricks file events do not exist here: the stream lists the folder on"
                " every trigger (Spark's file source)",
            ),
            "includeExistingFiles=False": (
                not includeExistingFiles,
                "the stream hands out the files already there on its first run; to skip"
                " them, start it on a new, empty folder",
            ),
            "allowOverwrites=True": (
                allowOverwrites,
                f"a stream hands out each path once; {batch}",
            ),
            "maxFileAge": (
                maxFileAge is not None,
                "every file of the folder is catalogued; narrow it with pattern= instead",
            ),
        }
        for option, (given, alternative) in problems.items():
            if given:
                raise UnsupportedError(f"catalog(streaming=True, {option}): {alternative}")

    def _listing(self, settings: CatalogSettings) -> DataFrame:
        return self._spark.sql(
            "SELECT * FROM list_files(:path, glob => :glob, recursive => :recursive)",
            args={"path": settings.path, "glob": settings.pattern, "recursive": settings.recurse},
        )

    def save(
        self,
        df: DataFrame,
        path: str | None = None,
        table: str | None = None,
        mode: str = "append",
        mergeSchema: bool = True,
        hasBinary: bool = False,
        userMetadata: Any = None,
        userOptions: dict[str, Any] | None = None,
    ) -> IngestReport | StreamReport:
        """Save the files of ``df`` into the catalog table, incrementally; what changed.

        The pipeline's statements run over the files ``df`` lists (from :meth:`catalog`,
        filtered or not): a file already catalogued with the same length and modification
        time is not read again, a changed one replaces its row, a new one is added, and a file
        that is not readable DICOM gets a row with its reason. Each file's header is read once,
        by ``dicom_header_result`` (its typed row too), whatever ``df`` computed; when ``df``
        went through
        :class:`DicomThumbnailExtractor <pixels_sql.pixels.dicom.DicomThumbnailExtractor>`,
        thumbnails are rendered into ``object_thumbnails`` at its ``maxSize``. Files deleted
        from the folder keep their rows (``pixels-sql ingest <folder>`` marks them
        ``deleted_at``). A streaming ``df`` runs the stream ingest and returns when it stops
        (``triggerAvailableNow``: once it has caught up). Columns other than the catalog's and
        the transformers' are refused: keep them in a table of your own, keyed by ``path``.

        ``mode`` other than ``append``, ``path``, ``userMetadata`` and ``userOptions`` (Delta
        writer settings) raise :class:`UnsupportedError`; ``mergeSchema`` and ``hasBinary``
        change nothing (the table's schema is the pipeline's).

        >>> from pixels_sql.pixels import Catalog
        >>> catalog = Catalog(spark, table="pixels_examples.object_catalog")
        >>> report = catalog.save(catalog.catalog(folder))
        >>> report.new, report.failed
        (3, 1)
        """
        if path is not None:
            raise UnsupportedError(
                "save(path=...): the catalog's tables live in the session's warehouse"
                " (spark.sql.warehouse.dir: the pixels-sql home, --home); choose a database"
                " with Catalog(spark, table='<database>.object_catalog')"
            )
        if mode != "append":
            raise UnsupportedError(
                f"save(mode={mode!r}): save is incremental (new and changed files only); to"
                f" start over, DROP TABLE <database>.{TABLE} and <database>.object_thumbnails"
                " first"
            )
        if userMetadata is not None or userOptions:
            raise UnsupportedError(
                "save(userMetadata=..., userOptions=...): these are Delta commit and writer"
                " settings; the pipeline writes the tables in spark.sql.sources.default with"
                " the session's settings (set them with spark.conf.set)"
            )
        database = self.database if table is None else database_of(self._spark, table)
        settings = self._settings_of(df)
        self._check_columns(df, database)
        size = thumbnail_size(df)
        if df.isStreaming:
            return self._save_stream(df, settings, database, size)
        return self._save_batch(df, settings, database, size)

    def _settings_of(self, df: DataFrame) -> CatalogSettings:
        if "path" not in df.columns:
            raise ValueError(f"save(df): df has no path column (columns: {', '.join(df.columns)})")
        found = df.schema["path"].metadata.get(METADATA_KEY, {}).get("catalog")
        if found:
            return CatalogSettings(**found)
        if self._last is None:
            raise ValueError(
                "save(df): df does not come from Catalog.catalog(path); call catalog(path)"
                " first (it says which folder the files belong to)"
            )
        return self._last

    def _check_columns(self, df: DataFrame, database: str) -> None:
        known = set(KNOWN_COLUMNS)
        for name in (TABLE, "object_thumbnails"):
            if self._spark.catalog.tableExists(f"{database}.{name}"):
                known |= set(self._spark.table(f"`{database}`.{name}").columns)
        unknown = [
            field.name
            for field in df.schema.fields
            if field.name not in known and METADATA_KEY not in field.metadata
        ]
        if unknown:
            listed = ", ".join(repr(name) for name in unknown)
            raise UnsupportedError(
                f"save(df): column(s) {listed} are not part of {database}.{TABLE}, whose columns"
                f" are the pipeline's; keep them in a table of your own keyed by path, e.g."
                f" df.select('path', {listed}).write.saveAsTable('{database}.my_labels')"
            )

    def _save_batch(
        self, df: DataFrame, settings: CatalogSettings, database: str, size: int | None
    ) -> IngestReport:
        # The listed file of each row: itself, or the archive of a member.
        path = F.col("path")
        original = (
            F.col("original_path")
            if "original_path" in df.columns
            else F.coalesce(archive_of(path), path)
        )
        # Computed once (df may call Python functions, e.g. a filter on meta): the check below
        # and the pipeline's listing read the result.
        wanted = df.select(original.alias("original_path")).localCheckpoint()
        outside = (
            wanted.where(
                ~_under(F.col("original_path"), settings.path) & F.col("original_path").isNotNull()
            )
            .limit(3)
            .collect()
        )
        if outside:
            raise ValueError(
                f"save(df): files outside the catalogued folder {settings.path}:"
                f" {', '.join(row.original_path for row in outside)}; save each folder's"
                " catalog(path) on its own"
            )
        listed = self._listing(settings)
        kept = listed.join(wanted, listed.path == wanted.original_path, "left_semi")
        kept.createOrReplaceTempView(LISTED_VIEW)
        statements = batch_statements(
            settings.path,
            database,
            thumbnails=size is not None,
            thumbnail_size=size or 256,
            extract_zip=settings.extract_zip,
        )
        current = self._spark.catalog.currentDatabase()
        try:
            return run_and_report(self._spark, statements, database, summarise=False)
        finally:
            # The pipeline's first script switches to its database (USE): not the caller's.
            self._spark.catalog.setCurrentDatabase(current)
            self._spark.catalog.dropTempView(LISTED_VIEW)

    def _save_stream(
        self, df: DataFrame, settings: CatalogSettings, database: str, size: int | None
    ) -> StreamReport:
        if STREAMS.get(id(df)) is not df:
            raise UnsupportedError(
                "save(streaming DataFrame): a streaming save runs the stream ingest over the"
                f" folder of catalog(path, streaming=True) ({settings.path}), with the"
                " pixels_sql.pixels transformers only; other transformations (filters, joins)"
                " would be ignored: narrow the files with catalog(pattern=...), or filter"
                " load() afterwards"
            )
        report = StreamReport(database)
        checkpoint = os.path.join(settings.checkpoint_base or ".", f"{database}.{TABLE}")
        query = start_stream(
            self._spark,
            settings.path,
            checkpoint,
            database,
            trigger=settings.trigger,
            thumbnails=size is not None,
            thumbnail_size=size or 256,
            glob=settings.pattern,
            extract_zip=settings.extract_zip,
            max_files_per_trigger=settings.max_files_per_trigger,
            report=report,
        )
        query.awaitTermination()
        exception = query.exception()
        if exception is not None:
            raise StreamError(str(exception).split("JVM stacktrace:", 1)[0].strip())
        return report

    def load(self, table: str | None = None) -> DataFrame:
        """The catalog table with each file's thumbnail: ``object_catalog`` plus ``thumbnail``.

        Every row of the table (deleted files too: ``deleted_at`` is set on those) with the
        PNG of its live thumbnail, NULL where none was rendered.

        >>> from pixels_sql.pixels import Catalog
        >>> catalog = Catalog(spark, table="pixels_examples.object_catalog")
        >>> rows = catalog.load().orderBy("relative_path").collect()
        >>> [(r.relative_path, r.Modality, r.meta_error_reason) for r in rows]
        [('CT_small.dcm', 'CT', None), ('MR_small.dcm', 'MR', None), ('README.txt', None, 'not_dicom')]
        """  # noqa: E501 - doctest lines
        database = self.database if table is None else database_of(self._spark, table)
        if not self._spark.catalog.tableExists(f"{database}.{TABLE}"):
            raise ValueError(f"{database}.{TABLE} does not exist yet: save(df) creates it")
        loaded = self._spark.sql(
            f"""SELECT c.*, t.thumbnail
                FROM `{database}`.{TABLE} AS c
                LEFT JOIN (
                  SELECT path, thumbnail
                  FROM (
                    SELECT path, thumbnail, deleted_at,
                           row_number() OVER (PARTITION BY path ORDER BY ingest_run DESC) AS n
                    FROM `{database}`.object_thumbnails)
                  WHERE n = 1 AND deleted_at IS NULL) AS t
                ON t.path = c.path"""
        )
        return loaded.withColumn(
            "thumbnail", F.col("thumbnail").alias("thumbnail", metadata=PNG_ANNOTATION)
        )


def thumbnail_size(df: DataFrame) -> int | None:
    """The ``maxSize`` of the thumbnail transformer ``df`` went through (None: it did not).

    >>> from pixels_sql.pixels.dicom import DicomThumbnailExtractor
    >>> files = spark.createDataFrame([("file:/data/1.dcm",)], "path STRING")
    >>> thumbnail_size(files), thumbnail_size(DicomThumbnailExtractor(maxSize=64).transform(files))
    (None, 64)
    """
    for field in df.schema.fields:
        settings = field.metadata.get(METADATA_KEY)
        if isinstance(settings, dict) and settings.get("column") == "thumbnail":
            return int(settings["thumbnail_size"])
    return None


def _under(path: Any, folder: str) -> Any:
    """Whether ``path`` (a column) is ``folder`` or below it."""
    local = F.regexp_replace(path, r"^file:(//)?", "")
    return (local == folder) | local.startswith(folder.rstrip("/") + "/")


def _files(listed: DataFrame, settings: CatalogSettings) -> DataFrame:
    """The listing's rows with zip archives replaced by their members, and the path columns.

    One generator over both kinds of row (a member list for an archive, the row itself
    otherwise), so that a streaming listing works the same way as a batch one."""
    path = F.col("path")
    is_archive = F.lower(path).endswith(".zip") & F.col("reason").isNull()
    itself = F.array(
        F.struct(
            path.alias("path"),
            F.lit(None).cast("string").alias("member"),
            F.col("length").alias("length"),
            F.col("reason").alias("reason"),
            F.col("message").alias("message"),
        )
    )
    if listed.isStreaming or not listed.where(is_archive).isEmpty():
        # The function gets a NULL for anything but an archive: a Python function in a CASE
        # branch runs for every row otherwise.
        members = F.call_function("zip_members", F.when(is_archive, path))
        rows = F.when(is_archive, members).otherwise(itself)
    else:
        # No archive in the listing (known at once: list_files' rows are in the driver): no
        # Python function in the plan, so every use of the DataFrame stays in the JVM.
        rows = itself
    entries = listed.select(path.alias("original_path"), "modificationTime", F.inline(rows))
    if settings.extract_zip:
        entries = _extracted(entries, settings)
    columns = path_columns(F.col("path"), settings.path, settings.extract_zip)
    return entries.select(
        F.xxhash64("path").alias("rowId"),
        "path",
        "modificationTime",
        "length",
        *(column.alias(name) for name, column in columns.items()),
        "original_path",
        F.col("reason").alias(LISTING_REASON),
        F.col("message").alias(LISTING_MESSAGE),
    )


def _extracted(entries: DataFrame, settings: CatalogSettings) -> DataFrame:
    """Members written to ``settings.extract_zip`` by ``zip_extract`` (where 10_catalog.sql
    writes them: the archive's relative path, then the member's names); a member that cannot
    be written stays a member path, read in place."""
    archive = F.col("original_path")
    disk = F.regexp_replace(archive, r"^file:(//)?", "")
    prefix = settings.path.rstrip("/") + "/"
    archive_relative = F.when(
        disk.startswith(prefix), F.substring(disk, len(prefix) + 1, 1 << 30)
    ).otherwise(F.regexp_extract(archive, r"[^/]+$", 0))
    is_member = F.col("member").isNotNull() & F.col("reason").isNull()
    # Spark runs a Python function for every row of its input, whatever branch of a CASE it is
    # in: a row with a reason gets a NULL path, so that nothing is written for it.
    written = F.call_function(
        "zip_extract",
        F.when(is_member, F.col("path")),
        F.lit(settings.extract_zip),
        F.concat(archive_relative, F.lit("/"), F.col("member")),
        F.unix_seconds("modificationTime"),
    )
    scratch = "__pixels_sql_extracted"
    return (
        entries.withColumn(scratch, F.when(is_member, written))
        .withColumn(
            "path", F.coalesce(F.concat(F.lit("file:"), F.col(f"{scratch}.path")), F.col("path"))
        )
        .drop(scratch)
    )
