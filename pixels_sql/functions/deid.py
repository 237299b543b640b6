"""SQL functions de-identifying files (PS3.15 Annex E): dicom_deidentify, try_dicom_deidentify,
dicom_deidentify_error, dicom_deidentify_result, dicom_deidentify_write, dicom_deidentify_remove;
and finding burned-in text: dicom_burned_in_text, try_dicom_burned_in_text.

The key is the setting's (PIXELS_SQL_DEID_KEY_FILE or PIXELS_SQL_DEID_KEY, read by the Python
workers), never an argument: no SQL text, query log or view definition holds it. A missing key
or an unknown option fails the query (it is no file's fault); a file that cannot be
de-identified fails dicom_deidentify with its reason, and is NULL for try_dicom_deidentify.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import pandas as pd

from pixels_sql.deid import ocr
from pixels_sql.deid.files import (
    DeidRow,
    TextFound,
    burned_in_text_file,
    deidentify_file,
    deidentify_to,
    profile_of,
    remove_copy,
)
from pixels_sql.deid.keys import load_key
from pixels_sql.deid.profile import BASIC, ProfileError
from pixels_sql.functions.registry import (
    ResultFamily,
    SqlFunction,
    read_rows,
    results_frame,
    sql_function,
    value_or_raise,
)

# Where pixels were blacked out, and what found them (a rule's name, or 'ocr').
CLEANED_REGIONS_TYPE = "array<struct<x:int,y:int,width:int,height:int,source:string>>"
# The fields of a DeidRow after its new file, as dicom_deidentify_result and
# dicom_deidentify_write return them.
_MAPPING_TYPE = (
    "sop_instance_uid:string,original_sop_instance_uid:string,patient_id:string,"
    "shift_days:int,uids:map<string,string>,reason:string,message:string,"
    f"cleaned_regions:{CLEANED_REGIONS_TYPE}"
)
_MAPPING_COLUMNS = {name: name for name in DeidRow._fields[1:]}
RESULT_TYPE = f"struct<data:binary,{_MAPPING_TYPE}>"
RESULT_COLUMNS = {"data": "new_file", **_MAPPING_COLUMNS}


def _arguments(name: str, columns: Sequence[pd.Series]) -> list[tuple[str | None, tuple[str, ...]]]:
    """(path, options) per row from (path [, profile [, options]]), checked: an unknown
    profile or option, or no key, fails the query here, before any file is read."""
    if not 1 <= len(columns) <= 3:
        raise TypeError(f"{name} takes (path [, profile [, options]]), got {len(columns)}")
    paths = columns[0]
    profiles = columns[1] if len(columns) > 1 else [BASIC] * len(paths)
    option_lists = columns[2] if len(columns) > 2 else [()] * len(paths)
    rows = []
    for path, profile, options in zip(paths, profiles, option_lists, strict=True):
        if str(profile or BASIC).lower() != BASIC:
            raise ProfileError(f"{name}: profile must be '{BASIC}' (PS3.15 E.2), got {profile!r}")
        chosen = tuple(str(option) for option in (() if options is None else options))
        profile_of(chosen)  # raises for an unknown option
        rows.append((path, chosen))
    load_key()  # raises when there is none: a setting to fix, not a file to skip
    return rows


def _deidentified(name: str, columns: Sequence[pd.Series]) -> list[DeidRow | None]:
    return read_rows(deidentify_file, _arguments(name, columns), DeidRow.failed)


FAMILY = ResultFamily(
    "dicom_deidentify",
    "(path STRING [, profile STRING [, options ARRAY<STRING>]])",
    "data",
    "binary",
    RESULT_TYPE,
    _deidentified,
    RESULT_COLUMNS,
)
_FAMILY_FUNCTIONS = FAMILY.functions(
    value="""The file de-identified (PS3.15 Basic Profile and the options named) as a new PS3.10
    file.

    Fails the query with the path and the reason when the file cannot be de-identified.

    SELECT path, dicom_deidentify(path, 'basic', array('retain_safe_private')) AS dcm
    FROM read_files('/data/dicom')
    """,
    try_="""Like dicom_deidentify, but NULL for a file that cannot be de-identified.

    SELECT count(try_dicom_deidentify(path)) AS shareable FROM read_files('/data/dicom')
    """,
    error="""Why a file cannot be de-identified, as a reason code (burned_in_unhandled, ...).

    SELECT dicom_deidentify_error(path) AS reason, count(*) FROM read_files('/data') GROUP BY 1
    """,
    result="""The new file and what a mapping keeps, in one pass: STRUCT<data, sop_instance_uid,
    original_sop_instance_uid, patient_id, shift_days, uids MAP<original, new>, reason,
    message>.

    SELECT r.sop_instance_uid, r.reason FROM (SELECT dicom_deidentify_result(path) AS r FROM f)
    """,
)


WRITE_RESULT_TYPE = f"struct<output_path:string,{_MAPPING_TYPE}>"
WRITE_RESULT_COLUMNS = {"output_path": "new_file", **_MAPPING_COLUMNS}


@sql_function(
    "dicom_deidentify_write(path STRING, destination STRING [, profile STRING"
    " [, options ARRAY<STRING>]])",
    WRITE_RESULT_TYPE.upper(),
)
def dicom_deidentify_write():
    """De-identify the file and write the copy under destination (a folder per pseudonymous
    patient, a file per new SOP Instance UID), whole or not at all: STRUCT<output_path,
    sop_instance_uid, original_sop_instance_uid, patient_id, shift_days, uids, reason, message>.
    A file that cannot be de-identified writes nothing and gets its reason.

    SELECT r.output_path, r.reason FROM (
      SELECT dicom_deidentify_write(path, '/shared/deid', 'basic', array('tcia')) AS r
      FROM read_files('/data/dicom'))
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(WRITE_RESULT_TYPE)
    def dicom_deidentify_write(*columns: pd.Series) -> pd.DataFrame:
        if len(columns) < 2:
            raise TypeError(
                "dicom_deidentify_write takes (path, destination [, profile [, options]])"
            )
        checked = _arguments("dicom_deidentify_write", [columns[0], *columns[2:]])
        rows = [
            (path, str(destination), options)
            for (path, options), destination in zip(checked, columns[1], strict=True)
        ]
        results = read_rows(deidentify_to, rows, DeidRow.failed)
        return results_frame(results, WRITE_RESULT_COLUMNS)

    return dicom_deidentify_write


