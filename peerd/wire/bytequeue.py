"""A FIFO of received byte chunks that hands out exact-length pieces with at most one copy."""

from __future__ import annotations

from collections import deque


class ByteQueue:
    """
    Chunks are kept as they arrive; :meth:`take` slices or joins them, so a
    payload spanning many chunks is copied once and a whole chunk not at all.
    :meth:`take_parts` and :meth:`take_upto` copy nothing: a piece cut from
    a chunk is a ``memoryview`` of it.
    """

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # bytes of _chunks[0] already taken
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        """Add received bytes."""
        if data:
            self._chunks.append(data)
            self._size += len(data)

    def take(self, count: int) -> bytes:
        """Remove and return the next ``count`` bytes; the caller checks ``len`` first."""
        parts = self.take_parts(count)
        if len(parts) == 1:
            return bytes(parts[0]) if type(parts[0]) is memoryview else parts[0]
        return b"".join(parts)

    def take_parts(self, count: int) -> list[bytes | memoryview]:
        """
        Remove the next ``count`` bytes and return them as a list of pieces
        in order, without joining or copying them: whole chunks as they
        are, the part of a chunk cut at either end as a ``memoryview``.
        """
        if count > self._size:
            raise ValueError(f"only {self._size} bytes queued, {count} asked")
        chunks = self._chunks
        self._size -= count
        parts: list[bytes | memoryview] = []
        while count:
            first = chunks[0]
            start = self._offset
            available = len(first) - start
            if available <= count:
                parts.append(memoryview(first)[start:] if start else first)
                chunks.popleft()
                self._offset = 0
                count -= available
            else:
                parts.append(memoryview(first)[start : start + count])
                self._offset = start + count
                count = 0
        return parts

    def take_upto(self, count: int) -> bytes | memoryview:
        """
        Remove and return at most ``count`` bytes from the first chunk only:
        never a join and never a copy (a part of a chunk is a ``memoryview``).
        """
        if not self._size or count <= 0:
            return b""
        first = self._chunks[0]
        start = self._offset
        available = len(first) - start
        if available <= count:
            self._chunks.popleft()
            self._offset = 0
            self._size -= available
            return memoryview(first)[start:] if start else first
        self._offset = start + count
        self._size -= count
        return memoryview(first)[start : start + count]
