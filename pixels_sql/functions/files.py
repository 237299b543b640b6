"""SQL functions over any path the others accept (a local file, a zip member, an object in object
storage): file_content, the bytes of one. read_files over object storage selects it as the
``content`` column of the binaryFile source (jvm/PixelsSqlExtensions.java)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pandas as pd

from pixels_sql.errors import classify
from pixels_sql.functions.registry import SqlFunction, read_rows, sql_function, value_or_raise
from pixels_sql.io.sources import display_name, read_content


@dataclass(frozen=True)
class Content:
    data: bytes | None
    reason: str | None = None
    message: str | None = None


def content(path: str) -> Content:
    """The bytes of one file (module-level: the helper process calls it by name)."""
    try:
        return Content(read_content(path))
    except Exception as exc:
        error = classify(display_name(path), exc)
        return Content(None, error.reason, error.message)


@sql_function("file_content(path STRING)", "BINARY")
def file_content():
    """The bytes of the file at path: a local file, a zip member (zip://<member>::<archive>) or
    an object (s3://, gs://, abfs://...). Fails the query with the path and the reason (not_found,
    unreadable, empty, ...) when it cannot be read. Reads the whole file: for headers use
    dicom_meta, which reads a few KB.

    SELECT path, length(file_content(path)) AS bytes FROM list_files('/data/dicom')
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("binary")
    def file_content(paths: pd.Series) -> pd.Series:
        results = read_rows(content, [(path,) for path in paths], partial(Content, None))
        return pd.Series(
            [
                value_or_raise("file_content", p, r, "data")
                for p, r in zip(paths, results, strict=True)
            ],
            dtype=object,
        )

    return file_content


FUNCTIONS: dict[str, SqlFunction] = {function.name: function for function in (file_content,)}
