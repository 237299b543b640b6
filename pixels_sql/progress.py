"""Progress of running Spark jobs, read from the status tracker on a background thread."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from pyspark import SparkContext


class Progress:
    """Prints task progress of the active stages while a statement runs.

    ``expected_files`` (set from a ``files_to_read`` result) turns task counts into an estimate
    of files done, since the file source reads whole files per task.
    """

    def __init__(
        self, context: SparkContext | None, stream: TextIO | None = None, interval: float = 1.0
    ):
        self._context = context
        stream = stream or sys.stderr  # at call time: the engine routes each command's streams
        self._stream = stream
        self._interval = interval if stream.isatty() else max(interval, 5.0)
        self._tty = stream.isatty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.expected_files: int | None = None
        self.label = ""
        self._started = time.monotonic()
        self._last = ""

    def statement(self, label: str) -> None:
        """A new statement starts: label the progress line with it and restart its clock."""
        self.label = label
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pixels-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._tty and self._last:
            self._stream.write("\r" + " " * len(self._last) + "\r")
            self._stream.flush()
        self._last = ""

    def snapshot(self) -> tuple[int, int]:
        """(completed, total) tasks over the stages that are running now; (0, 0) without a
        SparkContext in this process (a Spark Connect client)."""
        if self._context is None:
            return 0, 0
        tracker = self._context.statusTracker()
        done = total = 0
        for stage_id in tracker.getActiveStageIds():
            info = tracker.getStageInfo(stage_id)
            if info is not None:
                done += info.numCompletedTasks
                total += info.numTasks
        return done, total

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                done, total = self.snapshot()
            except Exception:
                # The JVM went away under the statement (killed, out of memory): the statement
                # reports the failure itself; a traceback from this thread would only bury it.
                return
            if total == 0:
                continue
            text = f"{self.label} {done}/{total} tasks"
            if self.expected_files:
                estimate = round(self.expected_files * done / total)
                text += f" · ≈{estimate}/{self.expected_files} files"
            text += f" · {time.monotonic() - self._started:.0f}s"
            if text == self._last:
                continue
            if self._tty:
                self._stream.write("\r" + text.ljust(len(self._last)))
            else:
                self._stream.write(text + "\n")
            self._stream.flush()
            self._last = text