@sql_function("dicom_deidentify_remove(path STRING, destination STRING)", "BOOLEAN")
def dicom_deidentify_remove():
    """Remove a copy dicom_deidentify_write wrote under destination (a source file deleted or
    gone from the cohort); true when it is gone, false for a path outside destination.

    SELECT dicom_deidentify_remove(output_path, '/shared/deid') FROM removed_copies
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("boolean")
    def dicom_deidentify_remove(paths: pd.Series, destinations: pd.Series) -> pd.Series:
        return pd.Series(
            [
                None if path is None else remove_copy(str(path), str(destination))
                for path, destination in zip(paths, destinations, strict=True)
            ],
            dtype=object,
        )

    return dicom_deidentify_remove


TEXT_TYPE = (
    "array<struct<frame:int,x:int,y:int,width:int,height:int,text:string,confidence:double>>"
)
_NOT_READ = partial(TextFound, None)


def _text_results(paths: pd.Series) -> list[TextFound | None]:
    ocr.require()  # no Tesseract: a setting to fix, not a file to skip
    return read_rows(burned_in_text_file, [(path,) for path in paths], _NOT_READ)


@sql_function("dicom_burned_in_text(path STRING)", TEXT_TYPE.upper())
def dicom_burned_in_text():
    """The burned-in text OCR (Tesseract) finds in the image: an ARRAY of STRUCT<frame, x, y,
    width, height, text, confidence> per word, in pixels from the top left; empty when it finds
    none. A multi-frame image is read on its first, middle and last frames.

    Fails the query with the path and the reason for a file that is not an image that
    decodes (no_pixel_data, undecodable, ...).

    SELECT path, w.text, w.x, w.y FROM (
      SELECT path, explode(dicom_burned_in_text(path)) AS w FROM read_files('/data/us'))
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(TEXT_TYPE)
    def dicom_burned_in_text(paths: pd.Series) -> pd.Series:
        results = zip(paths, _text_results(paths), strict=True)
        regions = [value_or_raise("dicom_burned_in_text", p, r, "regions") for p, r in results]
        return pd.Series(regions, dtype=object)

    return dicom_burned_in_text


@sql_function("try_dicom_burned_in_text(path STRING)", TEXT_TYPE.upper())
def try_dicom_burned_in_text():
    """Like dicom_burned_in_text, but NULL for a file that is not an image that decodes.

    SELECT path FROM read_files('/data/us') WHERE size(try_dicom_burned_in_text(path)) > 0
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(TEXT_TYPE)
    def try_dicom_burned_in_text(paths: pd.Series) -> pd.Series:
        results = _text_results(paths)
        return pd.Series([r.regions if r else None for r in results], dtype=object)

    return try_dicom_burned_in_text


FUNCTIONS: dict[str, SqlFunction] = {
    function.name: function
    for function in (
        *_FAMILY_FUNCTIONS,
        dicom_deidentify_write,
        dicom_deidentify_remove,
        dicom_burned_in_text,
        try_dicom_burned_in_text,
    )
}
