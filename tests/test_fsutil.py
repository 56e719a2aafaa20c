"""File helpers: positioned writes of a list of buffers."""

from __future__ import annotations

import os

from peerd import fsutil
from peerd.fsutil import write_parts_at


def test_write_parts_at_writes_in_order_at_the_offset(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"." * 20)
    fd = os.open(path, os.O_WRONLY)
    try:
        write_parts_at(fd, [b"abc", b"", b"defg", memoryview(b"hi")], 5)
    finally:
        os.close(fd)
    assert path.read_bytes() == b".....abcdefghi" + b"." * 6


def test_write_parts_at_finishes_after_short_writes(tmp_path, monkeypatch):
    """pwritev may write less than asked, even mid-buffer; the rest still lands, in place."""
    real = os.pwritev
    calls = []

    def at_most_three_bytes(fd, buffers, offset):
        calls.append(len(buffers))
        data = b"".join(bytes(b) for b in buffers)[:3]
        return real(fd, [data], offset)

    monkeypatch.setattr(fsutil.os, "pwritev", at_most_three_bytes)
    parts = [bytes([65 + i]) * (i + 1) for i in range(8)]  # A, BB, CCC, ...
    path = tmp_path / "f"
    path.write_bytes(b"")
    fd = os.open(path, os.O_WRONLY)
    try:
        write_parts_at(fd, parts, 2)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"\0\0" + b"".join(parts)
    assert len(calls) == -(-sum(map(len, parts)) // 3)


def test_write_parts_at_batches_many_buffers(tmp_path):
    parts = [bytes([i % 251]) for i in range(3000)]
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        write_parts_at(fd, parts, 0)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(parts)
