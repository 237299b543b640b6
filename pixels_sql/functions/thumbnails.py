"""SQL functions rendering images: dicom_thumbnail, try_dicom_thumbnail, ..."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import pandas as pd

from pixels_sql.dicom.thumbnail import (
    DEFAULT_MAX_SIZE,
    FORMATS,
    ThumbnailResult,
    read_thumbnail_result,
)
from pixels_sql.functions.registry import (
    SqlFunction,
    read_rows,
    results_frame,
    sql_function,
    value_or_raise,
)

RESULT_TYPE = "struct<thumbnail:binary,reason:string,message:string>"
# The result of a file whose rendering killed the helper process (reason, message).
_FAILED = partial(ThumbnailResult, None)


def _arguments(name: str, columns: Sequence[pd.Series]) -> list[tuple[str | None, int, str]]:
    """(path, max_size, format) per row from 1 to 3 argument columns, with clear errors."""
    if not 1 <= len(columns) <= 3:
        raise TypeError(
            f"{name} takes (path [, max_size [, format]]), got {len(columns)} arguments"
        )
    paths = columns[0]
    sizes = columns[1] if len(columns) > 1 else [DEFAULT_MAX_SIZE] * len(paths)
    formats = columns[2] if len(columns) > 2 else ["png"] * len(paths)
    rows = []
    for path, size, fmt in zip(paths, sizes, formats, strict=True):
        size = DEFAULT_MAX_SIZE if size is None or pd.isna(size) else int(size)
        fmt = "png" if fmt is None else str(fmt).lower()
        if fmt not in FORMATS:
            raise ValueError(f"{name}: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if size < 1:
            raise ValueError(f"{name}: max_size must be a positive number of pixels, got {size}")
        rows.append((path, size, fmt))
    return rows


def thumbnail_results(name: str, columns: Sequence[pd.Series]) -> pd.DataFrame:
    """thumbnail / reason / message columns for a batch (all NULL for a NULL path)."""
    results = read_rows(read_thumbnail_result, _arguments(name, columns), _FAILED)
    return results_frame(results, {"thumbnail": "data", "reason": "reason", "message": "message"})


@sql_function("dicom_thumbnail(path STRING [, max_size INT [, format STRING]])", "BINARY")
def dicom_thumbnail():
    """A PNG (or 'jpeg') of the image as a viewer shows it, longer side at most max_size (256).

    Fails the query with the path and the reason when the file cannot be rendered.

    SELECT path, dicom_thumbnail(path, 128) AS png FROM read_files('/data/dicom')
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("binary")
    def dicom_thumbnail(*columns: pd.Series) -> pd.Series:
        arguments = _arguments("dicom_thumbnail", columns)
        results = read_rows(read_thumbnail_result, arguments, _FAILED)
        return pd.Series(
            [
                value_or_raise("dicom_thumbnail", row[0], r, "data")
                for row, r in zip(arguments, results, strict=True)
            ],
            dtype=object,
        )

    return dicom_thumbnail


@sql_function("try_dicom_thumbnail(path STRING [, max_size INT [, format STRING]])", "BINARY")
def try_dicom_thumbnail():
    """Like dicom_thumbnail, but NULL for a file that cannot be rendered.

    SELECT count(try_dicom_thumbnail(path)) AS renderable FROM read_files('/data/dicom')
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("binary")
    def try_dicom_thumbnail(*columns: pd.Series) -> pd.Series:
        return thumbnail_results("try_dicom_thumbnail", columns)["thumbnail"]

    return try_dicom_thumbnail


@sql_function("dicom_thumbnail_error(path STRING)", "STRING")
def dicom_thumbnail_error():
    """Why a file cannot be rendered, as a reason code (no_pixel_data, undecodable, ...).

    SELECT dicom_thumbnail_error(path) AS reason, count(*) FROM read_files('/data') GROUP BY 1
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("string")
    def dicom_thumbnail_error(*columns: pd.Series) -> pd.Series:
        return thumbnail_results("dicom_thumbnail_error", columns)["reason"]

    return dicom_thumbnail_error


@sql_function(
    "dicom_thumbnail_result(path STRING [, max_size INT [, format STRING]])",
    RESULT_TYPE.upper(),
)
def dicom_thumbnail_result():
    """Thumbnail and failure in one render: STRUCT<thumbnail, reason, message>.

    SELECT r.thumbnail, r.reason FROM (SELECT dicom_thumbnail_result(path) AS r FROM files)
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(RESULT_TYPE)
    def dicom_thumbnail_result(*columns: pd.Series) -> pd.DataFrame:
        return thumbnail_results("dicom_thumbnail_result", columns)

    return dicom_thumbnail_result


FUNCTIONS: dict[str, SqlFunction] = {
    function.name: function
    for function in (
        dicom_thumbnail,
        try_dicom_thumbnail,
        dicom_thumbnail_error,
        dicom_thumbnail_result,
    )
}
