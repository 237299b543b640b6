"""Object storage (``s3://``, ``gs://``, ``abfs(s)://``) through fsspec: listing and ranged reads.

A header is a few kilobytes at the start of an object that may hold hundreds of megabytes of
pixel data, so an object is never downloaded whole: :class:`RangedFile` is a seekable file whose
reads become HTTP range requests (one window of bytes, grown forward on demand), and the header
readers and the thumbnail renderer read it as they read a local file (sources.py). Listing asks
the store for names, sizes and times page by page (1,000 keys a request on S3) — never one request
per object — and lists the first level's prefixes concurrently.

File systems come from the optional extras (``pip install 'pixels-sql[s3]'``, ``[gcs]``,
``[azure]``: s3fs, gcsfs, adlfs). Credentials and endpoints are configured the standard way of
each store, never in SQL: for S3 the AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``...),
which Spark hands to its Python workers (``spark.executorEnv.<NAME>`` on a cluster;
pixels_sql.session maps Hadoop's ``fs.s3a.*`` settings onto them). Throttling (S3's ``503 Slow
Down``) is retried with exponential backoff and jitter: botocore's ``standard`` retry mode with
:data:`S3_MAX_ATTEMPTS` attempts unless ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS`` say otherwise;
gcsfs and adlfs retry throttling themselves.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pixels_sql.io.ranged import RangedReader

# URI scheme -> (fsspec protocol, the package implementing it, the pixels-sql extra installing it)
SCHEMES: dict[str, tuple[str, str, str]] = {
    "s3": ("s3", "s3fs", "s3"),
    "s3a": ("s3", "s3fs", "s3"),
    "gs": ("gcs", "gcsfs", "gcs"),
    "gcs": ("gcs", "gcsfs", "gcs"),
    "abfs": ("abfs", "adlfs", "azure"),
    "abfss": ("abfs", "adlfs", "azure"),
    "az": ("abfs", "adlfs", "azure"),
}
# Attempts per request (the first included) when the AWS variables do not set a retry policy.
S3_MAX_ATTEMPTS = 10
# The first read of an object fetches at least this much: a typical header fits, and one request
# costs far more time than its bytes (a 5 MB object: 1.25%).
MIN_FETCH_BYTES = 64 * 1024
# A read this close after the window continues it (the window grows) instead of jumping: a
# thumbnail's subsampled rows read forward through one frame in a few requests, not one per row.
FORWARD_GAP_BYTES = 4 * 1024 * 1024
# The window keeps at most this many bytes (its start is dropped as reads move forward).
MAX_WINDOW_BYTES = 32 * 1024 * 1024
# Prefixes of the first level listed at once (each one is a paginated listing of its own).
LIST_THREADS = 16

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class StorageUnavailable(OSError):
    """The file system package for a scheme is not installed. An OSError with an errno, so that
    a file read meanwhile is recorded ``unreadable`` and read again by the next ingest."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSYS, message)

    def __str__(self) -> str:
        return str(self.strerror)


def scheme(path: str) -> str | None:
    """The object-storage scheme of ``path`` (lower case), None for any other path.

    >>> scheme("s3://bucket/a.dcm"), scheme("/data/a.dcm"), scheme("zip://a::s3://b/c.zip")
    ('s3', None, None)
    """
    match = _SCHEME.match(path)
    if match is None:
        return None
    name = match.group(1).lower()
    return name if name in SCHEMES else None


def is_remote(path: str) -> bool:
    """Whether ``path`` names an object in object storage."""
    return scheme(path) is not None


_FILESYSTEMS: dict[tuple[int, str], Any] = {}
_FILESYSTEMS_LOCK = threading.Lock()


