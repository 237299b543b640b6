"""The Spark ML-style transformer base of the dbx.pixels API, and its path transformers.

dbx.pixels' ``PathExtractor`` and ``TagExtractor`` split a file's path into the catalog's path
columns. Here they compute those columns exactly as the pipeline's ``sql/20_meta.sql`` writes
them into ``object_catalog`` (the same expressions, zip member paths included), so a DataFrame
built with them joins and compares with the table.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from pyspark.ml import Transformer as _SparkTransformer
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# Column metadata key marking the columns this API adds (``Catalog.save`` knows them) and
# carrying settings from one step to the next (the catalog's folder, the thumbnail size).
METADATA_KEY = "pixels_sql"

# Streaming DataFrames of Catalog.catalog(streaming=True) and those the transformers derived
# from them, by id (DataFrames compare by value on Spark Connect): a streaming save runs the
# stream ingest over the catalogued folder, so any other transformation would be ignored.
STREAMS: weakref.WeakValueDictionary[int, DataFrame] = weakref.WeakValueDictionary()


class UnsupportedError(NotImplementedError):
    """A dbx.pixels call or option with no counterpart here; the message names what to use."""


class Transformer(_SparkTransformer):
    """Base of the dbx.pixels transformers: ``transform(df)`` returns ``df`` with columns added.

    A :class:`pyspark.ml.Transformer`, so the transformers also go into a
    ``pyspark.ml.Pipeline``. Subclasses check their input columns (``check_input_type``) and
    add theirs in ``_transform``.

    >>> from pixels_sql.pixels import PathExtractor
    >>> isinstance(PathExtractor(), Transformer)
    True
    """

    def transform(self, dataset: DataFrame, params: Any = None) -> DataFrame:
        """``dataset`` with this transformer's columns added."""
        result = super().transform(dataset, params)
        if STREAMS.get(id(dataset)) is dataset:
            STREAMS[id(result)] = result
        return result

    def check_input_type(self, schema: Any) -> None:
        """Raise :class:`TypeError` unless the input column is a STRING."""
        column = getattr(self, "inputCol", "path")
        if column not in schema.fieldNames():
            raise TypeError(
                f"{type(self).__name__}: the DataFrame has no column {column!r} (columns:"
                f" {', '.join(schema.fieldNames())})"
            )
        kind = schema[column].dataType
        if kind != StringType():
            raise TypeError(
                f"{type(self).__name__} field {column}, input type {kind} did not match input"
                " type StringType"
            )

    def _transform(self, df: DataFrame) -> DataFrame:
        raise NotImplementedError


def marked(column: Column, name: str, **settings: Any) -> Column:
    """``column`` named ``name`` and marked as added by this API (with ``settings``), so that
    ``Catalog.save`` knows the columns the transformers made.

    >>> from pyspark.sql import functions as F
    >>> metadata = spark.range(1).select(marked(F.lit(1), "one", size=2)).schema["one"].metadata
    >>> sorted(metadata["pixels_sql"].items())
    [('column', 'one'), ('size', 2)]
    """
    return column.alias(name, metadata={METADATA_KEY: {"column": name, **settings}})


def _strip_file_scheme(column: Column) -> Column:
    return F.regexp_replace(column, r"^file:(//)?", "")


def archive_of(path: Column) -> Column:
    """The outermost archive of a zip member path (``zip://a::zip://b::file:/x.zip`` →
    ``file:/x.zip``); NULL for a plain path.

    >>> from pyspark.sql import functions as F
    >>> paths = spark.createDataFrame([("zip://x.dcm::zip://in.zip::file:/a.zip",)], "p STRING")
    >>> paths.select(archive_of(F.col("p")), member_of(F.col("p"))).first()[:]
    ('file:/a.zip', 'in.zip/x.dcm')
    """
    return F.when(path.startswith("zip://"), F.element_at(F.split(path, "::"), -1))


def member_of(path: Column) -> Column:
    """A member path's names inside its outermost archive joined by ``/`` (``in.zip/x.dcm``),
    as ``zip_members`` gives them; NULL for a plain path.

    >>> from pyspark.sql import functions as F
    >>> spark.range(1).select(member_of(F.lit("file:/data/x.dcm"))).first()[0] is None
    True
    """
    parts = F.split(path, "::")
    inner = F.slice(parts, 1, F.size(parts) - 1)
    names = F.transform(inner, lambda part: F.regexp_replace(part, "^zip://", ""))
    return F.when(path.startswith("zip://"), F.array_join(F.reverse(names), "/"))


