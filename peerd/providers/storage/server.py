"""
The storage server's core: which shares it holds, for whom and until when,
and how much room is left. It knows nothing of streams; the protocol
(:mod:`.protocol`) turns messages into calls. Disk work goes through
``run_in_thread``; the in-memory index is only touched on the reactor thread.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from peerd.config_values import format_size
from peerd.providers.storage.share_files import (
    CorruptShare,
    IndexRecord,
    Lease,
    ShareFiles,
    ShareWriter,
    secret_hash,
    valid_index,
    valid_shnum,
)

log = Logger()

SECTION = "[provider:storage]"


class Space:
    """Quota accounting: bytes held, bytes reserved for shares being written."""

    def __init__(self, quota: int) -> None:
        self.quota = quota
        self.used = 0
        self.reserved = 0

    @property
    def available(self) -> int:
        """What may still be reserved."""
        return max(0, self.quota - self.used - self.reserved)

    def reserve(self, size: int) -> bool:
        """Reserve ``size`` bytes if they fit the quota."""
        if size > self.available:
            return False
        self.reserved += size
        return True

    def release(self, size: int) -> None:
        """An allocation ended without a share."""
        self.reserved = max(0, self.reserved - size)

    def commit(self, reserved: int, actual: int) -> None:
        """An allocation of ``reserved`` became a share of ``actual`` bytes."""
        self.release(reserved)
        self.used += actual

    def freed(self, size: int) -> None:
        """A share of ``size`` bytes was deleted."""
        self.used = max(0, self.used - size)


@dataclass(frozen=True)
class Allocation:
    """The answer to an allocate request."""

    have: list[int]
    writers: dict[int, ShareWriter]
    refused: str | None = None


class StorageServer:
    """
    :param run_in_thread: ``node.run_in_thread``.
    :param disk_free: ``() -> int`` free bytes on the share disk (injected for tests).
    """

    def __init__(
        self,
        root: Path,
        *,
        clock: Any,
        run_in_thread: Callable[..., defer.Deferred],
        quota: int,
        max_share_size: int,
        min_free_disk: int,
        max_lease: float,
        disk_free: Callable[[], int] | None = None,
    ) -> None:
        self.files = ShareFiles(root)
        self.clock = clock
        self.run_in_thread = run_in_thread
        self.space = Space(quota)
        self.max_share_size = max_share_size
        self.min_free_disk = min_free_disk
        self.max_lease = max_lease
        self.disk_free = disk_free or (lambda: shutil.disk_usage(root).free)
        self.records: dict[str, IndexRecord] = {}
        self.corrupt_found = 0
        self.collected = 0
        self.refusals = 0

    async def load(self) -> None:
        """Read the share directory; half-written shares are thrown away."""
        records, removed = await self.run_in_thread(self.files.scan)
        self.records = records
        self.space.used = sum(r.size for r in records.values())
        if removed:
            log.info("storage: removed {n} half-written shares", n=removed)

    # -- writing ------------------------------------------------------------------------

    async def allocate(
        self,
        si: str,
        shnums: list[int],
        share_size: int,
        owner: str,
        secret: bytes,
        lease_seconds: float,
    ) -> Allocation:
        """
        Make room for ``shnums`` of ``si`` (``share_size`` bytes each) and take
        a lease for ``owner``; shares already held are reported in ``have``
        (and the lease covers them too). Refused whole when over a limit.
        """
        if not valid_index(si) or not all(valid_shnum(sh) for sh in shnums):
            raise ValueError("not a storage index or share number")
        record = self.records.get(si)
        have = sorted(sh for sh in shnums if record is not None and sh in record.shares)
        new = [sh for sh in shnums if sh not in have]
        total = share_size * len(new)
        refused = None
        if share_size > self.max_share_size:
            refused = (
                f"share of {format_size(share_size)} exceeds max_share_size "
                f"{format_size(self.max_share_size)}"
            )
            key = "max_share_size"
        elif total > self.space.available:
            refused = (
                f"quota: {format_size(self.space.available)} of "
                f"{format_size(self.space.quota)} left, {format_size(total)} needed"
            )
            key = "quota"
        elif total and self.disk_free() - total < self.min_free_disk:
            refused = f"disk: storing would leave less than min_free_disk ({format_size(self.min_free_disk)}) free"
            key = "min_free_disk"
        if refused is not None:
            self.refusals += 1
            log.warn(
                "storage: refused {count} shares of {si}: {why} ({section} {key})",
                count=len(new),
                si=si,
                why=refused,
                section=SECTION,
                key=key,
            )
            return Allocation([], {}, refused)
        self.space.reserve(total)
        self.add_lease(si, owner, secret, lease_seconds)
        if have:
            await self.run_in_thread(self.files.write_leases, si, self.records[si].leases)
        writers: dict[int, ShareWriter] = {}
        try:
            for sh in new:
                writers[sh] = await self.run_in_thread(self.files.writer, si, sh, share_size)
        except Exception:
            for writer in writers.values():
                await self.run_in_thread(writer.abort)
            self.space.release(total)
            raise
        return Allocation(have, writers)

    def add_lease(self, si: str, owner: str, secret: bytes, seconds: float) -> None:
        """Add or extend ``owner``'s lease on ``si`` (in memory)."""
        record = self.records.setdefault(si, IndexRecord())
        digest = secret_hash(secret)
        expires = self.clock.seconds() + min(seconds, self.max_lease)
        for lease in record.leases:
            if lease.secret_hash == digest:
                lease.expires = max(lease.expires, expires)
                lease.owner = owner
                return
        record.leases.append(Lease(owner, digest, expires))

    async def commit(self, writer: ShareWriter, ueb: bytes, hashes: bytes) -> int:
        """Persist the leases, then verify and rename the share into place."""
        record = self.records.setdefault(writer.si, IndexRecord())
        leases = list(record.leases)

        def work() -> int:
            self.files.write_leases(writer.si, leases)
            return writer.commit(ueb, hashes)

        try:
            size = await self.run_in_thread(work)
        except Exception:
            await self.abort(writer)
            raise
        record = self.records.setdefault(writer.si, IndexRecord())
        old = record.shares.get(writer.shnum)
        if old is not None:
            self.space.freed(old)
        record.shares[writer.shnum] = size
        self.space.commit(writer.allocated, size)
        return size

    async def abort(self, writer: ShareWriter) -> None:
        """Throw away a share being written and its reservation."""
        if writer.done:
            return
        self.space.release(writer.allocated)
        await self.run_in_thread(writer.abort)

    # -- reading --------------------------------------------------------------------------

    def held(self, si: str) -> list[int]:
        """Share numbers of ``si`` held here."""
        record = self.records.get(si)
        return sorted(record.shares) if record is not None else []

    async def read_trailer(self, si: str, shnum: int) -> tuple[bytes, bytes]:
        """UEB and block hashes of a share. :raises CorruptShare: / FileNotFoundError"""
        self._check_held(si, shnum)
        try:
            info = await self.run_in_thread(self.files.info, si, shnum)
        except CorruptShare as e:
            await self._corrupt(si, shnum, e)
            raise
        return info.ueb, info.hashes

    async def read_block(self, si: str, shnum: int, seg: int) -> bytes:
        """One verified block. :raises CorruptShare: / FileNotFoundError / IndexError"""
        self._check_held(si, shnum)
        try:
            return await self.run_in_thread(self.files.read_block, si, shnum, seg)
        except CorruptShare as e:
            await self._corrupt(si, shnum, e)
            raise

    def _check_held(self, si: str, shnum: int) -> None:
        if shnum not in self.held(si):
            raise FileNotFoundError(f"no share {shnum} of {si} here")

    async def _corrupt(self, si: str, shnum: int, error: Exception) -> None:
        """A share failed its check: drop it so it is neither served nor counted."""
        self.corrupt_found += 1
        log.warn(
            "storage: share {sh} of {si} is corrupt ({e}); deleting it", sh=shnum, si=si, e=error
        )
        record = self.records.get(si)
        if record is not None and shnum in record.shares:
            self.space.freed(record.shares.pop(shnum))
        await self.run_in_thread(self.files.delete_share, si, shnum)

    # -- leases ---------------------------------------------------------------------------

    async def renew(self, si: str, secret: bytes, seconds: float) -> bool:
        """Extend the lease whose secret this is; False if there is none."""
        record = self.records.get(si)
        digest = secret_hash(secret)
        if record is None:
            return False
        for lease in record.leases:
            if lease.secret_hash == digest:
                lease.expires = max(
                    lease.expires, self.clock.seconds() + min(seconds, self.max_lease)
                )
                await self.run_in_thread(self.files.write_leases, si, list(record.leases))
                return True
        return False

    async def cancel(self, si: str, secret: bytes) -> bool:
        """Drop the lease whose secret this is; the shares go with the last lease."""
        record = self.records.get(si)
        digest = secret_hash(secret)
        if record is None or not any(lease.secret_hash == digest for lease in record.leases):
            return False
        record.leases = [lease for lease in record.leases if lease.secret_hash != digest]
        if not record.leases:
            await self._delete(si)
        else:
            await self.run_in_thread(self.files.write_leases, si, list(record.leases))
        return True

    def expired(self) -> list[str]:
        """Indexes whose every lease has expired."""
        now = self.clock.seconds()
        return [
            si
            for si, record in self.records.items()
            if all(lease.expires <= now for lease in record.leases)
        ]

    async def collect(self) -> int:
        """Delete the shares of expired indexes; returns how many indexes went."""
        gone = self.expired()
        for si in gone:
            await self._delete(si)
        if gone:
            self.collected += len(gone)
            log.info("storage: lease expired on {n} storage indexes; shares deleted", n=len(gone))
        return len(gone)

    async def _delete(self, si: str) -> None:
        record = self.records.pop(si, None)
        if record is not None:
            self.space.freed(record.size)
        await self.run_in_thread(self.files.delete_index, si)

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict:
        """Quota, use, shares held, by owner."""
        owners: dict[str, dict[str, int]] = {}
        now = self.clock.seconds()
        for record in self.records.values():
            for owner in {lease.owner for lease in record.leases if lease.expires > now}:
                entry = owners.setdefault(owner, {"indexes": 0, "shares": 0, "bytes": 0})
                entry["indexes"] += 1
                entry["shares"] += len(record.shares)
                entry["bytes"] += record.size
        return {
            "quota": self.space.quota,
            "used": self.space.used,
            "reserved": self.space.reserved,
            "available": self.space.available,
            "max_share_size": self.max_share_size,
            "min_free_disk": self.min_free_disk,
            "indexes": sum(1 for r in self.records.values() if r.shares),
            "shares": sum(len(r.shares) for r in self.records.values()),
            "owners": owners,
            "corrupt_found": self.corrupt_found,
            "expired_collected": self.collected,
            "refused": self.refusals,
        }


__all__ = ["Allocation", "Space", "StorageServer", "valid_index", "valid_shnum"]
