"""Tests for peerd.providers.files.download.partial."""

import errno
import json
import os
import shutil

import pytest
from twisted.logger import capturedLogs, formatEvent

from peerd.providers.files.content import ContentID, FileEntry, Manifest
from peerd.providers.files.download import partial
from peerd.providers.files.download.partial import (
    DestinationExists,
    DestinationUnwritable,
    DiskFull,
    DownloadError,
    PartialDownload,
    UnsafePath,
    prepare_target,
)
from peerd.providers.files.merkle import MerkleTree, leaf_hash

BS = 16 * 1024


def data(n: int, seed: int = 0) -> bytes:
    return bytes((i * 13 + seed) % 251 for i in range(n))


def entry(path: tuple, content: bytes) -> FileEntry:
    leaves = [leaf_hash(content[i : i + BS]) for i in range(0, len(content), BS)]
    return FileEntry(path, len(content), MerkleTree(leaves or [leaf_hash(b"")]).root, BS)


def single(content: bytes, name: str = "file.bin") -> tuple[Manifest, list[bytes]]:
    return Manifest(name, "file", (entry((), content),)), [content]


def tree(files: dict) -> tuple[Manifest, list[bytes]]:
    paths = sorted(files)
    return Manifest("tree", "dir", tuple(entry(p, files[p]) for p in paths)), [
        files[p] for p in paths
    ]


def block(manifest: Manifest, contents: list[bytes], index: int) -> bytes:
    file_index, _, offset, length = manifest.locate(index)
    return contents[file_index][offset : offset + length]


def start(tmp_path, manifest, destination=None, force=False) -> PartialDownload:
    destination = destination or tmp_path / "out"
    return PartialDownload(
        tmp_path / "state", ContentID.for_manifest(manifest), manifest, destination, force
    )


def fill(download: PartialDownload, contents: list[bytes]) -> None:
    for i in download.missing():
        download.write_block(i, block(download.manifest, contents, i))


def tamper_path(manifest: Manifest, file_index: int, path: tuple) -> Manifest:
    """Put a path the constructors would refuse into a manifest (the second line of defence)."""
    object.__setattr__(manifest.files[file_index], "path", path)
    return manifest


def test_resume_keeps_exactly_the_checkpointed_blocks(tmp_path):
    """
    Blocks written out of order and checkpointed survive a crash; blocks
    written after the last checkpoint are not claimed after the restart.
    """
    manifest, contents = single(data(10 * BS + 5))
    download = start(tmp_path, manifest)
    for i in (7, 2, 10, 0):
        download.write_block(i, block(manifest, contents, i))
    assert download.have == {0, 2, 7, 10}
    assert download.checkpoint() is True
    assert download.checkpoint() is False
    for i in (3, 4):
        download.write_block(i, block(manifest, contents, i))
    assert download.has(3)
    del download  # "kill -9": no checkpoint

    [resumed] = PartialDownload.resume_all(tmp_path / "state")
    assert resumed.have == {0, 2, 7, 10}
    assert resumed.cid == ContentID.for_manifest(manifest)
    assert resumed.destination == tmp_path / "out"
    assert resumed.remaining_bytes == len(contents[0]) - 3 * BS - 5
    assert resumed.read_block(7) == block(manifest, contents, 7)
    assert resumed.read_block(3) is None
    # asking again for the same content keeps what was verified
    again = start(tmp_path, manifest)
    assert again.have == {0, 2, 7, 10}


def test_finalize_single_file(tmp_path):
    """A single-file download lands byte-exact, only when finalized, and its state is gone."""
    manifest, contents = single(data(3 * BS + 77))
    (tmp_path / "dest").mkdir()
    download = start(tmp_path, manifest, tmp_path / "dest" / "got.bin")
    fill(download, contents)
    assert download.complete
    assert not (tmp_path / "dest" / "got.bin").exists()
    assert download.finalize() == tmp_path / "dest" / "got.bin"
    assert (tmp_path / "dest" / "got.bin").read_bytes() == contents[0]
    assert os.listdir(tmp_path / "dest") == ["got.bin"]
    assert not download.directory.exists()
    assert PartialDownload.resume_all(tmp_path / "state") == []