def filesystem(path: str) -> Any:
    """The fsspec file system for ``path``'s scheme, made once per process."""
    name = scheme(path)
    if name is None:
        raise ValueError(f"not an object-storage path: {path!r}")
    protocol, package, extra = SCHEMES[name]
    # A forked process must not share the parent's event loop and connections.
    key = (os.getpid(), protocol)
    with _FILESYSTEMS_LOCK:
        if key not in _FILESYSTEMS:
            try:
                import fsspec

                cls = fsspec.get_filesystem_class(protocol)
            except (ImportError, ValueError) as exc:
                raise StorageUnavailable(
                    f"reading {name}:// paths needs the {package} package:"
                    f" pip install 'pixels-sql[{extra}]'"
                ) from exc
            # skip_instance_cache: fsspec's own cache is keyed by arguments, not process.
            _FILESYSTEMS[key] = cls(skip_instance_cache=True, **_options(protocol))
        return _FILESYSTEMS[key]


def _options(protocol: str) -> dict[str, Any]:
    # No listings cache: a long-lived process (pixels-sql serve) must see new objects.
    options: dict[str, Any] = {"use_listings_cache": False}
    if protocol != "s3":
        return options
    if not os.environ.get("AWS_RETRY_MODE") and not os.environ.get("AWS_MAX_ATTEMPTS"):
        # botocore's default ("legacy", 5 attempts) gives up on a throttled burst too soon.
        options["config_kwargs"] = {
            "retries": {"mode": "standard", "max_attempts": S3_MAX_ATTEMPTS}
        }
    return options


def _store_error(path: str, exc: BaseException) -> OSError:
    """What the readers see of a failed request: FileNotFoundError and PermissionError as they
    are (reasons not_found / unreadable), anything else (network, retries exhausted) an OSError
    with an errno, so that it is recorded as ``unreadable`` (retried by the next ingest) and
    never as a property of the bytes (truncated, corrupt)."""
    if isinstance(exc, (FileNotFoundError, PermissionError)):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc
    return OSError(errno.EIO, f"{type(exc).__name__}: {exc}", path)


def info(path: str) -> tuple[int, datetime | None]:
    """(size in bytes, last modification) of the object at ``path``."""
    fs = filesystem(path)
    try:
        details = fs.info(path)
    except Exception as exc:
        raise _store_error(path, exc) from exc
    if details.get("type") == "directory":
        raise IsADirectoryError(errno.EISDIR, "a prefix, not an object", path)
    return int(details["size"]), _modified(details)


class RangedFile(RangedReader):
    """A read-only, seekable view of one object whose reads are range requests.

    One window of bytes is kept: a read inside it costs nothing, a read just after it (within
    :data:`FORWARD_GAP_BYTES`) grows it, any other read replaces it. Every request fetches at
    least :data:`MIN_FETCH_BYTES`. ``requests`` and ``fetched`` count what was asked of the store.
    """

    def __init__(self, path: str, size: int, fs: Any = None) -> None:
        super().__init__(size, path)
        self.path = path
        self._fs = fs if fs is not None else filesystem(path)
        self._start = 0
        self._window = bytearray()
        self.requests = 0
        self.fetched = 0

    # What the header reader asks for at a time (fastmeta._Reader): less than a request
    # fetches, so parsing the header does not grow the window past it.
    read_chunk = 4096

    def read_range(self, position: int, end: int) -> bytes:
        self._cover(position, end)
        offset = position - self._start
        return bytes(self._window[offset : offset + end - position])

    def _cover(self, position: int, end: int) -> None:
        """Make bytes ``position..end`` part of the window."""
        window_end = self._start + len(self._window)
        if self._start <= position and end <= window_end:
            return
        if self._start <= position <= window_end + FORWARD_GAP_BYTES and self._window:
            fetch_to = min(self.size, max(end, window_end + MIN_FETCH_BYTES))
            self._window += self._fetch(window_end, fetch_to)
            excess = len(self._window) - MAX_WINDOW_BYTES
            if excess > 0 and position - self._start >= excess:
                del self._window[:excess]
                self._start += excess
            return
        # Near the start (a header read begins at the preamble, byte 128) the window starts at
        # 0, so that the preamble, the header and what follows it come in one request.
        start = 0 if position < MIN_FETCH_BYTES else position
        fetch_to = min(self.size, max(end, start + MIN_FETCH_BYTES))
        self._window = bytearray(self._fetch(start, fetch_to))
        self._start = start

    def _fetch(self, start: int, end: int) -> bytes:
        try:
            data = self._fs.cat_file(self.path, start=start, end=end)
        except Exception as exc:
            raise _store_error(self.path, exc) from exc
        if len(data) != end - start:
            # The object changed (shorter) since it was listed and sized.
            raise OSError(
                errno.EIO,
                f"asked for bytes {start}..{end}, got {len(data)}: the object changed",
                self.path,
            )
        self.requests += 1
        self.fetched += len(data)
        return data


