"""The home's warm engine: a ``pixels-sql serve`` without public endpoints that runs the
commands of the ``pixels-sql`` CLI for its owner, so a query costs a round trip instead of a
JVM start.

The CLI (``cli.py``) parses a command's arguments, makes its paths absolute, and sends them as
one JSON line over a Unix socket in the home (mode 0600, and the peer's uid checked: only the
home's owner); the engine runs the same command function on a new session of its own Spark
(its own current database and temp views) and streams the command's stdout and stderr back as
JSON lines, then its exit status. When no engine runs, the first command starts one in the
background (its log: ``<home>/logs/engine.log``) and it stops by itself after an idle time.

Nothing here imports pyspark: the client side must start in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from pixels_sql.home import process_alive

SOCKET_NAME = "engine.sock"
START_LOCK = ".pixels-sql.engine-start.lock"
LOG_NAME = "engine.log"
# A cold start: a JVM, Spark, the metastore, the functions (10-55 s on a busy 2-core machine).
START_TIMEOUT = 300.0
STOP_TIMEOUT = 120.0
MAX_REQUEST_BYTES = 1 << 20
# sun_path holds 108 bytes on Linux: a longer socket path goes to a folder of the user's.
_MAX_SOCKET_PATH = 100

# What runs a command in the engine: given the engine's SparkSession, the command's parsed
# arguments, the client's stdout and stderr, and whether that stderr is a terminal (live
# progress lines); returns the exit status.
RunCommand = Callable[[Any, dict[str, Any], TextIO, TextIO, bool], int]


class EngineError(Exception):
    """The engine could not be started or reached."""


def socket_path(home: Path) -> Path:
    """Where the engine of ``home`` listens: in the home, or, when that path is too long for a
    Unix socket, in a private folder of the user's named by a digest of the home."""
    path = home / SOCKET_NAME
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    folder = Path(tempfile.gettempdir()) / f"pixels-sql-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    status = folder.lstat()
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise EngineError(f"{folder} is not a private folder of this user: not used")
    digest = hashlib.sha256(os.fsencode(home)).hexdigest()[:24]
    return folder / f"{digest}.sock"


# -- client side ------------------------------------------------------------------------------


def _connect(home: Path) -> socket.socket | None:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(socket_path(home)))
    except OSError:
        client.close()
        return None
    return client


def is_running(home: Path) -> bool:
    connection = _connect(home)
    if connection is None:
        return False
    connection.close()
    return True


def hold(home: Path) -> socket.socket | None:
    """A connection that keeps the engine of ``home`` from stopping as idle while it stays
    open (a Spark Connect client of the engine between its queries); None: no engine runs."""
    return _connect(home)


def run_command(home: Path, arguments: dict[str, Any], out: TextIO, err: TextIO) -> int:
    """Run a command (its parsed ``arguments``) in the engine of ``home``; its output goes to
    ``out`` and ``err`` as it comes. Raises EngineError when no engine answers."""
    connection = _connect(home)
    if connection is None:
        raise EngineError(f"no engine runs on {home}")
    request = {"arguments": arguments, "tty": err.isatty()}
    with connection, connection.makefile("rb") as replies:
        connection.sendall(json.dumps(request).encode() + b"\n")
        for line in replies:
            reply = json.loads(line)
            if "out" in reply:
                out.write(reply["out"])
                out.flush()
            elif "err" in reply:
                err.write(reply["err"])
                err.flush()
            elif "exit" in reply:
                return int(reply["exit"])
    raise EngineError(f"the engine of {home} ended the command without its exit status")


def ensure_running(
    home: Path, *, master: str, idle_timeout: float, say: Callable[[str], None]
) -> None:
    """Start the engine of ``home`` unless one runs, and wait until it answers. One command at
    a time starts it (a lock in the home): the others wait for the same engine."""
    if is_running(home):
        return
    home.mkdir(parents=True, exist_ok=True)
    with _start_lock(home):
        if is_running(home):
            return
        say(
            f"starting the engine of {home} (a background Spark that later commands reuse;"
            f" it stops after {idle_timeout:.0f} s idle, or with `pixels-sql stop`)"
        )
        process = _spawn(home, master, idle_timeout)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if is_running(home):
                return
            if process.poll() is not None:
                raise EngineError(_start_failure(home, process.returncode))
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        raise EngineError(
            f"the engine of {home} did not answer within {START_TIMEOUT:.0f} s; its log:"
            f" {home / 'logs' / LOG_NAME}"
        )


