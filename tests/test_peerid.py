"""PeerIDs and peer addresses: printing, parsing, typo detection."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor

from peerd.peerid import DIGEST_SIZE, InvalidAddress, InvalidPeerID, PeerAddress, PeerID

BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
SAMPLE = PeerID(hashlib.sha256(b"sample").digest()[:DIGEST_SIZE])


def test_printed_form_shape():
    """A PeerID prints as six dash-joined groups of six base32 characters."""
    groups = str(SAMPLE).split("-")
    assert [len(g) for g in groups] == [6] * 6
    assert set("".join(groups)) <= set(BASE32)
    assert SAMPLE.short == groups[0]
    assert repr(SAMPLE) == f"PeerID({str(SAMPLE)!r})"


def test_round_trip():
    """Parsing the printed form gives the same PeerID back."""
    assert PeerID.parse(str(SAMPLE)) == SAMPLE


@pytest.mark.parametrize(
    "transform",
    [
        str.lower,
        lambda s: s.replace("-", ""),
        lambda s: s.replace("-", "").lower(),
        lambda s: f"  {s}\n",
        lambda s: s.swapcase(),
        lambda s: "-".join(s.replace("-", "")),
    ],
    ids=["lower", "no-dashes", "lower-no-dashes", "whitespace", "swapcase", "dash-everywhere"],
)
def test_parsing_ignores_case_and_dashes(transform):
    """Case, dashes and surrounding whitespace do not matter when parsing."""
    assert PeerID.parse(transform(str(SAMPLE))) == SAMPLE


def test_from_public_key_der_is_deterministic():
    """The same public key always gives the same PeerID; different keys differ."""
    assert PeerID.from_public_key_der(b"key one") == PeerID.from_public_key_der(b"key one")
    assert PeerID.from_public_key_der(b"key one") != PeerID.from_public_key_der(b"key two")


def test_every_single_character_typo_is_rejected():
    """Substituting any one character of a printed PeerID with any other is caught."""
    text = str(SAMPLE)
    tried = 0
    for position, original in enumerate(text):
        if original == "-":
            continue
        for replacement in BASE32:
            if replacement == original:
                continue
            typo = text[:position] + replacement + text[position + 1 :]
            with pytest.raises(InvalidPeerID):
                PeerID.parse(typo)
            tried += 1
    assert tried == 36 * 31


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "expected 36 base32 characters, got 0"),
        ("ABCDEF", "expected 36 base32 characters, got 6"),
        ("A" * 37, "expected 36 base32 characters, got 37"),
        ("1" * 36, "not base32"),
        ("0" + "A" * 35, "not base32"),
        ("!" * 36, "not base32"),
    ],
    ids=["empty", "short", "long", "digit-1", "digit-0", "punctuation"],
)
def test_malformed_text_rejected_with_reason(text, reason):
    """Wrong length or alphabet is rejected with a message quoting the input and the reason."""
    with pytest.raises(InvalidPeerID) as info:
        PeerID.parse(text)
    assert repr(text) in str(info.value)
    assert reason in str(info.value)


def test_wrong_checksum_message():
    """A typo is reported as a checksum mismatch."""
    text = str(SAMPLE)
    typo = ("B" if text[0] != "B" else "C") + text[1:]
    with pytest.raises(InvalidPeerID, match="checksum mismatch"):
        PeerID.parse(typo)


def test_digest_must_have_twenty_bytes():
    """A PeerID is built only from a 20-byte digest."""
    with pytest.raises(InvalidPeerID, match="20 bytes"):
        PeerID(b"\x00" * 19)


def test_invalid_peer_id_is_value_error():
    """Callers catching ValueError also catch InvalidPeerID and InvalidAddress."""
    assert issubclass(InvalidPeerID, ValueError)
    assert issubclass(InvalidAddress, ValueError)


@given(st.binary(min_size=DIGEST_SIZE, max_size=DIGEST_SIZE))
def test_round_trip_any_digest(digest):
    """Every 20-byte digest survives printing and parsing, in either case."""
    peer_id = PeerID(digest)
    assert PeerID.parse(str(peer_id)) == peer_id
    assert PeerID.parse(str(peer_id).lower().replace("-", "")) == peer_id


def test_address_with_peer_id():
    """``PEERID@host:port`` parses into all three parts and prints back."""
    address = PeerAddress.parse(f"{SAMPLE}@example.org:7845")
    assert address == PeerAddress("example.org", 7845, SAMPLE)
    assert str(address) == f"{SAMPLE}@example.org:7845"
    assert address.host_port == "example.org:7845"


def test_address_without_peer_id():
    """``host:port`` parses with no PeerID; ``with_peer_id`` pins one."""
    address = PeerAddress.parse("192.0.2.1:7845")
    assert address == PeerAddress("192.0.2.1", 7845, None)
    assert str(address) == "192.0.2.1:7845"
    assert address.with_peer_id(SAMPLE) == PeerAddress("192.0.2.1", 7845, SAMPLE)


def test_address_lowercase_peer_id():
    """The PeerID part of an address is parsed like any PeerID."""
    address = PeerAddress.parse(f"{str(SAMPLE).lower()}@host:1")
    assert address.peer_id == SAMPLE


def test_ipv6_address():
    """IPv6 hosts are written in brackets and kept without them."""
    address = PeerAddress.parse("[::1]:7845")
    assert address.host == "::1"
    assert address.port == 7845
    assert address.host_port == "[::1]:7845"
    assert str(PeerAddress.parse(f"{SAMPLE}@[2001:db8::5]:9")) == f"{SAMPLE}@[2001:db8::5]:9"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("host:0", "out of range"),
        ("host:65536", "out of range"),
        ("host:99999", "out of range"),
        ("host:123456", "not host:port"),
        ("host:port", "not host:port"),
        ("host", "not host:port"),
        (":7845", "not host:port"),
        ("::1:7845", "not host:port"),
        ("[::1]", "not host:port"),
        ("host name:7845", "not host:port"),
        ("", "not host:port"),
        ("nonsense@host:7845", "is not a PeerID"),
        (f"{SAMPLE}@", "not host:port"),
    ],
)
def test_bad_addresses_rejected_with_reason(text, reason):
    """Bad ports, missing parts, unbracketed IPv6 and bad PeerIDs raise InvalidAddress."""
    with pytest.raises(InvalidAddress, match=reason):
        PeerAddress.parse(text)


@pytest.mark.parametrize(
    "text, endpoint",
    [
        ("example.org:7845", "tcp:host=example.org:port=7845"),
        ("192.0.2.1:1", "tcp:host=192.0.2.1:port=1"),
        ("[::1]:7845", r"tcp:host=\:\:1:port=7845"),
    ],
)
def test_client_endpoint_string(text, endpoint):
    """The client endpoint string is a plain TCP dial, IPv6 colons escaped."""
    assert PeerAddress.parse(text).client_endpoint_string() == endpoint


@pytest.mark.parametrize("text, host", [("example.org:7845", "example.org"), ("[::1]:7845", "::1")])
def test_client_endpoint_string_dials_host_and_port(text, host):
    """Twisted's clientFromString turns the string into a TCP dial of that host and port."""
    reactor = MemoryReactor()
    endpoint = clientFromString(reactor, PeerAddress.parse(text).client_endpoint_string())
    endpoint.connect(Factory.forProtocol(Protocol))
    assert [(h, p) for h, p, *_ in reactor.tcpClients] == [(host, 7845)]
