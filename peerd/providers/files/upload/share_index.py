"""
What this peer shares (the seeding side): one small record per shared
content under ``<state_dir>/shares/``, and verified block reads from the
shared files.

Everything here is blocking disk I/O; the provider calls it in worker
threads. ``ShareIndex`` is thread-safe.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from peerd.disk import write_atomically
from peerd.providers.files.content import ContentID, Manifest, path_problem
from peerd.providers.files.merkle import HASH_SIZE, MerkleTree, leaf_hash
from peerd.providers.files.upload.hashing import manifest_for_path
from peerd.providers.files.upload.trust import BlockTrust, FullStat, full_stat

log = Logger()

RECORD_VERSION = 1
RECORD_SUFFIX = ".share"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")

#: ``(st_size, st_mtime_ns, st_ino)`` of one shared file.
StatSignature = tuple[int, int, int]

Hasher = Callable[..., tuple[Manifest, list[list[bytes]]]]


class CorruptRecord(ValueError):
    """A share record file that cannot be trusted."""


def stat_signature(path: Path) -> StatSignature | None:
    """The cheap change detector of one file, or None if it is not a regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(eq=False)
class ShareRecord:
    """
    One shared content: its ID and manifest, where it lives on disk, the
    leaf hashes of each of its files, and the stat signature each file had
    when it was hashed.
    """

    cid: ContentID
    manifest: Manifest
    path: Path
    leaves: list[list[bytes]]
    signatures: list[StatSignature]
    #: Indexes (into ``manifest.files``) of files found changed on disk.
    changed: set[int] = field(default_factory=set)
    #: Per file, the full stat under which it was hashed whole (None: racy,
    #: or not hashed here); while the file still has it, no block needs a
    #: new hash check before upload, even after a restart.
    trusted: list[FullStat | None] = field(default_factory=list)
    _trees: dict[int, MerkleTree] = field(default_factory=dict, repr=False)

    def file_path(self, file_index: int) -> Path:
        """Where file ``file_index`` of the manifest lives on disk."""
        return self.path.joinpath(*self.manifest.files[file_index].path)

    @property
    def status(self) -> str:
        """One line for people: sharing, or what changed on disk."""
        if not self.changed:
            return "sharing"
        n = len(self.changed)
        return f"changed on disk: {n} file{'s' if n != 1 else ''}; those blocks are not served"

    def tree(self, file_index: int) -> MerkleTree:
        """The Merkle tree of one file (built once, on first use)."""
        tree = self._trees.get(file_index)
        if tree is None:
            tree = self._trees[file_index] = MerkleTree(self.leaves[file_index])
        return tree

    def encode(self) -> bytes:
        """The record file's bytes."""
        return json.dumps(
            {
                "version": RECORD_VERSION,
                "cid": str(self.cid),
                "path": str(self.path),
                "manifest": _b64(self.manifest.encode()),
                "leaves": [_b64(b"".join(file_leaves)) for file_leaves in self.leaves],
                "signatures": [list(s) for s in self.signatures],
                "changed": sorted(self.changed),
                "trusted": [list(t) if t else None for t in self.trusted],
            },
            indent=1,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> ShareRecord:
        """
        Parse and check a record file: the manifest must hash to the
        recorded ID and each file's leaves must rebuild its Merkle root.

        :raises CorruptRecord: if anything is off.
        """
        try:
            raw = json.loads(data)
            if raw["version"] != RECORD_VERSION:
                raise CorruptRecord(f"unknown record version {raw['version']!r}")
            manifest = Manifest.decode(base64.b64decode(raw["manifest"], validate=True))
            cid = ContentID.for_manifest(manifest)
            if str(cid) != raw["cid"]:
                raise CorruptRecord("manifest does not match the content ID")
            path = Path(raw["path"])
            if not path.is_absolute():
                raise CorruptRecord("source path is not absolute")
            blobs = [base64.b64decode(b, validate=True) for b in raw["leaves"]]
            signatures = [_signature(s) for s in raw["signatures"]]
            changed = {int(i) for i in raw.get("changed", [])}
            trusted = [_full_stat_field(t) for t in raw.get("trusted") or []]
        except CorruptRecord:
            raise
        except Exception as e:  # anything a damaged file can raise
            raise CorruptRecord(f"{type(e).__name__}: {e}") from e
        files = manifest.files
        if len(blobs) != len(files) or len(signatures) != len(files):
            raise CorruptRecord("per-file lists do not match the manifest")
        if not changed <= set(range(len(files))):
            raise CorruptRecord("changed file index out of range")
        if trusted and len(trusted) != len(files):
            raise CorruptRecord("per-file lists do not match the manifest")
        leaves = [_split_leaves(blob, entry) for blob, entry in zip(blobs, files, strict=True)]
        record = cls(cid, manifest, path, leaves, signatures, changed, trusted)
        for i, entry in enumerate(files):
            if record.tree(i).root != entry.root:
                raise CorruptRecord(f"leaf hashes of file {i} do not match its Merkle root")
        return record


class ShareIndex:
    """
    The shares of this peer, persisted in ``<state_dir>/shares/``.

    :param hasher: builds ``(manifest, per-file leaves)`` for a path;
        ``manifest_for_path`` unless a test counts the calls.
    :param trust: which blocks need no new hash check before they are
        served (see :mod:`~peerd.providers.files.upload.trust`); None hashes every
        block before every upload.
    """

    def __init__(
        self,
        state_dir: Path,
        hasher: Hasher = manifest_for_path,
        trust: BlockTrust | None = None,
    ) -> None:
        self.directory = Path(state_dir) / "shares"
        self._hasher = hasher
        self.trust = trust
        self._now_ns = trust.now_ns if trust is not None else time.time_ns
        self._lock = threading.Lock()
        self._records: dict[str, ShareRecord] = {}

    def load(self) -> list[ShareRecord]:
        """
        Read every record file. Damaged ones are logged and skipped (and
        left on disk for a human to look at), never fatal.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        loaded: dict[str, ShareRecord] = {}
        for entry in sorted(self.directory.iterdir()):
            if entry.name.startswith(".") or entry.suffix != RECORD_SUFFIX:
                continue
            try:
                record = ShareRecord.decode(entry.read_bytes())
                if entry.name != _record_name(record.cid):
                    raise CorruptRecord("file name does not match the content ID")
            except (OSError, CorruptRecord) as e:
                log.warn(
                    "skipping unreadable share record {file}: {error}",
                    file=str(entry),
                    error=str(e),
                )
                continue
            loaded[str(record.cid)] = record
            self._restore_trust(record)
        with self._lock:
            self._records = loaded
        return list(loaded.values())

    def _restore_trust(self, record: ShareRecord) -> None:
        """Files still exactly as they were hashed need no new hash checks."""
        if self.trust is None:
            return
        for i, stat_then in enumerate(record.trusted):
            unchanged = stat_then is not None and i not in record.changed
            if unchanged and _full_stat_of(record.file_path(i)) == stat_then:
                self.trust.restore((str(record.cid), i), stat_then)

    def add(
        self, path: Path | str, hash_progress: Callable[[int], object] | None = None
    ) -> ShareRecord:
        """
        Share the file or directory at ``path``. If a record for the same
        path exists and every file's stat signature is unchanged, it is
        reused without reading the data; otherwise the data is hashed (the
        stale record is dropped if the content ID changed). A record with
        files known to have changed is always hashed again.

        :param hash_progress: passed to the hasher as ``progress``
            (called with the bytes hashed so far) for large shares.
        :raises OSError: if the path cannot be read, or changes while it
            is hashed (``ContentChangedError``).
        """
        source = Path(os.path.abspath(path))  # keep the name the user gave
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            previous = [r for r in self._records.values() if r.path == source]
        for record in previous:
            if not record.changed and _unchanged(record):
                return record

        # Signatures before hashing: a change while hashing shows up later.
        if source.is_dir():
            before = {rel: stat_signature(source.joinpath(*rel)) for rel in _shared_files(source)}
        else:
            before = {(): stat_signature(source)}
        started_ns = self._now_ns()
        full_before = {key: _full_stat_of(source.joinpath(*key)) for key in before}
        if hash_progress is None:
            manifest, leaves = self._hasher(source)
        else:
            manifest, leaves = self._hasher(source, progress=hash_progress)
        signatures = []
        for entry in manifest.files:
            key = () if manifest.kind == "file" else tuple(entry.path)
            signature = before.get(key) or stat_signature(source.joinpath(*entry.path))
            if signature is None:
                raise FileNotFoundError(f"{source}: {'/'.join(entry.path)} vanished while hashing")
            signatures.append(signature)
        record = ShareRecord(
            ContentID.for_manifest(manifest), manifest, source, list(leaves), signatures
        )
        if self.trust is not None:
            for i, entry in enumerate(manifest.files):
                key = () if manifest.kind == "file" else tuple(entry.path)
                stat_now = _full_stat_of(source.joinpath(*key))
                settled = stat_now is not None and not self.trust.racy(stat_now, started_ns)
                stable = stat_now == full_before.get(key)
                record.trusted.append(stat_now if settled and stable else None)
                if settled and stable:
                    self.trust.checked_all((str(record.cid), i), stat_now, started_ns)
        self._save(record)
        with self._lock:
            self._records[str(record.cid)] = record
        for old in previous:
            if str(old.cid) != str(record.cid):
                self.remove(old.cid)
        log.info(
            "sharing {path} as {cid} ({size} bytes)",
            path=str(source),
            cid=str(record.cid),
            size=manifest.total_size,
        )
        return record

    def adopt(self, path: Path | str, manifest: Manifest, leaves: list[list[bytes]]) -> ShareRecord:
        """
        Share content whose hashes are already known and verified (a
        finished download), without reading it again.
        """
        source = Path(path).resolve()
        if manifest.kind == "file":
            signatures = [stat_signature(source)]
        else:
            signatures = [stat_signature(source.joinpath(*e.path)) for e in manifest.files]
        if any(signature is None for signature in signatures):
            raise FileNotFoundError(f"{source}: a downloaded file vanished before it was shared")
        record = ShareRecord(
            ContentID.for_manifest(manifest),
            manifest,
            source,
            [list(file_leaves) for file_leaves in leaves],
            signatures,  # type: ignore[arg-type]
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._save(record)
        with self._lock:
            self._records[str(record.cid)] = record
        return record

    def remove(self, cid: ContentID | str) -> bool:
        """Stop sharing ``cid``; False if it was not shared."""
        key = str(cid)
        with self._lock:
            record = self._records.pop(key, None)
        if record is None:
            return False
        if self.trust is not None:
            self.trust.forget(lambda k: k[0] == key)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / _record_name(key)).unlink()
        return True

    def get(self, cid: ContentID | str) -> ShareRecord | None:
        """The record of ``cid``, or None."""
        with self._lock:
            return self._records.get(str(cid))

    def all(self) -> list[ShareRecord]:
        """Every record, in no particular order."""
        with self._lock:
            return list(self._records.values())

    def read_block(self, cid: ContentID | str, index: int) -> tuple[bytes, list[bytes]] | None:
        """
        Block ``index`` (numbered across the whole manifest) and its Merkle
        proof within its file's tree, read from the shared file and checked
        against its leaf hash (unless :attr:`trust` knows it good under the
        file's current stat). None if ``cid`` is not shared, the index is
        out of range, or the file changed on disk (which is then recorded
        and reported by the record's ``status``).
        """
        record = self.get(cid)
        if record is None or not 0 <= index < record.manifest.block_count:
            return None
        file_index, block, offset, length = record.manifest.locate(index)
        if file_index in record.changed:
            return None
        path = record.file_path(file_index)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode) or (
                    (before.st_size, before.st_mtime_ns, before.st_ino)
                    != record.signatures[file_index]
                ):
                    self._mark_changed(record, file_index, "size, mtime or inode differ")
                    return None
                started_ns = self._now_ns()
                data = os.pread(fd, length, offset)
                after = full_stat(os.fstat(fd))
            finally:
                os.close(fd)
        except OSError as e:
            self._mark_changed(record, file_index, f"unreadable: {e}")
            return None
        key = (str(record.cid), file_index)
        stable = after == full_stat(before)  # nothing wrote to the file while we read
        trust = self.trust
        if len(data) != length:
            self._mark_changed(record, file_index, f"block {block} is short")
            return None
        if not (stable and trust is not None and trust.is_trusted(key, block, after)):
            if leaf_hash(data) != record.leaves[file_index][block]:
                self._mark_changed(record, file_index, f"block {block} does not match its hash")
                return None
            if stable and trust is not None:
                blocks = len(record.leaves[file_index])
                trust.checked(key, block, blocks, after, started_ns)
        with self._lock:
            proof = record.tree(file_index).proof(block)
        return data, list(proof)

    def _mark_changed(self, record: ShareRecord, file_index: int, reason: str) -> None:
        if self.trust is not None:
            key = (str(record.cid), file_index)
            self.trust.forget(lambda k: k == key)
        with self._lock:
            if file_index in record.changed:
                return
            record.changed.add(file_index)
            if file_index < len(record.trusted):
                record.trusted[file_index] = None
            current = self._records.get(str(record.cid)) is record
        log.warn(
            "shared file {file} of {cid} changed on disk ({reason}); its blocks are not served",
            file=str(record.file_path(file_index)),
            cid=str(record.cid),
            reason=reason,
        )
        if current:
            try:
                self._save(record)
            except OSError as e:
                log.warn(
                    "could not update share record of {cid}: {error}",
                    cid=str(record.cid),
                    error=str(e),
                )

    def _save(self, record: ShareRecord) -> None:
        with self._lock:
            data = record.encode()
        write_atomically(self.directory / _record_name(record.cid), data, replace=True)


def _full_stat_field(value: Any) -> FullStat | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 5 or not all(type(v) is int for v in value):
        raise CorruptRecord(f"bad trusted stat {value!r}")
    return (value[0], value[1], value[2], value[3], value[4])


def _full_stat_of(path: Path) -> FullStat | None:
    try:
        return full_stat(os.stat(path))
    except OSError:
        return None


def _unchanged(record: ShareRecord) -> bool:
    """True if every file of ``record`` still has its stat signature (and no file was added)."""
    if record.manifest.kind == "dir":
        try:
            present = set(_shared_files(record.path))
        except OSError:
            return False
        if present != {tuple(e.path) for e in record.manifest.files}:
            return False
    return all(
        stat_signature(record.file_path(i)) == sig for i, sig in enumerate(record.signatures)
    )


def _shared_files(root: Path, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """
    Relative paths of the files under ``root`` that ``manifest_for_path``
    shares: regular files with safe names, symbolic links not followed.
    """
    found = []
    with os.scandir(root) as it:
        entries = list(it)
    for entry in entries:
        rel = (*prefix, entry.name)
        if entry.is_symlink() or path_problem(rel) is not None:
            continue
        if entry.is_dir(follow_symlinks=False):
            found.extend(_shared_files(Path(entry.path), rel))
        elif entry.is_file(follow_symlinks=False):
            found.append(rel)
    return found


def _record_name(cid: ContentID | str) -> str:
    text = str(cid)
    if _SAFE_NAME.fullmatch(text) and not text.startswith("."):
        return text + RECORD_SUFFIX
    return hashlib.sha256(text.encode()).hexdigest() + RECORD_SUFFIX


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _signature(raw: Any) -> StatSignature:
    size, mtime_ns, inode = raw
    return (int(size), int(mtime_ns), int(inode))


def _split_leaves(blob: bytes, entry: Any) -> list[bytes]:
    if len(blob) != entry.block_count * HASH_SIZE:
        raise CorruptRecord("leaf hashes do not fit the file's block count")
    return [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]
