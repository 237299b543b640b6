"""SQL functions over zip archives: zip_members lists the files inside one (for the catalog),
zip_extract writes one out (for --extract-zip)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pandas as pd

from pixels_sql.errors import classify
from pixels_sql.functions.registry import SqlFunction, read_rows, results_frame, sql_function
from pixels_sql.io.archives import Member, extract_member, list_members

MEMBER_FIELDS = "path STRING, member STRING, length BIGINT, reason STRING, message STRING"
RESULT_TYPE = f"ARRAY<STRUCT<{MEMBER_FIELDS}>>"


def listing(archive: str) -> list[Member]:
    """The rows of one archive (module-level: the helper process calls it by name)."""
    return list_members(archive)


def _crashed(reason: str, message: str) -> list[Member]:
    # The helper died listing the archive: one row for the archive, its path filled in below.
    return [Member("", None, reason, message)]


def member_rows(paths: pd.Series) -> list[list[dict[str, object]] | None]:
    """Per archive path, its members as dicts of :data:`MEMBER_FIELDS` (None for NULL)."""
    results = read_rows(listing, [(path,) for path in paths], _crashed)
    rows: list[list[dict[str, object]] | None] = []
    for archive, members in zip(paths, results, strict=True):
        if members is None:
            rows.append(None)
            continue
        rows.append(
            [
                {
                    "path": member.path or archive,
                    "member": member.member,
                    "length": member.length,
                    "reason": member.reason,
                    "message": member.message,
                }
                for member in members
            ]
        )
    return rows


@sql_function("zip_members(path STRING)", RESULT_TYPE)
def zip_members():
    """The files inside the zip archive at path, read from its directory without extracting:
    one struct per member (nested archives expanded) with its member path
    (zip://<member>::<archive>, accepted by every dicom_ function), its names inside the archive
    (member), its length, and the reason it must not be read (unsafe_member, encrypted,
    zip_bomb, too_large, too_deep, corrupt_archive) or NULL. An archive that cannot be opened
    gives one struct for itself, with its reason.

    SELECT m.* FROM list_files('/data/zips') AS f, LATERAL inline(zip_members(f.path)) AS m
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(RESULT_TYPE.lower())
    def zip_members(paths: pd.Series) -> pd.Series:
        return pd.Series(member_rows(paths), dtype=object)

    return zip_members


@dataclass(frozen=True)
class Extracted:
    path: str | None
    reason: str | None = None
    message: str | None = None


def extract(path: str, destination: str, relative: str, modified: float | None) -> Extracted:
    """One member written out (module-level: the helper process calls it by name)."""
    try:
        return Extracted(extract_member(path, destination, relative, modified))
    except Exception as exc:
        error = classify(path, exc)
        return Extracted(None, error.reason, error.message)


EXTRACT_TYPE = "STRUCT<path STRING, reason STRING, message STRING>"


@sql_function(
    "zip_extract(path STRING, destination STRING, relative STRING [, modified BIGINT])",
    EXTRACT_TYPE,
)
def zip_extract():
    """Write the zip member at path (a zip://<member>::<archive> path) to
    destination/relative and return the file's path, or the reason it was not written (the
    checks of zip_members, and relative must stay inside destination). The file appears whole
    or not at all; with modified (seconds since 1970, e.g. unix_seconds(modificationTime)) it gets
    that time, and a file already there with that time and size is kept (a re-run writes
    nothing). The pipeline's --extract-zip runs it for every member.

    SELECT zip_extract(m.path, '/data/extracted', m.member).path
    FROM list_files('/data/zips') AS f, LATERAL inline(zip_members(f.path)) AS m
    WHERE m.reason IS NULL
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(EXTRACT_TYPE.lower())
    def zip_extract(*columns: pd.Series) -> pd.DataFrame:
        if len(columns) not in (3, 4):
            raise TypeError(
                f"zip_extract takes (path, destination, relative [, modified]), got"
                f" {len(columns)} arguments"
            )
        paths, destinations, relatives = columns[:3]
        times = list(columns[3]) if len(columns) == 4 else [None] * len(paths)
        rows = [
            (path, destination, relative, None if pd.isna(time) else float(time))
            for path, destination, relative, time in zip(
                paths, destinations, relatives, times, strict=True
            )
        ]
        results = read_rows(extract, rows, partial(Extracted, None))
        return results_frame(results, {"path": "path", "reason": "reason", "message": "message"})

    return zip_extract


FUNCTIONS: dict[str, SqlFunction] = {
    function.name: function for function in (zip_members, zip_extract)
}
