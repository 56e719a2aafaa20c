"""The share file format and the share files on disk."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from peerd.providers.storage.codec import Layout, SegmentEncoder
from peerd.providers.storage.share_files import (
    CorruptShare,
    ShareFiles,
    ShareRefused,
    read_info,
    verify_file,
    verify_stream,
)

SI = "0123456789abcdef0123456789abcdef"


def _encoded(size: int = 700, k: int = 2, n: int = 3, seg: int = 256):
    layout = Layout(size, k, n, seg)
    enc = SegmentEncoder(os.urandom(32), layout)
    data = os.urandom(size)
    blocks = [
        enc.encode(data[s * seg : s * seg + layout.plain_length(s)]) for s in range(layout.segments)
    ]
    ueb = enc.finish()
    return layout, blocks, ueb, enc.hashes


def _write_share(files: ShareFiles, sh: int = 1, **kw: int) -> Path:
    layout, blocks, ueb, hashes = _encoded(**kw)
    writer = files.writer(SI, sh, 1 << 20)
    for s, row in enumerate(blocks):
        writer.write_block(s, row[sh])
    writer.commit(ueb.encode(), b"".join(hashes[sh]))
    return files.share_path(SI, sh)


def test_written_share_verifies_and_reads(tmp_path: Path) -> None:
    """A committed share passes the full check; blocks read back verified."""
    files = ShareFiles(tmp_path)
    path = _write_share(files)
    info = verify_file(path)
    assert info.shnum == 1 and info.layout.segments == 3
    assert files.read_block(SI, 1, 2)
    assert not list(files.incoming_dir.iterdir())


def test_every_flipped_bit_is_caught(tmp_path: Path) -> None:
    """Flipping any single bit anywhere in a share file fails its integrity check."""
    files = ShareFiles(tmp_path)
    path = _write_share(files, size=40, k=2, n=3, seg=32)
    original = path.read_bytes()
    verify_stream(io.BytesIO(original))
    for i in range(len(original)):
        for bit in range(8):
            damaged = bytearray(original)
            damaged[i] ^= 1 << bit
            with pytest.raises(CorruptShare):
                verify_stream(io.BytesIO(damaged))
    path.write_bytes(original[:100] + bytes([original[100] ^ 4]) + original[101:])
    with pytest.raises(CorruptShare):
        verify_file(path)


def test_truncated_share_is_corrupt(tmp_path: Path) -> None:
    """A share cut short (as by a crash without the temp+rename) fails."""
    files = ShareFiles(tmp_path)
    path = _write_share(files)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptShare):
            read_info(path)


def test_commit_refuses_lies(tmp_path: Path) -> None:
    """Hashes that do not match the blocks, or out-of-order blocks, are refused."""
    files = ShareFiles(tmp_path)
    layout, blocks, ueb, hashes = _encoded()
    writer = files.writer(SI, 0, 1 << 20)
    with pytest.raises(ShareRefused, match="out of order"):
        writer.write_block(1, blocks[1][0])
    for s, row in enumerate(blocks):
        writer.write_block(s, row[0])
    with pytest.raises(ShareRefused, match="block hashes"):
        writer.commit(ueb.encode(), b"".join(hashes[1]))
    writer.abort()
    assert not files.share_path(SI, 0).exists()
    small = files.writer(SI, 0, 10)
    with pytest.raises(ShareRefused, match="allocation"):
        small.write_block(0, blocks[0][0])
    small.abort()


def test_names_are_validated(tmp_path: Path) -> None:
    """Storage indexes are 32 hex digits and share numbers 0..254: no path traversal."""
    files = ShareFiles(tmp_path)
    for bad in ("../../../../etc/passwd", SI.upper(), SI[:-1], SI + "0", "/" + SI[1:]):
        with pytest.raises(ValueError):
            files.share_path(bad, 0)
    for bad_sh in (-1, 255, "1", True, 1.0):
        with pytest.raises(ValueError):
            files.share_path(SI, bad_sh)  # type: ignore[arg-type]


def test_interrupted_write_leaves_no_share(tmp_path: Path) -> None:
    """A share never committed (the writer killed mid-way) is gone after a restart's scan."""
    files = ShareFiles(tmp_path)
    layout, blocks, ueb, hashes = _encoded()
    writer = files.writer(SI, 2, 1 << 20)
    writer.write_block(0, blocks[0][2])
    records, removed = ShareFiles(tmp_path).scan()
    assert removed == 1 and records == {}
    assert not files.share_path(SI, 2).exists()
