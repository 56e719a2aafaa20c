"""
Landing a finished download safely: path checks for directory manifests,
errors for people, and the moves and copies that put a complete download
in its final place (and nowhere else): :func:`land_file` and
:func:`land_tree`, on :func:`peerd.disk.land` for single files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from peerd.disk import fsync_dir, land

COPY_CHUNK = 1024 * 1024


class DownloadError(Exception):
    """A download cannot go on as asked; the message says why, for people."""


class DestinationExists(DownloadError):
    """The destination exists and the download was not asked to replace it."""


class DestinationUnwritable(DownloadError):
    """The destination's directory is missing or not writable."""


class DiskFull(DownloadError):
    """Not enough free space for the download (or the disk filled up while writing)."""


class UnsafePath(DownloadError, ValueError):
    """A path in the manifest would land outside the destination."""


class CorruptState(DownloadError):
    """A download's state file cannot be trusted."""


def check_relative_path(parts: Sequence[str]) -> tuple[str, ...]:
    """
    ``parts`` if it is a safe relative path of a directory manifest: not
    empty, and no component empty, ``.``, ``..``, or holding ``/`` or NUL.

    :raises UnsafePath: otherwise.
    """
    if isinstance(parts, str | bytes) or not parts:
        raise UnsafePath(f"unsafe path in manifest: {parts!r} (empty or not a list of names)")
    for name in parts:
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
            raise UnsafePath(
                f"unsafe path in manifest: {'/'.join(map(str, parts))!r} "
                f"(component {name!r} is empty, '.', '..', or holds '/' or NUL)"
            )
    return tuple(parts)


def prepare_target(root: Path, parts: Sequence[str]) -> Path:
    """
    Create the directories of ``parts[:-1]`` under ``root`` and return the
    path for the file ``parts`` names, which must not exist yet. Refuses an
    unsafe path, an intermediate directory that is a symbolic link (someone
    raced us) or not a directory, and a target that resolves outside
    ``root``.

    :raises UnsafePath: with a message naming the offending path.
    """
    check_relative_path(parts)
    current = root
    for name in parts[:-1]:
        current = current / name
        with contextlib.suppress(FileExistsError):
            os.mkdir(current)
        mode = os.lstat(current).st_mode
        if stat.S_ISLNK(mode):
            raise UnsafePath(f"refusing to write through symbolic link {current}")
        if not stat.S_ISDIR(mode):
            raise UnsafePath(f"{current} is not a directory (two manifest paths collide)")
    target = current / parts[-1]
    if os.path.lexists(target):
        raise UnsafePath(f"{target} already exists (a path appears twice in the manifest)")
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(target)]) != real_root:
        raise UnsafePath(f"{'/'.join(parts)!r} resolves outside {root}")
    return target


def disk_error(e: OSError, path: Path) -> Exception:
    """``DiskFull`` for a full disk or quota, naming ``path``; ``e`` otherwise."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"no space left on device while writing {path}")
    return e


def sibling_name(path: Path, kind: str) -> Path:
    """A fresh hidden name next to ``path``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.peerd-{kind}")


def copy_file(source: Path, target: Path) -> None:
    """Copy into a new file ``target`` (never through a symlink) and fsync it."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst, COPY_CHUNK)
        dst.flush()
        os.fsync(dst.fileno())


def place(source: Path, destination: Path, replace: bool) -> None:
    """
    Rename ``source`` (a file or a directory) to ``destination`` on the
    same file system. Without ``replace``, an existing destination raises
    ``DestinationExists``; with it, a file is replaced atomically
    (:func:`peerd.disk.land`) and a directory is swapped in (the old one
    moved aside, then deleted).
    """
    exists = os.path.lexists(destination)
    if exists and not replace:
        raise DestinationExists(f"{destination} exists (ask to replace it to overwrite)")
    old_is_dir = exists and stat.S_ISDIR(os.lstat(destination).st_mode)
    if not old_is_dir and not source.is_dir():
        try:
            land(source, destination, replace=replace)
        except FileExistsError:  # it appeared meanwhile
            raise DestinationExists(f"{destination} exists") from None
        return
    if not exists:
        os.rename(source, destination)
        return
    aside = sibling_name(destination, "old")
    os.rename(destination, aside)
    try:
        os.rename(source, destination)
    except BaseException:
        os.rename(aside, destination)
        raise
    if old_is_dir:
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.unlink(aside)


def land_file(source: Path, destination: Path, replace: bool) -> None:
    """
    Put the complete file ``source`` (already fsynced) at ``destination``:
    renamed on the same file system, else copied next to the destination
    first.  The destination appears only whole.

    :raises DestinationExists: it exists and ``replace`` is false.
    """
    try:
        place(source, destination, replace)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        temporary = sibling_name(destination, "tmp")
        copy_file(source, temporary)
        try:
            place(temporary, destination, replace)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def land_tree(
    files: Sequence[tuple[Sequence[str], Path]], destination: Path, replace: bool
) -> None:
    """
    Build the directory ``destination`` from complete files (already
    fsynced), each given as ``(relative path parts, source file)``: the
    tree is built next to the destination (files renamed into it, or copied
    across file systems), fsynced, then renamed into place, so it appears
    only whole.  On failure the renamed files go back to their sources.

    :raises DestinationExists: it exists and ``replace`` is false.
    :raises UnsafePath: a path would land outside the tree.
    """
    tree = sibling_name(destination, "tmp")
    os.mkdir(tree)
    renamed: list[tuple[Path, Path]] = []
    try:
        for parts, source in files:
            target = prepare_target(tree, parts)
            try:
                os.rename(source, target)
                renamed.append((target, source))
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                copy_file(source, target)
        for directory, _dirs, _files in os.walk(tree, topdown=False):
            fsync_dir(Path(directory))
        place(tree, destination, replace)
    except BaseException:
        for target, source in reversed(renamed):  # keep the data resumable
            with contextlib.suppress(OSError):
                os.rename(target, source)
        shutil.rmtree(tree, ignore_errors=True)
        raise
