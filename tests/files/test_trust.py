"""Tests for peerd.providers.files.upload.trust: which blocks need no new hash check."""

from __future__ import annotations

from peerd.providers.files.upload.trust import RACY_NS, BlockTrust

CTIME = 1_000 * 10**9
STAT = (4096, CTIME, 7, 1, CTIME)  # size, mtime_ns, ino, dev, ctime_ns
SETTLED = CTIME + RACY_NS  # a check begun this late counts


def test_checked_blocks_are_trusted_only_under_the_same_stat():
    trust = BlockTrust()
    trust.checked("f", 3, 10, STAT, SETTLED)
    assert trust.is_trusted("f", 3, STAT)
    assert not trust.is_trusted("f", 4, STAT)
    assert not trust.is_trusted("g", 3, STAT)
    moved = (*STAT[:4], CTIME + 1)
    assert not trust.is_trusted("f", 3, moved)


def test_a_new_stat_starts_over():
    trust = BlockTrust()
    trust.checked("f", 1, 10, STAT, SETTLED)
    newer = (*STAT[:4], CTIME + 5 * 10**9)
    trust.checked("f", 2, 10, newer, CTIME + 10 * 10**9)
    assert trust.is_trusted("f", 2, newer)
    assert not trust.is_trusted("f", 1, newer)
    assert not trust.is_trusted("f", 1, STAT)


def test_racy_checks_do_not_count():
    trust = BlockTrust()
    trust.checked("f", 0, 10, STAT, SETTLED - 1)
    trust.checked_all("g", STAT, SETTLED - 1)
    assert not trust.is_trusted("f", 0, STAT)
    assert not trust.is_trusted("g", 0, STAT)


def test_whole_file_and_forget():
    trust = BlockTrust()
    trust.checked_all("f", STAT, SETTLED)
    trust.checked_all(("cid", 1), STAT, SETTLED)
    assert all(trust.is_trusted("f", i, STAT) for i in range(100))
    trust.checked("f", 5, 10, STAT, SETTLED)  # already all: stays all
    assert trust.is_trusted("f", 9, STAT)
    trust.forget(lambda key: key == "f")
    assert not trust.is_trusted("f", 9, STAT)
    assert trust.is_trusted(("cid", 1), 0, STAT)


def test_last_block_of_an_odd_count():
    trust = BlockTrust()
    trust.checked("f", 16, 17, STAT, SETTLED)
    assert trust.is_trusted("f", 16, STAT)
    assert not trust.is_trusted("f", 15, STAT)
