"""File helpers: crash-safe landing, positioned writes of a list of buffers, direct writes."""

from __future__ import annotations

import errno
import os

import pytest

from peerd import disk
from peerd.disk import DIRECT_ALIGNMENT, write_parts_at, write_parts_direct


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

    monkeypatch.setattr(disk.os, "pwritev", at_most_three_bytes)
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


def test_direct_write_of_aligned_parts(tmp_path):
    """Aligned parts go straight to the file (or are refused where O_DIRECT is not supported)."""
    path = tmp_path / "f"
    path.write_bytes(b"." * (3 * DIRECT_ALIGNMENT))
    parts = [b"a" * 1000, memoryview(b"b" * 5000), b"c" * (2 * DIRECT_ALIGNMENT - 6000)]
    if write_parts_direct(path, parts, DIRECT_ALIGNMENT):
        assert path.read_bytes() == b"." * DIRECT_ALIGNMENT + b"".join(bytes(p) for p in parts)
    else:  # nothing written
        assert path.read_bytes() == b"." * (3 * DIRECT_ALIGNMENT)


def test_direct_write_refuses_unaligned_requests(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"." * (2 * DIRECT_ALIGNMENT))
    assert not write_parts_direct(path, [b"x" * DIRECT_ALIGNMENT], 100)
    assert not write_parts_direct(path, [b"x" * 100], 0)
    assert not write_parts_direct(path, [], 0)
    assert path.read_bytes() == b"." * (2 * DIRECT_ALIGNMENT)


def test_direct_write_falls_back_where_the_filesystem_refuses(tmp_path, monkeypatch):
    """EINVAL on open (tmpfs has no O_DIRECT) means: write the usual way."""
    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(disk.os, "open", no_direct)
    path = tmp_path / "f"
    path.write_bytes(b"." * DIRECT_ALIGNMENT)
    assert not write_parts_direct(path, [b"x" * DIRECT_ALIGNMENT], 0)
    assert path.read_bytes() == b"." * DIRECT_ALIGNMENT


def test_land_replaces_and_syncs_the_file_then_its_directory(tmp_path, monkeypatch):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    f, temp = disk.temp_beside(target)
    assert temp.parent == tmp_path and temp.name.startswith(".f.")
    with f:
        f.write(b"new")
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    disk.land(temp, target, replace=True)
    assert target.read_bytes() == b"new" and not temp.exists()
    assert synced == [str(temp), str(tmp_path)]


def test_land_without_replace_refuses_an_existing_file_and_keeps_the_temporary(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    temp = tmp_path / ".f.tmp"
    temp.write_bytes(b"new")
    with pytest.raises(FileExistsError):
        disk.land(temp, target, replace=False)
    assert target.read_bytes() == b"old" and temp.read_bytes() == b"new"
    disk.land(temp, tmp_path / "g", replace=False)
    assert (tmp_path / "g").read_bytes() == b"new" and not temp.exists()


def test_land_without_hard_links_renames_unless_the_file_exists(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "no hard links here")

    monkeypatch.setattr(os, "link", no_links)
    temp = tmp_path / ".f.tmp"
    temp.write_bytes(b"new")
    disk.land(temp, tmp_path / "f", replace=False)
    assert (tmp_path / "f").read_bytes() == b"new" and not temp.exists()
    temp.write_bytes(b"newer")
    with pytest.raises(FileExistsError):
        disk.land(temp, tmp_path / "f", replace=False)
    assert (tmp_path / "f").read_bytes() == b"new"


def test_write_atomically_leaves_nothing_behind_when_it_fails(tmp_path):
    target = tmp_path / "f"
    disk.write_atomically(target, b"one", replace=False)
    with pytest.raises(FileExistsError):
        disk.write_atomically(target, b"two", replace=False)
    disk.write_atomically(target, b"three", replace=True)
    assert target.read_bytes() == b"three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
