"""The helper process: a crash, an abort, a hang or an exception costs one file, in order."""

from __future__ import annotations

import os
import pickle
import threading
import time

import pytest

from pixels_sql.io import isolation
from pixels_sql.io.isolation import run_isolated
from tests.isolation_targets import abort_on, echo, failure


def test_results_come_back_in_order() -> None:
    items = [(f"file{i}",) for i in range(500)]
    assert run_isolated(echo, items, failure) == [(f"file{i}", None) for i in range(500)]


def test_each_crash_costs_exactly_its_own_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXELS_SQL_FILE_TIMEOUT", "2")
    # Helpers started from here on run under a 2 GiB address-space limit.
    monkeypatch.setenv("PIXELS_SQL_FILE_MEMORY", str(2 << 10))
    items = [
        *("a", "abort1", "b", "segv", "c", "exit", "raise", "panic", "hang", "d", "abort2"),
        "allocate",
    ]
    results = run_isolated(abort_on, [(item,) for item in items], failure)
    assert results == [
        ("a", None),
        (None, "decoder_crash"),
        ("b", None),
        (None, "decoder_crash"),
        ("c", None),
        (None, "decoder_crash"),
        (None, "corrupt"),  # KeyError let through: classified like any reader exception
        (None, "corrupt"),  # a BaseException that is no Exception (a Rust panic) too
        (None, "timeout"),
        ("d", None),
        (None, "decoder_crash"),
        (None, "too_large"),  # MemoryError under the helper's address-space limit
    ]
    # The helper that survived the last files is reused by the next batch.
    assert run_isolated(echo, [("e",)], failure) == [("e", None)]
    helper = isolation._HELPER._process
    helper.kill()  # the next helper starts without the limit
    helper.wait()


def test_replies_in_groups_still_charge_a_crash_to_its_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The helper replies every REPLY_GROUP files: the files it read after its last reply are
    read again by the next helper, and the crash is charged to the file its counter names."""
    monkeypatch.setenv("PIXELS_SQL_FILE_TIMEOUT", "1")
    items = [f"file{i}" for i in range(3 * isolation.REPLY_GROUP)]
    items[isolation.REPLY_GROUP + 10] = "segv"
    items[-1] = "abort"
    # Files that each take 0.2 s, 2 s in all: no timeout, the counter moves on.
    items[5:15] = [f"nap{i}" for i in range(10)]
    results = run_isolated(abort_on, [(item,) for item in items], failure)
    expected = [
        (None, "decoder_crash") if item in ("segv", "abort") else (item, None) for item in items
    ]
    assert results == expected


def test_in_process_mode_gives_the_same_results_for_exceptions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIXELS_SQL_ISOLATION", "none")
    assert run_isolated(abort_on, [("a",), ("raise",)], failure) == [("a", None), (None, "corrupt")]


def test_a_message_arriving_across_a_deadline_is_read_whole() -> None:
    """A reply whose first part came before the wait's deadline and the rest after it is one
    message: cut at the deadline, its rest was read next as a length (MemoryError)."""
    reader, writer = os.pipe()
    message = pickle.dumps(["result"] * 1000)
    frame = isolation._FRAME.pack(len(message)) + message
    os.write(writer, frame[:100])

    def finish() -> None:
        time.sleep(0.6)
        os.write(writer, frame[100:])

    late = threading.Thread(target=finish)
    late.start()
    with os.fdopen(reader, "rb", buffering=0) as stream:
        assert isolation._receive(stream, 0.2) == ["result"] * 1000
        late.join()
        os.close(writer)
        # Then the child's end: a failure that is not a time-out.
        assert isolation._receive(stream, 0.2).timed_out is False


def test_no_message_yet_is_a_time_out() -> None:
    reader, writer = os.pipe()
    with os.fdopen(reader, "rb", buffering=0) as stream:
        assert isolation._receive(stream, 0.1).timed_out is True
    os.close(writer)
