"""
Swarm downloads of the files provider, end to end between in-memory peers
(real mutual TLS, sessions and streams; time on a ``Clock``); and the
swarm's request scheduling on its own.
"""

from __future__ import annotations

import json
import os
import random
import shutil

from swarm_helpers import BLOCK, RequestLog, Swarm, WriteLog, files, payload
from twisted.internet.task import Clock

from peerd.providers.files import bitfield
from peerd.providers.files.content import ContentID, FileEntry, Manifest
from peerd.providers.files.download.download import CHECKPOINT_INTERVAL, DownloadState
from peerd.providers.files.download.partial import PartialDownload
from peerd.providers.files.download.swarm import (
    MAX_PIPELINE,
    MIN_PIPELINE,
    REQUEST_TIMEOUT,
    START_PIPELINE,
    Source,
)
from peerd.providers.files.download.swarm import Swarm as SwarmScheduler
from peerd.providers.files.upload.hashing import manifest_for_path
from peerd.ratelimit import Meter

MiB = 1024 * 1024


def _source(dl, peer) -> dict:
    return dl.status()["sources"].get(str(peer.peer_id), {"received": 0, "in_flight": 0})


def test_two_seeders_both_serve(tmp_path):
    """A download from two seeders is byte-exact and both seeders upload part of it."""
    swarm = Swarm(tmp_path)
    limited = {"peer_upload_rate": "1MiB"}
    s1, s2 = swarm.peer(limited), swarm.peer(limited)
    d = swarm.peer()
    data = payload(16 * BLOCK + 123, seed=1)
    for copy in ("one", "two"):  # two copies under the same name: the same content ID
        (tmp_path / copy).mkdir()
        (tmp_path / copy / "src.bin").write_bytes(data)
    cid = swarm.share(s1, tmp_path / "one" / "src.bin")
    assert swarm.share(s2, tmp_path / "two" / "src.bin") == cid
    swarm.connect(d, s1)
    swarm.connect(d, s2)

    dl = swarm.get(d, cid, tmp_path / "out.bin")
    swarm.run_until(lambda: dl.finished, limit=30)

    assert dl.state == "complete"
    assert (tmp_path / "out.bin").read_bytes() == data
    assert files(s1).scheduler.bytes_sent > 0
    assert files(s2).scheduler.bytes_sent > 0
    assert _source(dl, s1)["received"] + _source(dl, s2)["received"] == len(data)


def test_lying_seeder_is_banned_and_never_written(tmp_path):
    """
    A seeder that sends corrupt blocks (with valid proofs) is banned for the
    content and disconnected; the download completes byte-exact from the
    honest seeder and no corrupt block ever reaches the disk.
    """
    swarm = Swarm(tmp_path)
    limited = {"peer_upload_rate": "1MiB"}
    honest, liar = swarm.peer(limited), swarm.peer(limited)
    d = swarm.peer()
    data = payload(12 * BLOCK, seed=2)
    (tmp_path / "src.bin").write_bytes(data)
    cid = swarm.share(honest, tmp_path / "src.bin")
    swarm.share(liar, tmp_path / "src.bin")

    liar_shares = files(liar).shares
    honest_read = liar_shares.read_block

    def corrupt_read(cid, index):
        data, proof = honest_read(cid, index)
        return bytes([data[0] ^ 0xFF]) + data[1:], proof

    liar_shares.read_block = corrupt_read
    written = WriteLog(files(d))
    swarm.connect(d, honest)
    swarm.connect(d, liar)

    dl = swarm.get(d, cid, tmp_path / "out.bin")
    swarm.run_until(lambda: dl.finished, limit=30)

    assert dl.state == "complete"
    assert (tmp_path / "out.bin").read_bytes() == data
    assert str(liar.peer_id) in dl.status()["banned"]
    assert str(honest.peer_id) not in dl.status()["banned"]
    assert "failed verification" in files(d).bans[cid][str(liar.peer_id)]
    assert liar.peer_id not in d.manager.sessions
    assert honest.peer_id in d.manager.sessions
    assert written.written
    for index, block in written.written:
        assert block == data[index * BLOCK : (index + 1) * BLOCK], f"block {index} corrupt"


