"""
The files provider between real peers on 127.0.0.1: swarm downloads from
several seeders, a lying seeder, seeders and downloaders killed mid-way, a
flash crowd, directory shares, and the errors a user sees.

Content is random (``os.urandom``) and every result is compared byte for
byte.  Rate limits in ``[provider:files]`` slow the seeders down enough for
the interesting moments (a second seeder being asked, a kill mid-download,
downloaders serving each other) to happen reliably.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import msgpack
import pytest
from harness import Cluster, Peer, wait_until

from peerd.peerctl.client import ApiClientError
from peerd.providers.files.content import ContentID, FileEntry, InvalidManifest, Manifest
from peerd.providers.files.download.partial import PartialDownload, UnsafePath
from peerd.providers.files.merkle import MerkleTree, leaf_hash

HERE = Path(__file__).resolve().parent
LYING_PEER = HERE / "lying_peer.py"
FILES = "providers/files/"
MiB = 1024 * 1024
CONNECT_TIMEOUT = 20.0
DOWNLOAD_TIMEOUT = 40.0


# -- helpers ----------------------------------------------------------------------------


def random_file(path: Path, size: int) -> bytes:
    """Write ``size`` random bytes to ``path`` and return them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = os.urandom(size)
    path.write_bytes(content)
    return content


def files_config(**options: str) -> dict[str, dict[str, str]]:
    """Config sections with ``[provider:files]`` set to ``options``."""
    return {"provider:files": dict(options)}


def share(peer: Peer, path: Path) -> str:
    """Share ``path`` on ``peer``; its content ID."""
    return peer.api.post(FILES + "shares", {"path": str(path)})["share"]["cid"]


def start_download(peer: Peer, cid: str, **body: object) -> dict:
    """``POST downloads``; the download's status."""
    return peer.api.post(FILES + "downloads", {"cid": cid, **body})["download"]


def download_status(peer: Peer, cid: str) -> dict:
    """``GET downloads/{cid}``."""
    return peer.api.get(f"{FILES}downloads/{cid}")["download"]


def files_status(peer: Peer) -> dict:
    """``GET status`` of the files provider."""
    return peer.api.get(FILES + "status")


def api_error(call, *args: object) -> ApiClientError:
    """The :class:`ApiClientError` that ``call(*args)`` raises."""
    with pytest.raises(ApiClientError) as info:
        call(*args)
    return info.value


def wait_connected(peer: Peer, *others: Peer) -> None:
    """Wait until ``peer`` lists every one of ``others``."""
    wanted = {o.peer_id for o in others}
    wait_until(
        lambda: wanted <= set(peer.peers()),
        CONNECT_TIMEOUT,
        f"{peer.name} to connect to {', '.join(o.name for o in others)}",
    )


def wait_complete(
    peer: Peer, cid: str, timeout: float = DOWNLOAD_TIMEOUT, partial_free: Path | None = None
) -> dict:
    """
    Poll the download until it is complete; fail at once if it failed or was
    cancelled.  With ``partial_free``, also check on every poll that nothing
    exists at that path before the download is complete.
    """

    def done() -> dict | None:
        exists = partial_free is not None and os.path.lexists(partial_free)
        status = download_status(peer, cid)
        if status["state"] in ("failed", "cancelled"):
            raise AssertionError(f"download on {peer.name} ended {status['state']}: {status}")
        if status["state"] == "complete":
            return status
        assert not (exists and mid_download(status)), f"{partial_free} exists mid-download"
        return None

    deadline = time.monotonic() + timeout
    while True:
        status = done()
        if status is not None:
            return status
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"download on {peer.name} not complete after {timeout:g}s: "
                f"{download_status(peer, cid)}\n{peer.log_tail()}"
            )
        time.sleep(0.1)


def mid_download(status: dict) -> bool:
    """
    The download is still collecting blocks.  (``finishing`` is not: by then
    every block is verified, and the complete content is renamed into place
    a moment before the state becomes ``complete``.)
    """
    return status["state"] not in ("finishing", "complete")


