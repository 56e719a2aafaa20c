"""
Bitfields: which of a content's blocks are held, one bit per block.

Block 0 is the high bit of byte 0 (BitTorrent order); a bitfield of
``count`` blocks has ``ceil(count / 8)`` bytes and the spare bits of its
last byte are zero.  This is the form sent in ``bitfield`` records and kept
in a download's state file.  Pure functions on bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

_EXPAND = [bytes((v >> (7 - k)) & 1 for k in range(8)) for v in range(256)]


def size(count: int) -> int:
    """The bytes of a bitfield of ``count`` blocks."""
    return (count + 7) // 8


def pack(indices: Iterable[int], count: int) -> bytes:
    """A bitfield of ``count`` blocks with ``indices`` set."""
    bits = bytearray(size(count))
    for i in indices:
        bits[i >> 3] |= 0x80 >> (i & 7)
    return bytes(bits)


def has(bits: bytes | bytearray, index: int) -> bool:
    """Whether block ``index`` is set."""
    return bool(bits[index >> 3] & (0x80 >> (index & 7)))


def add(bits: bytearray, index: int) -> None:
    """Set block ``index``."""
    bits[index >> 3] |= 0x80 >> (index & 7)


def discard(bits: bytearray, index: int) -> None:
    """Clear block ``index``."""
    bits[index >> 3] &= ~(0x80 >> (index & 7)) & 0xFF


def count(bits: bytes | bytearray) -> int:
    """How many blocks are set."""
    return int.from_bytes(bits, "big").bit_count()


def indices(bits: bytes | bytearray, count: int, *, held: bool = True) -> Iterator[int]:
    """The blocks below ``count`` that are set (``held``) or clear, ascending."""
    skip = 0 if held else 0xFF
    for byte_index, byte in enumerate(bits):
        if byte == skip:
            continue
        base = byte_index * 8
        for bit in range(min(8, count - base)):
            if bool(byte & (0x80 >> bit)) == held:
                yield base + bit


def valid(bits: bytes | bytearray, count: int) -> bool:
    """Whether ``bits`` is a bitfield of ``count`` blocks: the right size, spare bits clear."""
    if len(bits) != size(count):
        return False
    spare = len(bits) * 8 - count
    return not spare or not bits[-1] & ((1 << spare) - 1)


def unpack(bits: bytes | bytearray, count: int) -> bytearray:
    """
    One flag byte per block (1: set) from a bitfield of ``count`` blocks,
    built at C speed.

    :raises ValueError: if ``bits`` is not a valid bitfield of ``count`` blocks.
    """
    if len(bits) != size(count):
        raise ValueError(f"a bitfield of {count} blocks has {size(count)} bytes")
    flags = bytearray(b"".join(_EXPAND[v] for v in bits))
    if 1 in flags[count:]:
        raise ValueError("bitfield has bits set past the last block")
    del flags[count:]
    return flags