def test_source_lost_mid_download_only_its_blocks_are_asked_again(tmp_path):
    """
    When a source disconnects mid-download only the blocks in flight to it
    are asked of the other source again (no block is asked more than twice
    outside endgame), and the download completes.
    """
    swarm = Swarm(tmp_path)
    limited = {"peer_upload_rate": "1MiB"}
    s1, s2 = swarm.peer(limited), swarm.peer(limited)
    d = swarm.peer()
    data = payload(24 * BLOCK, seed=3)
    (tmp_path / "src.bin").write_bytes(data)
    cid = swarm.share(s1, tmp_path / "src.bin")
    swarm.share(s2, tmp_path / "src.bin")
    swarm.connect(d, s1)
    swarm.connect(d, s2)
    dl = swarm.get(d, cid, tmp_path / "out.bin")
    log = RequestLog(files(d), lambda: dl.picker is not None and dl.picker.endgame)

    swarm.run_until(lambda: dl.status()["blocks_done"] >= 6, limit=30)
    lost = set(dl.sources[s1.peer_id].in_flight)
    asked_before = len(log.gets)
    assert lost
    d.manager.disconnect(s1.peer_id, "shutdown", "test")
    swarm.net.flush()
    assert s1.peer_id not in d.manager.sessions
    swarm.run_until(lambda: dl.finished, limit=60)

    assert dl.state == "complete"
    assert (tmp_path / "out.bin").read_bytes() == data
    counts = log.counts(endgame=False)
    assert max(counts.values()) <= 2
    asked_twice = {i for i, n in counts.items() if n == 2}
    assert asked_twice <= lost
    after = [i for p, i, e in log.gets[asked_before:] if not e]
    assert lost <= set(after)
    assert all(p == s2.peer_id for p, _, _ in log.gets[asked_before:])


def test_resume_after_crash_fetches_only_missing_blocks(tmp_path):
    """
    A downloader that crashes mid-download (no stop, disk as it was) and
    restarts with the same identity and data dir resumes from the blocks its
    last checkpoint recorded: it fetches only the others, and the result is
    byte-exact.
    """
    swarm = Swarm(tmp_path)
    seeder = swarm.peer({"upload_rate": "1MiB"})
    first = swarm.peer()
    data = payload(16 * BLOCK + 5, seed=4)
    (tmp_path / "src.bin").write_bytes(data)
    cid = swarm.share(seeder, tmp_path / "src.bin")
    swarm.connect(first, seeder)
    dl = swarm.get(first, cid, tmp_path / "out.bin")
    state_dir = first.data_dir / "providers" / "files"

    def checkpointed() -> int:
        found = PartialDownload.resume_all(state_dir)
        return len(found[0].have) if found else 0

    swarm.run_until(lambda: checkpointed() >= 4, limit=30)
    swarm.run_for(CHECKPOINT_INTERVAL / 2)  # more blocks written since the checkpoint
    assert dl.state == "downloading"

    # The crash: the disk as it is now, and the peer gone without a word.
    crashed_dir = tmp_path / "crashed"
    shutil.copytree(first.data_dir, crashed_dir)
    first.accepting = False
    for link in list(swarm.net.links):
        if first in (link.dialer, link.listener):
            link.clientIO.loseConnection()
            link.serverIO.loseConnection()
    swarm.net.flush()
    assert first.peer_id not in seeder.manager.sessions

    second = swarm.peer(identity=first.identity, data_dir=crashed_dir)
    resumed = files(second).downloads[cid]
    assert resumed.state == "downloading"
    kept = set(resumed.partial.have)
    total = resumed.manifest.block_count
    assert 4 <= len(kept) < total
    log = RequestLog(files(second))
    swarm.connect(second, seeder)
    swarm.run_until(lambda: resumed.finished, limit=30)

    assert resumed.state == "complete"
    assert (tmp_path / "out.bin").read_bytes() == data
    fetched = {i for _, i, _ in log.gets}
    assert fetched == set(range(total)) - kept
    assert len(log.gets) == total - len(kept)


def test_flash_crowd_downloaders_trade_blocks(tmp_path):
    """
    Four downloaders that know only a slow seeder find each other by peer
    exchange, all complete byte-exact, and blocks flow between downloaders.
    """
    swarm = Swarm(tmp_path)
    seeder = swarm.peer({"upload_rate": "1MiB"})
    crowd = [swarm.peer() for _ in range(4)]
    data = payload(16 * BLOCK, seed=5)
    (tmp_path / "src.bin").write_bytes(data)
    cid = swarm.share(seeder, tmp_path / "src.bin")
    for peer in crowd:
        swarm.connect(peer, seeder)
    downloads = [swarm.get(peer, cid, tmp_path / f"out{n}.bin") for n, peer in enumerate(crowd)]

    swarm.run_until(lambda: all(dl.finished for dl in downloads), limit=60)

    for n, dl in enumerate(downloads):
        assert dl.state == "complete"
        assert (tmp_path / f"out{n}.bin").read_bytes() == data
    crowd_ids = {str(p.peer_id) for p in crowd}
    from_crowd = [
        sum(s["received"] for peer, s in dl.status()["sources"].items() if peer in crowd_ids)
        for dl in downloads
    ]
    assert max(from_crowd) > 0
    # Each downloader met at least one other downloader.
    for peer in crowd:
        assert any(other.peer_id in peer.manager.sessions for other in crowd if other is not peer)
    # The seeder sent less than four full copies.
    assert files(seeder).scheduler.bytes_sent < 4 * len(data)


