"""
:class:`StorageProvider`: this peer as a storage server (:mod:`.server`,
:mod:`.protocol`) and as a client of other peers' storage (:mod:`.jobs` for the
plumbing; :mod:`.store`, :mod:`.retrieve`, :mod:`.verify`, :mod:`.maintain`
for the verbs), with the API of :mod:`.api`.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from twisted.internet.task import LoopingCall
from zope.interface import implementer

from peerd.disk import write_atomically
from peerd.interfaces import INode, IResourceProvider, IStream
from peerd.providers.storage.jobs import Job, StorageClient
from peerd.providers.storage.protocol import ServerStream
from peerd.providers.storage.server import StorageServer

NAME = "storage"
SECRET_FILE = "client_secret"
MAX_FINISHED_JOBS = 100


class SecretFileDamaged(Exception):
    """The client secret file exists but is not 32 bytes."""


def load_client_secret(data_dir: Path) -> bytes:
    """The per-node client secret (created on first use, mode 0600, never replaced)."""
    path = data_dir / SECRET_FILE
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):
            write_atomically(path, os.urandom(32), replace=False)
        secret = path.read_bytes()
    if len(secret) != 32:
        raise SecretFileDamaged(f"{path}: expected 32 bytes, found {len(secret)}; not replacing it")
    return secret


@implementer(IResourceProvider)
class StorageProvider:
    """The storage provider of one peer."""

    name = NAME

    def __init__(self, node: INode, config: dict) -> None:
        self.node = node
        self.config = config
        self.log = node.log
        self.server = StorageServer(
            node.data_dir,
            clock=node.clock,
            run_in_thread=node.run_in_thread,
            quota=config["quota"],
            max_share_size=config["max_share_size"],
            min_free_disk=config["min_free_disk"],
            max_lease=config["max_lease"],
        )
        self.client: StorageClient | None = None
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._gc = LoopingCall(self._collect)
        self._gc.clock = node.clock
        self.serving = 0

    async def start(self) -> None:
        """Load the share store and the client secret, start lease GC, mount the API."""
        from peerd.providers.storage.api import install_routes

        await self.server.load()
        secret = await self.node.run_in_thread(load_client_secret, self.node.data_dir)
        self.client = StorageClient(
            self.node,
            secret,
            segment_size=self.config["segment_size"],
            request_timeout=self.config["request_timeout"],
        )
        self._gc.start(self.config["lease_gc_interval"], now=False)
        install_routes(self.node.control, self)
        status = self.server.status()
        self.log.info(
            "storage: holding {shares} shares ({used} bytes) of quota {quota}",
            shares=status["shares"],
            used=status["used"],
            quota=status["quota"],
        )

    def stop(self) -> None:
        """Stop lease GC (shares being written are thrown away with their streams)."""
        if self._gc.running:
            self._gc.stop()

    def _collect(self) -> Any:
        d = self.collect()
        d.addErrback(lambda f: self.log.failure("storage: lease GC failed", f))
        return d

    def collect(self) -> Any:
        """Delete the shares whose leases all expired, now."""
        from twisted.internet import defer

        return defer.Deferred.fromCoroutine(self.server.collect())

    def stream_opened(self, stream: IStream) -> None:
        """A peer opened a stream to our storage server."""
        self.serving += 1
        stream.attach(ServerStream(self.server, stream.peer.peer_id))

    def status(self) -> dict:
        """Summary for ``peerctl status`` / ``providers``."""
        s = self.server.status()
        return {
            "quota": s["quota"],
            "used": s["used"],
            "shares": s["shares"],
            "jobs_running": sum(1 for j in self.jobs.values() if not j.finished),
        }

    def _job_ended(self, job: Job) -> Job:
        self.node.emit(
            f"storage.{job.kind}", job={"id": job.id, "state": job.state, "error": job.error}
        )
        return job

    def add_job(self, job: Job) -> Job:
        """Remember a job for the API (and forget old finished ones)."""
        self.jobs[job.id] = job
        self.node.emit(f"storage.{job.kind}", job={"id": job.id, "state": "started", "error": None})
        job.done.addCallback(self._job_ended)
        finished = [j for j in self.jobs.values() if j.finished]
        for old in finished[: max(0, len(finished) - MAX_FINISHED_JOBS)]:
            del self.jobs[old.id]
        return job
