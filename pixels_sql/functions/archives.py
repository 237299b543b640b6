"""SQL functions over zip archives: zip_members lists the files inside one, for the catalog."""

from __future__ import annotations

import pandas as pd

from pixels_sql.dicom.archives import Member, list_members
from pixels_sql.functions.registry import SqlFunction, read_rows, sql_function

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


FUNCTIONS: dict[str, SqlFunction] = {function.name: function for function in (zip_members,)}
