"""How a process finds the ``pixels-sql serve`` that owns a home, and connects to it.

``serve`` writes ``<home>/server.json`` once both endpoints listen and removes it when it stops.
A file left by a killed server names a process that no longer exists, or a port nothing
listens on: it is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pixels_sql.home import home_dir, process_alive

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

STATE_FILE = "server.json"
# How long a starting engine may take from its socket to its state file (its allowed roots
# read from the catalog, Spark Connect started): seconds, or minutes on a large catalog.
STARTING_ENGINE_WAIT = 300.0


@dataclass(frozen=True)
class ServerInfo:
    """Where a running ``serve`` listens (what ``server.json`` holds)."""

    pid: int
    host: str
    jdbc_port: int
    connect_port: int
    home: str
    http_port: int | None = None  # DICOMweb and the viewer (older servers: None)

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:hive2://{url_host(self.host)}:{self.jdbc_port}/default"

    @property
    def connect_url(self) -> str:
        return f"sc://{url_host(self.host)}:{self.connect_port}"

    @property
    def http_url(self) -> str | None:
        if self.http_port is None:
            return None
        return f"http://{url_host(self.host)}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str | None:
        return None if self.http_url is None else f"{self.http_url}/dicomweb"

    def write(self, home: Path) -> None:
        path = home / STATE_FILE
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        partial.replace(path)  # readers never see half a file


def url_host(host: str) -> str:
    """How a client on this machine names a server bound to ``host`` in a URL."""
    # A server bound to every address is reached on loopback from this machine.
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def running_server(home: str | os.PathLike[str] | None = None) -> ServerInfo | None:
    """The live server of ``home``, or None (no state file, or one left by a dead server).
    A warm engine takes its owner's commands before its endpoints listen (servers/engine.py):
    while its socket answers and it has no state file yet, this waits for the file."""
    from pixels_sql.servers import engine

    folder = home_dir(home)
    deadline = time.monotonic() + STARTING_ENGINE_WAIT
    while (
        not (folder / STATE_FILE).exists()
        # The engine's own commands do not wait for the engine they run in.
        and not engine.serves_here(folder)
        and engine.is_running(folder)
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    return _live_state(folder)


def _live_state(folder: Path) -> ServerInfo | None:
    try:
        info = ServerInfo(**json.loads((folder / STATE_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    if not process_alive(info.pid) or not is_listening(info.host, info.connect_port):
        return None
    return info


def remove_state(home: Path, pid: int) -> None:
    """Remove ``server.json`` if it is this server's (a newer server may have replaced it)."""
    path = home / STATE_FILE
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def is_listening(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a server bound to ``host`` accepts connections on ``port`` from this machine."""
    target = url_host(host).strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET) as probe:
        probe.settimeout(timeout)
        return probe.connect_ex((target, port)) == 0


# Connections that keep the engines this process uses from stopping as idle (servers/engine.py
# ``hold``): open until the process ends.
_LEASES: list[socket.socket] = []


def connect(home: str | os.PathLike[str] | None = None) -> SparkSession:
    """A Spark Connect session on the ``serve`` or warm engine that owns ``home`` (its own
    temp views and settings; the server's tables and functions), with the home's pipeline
    secret: whoever reads the home is its owner. When none runs, the home's engine is started
    (as the ``pixels-sql`` commands start it; PIXELS_SQL_ENGINE=off: LookupError instead), and
    it does not stop as idle while this process runs."""
    from pixels_sql.config import settings
    from pixels_sql.servers import engine

    folder = home_dir(home)
    info = running_server(folder)
    if info is None:
        if not settings.engine:
            raise LookupError(f"no pixels-sql serve is running on {folder}")
        engine.ensure_running(
            folder,
            master="local[*]",
            idle_timeout=settings.idle_timeout,
            say=lambda text: print(f"pixels-sql: {text}", file=sys.stderr, flush=True),
        )
        info = running_server(folder)
        if info is None:
            raise LookupError(f"the engine of {folder} started but does not answer")
    lease = engine.hold(folder)
    if lease is not None:
        _LEASES.append(lease)
    return connect_server(info)


def connect_server(info: ServerInfo) -> SparkSession:
    """A new Spark Connect session on the server ``info`` describes, as the home's owner."""
    from pixels_sql.servers.secrets import read_secrets

    found = read_secrets(Path(info.home))
    spark = connect_to(info.connect_url, None if found is None else found.pipeline)
    try:
        spark.version  # noqa: B018 - one round trip: a refused secret fails here, in one line
    except Exception as exc:
        details = re.search(r'details = "([^"]*)"', str(exc))
        with contextlib.suppress(Exception):
            spark.stop()
        raise PermissionError(details.group(1) if details else str(exc).splitlines()[0]) from None
    return spark


def connect_to(url: str, token: str | None = None) -> SparkSession:
    """A new Spark Connect session on ``url`` (``sc://host:port``), with a secret of the
    server's (``pixels-sql token``) unless it runs with ``--no-auth``."""
    from pyspark.sql import SparkSession

    target = f"{url}/;session_id={uuid.uuid4()}"
    if token is not None:
        # PySpark sends a token only over TLS, or over gRPC's local credentials, which it uses
        # for the host name "localhost" alone: a loopback server is reached by that name.
        target = target.replace("sc://127.0.0.1:", "sc://localhost:", 1)
        target += f";token={token}"
    # A fresh Builder and session id: the shared builder would hand back an earlier session.
    return SparkSession.Builder().remote(target).create()
