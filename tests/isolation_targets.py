"""Functions the isolation tests run in the helper process: they crash on purpose."""

from __future__ import annotations

import os
import signal
import time


class _Panic(BaseException):
    """Like pyo3's PanicException (a Rust decoder's panic): not an Exception subclass."""


def echo(value: str) -> tuple[str, None]:
    return value, None


def abort_on(value: str) -> tuple[str, None]:
    """Like a C++ decoder's uncaught exception: ``terminate`` aborts the process."""
    if value.startswith("abort"):
        os.abort()
    if value.startswith("segv"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if value.startswith("exit"):
        os._exit(3)
    if value.startswith("hang"):
        time.sleep(60)
    if value.startswith("raise"):
        raise KeyError(value)
    if value.startswith("panic"):
        raise _Panic(value)
    if value.startswith("nap"):
        time.sleep(0.2)
    if value.startswith("allocate"):
        bytearray(8 << 30)  # 8 GiB: over the helper's address-space limit
    return value, None


def failure(reason: str, message: str) -> tuple[None, str]:
    return None, reason
