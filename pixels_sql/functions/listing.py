"""list_files over object storage: the Python table function the extension delegates to.

``list_files`` is the extension's table function (jvm/ListFiles.java): it walks local folders and
Hadoop file systems itself, when the query is analysed. Object storage that no Hadoop file system
of the application reads (s3://, gs://, abfs:// on the pyspark wheel, which has no hadoop-aws)
goes to this Python table function instead, registered once per application by
:func:`register_lister`; it lists through fsspec (io/storage.py) when the query runs, with the
same columns and the same rules (hidden names, glob, zero-byte objects listed).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pixels_sql.io import storage

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The name ListFiles.java looks the function up by.
LISTER_NAME = "pixels_list_objects"
LISTING_SCHEMA = (
    "path STRING, modificationTime TIMESTAMP, length BIGINT, reason STRING, message STRING"
)

Row = tuple[str, datetime | None, int | None, str | None, str | None]


def listing_rows(path: str, glob: str, recursive: bool) -> Iterator[Row]:
    """The rows of ``list_files(path, glob => glob, recursive => recursive)`` for an object-store
    path (see :func:`pixels_sql.io.storage.list_objects`)."""
    if not storage.is_remote(path):
        raise ValueError(
            f"list_files: no file system reads {path!r}: object storage takes"
            f" {', '.join(sorted(storage.SCHEMES))} URIs"
        )
    for entry in storage.list_objects(path, glob, recursive):
        yield entry.path, entry.modification_time, entry.length, entry.reason, entry.message


def build_lister() -> Any:
    """The Python UDTF behind list_files on object storage."""
    from pyspark.sql.functions import udtf

    class ListObjects:
        def eval(self, path: str, glob: str, recursive: bool) -> Iterator[Row]:
            yield from listing_rows(path, glob, recursive)

    return udtf(ListObjects, returnType=LISTING_SCHEMA)


def register_lister(spark: SparkSession) -> bool:
    """Hand the lister to the extension of ``spark``'s application (a JVM-wide registry, like
    the injected functions'); False when the extension's jar is not loaded."""
    try:
        registry = spark._jvm.pixelssql.PythonFunctions
        registry.registerTableFunction(LISTER_NAME, build_lister()._judtf)
    except Exception as exc:  # py4j: no such class, the jar is not on the class path
        if "registerTableFunction" in str(exc) or "JavaPackage" in str(exc):
            return False
        raise
    return True
