"""Files pixels-sql writes under a destination folder: whole or not at all, never outside it."""

from __future__ import annotations

import contextlib
import os


class UnsafePath(ValueError):
    """A relative path that would leave its destination, or a link on the way."""


def folder_under(destination: str, parts: list[str]) -> str:
    """``destination``/``parts`` made folder by folder. The destination itself is the caller's
    (a link there is followed); below it no folder may be a link or a file, so a folder
    replaced by a link to elsewhere cannot take what is written out of the destination."""
    if any(part in ("", ".", "..") or "/" in part or "\0" in part for part in parts):
        raise UnsafePath(f"{'/'.join(parts)!r} is not a plain relative path")
    folder = os.path.realpath(destination)
    os.makedirs(folder, exist_ok=True)
    for part in parts:
        folder = os.path.join(folder, part)
        if os.path.islink(folder) or (os.path.exists(folder) and not os.path.isdir(folder)):
            raise UnsafePath(f"{folder} is a link or not a folder")
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder)
    return folder


def partial_path(target: str) -> str:
    """Where this process writes ``target`` before renaming it into place: a dot name beside
    it (listings skip those). Partials of ``target`` a killed run left (another pid) are
    removed first; writers of one destination take turns (the home's writer lock)."""
    folder, name = os.path.split(target)
    hidden = f".{name}.partial-"
    for stale in os.listdir(folder):
        if stale.startswith(hidden):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, stale))
    return os.path.join(folder, f"{hidden}{os.getpid()}")


def write_under(destination: str, relative: str, data: bytes) -> str:
    """Write ``data`` to ``destination``/``relative`` and return the path: written beside as a
    dot file (listings skip those), flushed to disk, then renamed over the target, so a reader
    sees the old file or the new one, never part of one."""
    parts = relative.split("/")
    folder = folder_under(destination, parts[:-1])
    if parts[-1] in ("", ".", "..") or parts[-1].startswith("."):
        raise UnsafePath(f"{relative!r} does not name a file")
    target = os.path.join(folder, parts[-1])
    if os.path.islink(target):
        raise UnsafePath(f"{target} is a link")
    partial = partial_path(target)
    try:
        with open(partial, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return target


def remove_under(destination: str, path: str) -> bool:
    """Remove the file ``path`` if it lies inside ``destination`` (after resolving links);
    True when it is gone (removed now or absent), False when it is outside."""
    root = os.path.realpath(destination)
    resolved = os.path.realpath(path)
    if os.path.commonpath([root, resolved]) != root or resolved == root:
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(resolved)
    return True
