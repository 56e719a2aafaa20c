"""The encrypt + erasure-code pipeline, without I/O."""

from __future__ import annotations

import itertools
import os

import pytest

from peerd.providers.storage.codec import (
    UEB,
    IntegrityError,
    Layout,
    Regenerator,
    SegmentDecoder,
    SegmentEncoder,
    block_hash,
)


def _encode(data: bytes, k: int, n: int, seg: int) -> tuple[bytes, UEB, list[list[bytes]]]:
    key = os.urandom(32)
    layout = Layout(len(data), k, n, seg)
    enc = SegmentEncoder(key, layout)
    shares: list[list[bytes]] = [[] for _ in range(n)]
    for s in range(layout.segments):
        start = s * seg
        for sh, block in enumerate(enc.encode(data[start : start + layout.plain_length(s)])):
            shares[sh].append(block)
    return key, enc.finish(), shares


def _decode(key: bytes, ueb: UEB, shares: list[list[bytes]], which: tuple[int, ...]) -> bytes:
    dec = SegmentDecoder(key, ueb)
    out = b"".join(
        dec.decode({sh: shares[sh][s] for sh in which}) for s in range(ueb.layout.segments)
    )
    dec.finish()
    return out


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 17])
def test_any_k_of_n_rebuild(size: int) -> None:
    """Every choice of k shares out of n gives back the plaintext."""
    data = os.urandom(size)
    key, ueb, shares = _encode(data, 3, 5, 4096)
    for which in itertools.combinations(range(5), 3):
        assert _decode(key, ueb, shares, which) == data


def test_blocks_do_not_contain_the_plaintext() -> None:
    """Shares hold ciphertext: a recognisable plaintext appears in none of them."""
    data = b"the secret recipe " * 1000
    _, _, shares = _encode(data, 3, 6, 4096)
    for share in shares:
        assert b"secret recipe" not in b"".join(share)


def test_wrong_key_or_forged_block_fails() -> None:
    """Decryption under another key, or from a tampered block, raises IntegrityError."""
    data = os.urandom(10000)
    key, ueb, shares = _encode(data, 2, 4, 4096)
    with pytest.raises(IntegrityError):
        _decode(os.urandom(32), ueb, shares, (0, 1))
    shares[0][1] = bytes([shares[0][1][0] ^ 1]) + shares[0][1][1:]
    with pytest.raises(IntegrityError):
        _decode(key, ueb, shares, (0, 1))


def test_ueb_round_trip_and_malformed() -> None:
    """A UEB decodes to itself; junk is an IntegrityError."""
    _, ueb, _ = _encode(b"x" * 100, 3, 6, 4096)
    assert UEB.decode(ueb.encode()) == ueb
    with pytest.raises(IntegrityError):
        UEB.decode(b"\x81\xa1v\x01")
    with pytest.raises(IntegrityError):
        UEB.decode(b"junk")


def test_regenerate_missing_shares() -> None:
    """Repair rebuilds missing shares' blocks bit for bit from any k others."""
    data = os.urandom(9000)
    _, ueb, shares = _encode(data, 3, 6, 4096)
    regen = Regenerator(ueb.layout, [1, 4])
    for s in range(ueb.layout.segments):
        out = regen.regenerate(s, {sh: shares[sh][s] for sh in (0, 3, 5)})
        assert out == {1: shares[1][s], 4: shares[4][s]}
    assert regen.hashes[4] == [block_hash(4, s, b) for s, b in enumerate(shares[4])]


def test_layout_sizes() -> None:
    """Block sizes cover the ciphertext; an empty file is one segment."""
    lay = Layout(10_000, 3, 6, 4096)
    assert lay.segments == 3
    assert [lay.plain_length(s) for s in range(3)] == [4096, 4096, 1808]
    assert lay.block_size(0) * 3 >= 4096 + 16
    assert lay.blocks_size() == 2 * lay.block_size(0) + lay.block_size(2)
    assert Layout(0, 1, 1).segments == 1
