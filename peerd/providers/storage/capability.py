"""
Capabilities: the one printable string that finds, decrypts and verifies
stored data (see ``docs/protocol.rst``, "Storage provider", "Capability").

::

    pdcap1-<base32 of: key(32) ueb_hash(32) k(1) n(1) size(8) checksum(4)>

The storage index that servers see is derived from the key by a hash, so
holding shares tells a server nothing it could decrypt with.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

PREFIX = "pdcap1-"
KEY_SIZE = 32
HASH_SIZE = 32
INDEX_SIZE = 16
INDEX_HEX_LENGTH = INDEX_SIZE * 2
CHECKSUM_SIZE = 4
MAX_SHARES = 255
_BODY = struct.Struct("!32s32sBBQ")
_INDEX_TAG = b"peerd-storage-index-v1:"
_CHECK_TAG = b"peerd-capability-checksum-v1:"


class InvalidCapability(ValueError):
    """Not a capability: wrong prefix, alphabet, length, checksum or parameters."""


def storage_index(key: bytes) -> bytes:
    """The 16-byte index under which servers file the shares of data encrypted with ``key``."""
    return hashlib.sha256(_INDEX_TAG + key).digest()[:INDEX_SIZE]


def _checksum(body: bytes) -> bytes:
    return hashlib.sha256(_CHECK_TAG + body).digest()[:CHECKSUM_SIZE]


def check_encoding(k: int, n: int) -> None:
    """:raises ValueError: unless ``1 <= k <= n <= 255``."""
    if not 1 <= k <= n <= MAX_SHARES:
        raise ValueError(f"need 1 <= needed ({k}) <= total ({n}) <= {MAX_SHARES}")


@dataclass(frozen=True)
class Capability:
    """Everything needed to retrieve: the key, the UEB hash, ``k``, ``n`` and the size."""

    key: bytes
    ueb_hash: bytes
    k: int
    n: int
    size: int

    def __post_init__(self) -> None:
        if len(self.key) != KEY_SIZE or len(self.ueb_hash) != HASH_SIZE:
            raise InvalidCapability("a capability holds a 32-byte key and a 32-byte hash")
        try:
            check_encoding(self.k, self.n)
        except ValueError as e:
            raise InvalidCapability(str(e)) from None
        if not 0 <= self.size < 1 << 63:
            raise InvalidCapability(f"size {self.size} out of range")

    @property
    def storage_index(self) -> bytes:
        """The 16-byte storage index."""
        return storage_index(self.key)

    @property
    def index_hex(self) -> str:
        """The storage index as 32 lowercase hex digits (share directory names)."""
        return self.storage_index.hex()

    def __str__(self) -> str:
        body = _BODY.pack(self.key, self.ueb_hash, self.k, self.n, self.size)
        text = base64.b32encode(body + _checksum(body)).decode("ascii").rstrip("=").lower()
        return PREFIX + text

    def __repr__(self) -> str:
        return f"Capability(k={self.k}, n={self.n}, size={self.size}, index={self.index_hex})"

    @classmethod
    def parse(cls, text: str) -> Capability:
        """
        Parse the printed form (case-insensitive, surrounding space ignored).

        :raises InvalidCapability: with what is wrong; a typo fails the checksum.
        """
        if not isinstance(text, str):
            raise InvalidCapability("a capability is a string")
        compact = text.strip().lower()
        if not compact.startswith(PREFIX):
            if compact.startswith("pdcap"):
                raise InvalidCapability(
                    f"unsupported capability version {compact.split('-', 1)[0]!r} "
                    f"(this peer reads {PREFIX[:-1]!r})"
                )
            raise InvalidCapability(f"not a capability: expected it to start with {PREFIX!r}")
        encoded = compact[len(PREFIX) :].upper()
        expected = -(-(_BODY.size + CHECKSUM_SIZE) * 8 // 5)
        if len(encoded) != expected:
            raise InvalidCapability(
                f"not a capability: expected {expected} base32 characters after {PREFIX!r}, "
                f"got {len(encoded)}"
            )
        try:
            raw = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
        except ValueError:
            raise InvalidCapability("not a capability: not base32 (a-z, 2-7)") from None
        body, checksum = raw[: _BODY.size], raw[_BODY.size :]
        if _checksum(body) != checksum:
            raise InvalidCapability("capability checksum mismatch (a typo?)")
        key, ueb_hash, k, n, size = _BODY.unpack(body)
        cap = cls(key, ueb_hash, k, n, size)
        if str(cap) != compact:  # non-zero padding bits in the last character
            raise InvalidCapability("capability checksum mismatch (a typo?)")
        return cap


def parse_index(text: object) -> bytes | None:
    """A storage index from its 32 lowercase hex digits, or None if it is not one."""
    if not isinstance(text, str) or len(text) != INDEX_HEX_LENGTH:
        return None
    if any(c not in "0123456789abcdef" for c in text):
        return None
    return bytes.fromhex(text)