def tree_contents(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


# -- swarm downloads --------------------------------------------------------------------


def test_two_seeders_one_downloader(cluster: Cluster) -> None:
    """
    Two seeders share the same bytes under the same name and get the same
    content ID; ``peerctl get ID -o PATH --quiet`` on a peer connected to
    both exits 0 only once the file is complete, prints its path, and the
    file is byte-exact.  With each seeder limited to 4 MB/s per peer, both
    seeders uploaded part of it.
    """
    limited = files_config(peer_upload_rate="4MB")
    s1 = cluster.add("s1", sections=limited)
    s2 = cluster.add("s2", sections=limited)
    d = cluster.add("d", peers=[s1.address, s2.address])
    cluster.start(s1, s2, d)
    content = random_file(cluster.root / "share1" / "payload.bin", 12 * MiB)
    (cluster.root / "share2").mkdir()
    (cluster.root / "share2" / "payload.bin").write_bytes(content)
    cid = share(s1, cluster.root / "share1" / "payload.bin")
    assert share(s2, cluster.root / "share2" / "payload.bin") == cid
    wait_connected(d, s1, s2)

    destination = cluster.root / "got" / "payload.bin"
    destination.parent.mkdir()
    result = d.run_peerctl(
        "get", cid, "-o", str(destination), "--quiet", json_output=False, timeout=60
    )
    assert result.returncode == 0, f"peerctl get failed: {result.stderr}\n{d.log_tail()}"
    assert result.stdout.strip() == str(destination)
    assert destination.read_bytes() == content
    status = download_status(d, cid)
    assert status["state"] == "complete"
    assert status["blocks_done"] == status["blocks"]
    for seeder in (s1, s2):
        assert files_status(seeder)["bytes_uploaded"] > 0, f"{seeder.name} uploaded nothing"
        assert status["sources"][seeder.peer_id]["received"] > 0


def test_lying_seeder_is_banned(cluster: Cluster) -> None:
    """
    A seeder that flips a byte in every block it serves (``lying_peer.py``,
    a real peer with a patched share index) cannot spoil a download: the
    downloader, connected to it and to an honest seeder, completes
    byte-exact, bans the liar for that content (in the download's status and
    in the provider's ``bans``) and disconnects it.
    """
    honest = cluster.add("honest", sections=files_config(upload_rate="4MB"))
    liar = cluster.add("liar", launcher=[sys.executable, str(LYING_PEER)])
    d = cluster.add("d", peers=[honest.address])
    cluster.start(honest, liar, d)
    content = random_file(cluster.root / "h" / "payload.bin", 8 * MiB)
    (cluster.root / "l").mkdir()
    (cluster.root / "l" / "payload.bin").write_bytes(content)
    cid = share(honest, cluster.root / "h" / "payload.bin")
    assert share(liar, cluster.root / "l" / "payload.bin") == cid
    d.peerctl("connect", liar.pinned_address)
    wait_connected(d, honest, liar)

    destination = cluster.root / "got.bin"
    start_download(d, cid, destination=str(destination))
    status = wait_complete(d, cid)
    assert destination.read_bytes() == content
    assert liar.peer_id in status["banned"]
    assert "failed verification" in status["banned"][liar.peer_id]
    assert honest.peer_id not in status["banned"]
    assert liar.peer_id in files_status(d)["bans"][cid]
    wait_until(
        lambda: liar.peer_id not in d.peers(), CONNECT_TIMEOUT, "the liar to be disconnected"
    )
    assert f"disconnecting {liar.peer_id}" in d.log_text()
    assert honest.peer_id in d.peers()


def test_seeder_killed_mid_download(cluster: Cluster) -> None:
    """
    One of two seeders (each limited to 2 MB/s) is killed with SIGKILL
    mid-download: the download carries on from the other one and completes
    byte-exact.
    """
    slow = files_config(upload_rate="2MB")
    s1 = cluster.add("s1", sections=slow)
    s2 = cluster.add("s2", sections=slow)
    d = cluster.add("d", peers=[s1.address, s2.address])
    cluster.start(s1, s2, d)
    content = random_file(cluster.root / "share1" / "payload.bin", 16 * MiB)
    (cluster.root / "share2").mkdir()
    (cluster.root / "share2" / "payload.bin").write_bytes(content)
    cid = share(s1, cluster.root / "share1" / "payload.bin")
    assert share(s2, cluster.root / "share2" / "payload.bin") == cid
    wait_connected(d, s1, s2)

    destination = cluster.root / "got.bin"
    start_download(d, cid, destination=str(destination))

    def both_sending() -> bool:
        status = download_status(d, cid)
        sources = status["sources"]
        return status["blocks_done"] >= 8 and all(
            sources.get(s.peer_id, {}).get("received", 0) > 0 for s in (s1, s2)
        )

    wait_until(both_sending, DOWNLOAD_TIMEOUT, "blocks from both seeders")
    s1.kill()
    status = download_status(d, cid)
    assert status["state"] == "downloading", status
    assert status["blocks_done"] < status["blocks"]
    wait_complete(d, cid)
    assert destination.read_bytes() == content


def test_downloader_killed_resumes(cluster: Cluster) -> None:
    """
    The downloader is killed with SIGKILL mid-download from a seeder
    limited to 2 MB/s and restarted with the same config: right after the
    restart the download is listed with the blocks it had checkpointed (it
    does not start from zero), then completes byte-exact.  At no point
    before completion does the destination exist (partial data lives in the
    data dir, not at the destination).
    """
    seeder = cluster.add("seeder", sections=files_config(upload_rate="2MB"))
    d = cluster.add("d", peers=[seeder.address])
    cluster.start(seeder, d)
    content = random_file(cluster.root / "share" / "payload.bin", 10 * MiB)
    cid = share(seeder, cluster.root / "share" / "payload.bin")
    wait_connected(d, seeder)

    destination = cluster.root / "got" / "payload.bin"
    destination.parent.mkdir()
    start_download(d, cid, destination=str(destination))

    early: list[dict] = []  # statuses seen while the destination already existed

    def progressed() -> dict | None:
        exists = os.path.lexists(destination)
        status = download_status(d, cid)
        if exists and mid_download(status):
            early.append(status)
        return status if status["blocks_done"] >= 12 else None

    before = wait_until(progressed, DOWNLOAD_TIMEOUT, "12 blocks before the kill")
    assert not early, f"destination exists mid-download: {early[0]}"
    assert before["blocks_done"] < before["blocks"]
    time.sleep(1.5)  # let a checkpoint (every second) record them
    d.kill()
    assert not os.path.lexists(destination)

    d.start().wait_ready()
    resumed = download_status(d, cid)
    assert resumed["state"] != "complete", resumed
    assert resumed["blocks_done"] >= before["blocks_done"], (before, resumed)
    assert not os.path.lexists(destination)
    wait_complete(d, cid, partial_free=destination)
    assert destination.read_bytes() == content
    assert list(destination.parent.iterdir()) == [destination]


def test_flash_crowd(cluster: Cluster) -> None:
    """
    One seeder limited to 4 MB/s and four downloaders that only know the
    seeder: all four complete byte-exact, and at least one received blocks
    from another downloader (found by peer exchange), which shows that
    downloaders serve what they have while still downloading.
    """
    seeder = cluster.add("seeder", sections=files_config(upload_rate="4MB"))
    downloaders = [cluster.add(f"d{i}", peers=[seeder.address]) for i in range(4)]
    cluster.start(seeder, *downloaders)
    content = random_file(cluster.root / "share" / "payload.bin", 12 * MiB)
    cid = share(seeder, cluster.root / "share" / "payload.bin")
    for d in downloaders:
        wait_connected(d, seeder)

    destinations = {d.name: cluster.root / f"got-{d.name}.bin" for d in downloaders}
    for d in downloaders:
        start_download(d, cid, destination=str(destinations[d.name]))
    statuses = [wait_complete(d, cid) for d in downloaders]
    for d in downloaders:
        assert destinations[d.name].read_bytes() == content, d.name

    from_peers = {
        d.name: {
            peer_id: source["received"]
            for peer_id, source in status["sources"].items()
            if peer_id != seeder.peer_id and source["received"] > 0
        }
        for d, status in zip(downloaders, statuses, strict=True)
    }
    assert any(from_peers.values()), f"no downloader received from another: {statuses}"
    downloader_ids = {d.peer_id for d in downloaders}
    for received in from_peers.values():
        assert set(received) <= downloader_ids


def test_directory_share(cluster: Cluster) -> None:
    """
    A directory with nested subdirectories, an empty file and files of
    several sizes is shared and downloaded into a ``directory``: the tree
    lands under its own name, byte-exact, with nothing else beside it.
    """
    seeder = cluster.add("seeder")
    d = cluster.add("d", peers=[seeder.address])
    cluster.start(seeder, d)
    root = cluster.root / "share" / "album"
    random_file(root / "cover.jpg", 3 * MiB + 17)
    random_file(root / "disc 1" / "01.flac", 1 * MiB)
    random_file(root / "disc 1" / "deeper" / "notes.txt", 1000)
    (root / "empty.txt").write_bytes(b"")
    (root / "disc 1" / "deeper" / "also-empty").write_bytes(b"")
    expected = tree_contents(root)
    assert len(expected) == 5
    cid = share(seeder, root)
    shares = seeder.api.get(FILES + "shares")["shares"]
    assert [(s["cid"], s["kind"], s["files"]) for s in shares] == [(cid, "dir", 5)]
    wait_connected(d, seeder)

    into = cluster.root / "downloads"
    into.mkdir()
    start_download(d, cid, directory=str(into))
    status = wait_complete(d, cid)
    assert status["path"] == str(into / "album")
    assert os.listdir(into) == ["album"]
    assert tree_contents(into / "album") == expected


# -- refusals and errors ------------------------------------------------------------------


def test_path_traversal_refused(cluster: Cluster, tmp_path: Path) -> None:
    """
    Paths that could escape are refused at every layer: the API wants an
    absolute ``destination`` or ``directory`` (400 otherwise); a manifest
    with a ``..`` component can be neither built nor decoded; and
    :class:`PartialDownload`, handed such a manifest anyway, refuses it
    before writing anything.
    """
    d = cluster.add("d")
    cluster.start(d)
    cid = str(ContentID.for_encoded(os.urandom(32)))
    for field, value in (("destination", "../escape.bin"), ("directory", "relative/dir")):
        error = api_error(d.api.post, FILES + "downloads", {"cid": cid, field: value})
        assert error.status == 400
        assert f'"{field}" must be an absolute path' in str(error)
    assert d.api.get(FILES + "downloads")["downloads"] == []

    bs = 256 * 1024
    root = MerkleTree([leaf_hash(b"x")]).root
    with pytest.raises(InvalidManifest, match=r"is '\.\.'"):
        FileEntry(("..", "evil"), 1, root, bs)
    with pytest.raises(InvalidManifest, match="share name"):
        Manifest("..", "file", (FileEntry((), 1, root, bs),))
    crafted = msgpack.packb(
        {"version": 1, "name": "tree", "kind": "dir", "files": [[["..", "evil"], 1, bs, root]]},
        use_bin_type=True,
    )
    with pytest.raises(InvalidManifest, match=r"is '\.\.'"):
        Manifest.decode(crafted)

    manifest = Manifest(
        "tree", "dir", (FileEntry(("a",), 1, root, bs), FileEntry(("b",), 1, root, bs))
    )
    object.__setattr__(manifest.files[1], "path", ("..", "..", "evil"))  # bypass validation
    target = tmp_path / "unit" / "out" / "tree"
    target.parent.mkdir(parents=True)
    with pytest.raises(UnsafePath, match="unsafe path"):
        PartialDownload(
            tmp_path / "unit" / "state", ContentID.for_manifest(manifest), manifest, target, False
        )
    assert not target.exists()
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "unit" / "evil").exists()


