"""Connection limits of the DICOMweb HTTP server, enforced when a connection is accepted.

uvicorn's HTTP/1.1 protocol (h11) has no limit on open connections and no timeout for a request
head: a connection that sends nothing, or a header a byte at a time, is kept open for ever (its
keep-alive timeout starts only after a response). 19,992 such connections took the process to
its file descriptor limit (EMFILE) and searches timed out. Here every connection is counted
per client address and in all (``max_connections_per_client``, ``max_connections``); a new
connection at a cap takes the place of the oldest *idle* one — opened or answered and with no
request in progress — so that a flood of half-open connections cannot lock others out; if every
connection at the cap is busy, the new one is closed. An idle connection is closed after
``header_timeout`` seconds.

A connection whose request bytes wait in the kernel, not yet read, is not taken for idle: the
event loop accepts connections in batches of up to the listen backlog before it reads any of
them, and in a flood from one address the oldest idle connection is often a well-behaved
client's, accepted a moment ago with its request already sent.

All of this runs on the server's event loop (protocol callbacks and the ASGI application both
do), so the bookkeeping needs no lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import struct
import termios
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pixels_sql.servers.dicomweb.limits import HttpLimits

log = logging.getLogger("pixels_sql.dicomweb")

Key = tuple[str, int]
SWEEP_SECONDS = 1.0
# Idle connections looked at, oldest first, for one that has sent nothing unread.
EVICTION_CANDIDATES = 64


@dataclass(eq=False)
class Connection:
    key: Key
    transport: asyncio.BaseTransport
    idle_since: float = field(default_factory=time.monotonic)
    busy: bool = False


@dataclass
class ConnectionStats:
    """Counts since the start, for the log and the benchmark."""

    refused: int = 0  # closed at once: at a cap with no idle connection to replace
    evicted: int = 0  # idle connections closed to make room for a new one
    timed_out: int = 0  # idle connections closed after header_timeout


class ConnectionGuard:
    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.stats = ConnectionStats()
        self._open: dict[Key, Connection] = {}
        self._per_client: dict[str, int] = {}
        # Idle connections oldest first (dicts keep insertion order), in all and per client.
        self._idle: dict[Key, Connection] = {}
        self._idle_per_client: dict[str, dict[Key, Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def open_count(self) -> int:
        return len(self._open)

    # -- from the protocol -------------------------------------------------------------------

    def opened(self, key: Key, transport: asyncio.BaseTransport) -> bool:
        """Count a new connection; False if it must be closed (a cap, nothing idle to close)."""
        if self._sweeper is None:
            self._schedule_sweep()
        host = key[0]
        at_client_cap = self._per_client.get(host, 0) >= self.limits.max_connections_per_client
        if at_client_cap and not self._evict(self._idle_per_client.get(host, {})):
            self.stats.refused += 1
            return False
        if len(self._open) >= self.limits.max_connections and not self._evict(self._idle):
            self.stats.refused += 1
            return False
        connection = Connection(key, transport)
        self._open[key] = connection
        self._per_client[host] = self._per_client.get(host, 0) + 1
        self._set_idle(connection)
        return True

    def closed(self, key: Key, transport: asyncio.BaseTransport | None = None) -> None:
        """Forget a connection (``transport``: only if the key is still that connection's; a
        closed one's address may be taken again before asyncio reports it lost)."""
        connection = self._open.get(key)
        if connection is None or (transport is not None and connection.transport is not transport):
            return
        del self._open[key]
        host = key[0]
        remaining = self._per_client[host] - 1
        if remaining:
            self._per_client[host] = remaining
        else:
            del self._per_client[host]
        self._unset_idle(connection)

    # -- from the application ----------------------------------------------------------------

    def request_started(self, key: Any) -> None:
        connection = self._open.get(key) if isinstance(key, tuple) else None
        if connection is not None:
            connection.busy = True
            self._unset_idle(connection)

    def request_ended(self, key: Any) -> None:
        connection = self._open.get(key) if isinstance(key, tuple) else None
        if connection is not None:
            connection.busy = False
            connection.idle_since = time.monotonic()
            self._set_idle(connection)

    def abort(self, key: Any) -> None:
        """Close a connection now (a client that does not read its response)."""
        connection = self._open.get(key) if isinstance(key, tuple) else None
        if connection is not None:
            connection.transport.abort()  # type: ignore[attr-defined]
            self.closed(key)

    # -- inside ------------------------------------------------------------------------------

    def _set_idle(self, connection: Connection) -> None:
        self._idle[connection.key] = connection
        self._idle_per_client.setdefault(connection.key[0], {})[connection.key] = connection

    def _unset_idle(self, connection: Connection) -> None:
        self._idle.pop(connection.key, None)
        per_client = self._idle_per_client.get(connection.key[0])
        if per_client is not None:
            per_client.pop(connection.key, None)
            if not per_client:
                del self._idle_per_client[connection.key[0]]

    def _evict(self, idle: dict[Key, Connection]) -> bool:
        """Close the oldest connection of ``idle`` that has no request bytes waiting; False if
        there is none."""
        for number, connection in enumerate(idle.values()):
            if number == EVICTION_CANDIDATES:
                return False
            if not _has_unread_bytes(connection.transport):
                connection.transport.abort()  # type: ignore[attr-defined]
                self.closed(connection.key)
                self.stats.evicted += 1
                return True
        return False

    def _schedule_sweep(self) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._sweep)

    def _sweep(self) -> None:
        deadline = time.monotonic() - self.limits.header_timeout
        while self._idle:
            oldest = next(iter(self._idle.values()))
            if oldest.idle_since > deadline:
                break
            oldest.transport.abort()  # type: ignore[attr-defined]
            self.closed(oldest.key)
            self.stats.timed_out += 1
        self._schedule_sweep()

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()


def _has_unread_bytes(transport: asyncio.BaseTransport) -> bool:
    """Whether bytes wait in the connection's socket (FIONREAD), not yet read by the loop."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return False
    return struct.unpack("i", answer)[0] > 0


def guarded_protocol(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with ``guard`` counting its connections (uvicorn builds one per
    connection from the class given as ``http``)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # uvicorn's own peer address: the one the application sees as scope["client"].
            self._guard_key: Key = self.client or ("?", id(self))
            if not guard.opened(self._guard_key, transport):
                transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            guard.closed(self._guard_key, self.transport)
            super().connection_lost(exc)

    return GuardedH11Protocol
