"""One process owns a home folder at a time (Derby's embedded metastore admits a single JVM),
and one run writes its catalog at a time."""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from pixels_sql.config import SETTINGS, SettingError, settings


class HomeInUseError(Exception):
    """Another live process holds the home folder."""


class HomeLock:
    """One process per home folder: Derby's embedded metastore admits a single JVM."""

    def __init__(
        self,
        home: Path,
        holder: str = "pixels-sql",
        name: str = ".pixels-sql.lock",
        why: str = "its embedded Derby metastore admits one process at a time",
    ) -> None:
        self.path = home / name
        self.why = why
        self.holder = holder
        self._handle: TextIO | None = None

    def __enter__(self) -> HomeLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # held for the process lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise HomeInUseError(
                f"{self.path.parent} is in use by {holder}: {self.why}."
                " Wait for it to finish, or use another --home."
            ) from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            # A holder that exits clears the file: text left in it is from a killed process
            # (the kernel released its lock when it died).
            print(
                f"pixels-sql: taking over {self.path.parent} from {previous}, which ended"
                " without releasing it",
                file=sys.stderr,
            )
        handle.seek(0)
        handle.truncate()
        handle.write(f"{self.holder} pid {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            self._handle.close()


# -- one writer of the catalog at a time ---------------------------------------------------------

# The lock every run that writes the pipeline's tables takes, in whatever process it runs: the
# CLI (embedded, or a client of `pixels-sql serve`), the server's STOW-RS landing ingest, a
# stream's micro-batches, Catalog.save. flock(2) locks belong to an open file description, so
# two threads of one process exclude each other as two processes do.
WRITER_LOCK = ".pixels-sql.pipeline.lock"
WRITER_WAIT_ENV = SETTINGS["writer_wait"].variable
_POLL_SECONDS = 0.25
_process_holder = "a pixels-sql run"
_held: dict[Path, tuple[int, int, TextIO]] = {}  # lock file -> (thread id, depth, handle)
_held_lock = threading.Lock()


# The folder name of a home when none is named, and what every home has once a Spark has used
# it: its metastore.
HOME_NAME = "pixels-home"
HOME_MARK = "metastore_db"


class WriterBusyError(HomeInUseError):
    """Another writer held the catalog for longer than this one would wait."""


def set_process_holder(text: str) -> None:
    """How this process names itself to writers waiting for it (e.g. ``pixels-sql ingest``)."""
    global _process_holder
    _process_holder = text


def home_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """Folder holding the metastore, the warehouse and Spark's scratch space: ``home``, else
    ``$PIXELS_SQL_HOME``, else :func:`nearest_home` of the working folder."""
    chosen = home or settings.home
    if chosen is None:
        return nearest_home(Path.cwd())
    return Path(chosen).expanduser().resolve()


def nearest_home(start: Path) -> Path:
    """The home a command run in ``start`` uses when none is named: the first ``pixels-home``
    folder that is a home (has a metastore) in ``start`` or a folder above it, as git finds
    its repository; else ``start/pixels-home``, where a command that writes makes one."""
    start = start.resolve()
    for folder in (start, *start.parents):
        candidate = folder / HOME_NAME
        if is_home(candidate):
            return candidate
    return start / HOME_NAME


def is_home(folder: Path) -> bool:
    """Whether ``folder`` is a pixels-sql home: a Spark has used it (its metastore exists)."""
    return metastore_dir(folder).is_dir()


def metastore_dir(home: Path) -> Path:
    """The home's embedded Derby metastore."""
    return home / HOME_MARK


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: it exists and is not a zombie (ended, not yet reaped by
    its parent). A process of another user counts as running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def writer_wait() -> float:
    """The wait of a command for another writer: ``$PIXELS_SQL_WRITER_WAIT`` seconds, or 600."""
    try:
        return settings.writer_wait
    except SettingError as exc:
        raise HomeInUseError(str(exc)) from None


def _say_on_stderr(message: str) -> None:
    print(f"pixels-sql: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def catalog_writer(
    home: Path,
    *,
    holder: str | None = None,
    wait: float | None = None,
    say: Callable[[str], None] = _say_on_stderr,
) -> Iterator[None]:
    """Hold the home's writer lock for the block: wait for the writer holding it (``say``ing
    once what it waits for) at most ``wait`` seconds (None: ``writer_wait()``; ``math.inf``:
    as long as it takes), then raise :class:`WriterBusyError`. Re-entrant in one thread (the
    CLI's pipeline run takes it around the statements whose upkeep takes it again)."""
    path = (home / WRITER_LOCK).resolve()
    me = threading.get_ident()
    with _held_lock:
        held = _held.get(path)
        if held is not None and held[0] == me:
            _held[path] = (me, held[1] + 1, held[2])
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_lock:
                owner, depth, handle = _held[path]
                _held[path] = (owner, depth - 1, handle)
        return
    handle = _acquire(path, holder or _process_holder, writer_wait() if wait is None else wait, say)
    with _held_lock:
        _held[path] = (me, 1, handle)
    try:
        yield
    finally:
        with _held_lock:
            del _held[path]
        handle.seek(0)
        handle.truncate()
        handle.close()  # releases the lock


def _acquire(path: Path, holder: str, wait: float, say: Callable[[str], None]) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held until the writer's block ends
    started = time.monotonic()
    waiting_for = None
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            pass
        if waiting_for is None:
            handle.seek(0)
            waiting_for = handle.read().strip() or "another writer"
            bound = "" if math.isinf(wait) else f" (at most {wait:.0f} s; {WRITER_WAIT_ENV})"
            say(
                f"waiting for {waiting_for} to finish writing the catalog of {path.parent}:"
                f" one writer at a time{bound}"
            )
        if time.monotonic() - started >= wait:
            handle.close()
            raise WriterBusyError(
                f"{path.parent}: gave up after {wait:.0f} s waiting for {waiting_for} to finish"
                f" writing the catalog (one writer at a time; {WRITER_WAIT_ENV} sets the wait)"
            )
        time.sleep(_POLL_SECONDS)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{holder} (pid {os.getpid()})")
    handle.flush()
    return handle
