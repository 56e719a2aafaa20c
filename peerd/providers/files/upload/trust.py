"""
Which blocks of shared files are known good, so a block is not hashed again
for every upload.

A block that passed its leaf-hash check stays good while its file's full
stat (size, mtime, inode, device, ctime) is unchanged: every write through
the kernel moves ctime, and nothing can set ctime back, so bytes changed
behind our back (even with size and mtime restored) show up as a new stat,
and the next read of each block is hashed again.

The racy rule, as in git: a check that began less than ``racy_ns`` after
the file's ctime does not count, because a write within the same timestamp
tick would leave ctime as it was. Two seconds covers filesystems with coarse
timestamps (FAT's are 2 s).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable

from peerd.providers.files import bitfield

#: ``(st_size, st_mtime_ns, st_ino, st_dev, st_ctime_ns)``
FullStat = tuple[int, int, int, int, int]

RACY_NS = 2_000_000_000


def full_stat(st: os.stat_result) -> FullStat:
    """The change detector of an open file: what a write or a replacement changes."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns)


class BlockTrust:
    """
    Per file (any hashable key), the stat the file had when its blocks were
    checked and which blocks were. Thread-safe.
    """

    def __init__(self, racy_ns: int = RACY_NS, now_ns: Callable[[], int] = time.time_ns) -> None:
        self.racy_ns = racy_ns
        self.now_ns = now_ns
        self._files: dict[Hashable, tuple[FullStat, bytearray | None]] = {}
        self._lock = threading.Lock()

    def is_trusted(self, key: Hashable, block: int, stat: FullStat) -> bool:
        """Whether ``block`` was checked while the file had exactly ``stat``."""
        with self._lock:
            entry = self._files.get(key)
        if entry is None or entry[0] != stat:
            return False
        bits = entry[1]
        return bits is None or bitfield.has(bits, block)

    def checked(
        self, key: Hashable, block: int, block_count: int, stat: FullStat, started_ns: int
    ) -> None:
        """
        ``block`` (of ``block_count``) passed its hash check, read from a file
        whose stat was ``stat`` before and after; the read began at
        ``started_ns`` (wall clock).
        """
        if self.racy(stat, started_ns):
            return
        with self._lock:
            entry = self._files.get(key)
            if entry is None or entry[0] != stat:
                entry = self._files[key] = (stat, bytearray(bitfield.size(block_count)))
            bits = entry[1]
            if bits is not None:
                bitfield.add(bits, block)

    def checked_all(self, key: Hashable, stat: FullStat, started_ns: int) -> None:
        """The whole file was hashed, its stat ``stat`` before and after."""
        if self.racy(stat, started_ns):
            return
        with self._lock:
            self._files[key] = (stat, None)

    def restore(self, key: Hashable, stat: FullStat) -> None:
        """Trust the whole file under ``stat``, known good from before (a saved record)."""
        with self._lock:
            self._files[key] = (stat, None)

    def racy(self, stat: FullStat, started_ns: int) -> bool:
        """Whether a check that began at ``started_ns`` is too close to the file's ctime."""
        return started_ns - stat[4] < self.racy_ns

    def forget(self, match: Callable[[Hashable], bool]) -> None:
        """Drop what is known of every file whose key ``match``es."""
        with self._lock:
            for key in [k for k in self._files if match(k)]:
                del self._files[key]


__all__ = ["RACY_NS", "BlockTrust", "FullStat", "full_stat"]
