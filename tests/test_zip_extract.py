"""--extract-zip over hostile archives, through Spark: `ingest` (sql/10_catalog.sql) and the
Catalog API's ``extractZip`` (pixels/catalog.py). A member the listing gives a reason —
unsafe names, links, encryption, bombs, and nested archives too deep or unreadable — writes
nothing to the destination, and its reason is in the catalog; every good member is written.

Spark evaluates a Python function for every row of its input, whatever CASE branch holds it:
before, a nested archive with a reason (``too_deep``) was written all the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pixels_sql.ingest import ingest
from pixels_sql.io.archives import is_member_path, list_members, member_chain
from pixels_sql.pixels import Catalog
from tests.hostile_archives import Hostile, build

DATABASE = "zip_extract_hostile"
# The kinds with a reason on a member (not only on the whole archive), at the default limits.
KINDS = ("too_deep", "nested", "zip_slip", "symlink", "encrypted", "ratio_bomb", "flipped")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Hostile]]:
    root = tmp_path_factory.mktemp("hostile-zips")
    return root, {kind: build(kind, root / kind) for kind in KINDS}


def expected_files(root: Path, archives: dict[str, Hostile]) -> tuple[set[str], dict[str, str]]:
    """(relative paths of the files extraction must write, {member path: listing reason})."""
    written, refused = set(), {}
    for kind, archive in archives.items():
        relative = archive.archive.relative_to(root).as_posix()
        for row in list_members(archive.uri):
            if row.reason is not None:
                refused[row.path] = row.reason
            elif row.path not in archive.read:  # a member that fails only when read
                written.add(f"{relative}/{member_chain(row.path)}")
        assert kind == "flipped" or any(is_member_path(path) for path in refused), kind
    return written, refused


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


def test_ingest_extract_zip_writes_nothing_for_a_member_with_a_reason(
    spark, hostile: tuple[Path, dict[str, Hostile]], tmp_path: Path
) -> None:
    root, archives = hostile
    written, refused = expected_files(root, archives)
    assert "too_deep" in refused.values() and "corrupt_archive" in refused.values()
    destination = tmp_path / "extracted"
    spark.sql(f"DROP DATABASE IF EXISTS {DATABASE} CASCADE")
    ingest(spark, str(root), DATABASE, thumbnails=False, extract_zip=str(destination))
    assert files_under(destination) == written
    reasons = {
        row.path: row.meta_error_reason
        for row in spark.sql(
            f"SELECT path, meta_error_reason FROM {DATABASE}.object_catalog"
            " WHERE path LIKE 'zip://%'"
        ).collect()
    }
    assert {path: reasons.get(path) for path in refused} == refused
    # The members that fail only when read (a flipped byte) are read in place: their reason.
    for archive in archives.values():
        for path, reason in archive.read.items():
            if path in reasons:
                assert reasons[path] == reason, path
    spark.sql(f"DROP DATABASE IF EXISTS {DATABASE} CASCADE")
    spark.sql("USE default")


def test_catalog_api_extract_zip_writes_nothing_for_a_member_with_a_reason(
    spark, hostile: tuple[Path, dict[str, Hostile]], tmp_path: Path
) -> None:
    root, archives = hostile
    written, refused = expected_files(root, archives)
    destination = tmp_path / "unzipped"
    rows = (
        Catalog(spark, table=f"{DATABASE}.object_catalog")
        .catalog(str(root), extractZip=True, extractZipBasePath=str(destination))
        .select("path", "listing_reason")
        .collect()
    )
    assert files_under(destination) == written
    listed = {row.path: row.listing_reason for row in rows if row.path.startswith("zip://")}
    assert {path: listed.get(path) for path in refused} == refused
