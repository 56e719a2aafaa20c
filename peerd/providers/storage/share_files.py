"""
The server side's disk: the share file format and the share files.

A share file is ``shares/<si[:2]>/<si>/<shnum>`` (``si`` the storage index
as 32 hex digits)::

    blocks            every block of the share, in segment order
    ueb               the URI extension block, as the client sent it
    hashes            one 32-byte hash per block
    footer (58 B)     "PDSHARE1" shnum:u16 segments:u32 ueb_len:u32
                      blocks_len:u64 footer_hash(32)

``footer_hash`` covers the UEB, the hashes and the footer fields; each block
is covered by its hash. So every bit of a share is checked: a flipped bit
in a block fails that block's hash, anywhere else the footer hash.

A share being written lives in ``incoming/`` under a temporary name; it is
fsynced and renamed into place only when complete and verified, so a crash
(``kill -9``) never leaves a half share that looks whole, and ``incoming/``
is emptied at start.

Every function here blocks: the provider calls them with
``node.run_in_thread``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from peerd.disk import land, write_atomically
from peerd.providers.storage.capability import INDEX_HEX_LENGTH, MAX_SHARES, parse_index
from peerd.providers.storage.codec import UEB, IntegrityError, block_hash, share_root
from peerd.wire.frames import ProtocolError
from peerd.wire.messages import pack, unpack_map

MAGIC = b"PDSHARE1"
FOOTER = struct.Struct("!8sHIIQ32s")
HASH = 32
_FOOTER_TAG = b"peerd-storage-footer-v1:"


class CorruptShare(IntegrityError):
    """A share on disk failed its integrity check."""


class ShareRefused(Exception):
    """A write or close that breaks the rules (sizes, hashes, order)."""


def valid_shnum(value: object) -> bool:
    """A share number: an int from 0 to 254."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_SHARES


def valid_index(value: object) -> bool:
    """A storage index: 32 lowercase hex digits."""
    return parse_index(value) is not None


def overhead(segments: int, ueb_len: int) -> int:
    """Bytes of a share file beyond its blocks."""
    return ueb_len + segments * HASH + FOOTER.size


def _footer_hash(ueb: bytes, hashes: bytes, fields: bytes) -> bytes:
    return hashlib.sha256(_FOOTER_TAG + fields + ueb + hashes).digest()


def encode_trailer(shnum: int, blocks_len: int, ueb: bytes, hashes: bytes) -> bytes:
    """Everything after the blocks: UEB, hashes and footer."""
    segments = len(hashes) // HASH
    fields = struct.pack("!8sHIIQ", MAGIC, shnum, segments, len(ueb), blocks_len)
    return ueb + hashes + fields + _footer_hash(ueb, hashes, fields)


@dataclass(frozen=True)
class ShareInfo:
    """What the footer and trailer of a share say (verified)."""

    shnum: int
    blocks_len: int
    ueb: bytes
    hashes: bytes
    layout: object

    def block_offset(self, seg: int) -> tuple[int, int]:
        """Offset and length of block ``seg`` in the file."""
        lay = self.layout
        first = lay.block_size(0)  # type: ignore[attr-defined]
        return seg * first, lay.block_size(seg)  # type: ignore[attr-defined]


def read_info(path: Path, expect_shnum: int | None = None) -> ShareInfo:
    """
    Read and verify a share's trailer.

    :raises CorruptShare: anything wrong with it.
    """
    try:
        with open(path, "rb") as f:
            return _read_info(f, path.name, expect_shnum)
    except OSError as e:
        raise CorruptShare(f"{path.name}: {e.strerror or e}") from None


def _read_info(f: BinaryIO, name: str, expect_shnum: int | None = None) -> ShareInfo:
    f.seek(0, os.SEEK_END)
    total = f.tell()
    if total < FOOTER.size:
        raise CorruptShare(f"{name}: too short to be a share")
    f.seek(total - FOOTER.size)
    magic, shnum, segments, ueb_len, blocks_len, digest = FOOTER.unpack(f.read(FOOTER.size))
    if magic != MAGIC:
        raise CorruptShare(f"{name}: bad magic")
    if blocks_len + ueb_len + segments * HASH + FOOTER.size != total:
        raise CorruptShare(f"{name}: sizes do not add up")
    f.seek(blocks_len)
    ueb = f.read(ueb_len)
    hashes = f.read(segments * HASH)
    fields = FOOTER.pack(magic, shnum, segments, ueb_len, blocks_len, digest)[:-HASH]
    if _footer_hash(ueb, hashes, fields) != digest:
        raise CorruptShare(f"{name}: footer hash mismatch")
    if expect_shnum is not None and shnum != expect_shnum:
        raise CorruptShare(f"{name}: holds share {shnum}")
    try:
        ueb_obj = UEB.decode(ueb)
    except IntegrityError as e:
        raise CorruptShare(f"{name}: {e}") from None
    lay = ueb_obj.layout
    if segments != lay.segments or blocks_len != lay.blocks_size() or shnum >= lay.n:
        raise CorruptShare(f"{name}: footer does not match its UEB")
    if share_root(shnum, hashes) != ueb_obj.roots[shnum]:
        raise CorruptShare(f"{name}: block hashes do not match the share root")
    return ShareInfo(shnum, blocks_len, ueb, hashes, lay)


