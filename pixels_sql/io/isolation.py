"""Per-file work in a helper process, so that a native crash costs one file, not the batch.

Decoders written in C/C++ (python-gdcm, the JPEG and JPEG 2000 libraries, our own compiled
header loop) can abort the whole process on hostile input — ``terminate`` after an uncaught C++
exception, a segmentation fault — and no Python ``try`` catches that. A Spark Python worker that
dies fails its task and with it every file of the batch, and a re-run fails again on the same
file. So the SQL functions hand each batch to a long-lived child process (one per Python
worker, started on first use) that works through the files in order and streams one result per
file back. When the child dies, the file it was reading gets the reason ``decoder_crash`` (or
``timeout`` when it ran past ``settings.file_timeout``), a new child starts, and the batch
continues with the next file. With an address-space limit set
(``settings.file_memory``), a file that would need more memory fails alone (``too_large``)
instead of exhausting the machine.

Settings (pixels_sql.config): ``PIXELS_SQL_ISOLATION`` (``process``, or ``none``: work in
the worker itself), ``PIXELS_SQL_FILE_TIMEOUT`` (seconds one file may take) and
``PIXELS_SQL_FILE_MEMORY`` (the child's address-space limit in MiB; off by default: CPython
allocates a read of a declared length up front, so a limit turns a small file declaring a 4 GB
value into ``too_large`` instead of ``corrupt``).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, TypeVar

from pixels_sql.config import settings
from pixels_sql.errors import classify

R = TypeVar("R")

STARTUP_TIMEOUT_SECONDS = 120.0

_FRAME = struct.Struct("<Q")  # every message: 8-byte length, then a pickle
_COUNTER = struct.Struct("<Q")  # the shared progress counter
# The child replies with a group of results every REPLY_GROUP files or REPLY_SECONDS: one pickle
# and one pipe write per file cost the worker about as much as reading a header (~70 us).
REPLY_GROUP = 64
REPLY_SECONDS = 0.05
_PIPE_BYTES = 1 << 18


def run_isolated(
    function: Callable[..., R],
    items: Sequence[tuple[Any, ...]],
    failure: Callable[[str, str], R],
) -> list[R]:
    """``[function(*item) for item in items]``, computed in the helper process.

    ``function`` must be a module-level function (it is sent by name) that returns its failures
    as data; ``failure(reason, message)`` builds the result of a file whose reading killed the
    helper or ran out of time.
    """
    if settings.isolation == "none" or not items:
        return [_outcome(_call(function, item), failure) for item in items]
    return _HELPER.run(function, items, failure)


class _Helper:
    """The child process of this (worker) process, restarted after each crash."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | _ForkedChild | None = None

    def run(
        self,
        function: Callable[..., R],
        items: Sequence[tuple[Any, ...]],
        failure: Callable[[str, str], R],
    ) -> list[R]:
        results: dict[int, R] = {}
        todo = list(range(len(items)))
        with self._lock:
            while todo:
                sent = todo
                stdout = self._submit(function, [items[index] for index in sent])
                # The child answers once it has unpickled the batch (imported the function's
                # module), so start-up time is not charged to the first file.
                outcome = _receive(stdout, STARTUP_TIMEOUT_SECONDS)
                received = 0
                while received < len(sent) and not isinstance(outcome, _Failed):
                    outcome = self._receive_results(stdout)
                    if not isinstance(outcome, _Failed):
                        for result in outcome:
                            results[sent[received]] = _outcome(result, failure)
                            received += 1
                if isinstance(outcome, _Failed):
                    # The file being read killed the child (or ran out of time): it alone
                    # fails. The files read since the child's last reply are read again by a
                    # new child, with the rest.
                    culprit = max(received, self._progress_index())
                    reason = self._stop(outcome)
                    if culprit < len(sent):
                        results[sent[culprit]] = failure(*reason)
                    todo = sent[received:culprit] + sent[culprit + 1 :]
                else:
                    todo = []
        return [results[index] for index in range(len(items))]

    def _progress_index(self) -> int:
        """The position (in the batch) of the file the child was reading when it stopped; -1
        when unknown (a child without the shared counter, or one that read none yet)."""
        progress = getattr(self._process, "progress", None)
        if progress is None:
            return -1
        return _COUNTER.unpack_from(progress)[0] - 1

    def _receive_results(self, stdout: BinaryIO) -> Any:
        """The child's next group of results; a :class:`_Failed` when it died, or when one file
        took longer than ``settings.file_timeout`` (the child's counter says which file it
        is on, and since when)."""
        progress = getattr(self._process, "progress", None)
        if progress is None:
            return _receive(stdout, settings.file_timeout)
        current = _COUNTER.unpack_from(progress)[0]
        deadline = time.monotonic() + settings.file_timeout
        while True:
            outcome = _receive(stdout, min(1.0, max(0.0, deadline - time.monotonic())))
            if not isinstance(outcome, _Failed) or not outcome.timed_out:
                return outcome
            started = _COUNTER.unpack_from(progress)[0]
            if started != current:  # the child moved on to another file: its own time
                current, deadline = started, time.monotonic() + settings.file_timeout
            elif time.monotonic() >= deadline:
                return outcome

    def _submit(self, function: Callable[..., Any], items: Sequence[tuple[Any, ...]]) -> BinaryIO:
        """Send a batch to the child (started if needed); the stream its results come on."""
        if self._process is None or self._process.poll() is not None:
            if hasattr(os, "fork"):
                self._process = _ForkedChild(settings.file_memory)
            else:
                self._process = subprocess.Popen(
                    [sys.executable, "-c", _CHILD, str(settings.file_memory)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    close_fds=True,
                    # A Rust decoder's panic (pylibjpeg-rle) is one reason row, not 100 lines
                    # of backtrace on the user's terminal.
                    env={**os.environ, "RUST_BACKTRACE": "0"},
                )
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        progress = getattr(process, "progress", None)
        if progress is not None:
            _COUNTER.pack_into(progress, 0, 0)  # no file of this batch started yet
        # A child that died on start-up breaks the pipe: reported for the first file.
        with contextlib.suppress(BrokenPipeError):
            _send(process.stdin, (function, list(items)))
        return process.stdout

    def _stop(self, failed: _Failed) -> tuple[str, str]:
        """End the child; (reason, message) for the file it was reading."""
        process, self._process = self._process, None
        assert process is not None
        if failed.timed_out:
            process.kill()
        code = process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # the pipe's far end is gone
                    stream.close()
        if failed.timed_out:
            return "timeout", f"reading took more than {settings.file_timeout:g} s; stopped"
        if code < 0:
            name = signal.Signals(-code).name
            return "decoder_crash", f"the reading process was killed by {name} on this file"
        return "decoder_crash", f"the reading process exited with status {code} on this file"


class _ForkedChild:
    """The helper as a fork of this process, with the few methods of ``Popen`` used here.

    A fork has every module of the worker imported already (a new interpreter spent ~1.2 s per
    worker importing pydicom, numpy and Pillow again before its first file)."""

    def __init__(self, memory_limit: int) -> None:
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        _widen(replies_write)
        # Shared with the child (an anonymous shared mapping survives the fork): the 1-based
        # position of the file it is reading, so that it can reply in groups and a crash or a
        # hang is still charged to the right file.
        self.progress = mmap.mmap(-1, _COUNTER.size)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.dup2(requests_read, 0)
                os.dup2(replies_write, 1)
                # As close_fds: the worker's socket to the JVM and other pipes stay the
                # worker's (an open copy here would keep them alive after the worker closed).
                for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
                    if int(name) > 2:
                        with contextlib.suppress(OSError):
                            os.close(int(name))
                for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(number, signal.SIG_DFL)
                # A Rust decoder's panic (pylibjpeg-rle) is one reason row, not 100 lines of
                # backtrace on the user's terminal.
                os.environ["RUST_BACKTRACE"] = "0"
                _serve(memory_limit, self.progress)
                code = 0
            finally:
                os._exit(code)
        os.close(requests_read)
        os.close(replies_write)
        self.pid = pid
        self.stdin: BinaryIO | None = os.fdopen(requests_write, "wb")
        self.stdout: BinaryIO | None = os.fdopen(replies_read, "rb")
        self._code: int | None = None

    def poll(self) -> int | None:
        if self._code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._code = os.waitstatus_to_exitcode(status)
        return self._code

    def wait(self) -> int:
        if self._code is None:
            _, status = os.waitpid(self.pid, 0)
            self._code = os.waitstatus_to_exitcode(status)
        return self._code

    def kill(self) -> None:
        if self._code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class _Failed:
    def __init__(self, timed_out: bool) -> None:
        self.timed_out = timed_out


class _Raised:
    """An exception the function let through (it should return failures as data)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _call(function: Callable[..., Any], item: tuple[Any, ...]) -> Any:
    try:
        return function(*item)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # also a Rust decoder's PanicException (not an Exception)
        return _Raised(exc)


def _outcome(result: Any, failure: Callable[[str, str], R]) -> R:
    if isinstance(result, _Raised):
        error = classify("", result.error)
        return failure(error.reason, error.message)
    return result


def _widen(pipe: int) -> None:
    """Let the pipe hold most of a group of replies (Linux: 64 KiB by default): a group of 64
    headers is ~0.3-0.6 MB of JSON, and each time a full pipe blocks the child, both processes
    pay a context switch. Not more: a user's pipes share a budget (pipe-user-pages-soft, 64
    MiB by default, root in a container included), past which the kernel gives every new pipe
    of that user one page — 256 KiB per helper leaves room for 256 of them."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or a lower limit
        fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def _send(stream: BinaryIO, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_FRAME.pack(len(data)))
    stream.write(data)  # written as is: a long write goes past the buffer, without a copy
    stream.flush()


