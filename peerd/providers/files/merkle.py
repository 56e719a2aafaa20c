"""
Per-block Merkle trees over a file, in the manner of BitTorrent v2 (BEP 52).

A file is cut into blocks of a power-of-two size (the last one may be short).
Each block gives a leaf, ``sha256(b"\\x00" + block)``; two nodes give their
parent, ``sha256(b"\\x01" + left + right)``.  The prefixes keep a leaf from
ever being mistaken for an inner node.  The leaves are padded to the next
power of two with 32 zero bytes, so every tree is complete and a proof for
any block is exactly ``log2(width)`` sibling hashes.  A file of size 0 has a
single leaf: the leaf hash of the empty block; a one-leaf tree's root is
that leaf.

The padding is never stored: the hash of an all-padding subtree at each
height is computed once, and a tree keeps only the nodes that cover real
leaves.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import BinaryIO

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

MIN_BLOCK_SIZE = 16 * 1024
"""The smallest block size a manifest may use."""
MAX_BLOCK_SIZE = 8 * 1024 * 1024
"""The largest block size a manifest may use."""
PREFERRED_MIN_BLOCK_SIZE = 256 * 1024
"""The smallest block size :func:`block_size_for` picks."""
TARGET_BLOCKS_PER_FILE = 1024
""":func:`block_size_for` keeps content at or under this many blocks up to 8 GiB (fewer,
bigger blocks cost less per byte to request, serve and verify; ~1000 is still plenty
of pieces to swarm)."""
DEFAULT_READ_SIZE = 4 * 1024 * 1024

_PAD_LEAF = bytes(HASH_SIZE)


def leaf_hash(block: bytes | Sequence[bytes]) -> bytes:
    """
    The leaf hash of one block of data, given whole or as the list of its
    parts in order (hashed as they are, without joining them).
    """
    hasher = hashlib.sha256(LEAF_PREFIX)
    if isinstance(block, (bytes, bytearray, memoryview)):
        hasher.update(block)
    else:
        for part in block:
            hasher.update(part)
    return hasher.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an inner node from its two children."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _pad_hashes(depth: int) -> list[bytes]:
    """The hash of an all-padding subtree of each height 0..depth."""
    pads = [_PAD_LEAF]
    for _ in range(depth):
        pads.append(node_hash(pads[-1], pads[-1]))
    return pads


def tree_depth(leaf_count: int) -> int:
    """The number of levels above the leaves: ``log2`` of the padded width."""
    if leaf_count < 1:
        raise ValueError(f"a Merkle tree needs at least one leaf, not {leaf_count}")
    return (leaf_count - 1).bit_length()


def _parent_level(level: list[bytes], pad: bytes) -> list[bytes]:
    sha = hashlib.sha256
    if len(level) % 2:
        level = [*level, pad]
    return [sha(NODE_PREFIX + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]


def _check_leaves(leaves: Sequence[bytes]) -> list[bytes]:
    leaves = list(leaves)
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf {i} is not a {HASH_SIZE}-byte hash")
    return leaves


class MerkleTree:
    """
    The complete tree over a list of leaf hashes, kept to answer proofs.

    :ivar root: the root hash.
    :ivar leaves: the leaf hashes given, without padding.
    """

    def __init__(self, leaves: Sequence[bytes]) -> None:
        level = _check_leaves(leaves)
        self.leaves: tuple[bytes, ...] = tuple(level)
        self._pads = _pad_hashes(tree_depth(len(level)))
        self._levels = [level]
        while len(level) > 1:
            level = _parent_level(level, self._pads[len(self._levels) - 1])
            self._levels.append(level)
        self.root: bytes = level[0]

    @property
    def leaf_count(self) -> int:
        """The number of real (not padding) leaves."""
        return len(self.leaves)

    @property
    def depth(self) -> int:
        """The length of every proof in this tree."""
        return len(self._levels) - 1

    def proof(self, index: int) -> list[bytes]:
        """
        The sibling hashes on the path from leaf ``index`` to the root, bottom-up.

        :raises IndexError: for an index outside ``0 <= index < leaf_count``.
        """
        if not 0 <= index < len(self.leaves):
            raise IndexError(f"leaf {index} is outside 0..{len(self.leaves) - 1}")
        path = []
        for height, level in enumerate(self._levels[:-1]):
            sibling = index ^ 1
            path.append(level[sibling] if sibling < len(level) else self._pads[height])
            index >>= 1
        return path

    @staticmethod
    def verify(
        root: bytes, index: int, leaf: bytes, proof: Sequence[bytes], leaf_count: int
    ) -> bool:
        """
        Whether ``proof`` shows ``leaf`` at ``index`` in a tree of ``leaf_count`` leaves.

        A proof of the wrong length, an index outside ``0 <= index <
        leaf_count`` or any hash that is not 32 bytes is rejected outright.
        """
        if not isinstance(leaf_count, int) or leaf_count < 1:
            return False
        if not isinstance(index, int) or not 0 <= index < leaf_count:
            return False
        if len(proof) != tree_depth(leaf_count):
            return False
        if not all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in (root, leaf, *proof)):
            return False
        node = leaf
        for sibling in proof:
            node = node_hash(sibling, node) if index & 1 else node_hash(node, sibling)
            index >>= 1
        return node == root


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """The root of the tree over ``leaves``, without keeping the tree."""
    level = _check_leaves(leaves)
    pads = _pad_hashes(tree_depth(len(level)))
    height = 0
    while len(level) > 1:
        level = _parent_level(level, pads[height])
        height += 1
    return level[0]


def _next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def block_size_for(size: int) -> int:
    """
    The block size for content of ``size`` bytes.

    The smallest power of two that cuts ``size`` into at most 1024 blocks,
    but no less than 256 KiB and no more than 8 MiB: content up to 256 MiB
    has 256 KiB blocks, 1 GiB has 1 MiB blocks, and content over 8 GiB has
    more than 1024 blocks of 8 MiB.
    """
    if size < 0:
        raise ValueError(f"a size cannot be negative: {size}")
    wanted = _next_power_of_two(-(-size // TARGET_BLOCKS_PER_FILE))
    return min(max(wanted, PREFERRED_MIN_BLOCK_SIZE), MAX_BLOCK_SIZE)


def is_valid_block_size(block_size: object) -> bool:
    """Whether ``block_size`` is a power of two between 16 KiB and 8 MiB."""
    return (
        isinstance(block_size, int)
        and not isinstance(block_size, bool)
        and MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE
        and block_size & (block_size - 1) == 0
    )


def _fill(f: BinaryIO, view: memoryview) -> int:
    """Read into ``view`` until it is full or the file ends; the bytes read."""
    filled = 0
    while filled < len(view):
        n = f.readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled


def hash_stream(
    f: BinaryIO,
    block_size: int,
    *,
    read_size: int = DEFAULT_READ_SIZE,
    progress: Callable[[int], object] | None = None,
) -> tuple[list[bytes], int]:
    """
    The leaf hashes of everything left in the binary file ``f``, and its length.

    Blocking.  Reads ``read_size`` bytes at a time (rounded to whole blocks);
    calls ``progress(bytes_done)`` after each read.  Empty input gives the
    single leaf of the empty block.
    """
    if block_size < 1:
        raise ValueError(f"block size must be positive, not {block_size}")
    chunk = max(1, read_size // block_size) * block_size
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    leaves: list[bytes] = []
    done = 0
    while True:
        n = _fill(f, view)
        for start in range(0, n, block_size):
            h = hashlib.sha256(LEAF_PREFIX)
            h.update(view[start : min(start + block_size, n)])
            leaves.append(h.digest())
        done += n
        if progress is not None and n:
            progress(done)
        if n < chunk:
            break
    if not leaves:
        leaves.append(leaf_hash(b""))
    return leaves, done


def hash_file(
    path: str | os.PathLike[str],
    block_size: int,
    *,
    read_size: int = DEFAULT_READ_SIZE,
    progress: Callable[[int], object] | None = None,
) -> list[bytes]:
    """
    The leaf hashes of the file at ``path``, read sequentially.

    Blocking: run it in a worker thread.  ``progress(bytes_done)`` is called
    after each read of (about) ``read_size`` bytes.
    """
    with open(path, "rb", buffering=0) as f:
        leaves, _ = hash_stream(f, block_size, read_size=read_size, progress=progress)
    return leaves