def test_finalize_nested_directory(tmp_path):
    """A directory download is built aside and renamed into place, byte-exact, empty files too."""
    files = {
        ("a.txt",): data(BS + 1, 1),
        ("deep", "er", "b.bin"): data(2 * BS, 2),
        ("deep", "empty"): b"",
        ("z",): data(5, 3),
    }
    manifest, contents = tree(files)
    download = start(tmp_path, manifest)
    empty = [e.path for e in manifest.files].index(("deep", "empty"))
    assert download.has(manifest.file_blocks(empty)[0])  # an empty file needs no data
    for i in reversed(download.missing()):
        download.write_block(i, block(manifest, contents, i))
        assert not (tmp_path / "out").exists()
    download.checkpoint()
    before = set(os.listdir(tmp_path))
    out = download.finalize()
    assert set(os.listdir(tmp_path)) == before | {"out"}  # no temporary left behind
    for path, content in files.items():
        assert out.joinpath(*path).read_bytes() == content
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "a.txt",
        "deep/empty",
        "deep/er/b.bin",
        "z",
    ]


def test_finalize_across_file_systems(tmp_path, monkeypatch):
    """When renaming out of the state directory fails with EXDEV, the data is copied instead."""
    state = str(tmp_path / "state")
    real_link, real_rename, real_replace = os.link, os.rename, os.replace

    def cross_device(real):
        def move(src, dst, *args, **kwargs):
            if str(src).startswith(state) and not str(dst).startswith(state):
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            return real(src, dst, *args, **kwargs)

        return move

    monkeypatch.setattr(partial.os, "link", cross_device(real_link))
    monkeypatch.setattr(partial.os, "rename", cross_device(real_rename))
    monkeypatch.setattr(partial.os, "replace", cross_device(real_replace))

    manifest, contents = single(data(2 * BS + 1))
    download = start(tmp_path, manifest)
    fill(download, contents)
    assert download.finalize().read_bytes() == contents[0]

    dir_manifest, dir_contents = tree({("d", "x"): data(BS), ("y",): b"y"})
    dir_download = start(tmp_path, dir_manifest, tmp_path / "tree", force=True)
    fill(dir_download, dir_contents)
    out = dir_download.finalize()
    assert (out / "d" / "x").read_bytes() == dir_contents[0]
    assert (out / "y").read_bytes() == b"y"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]
    assert not (tmp_path / "state" / "downloads").exists() or not os.listdir(
        tmp_path / "state" / "downloads"
    )


def test_finalize_refuses_incomplete(tmp_path):
    """Finalizing with blocks missing is an error that names the count."""
    manifest, contents = single(data(2 * BS))
    download = start(tmp_path, manifest)
    download.write_block(0, block(manifest, contents, 0))
    with pytest.raises(DownloadError, match="1 of 2 blocks"):
        download.finalize()


def test_existing_destination_refused_without_force(tmp_path):
    """An existing destination is refused at creation, and at the end if it appeared meanwhile."""
    manifest, contents = single(data(BS))
    (tmp_path / "out").write_bytes(b"mine")
    with pytest.raises(DestinationExists, match="out exists"):
        start(tmp_path, manifest)
    os.unlink(tmp_path / "out")
    download = start(tmp_path, manifest)
    fill(download, contents)
    (tmp_path / "out").mkdir()
    with pytest.raises(DestinationExists):
        download.finalize()
    assert (tmp_path / "out").is_dir()
    os.rmdir(tmp_path / "out")
    assert download.finalize().read_bytes() == contents[0]  # the data was kept

    dir_manifest, dir_contents = tree({("x",): b"x", ("y", "z"): data(BS + 3)})
    dir_download = start(tmp_path, dir_manifest, tmp_path / "tree")
    fill(dir_download, dir_contents)
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "keep").write_bytes(b"keep")
    with pytest.raises(DestinationExists):
        dir_download.finalize()
    assert os.listdir(tmp_path / "tree") == ["keep"]
    assert dir_download.complete and dir_download.read_block(1) == dir_contents[1][:BS]


