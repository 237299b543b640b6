"""A real ``pixels-sql serve`` process for tests: start on free ports, wait for readiness, stop."""

from __future__ import annotations

import collections
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyspark
from pyhive import hive

from pixels_sql.servers.secrets import ADMIN_USER, Secrets, read_secrets

SPARK_HOME = Path(pyspark.__file__).parent
READY_PREFIX = "pixels-sql serve: ready"


# The ports of the servers tests start: below the kernel's ephemeral range (32768-60999 here),
# where bind(0) and every outgoing connection take theirs, so no JVM's connection can take one
# between its pick and its server's bind; a slice per pytest-xdist worker (`make test` runs
# two), so two workers never pick the same one.
TEST_PORTS = range(20000, 32000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now, in this worker's slice of :data:`TEST_PORTS`, not handed out
    before by this process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), index + 1)
    size = len(TEST_PORTS) // workers
    first = TEST_PORTS.start + index * size
    for _ in range(1000):
        port = random.randrange(first, first + size)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {first}..{first + size - 1}")


class ServeProcess:
    """``python -m pixels_sql.cli serve`` on ``home``; its stdout lines are kept in ``lines``."""

    def __init__(
        self,
        home: Path,
        *,
        jdbc_port: int | None = None,
        connect_port: int | None = None,
        http_port: int | None = None,
        options: tuple[str, ...] = (),
    ):
        self.home = home
        self.options = options  # more `serve` options, e.g. ("--allow-store",)
        self.jdbc_port = jdbc_port or free_port()
        self.connect_port = connect_port or free_port()
        self.http_port = http_port or free_port()
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.errors: collections.deque[str] = collections.deque(maxlen=500)  # stderr's tail
        self._ready = threading.Event()

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:hive2://127.0.0.1:{self.jdbc_port}/default"

    @property
    def connect_url(self) -> str:
        return f"sc://127.0.0.1:{self.connect_port}"

    @property
    def secrets(self) -> Secrets:
        """The home's secrets (made by the server's first start)."""
        found = read_secrets(self.home)
        assert found is not None, f"no secrets in {self.home}"
        return found

    def jdbc(self, role: str = ADMIN_USER) -> hive.Connection:
        """A PyHive connection as ``admin`` or ``reader``, with that role's secret."""
        secret = self.secrets.admin if role == ADMIN_USER else self.secrets.reader
        return hive.connect(
            host="127.0.0.1", port=self.jdbc_port, username=role, auth="CUSTOM", password=secret
        )

    def start(self, timeout: float = 240.0) -> ServeProcess:
        command = [
            sys.executable,
            "-m",
            "pixels_sql.cli",
            "serve",
            "--home",
            str(self.home),
            "--master",
            "local[2]",
            "--jdbc-port",
            str(self.jdbc_port),
            "--connect-port",
            str(self.connect_port),
            "--http-port",
            str(self.http_port),
            *self.options,
        ]
        self.lines = []
        self._ready.clear()
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.errors = collections.deque(maxlen=500)
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                stderr = "".join(self.errors)[-3000:]
                raise TimeoutError(
                    f"serve was not ready in {timeout}s (exit status {self.process.returncode}):"
                    f" {self.lines} {stderr}"
                )
        return self

    def _drain(self, process: subprocess.Popen[str]) -> None:
        # Read all along: a server whose stderr pipe filled up would stop at its next write.
        assert process.stderr is not None
        for line in process.stderr:
            self.errors.append(line)

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith(READY_PREFIX):
                self._ready.set()

    def terminate(self, timeout: float = 120.0) -> int:
        """SIGTERM; the exit status (the process is killed if it does not stop in time)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def pids(self) -> list[int]:
        """The server and its descendants (the Spark JVM, Python workers)."""
        assert self.process is not None
        found = [self.process.pid]
        index = 0
        while index < len(found):
            parent = found[index]
            index += 1
            children = Path(f"/proc/{parent}/task/{parent}/children")
            if children.exists():
                found += [int(pid) for pid in children.read_text().split()]
        return found

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def listening_addresses(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket the processes hold, from /proc."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            entries = list(fd_dir.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                target = os.readlink(entry)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            found.add((_decode_address(address, width), int(port, 16)))
    return found


def _decode_address(hex_address: str, width: int) -> str:
    # /proc/net/tcp* print each 32-bit word of the address in host (little-endian) order.
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if width == 8 else socket.AF_INET6
    return socket.inet_ntop(family, words)


def query(connection: hive.Connection, sql: str) -> list[tuple]:
    """The rows of ``sql`` on a PyHive connection ([] for a statement without rows)."""
    cursor = connection.cursor()
    try:
        cursor.execute(sql)
        return cursor.fetchall() if cursor.description else []
    finally:
        cursor.close()


def cli(server: ServeProcess, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``pixels-sql ARGS --home <the server's home>`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "pixels_sql.cli", *args, "--home", str(server.home)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
