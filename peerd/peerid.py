"""
PeerIDs and peer addresses.

A PeerID is the SHA-256 digest of a peer's public key (SubjectPublicKeyInfo,
DER), truncated to 20 bytes, followed by a 2-byte checksum; the 22 bytes are
written in RFC 4648 base32 (36 characters) in six groups of six joined by
dashes.  Parsing ignores case and dashes and rejects a wrong checksum, so a
typo is caught rather than dialled.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

DIGEST_SIZE = 20
_CHECKSUM_SIZE = 2
_TEXT_LENGTH = 36
_GROUP = 6
_DIGEST_DOMAIN = b"peerd-peer-id-v1\x00"
_CHECKSUM_DOMAIN = b"peerd-peer-id-checksum\x00"


class InvalidPeerID(ValueError):
    """A string is not a well-formed PeerID."""


class InvalidAddress(ValueError):
    """A string is not a well-formed peer address."""


def _checksum(digest: bytes) -> bytes:
    return hashlib.sha256(_CHECKSUM_DOMAIN + digest).digest()[:_CHECKSUM_SIZE]


@dataclass(frozen=True, order=True)
class PeerID:
    """A peer's identity: a digest of its public key."""

    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != DIGEST_SIZE:
            raise InvalidPeerID(f"a PeerID digest has {DIGEST_SIZE} bytes, not {len(self.digest)}")

    @classmethod
    def from_public_key_der(cls, spki_der: bytes) -> PeerID:
        """Derive the PeerID of a DER-encoded SubjectPublicKeyInfo."""
        return cls(hashlib.sha256(_DIGEST_DOMAIN + spki_der).digest()[:DIGEST_SIZE])

    @classmethod
    def parse(cls, text: str) -> PeerID:
        """
        Parse the printed form: case-insensitive, dashes optional.

        :raises InvalidPeerID: wrong length, alphabet or checksum.
        """
        compact = text.strip().replace("-", "").upper()
        if len(compact) != _TEXT_LENGTH:
            raise InvalidPeerID(
                f"{text!r} is not a PeerID: expected {_TEXT_LENGTH} base32 characters, "
                f"got {len(compact)}"
            )
        try:
            raw = base64.b32decode(compact + "=" * 4)
        except ValueError:
            raise InvalidPeerID(f"{text!r} is not a PeerID: not base32 (A-Z, 2-7)") from None
        digest, checksum = raw[:DIGEST_SIZE], raw[DIGEST_SIZE:]
        if _checksum(digest) != checksum:
            raise InvalidPeerID(f"{text!r} is not a PeerID: checksum mismatch (a typo?)")
        peer_id = cls(digest)
        if str(peer_id).replace("-", "") != compact:  # non-zero padding bits in the last character
            raise InvalidPeerID(f"{text!r} is not a PeerID: checksum mismatch (a typo?)")
        return peer_id

    def __str__(self) -> str:
        text = base64.b32encode(self.digest + _checksum(self.digest)).decode("ascii")
        text = text.rstrip("=")
        return "-".join(text[i : i + _GROUP] for i in range(0, _TEXT_LENGTH, _GROUP))

    def __repr__(self) -> str:
        return f"PeerID({str(self)!r})"

    @property
    def short(self) -> str:
        """The first group, for logs and tables."""
        return str(self)[:_GROUP]


_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:@\[\]]+)):(?P<port>\d{1,5})$"
)


@dataclass(frozen=True)
class PeerAddress:
    """
    ``PEERID@host:port``, ``host:port`` (the PeerID then learnt on dial), or
    a relayed address ``PEERID@RELAYID@host:port``: the peer reached through
    a circuit on the relay at ``host:port`` (``relay_id``).
    """

    host: str
    port: int
    peer_id: PeerID | None = None
    relay_id: PeerID | None = None

    @classmethod
    def parse(cls, text: str) -> PeerAddress:
        """
        Parse ``[PEERID@[RELAYID@]]host:port``; IPv6 hosts go in brackets.

        :raises InvalidAddress: with the reason.
        """
        text = text.strip()
        ids = []
        while "@" in text:
            id_text, _, text = text.partition("@")
            try:
                ids.append(PeerID.parse(id_text))
            except InvalidPeerID as e:
                raise InvalidAddress(str(e)) from None
        if len(ids) > 2:
            raise InvalidAddress("an address has at most two PeerIDs (PEERID@RELAYID@host:port)")
        peer_id = ids[0] if ids else None
        relay_id = ids[1] if len(ids) == 2 else None
        match = _HOST_PORT.match(text)
        if match is None:
            raise InvalidAddress(f"{text!r} is not host:port (IPv6 as [addr]:port)")
        port = int(match["port"])
        if not 0 < port < 65536:
            raise InvalidAddress(f"port {port} is out of range 1-65535")
        return cls(match["v6"] or match["host"], port, peer_id, relay_id)

    @property
    def host_port(self) -> str:
        """``host:port``, with brackets for IPv6."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def client_endpoint_string(self) -> str:
        """The Twisted client endpoint string for a plain TCP dial."""
        host = self.host.replace(":", r"\:")
        return f"tcp:host={host}:port={self.port}"

    def with_peer_id(self, peer_id: PeerID) -> PeerAddress:
        """The same address pinned to ``peer_id``."""
        return PeerAddress(self.host, self.port, peer_id, self.relay_id)

    @property
    def relay(self) -> PeerAddress | None:
        """For a relayed address, the relay's own address; else None."""
        if self.relay_id is None:
            return None
        return PeerAddress(self.host, self.port, self.relay_id)

    def __str__(self) -> str:
        prefix = f"{self.peer_id}@" if self.peer_id is not None else ""
        if self.relay_id is not None:
            prefix += f"{self.relay_id}@"
        return prefix + self.host_port
