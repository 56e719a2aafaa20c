"""Tests for peerd.providers.files.bitfield: the one bitfield codec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerd.providers.files import bitfield


def test_block_zero_is_the_high_bit_of_byte_zero():
    assert bitfield.pack([0], 3) == b"\x80"
    assert bitfield.pack([0, 2, 8], 9) == b"\xa0\x80"
    assert bitfield.pack([], 0) == b""
    assert bitfield.size(8) == 1 and bitfield.size(9) == 2


def test_has_add_discard_count():
    bits = bytearray(bitfield.size(10))
    bitfield.add(bits, 9)
    bitfield.add(bits, 1)
    bitfield.add(bits, 1)
    assert bitfield.has(bits, 9) and bitfield.has(bits, 1) and not bitfield.has(bits, 0)
    assert bitfield.count(bits) == 2
    bitfield.discard(bits, 9)
    bitfield.discard(bits, 9)
    assert bytes(bits) == b"\x40\x00" and bitfield.count(bits) == 1


def test_indices_held_and_missing_stop_at_the_block_count():
    bits = bitfield.pack([0, 2, 8], 10)
    assert list(bitfield.indices(bits, 10)) == [0, 2, 8]
    assert list(bitfield.indices(bits, 10, held=False)) == [1, 3, 4, 5, 6, 7, 9]
    assert list(bitfield.indices(b"\xff", 3, held=True)) == [0, 1, 2]
    assert list(bitfield.indices(b"\x00", 3, held=False)) == [0, 1, 2]


def test_valid_wants_the_exact_size_and_clear_spare_bits():
    assert bitfield.valid(b"\xe0", 3)
    assert bitfield.valid(b"\xff\x80", 9)
    assert bitfield.valid(b"", 0)
    assert not bitfield.valid(b"\xf0", 3)  # bit 3 set past the last block
    assert not bitfield.valid(b"\xe0\x00", 3)  # a byte too many
    assert not bitfield.valid(b"\xff", 9)  # a byte short


def test_unpack_to_flag_bytes_and_refusals():
    assert bitfield.unpack(b"\xa0", 3) == bytearray([1, 0, 1])
    assert bitfield.unpack(b"\xff\x80", 9) == bytearray([1] * 9)
    with pytest.raises(ValueError):
        bitfield.unpack(b"\xb0", 3)
    with pytest.raises(ValueError):
        bitfield.unpack(b"\xff", 9)


@given(
    st.integers(0, 200).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.integers(0, max(0, n - 1))))
    )
)
def test_every_form_agrees(case):
    count, chosen = case
    chosen = {i for i in chosen if i < count}
    bits = bitfield.pack(chosen, count)
    assert bitfield.valid(bits, count)
    assert set(bitfield.indices(bits, count)) == chosen
    assert set(bitfield.indices(bits, count, held=False)) == set(range(count)) - chosen
    assert bitfield.count(bits) == len(chosen)
    assert [i for i, flag in enumerate(bitfield.unpack(bits, count)) if flag] == sorted(chosen)
    assert all(bitfield.has(bits, i) == (i in chosen) for i in range(count))
