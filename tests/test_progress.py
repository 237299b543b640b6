"""How pixels-sql run / ingest report progress, and a JVM that died under them (progress.py,
cli.py); no JVM is started."""

from __future__ import annotations

import io
import json
import socket
import threading
import time

import pytest

from pixels_sql.progress import Progress


class TerminalBuffer(io.StringIO):
    """A stream that says it is a terminal (the 1 s interval is then kept)."""

    def isatty(self) -> bool:
        return True


class StageData:
    def numCompleteTasks(self) -> int:
        return 3

    def numTasks(self) -> int:
        return 8

    def outputRecords(self) -> int:
        return 300


class StatusStore:
    def lastStageAttempt(self, stage_id: int) -> StageData:
        return StageData()


class JavaContext:
    def sc(self) -> JavaContext:
        return self

    def statusStore(self) -> StatusStore:
        return StatusStore()


class Tracker:
    def getActiveStageIds(self) -> list[int]:
        return [1]


class Context:
    """A SparkContext whose JVM answers, or is gone (py4j then raises on every call)."""

    def __init__(self) -> None:
        self.gone = False
        self._jsc = JavaContext()

    def statusTracker(self) -> Tracker:
        if self.gone:
            raise ConnectionRefusedError(111, "Connection refused")
        return Tracker()


def test_progress_prints_tasks_and_ends_quietly_when_the_jvm_is_gone(monkeypatch) -> None:
    """While the JVM answers, the line counts tasks and the files finished tasks wrote; once it
    is gone (killed, out of memory) the thread ends without a traceback of its own."""
    raised: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    context, stream = Context(), TerminalBuffer()
    with Progress(context, stream, interval=0.01) as progress:  # type: ignore[arg-type]
        progress.statement("sql/20_meta.sql:12", 800, "files")
        deadline = time.monotonic() + 5
        while "3/8 tasks" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        context.gone = True
        thread = progress._thread
        assert thread is not None
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert "sql/20_meta.sql:12 · 3/8 tasks · 300/800 files · " in stream.getvalue()
    assert raised == []


def test_a_statement_that_is_no_count_of_items_shows_tasks_only() -> None:
    context, stream = Context(), TerminalBuffer()
    progress = Progress(context, stream, interval=0.01)  # type: ignore[arg-type]
    progress.statement("sql/90_views.sql:6")
    assert progress.text(progress.snapshot()).startswith("sql/90_views.sql:6 · 3/8 tasks · ")
    assert "files" not in progress.text(progress.snapshot())
    record = json.loads(Progress(context, stream, mode="json").record(progress.snapshot()))  # type: ignore[arg-type]
    assert set(record) == {"statement", "tasks_done", "tasks", "seconds"}


def test_quiet_progress_starts_no_thread() -> None:
    stream = TerminalBuffer()
    with Progress(Context(), stream, interval=0.01, mode="off") as progress:  # type: ignore[arg-type]
        progress.statement("sql/20_meta.sql:12", 800)
        time.sleep(0.1)
    assert progress._thread is None and stream.getvalue() == ""


def test_a_jvm_that_died_is_named_in_the_cli_error() -> None:
    """When Spark's JVM exits (OutOfMemoryError), py4j only sees a refused connection or an
    empty answer: the CLI says the JVM exited and where its own error is, not "[Errno 111]".
    The refused connection is a real py4j call to a port nobody listens on; a connection
    refused elsewhere (not through py4j) keeps its own text."""
    from py4j.clientserver import ClientServer, JavaParameters, PythonParameters
    from py4j.protocol import Py4JNetworkError

    from pixels_sql.cli import _error_text

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    gateway = ClientServer(
        java_parameters=JavaParameters(port=closed_port),
        python_parameters=PythonParameters(port=0),
    )
    try:
        with pytest.raises(ConnectionRefusedError) as refused:
            gateway.jvm.java.lang.System.currentTimeMillis()
    finally:
        gateway.shutdown()
    for gone in (refused.value, Py4JNetworkError("Answer from Java side is empty")):
        text = _error_text(gone)
        assert text.startswith("lost the connection to Spark's JVM")
        assert "OutOfMemoryError" in text and "SPARK_DRIVER_MEMORY" in text
    assert _error_text(ConnectionRefusedError(111, "Connection refused")) == (
        "[Errno 111] Connection refused"
    )
    assert _error_text(ValueError("bad value")) == "bad value"