def verify_file(path: Path) -> ShareInfo:
    """Check every bit of a share file. :raises CorruptShare:"""
    try:
        with open(path, "rb") as f:
            return verify_stream(f, path.name)
    except OSError as e:
        raise CorruptShare(f"{path.name}: {e.strerror or e}") from None


def verify_stream(f: BinaryIO, name: str = "share") -> ShareInfo:
    """Check every bit of a share read from ``f`` (seekable). :raises CorruptShare:"""
    info = _read_info(f, name)
    for seg in range(info.layout.segments):  # type: ignore[attr-defined]
        offset, length = info.block_offset(seg)
        f.seek(offset)
        block = f.read(length)
        if block_hash(info.shnum, seg, block) != info.hashes[seg * HASH : (seg + 1) * HASH]:
            raise CorruptShare(f"{name}: block {seg} is corrupt")
    return info


# -- leases --------------------------------------------------------------------------


@dataclass
class Lease:
    """One owner's claim on a storage index, until ``expires`` (clock seconds)."""

    owner: str
    secret_hash: bytes
    expires: float

    def to_dict(self) -> dict:
        """For the lease file."""
        return {"owner": self.owner, "secret": self.secret_hash, "expires": self.expires}


def secret_hash(secret: bytes) -> bytes:
    """What the server keeps of a lease's renew/cancel secret."""
    return hashlib.sha256(b"peerd-storage-lease-v1:" + secret).digest()


def encode_leases(leases: list[Lease]) -> bytes:
    """The lease file."""
    return pack({"leases": [lease.to_dict() for lease in leases]})


def decode_leases(data: bytes) -> list[Lease]:
    """:raises ValueError: a malformed lease file."""
    try:
        m = unpack_map(data, "lease file")
        return [
            Lease(str(d["owner"]), bytes(d["secret"]), float(d["expires"])) for d in m["leases"]
        ]
    except (ProtocolError, KeyError, TypeError) as e:
        raise ValueError(f"malformed lease file: {e}") from None


@dataclass
class IndexRecord:
    """What the server holds under one storage index."""

    shares: dict[int, int] = field(default_factory=dict)
    leases: list[Lease] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Bytes of its shares."""
        return sum(self.shares.values())


# -- the files ------------------------------------------------------------------------


class ShareFiles:
    """The share directory of one storage server (blocking I/O only)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.shares_dir = root / "shares"
        self.incoming_dir = root / "incoming"
        self._info_cache: OrderedDict[tuple[str, int], ShareInfo] = OrderedDict()
        self._cache_lock = threading.Lock()  # worker threads share the cache

    def index_dir(self, si: str) -> Path:
        """``shares/<si[:2]>/<si>`` (``si`` validated: no path tricks)."""
        if not valid_index(si):
            raise ValueError(f"not a storage index: {si!r}")
        return self.shares_dir / si[:2] / si

    def share_path(self, si: str, shnum: int) -> Path:
        """Where share ``shnum`` of ``si`` lives."""
        if not valid_shnum(shnum):
            raise ValueError(f"not a share number: {shnum!r}")
        return self.index_dir(si) / str(shnum)

    def scan(self) -> tuple[dict[str, IndexRecord], int]:
        """
        Empty ``incoming/`` and load every index: its shares' sizes and its
        leases. Returns the records and how many temporary files were removed.
        """
        removed = 0
        self.incoming_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.shares_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.incoming_dir.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed += 1
        records: dict[str, IndexRecord] = {}
        for prefix in sorted(self.shares_dir.iterdir()):
            for directory in sorted(prefix.iterdir()) if prefix.is_dir() else ():
                si = directory.name
                if not valid_index(si) or si[:2] != prefix.name:
                    continue
                record = IndexRecord()
                for entry in directory.iterdir():
                    if entry.name == "leases":
                        with contextlib.suppress(OSError, ValueError):
                            record.leases = decode_leases(entry.read_bytes())
                    elif entry.name.isdigit() and valid_shnum(int(entry.name)):
                        record.shares[int(entry.name)] = entry.stat().st_size
                    elif entry.name.startswith("."):  # an interrupted atomic write
                        with contextlib.suppress(OSError):
                            entry.unlink()
                if record.shares or record.leases:
                    records[si] = record
        return records, removed

    def write_leases(self, si: str, leases: list[Lease]) -> None:
        """Replace the lease file of ``si`` atomically."""
        directory = self.index_dir(si)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(directory / "leases", encode_leases(leases), replace=True)

    def delete_index(self, si: str) -> None:
        """Remove every share and the leases of ``si``."""
        self.forget(si)
        shutil.rmtree(self.index_dir(si), ignore_errors=True)

    def delete_share(self, si: str, shnum: int) -> None:
        """Remove one share (e.g. found corrupt)."""
        self.forget(si, shnum)
        with contextlib.suppress(FileNotFoundError):
            self.share_path(si, shnum).unlink()

    def info(self, si: str, shnum: int) -> ShareInfo:
        """The verified trailer of a share (cached). :raises CorruptShare: / FileNotFoundError"""
        key = (si, shnum)
        with self._cache_lock:
            cached = self._info_cache.get(key)
            if cached is not None:
                self._info_cache.move_to_end(key)
                return cached
        path = self.share_path(si, shnum)
        if not path.exists():
            raise FileNotFoundError(f"no share {shnum} of {si}")
        info = read_info(path, shnum)
        with self._cache_lock:
            self._info_cache[key] = info
            while len(self._info_cache) > 256:
                self._info_cache.popitem(last=False)
        return info

    def forget(self, si: str, shnum: int | None = None) -> None:
        """Drop cached trailers of ``si`` (one share, or all)."""
        with self._cache_lock:
            for key in [k for k in self._info_cache if k[0] == si]:
                if shnum is None or key[1] == shnum:
                    del self._info_cache[key]

    def read_block(self, si: str, shnum: int, seg: int) -> bytes:
        """Block ``seg`` of a share, verified. :raises CorruptShare: / IndexError"""
        info = self.info(si, shnum)
        if not 0 <= seg < info.layout.segments:  # type: ignore[attr-defined]
            raise IndexError(f"share has no block {seg}")
        offset, length = info.block_offset(seg)
        with open(self.share_path(si, shnum), "rb") as f:
            f.seek(offset)
            block = f.read(length)
        if block_hash(shnum, seg, block) != info.hashes[seg * HASH : (seg + 1) * HASH]:
            self.forget(si, shnum)
            raise CorruptShare(f"block {seg} of share {shnum} of {si} is corrupt")
        return block

    def verify(self, si: str, shnum: int) -> ShareInfo:
        """Check every bit of one share. :raises CorruptShare:"""
        self.forget(si, shnum)
        return verify_file(self.share_path(si, shnum))

    def writer(self, si: str, shnum: int, allocated: int) -> ShareWriter:
        """A new share being written under a temporary name."""
        self.share_path(si, shnum)  # validates
        return ShareWriter(self, si, shnum, allocated)


