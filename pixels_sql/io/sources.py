"""Where a file's bytes come from: one way to open any path the SQL functions accept.

The header reader and the thumbnail renderer both open files through :func:`open_source`,
never with ``open(path)``: a path is a local file (a plain path, a ``file:`` URI) or a member
of a zip archive (``zip://<member>::<archive>``, archives.py), read in place without extracting
it, or an object in object storage (``s3://``, ``gs://``, ``abfs://``, storage.py), read by
byte ranges. A :class:`Source` gives a seekable file object and its size, the URI its bulk data is
referenced by, and what the compiled header reader can read directly — the file descriptor of
a plain file (``pread``, its fast path) or the bytes of a member held in memory.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pixels_sql.errors import DicomReadError
from pixels_sql.io import archives, storage
from pixels_sql.io.paths import to_file_uri, to_local_path


@dataclass(frozen=True)
class Source:
    """An opened file: ``fp`` is seekable and starts at offset 0."""

    name: str  # how messages name the file: the local path, or the member path
    uri: str  # the base of the BulkDataURIs of its values
    size: int
    fp: BinaryIO
    native: int | bytes | None  # for the compiled reader: a descriptor, the bytes, or None


def display_name(path: str) -> str:
    """The name messages use for ``path``: the local path of a file, a member path as is."""
    return path if archives.is_member_path(path) else to_local_path(path)


@contextlib.contextmanager
def open_source(path: str) -> Iterator[Source]:
    """Open ``path`` for reading. Raises :class:`DicomReadError` (``not_regular``, ``empty``,
    the archive reasons) or ``OSError`` (classified by the caller)."""
    if archives.is_member_path(path):
        with archives.open_member(path) as (fp, size, data):
            if size == 0:
                raise DicomReadError(path, "empty", "the member has zero bytes")
            yield Source(path, path, size, fp, data)
        return
    if storage.is_remote(path):
        with storage.open_object(path) as fp:
            if fp.size == 0:
                raise DicomReadError(path, "empty", "the object has zero bytes")
            # No native reader input: the compiled loop reads descriptors and whole buffers, an
            # object is read through ranged requests by the Python loop.
            yield Source(path, path, fp.size, fp, None)
        return
    local = to_local_path(path)
    status = os.stat(local)
    if not stat.S_ISREG(status.st_mode) and not stat.S_ISDIR(status.st_mode):
        # Opening a named pipe blocks until a writer comes; a device may never end. (A folder
        # fails to open: unreadable.)
        raise DicomReadError(local, "not_regular", "a pipe, socket or device, not a file")
    if status.st_size == 0:
        raise DicomReadError(local, "empty", "the file has zero bytes")
    with open(local, "rb") as fp:
        yield Source(local, to_file_uri(os.path.abspath(local)), status.st_size, fp, fp.fileno())


def read_range(path: str, offset: int, length: int) -> bytes:
    """``length`` bytes of ``path`` from ``offset`` (a BulkDataURI's range)."""
    with open_source(path) as source:
        if offset < 0 or length < 0 or offset + length > source.size:
            raise ValueError(
                f"{source.name}: bytes {offset}..{offset + length} are outside its"
                f" {source.size} bytes"
            )
        source.fp.seek(offset)
        return source.fp.read(length)


def read_content(path: str) -> bytes:
    """Every byte of ``path`` (none for an empty file)."""
    try:
        with open_source(path) as source:
            source.fp.seek(0)
            return source.fp.read(source.size)
    except DicomReadError as exc:
        if exc.reason == "empty":
            return b""
        raise
