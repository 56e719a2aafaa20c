"""Manifests, their canonical encoding, content IDs, and building a manifest from disk."""

from __future__ import annotations

import hashlib
import os

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerd.providers.files.content import (
    MAX_BLOCKS,
    BlockLocation,
    ContentID,
    FileEntry,
    InvalidContentID,
    InvalidManifest,
    Manifest,
)
from peerd.providers.files.merkle import (
    MAX_BLOCK_SIZE,
    block_size_for,
    hash_file,
    root_from_leaves,
)
from peerd.providers.files.upload.hashing import manifest_for_path

KiB = 1024
BS = 16 * KiB
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def root(n: int) -> bytes:
    return hashlib.sha256(b"root %d" % n).digest()


def dir_manifest(*sizes: int, block_size: int = BS) -> Manifest:
    files = tuple(
        FileEntry((f"f{i:02}",), size, root(i), block_size) for i, size in enumerate(sizes)
    )
    return Manifest("share", "dir", files)


SAMPLE = dir_manifest(2 * BS, 0, BS + 5, 1)
SAMPLE_ID = ContentID.for_manifest(SAMPLE)


def raw_manifest(**changes):
    """A valid manifest as plain values, with ``changes`` applied, packed."""
    raw = {
        "version": 1,
        "name": "share",
        "kind": "dir",
        "files": [[["a", "b"], 10, BS, root(0)], [["c"], 0, BS, root(1)]],
    }
    file_changes = changes.pop("file", None)
    raw.update(changes)
    if file_changes is not None:
        raw["files"][0] = file_changes
    return msgpack.packb(raw, use_bin_type=True)


# -- file entries and manifests --------------------------------------------------


def test_file_entry_block_count():
    """A file has ceil(size / block_size) blocks, and an empty file has one."""
    assert FileEntry((), 0, root(0), BS).block_count == 1
    assert FileEntry((), 1, root(0), BS).block_count == 1
    assert FileEntry((), BS, root(0), BS).block_count == 1
    assert FileEntry((), BS + 1, root(0), BS).block_count == 2


def test_valid_raw_manifest_decodes():
    """The hand-built raw manifest used by the rejection tests is itself valid."""
    manifest = Manifest.decode(raw_manifest())
    assert [f.path for f in manifest.files] == [("a", "b"), ("c",)]
    assert manifest.total_size == 10
    assert manifest.block_count == 2


_dir_names = st.text(alphabet="abc", min_size=1, max_size=3)
_file_names = st.text(alphabet="abcé. -", min_size=1, max_size=5).map(lambda s: "f" + s)
_paths = st.tuples(st.lists(_dir_names, max_size=3), _file_names).map(lambda t: (*t[0], t[1]))
_entries = st.builds(
    lambda path, size, block_exp, digest: FileEntry(path, size, digest, 1 << block_exp),
    _paths,
    st.integers(0, 2**34),  # at most 8 files of 2**20 blocks: under the limit
    st.integers(14, 23),
    st.binary(min_size=32, max_size=32),
)


@st.composite
def manifests(draw):
    name = draw(st.text(alphabet="xyz_-", min_size=1, max_size=8))
    if draw(st.booleans()):
        entry = draw(_entries)
        return Manifest(name, "file", (FileEntry((), entry.size, entry.root, entry.block_size),))
    entries = draw(st.lists(_entries, max_size=8, unique_by=lambda e: e.path))
    return Manifest(name, "dir", tuple(sorted(entries, key=lambda e: e.path)))


@settings(max_examples=200)
@given(manifests())
def test_manifest_round_trip(manifest):
    """Any valid manifest encodes and decodes to an equal manifest with the same ID."""
    data = manifest.encode()
    decoded = Manifest.decode(data)
    assert decoded == manifest
    assert decoded.encode() == data
    assert ContentID.for_manifest(decoded) == ContentID.for_manifest(manifest)


def test_encoding_is_canonical_and_stable():
    """Equal manifests built separately encode to the same bytes, keys in a fixed order."""
    again = dir_manifest(2 * BS, 0, BS + 5, 1)
    assert again is not SAMPLE
    assert again.encode() == SAMPLE.encode()
    decoded = msgpack.unpackb(SAMPLE.encode(), raw=False)
    assert list(decoded) == ["version", "name", "kind", "files"]
    assert decoded["files"][0] == [["f00"], 2 * BS, BS, root(0)]


