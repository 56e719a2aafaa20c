"""Capabilities: format, round trip, typo detection."""

from __future__ import annotations

import os

import pytest

from peerd.providers.storage.capability import (
    PREFIX,
    Capability,
    InvalidCapability,
    parse_index,
    storage_index,
)


def _cap(**kw: object) -> Capability:
    fields = {"key": os.urandom(32), "ueb_hash": os.urandom(32), "k": 3, "n": 10, "size": 12345}
    fields.update(kw)
    return Capability(**fields)  # type: ignore[arg-type]


def test_round_trip() -> None:
    """A capability prints as pdcap1-... and parses back to the same fields."""
    cap = _cap()
    text = str(cap)
    assert text.startswith(PREFIX) and text == text.lower()
    assert Capability.parse(text) == cap
    assert Capability.parse("  " + text.upper() + "\n") == cap


@pytest.mark.parametrize("size", [0, 1, 2**40, 2**63 - 1])
def test_round_trip_sizes(size: int) -> None:
    """Sizes from 0 to 2**63-1 survive the round trip."""
    cap = _cap(size=size, k=1, n=1)
    assert Capability.parse(str(cap)).size == size


def test_every_single_character_typo_is_rejected() -> None:
    """Changing any one character after the prefix fails the checksum or the alphabet."""
    text = str(_cap())
    for i in range(len(PREFIX), len(text)):
        replacement = "a" if text[i] != "a" else "b"
        typo = text[:i] + replacement + text[i + 1 :]
        with pytest.raises(InvalidCapability):
            Capability.parse(typo)


def test_swapped_characters_and_truncation_are_rejected() -> None:
    """Transposed neighbours, a missing or an extra character are caught."""
    text = str(_cap())
    i = len(PREFIX) + 10
    swapped = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if swapped != text:
        with pytest.raises(InvalidCapability, match="checksum"):
            Capability.parse(swapped)
    with pytest.raises(InvalidCapability, match="base32 characters"):
        Capability.parse(text[:-1])
    with pytest.raises(InvalidCapability, match="base32 characters"):
        Capability.parse(text + "a")


def test_other_versions_and_garbage() -> None:
    """Another version is named; garbage is "not a capability"."""
    text = str(_cap())
    with pytest.raises(InvalidCapability, match="unsupported capability version 'pdcap2'"):
        Capability.parse("pdcap2-" + text[len(PREFIX) :])
    with pytest.raises(InvalidCapability, match="not a capability"):
        Capability.parse("hello")
    with pytest.raises(InvalidCapability, match="base32"):
        Capability.parse(PREFIX + "1" * (len(text) - len(PREFIX)))


def test_bad_parameters() -> None:
    """k must be 1..n and n at most 255."""
    with pytest.raises(InvalidCapability):
        _cap(k=0)
    with pytest.raises(InvalidCapability):
        _cap(k=4, n=3)


def test_storage_index_is_derived_by_a_hash() -> None:
    """The index servers see is 16 bytes of a hash of the key: not the key."""
    cap = _cap()
    assert cap.storage_index == storage_index(cap.key)
    assert len(cap.storage_index) == 16 and cap.storage_index not in cap.key
    assert parse_index(cap.index_hex) == cap.storage_index
    assert parse_index("../" + cap.index_hex[3:]) is None
    assert parse_index(cap.index_hex.upper()) is None
