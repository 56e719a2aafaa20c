"""Structured payloads: HELLO, OPEN, RESET/GOAWAY reasons, and strict decoding."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerd.wire.frames import ProtocolError
from peerd.wire.messages import PROTOCOL_VERSION, Hello, Open, Reason, pack, unpack_map

HELLO = Hello(
    peer_id="AAAAAA-BBBBBB",
    agent="peerd/0.1",
    listen=["tcp:example.org:4001"],
    providers={"blocks": "1.0", "echo": "0.2"},
    max_frame_size=64 * 1024,
    window=512 * 1024,
    nonce=b"\x00" * 16,
)


def hello_body(**changes) -> dict:
    body = msgpack.unpackb(HELLO.encode(), raw=False)
    for key, value in changes.items():
        if value is KeyError:
            del body[key]
        else:
            body[key] = value
    return body


def test_hello_round_trip():
    """A HELLO encoded and decoded compares equal to the original."""
    assert Hello.decode(HELLO.encode()) == HELLO
    assert HELLO.version == PROTOCOL_VERSION


def test_hello_defaults_round_trip():
    """A HELLO built with only the required fields round trips with its defaults."""
    hello = Hello(peer_id="p", agent="a")
    assert Hello.decode(hello.encode()) == hello


@given(
    st.builds(
        Hello,
        peer_id=st.text(max_size=50),
        agent=st.text(max_size=200),
        listen=st.lists(st.text(max_size=30), max_size=5),
        providers=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5),
        max_frame_size=st.integers(0, 2**63 - 1),
        window=st.integers(0, 2**63 - 1),
        nonce=st.binary(max_size=32),
        version=st.integers(0, 2**32),
    )
)
@settings(max_examples=200, deadline=None)
def test_hello_round_trip_property(hello):
    """Any HELLO within the field limits survives encode/decode unchanged."""
    assert Hello.decode(hello.encode()) == hello


def test_hello_unknown_fields_ignored():
    """Fields a newer peer adds to HELLO are ignored, not rejected."""
    body = hello_body(future_feature={"x": [1, 2]}, another=True)
    assert Hello.decode(pack(body)) == HELLO


def test_hello_long_agent_and_nonce_truncated():
    """An over-long agent string is cut to 200 characters and the nonce to 32 bytes."""
    hello = Hello.decode(pack(hello_body(agent="a" * 1000, nonce=b"n" * 100)))
    assert hello.agent == "a" * 200
    assert hello.nonce == b"n" * 32


@pytest.mark.parametrize(
    "field", ["version", "peer_id", "agent", "listen", "providers", "max_frame_size", "window"]
)
def test_hello_missing_field(field):
    """A HELLO without any one of its required fields is a ProtocolError."""
    with pytest.raises(ProtocolError, match=field):
        Hello.decode(pack(hello_body(**{field: KeyError})))


@pytest.mark.parametrize(
    "changes",
    [
        {"version": "1"},
        {"version": True},
        {"version": 1.0},
        {"window": False},
        {"max_frame_size": None},
        {"peer_id": b"bytes-not-str"},
        {"agent": 5},
        {"listen": "tcp:x:1"},
        {"listen": ["ok", 3]},
        {"providers": ["blocks"]},
        {"providers": {"blocks": 1}},
        {"nonce": "text-not-bytes"},
    ],
    ids=repr,
)
def test_hello_wrong_types(changes):
    """A HELLO field of the wrong type (bool counts as wrong where an int is due) is rejected."""
    with pytest.raises(ProtocolError):
        Hello.decode(pack(hello_body(**changes)))


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", b"\x81", b"\xa3ab", b"\x82\xa1a\x01", pack({"a": 1}) + b"trailing"],
    ids=repr,
)
def test_not_msgpack(payload):
    """Bytes that are not exactly one MessagePack value are a ProtocolError."""
    with pytest.raises(ProtocolError, match="malformed"):
        unpack_map(payload, "HELLO")


@pytest.mark.parametrize("value", [1, "x", b"x", [1, 2], None, True, 1.5], ids=repr)
def test_not_a_map(value):
    """A MessagePack value that is not a map is a ProtocolError naming what was expected."""
    with pytest.raises(ProtocolError, match="expected a map"):
        Hello.decode(pack(value))


def test_non_string_map_keys_rejected():
    """Map keys that are not strings (e.g. ints) are a ProtocolError, not a TypeError."""
    with pytest.raises(ProtocolError):
        Open.decode(msgpack.packb({1: "x", "provider": "p", "header": {}}))


@pytest.mark.parametrize(
    "body",
    [
        {b"provider": "p", "provider": "p", "header": {}},
        {"provider": "p", "header": {b"key": 1}},
        {"provider": "p", "header": {"a": [{"b": {b"deep": 1}}]}},
    ],
    ids=["top level", "in header", "nested"],
)
def test_bytes_map_keys_rejected(body):
    """Map keys must be MessagePack str at every level; bin (bytes) keys are a ProtocolError."""
    with pytest.raises(ProtocolError, match="keys must be strings"):
        Open.decode(msgpack.packb(body, use_bin_type=True))


def test_nested_string_keys_accepted():
    """Nested maps with string keys inside an OPEN header decode unchanged."""
    header = {"a": [{"b": {"c": 1}}], "d": {}}
    assert Open.decode(Open("p", header).encode()).header == header


def test_invalid_utf8_rejected():
    """A string that is not valid UTF-8 is a ProtocolError."""
    with pytest.raises(ProtocolError):
        Reason.decode(b"\x81\xa4code\xa2\xff\xfe", "RESET")


def test_open_round_trip():
    """An OPEN with a provider name and a header map round trips."""
    request = Open("blocks", {"cid": b"\x01\x02", "n": 3, "tags": ["a"]})
    assert Open.decode(request.encode()) == request
    assert Open.decode(Open("echo").encode()) == Open("echo", {})


@pytest.mark.parametrize(
    "body",
    [
        {"header": {}},
        {"provider": "p"},
        {"provider": 1, "header": {}},
        {"provider": "p", "header": []},
        {"provider": "p", "header": None},
    ],
    ids=repr,
)
def test_open_malformed(body):
    """An OPEN missing its provider or header, or with either of the wrong type, is rejected."""
    with pytest.raises(ProtocolError, match="OPEN"):
        Open.decode(pack(body))


def test_reason_round_trip_and_str():
    """A Reason round trips; it prints as ``code: reason``, or just the code without a reason."""
    reason = Reason("too-many-streams", "limit of 4")
    assert Reason.decode(reason.encode(), "RESET") == reason
    assert str(reason) == "too-many-streams: limit of 4"
    assert str(Reason("cancel")) == "cancel"


def test_reason_optional_and_truncated():
    """The reason text may be omitted; an over-long code or reason is truncated."""
    assert Reason.decode(pack({"code": "x"}), "GOAWAY") == Reason("x", "")
    long = Reason.decode(pack({"code": "c" * 100, "reason": "r" * 1000}), "GOAWAY")
    assert long == Reason("c" * 64, "r" * 500)


@pytest.mark.parametrize(
    "body", [{}, {"code": 1}, {"code": None, "reason": "r"}, {"reason": "r"}], ids=repr
)
def test_reason_malformed(body):
    """A RESET/GOAWAY body without a string code is a ProtocolError naming the frame."""
    with pytest.raises(ProtocolError, match="GOAWAY"):
        Reason.decode(pack(body), "GOAWAY")


@pytest.mark.parametrize("reason", [5, ["a"], {"a": 1}, None, b"bytes"], ids=repr)
def test_reason_text_of_wrong_type(reason):
    """A reason that is present but not a string is a ProtocolError."""
    with pytest.raises(ProtocolError):
        Reason.decode(pack({"code": "x", "reason": reason}), "RESET")


def test_deeply_nested_reason_is_protocol_error():
    """
    A reason nested ~1000 lists deep is a ProtocolError, not a RecursionError:
    a hostile peer cannot crash the session by making the decoder ``str()`` it.
    """
    nested = b"\x91" * 1000 + b"\xc0"
    payload = b"\x82" + pack("code") + pack("x") + pack("reason") + nested
    with pytest.raises(ProtocolError):
        Reason.decode(payload, "RESET")
