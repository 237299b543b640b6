"""Zip archives read in place (pixels_sql.io.archives), against hostile archives: every bad
member gives its reason when listed, read or extracted, good members beside it read exactly like
the plain files, and extraction never writes outside its destination. Pure Python: no Spark.

The archives come from tests/hostile_archives.py, one builder per kind of attack or damage.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pixels_sql.dicom.meta import read_result
from pixels_sql.dicom.thumbnail import read_thumbnail_result
from pixels_sql.errors import DicomReadError
from pixels_sql.io import archives
from pixels_sql.io.archives import (
    ArchiveLimits,
    extract_member,
    list_members,
    member_chain,
    member_path,
    open_member,
)
from pixels_sql.io.paths import to_file_uri
from pixels_sql.io.sources import read_range
from tests.corpus import PYDICOM_TEST_FILES, with_peak_memory
from tests.hostile_archives import (
    BOMB_BYTES,
    BUILDERS,
    GOOD_NAME,
    GOOD_SOURCE,
    UNOPENABLE,
    Hostile,
    build,
)

THUMBNAIL_SIZE = 64


def kinds(test: str, exclude: frozenset[str] = frozenset()) -> list[str]:
    """The hostile kinds but ``exclude``, as parameters of ``test``."""
    return [kind for kind in BUILDERS if kind not in exclude]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Hostile]:
    """Each kind's archive, built once for the module in a folder of its own."""
    cache: dict[str, Hostile] = {}

    def get(kind: str) -> Hostile:
        if kind not in cache:
            cache[kind] = build(kind, tmp_path_factory.mktemp(kind))
        return cache[kind]

    return get


@pytest.fixture
def hostile_environment(monkeypatch: pytest.MonkeyPatch) -> Callable[[Hostile], None]:
    """Sets a hostile archive's limits in the environment, where the readers take them from."""

    def apply(hostile: Hostile) -> None:
        for name, value in hostile.environment.items():
            monkeypatch.setenv(name, value)

    return apply


def rebased(meta: str | None, plain: Path, member: str) -> str | None:
    """A plain file's meta JSON with its BulkDataURI base (its ``file://`` URI) replaced by a
    member path: what the member with the same bytes must give."""
    if meta is None:
        return None
    return meta.replace(to_file_uri(os.path.abspath(plain)), member)


def bulk_ranges(meta: Any) -> Iterator[tuple[str, int, int]]:
    """(base, offset, length) of every BulkDataURI with a byte range in a DICOM JSON model."""
    if isinstance(meta, dict):
        uri = meta.get("BulkDataURI")
        if isinstance(uri, str) and "?offset=" in uri:
            base, query = uri.rsplit("?", 1)
            fields = dict(part.split("=") for part in query.split("&"))
            yield base, int(fields["offset"]), int(fields["length"])
        for value in meta.values():
            yield from bulk_ranges(value)
    elif isinstance(meta, list):
        for value in meta:
            yield from bulk_ranges(value)


def assert_reads_like(member: str, plain: Path) -> bool:
    """The member reads exactly like the plain file: meta (BulkDataURIs aside) or its reason,
    thumbnail bytes or its reason, and every byte range its meta points at. Returns whether
    it was readable DICOM."""
    got, want = read_result(member).decoded(), read_result(str(plain)).decoded()
    assert (got.reason, got.meta) == (want.reason, rebased(want.meta, plain, member)), member
    thumbnail = read_thumbnail_result(member, THUMBNAIL_SIZE)
    plain_thumbnail = read_thumbnail_result(str(plain), THUMBNAIL_SIZE)
    assert (thumbnail.reason, thumbnail.data) == (plain_thumbnail.reason, plain_thumbnail.data)
    if got.meta is None:
        return False
    data = plain.read_bytes()
    for base, offset, length in bulk_ranges(json.loads(got.meta)):
        assert base == member
        assert read_range(member, offset, length) == data[offset : offset + length]
    return True