def test_upload_rate_is_held_over_every_window(tmp_path):
    """
    A seeder limited to R bytes/s serving one greedy downloader sends within
    10 % of R * 10 s in every 10 s window after the first second.
    """
    swarm = Swarm(tmp_path)
    rate = 1 * MiB
    seeder = swarm.peer({"upload_rate": str(rate)})
    d = swarm.peer()
    (tmp_path / "src.bin").write_bytes(payload(24 * MiB, seed=6))
    cid = swarm.share(seeder, tmp_path / "src.bin")
    swarm.connect(d, seeder)
    scheduler = files(seeder).scheduler
    dl = swarm.get(d, cid, tmp_path / "out.bin")

    samples = [scheduler.bytes_sent]  # every 0.1 s; the clock moves 10 ms at a time
    for _ in range(200):
        swarm.run_for(0.1, step=0.01)
        samples.append(scheduler.bytes_sent)

    assert not dl.finished
    for start in range(10, 101):  # windows [1.0 s, 11.0 s] ... [10.0 s, 20.0 s]
        sent = samples[start + 100] - samples[start]
        assert abs(sent - rate * 10) <= rate * 10 * 0.10, (start / 10, sent)


def test_upload_slots_share_fairly(tmp_path):
    """
    Three downloaders asking one rate-limited seeder at once each get within
    30 % of the mean over 10 s.
    """
    swarm = Swarm(tmp_path)
    seeder = swarm.peer({"upload_rate": "1MiB"})
    crowd = [swarm.peer() for _ in range(3)]
    (tmp_path / "src.bin").write_bytes(payload(64 * BLOCK, seed=7))
    cid = swarm.share(seeder, tmp_path / "src.bin")
    for peer in crowd:
        swarm.connect(peer, seeder)
        peer.accepting = False  # no trading among them: only the seeder serves
    downloads = [swarm.get(peer, cid, tmp_path / f"out{n}.bin") for n, peer in enumerate(crowd)]

    swarm.run_for(10)

    got = [_source(dl, seeder)["received"] for dl in downloads]
    assert not any(dl.finished for dl in downloads)
    mean = sum(got) / len(got)
    assert mean > 0
    for received in got:
        assert abs(received - mean) <= 0.3 * mean, got


