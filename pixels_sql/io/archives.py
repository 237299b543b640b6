"""DICOM files inside zip archives, read in place: member paths, listing, checks, opening.

A member is named by a chained path, as fsspec writes it: ``zip://<member>::<archive path>``,
e.g. ``zip://series/001.dcm::file:/data/a.zip``. The archive path may itself be a member path
(a zip inside a zip): ``zip://x.dcm::zip://inner.zip::file:/data/outer.zip``. The member part is
the name as stored in the archive (PKWARE APPNOTE 4.4.17: forward slashes, relative).

Archives are hostile input like any file. Every member is checked before a byte of it is read,
when it is listed and again when it is opened:

- a name that would land outside a destination folder (absolute, ``..``, a drive letter, a
  backslash path, a NUL) or a symbolic link member: ``unsafe_member``;
- an encrypted member (APPNOTE 4.4.4 bit 0; no password is ever tried): ``encrypted``;
- a member that inflates more than :attr:`ArchiveLimits.max_ratio` times (declared sizes), or
  whose compressed data overlaps another member's (the overlapping-files zip bomb): ``zip_bomb``;
- a member over :attr:`ArchiveLimits.max_member_bytes`, or past
  :attr:`ArchiveLimits.max_total_bytes` of the archive's declared content: ``too_large``;
- an archive nested deeper than :attr:`ArchiveLimits.max_depth`: ``too_deep``;
- an archive zipfile cannot read (damaged directory, bad CRC, unknown compression):
  ``corrupt_archive``.

An archive's central directory is parsed once, not once per member read: a process keeps the
last :data:`CACHED_ARCHIVES` archives it opened, parsed and judged (:class:`ArchiveIndex`),
keyed by the archive's path and identity (device, inode, size and modification time of the
file; size and time of an object in storage; for a nested archive, its outermost file's), so a
rewritten archive is parsed again. Listing an archive and reading its 100,000 members costs one
parse (APPNOTE 4.3.12: the directory of N entries is N records; parsing it for each member
read was O(N²)).

Limits are settings (pixels_sql.config: ``PIXELS_SQL_ZIP_MAX_RATIO``,
``PIXELS_SQL_ZIP_MAX_MEMBER_MB``, ``PIXELS_SQL_ZIP_MAX_TOTAL_MB``, ``PIXELS_SQL_ZIP_MAX_DEPTH``,
``PIXELS_SQL_ZIP_MAX_MEMBERS``; their defaults and meanings are documented there).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import shutil
import stat
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from pixels_sql.config import SETTINGS, settings
from pixels_sql.errors import DicomReadError
from pixels_sql.io import storage
from pixels_sql.io.writing import UnsafePath, folder_under, partial_path

PROTOCOL = "zip://"
SEPARATOR = "::"
ARCHIVE_EXTENSIONS = (".zip",)
# Members up to this size are read into memory whole (the compiled header reader then works on
# the bytes); larger ones are streamed through zipfile, never held whole.
IN_MEMORY_MAX_BYTES = 64 * 1024 * 1024
# The compression ratio is only judged for members larger than this: small text members and
# blank images compress far better than 100x and are harmless.
RATIO_FLOOR_BYTES = 1024 * 1024
_MB = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
# Archives kept open and parsed per process. The members of an archive come one after the
# other in a listing (zip_members explodes one archive into consecutive rows), so a handful
# covers a batch that moves from archive to archive, and a nested archive with its outer one.
# Each holds a file descriptor, and a nested archive held in memory up to IN_MEMORY_MAX_BYTES.
CACHED_ARCHIVES = 4


@dataclass(frozen=True)
class ArchiveLimits:
    """The caps applied to every archive (defaults documented in the module docstring)."""

    max_ratio: float = SETTINGS["zip_max_ratio"].default
    max_member_bytes: int = SETTINGS["zip_max_member_bytes"].default
    max_total_bytes: int = SETTINGS["zip_max_total_bytes"].default
    max_depth: int = SETTINGS["zip_max_depth"].default
    max_members: int = SETTINGS["zip_max_members"].default

    @classmethod
    def from_environment(cls) -> ArchiveLimits:
        return cls(
            max_ratio=settings.zip_max_ratio,
            max_member_bytes=settings.zip_max_member_bytes,
            max_total_bytes=settings.zip_max_total_bytes,
            max_depth=settings.zip_max_depth,
            max_members=settings.zip_max_members,
        )


@dataclass(frozen=True)
class Member:
    """One row of an archive's listing: a member path, its size, or why it is not readable."""

    path: str
    length: int | None
    reason: str | None = None
    message: str | None = None

    @property
    def member(self) -> str | None:
        """The member's names from the outermost archive down, joined by ``/`` (None for the
        outermost archive itself): where extraction writes it, below the archive's folder.

        >>> Member("zip://x.dcm::zip://in.zip::file:/a.zip", 1).member
        'in.zip/x.dcm'
        """
        return member_chain(self.path)


