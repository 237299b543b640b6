"""The render pool of the DICOMweb service: rendered and thumbnail images are made in worker
processes of their own, so that a search never waits behind one.

A render is up to seconds of CPU (decode, window, resample, encode) and much of it holds the
GIL: in the request threads, eight renders of a 4096-pixel viewport held QIDO-RS searches for
13.6 s. In processes they take the cores they are given (``render_workers``, at a lower
priority) and the server's own threads keep answering; at most ``render_queue`` renders wait
for a worker, one more gets a 503 with Retry-After.

A worker is a fresh interpreter (``python -m pixels_sql.servers.dicomweb.render``), not a fork
of the server (which has the event loop's, py4j's and the pools' threads) nor a
multiprocessing child (which imports the main module of whatever embeds the service). It reads
one pickled request at a time on stdin and answers on stdout; a worker that dies (a decoder
crash) or runs past ``render_timeout`` fails that render alone and is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import queue
import select
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from pixels_sql.servers.dicomweb.http import HTTPError, RenderJob, Response
from pixels_sql.servers.dicomweb.limits import HttpLimits

log = logging.getLogger("pixels_sql.dicomweb")

# Renders run at the lowest CPU priority (nice 19: Linux's scheduler gives a nice-0 thread about
# 70 times a nice-19 one's share of a contended core), so that searches, milliseconds of CPU
# each, are scarcely slowed by them; a render takes what the server leaves.
WORKER_NICENESS = 19
READY = "ready"
Outcome = tuple[bytes | None, str, str]  # (image, '', '') or (None, reason, message)


def render_in_worker(path: str, size: int, fmt: str) -> Outcome:
    """A DicomReadError is answered as data: its constructor takes three arguments, which
    pickling an exception does not replay."""
    from pixels_sql.dicom.thumbnail import render_thumbnail
    from pixels_sql.errors import DicomReadError

    try:
        return render_thumbnail(path, size, fmt), "", ""
    except DicomReadError as exc:
        return None, exc.reason, exc.message


def _worker_main() -> None:
    # A terminal's Ctrl-C reaches the whole process group: the server stops its workers itself
    # (closing their input), so a worker ignores it rather than print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Not allowed here: the pool still bounds how many cores renders take.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    # Answers go on a private copy of stdout; what a library prints goes to stderr instead of
    # into the answers.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    import pixels_sql.dicom.thumbnail  # noqa: F401  (imported before the first request)

    pickle.dump(READY, answers)
    answers.flush()
    while True:
        try:
            path, size, fmt = pickle.load(requests)
        except EOFError:
            return
        try:
            outcome: Outcome = render_in_worker(path, size, fmt)
        except Exception as exc:  # a fault of ours: reported by the server with its id
            outcome = None, "error", f"{type(exc).__name__}: {exc}"
        pickle.dump(outcome, answers)
        answers.flush()


class _Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pixels_sql.servers.dicomweb.render"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # A Rust decoder's panic (pylibjpeg-rle) is one log line, not a page of backtrace.
            env={**os.environ, "RUST_BACKTRACE": "0"},
        )
        self.ready = False

    def _answer(self, timeout: float) -> object:
        stdout: BinaryIO = self.process.stdout  # type: ignore[assignment]
        readable, _, _ = select.select([stdout], [], [], timeout)
        if not readable:
            raise TimeoutError
        return pickle.load(stdout)

    def render(self, path: str, size: int, fmt: str, timeout: float) -> Outcome:
        """The outcome; EOFError if the worker died, TimeoutError if it ran out of time."""
        if not self.ready:
            if self._answer(timeout) != READY:
                raise EOFError
            self.ready = True
        stdin: BinaryIO = self.process.stdin  # type: ignore[assignment]
        try:
            pickle.dump((path, size, fmt), stdin)
            stdin.flush()
        except BrokenPipeError:
            raise EOFError from None
        return self._answer(timeout)  # type: ignore[return-value]

    def stop(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class RenderPool:
    """``render_workers`` worker processes, started with the service (a worker imports numpy,
    pydicom and Pillow: about a second), each driven by a thread of the pool's own."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.render_workers + limits.render_queue)
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(limits.render_workers):
            self._idle.put(self._start())
        self._threads = ThreadPoolExecutor(
            limits.render_workers, thread_name_prefix="dicomweb-render"
        )

    def _start(self) -> _Worker:
        worker = _Worker()
        with self._lock:
            self._workers.append(worker)
        return worker

    def _replace(self, worker: _Worker) -> _Worker:
        worker.process.kill()
        worker.stop()
        with self._lock:
            self._workers.remove(worker)
        return self._start()

    def _render_blocking(self, path: str, size: int, fmt: str) -> Outcome:
        worker = self._idle.get()
        try:
            return worker.render(path, size, fmt, self.limits.render_timeout)
        except TimeoutError:
            seconds = self.limits.render_timeout
            log.warning("rendering %s took more than %g s: stopped", path, seconds)
            worker = self._replace(worker)
            return None, "timeout", f"rendering took more than {self.limits.render_timeout:g} s"
        except EOFError:
            code = worker.process.poll()
            log.error("a render worker died (exit status %s) rendering %s: replaced", code, path)
            worker = self._replace(worker)
            return None, "decoder_crash", "the render worker died on this file"
        finally:
            self._idle.put(worker)

    async def render(self, job: RenderJob) -> Response:
        """The first candidate that renders, as a response; 404 if none does, 503 when
        ``render_queue`` renders already wait."""
        if self._closed or not self._slots.acquire(blocking=False):
            raise HTTPError(
                503, "the server is busy rendering: try again shortly", [("retry-after", "2")]
            )
        loop = asyncio.get_running_loop()
        try:
            last = HTTPError(404, "nothing to render")
            for sop_uid, path in job.candidates:
                image, reason, message = await loop.run_in_executor(
                    self._threads, self._render_blocking, path, job.size, job.fmt
                )
                if image is not None:
                    return Response(200, [("content-type", job.media_type)], image)
                if reason == "error":
                    raise RuntimeError(f"rendering {path} failed: {message}")
                last = HTTPError(404, f"instance {sop_uid} cannot be rendered: {reason}")
            raise last
        finally:
            self._slots.release()

    def close(self) -> None:
        self._closed = True
        self._threads.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.stop()


if __name__ == "__main__":
    _worker_main()
