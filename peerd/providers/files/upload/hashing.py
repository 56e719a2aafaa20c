"""
Hashing a regular file or a directory tree into its manifest (and each
file's leaf hashes): the first step of sharing.  Blocking: run it in a
worker thread.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from peerd.providers.files.content import FileEntry, InvalidManifest, Manifest, path_problem
from peerd.providers.files.merkle import (
    DEFAULT_READ_SIZE,
    block_size_for,
    hash_stream,
    root_from_leaves,
)


class ContentChangedError(OSError):
    """A file changed while it was being hashed."""


Skipped = list[tuple[Path, str]]


def _scan(directory: Path, prefix: tuple[str, ...], found: list, skipped: Skipped) -> None:
    with os.scandir(directory) as it:
        entries = list(it)
    for entry in entries:
        path = Path(entry.path)
        rel = (*prefix, entry.name)
        problem = path_problem(rel)
        if entry.is_symlink():
            skipped.append((path, "symbolic link (not followed)"))
        elif problem is not None:
            skipped.append((path, f"path {problem}"))
        elif entry.is_dir(follow_symlinks=False):
            _scan(path, rel, found, skipped)
        elif entry.is_file(follow_symlinks=False):
            found.append((rel, path, entry.stat(follow_symlinks=False).st_size))
        else:
            skipped.append((path, "not a regular file"))


def _hash_one(
    path: Path,
    expected_size: int,
    block_size: int,
    *,
    follow: bool,
    read_size: int,
    progress: Callable[[int], object] | None,
) -> list[bytes]:
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    with open(fd, "rb", buffering=0) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ContentChangedError(f"{path} is no longer a regular file")
        leaves, size = hash_stream(f, block_size, read_size=read_size, progress=progress)
    if size != expected_size:
        raise ContentChangedError(
            f"{path} changed while it was being hashed ({expected_size} bytes, then {size})"
        )
    return leaves


def _offset(progress: Callable[[int], object] | None, base: int) -> Callable[[int], object] | None:
    if progress is None:
        return None
    return lambda done: progress(base + done)


def manifest_for_path(
    path: str | os.PathLike[str],
    progress: Callable[[int], object] | None = None,
    *,
    skipped: Skipped | None = None,
    read_size: int = DEFAULT_READ_SIZE,
) -> tuple[Manifest, list[list[bytes]]]:
    """
    Hash a regular file or a directory tree into its manifest.

    Blocking: run it in a worker thread.  Returns the manifest and each
    file's leaf hashes, in manifest order (needed to serve proofs).

    ``path`` itself is followed if it is a symbolic link (the user named
    it).  Inside a directory, symbolic links are not followed, special files
    (sockets, FIFOs, devices) and names that cannot be shared safely are
    left out, each appended to ``skipped`` as ``(path, reason)`` when a list
    is given; empty directories are not represented.  The share is named by
    the last component of ``path``.  One block size, chosen from the total
    size, is used for every file.  ``progress(bytes_done)`` is called with
    the running total over all files.

    :raises InvalidManifest: if the share's name cannot be used or there
        are too many blocks.
    :raises ContentChangedError: if a file changes size while being read.
    :raises OSError: if a file or directory cannot be read.
    """
    path = Path(path)
    name = Path(os.path.abspath(path)).name
    if not name:
        raise InvalidManifest(f"{str(path)!r} has no name to share it under")
    if skipped is None:
        skipped = []
    st = path.stat()
    if stat.S_ISREG(st.st_mode):
        kind = "file"
        found = [((), path, st.st_size)]
    elif stat.S_ISDIR(st.st_mode):
        kind = "dir"
        found = []
        _scan(path, (), found, skipped)
        found.sort(key=lambda item: item[0])
    else:
        raise InvalidManifest(f"{str(path)!r} is neither a regular file nor a directory")

    block_size = block_size_for(sum(size for _, _, size in found))
    entries = []
    all_leaves = []
    done_before = 0
    for rel, file_path, size in found:
        leaves = _hash_one(
            file_path,
            size,
            block_size,
            follow=kind == "file",
            read_size=read_size,
            progress=_offset(progress, done_before),
        )
        done_before += size
        entries.append(FileEntry(rel, size, root_from_leaves(leaves), block_size))
        all_leaves.append(leaves)
    return Manifest(name, kind, tuple(entries)), all_leaves