def is_member_path(path: str) -> bool:
    return path.startswith(PROTOCOL)


def is_archive_path(path: str) -> bool:
    """Whether ``path`` names a zip archive (by its extension, case-insensitive)."""
    return path.lower().endswith(ARCHIVE_EXTENSIONS)


def member_path(member: str, archive: str) -> str:
    """The path of ``member`` inside the archive at ``archive``.

    >>> member_path("series/001.dcm", "file:/data/a.zip")
    'zip://series/001.dcm::file:/data/a.zip'
    """
    return f"{PROTOCOL}{member}{SEPARATOR}{archive}"


def split_member_path(path: str) -> tuple[str, str]:
    """``(member, archive path)`` of a member path.

    >>> split_member_path("zip://x.dcm::zip://in.zip::file:/a.zip")
    ('x.dcm', 'zip://in.zip::file:/a.zip')
    """
    if not is_member_path(path) or SEPARATOR not in path:
        raise ValueError(f"not a zip member path (zip://<member>::<archive>): {path!r}")
    member, archive = path[len(PROTOCOL) :].split(SEPARATOR, 1)
    return member, archive


def depth(path: str) -> int:
    """How many archives a path is inside (0 for a plain file)."""
    count = 0
    while is_member_path(path):
        count += 1
        path = split_member_path(path)[1]
    return count


def member_chain(path: str) -> str | None:
    """The names of ``path`` inside its outermost archive, joined by ``/`` (None if plain)."""
    names = []
    while is_member_path(path):
        name, path = split_member_path(path)
        names.append(name)
    return "/".join(reversed(names)) or None


def outermost(path: str) -> str:
    """The file system path of the outermost archive holding ``path`` (``path`` if plain)."""
    while is_member_path(path):
        path = split_member_path(path)[1]
    return path


def unsafe_name(name: str) -> str | None:
    """Why extracting a member named ``name`` could write outside the destination, or None.

    >>> unsafe_name("../etc/passwd")
    "the name climbs out of the destination with '..'"
    >>> unsafe_name("series/001.dcm") is None
    True
    """
    if "\0" in name:
        return "the name holds a NUL character"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "the name is an absolute path"
    if "\\" in name:
        # APPNOTE 4.4.17.1: names use forward slashes; a backslash is a Windows path in disguise.
        return "the name holds a backslash (a Windows path)"
    if any(part == ".." for part in name.split("/")):
        return "the name climbs out of the destination with '..'"
    if SEPARATOR in name:
        return f"the name holds {SEPARATOR!r}, which separates archive and member in paths"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    # Unix mode bits live in the high 16 bits of the external attributes (APPNOTE 4.4.15).
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _overlapping(infos: list[zipfile.ZipInfo]) -> set[str]:
    """Names of members whose compressed data runs into the next member's local header."""
    ordered = sorted(infos, key=lambda info: info.header_offset)
    overlapping = set()
    for current, following in itertools.pairwise(ordered):
        # A local header is at least 30 bytes plus the name (APPNOTE 4.3.7).
        data_start = current.header_offset + 30 + len(current.orig_filename.encode("utf-8"))
        if data_start + current.compress_size > following.header_offset:
            overlapping.update((current.filename, following.filename))
    return overlapping


def check_member(
    info: zipfile.ZipInfo,
    limits: ArchiveLimits,
    overlapping: set[str] | frozenset[str] = frozenset(),
) -> tuple[str, str] | None:
    """``(reason, message)`` when the member must not be read, else None."""
    why = unsafe_name(info.filename)
    if why is not None:
        return "unsafe_member", why
    if _is_symlink(info):
        return "unsafe_member", "the member is a symbolic link"
    if info.flag_bits & 0x1:
        return "encrypted", "the member is encrypted (no password is tried)"
    if info.filename in overlapping:
        return "zip_bomb", "the member's compressed data overlaps another member's"
    if info.file_size > limits.max_member_bytes:
        return "too_large", (
            f"the member inflates to {info.file_size} bytes, over the cap of"
            f" {limits.max_member_bytes} (PIXELS_SQL_ZIP_MAX_MEMBER_MB)"
        )
    if info.file_size > RATIO_FLOOR_BYTES:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_ratio:
            return "zip_bomb", (
                f"the member inflates {ratio:.0f} times ({info.compress_size} to"
                f" {info.file_size} bytes), over the cap of {limits.max_ratio:g}"
                " (PIXELS_SQL_ZIP_MAX_RATIO)"
            )
    if info.compress_type not in _READABLE_COMPRESSION:
        return "corrupt_archive", f"compression method {info.compress_type} is not supported"
    return None