def test_decode_rejects_non_canonical_encodings():
    """Reordered keys or non-minimal integers give another ID for the same manifest, so are refused."""
    raw = msgpack.unpackb(SAMPLE.encode(), raw=False)
    reordered = msgpack.packb(dict(reversed(list(raw.items()))), use_bin_type=True)
    with pytest.raises(InvalidManifest, match="keys must be"):
        Manifest.decode(reordered)
    wide_version = SAMPLE.encode().replace(b"\xa7version\x01", b"\xa7version\xcd\x00\x01", 1)
    assert wide_version != SAMPLE.encode()
    with pytest.raises(InvalidManifest, match="canonical"):
        Manifest.decode(wide_version)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (raw_manifest(file=[["..", "x"], 1, BS, root(0)]), "is '..'"),
        (raw_manifest(file=[[".", "x"], 1, BS, root(0)]), "is '.'"),
        (raw_manifest(file=[["/etc", "passwd"], 1, BS, root(0)]), "path separator"),
        (raw_manifest(file=[["\\windows"], 1, BS, root(0)]), "path separator"),
        (raw_manifest(file=[["a/b"], 1, BS, root(0)]), "path separator"),
        (raw_manifest(file=[["C:", "x"], 1, BS, root(0)]), "drive letter"),
        (raw_manifest(file=[["c:evil"], 1, BS, root(0)]), "drive letter"),
        (raw_manifest(file=[["a", ""], 1, BS, root(0)]), "is empty"),
        (raw_manifest(file=[["a\x00b"], 1, BS, root(0)]), "NUL"),
        (raw_manifest(file=[["a\nb"], 1, BS, root(0)]), "control character"),
        (raw_manifest(file=[["x" * 256], 1, BS, root(0)]), "longer than 255"),
        (raw_manifest(file=[["a"] * 65 + ["b"], 1, BS, root(0)]), "deeper than 64"),
        (raw_manifest(file=[[1], 1, BS, root(0)]), "not a string"),
        (raw_manifest(file=[[], 1, BS, root(0)]), "non-empty paths"),
        (raw_manifest(file=[["a"], 1, 3000, root(0)]), "power of two"),
        (raw_manifest(file=[["a"], 1, 8 * KiB, root(0)]), "power of two"),
        (raw_manifest(file=[["a"], 1, 2 * MAX_BLOCK_SIZE, root(0)]), "power of two"),
        (raw_manifest(file=[["a"], 1, BS, root(0)[:31]]), "32 bytes"),
        (raw_manifest(file=[["a"], 1, BS, "ab" * 16]), "32 bytes"),
        (raw_manifest(file=[["a"], -1, BS, root(0)]), "size must be an integer >= 0"),
        (raw_manifest(file=[["a"], True, BS, root(0)]), "size must be an integer >= 0"),
        (raw_manifest(file=[["a"], 1.0, BS, root(0)]), "size must be an integer >= 0"),
        (raw_manifest(file=[["a"], 1, BS]), r"\[path, size, block_size, root\]"),
        (raw_manifest(file=["a", 1, BS, root(0)]), "not a list of components"),
        (raw_manifest(file=[["d"], 1, BS, root(0)]), "not sorted and unique"),
        (raw_manifest(file=[["c"], 1, BS, root(0)]), "not sorted and unique"),
        (raw_manifest(files=None), "'files' is not a list"),
        (raw_manifest(name=".."), "share name '..'"),
        (raw_manifest(name="a/b"), "share name"),
        (raw_manifest(name=""), "share name"),
        (raw_manifest(kind="link"), "kind must be"),
        (raw_manifest(kind="file"), "a file manifest has exactly one entry"),
        (raw_manifest(version=2), "unsupported manifest version 2"),
        (raw_manifest(extra=1), "keys must be"),
        (b"\xc1", "not valid MessagePack"),
        (raw_manifest() + b"\x00", "not valid MessagePack"),
        (msgpack.packb([1, 2]), "not a MessagePack map"),
    ],
)
def test_decode_rejects_malformed_manifests(data, message):
    """Each malformation is refused with InvalidManifest saying what is wrong."""
    with pytest.raises(InvalidManifest, match=message):
        Manifest.decode(data)


def test_decode_rejects_a_file_inside_a_file():
    """A directory manifest cannot have both 'a' and 'a/b': 'a' cannot be a file and a directory."""
    data = msgpack.packb(
        {
            "version": 1,
            "name": "s",
            "kind": "dir",
            "files": [[["a"], 1, BS, root(0)], [["a", "b"], 1, BS, root(1)]],
        },
        use_bin_type=True,
    )
    with pytest.raises(InvalidManifest, match="inside the file 'a'"):
        Manifest.decode(data)


