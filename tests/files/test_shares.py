"""Tests for peerd.providers.files.upload.share_index."""

import json
import os
import time

from twisted.logger import capturedLogs, formatEvent

from peerd.providers.files.content import ContentID
from peerd.providers.files.merkle import MerkleTree, leaf_hash
from peerd.providers.files.upload import share_index
from peerd.providers.files.upload.hashing import manifest_for_path
from peerd.providers.files.upload.share_index import ShareIndex
from peerd.providers.files.upload.trust import BlockTrust

BLOCK = 256 * 1024  # what manifest_for_path picks for small shares


class CountingHasher:
    """``manifest_for_path``, counting the paths it is asked to hash."""

    def __init__(self):
        self.calls = []

    def __call__(self, path, progress=None):
        self.calls.append(path)
        return manifest_for_path(path, progress)


def data(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


def make_tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(data(BLOCK + 10, 1))
    (root / "sub" / "b.bin").write_bytes(data(2 * BLOCK + 3, 2))
    (root / "sub" / "empty").write_bytes(b"")
    return root


def test_add_file_creates_persisted_record(tmp_path):
    """Adding a file gives a record (ID, manifest, absolute path, leaves) kept in shares/."""
    source = tmp_path / "big.bin"
    source.write_bytes(data(3 * BLOCK + 5))
    index = ShareIndex(tmp_path / "state")
    index.load()
    record = index.add(source)
    assert record.cid == ContentID.for_manifest(record.manifest)
    assert record.path == source and record.path.is_absolute()
    assert record.manifest.block_count == 4 and len(record.leaves[0]) == 4
    assert record.status == "sharing" and record.changed == set()
    assert index.get(record.cid) is record and index.get(str(record.cid)) is record
    assert index.all() == [record]
    again = ShareIndex(tmp_path / "state")
    [loaded] = again.load()
    assert (loaded.cid, loaded.manifest, loaded.leaves, loaded.signatures) == (
        record.cid,
        record.manifest,
        record.leaves,
        record.signatures,
    )


def test_restart_does_not_rehash_unchanged_files(tmp_path):
    """After a restart, adding the same unchanged path reuses the record without hashing."""
    share = make_tree(tmp_path / "share")
    hasher = CountingHasher()
    first = ShareIndex(tmp_path / "state", hasher=hasher)
    first.load()
    record = first.add(share)
    assert len(hasher.calls) == 1

    restarted = ShareIndex(tmp_path / "state", hasher=hasher)
    restarted.load()
    again = restarted.add(share)
    assert len(hasher.calls) == 1
    assert again.cid == record.cid
    assert restarted.read_block(record.cid, 0) is not None


def test_changed_size_mtime_or_new_file_rehashes(tmp_path):
    """A changed size, mtime or a new file in a shared directory means hashing again."""
    share = make_tree(tmp_path / "share")
    hasher = CountingHasher()
    index = ShareIndex(tmp_path / "state", hasher=hasher)
    index.load()
    original = index.add(share)

    st = os.stat(share / "a.bin")
    os.utime(share / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    same_content = index.add(share)
    assert len(hasher.calls) == 2
    assert same_content.cid == original.cid  # same bytes, same ID, fresh signatures
    index.add(share)
    assert len(hasher.calls) == 2

    (share / "sub" / "new.txt").write_bytes(b"new")
    grown = index.add(share)
    assert len(hasher.calls) == 3
    assert grown.cid != original.cid
    assert index.get(original.cid) is None  # the stale content is no longer offered
    assert [r.cid for r in index.all()] == [grown.cid]

    with (share / "a.bin").open("ab") as f:
        f.write(b"more")
    assert index.add(share).cid != grown.cid
    assert len(hasher.calls) == 4


def test_read_block_returns_verified_data_and_proof(tmp_path):
    """Every block comes back with a proof that verifies against its file's Merkle root."""
    share = make_tree(tmp_path / "share")
    index = ShareIndex(tmp_path / "state")
    index.load()
    record = index.add(share)
    manifest = record.manifest
    for i in range(manifest.block_count):
        file_index, block, offset, length = manifest.locate(i)
        entry = manifest.files[file_index]
        expected = share.joinpath(*entry.path).read_bytes()[offset : offset + length]
        result = index.read_block(record.cid, i)
        assert result is not None
        block_data, proof = result
        assert block_data == expected
        assert MerkleTree.verify(entry.root, block, leaf_hash(block_data), proof, entry.block_count)
    assert index.read_block(record.cid, manifest.block_count) is None
    assert index.read_block(record.cid, -1) is None
    assert index.read_block("pd1unknown", 0) is None


def test_bytes_changed_behind_our_back_are_not_served(tmp_path):
    """
    Bytes changed in place with size and mtime restored pass the stat check
    but fail the leaf hash: the block is refused, the file is marked
    changed (also after a restart) and the status says so; the other files
    are still served, and adding the path again hashes it afresh.
    """
    share = make_tree(tmp_path / "share")
    hasher = CountingHasher()
    index = ShareIndex(tmp_path / "state", hasher=hasher)
    index.load()
    record = index.add(share)
    target = share / "sub" / "b.bin"
    st = os.stat(target)
    with target.open("r+b") as f:
        f.seek(BLOCK + 1)
        f.write(b"X")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    b_index = [e.path for e in record.manifest.files].index(("sub", "b.bin"))
    b_blocks = record.manifest.file_blocks(b_index)

    with capturedLogs() as events:
        assert index.read_block(record.cid, b_blocks[1]) is None
    assert any("changed on disk" in formatEvent(e) for e in events)
    assert record.changed == {b_index}
    assert record.status == "changed on disk: 1 file; those blocks are not served"
    assert index.read_block(record.cid, b_blocks[0]) is None  # the whole file is distrusted
    assert index.read_block(record.cid, 0) is not None  # a.bin is fine

    restarted = ShareIndex(tmp_path / "state", hasher=hasher)
    [loaded] = restarted.load()
    assert loaded.changed == {b_index}
    assert restarted.read_block(record.cid, b_blocks[0]) is None

    fresh = restarted.add(share)
    assert len(hasher.calls) == 2
    assert fresh.cid != record.cid and fresh.status == "sharing"


def test_stat_change_is_caught_before_reading(tmp_path):
    """A shared file that was replaced (new inode) or truncated is not served."""
    source = tmp_path / "f.bin"
    source.write_bytes(data(BLOCK * 2))
    index = ShareIndex(tmp_path / "state")
    index.load()
    record = index.add(source)
    replacement = tmp_path / "g.bin"
    replacement.write_bytes(source.read_bytes())
    os.replace(replacement, source)
    assert index.read_block(record.cid, 0) is None
    assert record.changed == {0}
    assert "1 file;" in record.status


def test_damaged_records_are_skipped(tmp_path):
    """Unreadable or inconsistent record files are logged and skipped, never fatal."""
    source = tmp_path / "f.bin"
    source.write_bytes(data(BLOCK + 1))
    index = ShareIndex(tmp_path / "state")
    index.load()
    good = index.add(source)
    shares = tmp_path / "state" / "shares"
    good_text = (shares / f"{good.cid}.share").read_text()
    (shares / "garbage.share").write_bytes(b"\x00not json")
    other = ShareIndex(tmp_path / "x")
    other.load()
    source2 = tmp_path / "g.bin"
    source2.write_bytes(data(BLOCK + 1, 9))
    bad = other.add(source2)
    # a record whose leaves do not rebuild its root
    tampered = (tmp_path / "x" / "shares" / f"{bad.cid}.share").read_text()
    leaves_b64 = json.loads(tampered)["leaves"][0]
    tampered = tampered.replace(leaves_b64, "A" * len(leaves_b64))
    (shares / f"{bad.cid}.share").write_text(tampered)
    (shares / "wrong-name.share").write_text(good_text)

    restarted = ShareIndex(tmp_path / "state")
    with capturedLogs() as events:
        loaded = restarted.load()
    assert [r.cid for r in loaded] == [good.cid]
    messages = [formatEvent(e) for e in events]
    assert len([m for m in messages if "skipping unreadable share record" in m]) == 3
    assert (shares / "garbage.share").exists()  # kept for a human to look at


def test_remove_forgets_the_share(tmp_path):
    """remove() drops the record and its file; blocks are no longer served."""
    source = tmp_path / "f.bin"
    source.write_bytes(b"hello")
    index = ShareIndex(tmp_path / "state")
    index.load()
    record = index.add(source)
    assert index.remove(record.cid) is True
    assert index.remove(record.cid) is False
    assert index.get(record.cid) is None
    assert index.read_block(record.cid, 0) is None
    assert list((tmp_path / "state" / "shares").iterdir()) == []
    assert ShareIndex(tmp_path / "state").load() == []


def test_hash_progress_is_passed_through(tmp_path):
    """A progress callback given to add() hears how many bytes have been hashed."""
    source = tmp_path / "f.bin"
    source.write_bytes(data(3 * BLOCK))
    seen = []
    index = ShareIndex(tmp_path / "state")
    index.load()
    index.add(source, hash_progress=seen.append)
    assert seen and seen[-1] == 3 * BLOCK


class CountingLeafHash:
    """Counts the leaf hashes ``shares`` computes (the hash checks of served blocks)."""

    def __init__(self, monkeypatch):
        self.count = 0
        monkeypatch.setattr(share_index, "leaf_hash", self)

    def __call__(self, data):
        self.count += 1
        return leaf_hash(data)


def settled_trust() -> BlockTrust:
    """A trust whose clock runs 10 s ahead, so files written just now are not racy."""
    return BlockTrust(now_ns=lambda: time.time_ns() + 10 * 10**9)


def test_blocks_hashed_at_share_time_are_served_without_hashing_again(tmp_path, monkeypatch):
    share = make_tree(tmp_path / "share")
    index = ShareIndex(tmp_path / "state", trust=settled_trust())
    index.load()
    record = index.add(share)
    hashes = CountingLeafHash(monkeypatch)
    for i in range(record.manifest.block_count):
        assert index.read_block(record.cid, i) is not None
    assert hashes.count == 0


def test_trusted_blocks_changed_with_size_and_mtime_restored_are_still_caught(
    tmp_path, monkeypatch
):
    """ctime moves on any write, so a trusted block is hashed again, and the change is found."""
    share = make_tree(tmp_path / "share")
    index = ShareIndex(tmp_path / "state", trust=settled_trust())
    index.load()
    record = index.add(share)
    target = share / "sub" / "b.bin"
    b_index = [e.path for e in record.manifest.files].index(("sub", "b.bin"))
    b_blocks = record.manifest.file_blocks(b_index)
    assert index.read_block(record.cid, b_blocks[1]) is not None
    st = os.stat(target)
    time.sleep(0.05)  # a new ctime tick
    with target.open("r+b") as f:
        f.seek(BLOCK + 1)
        f.write(b"X")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    hashes = CountingLeafHash(monkeypatch)
    assert index.read_block(record.cid, b_blocks[1]) is None
    assert hashes.count == 1
    assert record.changed == {b_index}


def test_a_touch_that_changes_nothing_costs_one_hash_per_block(tmp_path, monkeypatch):
    """A new ctime with the same bytes: each block is checked once more, then trusted again."""
    source = tmp_path / "f.bin"
    source.write_bytes(data(3 * BLOCK))
    index = ShareIndex(tmp_path / "state", trust=settled_trust())
    index.load()
    record = index.add(source)
    os.chmod(source, 0o600)  # ctime only
    hashes = CountingLeafHash(monkeypatch)
    for _round in range(3):
        for i in range(3):
            assert (
                index.read_block(record.cid, i)[0] == data(3 * BLOCK)[i * BLOCK : (i + 1) * BLOCK]
            )
    assert hashes.count == 3
    assert record.changed == set()


def test_racy_files_are_hashed_on_every_read(tmp_path, monkeypatch):
    """A file changed less than two seconds before its check earns no trust."""
    source = tmp_path / "f.bin"
    source.write_bytes(data(2 * BLOCK))
    index = ShareIndex(tmp_path / "state", trust=BlockTrust())
    index.load()
    record = index.add(source)
    hashes = CountingLeafHash(monkeypatch)
    for _round in range(3):
        assert index.read_block(record.cid, 0) is not None
    assert hashes.count == 3


def test_without_trust_every_read_is_hashed(tmp_path, monkeypatch):
    source = tmp_path / "f.bin"
    source.write_bytes(data(2 * BLOCK))
    index = ShareIndex(tmp_path / "state")
    index.load()
    record = index.add(source)
    hashes = CountingLeafHash(monkeypatch)
    assert index.read_block(record.cid, 1) is not None
    assert index.read_block(record.cid, 1) is not None
    assert hashes.count == 2


def test_trust_survives_a_restart_while_the_file_is_untouched(tmp_path, monkeypatch):
    share = make_tree(tmp_path / "share")
    index = ShareIndex(tmp_path / "state", trust=settled_trust())
    index.load()
    record = index.add(share)
    assert all(t is not None for t in record.trusted)

    restarted = ShareIndex(tmp_path / "state", trust=settled_trust())
    restarted.load()
    hashes = CountingLeafHash(monkeypatch)
    for i in range(record.manifest.block_count):
        assert restarted.read_block(record.cid, i) is not None
    assert hashes.count == 0


def test_a_file_changed_while_the_daemon_was_down_is_checked_again(tmp_path, monkeypatch):
    """Size and mtime restored, so no rehash at load; ctime moved, so every read is checked."""
    source = tmp_path / "f.bin"
    source.write_bytes(data(2 * BLOCK))
    index = ShareIndex(tmp_path / "state", trust=settled_trust())
    index.load()
    record = index.add(source)
    st = os.stat(source)
    time.sleep(0.05)  # a new ctime tick
    with source.open("r+b") as f:
        f.seek(BLOCK + 5)
        f.write(b"Z")
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))

    restarted = ShareIndex(tmp_path / "state", trust=settled_trust())
    [loaded] = restarted.load()
    hashes = CountingLeafHash(monkeypatch)
    assert restarted.read_block(record.cid, 0) is not None
    assert restarted.read_block(record.cid, 1) is None
    assert hashes.count == 2
    assert loaded.changed == {0}


def test_racy_shares_record_no_trust(tmp_path):
    source = tmp_path / "f.bin"
    source.write_bytes(data(BLOCK))
    index = ShareIndex(tmp_path / "state", trust=BlockTrust())
    index.load()
    assert index.add(source).trusted == [None]


def test_a_damaged_trusted_stat_makes_the_record_corrupt(tmp_path):
    source = tmp_path / "f.bin"
    source.write_bytes(data(BLOCK))
    index = ShareIndex(tmp_path / "state", trust=settled_trust())
    index.load()
    record = index.add(source)
    [path] = (tmp_path / "state" / "shares").glob("*.share")
    raw = json.loads(path.read_bytes())
    raw["trusted"] = [[1, 2, "three", 4, 5]]
    path.write_text(json.dumps(raw))
    with capturedLogs() as events:
        assert ShareIndex(tmp_path / "state").load() == []
    assert any("bad trusted stat" in formatEvent(e) for e in events)
    assert record.trusted != [None]