_READABLE_COMPRESSION = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)


def judge(
    infos: list[zipfile.ZipInfo], limits: ArchiveLimits
) -> tuple[dict[str, zipfile.ZipInfo], dict[str, tuple[str, str]]]:
    """The archive's file members by name (a name stored twice: the later entry wins, as unzip
    would leave it on disk) and ``{name: (reason, message)}`` for those that must not be read:
    :func:`check_member`, then the running total of declared sizes in directory order."""
    files = [info for info in infos if not info.is_dir()]
    overlapping = _overlapping(files)
    latest = {info.filename: info for info in files}
    problems: dict[str, tuple[str, str]] = {}
    total = 0
    for name, info in latest.items():
        problem = check_member(info, limits, overlapping)
        if problem is None:
            total += info.file_size
            if total > limits.max_total_bytes:
                problem = (
                    "too_large",
                    f"the archive's members add up to more than {limits.max_total_bytes}"
                    " bytes (PIXELS_SQL_ZIP_MAX_TOTAL_MB)",
                )
        if problem is not None:
            problems[name] = problem
    return latest, problems


def list_members(archive: str, limits: ArchiveLimits | None = None) -> list[Member]:
    """One row per file member of the archive at ``archive`` (a local path, ``file:`` URI or
    member path), nested archives expanded; a row with a reason for each member that must not
    be read, and a single row for the archive itself when it cannot be read at all."""
    limits = limits or ArchiveLimits.from_environment()
    rows: list[Member] = []
    _list_into(archive, limits, rows)
    return rows


def archive_refusal(archive: str, limits: ArchiveLimits) -> tuple[str, str] | None:
    """``(reason, message)`` when the archive at ``archive`` is not listed (the listing gives
    it one row, and extraction does not write it): nested too deep, unreadable, or more
    members than :attr:`ArchiveLimits.max_members`. None when it is listed."""
    if depth(archive) >= limits.max_depth:
        return (
            "too_deep",
            f"an archive nested {depth(archive) + 1} deep, over the limit of"
            f" {limits.max_depth} (PIXELS_SQL_ZIP_MAX_DEPTH)",
        )
    try:
        with open_archive(archive) as index:
            count = index.file_count
    except DicomReadError as exc:
        return exc.reason, exc.message
    if count > limits.max_members:
        return (
            "too_large",
            f"the archive lists {count} members, over the cap of"
            f" {limits.max_members} (PIXELS_SQL_ZIP_MAX_MEMBERS)",
        )
    return None


def _list_into(archive: str, limits: ArchiveLimits, rows: list[Member]) -> None:
    refusal = archive_refusal(archive, limits)
    if refusal is not None:
        rows.append(Member(archive, None, *refusal))
        return
    with open_archive(archive) as index:
        latest, problems = index.judged(limits)
        nested = []
        for info in latest.values():
            path = member_path(info.filename, archive)
            problem = problems.get(info.filename)
            if problem is None and is_archive_path(info.filename):
                nested.append(path)
            elif problem is None:
                rows.append(Member(path, info.file_size))
            else:
                rows.append(Member(path, info.file_size, *problem))
    for path in nested:
        _list_into(path, limits, rows)


@dataclass(eq=False)
class ArchiveIndex:
    """An open archive with its central directory parsed (``zip``), judged once per set of
    limits; shared by every reader of the process until :data:`CACHED_ARCHIVES` newer archives
    push it out (it is closed once the last reader using it is done)."""

    zip: zipfile.ZipFile
    stack: contextlib.ExitStack
    users: int = 0
    evicted: bool = False
    _judged: dict[ArchiveLimits, tuple[dict[str, zipfile.ZipInfo], dict[str, tuple[str, str]]]] = (
        field(default_factory=dict)
    )

    @property
    def file_count(self) -> int:
        """File members in the directory (folders left out; a name stored twice counts twice,
        as the directory's records do)."""
        return sum(not info.is_dir() for info in self.zip.infolist())

    def judged(
        self, limits: ArchiveLimits
    ) -> tuple[dict[str, zipfile.ZipInfo], dict[str, tuple[str, str]]]:
        """:func:`judge` of the archive's members under ``limits``, computed once."""
        found = self._judged.get(limits)
        if found is None:
            found = self._judged[limits] = judge(self.zip.infolist(), limits)
        return found


