"""The secrets of a home's ``pixels-sql serve`` (docs/security.md).

Three random secrets in ``<home>/secrets.json`` (mode 0600), made on the first ``serve``:

- ``admin``: dbt, data engineers, beeline/PyHive as user ``admin``. Writes the catalog; files
  only inside the allowed roots; no code of its own on the server.
- ``reader``: analysts and BI tools, as user ``reader``: queries only.
- ``pipeline``: the command line and :func:`pixels_sql.connect` of the home's owner (whoever can
  read the home could run Spark on it anyway), never shown.

The server keeps them in its JVM only (``ClientGuard``), never in a Spark setting: Spark
Connect's Config RPC shows settings to clients (SPARK-58658).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

SECRETS_FILE = "secrets.json"
# Allowed roots the home's owner adds (pixels-sql ingest/run of a folder); the server re-reads it.
ROOTS_FILE = "allowed-paths"
# Users of the JDBC endpoint: the secret decides the role, the user name must say it.
ADMIN_USER = "admin"
READER_USER = "reader"


@dataclass(frozen=True)
class Secrets:
    pipeline: str
    admin: str
    reader: str


def _new() -> Secrets:
    return Secrets(*(secrets.token_urlsafe(32) for _ in range(3)))


def read_secrets(home: Path) -> Secrets | None:
    """The home's secrets, or None when no server made them yet (or they are unreadable)."""
    try:
        values = json.loads((home / SECRETS_FILE).read_text(encoding="utf-8"))
        return Secrets(values["pipeline"], values["admin"], values["reader"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_secrets(home: Path) -> tuple[Secrets, bool]:
    """The home's secrets, made (mode 0600, never group- or world-readable, not even for an
    instant) when there are none; True when they were made now."""
    found = read_secrets(home)
    if found is not None:
        _check_private(home / SECRETS_FILE)
        return found, False
    made = _new()
    home.mkdir(parents=True, exist_ok=True)
    partial = home / f".{SECRETS_FILE}.{os.getpid()}.partial"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(asdict(made), out, indent=2)
        out.write("\n")
    try:
        # Another serve racing for the same home: the first file stays.
        os.link(partial, home / SECRETS_FILE)
    except FileExistsError:
        os.unlink(partial)
        return ensure_secrets(home)
    os.unlink(partial)
    return made, True


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(
            f"{path} is readable by other users (mode {mode:o}): chmod 600 it, or delete it to"
            " have new secrets made"
        )


def add_root(home: Path, folder: str) -> None:
    """Let admin and reader clients of the home's server read under ``folder`` (the folders
    the owner catalogues); a folder already listed is not added again."""
    path = home / ROOTS_FILE
    try:
        known = set(path.read_text(encoding="utf-8").splitlines())
    except FileNotFoundError:
        known = set()
    if folder in known:
        return
    home.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as out:
        out.write(folder + "\n")
