"""Progress of running Spark jobs, read from the status tracker on a background thread."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from pyspark import SparkContext

# How progress is shown: a live line (rewritten in place on a terminal, a line every few
# seconds otherwise), JSON lines (one object per update, for programs), or nothing.
MODES = ("line", "json", "off")
# Seconds between updates on a terminal or in JSON, and otherwise (a log wants fewer lines).
TERMINAL_INTERVAL = 1.0
LOG_INTERVAL = 5.0


@dataclass(frozen=True)
class Snapshot:
    """The running stages of the statement under way: tasks finished and in all, and the rows
    that finished tasks wrote (each row one file, image or header of the step)."""

    tasks_done: int
    tasks: int
    written: int


class Progress:
    """Shows the progress of the statement under way while it runs.

    Counts are what Spark has finished, never an estimate: tasks, and the rows written by
    finished tasks. A statement that works through a known number of items (those a
    ``-- pixels-sql: skip if <count> = 0`` comment names: see runner.EXPECTED) shows
    ``<written>/<expected> <unit>``; any other statement shows tasks only.
    """

    def __init__(
        self,
        context: SparkContext | None,
        stream: TextIO | None = None,
        interval: float | None = None,
        mode: str = "line",
    ):
        if mode not in MODES:
            raise ValueError(f"progress mode {mode!r}: one of {', '.join(MODES)}")
        self._context = context
        stream = stream or sys.stderr  # at call time: the engine routes each command's streams
        self._stream = stream
        self._tty = stream.isatty() and mode == "line"
        if interval is None:
            live = self._tty or mode == "json"
            interval = TERMINAL_INTERVAL if live else LOG_INTERVAL
        self._interval = interval
        self._mode = mode
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.label = ""
        self.expected: int | None = None
        self.unit = ""
        self._started = time.monotonic()
        self._last = ""

    def statement(self, label: str, expected: int | None = None, unit: str = "files") -> None:
        """A new statement starts: label the progress with it, restart its clock, and say how
        many ``unit`` it works through (None: not a count of items)."""
        self.label = label
        self.expected = expected
        self.unit = unit
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
        self._stop.clear()
        if self._mode != "off":
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

    def snapshot(self) -> Snapshot:
        """What the running stages have finished; all zero without a SparkContext in this
        process (a Spark Connect client)."""
        if self._context is None:
            return Snapshot(0, 0, 0)
        tracker = self._context.statusTracker()
        store = self._context._jsc.sc().statusStore()
        done = total = written = 0
        for stage_id in tracker.getActiveStageIds():
            # One record of the stage's attempt for all three counts, so that they agree. Rows
            # a task wrote are counted when it ends (Spark sends a running task's metrics only
            # with its result).
            try:
                stage = store.lastStageAttempt(stage_id)
            except Exception as exc:  # ended and dropped from the store since
                if "NoSuchElementException" in str(exc):
                    continue
                raise
            done += stage.numCompleteTasks()
            total += stage.numTasks()
            written += stage.outputRecords()
        return Snapshot(done, total, written)

    def text(self, now: Snapshot) -> str:
        """The progress line of ``now``."""
        parts = [self.label, f"{now.tasks_done}/{now.tasks} tasks"]
        if self.expected is not None:
            parts.append(f"{now.written}/{self.expected} {self.unit}")
        parts.append(f"{time.monotonic() - self._started:.0f}s")
        return " · ".join(parts)

    def record(self, now: Snapshot) -> str:
        """The JSON line of ``now`` (``--progress json``)."""
        fields: dict[str, object] = {
            "statement": self.label,
            "tasks_done": now.tasks_done,
            "tasks": now.tasks,
            "seconds": round(time.monotonic() - self._started, 1),
        }
        if self.expected is not None:
            fields.update(done=now.written, expected=self.expected, unit=self.unit)
        return json.dumps(fields)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                now = self.snapshot()
            except Exception:
                # The JVM went away under the statement (killed, out of memory): the statement
                # reports the failure itself; a traceback from this thread would only bury it.
                return
            if now.tasks == 0:
                continue
            if self._mode == "json":
                self._stream.write(self.record(now) + "\n")
                self._stream.flush()
                continue
            text = self.text(now)
            if text == self._last:
                continue
            if self._tty:
                self._stream.write("\r" + text.ljust(len(self._last)))
            else:
                self._stream.write(text + "\n")
            self._stream.flush()
            self._last = text