_INDEXES: OrderedDict[tuple[object, ...], ArchiveIndex] = OrderedDict()
_INDEXES_LOCK = threading.Lock()


def _identity(archive: str) -> tuple[object, ...]:
    """What says that the archive at ``archive`` is still the one parsed: its path, and the
    size and modification time (device and inode for a local file) of the file it is in."""
    if is_member_path(archive):
        return ("member", archive, _identity(outermost(archive)))
    if storage.is_remote(archive):
        return ("object", archive, *storage.info(archive))
    from pixels_sql.io.paths import to_local_path

    return ("file", archive, *_file_identity(os.stat(to_local_path(archive))))


def _file_identity(status: os.stat_result) -> tuple[int, ...]:
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def _open_index(archive: str, key: tuple[object, ...]) -> tuple[ArchiveIndex, tuple[object, ...]]:
    """The archive opened and its directory parsed, and its key (for a local file, from the
    descriptor opened: a file replaced since ``key`` was taken is keyed as what was read)."""
    stack = contextlib.ExitStack()
    try:
        if is_member_path(archive):
            fp, _size, _data = stack.enter_context(open_member(archive))
        elif storage.is_remote(archive):
            # Read in place by byte ranges: the central directory, then each member.
            fp = stack.enter_context(storage.open_object(archive))
        else:
            from pixels_sql.io.paths import to_local_path

            # Closed with the stack, when the index leaves the cache (not at a block's end).
            fp = stack.enter_context(open(to_local_path(archive), "rb"))  # noqa: SIM115
            key = ("file", archive, *_file_identity(os.fstat(fp.fileno())))
        opened = stack.enter_context(zipfile.ZipFile(fp))
    except BaseException as exc:
        stack.close()
        if isinstance(exc, (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError)):
            raise DicomReadError(
                archive, "corrupt_archive", f"not a readable zip archive: {exc}"
            ) from exc
        raise
    return ArchiveIndex(opened, stack), key


def _acquire(archive: str) -> ArchiveIndex:
    key = _identity(archive)
    with _INDEXES_LOCK:
        index = _INDEXES.get(key)
        if index is not None:
            _INDEXES.move_to_end(key)
            index.users += 1
            return index
    index, key = _open_index(archive, key)  # parsing: outside the lock
    retired = []
    with _INDEXES_LOCK:
        existing = _INDEXES.get(key)
        if existing is not None:  # another thread parsed it meanwhile: keep one
            existing.users += 1
            retired.append(index)
            index = existing
        else:
            index.users = 1
            _INDEXES[key] = index
            while len(_INDEXES) > CACHED_ARCHIVES:
                _key, old = _INDEXES.popitem(last=False)
                old.evicted = True
                if old.users == 0:
                    retired.append(old)
    for old in retired:
        old.stack.close()
    return index


def _release(index: ArchiveIndex) -> None:
    with _INDEXES_LOCK:
        index.users -= 1
        done = index.evicted and index.users == 0
    if done:
        index.stack.close()


def forget_archives() -> None:
    """Close every archive kept open by this process (each is parsed again on its next use)."""
    with _INDEXES_LOCK:
        indexes = list(_INDEXES.values())
        _INDEXES.clear()
        for index in indexes:
            index.evicted = True
    for index in indexes:
        if index.users == 0:
            index.stack.close()


def _after_fork() -> None:
    # A forked child (the helper process of isolation.py) must not share the parent's open
    # descriptors: their file offsets are shared between the processes, and zipfile seeks.
    global _INDEXES_LOCK
    _INDEXES_LOCK = threading.Lock()
    indexes = list(_INDEXES.values())
    _INDEXES.clear()
    for index in indexes:
        index.evicted = True
    for index in indexes:
        with contextlib.suppress(Exception):
            index.stack.close()


os.register_at_fork(after_in_child=_after_fork)


@contextlib.contextmanager
def open_archive(archive: str) -> Iterator[ArchiveIndex]:
    """The archive at ``archive`` (a local path or URI, or a member path for a nested one),
    opened and parsed once per process while it is unchanged (the module docstring)."""
    index = _acquire(archive)
    try:
        yield index
    finally:
        _release(index)


