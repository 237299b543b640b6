"""The render pool of the DICOMweb service: rendered and thumbnail images, and transcoded
instances and frames (PS3.18 8.7.3, 8.7.4), are made in worker processes of their own, so that a
search never waits behind one and a decoder that crashes takes no more than its worker.

A render is up to seconds of CPU (decode, window, resample, encode) and much of it holds the
GIL: in the request threads, eight renders of a 4096-pixel viewport held QIDO-RS searches for
13.6 s. In processes they take the cores they are given (``render_workers``, at a lower
priority) and the server's own threads keep answering; at most ``render_queue`` renders wait
for a worker, one more gets a 503 with Retry-After.

A worker is a fresh interpreter (``python -m pixels_sql.servers.dicomweb.render``), not a fork
of the server (which has the event loop's, py4j's and the pools' threads) nor a
multiprocessing child (which imports the main module of whatever embeds the service). It reads
one pickled request at a time on stdin and answers on stdout; a worker that dies (a decoder
crash) or runs past ``render_timeout`` fails that render alone and is replaced. A worker's
address space is capped at ``worker_memory`` (RLIMIT_AS): a decode that would need more fails
with MemoryError in the worker, not by the kernel's OOM killer picking the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import queue
import resource
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from pixels_sql.servers.dicomweb.http import HTTPError, RenderJob, Response
from pixels_sql.servers.dicomweb.limits import HttpLimits

log = logging.getLogger("pixels_sql.dicomweb")

# Renders run at the lowest CPU priority (nice 19: Linux's scheduler gives a nice-0 thread about
# 70 times a nice-19 one's share of a contended core), so that searches, milliseconds of CPU
# each, are scarcely slowed by them; a render takes what the server leaves.
WORKER_NICENESS = 19
READY = "ready"
WORKER_ENVIRONMENT = {
    # A Rust decoder's panic (pylibjpeg-rle) is one log line, not a page of backtrace.
    "RUST_BACKTRACE": "0",
    # One thread each for numpy's BLAS and OpenMP codecs (a worker is one core's work), and two
    # malloc arenas: a thread pool per core and an arena per thread would reserve gigabytes of
    # address space on a large machine, against worker_memory (RLIMIT_AS).
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
}
# (result, '', '') or (None, reason, message): the result is an image, a PS3.10 file, or a list
# of frames, as the task says.
Outcome = tuple[Any, str, str]
# A task for a worker: ("render", path, size, fmt[, RenderOptions]), ("instance", path,
# transfer syntax, max bytes) or ("frames", path, frame numbers, transfer syntax, max bytes).
Task = tuple[Any, ...]
Runner = Callable[[Task], Outcome]


@dataclass
class PoolJob:
    """What a view answers when worker processes make its response (transcoding): ``build`` is
    called on a thread of the pool with a runner of tasks (blocking, one worker each) and
    returns the response; it runs the tasks whose failure must be the status (a single instance,
    frames) before returning, and may leave later ones to the body, which runs them while it is
    sent (the instances of a study, one at a time)."""

    build: Callable[[Runner], Response]


def run_task(task: Task) -> Outcome:
    """A task's outcome in this process (a worker). DicomReadError and TranscodeError are
    answered as data: their constructors take arguments that pickling does not replay."""
    from pixels_sql.dicom.thumbnail import RenderOptionsError, render_thumbnail
    from pixels_sql.dicom.transcode import TranscodeError, transcode_frames, transcode_instance
    from pixels_sql.errors import DicomReadError

    name, *args = task
    try:
        if name == "render":
            return render_thumbnail(*args), "", ""
        if name == "instance":
            return transcode_instance(*args), "", ""
        if name == "frames":
            return transcode_frames(*args), "", ""
    except (DicomReadError, TranscodeError) as exc:
        return None, exc.reason, exc.message
    except RenderOptionsError as exc:  # a frame or region the image does not have
        return None, "bad_request", str(exc)
    except MemoryError:
        return None, "too_large", "decoding it needs more memory than a worker may take"
    raise ValueError(f"unknown worker task {name!r}")


def _worker_main(memory: int) -> None:
    with contextlib.suppress(ValueError, OSError):  # a lower hard limit stays
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
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
    # Imported before the first request.
    import pixels_sql.dicom.thumbnail
    import pixels_sql.dicom.transcode  # noqa: F401

    try:
        pickle.dump(READY, answers)
        answers.flush()
    except BrokenPipeError:  # the pool closed before this worker was ready
        return
    while True:
        try:
            task = pickle.load(requests)
        except EOFError:
            return
        try:
            outcome: Outcome = run_task(task)
        except Exception as exc:  # a fault of ours: reported by the server with its id
            outcome = None, "error", f"{type(exc).__name__}: {exc}"
        pickle.dump(outcome, answers)
        answers.flush()


class _Worker:
    def __init__(self, memory: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pixels_sql.servers.dicomweb.render", str(memory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **WORKER_ENVIRONMENT},
        )
        self.ready = False

    def _answer(self, timeout: float) -> object:
        stdout: BinaryIO = self.process.stdout  # type: ignore[assignment]
        readable, _, _ = select.select([stdout], [], [], timeout)
        if not readable:
            raise TimeoutError
        return pickle.load(stdout)

    def run(self, task: Task, timeout: float) -> Outcome:
        """The outcome; EOFError if the worker died, TimeoutError if it ran out of time."""
        if not self.ready:
            if self._answer(timeout) != READY:
                raise EOFError
            self.ready = True
        stdin: BinaryIO = self.process.stdin  # type: ignore[assignment]
        try:
            pickle.dump(task, stdin)
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


class _HoldingBody:
    """A response body that calls ``release`` once: when it is sent, closed or dropped (a HEAD
    answer replaces its body unsent)."""

    def __init__(self, body: Iterable[bytes], release: Callable[[], None]) -> None:
        self._body = body
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        finally:
            self.close()

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __del__(self) -> None:
        self.close()


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
        worker = _Worker(self.limits.worker_memory)
        with self._lock:
            self._workers.append(worker)
        return worker

    def _replace(self, worker: _Worker) -> _Worker:
        worker.process.kill()
        worker.stop()
        with self._lock:
            self._workers.remove(worker)
        return self._start()

    def run_blocking(self, task: Task) -> Outcome:
        """The task's outcome from the next idle worker (waiting for one)."""
        worker = self._idle.get()
        doing, path = _TASK_WORDS.get(task[0], "working on"), task[1]
        try:
            return worker.run(task, self.limits.render_timeout)
        except TimeoutError:
            seconds = self.limits.render_timeout
            log.warning("%s %s took more than %g s: stopped", doing, path, seconds)
            worker = self._replace(worker)
            return None, "timeout", f"{doing} it took more than {seconds:g} s"
        except EOFError:
            code = worker.process.poll()
            log.error("a worker died (exit status %s) %s %s: replaced", code, doing, path)
            worker = self._replace(worker)
            return None, "decoder_crash", f"the worker died {doing} this file"
        finally:
            self._idle.put(worker)

    def _acquire(self) -> None:
        if self._closed or not self._slots.acquire(blocking=False):
            raise HTTPError(
                503, "the server is busy rendering: try again shortly", [("retry-after", "2")]
            )

    async def answer(self, job: PoolJob) -> Response:
        """The response ``job`` builds, on a thread of the pool; 503 when ``render_queue``
        jobs already wait. A body that runs tasks while it is sent holds its place until it is
        sent, closed or dropped: the cap counts it."""
        self._acquire()
        try:
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(self._threads, job.build, self.run_blocking)
        except BaseException:
            self._slots.release()
            raise
        if isinstance(response.body, bytes | bytearray):
            self._slots.release()
        else:
            response.body = _HoldingBody(response.body, self._slots.release)
        return response

    async def render(self, job: RenderJob) -> Response:
        """The first candidate that renders, as a response; 404 if none does, 503 when
        ``render_queue`` renders already wait."""
        self._acquire()
        loop = asyncio.get_running_loop()
        try:
            last = HTTPError(404, "nothing to render")
            for sop_uid, path in job.candidates:
                image, reason, message = await loop.run_in_executor(
                    self._threads, self.run_blocking, ("render", path, job.size, job.fmt)
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


_TASK_WORDS = {"render": "rendering", "instance": "transcoding", "frames": "transcoding frames of"}


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]))