@contextlib.contextmanager
def _start_lock(home: Path) -> Iterator[None]:
    with open(home / START_LOCK, "a+") as handle:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EngineError(
                        f"another command kept starting the engine of {home}"
                    ) from None
                time.sleep(0.2)
        yield


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _spawn(home: Path, master: str, idle_timeout: float) -> subprocess.Popen[bytes]:
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pixels_sql.cli",
        "serve",
        "--engine",
        "--home",
        str(home),
        "--master",
        master,
        "--idle-timeout",
        str(idle_timeout),
        # Spark Connect only, on a free loopback port (for `pixels_sql.connect` and clients
        # of the home that run their own Spark Connect session); no JDBC, no HTTP.
        "--connect-port",
        str(_free_port()),
        "--jdbc-port",
        "0",
        "--http-port",
        "0",
    ]
    descriptor = os.open(logs / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(descriptor, "ab") as log:
        log.write(f"\n== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        log.flush()
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own group: the terminal's Ctrl-C is the command's
            close_fds=True,
        )


def _start_failure(home: Path, status: int) -> str:
    """The engine's last words: the last `pixels-sql` line of its log, or its exit status."""
    log = home / "logs" / LOG_NAME
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    said = [line for line in lines if line.startswith("pixels-sql")]
    reason = said[-1].split(": ", 1)[-1] if said else f"it exited with status {status}"
    return f"the engine of {home} did not start: {reason} (log: {log})"


def stop(pid: int, timeout: float = STOP_TIMEOUT) -> bool:
    """Ask the server process ``pid`` to stop (SIGTERM) and wait for it; whether it ended."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.2)
    return False


# -- engine side ------------------------------------------------------------------------------


class _Routed:
    """sys.stdout / sys.stderr of the engine process: each command's thread writes to its own
    client, everything else to the process's own stream (the log)."""

    def __init__(self, default: TextIO, local: threading.local, name: str) -> None:
        self._default, self._local, self._name = default, local, name

    def _target(self) -> TextIO:
        return getattr(self._local, self._name, None) or self._default

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


class _ClientStream:
    """A text stream whose writes go to the client as ``{"out"|"err": text}`` lines."""

    def __init__(self, send: Callable[[dict[str, Any]], None], key: str, tty: bool) -> None:
        self._send, self._key, self._tty = send, key, tty

    def write(self, text: str) -> int:
        if text:
            self._send({self._key: text})
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self._tty

    @property
    def encoding(self) -> str:
        return "utf-8"


# The homes whose engine socket this process serves.
_SERVED: set[Path] = set()


def serves_here(home: Path) -> bool:
    """Whether this process is the engine of ``home``."""
    return home in _SERVED


class EngineSocket:
    """The engine's listening socket: one thread per client connection, each running one
    command through ``run``. Idle (for the idle timeout) when no connection is open."""

    def __init__(self, home: Path, run: RunCommand, spark: Any) -> None:
        self.home = home
        self._spark = spark
        self.path = socket_path(home)
        self._run = run
        self._open = 0
        self._last_close = time.monotonic()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._local = threading.local()

    def start(self) -> None:
        sys.stdout = _Routed(sys.stdout, self._local, "out")  # type: ignore[assignment]
        sys.stderr = _Routed(sys.stderr, self._local, "err")  # type: ignore[assignment]
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by an engine that was killed (the home lock is ours)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o177)  # created 0600: no moment when others could connect
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_mask)
        listener.listen(16)
        self._listener = listener
        _SERVED.add(self.home)
        threading.Thread(target=self._accept, name="pixels-sql-engine", daemon=True).start()

    def idle_seconds(self) -> float:
        with self._lock:
            return 0.0 if self._open else time.monotonic() - self._last_close

    def stop(self) -> None:
        _SERVED.discard(self.home)
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed: the server stops
            with self._lock:
                self._open += 1
            threading.Thread(
                target=self._serve, args=(connection,), name="pixels-sql-command", daemon=True
            ).start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            with connection:
                if _peer_uid(connection) != os.getuid():
                    return  # only the home's owner (the socket's mode says so too)
                self._command(connection)
        except OSError:
            pass  # the client went away (Ctrl-C): nothing to tell it
        finally:
            with self._lock:
                self._open -= 1
                self._last_close = time.monotonic()

    def _command(self, connection: socket.socket) -> None:
        with connection.makefile("rb") as requests:
            line = requests.readline(MAX_REQUEST_BYTES + 1)
        if not line:
            return  # a probe (is_running)
        sending = threading.Lock()

        def send(reply: dict[str, Any]) -> None:
            with sending:
                connection.sendall(json.dumps(reply).encode() + b"\n")

        if len(line) > MAX_REQUEST_BYTES:
            send({"err": "pixels-sql: the command is too long for the engine\n"})
            send({"exit": 2})
            return
        request = json.loads(line)
        tty = bool(request.get("tty"))
        out = _ClientStream(send, "out", False)
        err = _ClientStream(send, "err", tty)
        # The command's Spark jobs in a group of their own, cancelled when the client goes
        # away (Ctrl-C on `pixels-sql`): the engine does not go on with work nobody waits for.
        group = f"pixels-sql-command-{uuid.uuid4()}"
        context = self._spark.sparkContext
        context.setJobGroup(group, "a pixels-sql command", True)
        done = threading.Event()
        threading.Thread(
            target=self._cancel_when_gone, args=(connection, group, done), daemon=True
        ).start()
        self._local.out, self._local.err = out, err
        try:
            status = self._run(self._spark, request["arguments"], out, err, tty)  # type: ignore[arg-type]
        finally:
            done.set()
            self._local.out = self._local.err = None
        send({"exit": status})

    def _cancel_when_gone(
        self, connection: socket.socket, group: str, done: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            connection.recv(1)  # the client sends nothing more: this returns when it closes
        if not done.is_set():
            self._spark.sparkContext.cancelJobGroup(group)


def _peer_uid(connection: socket.socket) -> int:
    credentials = connection.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
    )
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return uid