def tree(*roots: Path) -> dict[str, tuple[object, ...]]:
    """Every entry below ``roots`` (not following links: a link is an entry, not a way in),
    with what it is: a link and its target, a folder, a file and its bytes."""
    entries: dict[str, tuple[object, ...]] = {}
    for root in roots:
        for folder, folders, files in os.walk(root):
            for name in folders + files:
                path = os.path.join(folder, name)
                status = os.lstat(path)
                if stat.S_ISLNK(status.st_mode):
                    entries[path] = ("link", os.readlink(path))
                elif stat.S_ISDIR(status.st_mode):
                    entries[path] = ("folder",)
                else:
                    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                    entries[path] = ("file", status.st_size, status.st_mtime_ns, digest)
    return entries


def outside(entries: dict[str, tuple[object, ...]], destination: Path) -> dict[str, Any]:
    return {
        path: entry
        for path, entry in entries.items()
        if os.path.commonpath([path, destination]) != str(destination)
    }


def files_inside(entries: dict[str, tuple[object, ...]], destination: Path) -> set[str]:
    """Everything but folders inside ``destination``, relative to it."""
    return {
        os.path.relpath(path, destination)
        for path, entry in entries.items()
        if os.path.commonpath([path, destination]) == str(destination) and entry[0] != "folder"
    }


def refusal(call: Callable[[], object]) -> str:
    with pytest.raises(DicomReadError) as caught:
        call()
    return caught.value.reason


# --- listing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", kinds("list"))
def test_listing_gives_the_reason_on_exactly_the_bad_members(
    kind: str, built: Callable[[str], Hostile]
) -> None:
    hostile = built(kind)
    members = list_members(hostile.uri, hostile.limits)
    assert {member.path: member.reason for member in members} == hostile.rows
    assert len(members) == len(hostile.rows)  # no path listed twice
    for member in members:
        assert (member.message is None) == (member.reason is None)
        if member.path in hostile.twins:
            assert member.length == hostile.twins[member.path].stat().st_size
            assert member.member == member_chain(member.path)


def test_listing_takes_limits_from_the_environment(
    built: Callable[[str], Hostile], hostile_environment: Callable[[Hostile], None]
) -> None:
    hostile = built("total_size")
    hostile_environment(hostile)
    assert ArchiveLimits.from_environment() == hostile.limits
    assert {m.path: m.reason for m in list_members(hostile.uri)} == hostile.rows


def test_nested_member_paths_name_every_archive(built: Callable[[str], Hostile]) -> None:
    """The fsspec-style chain: a member of a zip in a zip names both archives, and its member
    names (where extraction writes it) run from the outermost archive down."""
    hostile = built("nested")
    nested = f"zip://x/MR_small.dcm::zip://inner/in.zip::file:{hostile.archive}"
    members = {m.path: m for m in list_members(hostile.uri)}
    assert members[nested].reason is None
    assert members[nested].member == "inner/in.zip/x/MR_small.dcm"


@pytest.mark.parametrize(
    ("kind", "limits", "expected"),
    [
        # One row for the archive itself: too many members to list (PIXELS_SQL_ZIP_MAX_MEMBERS).
        ("zip_slip", ArchiveLimits(max_members=3), {None: "too_large"}),
        # The good members are over the size cap; the symlinks' content is a few bytes.
        (
            "symlink",
            ArchiveLimits(max_member_bytes=1000),
            {GOOD_NAME: "too_large", "escape/evil.dcm": "too_large"}
            | dict.fromkeys(("link.dcm", "up.dcm", "escape"), "unsafe_member"),
        ),
        # Depth 1: the archive's own members only; a zip inside it is one too_deep row.
        (
            "nested",
            ArchiveLimits(max_depth=1),
            {GOOD_NAME: None, "inner/in.zip": "too_deep", "fake.zip": "too_deep"},
        ),
        # A looser ratio cap lets the ~1000x bomb through: the ratio is what refused it.
        (
            "ratio_bomb",
            ArchiveLimits(max_ratio=10_000),
            {GOOD_NAME: None, "bomb.dcm": None, "liar.dcm": None},
        ),
    ],
)
def test_limits_passed_explicitly_apply(
    kind: str,
    limits: ArchiveLimits,
    expected: dict[str | None, str | None],
    built: Callable[[str], Hostile],
) -> None:
    hostile = built(kind)
    assert {m.member: m.reason for m in list_members(hostile.uri, limits)} == expected