def test_user_errors(cluster: Cluster) -> None:
    """
    What a user gets wrong is answered clearly and the daemon keeps working:
    an existing destination without ``force`` is a 409 saying it exists; a
    malformed content ID a 400 naming the problem (and ``peerctl get``
    prints one line and exits non-zero); an unknown but valid content ID
    waits in ``finding-sources`` with ``no sources yet``.
    """
    d = cluster.add("d")
    cluster.start(d)
    existing = cluster.root / "already-there.bin"
    existing.write_bytes(b"keep me")
    cid = str(ContentID.for_encoded(os.urandom(32)))

    error = api_error(d.api.post, FILES + "downloads", {"cid": cid, "destination": str(existing)})
    assert error.status == 409
    assert str(error) == f"{existing} exists (use --force to replace it)"
    assert existing.read_bytes() == b"keep me"

    malformed = "pd1notacontentid"
    error = api_error(
        d.api.post, FILES + "downloads", {"cid": malformed, "destination": str(existing)}
    )
    assert error.status == 400
    assert "is not a content ID: expected 55 characters" in str(error)
    typo = cid[:-2] + ("a" if cid[-2] != "a" else "b") + cid[-1]
    error = api_error(d.api.get, f"{FILES}downloads/{typo}")
    assert error.status == 400
    assert "checksum mismatch" in str(error)

    result = d.run_peerctl("get", malformed, "-o", str(cluster.root / "x"), json_output=False)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "not a content ID" in lines[0]

    destination = cluster.root / "never.bin"
    assert start_download(d, cid, destination=str(destination))["state"] == "finding-sources"
    time.sleep(1.2)  # a couple of download ticks
    status = download_status(d, cid)
    assert (status["state"], status["detail"]) == ("finding-sources", "no sources yet")
    assert d.status()["peer_id"] == d.peer_id
    content = random_file(cluster.root / "later.bin", 1000)
    later = share(d, cluster.root / "later.bin")
    assert [s["cid"] for s in d.api.get(FILES + "shares")["shares"]] == [later]
    assert files_status(d)["downloads"] == 1
    assert not destination.exists()
    assert (cluster.root / "later.bin").read_bytes() == content