def test_too_many_blocks_are_refused():
    """More than ten million blocks in one manifest is refused."""
    with pytest.raises(InvalidManifest, match="limit of 10000000"):
        Manifest("s", "file", (FileEntry((), (MAX_BLOCKS + 1) * BS, root(0), BS),))
    Manifest("s", "file", (FileEntry((), MAX_BLOCKS * BS, root(0), BS),))


def test_locate_across_file_boundaries():
    """Global block numbers run through file 0's blocks, then file 1's; empty files have one block."""
    assert SAMPLE.block_count == 6
    assert SAMPLE.total_size == 3 * BS + 6
    assert [SAMPLE.locate(i) for i in range(6)] == [
        (0, 0, 0, BS),
        (0, 1, BS, BS),
        (1, 0, 0, 0),
        (2, 0, 0, BS),
        (2, 1, BS, 5),
        (3, 0, 0, 1),
    ]
    assert SAMPLE.locate(4) == BlockLocation(file_index=2, block_in_file=1, offset=BS, length=5)
    assert [SAMPLE.file_blocks(i) for i in range(4)] == [
        range(0, 2),
        range(2, 3),
        range(3, 5),
        range(5, 6),
    ]


def test_locate_out_of_range():
    """Block numbers outside the manifest raise IndexError."""
    with pytest.raises(IndexError):
        SAMPLE.locate(6)
    with pytest.raises(IndexError):
        SAMPLE.locate(-1)
    with pytest.raises(IndexError):
        SAMPLE.file_blocks(4)


# -- content IDs -------------------------------------------------------------------


def test_content_id_is_the_hash_of_the_encoded_manifest():
    """A content ID is SHA-256 of the canonical manifest bytes."""
    assert SAMPLE_ID.digest == hashlib.sha256(SAMPLE.encode()).digest()
    assert ContentID.for_encoded(SAMPLE.encode()) == SAMPLE_ID
    assert ContentID.for_manifest(dir_manifest(1)) != SAMPLE_ID


def test_content_id_printed_form():
    """A content ID prints as 'pd1' and 55 lowercase base32 characters."""
    text = str(SAMPLE_ID)
    assert text.startswith("pd1")
    assert len(text) == 58
    assert set(text[3:]) <= set(BASE32)
    assert repr(SAMPLE_ID) == f"ContentID({text!r})"


@given(st.binary(min_size=32, max_size=32))
def test_content_id_round_trip(digest):
    """Parsing a printed content ID gives it back."""
    cid = ContentID(digest)
    assert ContentID.parse(str(cid)) == cid


@pytest.mark.parametrize(
    "transform",
    [str.upper, str.swapcase, lambda s: f"  {s}\n", lambda s: s[:10].upper() + s[10:]],
    ids=["upper", "swapcase", "whitespace", "mixed"],
)
def test_content_id_parsing_ignores_case_and_whitespace(transform):
    """Case and surrounding whitespace do not matter when parsing."""
    assert ContentID.parse(transform(str(SAMPLE_ID))) == SAMPLE_ID


def test_every_single_character_substitution_is_rejected():
    """Replacing any one character of a printed ID with any other is caught."""
    text = str(SAMPLE_ID)
    tried = 0
    for i, original in enumerate(text):
        for replacement in BASE32 + "019":
            if replacement == original:
                continue
            with pytest.raises(InvalidContentID):
                ContentID.parse(text[:i] + replacement + text[i + 1 :])
            tried += 1
    assert tried > 58 * 30


def test_wrong_version_prefix_is_named():
    """An ID of another version says which version it is; other prefixes say what is expected."""
    body = str(SAMPLE_ID)[3:]
    with pytest.raises(InvalidContentID, match="^unsupported content ID version 'pd9'$"):
        ContentID.parse("pd9" + body)
    with pytest.raises(InvalidContentID, match="should start with 'pd1'"):
        ContentID.parse("xx1" + body)
    with pytest.raises(InvalidContentID, match="should start with 'pd1'"):
        ContentID.parse("")


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda s: s[:-1], "expected 55 characters after 'pd1', got 54"),
        (lambda s: s + "a", "expected 55 characters after 'pd1', got 56"),
        (lambda s: s[:20] + "0" + s[21:], "not base32"),
        (lambda s: s[:20] + "=" + s[21:], "not base32"),
        (lambda s: s[:20] + ("b" if s[20] != "b" else "c") + s[21:], "checksum mismatch"),
    ],
    ids=["short", "long", "digit-zero", "equals-sign", "typo"],
)
def test_malformed_content_ids_are_rejected(mangle, message):
    """Wrong length, alphabet or checksum each give a one-line InvalidContentID."""
    with pytest.raises(InvalidContentID, match=message) as info:
        ContentID.parse(mangle(str(SAMPLE_ID)))
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_non_zero_padding_bits_are_rejected():
    """The last character carries 3 padding bits; a character that sets them is refused."""
    text = str(SAMPLE_ID)
    value = BASE32.index(text[-1])
    assert value & 0b111 == 0
    for padding in range(1, 8):
        with pytest.raises(InvalidContentID, match="stray bits"):
            ContentID.parse(text[:-1] + BASE32[value | padding])