def path_columns(
    path: Column, base: str | None = None, extracted_base: str | None = None
) -> dict[str, Column]:
    """``relative_path``, ``local_path``, ``extension`` and ``path_tags`` of ``path`` as
    ``sql/20_meta.sql`` computes them: ``base`` is the catalogued folder (None: relative paths
    are the whole local path), ``extracted_base`` the folder zip members were extracted to.

    >>> from pyspark.sql import functions as F
    >>> member = F.lit("zip://series/1.dcm::file:/data/a.zip")
    >>> columns = path_columns(member, "/data")
    >>> spark.range(1).select(*(c.alias(n) for n, c in columns.items())).first().asDict()
    {'relative_path': 'a.zip/series/1.dcm', 'local_path': 'zip://series/1.dcm::/data/a.zip', 'extension': 'dcm', 'path_tags': ['data', 'a', 'zip', 'series', '1', 'dcm']}
    """  # noqa: E501 - a doctest output line
    archive = archive_of(path)
    member = member_of(path)
    disk_path = _strip_file_scheme(F.coalesce(archive, path))
    local_path = F.regexp_replace(path, r"(^|::)file:(//)?", "$1")
    outer = F.coalesce(archive, path)
    relative = disk_path
    # The CASE of 20_meta.sql, its branches added last to first.
    if base is not None:
        relative = F.when(outer.startswith(base + "/"), F.substring(outer, len(base) + 2, 1 << 30))
        relative = relative.otherwise(disk_path)
    if extracted_base:
        relative = F.when(
            disk_path.startswith(extracted_base + "/"),
            F.substring(disk_path, len(extracted_base) + 2, 1 << 30),
        ).otherwise(relative)
    if base is not None:
        relative = F.when(
            disk_path.startswith(base + "/"), F.substring(disk_path, len(base) + 2, 1 << 30)
        ).otherwise(relative)
    in_archive = F.coalesce(F.concat(F.lit("/"), member), F.lit(""))
    return {
        "relative_path": F.concat(relative, in_archive),
        "local_path": local_path,
        "extension": F.lower(F.regexp_extract(F.coalesce(member, local_path), r"\.([^./]+)$", 1)),
        "path_tags": F.filter(
            F.split(F.concat(disk_path, in_archive), r"[/\\._\s-]+"), lambda part: part != ""
        ),
    }


def base_folder(base: str | None) -> str | None:
    """A ``basePath`` as the path columns compare it: no ``file:`` scheme, no trailing slash;
    dbx.pixels' default ``dbfs:/`` (the Databricks file system root) means none.

    >>> base_folder("dbfs:/") is None, base_folder("file:/data/")
    (True, '/data')
    """
    if base is None or base.rstrip("/") in ("dbfs:", ""):
        return None
    return strip_folder(base)


def strip_folder(base: str) -> str:
    """A folder as the path columns compare it: ``file:/a/b/`` → ``/a/b``; other schemes are
    kept (``s3a://bucket/x``).

    >>> strip_folder("file:///data/dicom/")
    '/data/dicom'
    """
    for prefix in ("file://", "file:"):
        if base.startswith(prefix):
            base = base[len(prefix) :]
            break
    return base.rstrip("/") or "/"


class PathExtractor(Transformer):
    """Add the catalog's path columns, from the file paths in ``inputCol``.

    Adds ``relative_path`` (relative to ``basePath``, or the whole local path without one),
    ``local_path`` (the path the SQL functions and Python open), ``extension`` and
    ``path_tags``, computed as ``object_catalog`` has them (``sql/20_meta.sql``), zip member
    paths (``zip://<member>::<archive>``) included. dbx.pixels' ``file_type`` column
    (libmagic) is not added: ``meta_error_reason = 'not_dicom'`` tells DICOM files apart.

    >>> from pixels_sql.pixels import PathExtractor
    >>> df = spark.createDataFrame([("file:/data/CT-head/img_01.DCM",)], "path STRING")
    >>> row = PathExtractor(basePath="/data").transform(df).first()
    >>> row.relative_path, row.local_path, row.extension, row.path_tags
    ('CT-head/img_01.DCM', '/data/CT-head/img_01.DCM', 'dcm', ['data', 'CT', 'head', 'img', '01', 'DCM'])
    """  # noqa: E501 - a doctest output line

    def __init__(
        self, inputCol: str = "path", tagsCol: str = "tags", basePath: str | None = "dbfs:/"
    ) -> None:
        super().__init__()
        self.inputCol = inputCol
        self.tagsCol = tagsCol  # accepted as dbx.pixels does; the tags go to path_tags
        self.basePath = basePath

    def _transform(self, df: DataFrame) -> DataFrame:
        self.check_input_type(df.schema)
        base = base_folder(self.basePath)
        columns = path_columns(F.col(self.inputCol), base)
        return df.withColumns({name: marked(column, name) for name, column in columns.items()})


class TagExtractor(Transformer):
    """Split each path into words: the ``path_tags`` rule, into ``outputCol`` (``tags``).

    dbx.pixels' TagExtractor tags files by their path — folder and file-name words — not by
    DICOM attributes; for those, use the ``meta`` column with ``dicom_tag(meta, 'Modality')``
    or the catalog's typed columns. The path is taken relative to ``basePath`` (adding
    ``relative_path`` as dbx.pixels does); without one (or with its ``dbfs:/`` default, which
    names no local folder) the whole local path is split, as ``object_catalog.path_tags`` is.

    >>> from pixels_sql.pixels import TagExtractor
    >>> df = spark.createDataFrame([("file:/data/CT-head/img_01.dcm",)], "path STRING")
    >>> TagExtractor(basePath="/data").transform(df).first().tags
    ['CT', 'head', 'img', '01', 'dcm']
    """

    def __init__(
        self, inputCol: str = "path", outputCol: str = "tags", basePath: str | None = "dbfs:/"
    ) -> None:
        super().__init__()
        self.inputCol = inputCol
        self.outputCol = outputCol
        self.basePath = basePath

    def _transform(self, df: DataFrame) -> DataFrame:
        self.check_input_type(df.schema)
        base = base_folder(self.basePath)
        relative = path_columns(F.col(self.inputCol), base)["relative_path"]
        tags = F.filter(F.split(relative, r"[/\\._\s-]+"), lambda part: part != "")
        return df.withColumns(
            {
                "relative_path": marked(relative, "relative_path"),
                self.outputCol: marked(tags, self.outputCol),
            }
        )
