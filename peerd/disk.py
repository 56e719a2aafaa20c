"""
File writes: landing a file crash-safely (a reader sees the old file or the
new one, never a part: :func:`land` for a temporary file already written,
:func:`write_atomically` for bytes in memory), positioned writes of a list
of buffers, and direct (page-cache-bypassing) writes of aligned blocks.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import pathlib
import tempfile
import threading
from collections.abc import Sequence
from typing import BinaryIO


def fsync_file(path: os.PathLike | str) -> None:
    """Flush a file's data and metadata to disk, by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: os.PathLike | str) -> None:
    """Make the names in directory ``path`` (renames, links, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_beside(path: pathlib.Path, suffix: str = ".tmp") -> tuple[BinaryIO, pathlib.Path]:
    """
    A new temporary file (mode 0600, open for writing) in ``path``'s
    directory, named ``.NAME.XXXX<suffix>``: once written and closed,
    :func:`land` puts it at ``path``.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    return os.fdopen(fd, "wb"), pathlib.Path(name)


def land(temp: os.PathLike | str, path: os.PathLike | str, *, replace: bool) -> None:
    """
    Make the finished (written and closed) file ``temp`` appear at ``path``
    so that a crash leaves the old file or the new one, never a part:
    ``temp`` is fsynced, renamed to ``path`` (or, without ``replace``,
    hard-linked there then removed), and ``path``'s directory fsynced.
    ``temp`` must be on the same file system, normally in the same directory.

    :param replace: if false, fail with ``FileExistsError`` rather than
        replace an existing ``path``.  (Where the file system has no hard
        links, an existing ``path`` is checked for, then ``temp`` renamed.)
    :raises OSError: ``temp`` is then left where it is, for the caller.
    """
    fsync_file(temp)
    if replace:
        os.replace(temp, path)
    else:
        try:
            os.link(temp, path)  # fails if path exists, unlike rename
        except OSError as e:
            if isinstance(e, FileExistsError) or e.errno == errno.EXDEV:
                raise
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
            os.rename(temp, path)  # no hard links on this file system
        else:
            os.unlink(temp)
    fsync_dir(os.path.dirname(path) or ".")


def write_atomically(path: pathlib.Path, data: bytes, *, replace: bool) -> None:
    """
    Write ``data`` to ``path`` so that a crash leaves the old file or the new
    one, never a part: a :func:`temp_beside` file, then :func:`land`.

    :param replace: if false, fail with ``FileExistsError`` rather than
        replace an existing ``path``.
    """
    f, temp = temp_beside(path)
    try:
        with f:
            f.write(data)
        land(temp, path, replace=replace)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


_IOV_BATCH = 512  # well under every platform's IOV_MAX (1024 on Linux)


def write_parts_at(fd: int, parts: Sequence[bytes], offset: int) -> None:
    """
    Write ``parts`` one after another at ``offset`` in ``fd`` with
    ``pwritev`` (no joining copy), retrying short writes.
    """
    views = [memoryview(p) for p in parts if len(p)]
    first = 0
    while first < len(views):
        written = os.pwritev(fd, views[first : first + _IOV_BATCH], offset)
        offset += written
        while first < len(views) and written >= len(views[first]):
            written -= len(views[first])
            first += 1
        if written:
            views[first] = views[first][written:]


DIRECT_ALIGNMENT = 4096
"""Offsets and lengths written with O_DIRECT are multiples of this (a page)."""

_direct_buffers = threading.local()


def write_parts_direct(path: os.PathLike | str, parts: Sequence[bytes], offset: int) -> bool:
    """
    Write ``parts`` at ``offset`` in the existing file ``path`` with
    ``O_DIRECT``: copied once into a page-aligned buffer of this thread and
    sent straight to the disk, skipping the page cache (and the writeback
    work a later ``fsync`` would do). False, having written nothing, where
    that cannot be done: no ``O_DIRECT`` on this platform or filesystem, or
    an offset or total length that is not a multiple of
    :data:`DIRECT_ALIGNMENT`; the caller then writes the usual way.
    """
    length = sum(map(len, parts))
    flag = getattr(os, "O_DIRECT", 0)
    if not flag or offset % DIRECT_ALIGNMENT or length % DIRECT_ALIGNMENT or not length:
        return False
    try:
        fd = os.open(path, os.O_WRONLY | flag)
    except OSError as e:
        if e.errno == errno.EINVAL:  # the filesystem has no O_DIRECT (tmpfs, some FUSE)
            return False
        raise
    try:
        buffer: mmap.mmap | None = getattr(_direct_buffers, "buffer", None)
        if buffer is None or len(buffer) < length:
            if buffer is not None:
                buffer.close()
            buffer = _direct_buffers.buffer = mmap.mmap(-1, length)  # page-aligned
        with memoryview(buffer) as view:
            position = 0
            for part in parts:
                view[position : position + len(part)] = part
                position += len(part)
            try:
                written = os.pwrite(fd, view[:length], offset)
            except OSError as e:
                if e.errno == errno.EINVAL:  # alignment the device refuses
                    return False
                raise
            if written != length:  # a short direct write: finish it through the page cache
                rest = os.open(path, os.O_WRONLY)
                try:
                    write_parts_at(rest, [view[written:length]], offset + written)
                finally:
                    os.close(rest)
        return True
    finally:
        os.close(fd)
