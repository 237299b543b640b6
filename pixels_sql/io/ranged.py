"""A read-only file of known size read by positioned reads: the base of the byte sources that
are not plain files (an object read by range requests, the first bytes of another file)."""

from __future__ import annotations

import errno
import io
from abc import abstractmethod
from typing import Any


class RangedReader(io.RawIOBase):
    """Seekable, read-only, ``size`` bytes long; a subclass says how to read ``position..end``
    (:meth:`read_range`). ``read``, ``readinto``, ``readall``, ``seek`` and ``tell`` follow
    :class:`io.RawIOBase`; a read past the end returns what is left, then ``b""``."""

    def __init__(self, size: int, name: str = "") -> None:
        super().__init__()
        self.size = size
        self._name = name
        self._position = 0

    @abstractmethod
    def read_range(self, position: int, end: int) -> bytes:
        """Bytes ``position..end`` (0 <= position < end <= size)."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}
        if whence not in bases:
            raise ValueError(f"invalid whence: {whence}")
        position = bases[whence] + offset
        if position < 0:
            raise OSError(errno.EINVAL, "negative seek position", self._name)
        self._position = position
        return position

    def read(self, count: int | None = -1) -> bytes:
        position = self._position
        end = self.size if count is None or count < 0 else min(self.size, position + count)
        if position >= end:
            return b""
        data = self.read_range(position, end)
        self._position = position + len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)