def test_force_replaces_destination(tmp_path):
    """With force, an existing file or directory is replaced by the download."""
    manifest, contents = single(data(BS + 9))
    (tmp_path / "out").write_bytes(b"old")
    download = start(tmp_path, manifest, force=True)
    fill(download, contents)
    assert download.finalize().read_bytes() == contents[0]

    dir_manifest, dir_contents = tree({("new",): b"new"})
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "old").write_bytes(b"old")
    dir_download = start(tmp_path, dir_manifest, tmp_path / "tree", force=True)
    fill(dir_download, dir_contents)
    dir_download.finalize()
    assert os.listdir(tmp_path / "tree") == ["new"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


@pytest.mark.parametrize(
    "bad",
    [("..", "etc", "passwd"), ("a", ".."), ("/etc",), ("a", ""), ("nul\0",), ("a/b",), ()],
)
def test_unsafe_manifest_paths_refused(tmp_path, bad):
    """A directory manifest path with '..', '/', NUL or an empty part is refused up front."""
    manifest, _ = tree({("a",): b"a", ("b",): b"b"})
    manifest = tamper_path(manifest, 1, bad)
    with pytest.raises(UnsafePath, match="unsafe path"):
        start(tmp_path, manifest)
    assert not (tmp_path / "out").exists()


def test_symlink_in_the_tree_is_refused(tmp_path):
    """A symbolic link planted as an intermediate directory of the tree is refused."""
    root = tmp_path / "tmp-tree"
    root.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, root / "sub")
    with pytest.raises(UnsafePath, match="symbolic link"):
        prepare_target(root, ("sub", "file"))
    (root / "plain").write_bytes(b"")
    with pytest.raises(UnsafePath, match="not a directory"):
        prepare_target(root, ("plain", "file"))
    with pytest.raises(UnsafePath, match="already exists"):
        prepare_target(root, ("plain",))
    assert prepare_target(root, ("new", "dir", "f")) == root / "new" / "dir" / "f"
    assert (root / "new" / "dir").is_dir()
    assert os.listdir(outside) == []


def test_cancel_removes_partial_data(tmp_path):
    """cancel() deletes the partial files and the state; nothing is resumed afterwards."""
    manifest, contents = single(data(2 * BS))
    download = start(tmp_path, manifest)
    download.write_block(1, block(manifest, contents, 1))
    download.checkpoint()
    download.cancel()
    assert not download.directory.exists()
    assert PartialDownload.resume_all(tmp_path / "state") == []
    assert not (tmp_path / "out").exists()


def test_disk_full_while_writing(tmp_path, monkeypatch):
    """ENOSPC while writing a block is DiskFull naming the file, and the block is not held."""
    manifest, contents = single(data(2 * BS))
    download = start(tmp_path, manifest)

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwritev", full)  # writes through the page cache
    monkeypatch.setattr(os, "pwrite", full)  # direct writes
    with pytest.raises(DiskFull, match=r"no space left on device while writing .*data/0"):
        download.write_block(0, block(manifest, contents, 0))
    assert not download.has(0)


def test_not_enough_space_refused_early(tmp_path):
    """A download bigger than the free space is refused at creation, with the numbers."""
    huge = 9_000_000 * 8 * 1024 * 1024
    if shutil.disk_usage(tmp_path).free >= huge:
        pytest.skip("this disk is too big")
    manifest = Manifest("huge", "file", (FileEntry((), huge, bytes(32), 8 * 1024 * 1024),))
    with pytest.raises(DiskFull, match=f"needs {huge} more bytes .* but only"):
        start(tmp_path, manifest)


def test_destination_directory_must_exist(tmp_path):
    """A destination whose parent directory does not exist is refused at creation."""
    manifest, _ = single(b"x")
    with pytest.raises(DestinationUnwritable, match="is not a directory"):
        start(tmp_path, manifest, tmp_path / "missing" / "out")


def test_block_checks(tmp_path):
    """Out-of-range indexes and wrong-length blocks are refused."""
    manifest, contents = single(data(BS + 1))
    download = start(tmp_path, manifest)
    with pytest.raises(IndexError):
        download.write_block(2, b"")
    with pytest.raises(ValueError, match="1 bytes"):
        download.write_block(1, b"xx")
    with pytest.raises(IndexError):
        download.read_block(-1)


def test_damaged_state_is_skipped_and_kept(tmp_path):
    """A download with an unreadable state is logged and skipped; its data stays on disk."""
    manifest, contents = single(data(2 * BS))
    good = start(tmp_path, manifest)
    other_manifest, _ = single(data(BS, 5), "other")
    bad = start(tmp_path, other_manifest, tmp_path / "other")
    (bad.directory / "state").write_bytes(b"{broken")
    wrong = tmp_path / "state" / "downloads" / "not-a-cid"
    wrong.mkdir()
    (wrong / "state").write_text(json.dumps({"version": 1}))

    with capturedLogs() as events:
        [resumed] = PartialDownload.resume_all(tmp_path / "state")
    assert resumed.cid == good.cid
    assert len([e for e in events if "skipping download" in formatEvent(e)]) == 2
    assert (bad.directory / "data" / "0").exists()