class ShareWriter:
    """
    One share being received: blocks appended in order to a temporary file,
    hashed as they arrive; :meth:`commit` checks the trailer against them,
    fsyncs and renames. Every method blocks.
    """

    def __init__(self, files: ShareFiles, si: str, shnum: int, allocated: int) -> None:
        self.files = files
        self.si = si
        self.shnum = shnum
        self.allocated = allocated
        files.incoming_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(dir=files.incoming_dir, prefix=f"{si}.{shnum}.", suffix=".tmp")
        self.temp_path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self.written = 0
        self.hashes: list[bytes] = []
        self.sizes: list[int] = []
        self.done = False

    def write_block(self, seg: int, block: bytes) -> None:
        """Append block ``seg``. :raises ShareRefused: out of order or over the allocation."""
        if seg != len(self.hashes):
            raise ShareRefused(f"block {seg} out of order (expected {len(self.hashes)})")
        if self.written + len(block) > self.allocated:
            raise ShareRefused(f"share {self.shnum} exceeds its allocation of {self.allocated}")
        self._file.write(block)
        self.written += len(block)
        self.hashes.append(block_hash(self.shnum, seg, block))
        self.sizes.append(len(block))

    def commit(self, ueb_bytes: bytes, hashes: bytes) -> int:
        """
        Verify, write the trailer, fsync, rename into place; returns the
        share's size. :raises ShareRefused: / IntegrityError: it does not check out.
        """
        ueb = UEB.decode(ueb_bytes)
        lay = ueb.layout
        if self.shnum >= lay.n:
            raise ShareRefused(f"share {self.shnum} of a {lay.k}-of-{lay.n} encoding")
        if len(self.hashes) != lay.segments:
            raise ShareRefused(f"{len(self.hashes)} of {lay.segments} blocks written")
        if any(size != lay.block_size(seg) for seg, size in enumerate(self.sizes)):
            raise ShareRefused("block sizes do not match the UEB")
        if hashes != b"".join(self.hashes):
            raise ShareRefused("block hashes do not match the blocks written")
        if share_root(self.shnum, hashes) != ueb.roots[self.shnum]:
            raise ShareRefused("share root does not match the UEB")
        trailer = encode_trailer(self.shnum, self.written, ueb_bytes, hashes)
        if self.written + len(trailer) > self.allocated:
            raise ShareRefused(f"share {self.shnum} exceeds its allocation of {self.allocated}")
        self._file.write(trailer)
        self._file.close()
        final = self.files.share_path(self.si, self.shnum)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        land(self.temp_path, final, replace=True)
        self.done = True
        return self.written + len(trailer)

    def abort(self) -> None:
        """Throw the temporary file away."""
        if self.done:
            return
        self.done = True
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp_path.unlink()


__all__ = [
    "INDEX_HEX_LENGTH",
    "CorruptShare",
    "IndexRecord",
    "Lease",
    "ShareFiles",
    "ShareRefused",
    "ShareWriter",
    "read_info",
    "verify_file",
]
