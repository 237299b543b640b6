"""SQL functions reading DICOM headers: dicom_meta, try_dicom_meta, dicom_meta_error, ..."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import pandas as pd

from pixels_sql.dicom.meta import MetaRow, read_result
from pixels_sql.functions.registry import ResultFamily, SqlFunction, read_rows

RESULT_TYPE = "struct<meta:string,reason:string,message:string>"


def read_batch(paths: pd.Series) -> list[MetaRow | None]:
    """One result per path (None for a NULL path), read in the helper process. The JSON comes
    as UTF-8 bytes, which Arrow takes for a STRING column as they are."""
    return read_rows(read_result, [(path,) for path in paths], partial(MetaRow, None))


def _results(name: str, columns: Sequence[pd.Series]) -> list[MetaRow | None]:
    if len(columns) != 1:
        raise TypeError(f"{name} takes (path), got {len(columns)} arguments")
    return read_batch(columns[0])


FAMILY = ResultFamily(
    "dicom_meta",
    "(path STRING)",
    "meta",
    "string",
    RESULT_TYPE,
    _results,
    {"meta": "meta", "reason": "reason", "message": "message"},
)
FUNCTIONS: dict[str, SqlFunction] = {
    function.name: function
    for function in FAMILY.functions(
        value="""The DICOM JSON model (PS3.18 F.2) of the file's header, read without its pixel
        data.

        Fails the query with the path and the reason when a file is not readable DICOM.

        SELECT parse_json(dicom_meta(path)) AS meta FROM read_files('/data/dicom')
        """,
        try_="""Like dicom_meta, but NULL for a file that is not readable DICOM.

        SELECT path FROM read_files('/data/dicom') WHERE try_dicom_meta(path) IS NULL
        """,
        error="""Why a file's header cannot be read, as a reason code; NULL when it can.

        Codes: not_found, unreadable, empty, not_dicom, truncated, corrupt. The human message
        is in dicom_meta_result(path).message.

        SELECT dicom_meta_error(path) AS reason, count(*) FROM read_files('/data/dicom')
        GROUP BY 1
        """,
        result="""Header and failure in one read: STRUCT<meta, reason, message> (meta NULL on
        failure).

        The pipeline uses it so that every file is opened once, good or bad.

        SELECT r.meta, r.reason FROM (SELECT dicom_meta_result(path) AS r FROM read_files('/data'))
        """,
    )
}