def test_directory_with_nested_and_empty_files(tmp_path):
    """A shared directory tree, with an empty file, arrives byte-exact under ``directory``."""
    swarm = Swarm(tmp_path)
    seeder, d = swarm.peer(), swarm.peer()
    tree = tmp_path / "album"
    (tree / "disc1" / "extra").mkdir(parents=True)
    (tree / "disc2").mkdir()
    contents = {
        ("cover.jpg",): payload(BLOCK // 3, seed=8),
        ("disc1", "a.flac"): payload(2 * BLOCK + 7, seed=9),
        ("disc1", "extra", "notes.txt"): b"liner notes\n",
        ("disc2", "b.flac"): payload(BLOCK, seed=10),
        ("disc2", "empty"): b"",
    }
    for parts, body in contents.items():
        tree.joinpath(*parts).write_bytes(body)
    cid = swarm.share(seeder, tree)
    swarm.connect(d, seeder)
    target = tmp_path / "downloads"
    target.mkdir()

    dl = swarm.get(d, cid, directory=target)
    swarm.run_until(lambda: dl.finished, limit=30)

    assert dl.state == "complete"
    assert dl.final_path == str(target / "album")
    for parts, body in contents.items():
        assert (target / "album").joinpath(*parts).read_bytes() == body
    found = sorted(p.relative_to(target / "album").parts for p in target.rglob("*") if p.is_file())
    assert found == sorted(contents)


def test_no_sources_waits_then_starts_when_a_seeder_connects(tmp_path):
    """
    A download nobody can serve waits in ``finding-sources`` ("no sources
    yet"), even with a connected peer that lacks it; it starts and completes
    once a seeder connects.
    """
    swarm = Swarm(tmp_path)
    d, bystander, seeder = swarm.peer(), swarm.peer(), swarm.peer()
    data = payload(3 * BLOCK + 1, seed=11)
    (tmp_path / "src.bin").write_bytes(data)
    cid = swarm.share(seeder, tmp_path / "src.bin")
    swarm.connect(d, bystander)

    dl = swarm.get(d, cid, tmp_path / "out.bin")
    swarm.run_for(5)
    assert dl.state == "finding-sources"
    assert dl.status()["detail"] == "no sources yet"

    swarm.connect(d, seeder)
    swarm.run_until(lambda: dl.finished, limit=30)
    assert dl.state == "complete"
    assert (tmp_path / "out.bin").read_bytes() == data


def test_file_changed_on_disk_is_not_served(tmp_path):
    """
    A shared file rewritten in place (same size) is not served as the old
    content: the seeder rejects the blocks, the download never completes
    from it, and the share's status reports the change.
    """
    swarm = Swarm(tmp_path)
    seeder, d = swarm.peer(), swarm.peer()
    source = tmp_path / "src.bin"
    source.write_bytes(payload(4 * BLOCK, seed=12))
    cid = swarm.share(seeder, source)
    with open(source, "r+b") as f:
        f.write(payload(4 * BLOCK, seed=13))
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    swarm.connect(d, seeder)
    written = WriteLog(files(d))

    dl = swarm.get(d, cid, tmp_path / "out.bin")
    swarm.run_for(10)

    assert not dl.finished
    assert dl.status()["bytes_done"] == 0
    assert written.written == []
    assert not (tmp_path / "out.bin").exists()
    assert files(seeder).scheduler.bytes_sent == 0
    assert files(seeder).shares.get(cid).status.startswith("changed on disk: 1 file")
    assert ContentID.for_manifest(manifest_for_path(source)[0]) != ContentID.parse(cid)


def test_peer_with_nothing_yet_becomes_a_source_when_it_announces_blocks(tmp_path):
    """
    A downloader that a peer asked before it had anything (it answered
    ``none``) becomes that peer's source once it pushes HAVEs: blocks flow
    both ways between an early and a late downloader.
    """
    swarm = Swarm(tmp_path)
    seeder = swarm.peer({"upload_rate": "1MiB"})
    early, late = swarm.peer(), swarm.peer()
    data = payload(32 * BLOCK, seed=14)
    (tmp_path / "src.bin").write_bytes(data)
    cid = swarm.share(seeder, tmp_path / "src.bin")
    swarm.connect(early, seeder)
    swarm.connect(late, seeder)
    swarm.connect(early, late)
    first = swarm.get(early, cid, tmp_path / "early.bin")
    swarm.run_for(2)  # early asked late, which said "none"
    second = swarm.get(late, cid, tmp_path / "late.bin")

    swarm.run_until(lambda: first.finished and second.finished, limit=60)

    assert (tmp_path / "early.bin").read_bytes() == data
    assert (tmp_path / "late.bin").read_bytes() == data
    assert _source(first, late)["received"] > 0
    assert _source(second, early)["received"] > 0


def test_source_without_metadata_is_dropped_for_another(tmp_path):
    """
    A source that announces the content but answers ``none`` to
    ``manifest?`` is dropped (not asked again in a loop); the metadata and
    the blocks come from another source.
    """
    swarm = Swarm(tmp_path)
    empty, seeder, d = swarm.peer(), swarm.peer(), swarm.peer()
    data = payload(2 * BLOCK, seed=15)
    (tmp_path / "src.bin").write_bytes(data)
    cid = swarm.share(empty, tmp_path / "src.bin")
    swarm.share(seeder, tmp_path / "src.bin")
    files(empty).manifest_bytes = lambda cid: None
    swarm.connect(d, empty)
    dl = swarm.get(d, cid, tmp_path / "out.bin")
    swarm.net.flush()
    assert dl.state == "finding-sources"
    assert str(empty.peer_id) not in dl.status()["sources"]

    swarm.connect(d, seeder)
    swarm.run_until(lambda: dl.finished, limit=30)
    assert (tmp_path / "out.bin").read_bytes() == data
    assert _source(dl, empty)["received"] == 0


# -- the swarm's scheduling, on its own ---------------------------------------------------------


class FakeSwarmHost:
    """A :class:`SwarmHost` that records requests; ``limited`` peers are over their rate."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.rng = random.Random(0)
        self.sent: list[tuple[str, dict]] = []
        self.limited: set[str] = set()

    def request(self, peer_id: str, header: dict) -> None:
        self.sent.append((peer_id, header))

    def download_limit(self, peer_id: str, length: int) -> float:
        return 1.0 if peer_id in self.limited else 0.0

    def download_consumed(self, peer_id: str, length: int) -> None:
        pass

    def gets(self, peer_id: str) -> list[int]:
        return [h["i"] for p, h in self.sent if p == peer_id and h["t"] == "get"]


def _picking_swarm(blocks: int = 10) -> tuple[FakeSwarmHost, SwarmScheduler]:
    manifest = Manifest("f", "file", (FileEntry((), blocks * BLOCK, bytes(32), BLOCK),))
    host = FakeSwarmHost()
    swarm = SwarmScheduler(host, "cid")
    swarm.bitfield("A", bitfield.pack(range(blocks), blocks))
    assert host.sent == []  # nothing is asked before the manifest is known
    swarm.start_picking(manifest, set())
    return host, swarm


def test_swarm_keeps_the_starting_pipeline_and_respects_the_rate_limit():
    host, swarm = _picking_swarm()
    host.limited.add("B")
    swarm.bitfield("B", bitfield.pack(range(10), 10))
    swarm.fill_all()
    assert len(host.gets("A")) == START_PIPELINE and host.gets("B") == []
    got = host.gets("A")[0]
    assert swarm.arrived("A", got, BLOCK) is swarm.sources["A"]
    assert swarm.arrived("A", got, BLOCK) is None  # not in flight any more
    swarm.block_done(got, "A")
    swarm.fill_all()  # measured now: 1 block/s wants MIN_PIPELINE, and 3 are in flight
    assert len(host.gets("A")) == START_PIPELINE


def test_pipeline_depth_covers_half_a_second_of_the_measured_rate():
    clock = Clock()
    source = Source("A", meter=Meter(now=clock.seconds))
    assert source.pipeline(BLOCK) == START_PIPELINE  # nothing measured yet
    source.meter.add(10_000_000)
    assert source.pipeline(BLOCK) == 20  # 10 MB/s * 0.5 s / 256 KiB, plus one
    assert Source("B", meter=Meter(now=clock.seconds)).pipeline(BLOCK) == START_PIPELINE
    slow = Source("C", meter=Meter(now=clock.seconds))
    slow.meter.add(1000)
    assert slow.pipeline(BLOCK) == MIN_PIPELINE
    fast = Source("D", meter=Meter(now=clock.seconds))
    fast.meter.add(10**12)
    assert fast.pipeline(BLOCK) == MAX_PIPELINE


def test_swarm_frees_timed_out_requests_and_asks_again():
    host, swarm = _picking_swarm(blocks=START_PIPELINE)
    swarm.fill_all()
    first = sorted(host.gets("A"))
    host.clock.advance(REQUEST_TIMEOUT + 1)
    swarm.tick(host.clock.seconds())
    cancels = sorted(h["i"] for _, h in host.sent if h["t"] == "cancel")
    assert cancels == first
    assert sorted(host.gets("A")) == sorted(first * 2)  # asked again, after the cancels


def test_swarm_on_hold_asks_nothing_and_close_cancels_everything():
    host, swarm = _picking_swarm()
    swarm.fill_all()
    in_flight = sorted(swarm.sources["A"].in_flight)
    swarm.hold()
    swarm.arrived("A", in_flight[0], BLOCK)
    swarm.fill_all()
    assert len(host.gets("A")) == START_PIPELINE
    host.sent.clear()
    swarm.close()
    *cancels, last = host.sent
    assert sorted(h["i"] for _, h in cancels if h["t"] == "cancel") == in_flight[1:]
    assert len(cancels) == len(in_flight) - 1
    assert last == ("A", {"t": "uninterest", "cid": "cid"})


def test_download_states_are_an_enum_shown_as_the_api_strings(tmp_path):
    swarm = Swarm(tmp_path)
    d = swarm.peer()
    manifest = Manifest("f", "file", (FileEntry((), 1, bytes(32), BLOCK),))
    dl = swarm.get(d, str(ContentID.for_manifest(manifest)))
    assert dl.state is DownloadState.FINDING_SOURCES
    status = dl.status()
    assert type(status["state"]) is str and status["state"] == "finding-sources"
    assert json.loads(json.dumps(status))["detail"] == "no sources yet"
    assert files(d).cancel(dl.cid_text)
    assert dl.state is DownloadState.CANCELLED and dl.status()["state"] == "cancelled"
