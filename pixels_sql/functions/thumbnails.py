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
from pixels_sql.functions.registry import ResultFamily, SqlFunction, read_rows

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


def _results(name: str, columns: Sequence[pd.Series]) -> list[ThumbnailResult | None]:
    return read_rows(read_thumbnail_result, _arguments(name, columns), _FAILED)


FAMILY = ResultFamily(
    "dicom_thumbnail",
    "(path STRING [, max_size INT [, format STRING]])",
    "thumbnail",
    "binary",
    RESULT_TYPE,
    _results,
    {"thumbnail": "data", "reason": "reason", "message": "message"},
    error_arguments="(path STRING)",
)
FUNCTIONS: dict[str, SqlFunction] = {
    function.name: function
    for function in FAMILY.functions(
        value="""A PNG (or 'jpeg') of the image as a viewer shows it, longer side at most
        max_size (256).

        Fails the query with the path and the reason when the file cannot be rendered.

        SELECT path, dicom_thumbnail(path, 128) AS png FROM read_files('/data/dicom')
        """,
        try_="""Like dicom_thumbnail, but NULL for a file that cannot be rendered.

        SELECT count(try_dicom_thumbnail(path)) AS renderable FROM read_files('/data/dicom')
        """,
        error="""Why a file cannot be rendered, as a reason code (no_pixel_data, undecodable,
        ...).

        SELECT dicom_thumbnail_error(path) AS reason, count(*) FROM read_files('/data')
        GROUP BY 1
        """,
        result="""Thumbnail and failure in one render: STRUCT<thumbnail, reason, message>.

        SELECT r.thumbnail, r.reason FROM (SELECT dicom_thumbnail_result(path) AS r FROM files)
        """,
    )
}
