"""
The segment pipeline, pure (no I/O): encrypt each segment with AES-256-GCM,
erasure-code it with zfec into ``n`` blocks of which any ``k`` rebuild it,
and hash every block so each share can be verified on its own.

Segment ``i`` of the plaintext is encrypted under the store's fresh random
key with the 12-byte nonce ``i`` (big-endian) and associated data binding
the storage index, the segment count and the size, so a segment moved,
dropped or taken from another store fails to decrypt. The ciphertext
(plaintext + 16-byte tag) is zero-padded to a multiple of ``k`` and cut into
``k`` primary blocks; zfec adds ``n - k`` more. Block ``i`` of every share has
the same length.

Each share's block hashes are combined into a *share root*; the *URI
extension block* (UEB) lists every share root and a hash of the whole
ciphertext, and its hash is in the capability. Nothing in a share or the UEB
reveals the plaintext or the key.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import zfec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from peerd.providers.storage.capability import HASH_SIZE, check_encoding, storage_index
from peerd.wire.frames import ProtocolError
from peerd.wire.messages import pack, unpack_map

DEFAULT_SEGMENT_SIZE = 1 << 20
MAX_SEGMENT_SIZE = 8 << 20
TAG_SIZE = 16
UEB_VERSION = 1
MAX_UEB_SIZE = 16 * 1024

_BLOCK_TAG = b"peerd-storage-block-v1:"
_ROOT_TAG = b"peerd-storage-share-root-v1:"
_UEB_TAG = b"peerd-storage-ueb-v1:"
_AAD_TAG = b"peerd-storage-segment-v1:"
_BLOCK_ID = struct.Struct("!HI")


class IntegrityError(ValueError):
    """Data failed verification: a corrupt or forged block, share or UEB."""


@dataclass(frozen=True)
class Layout:
    """The shape of one store: sizes of segments and blocks."""

    size: int
    k: int
    n: int
    segment_size: int = DEFAULT_SEGMENT_SIZE

    def __post_init__(self) -> None:
        check_encoding(self.k, self.n)
        if not 1 <= self.segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment size {self.segment_size} out of range")
        if self.size < 0:
            raise ValueError("negative size")

    @property
    def segments(self) -> int:
        """At least one (an empty file is one empty segment)."""
        return max(1, -(-self.size // self.segment_size))

    def plain_length(self, seg: int) -> int:
        """Plaintext bytes in segment ``seg``."""
        if seg == self.segments - 1:
            return self.size - seg * self.segment_size
        return self.segment_size

    def cipher_length(self, seg: int) -> int:
        """Ciphertext bytes (with the GCM tag) in segment ``seg``."""
        return self.plain_length(seg) + TAG_SIZE

    def block_size(self, seg: int) -> int:
        """Bytes of each share's block ``seg``."""
        return -(-self.cipher_length(seg) // self.k)

    def blocks_size(self) -> int:
        """Bytes of all of one share's blocks."""
        full = self.block_size(0) if self.segments > 1 else 0
        return full * (self.segments - 1) + self.block_size(self.segments - 1)


def block_hash(shnum: int, seg: int, block: bytes) -> bytes:
    """The hash of block ``seg`` of share ``shnum`` (bound to both numbers)."""
    return hashlib.sha256(_BLOCK_TAG + _BLOCK_ID.pack(shnum, seg) + block).digest()


def share_root(shnum: int, hashes: list[bytes] | bytes) -> bytes:
    """The root of share ``shnum``: a hash over its block hashes, in order."""
    joined = hashes if isinstance(hashes, bytes) else b"".join(hashes)
    return hashlib.sha256(_ROOT_TAG + struct.pack("!H", shnum) + joined).digest()


@dataclass(frozen=True)
class UEB:
    """The URI extension block: what every share carries, verified by the capability."""

    layout: Layout
    roots: tuple[bytes, ...]
    crypttext_hash: bytes

    def encode(self) -> bytes:
        """Deterministic MessagePack."""
        lay = self.layout
        return pack(
            {
                "v": UEB_VERSION,
                "size": lay.size,
                "k": lay.k,
                "n": lay.n,
                "seg": lay.segment_size,
                "roots": list(self.roots),
                "crypt": self.crypttext_hash,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> UEB:
        """:raises IntegrityError: not a well-formed UEB."""
        if len(data) > MAX_UEB_SIZE:
            raise IntegrityError("UEB too large")
        try:
            m = unpack_map(data, "UEB")
            if m.get("v") != UEB_VERSION:
                raise IntegrityError(f"unsupported UEB version {m.get('v')!r}")
            layout = Layout(m["size"], m["k"], m["n"], m["seg"])
            roots = tuple(m["roots"])
            crypt = m["crypt"]
        except (ProtocolError, KeyError, TypeError, ValueError) as e:
            raise IntegrityError(f"malformed UEB: {e}") from None
        if len(roots) != layout.n or any(
            not isinstance(r, bytes) or len(r) != HASH_SIZE for r in roots
        ):
            raise IntegrityError("malformed UEB: wrong share roots")
        if not isinstance(crypt, bytes) or len(crypt) != HASH_SIZE:
            raise IntegrityError("malformed UEB: wrong ciphertext hash")
        return cls(layout, roots, crypt)

    def hash(self) -> bytes:
        """What the capability holds."""
        return ueb_hash(self.encode())


def ueb_hash(encoded: bytes) -> bytes:
    """The hash of an encoded UEB."""
    return hashlib.sha256(_UEB_TAG + encoded).digest()


def _aad(key: bytes, layout: Layout) -> bytes:
    return _AAD_TAG + storage_index(key) + struct.pack("!QQ", layout.segments, layout.size)


def _nonce(seg: int) -> bytes:
    return seg.to_bytes(12, "big")


class SegmentEncoder:
    """Encrypts and encodes the segments of one store, in order (one thread at a time)."""

    def __init__(self, key: bytes, layout: Layout) -> None:
        self.layout = layout
        self._aead = AESGCM(key)
        self._aad = _aad(key, layout)
        self._fec = zfec.Encoder(layout.k, layout.n)
        self._crypt = hashlib.sha256()
        self.hashes: list[list[bytes]] = [[] for _ in range(layout.n)]
        self.next_segment = 0

    def encode(self, plaintext: bytes) -> list[bytes]:
        """The ``n`` blocks of the next segment."""
        seg = self.next_segment
        if len(plaintext) != self.layout.plain_length(seg):
            raise ValueError(
                f"segment {seg} has {len(plaintext)} bytes, expected "
                f"{self.layout.plain_length(seg)}"
            )
        ciphertext = self._aead.encrypt(_nonce(seg), plaintext, self._aad)
        self._crypt.update(ciphertext)
        blocks = encode_ciphertext(self._fec, self.layout, seg, ciphertext)
        for shnum, block in enumerate(blocks):
            self.hashes[shnum].append(block_hash(shnum, seg, block))
        self.next_segment += 1
        return blocks

    def finish(self) -> UEB:
        """The UEB, once every segment is encoded."""
        if self.next_segment != self.layout.segments:
            raise ValueError("not every segment was encoded")
        roots = tuple(share_root(sh, h) for sh, h in enumerate(self.hashes))
        return UEB(self.layout, roots, self._crypt.digest())


def encode_ciphertext(
    fec: zfec.Encoder, layout: Layout, seg: int, ciphertext: bytes, wanted: list[int] | None = None
) -> list[bytes]:
    """Pad and cut ``ciphertext`` into ``k`` blocks; return the ``n`` (or ``wanted``) blocks."""
    size = layout.block_size(seg)
    padded = ciphertext + bytes(size * layout.k - len(ciphertext))
    view = memoryview(padded)
    primary = [bytes(view[i * size : (i + 1) * size]) for i in range(layout.k)]
    if wanted is None:
        return list(fec.encode(primary))
    return list(fec.encode(primary, wanted))


class SegmentDecoder:
    """Decodes, decrypts and verifies the segments of one retrieve (in order)."""

    def __init__(self, key: bytes, ueb: UEB) -> None:
        self.layout = ueb.layout
        self.ueb = ueb
        self._aead = AESGCM(key)
        self._aad = _aad(key, ueb.layout)
        self._fec = zfec.Decoder(self.layout.k, self.layout.n)
        self._crypt = hashlib.sha256()
        self.next_segment = 0

    def ciphertext(self, seg: int, blocks: Mapping[int, bytes]) -> bytes:
        """Rebuild segment ``seg``'s ciphertext from any ``k`` verified blocks."""
        chosen = sorted(blocks)[: self.layout.k]
        if len(chosen) < self.layout.k:
            raise ValueError(f"need {self.layout.k} blocks, got {len(chosen)}")
        primary = self._fec.decode([blocks[sh] for sh in chosen], chosen)
        return b"".join(primary)[: self.layout.cipher_length(seg)]

    def decode(self, blocks: Mapping[int, bytes]) -> bytes:
        """The plaintext of the next segment.

        :raises IntegrityError: it does not decrypt (wrong key, or forged data).
        """
        seg = self.next_segment
        ciphertext = self.ciphertext(seg, blocks)
        self._crypt.update(ciphertext)
        try:
            plaintext = self._aead.decrypt(_nonce(seg), ciphertext, self._aad)
        except InvalidTag:
            raise IntegrityError(f"segment {seg} failed to decrypt") from None
        self.next_segment += 1
        return plaintext

    def finish(self) -> None:
        """:raises IntegrityError: the whole ciphertext does not match the UEB's hash."""
        if self.next_segment != self.layout.segments:
            raise IntegrityError("not every segment was decoded")
        if self._crypt.digest() != self.ueb.crypttext_hash:
            raise IntegrityError("the ciphertext hash does not match the capability")


class Regenerator:
    """Rebuilds missing shares' blocks from any ``k`` verified blocks (repair; no key needed)."""

    def __init__(self, layout: Layout, wanted: list[int]) -> None:
        self.layout = layout
        self.wanted = sorted(wanted)
        self._dec = zfec.Decoder(layout.k, layout.n)
        self._enc = zfec.Encoder(layout.k, layout.n)
        self.hashes: dict[int, list[bytes]] = {sh: [] for sh in self.wanted}

    def regenerate(self, seg: int, blocks: Mapping[int, bytes]) -> dict[int, bytes]:
        """The wanted shares' block ``seg``."""
        chosen = sorted(blocks)[: self.layout.k]
        primary = list(self._dec.decode([blocks[sh] for sh in chosen], chosen))
        out = dict(zip(self.wanted, self._enc.encode(primary, self.wanted), strict=True))
        for sh, block in out.items():
            self.hashes[sh].append(block_hash(sh, seg, block))
        return out
