"""Tests for peerd.providers.files.download.picker."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerd.providers.files import bitfield
from peerd.providers.files.download.picker import BlockPicker


def picker(count: int, have=(), seed: int = 0) -> BlockPicker:
    return BlockPicker(count, have, random.Random(seed))


def test_rarest_first():
    """The block held by the fewest sources is picked first, then the next rarest."""
    p = picker(5)
    p.add_source("A", range(5))
    p.add_source("B", [0, 1, 2])
    p.add_source("C", [0, 1])
    p.add_source("D", [0])
    assert [p.availability(i) for i in range(5)] == [4, 3, 2, 1, 1]
    first = p.next_requests("A", 1)
    assert first in ([3], [4])
    assert sorted(first + p.next_requests("A", 2)) == [2, 3, 4]
    assert p.next_requests("A", 5) == [1, 0]


def test_rarest_first_for_a_sparse_source():
    """A source holding few of the wanted blocks still gets its rarest ones first."""
    p = picker(1000)
    p.add_source("seed", range(1000))
    p.add_source("other", range(500))
    p.add_source("sparse", [3, 700, 701, 702])
    assert sorted(p.next_requests("sparse", 3)) == [700, 701, 702]
    assert p.next_requests("sparse", 3) == [3]
    assert all(p.availability(b) == 2 for b in (700, 701, 702))


def test_ties_are_random_but_seeded():
    """Equally rare blocks are picked in an order that depends only on the rng's seed."""

    def picks(seed: int) -> list[int]:
        p = picker(200, seed=seed)
        p.add_source("A", range(200))
        return p.next_requests("A", 5)

    assert picks(1) == picks(1)
    assert len({tuple(picks(seed)) for seed in range(10)}) > 5


def test_never_a_block_we_have_or_the_peer_lacks():
    """Picks are limited to blocks the peer has and we lack."""
    p = picker(6, have=[0, 2, 4])
    p.add_source("A", [0, 1, 2, 3])
    assert p.progress == (3, 6)
    assert sorted(p.next_requests("A", 10)) == [1, 3]
    assert p.next_requests("A", 10) == []
    assert p.next_requests("stranger", 10) == []


def test_no_duplicates_until_endgame_then_cancels():
    """Blocks go to one source each until all are in flight; then duplicates, and done cancels them."""
    p = picker(10)
    p.add_source("A", range(10))
    p.add_source("B", range(10))
    a = p.next_requests("A", 5)
    assert not p.endgame
    b = p.next_requests("B", 10)
    assert sorted(a + b) == list(range(10))
    assert p.endgame
    dup = p.next_requests("B", 2)
    assert len(dup) == 2 and set(dup) <= set(a)
    assert sorted(p.next_requests("B", 10)) == sorted(set(a) - set(dup))
    assert p.in_flight("B") == frozenset(range(10))
    assert p.next_requests("B", 10) == []
    assert sorted(p.next_requests("A", 10)) == sorted(b)
    assert p.next_requests("A", 10) == []
    assert p.block_done(dup[0], "A") == ["B"]
    assert p.in_flight_count("B") == 9
    assert p.block_done(b[0], "B") == ["A"]
    assert p.block_done(b[0], "A") == []
    assert p.missing == 8


def test_endgame_prefers_least_duplicated_blocks():
    """In endgame a source first duplicates the blocks with the fewest requesters."""
    p = picker(3)
    for s in "ABC":
        p.add_source(s, range(3))
    p.next_requests("A", 3)
    p.next_requests("B", 1)
    assert len(p.next_requests("C", 2)) == 2
    assert p.in_flight("C") == frozenset(range(3)) - p.in_flight("B")


def test_remove_source_frees_its_requests_and_lowers_availability():
    """A departed source's requests become free and its blocks no longer count."""
    p = picker(4)
    p.add_source("A", range(4))
    p.add_source("B", range(4))
    taken = p.next_requests("A", 2)
    assert p.remove_source("A") == sorted(taken)
    assert [p.availability(i) for i in range(4)] == [1, 1, 1, 1]
    assert sorted(p.next_requests("B", 4)) == [0, 1, 2, 3]
    assert p.remove_source("A") == []
    assert p.sources() == ["B"]


def test_remove_source_in_endgame_keeps_blocks_others_fetch():
    """A block also in flight to another source is not reported as freed."""
    p = picker(2)
    p.add_source("A", range(2))
    p.add_source("B", range(2))
    [a] = p.next_requests("A", 1)
    [b] = p.next_requests("B", 1)
    assert p.next_requests("A", 1) == [b]  # endgame duplicate of B's block
    assert p.remove_source("A") == [a]
    assert p.in_flight_count("A") == 0
    assert p.in_flight("B") == {b}
    assert p.availability(a) == 1
    assert p.next_requests("B", 2) == [a]


def test_failed_block_is_requested_from_another_source():
    """A block that failed from one source goes to another and is not asked of the first again."""
    p = picker(1)
    p.add_source("A", [0])
    assert p.next_requests("A", 1) == [0]
    p.block_failed(0, "A")
    assert p.in_flight_count("A") == 0
    assert p.next_requests("A", 1) == []
    p.add_source("B", [0])
    assert p.next_requests("B", 1) == [0]
    assert p.block_done(0, "B") == []
    assert p.complete


def test_timed_out_request_is_free_again():
    """A timed-out request frees its block, even for the same source."""
    p = picker(1)
    p.add_source("A", [0])
    assert p.next_requests("A", 1) == [0]
    assert p.next_requests("A", 1) == []
    p.request_timeout(0, "A")
    assert p.next_requests("A", 1) == [0]