def test_content_ids_order_and_hash_by_digest():
    """Content IDs compare, sort and hash by their digest."""
    low, high = ContentID(bytes(32)), ContentID(b"\xff" * 32)
    assert low < high
    assert sorted([high, low]) == [low, high]
    assert len({low, ContentID(bytes(32)), high}) == 2
    with pytest.raises(InvalidContentID):
        ContentID(bytes(31))


# -- manifests from disk -------------------------------------------------------------


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def test_manifest_for_a_nested_directory(tmp_path):
    """Files are listed sorted by path components with sizes and roots of their blocks."""
    share = tmp_path / "share"
    write(share / "b.txt", b"hello")
    write(share / "a" / "z.bin", os.urandom(300 * KiB))
    write(share / "a" / "b" / "c", os.urandom(10))
    write(share / "empty", b"")
    (share / "emptydir" / "deeper").mkdir(parents=True)
    os.symlink(share / "b.txt", share / "link")
    os.symlink(tmp_path, share / "dirlink")
    os.mkfifo(share / "fifo")
    write(share / "bad\nname", b"x")
    skipped = []
    seen = []

    manifest, leaves = manifest_for_path(share, seen.append, skipped=skipped)

    assert manifest.name == "share"
    assert manifest.kind == "dir"
    paths = [f.path for f in manifest.files]
    assert paths == [("a", "b", "c"), ("a", "z.bin"), ("b.txt",), ("empty",)]
    total = 300 * KiB + 15
    assert [f.size for f in manifest.files] == [10, 300 * KiB, 5, 0]
    block_size = block_size_for(total)
    for entry, file_leaves in zip(manifest.files, leaves, strict=True):
        assert entry.block_size == block_size
        expected = hash_file(share.joinpath(*entry.path), block_size)
        assert file_leaves == expected
        assert entry.root == root_from_leaves(expected)
    assert manifest.files[1].block_count == 2
    assert {(p.name, reason.split(" ")[0]) for p, reason in skipped} == {
        ("link", "symbolic"),
        ("dirlink", "symbolic"),
        ("fifo", "not"),
        ("bad\nname", "path"),
    }
    assert seen[-1] == total
    assert seen == sorted(seen)
    assert Manifest.decode(manifest.encode()) == manifest


def test_manifest_for_a_single_file(tmp_path):
    """A single file gives a 'file' manifest with one entry whose path is empty."""
    data = write(tmp_path / "movie.mkv", os.urandom(40 * KiB))
    manifest, leaves = manifest_for_path(tmp_path / "movie.mkv")
    assert manifest.name == "movie.mkv"
    assert manifest.kind == "file"
    [entry] = manifest.files
    assert entry.path == ()
    assert entry.size == len(data)
    assert entry.block_size == 256 * KiB
    assert leaves == [hash_file(tmp_path / "movie.mkv", 256 * KiB)]
    assert entry.root == root_from_leaves(leaves[0])


def test_a_named_symlink_is_followed_and_keeps_its_name(tmp_path):
    """The path the user names is followed if it is a link, and shared under the link's name."""
    write(tmp_path / "real.bin", b"data")
    os.symlink(tmp_path / "real.bin", tmp_path / "alias.bin")
    manifest, _ = manifest_for_path(tmp_path / "alias.bin")
    assert manifest.name == "alias.bin"
    assert manifest.files[0].size == 4


def test_manifest_for_special_file_is_refused(tmp_path):
    """A FIFO (or any non-regular file) cannot be shared."""
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InvalidManifest, match="neither a regular file nor a directory"):
        manifest_for_path(tmp_path / "fifo")


def test_manifest_for_an_empty_directory(tmp_path):
    """An empty directory (or one holding only empty directories) is a share of no blocks."""
    (tmp_path / "void" / "inner").mkdir(parents=True)
    manifest, leaves = manifest_for_path(tmp_path / "void")
    assert manifest.files == ()
    assert leaves == []
    assert manifest.block_count == 0
