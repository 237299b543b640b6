"""The progress line of pixels-sql run / ingest (pixels_sql/progress.py), without a JVM."""

from __future__ import annotations

import io
import threading
import time

from pixels_sql.progress import Progress


class TerminalBuffer(io.StringIO):
    """A stream that says it is a terminal (the 1 s interval is then kept)."""

    def isatty(self) -> bool:
        return True


class StageInfo:
    numCompletedTasks = 3
    numTasks = 8


class Tracker:
    def getActiveStageIds(self) -> list[int]:
        return [1]

    def getStageInfo(self, stage_id: int) -> StageInfo:
        return StageInfo()


class Context:
    """A SparkContext whose JVM answers, or is gone (py4j then raises on every call)."""

    def __init__(self) -> None:
        self.gone = False

    def statusTracker(self) -> Tracker:
        if self.gone:
            raise ConnectionRefusedError(111, "Connection refused")
        return Tracker()


def test_progress_prints_tasks_and_ends_quietly_when_the_jvm_is_gone(monkeypatch) -> None:
    """While the JVM answers, the line counts tasks and estimates files; once it is gone (killed,
    out of memory) the thread ends without a traceback of its own."""
    raised: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    context, stream = Context(), TerminalBuffer()
    with Progress(context, stream, interval=0.01) as progress:  # type: ignore[arg-type]
        progress.statement("sql/20_meta.sql:12")
        progress.expected_files = 800
        deadline = time.monotonic() + 5
        while "3/8 tasks" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        context.gone = True
        thread = progress._thread
        assert thread is not None
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert "sql/20_meta.sql:12 3/8 tasks · ≈300/800 files" in stream.getvalue()
    assert raised == []
