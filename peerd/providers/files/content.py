"""
What the files provider shares: manifests and the content IDs that name them.

A :class:`Manifest` lists the files of a share (one file, or a directory
tree) with each file's size, block size and Merkle root.  Its canonical
MessagePack encoding is hashed into a :class:`ContentID`, so an ID names
exactly one manifest and a manifest fetched from anyone can be checked
against the ID that was asked for; each block is then checked against its
file's root (see :mod:`peerd.providers.files.merkle`).  Building a manifest
from files on disk is :mod:`peerd.providers.files.upload.hashing`.

Wire form of a manifest (a MessagePack map, keys in this order)::

    {"version": 1, "name": str, "kind": "file" | "dir",
     "files": [[[component, ...], size, block_size, root], ...]}

:meth:`Manifest.decode` accepts only this exact canonical form, so one
manifest has one ID.

Blocks are numbered across the whole manifest: file 0's blocks first, then
file 1's, and so on.  An empty file still has one (empty) block, so every
file has a leaf and a root.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

import msgpack

from peerd.providers.files.merkle import (
    HASH_SIZE,
    MAX_BLOCK_SIZE,
    MIN_BLOCK_SIZE,
    is_valid_block_size,
)

MANIFEST_VERSION = 1
MAX_BLOCKS = 10_000_000
"""The most blocks one manifest may have, across all its files."""
MAX_MANIFEST_SIZE = 64 * 1024 * 1024
"""The largest encoded manifest :meth:`Manifest.decode` accepts."""
MAX_COMPONENT_BYTES = 255
MAX_PATH_DEPTH = 64
MAX_PATH_BYTES = 4096

_KEYS = ("version", "name", "kind", "files")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidManifest(ValueError):
    """Bytes or values that do not make a valid manifest."""


class InvalidContentID(ValueError):
    """A string is not a well-formed content ID."""


def component_problem(component: object) -> str | None:
    """
    Why ``component`` cannot be one component of a shared path, or None if it can.

    A component is a non-empty string of valid Unicode, at most 255 bytes in
    UTF-8, other than ``.`` and ``..``, with no ``/``, ``\\``, NUL or other
    control character, and not starting like a Windows drive (``C:``).
    """
    if not isinstance(component, str):
        return "is not a string"
    if not component:
        return "is empty"
    if component in (".", ".."):
        return f"is {component!r}"
    if "/" in component or "\\" in component:
        return "contains a path separator"
    if _CONTROL.search(component):
        return "contains NUL or another control character"
    if _DRIVE.match(component):
        return "starts with a drive letter"
    try:
        encoded = component.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text"
    if len(encoded) > MAX_COMPONENT_BYTES:
        return f"is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def path_problem(path: tuple[str, ...]) -> str | None:
    """Why ``path`` cannot be a shared file's path, or None if it can."""
    if len(path) > MAX_PATH_DEPTH:
        return f"is nested deeper than {MAX_PATH_DEPTH} levels"
    for component in path:
        problem = component_problem(component)
        if problem is not None:
            return f"has a component that {problem}: {component!r}"
    if sum(len(c.encode("utf-8")) + 1 for c in path) > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class FileEntry:
    """
    One file of a manifest.

    :ivar path: the file's path components under the share; ``()`` for a
        single-file share.
    :ivar size: its length in bytes.
    :ivar root: the Merkle root of its blocks.
    :ivar block_size: the size of every block but the last.
    """

    path: tuple[str, ...]
    size: int
    root: bytes
    block_size: int

    def __post_init__(self) -> None:
        if not isinstance(self.path, tuple):
            raise InvalidManifest(f"file path must be a tuple of components, not {self.path!r}")
        problem = path_problem(self.path)
        if problem is not None:
            raise InvalidManifest(f"file path {'/'.join(map(str, self.path))!r} {problem}")
        if not _is_int(self.size) or self.size < 0:
            raise InvalidManifest(f"file size must be an integer >= 0, not {self.size!r}")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise InvalidManifest(f"file root must be {HASH_SIZE} bytes, not {self.root!r}")
        if not is_valid_block_size(self.block_size):
            raise InvalidManifest(
                f"block size must be a power of two from {MIN_BLOCK_SIZE} to "
                f"{MAX_BLOCK_SIZE}, not {self.block_size!r}"
            )

    @property
    def block_count(self) -> int:
        """The number of blocks: ``ceil(size / block_size)``, and 1 for an empty file."""
        return max(1, -(-self.size // self.block_size))


class BlockLocation(NamedTuple):
    """Where a block of a manifest lies."""

    file_index: int
    block_in_file: int
    offset: int
    """Offset of the block's first byte in its file."""
    length: int
    """The block's length: ``block_size``, or less for a file's last block."""


@dataclass(frozen=True)
class Manifest:
    """
    The description of a share: its name, whether it is a file or a
    directory, and its files.

    A ``"file"`` manifest has exactly one entry, with path ``()``.  A
    ``"dir"`` manifest has entries with non-empty paths, sorted and unique,
    none inside another; empty directories are not represented.
    """

    name: str
    kind: Literal["file", "dir"]
    files: tuple[FileEntry, ...]
    version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        if not _is_int(self.version) or self.version != MANIFEST_VERSION:
            raise InvalidManifest(f"unsupported manifest version {self.version!r}")
        problem = component_problem(self.name)
        if problem is not None:
            raise InvalidManifest(f"share name {self.name!r} {problem}")
        if not isinstance(self.files, tuple) or not all(
            isinstance(f, FileEntry) for f in self.files
        ):
            raise InvalidManifest("files must be a tuple of FileEntry")
        if self.kind == "file":
            if len(self.files) != 1 or self.files[0].path != ():
                raise InvalidManifest("a file manifest has exactly one entry, with an empty path")
        elif self.kind == "dir":
            self._check_dir_paths()
        else:
            raise InvalidManifest(f"kind must be 'file' or 'dir', not {self.kind!r}")
        starts = [0]
        for entry in self.files:
            starts.append(starts[-1] + entry.block_count)
        if starts[-1] > MAX_BLOCKS:
            raise InvalidManifest(f"{starts[-1]} blocks is more than the limit of {MAX_BLOCKS}")
        object.__setattr__(self, "_starts", starts)

    def _check_dir_paths(self) -> None:
        previous: tuple[str, ...] | None = None
        for entry in self.files:
            if entry.path == ():
                raise InvalidManifest("a directory manifest's files need non-empty paths")
            if previous is not None:
                if entry.path <= previous:
                    raise InvalidManifest(
                        f"files are not sorted and unique at {'/'.join(entry.path)!r}"
                    )
                if entry.path[: len(previous)] == previous:
                    raise InvalidManifest(
                        f"{'/'.join(entry.path)!r} is inside the file {'/'.join(previous)!r}"
                    )
            previous = entry.path

    @property
    def block_count(self) -> int:
        """The number of blocks across all files."""
        return self._starts[-1]

    @property
    def total_size(self) -> int:
        """The number of bytes across all files."""
        return sum(entry.size for entry in self.files)

    def file_blocks(self, file_index: int) -> range:
        """The global block numbers of file ``file_index``."""
        if not 0 <= file_index < len(self.files):
            raise IndexError(f"file {file_index} is outside 0..{len(self.files) - 1}")
        return range(self._starts[file_index], self._starts[file_index + 1])

    def locate(self, index: int) -> BlockLocation:
        """
        Where global block ``index`` lies.

        :raises IndexError: for an index outside ``0 <= index < block_count``.
        """
        if not 0 <= index < self.block_count:
            raise IndexError(f"block {index} is outside 0..{self.block_count - 1}")
        file_index = bisect.bisect_right(self._starts, index) - 1
        entry = self.files[file_index]
        block = index - self._starts[file_index]
        offset = block * entry.block_size
        return BlockLocation(file_index, block, offset, min(entry.block_size, entry.size - offset))

    def encode(self) -> bytes:
        """The canonical MessagePack encoding (the bytes a ContentID hashes)."""
        return msgpack.packb(
            {
                "version": self.version,
                "name": self.name,
                "kind": self.kind,
                "files": [[list(f.path), f.size, f.block_size, f.root] for f in self.files],
            },
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """
        Parse and validate an encoded manifest.

        :raises InvalidManifest: saying what is wrong.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidManifest(f"a manifest is bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_MANIFEST_SIZE:
            raise InvalidManifest(f"manifest of {len(data)} bytes is over {MAX_MANIFEST_SIZE}")
        try:
            obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            raise InvalidManifest(f"manifest is not valid MessagePack: {e}") from None
        if not isinstance(obj, dict):
            raise InvalidManifest("manifest is not a MessagePack map")
        if "version" in obj and obj["version"] != MANIFEST_VERSION:
            raise InvalidManifest(f"unsupported manifest version {obj['version']!r}")
        if tuple(obj) != _KEYS:
            raise InvalidManifest(f"manifest keys must be {list(_KEYS)}, not {list(obj)}")
        raw_files = obj["files"]
        if not isinstance(raw_files, list):
            raise InvalidManifest("manifest 'files' is not a list")
        files = []
        for i, raw in enumerate(raw_files):
            if not isinstance(raw, list) or len(raw) != 4:
                raise InvalidManifest(f"file {i} is not [path, size, block_size, root]")
            path, size, block_size, root = raw
            if not isinstance(path, list):
                raise InvalidManifest(f"file {i} path is not a list of components")
            files.append(FileEntry(tuple(path), size, root, block_size))
        manifest = cls(obj["name"], obj["kind"], tuple(files), obj["version"])
        if manifest.encode() != data:
            raise InvalidManifest("manifest is not in canonical form")
        return manifest


# -- content IDs ---------------------------------------------------------------

CONTENT_ID_PREFIX = "pd1"
_CID_CHECKSUM_DOMAIN = b"peerd-cid-checksum\x00"
_CID_CHECKSUM_SIZE = 2
_CID_BODY_LENGTH = 55  # base32 characters for 34 bytes, without padding
_CID_PADDING = "=" * (-_CID_BODY_LENGTH % 8)


def _cid_checksum(digest: bytes) -> bytes:
    return hashlib.sha256(_CID_CHECKSUM_DOMAIN + digest).digest()[:_CID_CHECKSUM_SIZE]


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


@dataclass(frozen=True, order=True)
class ContentID:
    """
    The self-certifying name of a share: the SHA-256 of its encoded manifest.

    Printed as ``pd1`` and the lowercase base32 of the digest and a 2-byte
    checksum, so a mistyped ID is caught rather than searched for.
    """

    digest: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.digest, bytes) or len(self.digest) != HASH_SIZE:
            raise InvalidContentID(f"a content ID digest is {HASH_SIZE} bytes")

    @classmethod
    def for_manifest(cls, manifest: Manifest) -> ContentID:
        """The ID of ``manifest``."""
        return cls.for_encoded(manifest.encode())

    @classmethod
    def for_encoded(cls, data: bytes) -> ContentID:
        """The ID of an encoded manifest (check fetched bytes before decoding them)."""
        return cls(hashlib.sha256(data).digest())

    @classmethod
    def parse(cls, text: str) -> ContentID:
        """
        Parse the printed form; case and surrounding whitespace do not matter.

        :raises InvalidContentID: unknown version, wrong length, alphabet or checksum.
        """
        compact = text.strip().lower()
        if not compact.startswith(CONTENT_ID_PREFIX):
            if compact.startswith("pd") and len(compact) > 2:
                raise InvalidContentID(f"unsupported content ID version {compact[:3]!r}")
            raise InvalidContentID(
                f"{_shown(text)} is not a content ID: it should start with {CONTENT_ID_PREFIX!r}"
            )
        body = compact[len(CONTENT_ID_PREFIX) :]
        if len(body) != _CID_BODY_LENGTH:
            raise InvalidContentID(
                f"{_shown(text)} is not a content ID: expected {_CID_BODY_LENGTH} characters "
                f"after {CONTENT_ID_PREFIX!r}, got {len(body)}"
            )
        try:
            raw = base64.b32decode(body.upper() + _CID_PADDING)
        except ValueError:
            raise InvalidContentID(
                f"{_shown(text)} is not a content ID: not base32 (a-z, 2-7)"
            ) from None
        digest, checksum = raw[:HASH_SIZE], raw[HASH_SIZE:]
        if _cid_checksum(digest) != checksum:
            raise InvalidContentID(
                f"{_shown(text)} is not a content ID: checksum mismatch (a typo?)"
            )
        cid = cls(digest)
        if str(cid) != compact:
            raise InvalidContentID(
                f"{_shown(text)} is not a content ID: stray bits in the last character (a typo?)"
            )
        return cid

    def __str__(self) -> str:
        body = base64.b32encode(self.digest + _cid_checksum(self.digest)).decode("ascii")
        return CONTENT_ID_PREFIX + body.rstrip("=").lower()

    def __repr__(self) -> str:
        return f"ContentID({str(self)!r})"