def open_object(path: str) -> RangedFile:
    """The object at ``path`` as a :class:`RangedFile` (one metadata request for its size)."""
    size, _modified_at = info(path)
    return RangedFile(path, size)


@dataclass(frozen=True)
class Entry:
    """One listed object, or (``reason`` set) a prefix that could not be listed."""

    path: str
    modification_time: datetime | None
    length: int | None
    reason: str | None = None
    message: str | None = None


def list_objects(path: str, glob: str = "*", recursive: bool = True) -> Iterator[Entry]:
    """Every object under ``path`` (the object itself when it names one), as ``list_files``
    lists a folder: names starting with ``.`` are left out (and prefixes starting with one not
    entered), zero-byte objects are listed, ``glob`` filters file names, ``recursive=False``
    keeps the objects directly under ``path``. Sorted by path. A prefix that cannot be listed
    is one entry with reason ``unreadable``; a path naming nothing raises ``ValueError``.

    The first level is listed with a delimiter and each of its prefixes then listed flat
    (paginated, no per-object request) on :data:`LIST_THREADS` threads.
    """
    name = scheme(path)
    if name is None:
        raise ValueError(f"not an object-storage path: {path!r}")
    fs = filesystem(path)
    matcher = glob_matcher(glob)
    root = fs._strip_protocol(path).rstrip("/")
    uri = _namer(path, root, name)
    try:
        top = fs.ls(root, detail=True, refresh=True)
    except FileNotFoundError:
        top = []
    except Exception as exc:
        raise _list_error(path, exc) from exc
    if not top:
        try:
            details = fs.info(root)
        except FileNotFoundError:
            raise ValueError(f"list_files: path does not exist: {path}") from None
        except Exception as exc:
            raise _list_error(path, exc) from exc
        if details.get("type") != "directory":
            yield from _entries([details], uri, matcher)
        return
    files = [item for item in top if item.get("type") != "directory"]
    if len(top) == 1 and files and files[0]["name"].rstrip("/") == root:
        yield from _entries(files, uri, matcher)  # ``path`` names one object
        return
    results: list[Entry] = list(_entries(files, uri, matcher, under=root))
    folders = [
        item["name"].rstrip("/")
        for item in top
        if item.get("type") == "directory" and not _hidden_name(item["name"].rstrip("/"))
    ]
    if recursive and folders:
        with ThreadPoolExecutor(max_workers=min(LIST_THREADS, len(folders))) as pool:
            for found in pool.map(lambda folder: _find(fs, folder, uri, matcher), folders):
                results.extend(found)
    results.sort(key=lambda entry: entry.path)
    yield from results


def _namer(path: str, root: str, name: str) -> Callable[[str], str]:
    """Key -> URI, spelt as the caller spelt ``path`` (its scheme, an ``abfs://`` account)."""
    base = path.rstrip("/")

    def uri(key: str) -> str:
        if key == root:
            return base
        if key.startswith(root + "/"):
            return base + key[len(root) :]
        return f"{name}://{key}"

    return uri


def _find(
    fs: Any, folder: str, uri: Callable[[str], str], matcher: re.Pattern[str] | None
) -> list[Entry]:
    try:
        found = fs.find(folder, detail=True, withdirs=False)
    except Exception as exc:
        return [Entry(uri(folder), None, None, "unreadable", f"cannot list: {exc}")]
    return list(_entries(found.values(), uri, matcher, under=folder))


