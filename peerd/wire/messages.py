"""
Structured payloads: the HELLO handshake and the OPEN, RESET and GOAWAY
bodies, encoded with MessagePack and checked field by field on decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from peerd.wire.frames import ProtocolError

PROTOCOL_VERSION = 1


def pack(value: Any) -> bytes:
    """MessagePack-encode ``value`` (maps, lists, str, bytes, ints, floats, bools, nil)."""
    return msgpack.packb(value, use_bin_type=True)


def _str_keyed(pairs: list[tuple[Any, Any]]) -> dict:
    # strict_map_key alone lets bin (bytes) keys through; the protocol allows str only.
    if not all(isinstance(key, str) for key, _ in pairs):
        raise ValueError("map keys must be strings")
    return dict(pairs)


def unpack_map(payload: bytes, what: str) -> dict:
    """Decode a MessagePack map; anything else is a :class:`ProtocolError`."""
    try:
        value = msgpack.unpackb(
            payload, raw=False, strict_map_key=True, object_pairs_hook=_str_keyed
        )
    except Exception as e:  # msgpack raises several unrelated types
        raise ProtocolError(f"malformed {what}: {e}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"malformed {what}: expected a map, got {type(value).__name__}")
    return value


def _field(body: dict, name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ProtocolError(f"malformed {what}: field {name!r} missing or of the wrong type")
    return value


def _str_list(body: dict, name: str, what: str) -> list[str]:
    value = _field(body, name, list, what)
    if not all(isinstance(item, str) for item in value):
        raise ProtocolError(f"malformed {what}: field {name!r} must hold strings")
    return value


@dataclass(frozen=True)
class Hello:
    """The first frame each side sends once TLS is up."""

    peer_id: str
    agent: str
    listen: list[str] = field(default_factory=list)
    providers: dict[str, str] = field(default_factory=dict)
    max_frame_size: int = 256 * 1024
    window: int = 1024 * 1024
    nonce: bytes = b""
    version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        """The HELLO payload."""
        return pack(
            {
                "version": self.version,
                "peer_id": self.peer_id,
                "agent": self.agent,
                "listen": list(self.listen),
                "providers": dict(self.providers),
                "max_frame_size": self.max_frame_size,
                "window": self.window,
                "nonce": self.nonce,
            }
        )

    @classmethod
    def decode(cls, payload: bytes) -> Hello:
        """Parse a HELLO payload; unknown fields are ignored for forward compatibility."""
        what = "HELLO"
        body = unpack_map(payload, what)
        providers = _field(body, "providers", dict, what)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in providers.items()):
            raise ProtocolError("malformed HELLO: providers must map names to version strings")
        return cls(
            version=_field(body, "version", int, what),
            peer_id=_field(body, "peer_id", str, what),
            agent=_field(body, "agent", str, what)[:200],
            listen=_str_list(body, "listen", what),
            providers=providers,
            max_frame_size=_field(body, "max_frame_size", int, what),
            window=_field(body, "window", int, what),
            nonce=_field(body, "nonce", bytes, what)[:32],
        )


@dataclass(frozen=True)
class Open:
    """Body of an OPEN frame: which provider the stream is for, and a header."""

    provider: str
    header: dict = field(default_factory=dict)

    def encode(self) -> bytes:
        """The OPEN payload."""
        return pack({"provider": self.provider, "header": self.header})

    @classmethod
    def decode(cls, payload: bytes) -> Open:
        """Parse an OPEN payload."""
        body = unpack_map(payload, "OPEN")
        return cls(_field(body, "provider", str, "OPEN"), _field(body, "header", dict, "OPEN"))


@dataclass(frozen=True)
class Reason:
    """Body of RESET and GOAWAY frames: a machine code and a human reason."""

    code: str
    reason: str = ""

    def encode(self) -> bytes:
        """The payload."""
        return pack({"code": self.code, "reason": self.reason})

    @classmethod
    def decode(cls, payload: bytes, what: str) -> Reason:
        """Parse a RESET or GOAWAY payload."""
        body = unpack_map(payload, what)
        reason = body.get("reason", "")
        if not isinstance(reason, str):  # str() of a hostile value can recurse or be huge
            raise ProtocolError(f"malformed {what}: field 'reason' must be a string")
        return cls(_field(body, "code", str, what)[:64], reason[:500])

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}" if self.reason else self.code


@dataclass(frozen=True)
class Update:
    """Body of an UPDATE frame: the sender's current dialable addresses."""

    listen: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        """The UPDATE payload."""
        return pack({"listen": list(self.listen)})

    @classmethod
    def decode(cls, payload: bytes) -> Update:
        """Parse an UPDATE payload; unknown fields are ignored."""
        body = unpack_map(payload, "UPDATE")
        return cls(_str_list(body, "listen", "UPDATE")[:64])