def _receive(stream: BinaryIO, timeout: float) -> Any:
    """The next message, or a :class:`_Failed` when the child died or fell silent.

    Only the wait for a message's first byte times out: a message cut at a deadline would
    leave the stream out of step with its framing (its remaining bytes read next as a length,
    e.g. a MemoryError for a bytearray of exabytes), so once a message has begun it is read
    whole, and one that stops half-way counts as a dead child, which is then replaced.
    """
    if not select.select([stream.fileno()], [], [], max(0.0, timeout))[0]:
        return _Failed(True)
    deadline = time.monotonic() + settings.file_timeout
    header = _read_exactly(stream, _FRAME.size, deadline)
    if header is None:
        return _Failed(False)
    (length,) = _FRAME.unpack(header)
    body = _read_exactly(stream, length, deadline)
    if body is None:
        return _Failed(False)
    return pickle.loads(body)


def _read_exactly(stream: BinaryIO, count: int, deadline: float) -> bytearray | None:
    descriptor = stream.fileno()
    data = bytearray(count)
    view = memoryview(data)
    done = 0
    while done < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([descriptor], [], [], remaining)[0]:
            return None
        got = os.readv(descriptor, [view[done:]])
        if not got:
            return None  # end of file: the child is gone
        done += got
    return data


_HELPER = _Helper()
# The child imports this module (not `-m`, which would run a second copy as __main__ whose
# classes pickle under the wrong name).
_CHILD = "import sys; from pixels_sql.io.isolation import _serve; _serve(int(sys.argv[1]))"


