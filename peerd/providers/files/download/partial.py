"""
One download in progress: crash-safe and resumable.

Layout under ``<state_dir>/downloads/<cid>/``::

    state       manifest, destination, force flag and the bitfield of
                verified blocks (JSON, written atomically)
    data/<i>    one partial file per manifest file, preallocated to its size

A block's bytes are written (``write_block``) and fsynced before its bit is
persisted (``checkpoint``), so a crash at any moment never leaves a block
marked verified that is not on disk: a restart resumes from the last
checkpoint. ``finalize`` moves the complete data into the destination so
that the final path appears only when it is whole.

Everything here is blocking disk I/O for worker threads. ``write_block``,
``read_block``, ``has``, ``have``, ``bitfield`` and ``checkpoint`` may be
called from several threads at once; ``finalize`` and ``cancel`` must not
race with writes (the provider stops the swarm first).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import shutil
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from peerd.disk import (
    fsync_dir,
    fsync_file,
    write_atomically,
    write_parts_at,
    write_parts_direct,
)
from peerd.providers.files import bitfield
from peerd.providers.files.content import ContentID, Manifest
from peerd.providers.files.download.landing import (
    CorruptState,
    DestinationExists,
    DestinationUnwritable,
    DiskFull,
    DownloadError,
    UnsafePath,
    check_relative_path,
    disk_error,
    land_file,
    land_tree,
    prepare_target,
)

log = Logger()

STATE_VERSION = 1
STATE_NAME = "state"
DATA_DIR = "data"


class PartialDownload:
    """
    The on-disk state of one download of ``manifest`` (whose ID is
    ``cid``) into ``destination``.

    Creating one checks the manifest's paths, that the destination's
    directory exists and is writable, that the destination does not exist
    (unless ``force``) and that there is room for the bytes still missing;
    then preallocates the partial files and writes the state. If a state
    for ``cid`` already exists, its verified blocks are kept.

    :raises UnsafePath, DestinationExists, DestinationUnwritable, DiskFull:
    """

    def __init__(
        self,
        state_dir: Path,
        cid: ContentID,
        manifest: Manifest,
        destination: Path,
        force: bool = False,
    ) -> None:
        if str(ContentID.for_manifest(manifest)) != str(cid):
            raise ValueError(f"manifest does not match content ID {cid}")
        self._init(state_dir, cid, manifest, Path(destination).absolute(), force)
        self._check_paths()
        self._check_destination()
        previous = self._read_state_if_any()
        if previous is not None:
            self._bits[:] = previous
        self._check_space()
        self._open_data_files()
        self._save_state(bytes(self._bits))

    direct_writes = True
    """Write whole aligned blocks with ``O_DIRECT`` where the filesystem allows it."""

    def _init(
        self, state_dir: Path, cid: ContentID, manifest: Manifest, destination: Path, force: bool
    ) -> None:
        self.state_dir = Path(state_dir)
        self.cid = cid
        self.manifest = manifest
        self.destination = destination
        self.force = force
        self.directory = self.state_dir / "downloads" / _dir_name(cid)
        self._lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._bits = bytearray(bitfield.size(manifest.block_count))
        self._dirty: set[int] = set()
        self._unsaved = False

    # -- creation and resumption --------------------------------------------------

    @classmethod
    def resume_all(cls, state_dir: Path) -> list[PartialDownload]:
        """
        Every download in progress under ``state_dir``. A damaged one is
        logged and skipped; its files are kept for a human to look at.
        """
        root = Path(state_dir) / "downloads"
        if not root.is_dir():
            return []
        found = []
        for directory in sorted(root.iterdir()):
            if not directory.is_dir() or directory.name.startswith("."):
                continue
            try:
                found.append(cls._resume(directory))
            except (OSError, CorruptState) as e:
                log.warn(
                    "skipping download in {directory}: {error}",
                    directory=str(directory),
                    error=str(e),
                )
        return found

    @classmethod
    def _resume(cls, directory: Path) -> PartialDownload:
        try:
            raw = json.loads((directory / STATE_NAME).read_bytes())
            if raw["version"] != STATE_VERSION:
                raise CorruptState(f"unknown state version {raw['version']!r}")
            manifest = Manifest.decode(base64.b64decode(raw["manifest"], validate=True))
            cid = ContentID.for_manifest(manifest)
            if str(cid) != raw["cid"]:
                raise CorruptState("manifest does not match the content ID")
            destination = Path(raw["destination"])
            force = raw["force"]
            bits = base64.b64decode(raw["bitfield"], validate=True)
        except CorruptState:
            raise
        except FileNotFoundError:
            raise CorruptState("no state file") from None
        except Exception as e:  # anything a damaged file can raise
            raise CorruptState(f"unreadable state: {type(e).__name__}: {e}") from e
        if not destination.is_absolute() or not isinstance(force, bool):
            raise CorruptState("bad destination or force flag")
        self = cls.__new__(cls)
        self._init(directory.parent.parent, cid, manifest, destination, force)
        if self.directory != directory:
            raise CorruptState(f"directory name does not match content ID {cid}")
        if not bitfield.valid(bits, manifest.block_count):
            raise CorruptState("bitfield does not fit the manifest")
        try:
            self._check_paths()
        except UnsafePath as e:
            raise CorruptState(str(e)) from e
        self._bits[:] = bits
        self._open_data_files()
        return self

    def _check_paths(self) -> None:
        if self.manifest.kind == "dir":
            for entry in self.manifest.files:
                check_relative_path(entry.path)

    def _check_destination(self) -> None:
        parent = self.destination.parent
        if not parent.is_dir():
            raise DestinationUnwritable(
                f"cannot download to {self.destination}: {parent} is not a directory"
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise DestinationUnwritable(
                f"cannot download to {self.destination}: {parent} is not writable"
            )
        if os.path.lexists(self.destination) and not self.force:
            raise DestinationExists(f"{self.destination} exists (ask to replace it to overwrite)")

    def _check_space(self) -> None:
        remaining = self.remaining_bytes
        self.state_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.state_dir).free
        if free < remaining:
            raise DiskFull(
                f"download of {self.cid} needs {remaining} more bytes in {self.state_dir} "
                f"but only {free} are free"
            )
        parent = self.destination.parent
        if os.stat(parent).st_dev != os.stat(self.state_dir).st_dev:
            # finalize will copy across file systems
            free = shutil.disk_usage(parent).free
            if free < self.manifest.total_size:
                raise DiskFull(
                    f"download of {self.cid} needs {self.manifest.total_size} bytes in "
                    f"{parent} but only {free} are free"
                )

    def _read_state_if_any(self) -> bytes | None:
        if not (self.directory / STATE_NAME).exists():
            return None
        try:
            previous = self._resume(self.directory)
        except (OSError, CorruptState) as e:
            log.warn(
                "starting {cid} afresh: earlier state unusable: {error}",
                cid=str(self.cid),
                error=str(e),
            )
            return None
        return bytes(previous._bits)

    def _open_data_files(self) -> None:
        """Create or check the partial files; forget the blocks of any that are missing."""
        data = self.directory / DATA_DIR
        try:
            data.mkdir(parents=True, exist_ok=True)
            for i, entry in enumerate(self.manifest.files):
                path = data / str(i)
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    size = None
                if size == entry.size:
                    continue
                if size is not None or self._file_has_any(i):
                    log.warn(
                        "partial file {path} is missing or has the wrong size; "
                        "its blocks will be fetched again",
                        path=str(path),
                    )
                with open(path, "wb") as f:
                    f.truncate(entry.size)
                self._clear_file(i)
        except OSError as e:
            raise disk_error(e, data) from e
        # The blocks of empty files need no data.
        for i, entry in enumerate(self.manifest.files):
            if entry.size == 0:
                for index in self.manifest.file_blocks(i):
                    bitfield.add(self._bits, index)

    # -- blocks -------------------------------------------------------------------

    def write_block(self, index: int, data: bytes | Sequence[bytes]) -> None:
        """
        Write block ``index`` (already verified by the caller), given whole
        or as the list of its pieces. It counts as held at once, and
        survives a crash after the next ``checkpoint``.

        :raises IndexError: for an index out of range.
        :raises ValueError: if ``data`` is not the block's length.
        :raises DiskFull: if the disk is full.
        """
        file_index, _block, offset, length = self._locate(index)
        parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
        size = sum(map(len, parts))
        if size != length:
            raise ValueError(f"block {index} is {length} bytes, not {size}")
        path = self._data_path(file_index)
        try:
            # Straight to the disk where possible: no page cache to write back
            # at the next checkpoint's fsync, which costs far more CPU.
            if not (self.direct_writes and write_parts_direct(path, parts, offset)):
                fd = os.open(path, os.O_WRONLY)
                try:
                    write_parts_at(fd, parts, offset)
                finally:
                    os.close(fd)
        except OSError as e:
            raise disk_error(e, path) from e
        with self._lock:
            bitfield.add(self._bits, index)
            self._dirty.add(file_index)
            self._unsaved = True

    def read_block(self, index: int) -> bytes | None:
        """Block ``index`` if we hold it (to serve while downloading), else None."""
        file_index, _block, offset, length = self._locate(index)
        if not self.has(index):
            return None
        with open(self._data_path(file_index), "rb") as f:
            data = os.pread(f.fileno(), length, offset)
        if len(data) != length:
            raise OSError(
                errno.EIO, f"short read of block {index}", str(self._data_path(file_index))
            )
        return data

    def checkpoint(self) -> bool:
        """
        Make every block written so far durable: fsync the partial files
        written to, then persist the bitfield. False if there was nothing
        new to save.

        :raises DiskFull: if the disk is full.
        """
        with self._checkpoint_lock:
            with self._lock:
                if not self._unsaved:
                    return False
                bits = bytes(self._bits)
                dirty, self._dirty = self._dirty, set()
                self._unsaved = False
            try:
                self._fsync_files(sorted(dirty))
                self._save_state(bits)
            except BaseException:
                with self._lock:
                    self._dirty |= dirty
                    self._unsaved = True
                raise
            return True

    def has(self, index: int) -> bool:
        """Whether block ``index`` is held."""
        self._locate(index)
        with self._lock:
            return bitfield.has(self._bits, index)

    @property
    def have(self) -> frozenset[int]:
        """The indexes of the blocks held."""
        with self._lock:
            bits = bytes(self._bits)
        return frozenset(bitfield.indices(bits, self.manifest.block_count))

    @property
    def bitfield(self) -> bytes:
        """The blocks held, one bit each, block 0 in the high bit of byte 0."""
        with self._lock:
            return bytes(self._bits)

    def missing(self) -> list[int]:
        """The indexes of the blocks still needed, in order."""
        with self._lock:
            bits = bytes(self._bits)
        return list(bitfield.indices(bits, self.manifest.block_count, held=False))

    @property
    def have_count(self) -> int:
        """How many blocks are held."""
        with self._lock:
            return bitfield.count(self._bits)

    @property
    def complete(self) -> bool:
        """Whether every block is held."""
        return self.have_count == self.manifest.block_count

    @property
    def remaining_bytes(self) -> int:
        """The bytes of the blocks still needed."""
        return self.manifest.total_size - sum(self.manifest.locate(i)[3] for i in self.have)

    # -- the end ------------------------------------------------------------------

    def finalize(self) -> Path:
        """
        Move the complete download into its destination and forget its
        state; the destination appears only whole. A single file is renamed
        (copied next to the destination then renamed, across file systems);
        a directory is built next to the destination then renamed into
        place. An existing destination is replaced only if ``force``.

        :raises DownloadError: if blocks are missing.
        :raises DestinationExists, UnsafePath, DiskFull:
        """
        if not self.complete:
            raise DownloadError(
                f"download of {self.cid} is incomplete: "
                f"{self.have_count} of {self.manifest.block_count} blocks"
            )
        if os.path.lexists(self.destination) and not self.force:
            raise DestinationExists(f"{self.destination} exists (ask to replace it to overwrite)")
        try:
            self._fsync_files(range(len(self.manifest.files)))
            if self.manifest.kind == "file":
                land_file(self._data_path(0), self.destination, self.force)
            else:
                files = [
                    (entry.path, self._data_path(i)) for i, entry in enumerate(self.manifest.files)
                ]
                land_tree(files, self.destination, self.force)
            fsync_dir(self.destination.parent)
        except OSError as e:
            raise disk_error(e, self.destination) from e
        self._remove_state()
        log.info(
            "download of {cid} finished: {path}", cid=str(self.cid), path=str(self.destination)
        )
        return self.destination

    def cancel(self) -> None:
        """Delete the partial data and the state of this download."""
        self._remove_state()
        log.info("download of {cid} cancelled", cid=str(self.cid))

    def _remove_state(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / STATE_NAME)
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------

    def _locate(self, index: int) -> tuple[int, int, int, int]:
        if not isinstance(index, int) or not 0 <= index < self.manifest.block_count:
            raise IndexError(f"block {index} is outside 0..{self.manifest.block_count - 1}")
        return self.manifest.locate(index)

    def _data_path(self, file_index: int) -> Path:
        return self.directory / DATA_DIR / str(file_index)

    def _file_has_any(self, file_index: int) -> bool:
        return any(bitfield.has(self._bits, i) for i in self.manifest.file_blocks(file_index))

    def _clear_file(self, file_index: int) -> None:
        for i in self.manifest.file_blocks(file_index):
            bitfield.discard(self._bits, i)

    def _fsync_files(self, file_indexes: Iterable[int]) -> None:
        for i in file_indexes:
            path = self._data_path(i)
            try:
                fsync_file(path)
            except OSError as e:
                raise disk_error(e, path) from e

    def _save_state(self, bits: bytes) -> None:
        state = {
            "version": STATE_VERSION,
            "cid": str(self.cid),
            "manifest": base64.b64encode(self.manifest.encode()).decode("ascii"),
            "destination": str(self.destination),
            "force": self.force,
            "bitfield": base64.b64encode(bits).decode("ascii"),
        }
        path = self.directory / STATE_NAME
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomically(path, json.dumps(state).encode(), replace=True)
        except OSError as e:
            raise disk_error(e, path) from e


def _dir_name(cid: Any) -> str:
    text = str(cid)
    if not text or text.startswith(".") or "/" in text or "\0" in text:
        raise ValueError(f"content ID {text!r} cannot name a directory")
    return text


__all__ = [
    "CorruptState",
    "DestinationExists",
    "DestinationUnwritable",
    "DiskFull",
    "DownloadError",
    "PartialDownload",
    "UnsafePath",
    "check_relative_path",
    "prepare_target",
]