# --- reading -----------------------------------------------------------------------------------


# Every member of these is readable (the empty member reads as empty, like an empty file).
@pytest.mark.parametrize("kind", kinds("read", exclude=frozenset({"empty_member", "corpus"})))
def test_bad_members_read_as_their_reason(
    kind: str, built: Callable[[str], Hostile], hostile_environment: Callable[[Hostile], None]
) -> None:
    """Every way in gives the reason, never a crash and never a byte from elsewhere (a symlink
    member's target, a file a Zip Slip name points at)."""
    hostile = built(kind)
    hostile_environment(hostile)
    assert hostile.read
    for path, reason in hostile.read.items():

        def opened(path: str = path) -> None:
            with open_member(path, hostile.limits):
                pass

        assert refusal(opened) == reason, path
        assert refusal(lambda path=path: read_range(path, 0, 4)) == reason, path
        meta = read_result(path).decoded()
        assert (meta.meta, meta.reason) == (None, reason), path
        thumbnail = read_thumbnail_result(path, THUMBNAIL_SIZE)
        assert (thumbnail.data, thumbnail.reason) == (None, reason), path


@pytest.mark.parametrize("kind", kinds("twins", exclude=UNOPENABLE))
def test_good_members_read_like_the_plain_files(
    kind: str, built: Callable[[str], Hostile], hostile_environment: Callable[[Hostile], None]
) -> None:
    hostile = built(kind)
    hostile_environment(hostile)
    readable = [path for path, plain in hostile.twins.items() if assert_reads_like(path, plain)]
    for path, plain in hostile.twins.items():
        with open_member(path, hostile.limits) as (_, size, data):
            assert (size, data) == (plain.stat().st_size, plain.read_bytes())
    # Every archive that can be opened carries good DICOM beside its hostile members.
    assert readable, "no readable DICOM member"


def test_empty_member_reads_as_empty(built: Callable[[str], Hostile]) -> None:
    hostile = built("empty_member")
    empty = member_path("empty.dcm", hostile.uri)
    assert read_result(empty).decoded().reason == "empty"
    assert read_thumbnail_result(empty, THUMBNAIL_SIZE).reason == "empty"


def test_corpus_sample_is_varied(built: Callable[[str], Hostile]) -> None:
    """The corpus archive (read against its files by test_good_members_read_like_the_plain_files
    [corpus]) holds ~20 files in a subfolder, readable DICOM of several encodings and broken
    files both."""
    hostile = built("corpus")
    assert len(hostile.twins) >= 18
    assert all((member_chain(path) or "").startswith("series/") for path in hostile.twins)
    results = [read_result(path).decoded() for path in hostile.twins]
    readable = [json.loads(result.meta) for result in results if result.meta is not None]
    assert 10 <= len(readable) < len(results)
    syntaxes = {meta["00020010"]["Value"][0] for meta in readable if "00020010" in meta}
    assert len(syntaxes) >= 4, syntaxes


