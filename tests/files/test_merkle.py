"""Merkle trees over file blocks: roots, proofs, the block size rule, file hashing."""

from __future__ import annotations

import hashlib
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerd.providers.files.merkle import (
    MAX_BLOCK_SIZE,
    MIN_BLOCK_SIZE,
    MerkleTree,
    block_size_for,
    hash_file,
    is_valid_block_size,
    leaf_hash,
    root_from_leaves,
    tree_depth,
)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
ZERO = bytes(32)


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def node(left: bytes, right: bytes) -> bytes:
    return H(b"\x01" + left + right)


def leaves(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [leaf_hash(rng.randbytes(rng.randrange(0, 64))) for _ in range(n)]


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_leaf_hash_definition():
    """A leaf is SHA-256 of a zero byte followed by the block."""
    assert leaf_hash(b"abc") == H(b"\x00abc")
    assert leaf_hash(b"") == H(b"\x00")


def test_single_leaf_tree():
    """A one-leaf tree's root is the leaf itself and its proofs are empty."""
    leaf = leaf_hash(b"only")
    tree = MerkleTree([leaf])
    assert tree.root == leaf == root_from_leaves([leaf])
    assert tree.proof(0) == []
    assert MerkleTree.verify(leaf, 0, leaf, [], 1)


def test_two_leaf_tree():
    """Two leaves hash straight into the root with the node prefix."""
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    tree = MerkleTree([a, b])
    assert tree.root == node(a, b)
    assert tree.proof(0) == [b]
    assert tree.proof(1) == [a]


def test_three_leaf_tree_is_padded_with_zero_leaves():
    """Three leaves are padded to four with a 32-zero-byte leaf."""
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))
    tree = MerkleTree([a, b, c])
    assert tree.root == node(node(a, b), node(c, ZERO))
    assert tree.proof(2) == [ZERO, node(a, b)]
    assert tree.proof(0) == [b, node(c, ZERO)]
    assert tree.leaves == (a, b, c)
    assert tree.leaf_count == 3
    assert tree.depth == 2


def test_five_leaf_tree_pads_whole_subtrees():
    """Five leaves pad to eight; an all-padding subtree hashes like any other."""
    ls = leaves(5)
    left = node(node(ls[0], ls[1]), node(ls[2], ls[3]))
    right = node(node(ls[4], ZERO), node(ZERO, ZERO))
    tree = MerkleTree(ls)
    assert tree.root == node(left, right)
    assert tree.proof(4) == [ZERO, node(ZERO, ZERO), left]
    assert root_from_leaves(ls) == tree.root


def test_tree_depth():
    """The depth is log2 of the leaf count rounded up to a power of two."""
    assert [tree_depth(n) for n in (1, 2, 3, 4, 5, 8, 9, 4096, 4097)] == [
        0,
        1,
        2,
        2,
        3,
        3,
        4,
        12,
        13,
    ]
    with pytest.raises(ValueError):
        tree_depth(0)


def test_bad_leaves_are_refused():
    """A tree needs at least one leaf, and every leaf must be a 32-byte hash."""
    with pytest.raises(ValueError, match="at least one leaf"):
        MerkleTree([])
    with pytest.raises(ValueError, match="leaf 1"):
        MerkleTree([ZERO, b"short"])
    with pytest.raises(ValueError, match="at least one leaf"):
        root_from_leaves([])


def test_proof_index_out_of_range():
    """Asking for the proof of a leaf that does not exist raises IndexError."""
    tree = MerkleTree(leaves(3))
    with pytest.raises(IndexError):
        tree.proof(3)
    with pytest.raises(IndexError):
        tree.proof(-1)


def test_every_proof_verifies_and_any_flipped_bit_fails():
    """In a random tree every proof verifies; one flipped bit in leaf, proof, index or root fails it."""
    ls = leaves(37, seed=7)
    tree = MerkleTree(ls)
    rng = random.Random(1)
    for i, leaf in enumerate(ls):
        proof = tree.proof(i)
        assert MerkleTree.verify(tree.root, i, leaf, proof, len(ls))
        assert not MerkleTree.verify(tree.root, i, flip(leaf, rng.randrange(256)), proof, len(ls))
        assert not MerkleTree.verify(flip(tree.root, rng.randrange(256)), i, leaf, proof, len(ls))
        for level in range(len(proof)):
            bad = list(proof)
            bad[level] = flip(bad[level], rng.randrange(256))
            assert not MerkleTree.verify(tree.root, i, leaf, bad, len(ls))
        for bit in range(6):
            assert not MerkleTree.verify(tree.root, i ^ (1 << bit), leaf, proof, len(ls))


