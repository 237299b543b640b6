"""One process owns a home folder at a time: Derby's embedded metastore admits a single JVM."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from typing import TextIO


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