def test_release_requests_keeps_the_source():
    """Releasing a choking source's requests frees them but keeps its bitfield."""
    p = picker(3)
    p.add_source("A", range(3))
    p.next_requests("A", 3)
    assert p.release_requests("A") == [0, 1, 2]
    assert p.availability(1) == 1
    assert len(p.next_requests("A", 3)) == 3


def test_have_updates_make_blocks_requestable():
    """HAVE announcements raise availability; an unknown source becomes known."""
    p = picker(3)
    p.source_has("A", 2)
    p.source_has("A", 2)
    assert p.availability(2) == 1
    assert p.interesting("A")
    assert p.next_requests("A", 3) == [2]
    p.source_has("B", 1)
    assert p.next_requests("A", 3) == []
    p.block_done(2, "A")
    assert not p.interesting("A")
    with pytest.raises(IndexError):
        p.source_has("A", 3)


def test_bitfield_forms():
    """Bitfields may be index iterables or one flag byte per block (a packed one unpacked)."""
    p = picker(3, have=b"\x00\x07\x00")
    p.add_source("A", bitfield.unpack(b"\xe0", 3))
    assert p.missing_blocks() == [0, 2]
    assert sorted(p.next_requests("A", 3)) == [0, 2]
    with pytest.raises(ValueError):
        p.add_source("B", b"\x01")
    with pytest.raises(IndexError):
        p.add_source("B", [3])


def test_resumed_complete_download_requests_nothing():
    """A download that already holds every block is complete and asks for nothing."""
    p = picker(4, have=range(4))
    p.add_source("A", range(4))
    assert p.complete and p.missing == 0 and not p.endgame
    assert p.next_requests("A", 4) == []


@settings(max_examples=150, deadline=None)
@given(
    count=st.integers(1, 300),
    sources=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_simulated_swarm_completes(count, sources, seed):
    """
    Sources with random bitfields covering every block always complete the
    download; outside endgame each pick is rarest among what the source could
    give and in flight nowhere else, and no source is asked twice for a block
    it still owes (nor ever again, unless its request timed out).
    """
    rng = random.Random(seed)
    have = {b for b in range(count) if rng.random() < 0.2}
    bitfields: dict[str, set[int]] = {}
    for i in range(sources):
        density = rng.choice([0.02, 0.1, 0.5, 0.9, 1.0])
        bitfields[f"s{i}"] = {b for b in range(count) if rng.random() < density}
    for b in range(count):
        if not any(b in bits for bits in bitfields.values()):
            bitfields[rng.choice(list(bitfields))].add(b)
    p = BlockPicker(count, have, random.Random(seed + 1))
    generation = {name: 0 for name in bitfields}

    def conn(name: str) -> tuple[str, int]:
        return name, generation[name]

    for name, bits in bitfields.items():
        p.add_source(conn(name), bits)
    outstanding: dict[tuple[str, int], list[int]] = {conn(n): [] for n in bitfields}
    asked: set[tuple[tuple[str, int], int]] = set()

    def held_by(b: int) -> int:
        return sum(b in bitfields[n] for n in bitfields)

    for _ in range(20 * count + 100):
        if p.complete:
            break
        for name in bitfields:
            peer = conn(name)
            in_flight_anywhere = {b for bs in outstanding.values() for b in bs}
            wanted = bitfields[name] - have
            endgame = all(
                b in in_flight_anywhere for b in range(count) if b not in have and held_by(b)
            )
            picks = p.next_requests(peer, rng.randint(1, 8) - len(outstanding[peer]))
            assert len(set(picks)) == len(picks)
            assert set(picks) <= wanted
            for b in picks:
                assert b not in outstanding[peer]
                assert (peer, b) not in asked
                asked.add((peer, b))
            if not endgame and picks:
                assert not set(picks) & in_flight_anywhere
                eligible = wanted - in_flight_anywhere - set(picks)
                if eligible:
                    assert max(map(held_by, picks)) <= min(map(held_by, eligible))
            outstanding[peer].extend(picks)
            assert p.in_flight(peer) == frozenset(outstanding[peer])
        busy = [peer for peer, bs in outstanding.items() if bs]
        assert busy, "stuck: nothing in flight and not complete"
        peer = rng.choice(busy)
        b = outstanding[peer][0]
        event = rng.random()
        if event < 0.05:
            p.request_timeout(b, peer)
            outstanding[peer].remove(b)
            asked.discard((peer, b))
        elif event < 0.08:
            name = peer[0]
            freed = p.remove_source(peer)
            others = {x for q, bs in outstanding.items() if q != peer for x in bs}
            assert freed == sorted(set(outstanding.pop(peer)) - others)
            generation[name] += 1
            outstanding[conn(name)] = []
            p.add_source(conn(name), bitfields[name])
        else:
            expected = [q for q, bs in outstanding.items() if q != peer and b in bs]
            assert sorted(p.block_done(b, peer)) == sorted(expected)
            have.add(b)
            for bs in outstanding.values():
                if b in bs:
                    bs.remove(b)
            if rng.random() < 0.3:
                name = rng.choice(list(bitfields))
                bitfields[name].add(b)
                p.source_has(conn(name), b)
    assert p.complete
    assert p.progress == (count, count)
    assert all(p.in_flight_count(peer) == 0 for peer in outstanding)