def test_verify_rejects_malformed_claims():
    """Wrong proof lengths, out-of-range indexes and malformed hashes are rejected."""
    ls = leaves(5)
    tree = MerkleTree(ls)
    proof = tree.proof(4)
    assert MerkleTree.verify(tree.root, 4, ls[4], proof, 5)
    assert not MerkleTree.verify(tree.root, 4, ls[4], proof[:-1], 5)
    assert not MerkleTree.verify(tree.root, 4, ls[4], [*proof, ZERO], 5)
    assert not MerkleTree.verify(tree.root, 4, ls[4], proof, 4)  # index >= leaf_count
    assert not MerkleTree.verify(tree.root, 5, ZERO, tree.proof(4), 5)  # a padding leaf
    assert not MerkleTree.verify(tree.root, -4, ls[4], proof, 5)
    assert not MerkleTree.verify(tree.root, 4, ls[4], proof, 0)
    assert not MerkleTree.verify(tree.root, 4, ls[4][:31], proof, 5)
    assert not MerkleTree.verify(tree.root, 4, ls[4], [p + b"x" for p in proof], 5)
    assert not MerkleTree.verify(tree.root[:16], 4, ls[4], proof, 5)


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 300), seed=st.integers(0, 2**32))
def test_all_proofs_verify_for_any_leaf_count(count, seed):
    """For any leaf count from 1 to 300, every proof has the tree's depth and verifies."""
    ls = leaves(count, seed)
    tree = MerkleTree(ls)
    assert tree.root == root_from_leaves(ls)
    for i, leaf in enumerate(ls):
        proof = tree.proof(i)
        assert len(proof) == tree_depth(count) == tree.depth
        assert MerkleTree.verify(tree.root, i, leaf, proof, count)


def test_building_a_4096_leaf_tree_is_fast():
    """A 4096-leaf tree (4 GiB at 1 MiB blocks) builds well under 50 ms."""
    ls = leaves(4096)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        MerkleTree(ls)
        best = min(best, time.perf_counter() - start)
    assert best < 0.05


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, 256 * KiB),
        (1, 256 * KiB),
        (256 * MiB - 1, 256 * KiB),
        (256 * MiB, 256 * KiB),
        (256 * MiB + 1, 512 * KiB),
        (512 * MiB, 512 * KiB),
        (512 * MiB + 1, MiB),
        (GiB, MiB),
        (4 * GiB, 4 * MiB),
        (4 * GiB + 1, 8 * MiB),
        (8 * GiB, 8 * MiB),
        (8 * GiB + 1, 8 * MiB),
        (2**50, 8 * MiB),
    ],
)
def test_block_size_rule_at_boundaries(size, expected):
    """Block sizes double just past each 1024-block boundary, clamped to 256 KiB..8 MiB."""
    assert block_size_for(size) == expected


@given(st.integers(0, 2**48))
def test_block_size_rule_properties(size):
    """The block size is a valid power of two and keeps content up to 8 GiB at <= 1024 blocks."""
    bs = block_size_for(size)
    assert is_valid_block_size(bs)
    if size <= 8 * GiB:
        assert -(-size // bs) <= 1024


def test_block_size_rule_refuses_negative_sizes():
    """A negative size is a programming error."""
    with pytest.raises(ValueError):
        block_size_for(-1)


def test_is_valid_block_size():
    """Valid block sizes are powers of two from 16 KiB to 8 MiB (and ints, not bools)."""
    assert is_valid_block_size(MIN_BLOCK_SIZE)
    assert is_valid_block_size(MAX_BLOCK_SIZE)
    assert not is_valid_block_size(MIN_BLOCK_SIZE // 2)
    assert not is_valid_block_size(MAX_BLOCK_SIZE * 2)
    assert not is_valid_block_size(MIN_BLOCK_SIZE + 1)
    assert not is_valid_block_size(float(MIN_BLOCK_SIZE))
    assert not is_valid_block_size(True)


BS = 16 * KiB


@pytest.mark.parametrize("size", [0, 1, BS - 1, BS, BS + 1, 3 * BS + BS // 2])
@pytest.mark.parametrize("read_size", [BS // 3, 20_000, 4 * MiB])
def test_hash_file_matches_hashing_blocks(tmp_path, size, read_size):
    """hash_file gives the leaf hash of each block, whatever the read size; empty files one leaf."""
    data = random.Random(size).randbytes(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    expected = [leaf_hash(data[i : i + BS]) for i in range(0, size, BS)] or [leaf_hash(b"")]
    assert hash_file(path, BS, read_size=read_size) == expected


def test_hash_file_reports_progress(tmp_path):
    """progress is called with the growing number of bytes hashed, ending at the file size."""
    path = tmp_path / "f"
    path.write_bytes(bytes(5 * BS + 7))
    seen = []
    hash_file(path, BS, read_size=2 * BS, progress=seen.append)
    assert seen == [2 * BS, 4 * BS, 5 * BS + 7]


@given(st.binary(max_size=5000), st.lists(st.integers(min_value=0, max_value=5000), max_size=8))
def test_leaf_hash_of_parts_is_the_leaf_hash_of_the_whole(block, cuts):
    points = sorted({0, len(block), *(c % (len(block) + 1) for c in cuts)})
    parts = [block[a:b] for a, b in zip(points, points[1:], strict=False)]
    assert leaf_hash(parts) == leaf_hash(block) == leaf_hash(memoryview(block))