@pytest.mark.parametrize("kind", ["corpus", "flipped", "nested"])
def test_streamed_members_read_like_in_memory_ones(
    kind: str, built: Callable[[str], Hostile], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members over IN_MEMORY_MAX_BYTES (64 MiB) are streamed through zipfile instead: the same
    meta and thumbnails, and damage found by the end-of-stream CRC check still a reason."""
    hostile = built(kind)
    monkeypatch.setattr(archives, "IN_MEMORY_MAX_BYTES", 0)
    for path, plain in hostile.twins.items():
        assert_reads_like(path, plain)
    for path, reason in hostile.read.items():
        if not path.startswith("zip://flipped-codes.dcm"):  # see the next test
            assert read_result(path).decoded().reason == reason


def test_streamed_member_that_does_not_inflate_is_corrupt_archive(
    built: Callable[[str], Hostile], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = built("flipped")
    monkeypatch.setattr(archives, "IN_MEMORY_MAX_BYTES", 0)
    path = member_path("flipped-codes.dcm", hostile.uri)
    assert read_result(path).decoded().reason == "corrupt_archive"
    assert refusal(lambda: extract_member(path, str(tmp_path), "x.dcm")) == "corrupt_archive"


def test_bomb_is_refused_before_inflating(built: Callable[[str], Hostile]) -> None:
    hostile = built("ratio_bomb")
    bomb = member_path("bomb.dcm", hostile.uri)
    result, peak = with_peak_memory(lambda: read_result(bomb).decoded())
    assert result.reason == "zip_bomb"
    assert peak < BOMB_BYTES // 16, f"peak {peak} bytes"


def test_member_lying_about_its_size_is_not_inflated_past_it(
    built: Callable[[str], Hostile],
) -> None:
    """A member declaring 1,000 bytes (so no ratio cap judges it) whose data inflates to 32 MiB:
    reading must stop at the declared size (and fail on the CRC), costing ~nothing."""
    hostile = built("ratio_bomb")
    liar = member_path("liar.dcm", hostile.uri)
    result, peak = with_peak_memory(lambda: read_result(liar).decoded())
    assert result.reason == "corrupt_archive"
    assert peak < BOMB_BYTES // 16, f"peak {peak} bytes"


# --- extraction --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", kinds("extract"))
def test_extract_writes_good_members_and_nothing_else(
    kind: str,
    built: Callable[[str], Hostile],
    hostile_environment: Callable[[Hostile], None],
    tmp_path: Path,
) -> None:
    """Good members land under their member names with their bytes; each bad one is refused
    with its reason, whether ``relative`` is its own name or a harmless one (so that the
    member's own check is what refuses it); nothing appears or changes outside the destination.
    """
    hostile = built(kind)
    hostile_environment(hostile)
    # Deep enough that a climbing name would still land inside tmp_path, where it is seen.
    destination = tmp_path / "a" / "b" / "destination"
    destination.mkdir(parents=True)
    roots = (tmp_path, destination.parent, hostile.archive.parent)
    before = tree(*roots)
    for path, plain in hostile.twins.items():
        written = extract_member(path, str(destination), member_chain(path) or "")
        assert written == str(destination / (member_chain(path) or ""))
        assert Path(written).read_bytes() == plain.read_bytes()
    for index, (path, reason) in enumerate(hostile.read.items()):
        for relative in (member_chain(path) or "", f"refused/{index}.dcm"):

            def extract(path: str = path, relative: str = relative) -> None:
                extract_member(path, str(destination), relative)

            assert refusal(extract) == reason, (path, relative)
        # Where a naive extractor would have put it: nothing there (a folder made for a good
        # member under the same name aside, as for the symlink member "escape").
        naive = os.path.normpath(os.path.join(destination, member_chain(path) or ""))
        assert not os.path.lexists(naive) or stat.S_ISDIR(os.lstat(naive).st_mode), naive
    after = tree(*roots)
    assert outside(after, destination) == outside(before, destination)
    # No partial file left behind, no link, nothing but the good members.
    assert files_inside(after, destination) == {member_chain(path) for path in hostile.twins}


@pytest.mark.parametrize(
    "relative",
    [
        *("../x.dcm", "a/../../x.dcm", "a/..", "/abs/x.dcm", "C:/x.dcm", "a\\..\\x.dcm"),
        *("./x.dcm", "a//x.dcm", "a/./x.dcm", "", "a::b.dcm", "x.dcm/"),
    ],
)
def test_extract_refuses_a_relative_path_that_leaves_the_destination(
    relative: str, built: Callable[[str], Hostile], tmp_path: Path
) -> None:
    good = member_path(GOOD_NAME, built("zip_slip").uri)
    destination = tmp_path / "a" / "destination"
    destination.mkdir(parents=True)
    before = tree(tmp_path)
    assert refusal(lambda: extract_member(good, str(destination), relative)) == "unsafe_member"
    assert tree(tmp_path) == before


def test_extract_with_the_same_modification_time_writes_once(
    built: Callable[[str], Hostile], tmp_path: Path
) -> None:
    good = member_path(GOOD_NAME, built("zip_slip").uri)
    modified = 1_500_000_000.0
    target = Path(extract_member(good, str(tmp_path), "x/good.dcm", modified))
    first = target.stat()
    assert (first.st_mtime, target.read_bytes()) == (modified, GOOD_SOURCE.read_bytes())
    assert extract_member(good, str(tmp_path), "x/good.dcm", modified) == str(target)
    second = target.stat()
    assert (second.st_ino, second.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    # Not vacuous: another time, or a damaged copy with the same time, is written again.
    extract_member(good, str(tmp_path), "x/good.dcm", modified + 60)
    third = target.stat()
    assert (third.st_ino != first.st_ino, third.st_mtime) == (True, modified + 60)
    target.write_bytes(b"damaged")
    os.utime(target, (modified, modified))
    extract_member(good, str(tmp_path), "x/good.dcm", modified)
    assert target.read_bytes() == GOOD_SOURCE.read_bytes()
    assert os.listdir(target.parent) == ["good.dcm"]  # no partial file left


def test_extract_follows_a_destination_link_given_by_the_caller(
    built: Callable[[str], Hostile], tmp_path: Path
) -> None:
    """The destination is the caller's choice (as with unzip -d): a link there is followed;
    only the folders below it, which members name, must not be links."""
    good = member_path(GOOD_NAME, built("zip_slip").uri)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "destination").symlink_to(elsewhere)
    written = extract_member(good, str(tmp_path / "destination"), "good.dcm")
    assert Path(written) == elsewhere / "good.dcm"
    assert (elsewhere / "good.dcm").read_bytes() == GOOD_SOURCE.read_bytes()


def test_extract_refuses_a_subfolder_that_is_a_link_outside(
    built: Callable[[str], Hostile], tmp_path: Path
) -> None:
    good = member_path(GOOD_NAME, built("zip_slip").uri)
    destination, elsewhere = tmp_path / "destination", tmp_path / "elsewhere"
    destination.mkdir()
    elsewhere.mkdir()
    (destination / "sub").symlink_to(elsewhere)  # a folder replaced by a link to elsewhere
    before = tree(tmp_path)
    reason = refusal(lambda: extract_member(good, str(destination), "sub/good.dcm"))
    assert reason == "unsafe_member"
    assert tree(tmp_path) == before


def test_extract_makes_no_folder_through_a_link_outside(
    built: Callable[[str], Hostile], tmp_path: Path
) -> None:
    good = member_path(GOOD_NAME, built("zip_slip").uri)
    destination, elsewhere = tmp_path / "destination", tmp_path / "elsewhere"
    destination.mkdir()
    elsewhere.mkdir()
    (destination / "sub").symlink_to(elsewhere)
    before = tree(tmp_path)
    reason = refusal(lambda: extract_member(good, str(destination), "sub/deeper/good.dcm"))
    assert reason == "unsafe_member"
    assert tree(tmp_path) == before


def test_extract_replaces_a_link_instead_of_writing_through_it(
    built: Callable[[str], Hostile], tmp_path: Path
) -> None:
    """A link where the file goes, or where its partial file goes (left by a killed run), is
    replaced: the file it points at outside is untouched."""
    good = member_path(GOOD_NAME, built("zip_slip").uri)
    destination, elsewhere = tmp_path / "destination", tmp_path / "elsewhere"
    destination.mkdir()
    elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_bytes(b"do not overwrite")
    (destination / "good.dcm").symlink_to(victim)
    (destination / f".good.dcm.partial-{os.getpid()}").symlink_to(victim)
    before = tree(elsewhere)
    for modified in (None, victim.stat().st_mtime):
        target = Path(extract_member(good, str(destination), "good.dcm", modified))
        assert not target.is_symlink()
        assert target.read_bytes() == GOOD_SOURCE.read_bytes()
        assert tree(elsewhere) == before
        target.unlink()
        target.symlink_to(victim)
    assert os.listdir(destination) == ["good.dcm"]


@pytest.mark.parametrize("kind", kinds("extract rows"))
def test_extract_writes_nothing_for_a_listed_row_with_a_reason(
    kind: str,
    built: Callable[[str], Hostile],
    hostile_environment: Callable[[Hostile], None],
    tmp_path: Path,
) -> None:
    """Whatever row the listing gives a reason (a member, or a nested archive too deep,
    unreadable or with too many members to list), extracting it is refused with that reason
    and writes nothing: --extract-zip runs zip_extract for every row of the listing."""
    hostile = built(kind)
    hostile_environment(hostile)
    destination = tmp_path / "destination"
    destination.mkdir()
    refused = {m.path: m.reason for m in list_members(hostile.uri) if m.reason is not None}
    for path, reason in refused.items():
        if not archives.is_member_path(path):
            continue  # the archive itself: no member to extract

        def extract(path: str = path) -> None:
            extract_member(path, str(destination), member_chain(path) or "x")

        if path.count(archives.SEPARATOR) > archives.depth(path):
            # A name holding "::" (unsafe_member) does not split back out of its member path:
            # the path names no archive that exists.
            with pytest.raises(FileNotFoundError):
                extract()
        else:
            assert refusal(extract) == reason, path
    assert list(destination.rglob("*")) == []


def test_a_nested_archive_with_too_many_members_is_not_extracted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as out:
        for index in range(3):
            out.writestr(f"{index}.dcm", b"x")
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as out:
        out.writestr("in.zip", inner.getvalue())
    path = member_path("in.zip", to_file_uri(str(outer)))
    monkeypatch.setenv("PIXELS_SQL_ZIP_MAX_MEMBERS", "2")  # the outer has 1, the inner 3
    assert [(m.path, m.reason) for m in list_members(to_file_uri(str(outer)))] == [
        (path, "too_large")
    ]
    destination = tmp_path / "destination"
    assert refusal(lambda: extract_member(path, str(destination), "in.zip")) == "too_large"
    assert not destination.exists()


# --- one parse of the central directory per archive ---------------------------------------------

MANY_MEMBERS = 10_000
SMALL_SOURCE = PYDICOM_TEST_FILES / "SC_rgb_small_odd.dcm"  # explicit VR: the fast reader


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive of 10,000 small DICOM members (and a zip of 3 inside it)."""
    archive = tmp_path_factory.mktemp("many") / "many.zip"
    data = SMALL_SOURCE.read_bytes()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for index in range(MANY_MEMBERS):
            out.writestr(f"series{index // 100:03d}/{index:05d}.dcm", data)
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as nested:
            for index in range(3):
                nested.writestr(f"{index}.dcm", data)
        out.writestr("inner.zip", inner.getvalue())
    return archive


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every parse of a central directory (zipfile's reading of it) from now on, by archive;
    the process's parsed archives dropped first."""
    archives.forget_archives()
    seen: list[str] = []
    real = zipfile.ZipFile._RealGetContents

    def counted(self: zipfile.ZipFile) -> None:
        seen.append(str(self.filename or "<nested>"))
        real(self)

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", counted)
    yield seen
    archives.forget_archives()


def test_listing_and_reading_every_member_parse_the_directory_once(
    many: Path, parses: list[str], tmp_path: Path
) -> None:
    """A batch lists the archive and reads each of its 10,000 members (and the members of the
    zip inside it), then extracts some: the outer directory is parsed once, the inner once."""
    rows = list_members(to_file_uri(str(many)))
    assert len(rows) == MANY_MEMBERS + 3 and not any(row.reason for row in rows)
    results = [read_result(row.path).decoded() for row in rows]
    assert [r.reason for r in results] == [None] * len(rows)
    expected = read_result(str(SMALL_SOURCE)).decoded().meta
    assert results[0].meta == rebased(expected, SMALL_SOURCE, rows[0].path)
    for row in rows[:: MANY_MEMBERS // 10]:
        written = extract_member(row.path, str(tmp_path), member_chain(row.path) or "")
        assert Path(written).read_bytes() == SMALL_SOURCE.read_bytes()
    assert sorted(parses) == sorted([str(many), "<nested>"])


def test_archives_read_in_turns_are_each_parsed_once_per_run_of_reads(
    many: Path, parses: list[str], tmp_path: Path
) -> None:
    """More archives than the process keeps (CACHED_ARCHIVES): each run of reads of one
    archive parses it once; going back to one pushed out parses it again, never per member."""
    copies = []
    for index in range(archives.CACHED_ARCHIVES + 2):
        copy = tmp_path / f"copy{index}.zip"
        os.link(many, copy)  # same inode: the path is part of what keys an archive
        copies.append(copy)
    rounds = 2
    for _ in range(rounds):
        for copy in copies:
            for index in range(0, MANY_MEMBERS, 500):
                name = f"series{index // 100:03d}/{index:05d}.dcm"
                path = member_path(name, to_file_uri(str(copy)))
                with open_member(path) as (_fp, size, _data):
                    assert size == SMALL_SOURCE.stat().st_size
    assert len(parses) == rounds * len(copies)


def test_a_rewritten_archive_is_parsed_again(tmp_path: Path, parses: list[str]) -> None:
    """The archive's identity (inode, size, modification time) is checked at every read: a
    rewrite in place (even to the same size) or a replacement is read, never the old index."""
    archive = tmp_path / "changing.zip"

    def write(target: Path, content: bytes, mtime_ns: int) -> None:
        with zipfile.ZipFile(target, "w") as out:
            out.writestr("x.dcm", content)
        os.utime(target, ns=(mtime_ns, mtime_ns))

    path = member_path("x.dcm", to_file_uri(str(archive)))
    write(archive, b"a" * 100, 10**18)
    with open_member(path) as (_fp, _size, data):
        assert data == b"a" * 100
    write(archive, b"b" * 100, 10**18 + 1000)  # same size, rewritten in place
    with open_member(path) as (_fp, _size, data):
        assert data == b"b" * 100
    replacement = tmp_path / "new.zip"
    write(replacement, b"c" * 50, 10**18 + 1000)
    os.replace(replacement, archive)  # another inode
    with open_member(path) as (_fp, _size, data):
        assert data == b"c" * 50
    assert len(parses) == 3


def test_a_forked_child_starts_without_the_parents_archives(many: Path) -> None:
    """The helper process is forked from the Python worker: it must not share the parent's
    open descriptors (and so their file offsets) through the parsed archives."""
    uri = to_file_uri(str(many))
    list_members(uri)
    assert archives._INDEXES
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.write(writer, str(len(archives._INDEXES)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    assert os.read(reader, 16) == b"0"
    os.close(reader)
    os.waitpid(child, 0)
    assert archives._INDEXES  # the parent keeps its own