def _serve(memory_limit: int, progress: mmap.mmap | None = None) -> None:
    """The child's loop: read (function, items), write the results in order, until EOF.

    With ``progress`` (shared with the worker) the results go in groups of up to
    :data:`REPLY_GROUP` (or what :data:`REPLY_SECONDS` gave time for), and the counter holds the
    position of the file being read; without it, one reply per file."""
    if memory_limit > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    # The protocol owns the original stdin/stdout; anything a library prints goes to stderr.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    while True:
        header = requests.read(_FRAME.size)
        if len(header) < _FRAME.size:
            return  # the worker closed the pipe: done
        (length,) = _FRAME.unpack(header)
        function, items = pickle.loads(requests.read(length))
        _send(replies, None)  # started
        group: list[Any] = []
        flushed = time.monotonic()
        for position, item in enumerate(items):
            if progress is not None:
                _COUNTER.pack_into(progress, 0, position + 1)
            group.append(_call(function, item))
            last = position == len(items) - 1
            if (
                progress is None
                or last
                or len(group) >= REPLY_GROUP
                or time.monotonic() - flushed >= REPLY_SECONDS
            ):
                _send_group(replies, group)
                group = []
                flushed = time.monotonic()


def _send_group(replies: BinaryIO, group: list[Any]) -> None:
    try:
        _send(replies, group)
    except (pickle.PicklingError, TypeError, AttributeError):
        # One result that does not pickle: each on its own, that one as an error.
        safe = []
        for result in group:
            try:
                pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
                safe.append(result)
            except (pickle.PicklingError, TypeError, AttributeError):
                safe.append(_Raised(RuntimeError(repr(getattr(result, "error", result)))))
        _send(replies, safe)