def _entries(
    items: Any,
    uri: Callable[[str], str],
    matcher: re.Pattern[str] | None,
    under: str | None = None,
) -> Iterator[Entry]:
    for item in items:
        key = item["name"]
        if key.endswith("/"):
            continue  # a "folder" marker object some tools write
        # Only the part below the listed folder counts: the user may name a hidden folder.
        if under and key.startswith(under + "/"):
            relative = key[len(under) + 1 :]
        else:
            relative = key.rsplit("/", 1)[-1]
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        file_name = key.rsplit("/", 1)[-1]
        if matcher is not None and not matcher.fullmatch(file_name):
            continue
        yield Entry(uri(key), _modified(item), int(item.get("size") or 0))


def _hidden_name(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith(".")


def _list_error(path: str, exc: BaseException) -> Exception:
    if isinstance(exc, PermissionError):
        return ValueError(f"list_files: cannot list {path}: permission denied ({exc})")
    return ValueError(f"list_files: cannot list {path}: {type(exc).__name__}: {exc}")


def _modified(details: dict[str, Any]) -> datetime | None:
    for key in ("LastModified", "mtime", "updated", "last_modified"):
        value = details.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, tz=timezone.utc)
        if isinstance(value, str) and value:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def glob_matcher(glob: str | None) -> re.Pattern[str] | None:
    """A regular expression for a file-name glob as ``list_files`` takes it (Java's glob
    syntax: ``*``, ``?``, ``[...]``, ``{a,b}``); None for ``*`` (everything).

    >>> bool(glob_matcher("*.{dcm,DCM}").fullmatch("a.DCM"))
    True
    """
    if glob is None or glob == "*":
        return None
    parts: list[str] = []
    index = 0
    depth = 0
    while index < len(glob):
        char = glob[index]
        if char == "{":
            depth += 1
            parts.append("(?:")
        elif char == "}" and depth:
            depth -= 1
            parts.append(")")
        elif char == "," and depth:
            parts.append("|")
        elif char == "[":
            end = glob.find("]", index + 1)
            if end < 0:
                raise ValueError(f"list_files: unclosed [ in glob {glob!r}")
            body = glob[index + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            parts.append("[" + body.replace("\\", "\\\\") + "]")
            index = end
        elif char == "\\" and index + 1 < len(glob):
            index += 1
            parts.append(re.escape(glob[index]))
        else:
            parts.append(fnmatch.translate(char)[4:-3] if char in "*?" else re.escape(char))
        index += 1
    if depth:
        raise ValueError(f"list_files: unclosed {{ in glob {glob!r}")
    return re.compile("".join(parts), re.DOTALL)


# Hadoop's S3A settings (what a Spark user sets for s3a://) -> the AWS variables fsspec's s3fs
# (botocore) reads.
S3A_VARIABLES = {
    "fs.s3a.endpoint": "AWS_ENDPOINT_URL",
    "fs.s3a.access.key": "AWS_ACCESS_KEY_ID",
    "fs.s3a.secret.key": "AWS_SECRET_ACCESS_KEY",
    "fs.s3a.session.token": "AWS_SESSION_TOKEN",
    "fs.s3a.endpoint.region": "AWS_DEFAULT_REGION",
}


def s3a_environment(conf: dict[str, str]) -> dict[str, str]:
    """The AWS variables that Spark settings ``spark.hadoop.fs.s3a.*`` stand for, for the Python
    workers (``spark.executorEnv.<NAME>``); a variable set explicitly there is kept.

    >>> s3a_environment({"spark.hadoop.fs.s3a.endpoint": "minio:9000",
    ...                  "spark.hadoop.fs.s3a.connection.ssl.enabled": "false"})
    {'AWS_ENDPOINT_URL': 'http://minio:9000'}
    """
    variables: dict[str, str] = {}
    for setting, variable in S3A_VARIABLES.items():
        value = conf.get(f"spark.hadoop.{setting}")
        if value is None or f"spark.executorEnv.{variable}" in conf:
            continue
        if variable == "AWS_ENDPOINT_URL" and "://" not in value:
            # S3A takes a bare host; its scheme follows fs.s3a.connection.ssl.enabled.
            ssl = conf.get("spark.hadoop.fs.s3a.connection.ssl.enabled", "true").lower()
            value = ("https://" if ssl != "false" else "http://") + value
        variables[variable] = value
    return variables
