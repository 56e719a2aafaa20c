"""Crash-safe file writes: a reader sees the old file or the new one, never a part."""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Sequence


def write_atomically(path: pathlib.Path, data: bytes, *, replace: bool) -> None:
    """
    Write ``data`` to ``path`` so that a crash leaves the old file or the new
    one, never a part: a temporary file in the same directory (mode 0600),
    fsynced, then renamed, then the directory fsynced.

    :param replace: if false, fail with ``FileExistsError`` rather than
        replace an existing ``path``.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp_name, path)
        else:
            os.link(tmp_name, path)  # fails if path exists, unlike rename
            os.unlink(tmp_name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
