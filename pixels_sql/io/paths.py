"""Path helpers: Spark's ``file:`` URIs to local paths and back, and catalog path columns."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import quote

# Separators the seed's `path_tags` column splits on: path separators, dots, dashes, underscores,
# spaces.
_PATH_TAG_SPLIT = re.compile(r"[/\\._\-\s]+")


def to_local_path(path: str) -> str:
    """Return the operating-system path for a Spark file path or ``file:`` URI.

    Spark's file sources report Hadoop paths such as ``file:/data/a b.dcm``: the scheme is
    prefixed but the rest is *not* percent-encoded, so nothing is unquoted here. Databricks'
    ``dbfs:/`` paths map to the ``/dbfs`` mount; other paths are returned unchanged.

    >>> to_local_path("file:/data/a b%20.dcm")
    '/data/a b%20.dcm'
    >>> to_local_path("file:///data/x.dcm")
    '/data/x.dcm'
    >>> to_local_path("/data/x.dcm")
    '/data/x.dcm'
    """
    if path.startswith("file://"):
        return path[len("file://") :]
    if path.startswith("file:"):
        return path[len("file:") :]
    if path.startswith("dbfs:/"):
        return "/dbfs/" + path[len("dbfs:/") :].lstrip("/")
    return path


def to_file_uri(local_path: str) -> str:
    """Return the RFC 8089 ``file://`` URI of an absolute local path (percent-encoded).

    >>> to_file_uri("/data/a b.dcm")
    'file:///data/a%20b.dcm'
    """
    return "file://" + quote(local_path, safe="/:@!$&'()*+,;=-._~")


def relative_path(path: str, base: str) -> str:
    """Return ``path`` relative to the catalog ``base`` directory (both may be URIs).

    >>> relative_path("file:/data/ct/1.dcm", "/data")
    'ct/1.dcm'
    """
    local = PurePosixPath(to_local_path(path))
    root = PurePosixPath(to_local_path(base))
    try:
        return str(local.relative_to(root))
    except ValueError:
        return str(local)


def extension(path: str) -> str:
    """Return the lower-case characters after the last dot of the file name ('' if none).

    >>> extension("file:/data/IM0001.DCM")
    'dcm'
    >>> extension("/data/IM0001")
    ''
    """
    name = PurePosixPath(to_local_path(path)).name
    return name.rsplit(".", 1)[1].lower() if "." in name else ""


def path_tags(path: str) -> list[str]:
    """Split a path into the words of its folders and file name (the seed's ``path_tags``).

    >>> path_tags("file:/data/CT-head/img_01.dcm")
    ['data', 'CT', 'head', 'img', '01', 'dcm']
    """
    return [part for part in _PATH_TAG_SPLIT.split(to_local_path(path)) if part]