@contextlib.contextmanager
def open_member(
    path: str, limits: ArchiveLimits | None = None
) -> Iterator[tuple[BinaryIO, int, bytes | None]]:
    """``(file object, size, bytes or None)`` of the member at ``path``, after the checks of
    :func:`check_member`. Members up to :data:`IN_MEMORY_MAX_BYTES` come whole in memory (the
    bytes are the third value); larger ones are streamed and the third value is None."""
    limits = limits or ArchiveLimits.from_environment()
    name, archive = split_member_path(path)
    if depth(path) > limits.max_depth:
        raise DicomReadError(
            path, "too_deep", f"nested deeper than the limit of {limits.max_depth} archives"
        )
    with open_archive(archive) as index:
        opened = index.zip
        try:
            info = opened.getinfo(name)
        except KeyError:
            raise DicomReadError(path, "not_found", f"the archive has no member {name!r}") from None
        problem = index.judged(limits)[1].get(name)
        if problem is not None:
            raise DicomReadError(path, *problem)
        if info.file_size <= IN_MEMORY_MAX_BYTES:
            try:
                # Inflate no further than the declared size: a member lying about it (so that
                # no ratio cap judges it) costs no more than it declares.
                with opened.open(info) as stream:
                    data = stream.read(info.file_size)
                    if len(data) < info.file_size:
                        raise EOFError(f"the member ends after {len(data)} bytes")
                    # Reading on to the end checks the CRC (APPNOTE 4.4.7).
                    if stream.read(1):
                        raise zipfile.BadZipFile("the member inflates past its declared size")
            except _ARCHIVE_READ_ERRORS as exc:
                raise _corrupt_member(path, exc) from exc
            yield io.BytesIO(data), len(data), data
            return
        with opened.open(info) as stream:
            try:
                yield stream, info.file_size, None
            # A bad CRC found at the end of the stream, a deflate stream that does not inflate.
            # (EOFError is left alone: the DICOM readers raise it for a truncated data set.)
            except (zipfile.BadZipFile, zlib.error) as exc:
                raise _corrupt_member(path, exc) from exc


# What zipfile raises for a damaged member: a bad CRC, a stream shorter than declared, a
# compression method it cannot undo, a deflate stream that does not inflate.
_ARCHIVE_READ_ERRORS = (zipfile.BadZipFile, EOFError, NotImplementedError, zlib.error)


def _corrupt_member(path: str, exc: BaseException) -> DicomReadError:
    return DicomReadError(path, "corrupt_archive", f"{type(exc).__name__}: {exc}")


def extract_member(
    path: str, destination: str, relative: str, modified: float | None = None
) -> str:
    """Write the member at ``path`` to ``destination``/``relative`` (folders made as needed) and
    return the file's path. ``relative`` must stay inside ``destination`` (checked again here,
    whatever the caller computed). The file appears whole or not at all (written beside, then
    renamed); with ``modified`` (seconds) it gets that modification time, and a file already
    there with that time and the member's size is left as is, so a re-run writes nothing new.
    """
    if not relative or any(unsafe_name(part) for part in relative.split("/")):
        raise DicomReadError(path, "unsafe_member", f"{relative!r} would leave the destination")
    if is_archive_path(split_member_path(path)[0]):
        # An archive the listing gives one row with a reason (too deep, unreadable, too many
        # members) is not written either: a member that gets a reason writes nothing.
        refusal = archive_refusal(path, ArchiveLimits.from_environment())
        if refusal is not None:
            raise DicomReadError(path, *refusal)
    if any(part in ("", ".", "..") for part in relative.split("/")):
        raise DicomReadError(path, "unsafe_member", f"{relative!r} is not a plain relative path")
    # The destination is the caller's (a link there is followed, as unzip -d does); below it no
    # folder may be a link (io/writing.py).
    parts = relative.split("/")
    try:
        folder = folder_under(destination, parts[:-1])
    except UnsafePath as error:
        raise DicomReadError(path, "unsafe_member", f"{relative!r}: {error}") from None
    target = os.path.join(folder, parts[-1])
    name, archive = split_member_path(path)
    if modified is not None and os.path.isfile(target) and not os.path.islink(target):
        with open_archive(archive) as index:
            try:
                declared: int | None = index.zip.getinfo(name).file_size
            except KeyError:
                declared = None
        status = os.stat(target)
        if status.st_size == declared and int(status.st_mtime) == int(modified):
            return target  # written by an earlier run from the same archive
    partial = partial_path(target)
    with open_member(path) as (stream, _size, data):
        try:
            with open(partial, "wb") as out:
                if data is not None:
                    out.write(data)
                else:
                    shutil.copyfileobj(stream, out, 1024 * 1024)
            if modified is not None:
                os.utime(partial, (modified, modified))
            os.replace(partial, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
    return target
