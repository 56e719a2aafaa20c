"""Memory networks of storage peers for the storage provider's tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.internet import defer

from peerd.providers.storage.jobs import Job
from peerd.providers.storage.plugin import StorageFactory
from peerd.providers.storage.provider import StorageProvider
from peerd.testing import MemoryNetwork, MemoryPeer


class StorageNet:
    """A client peer and ``servers`` storage peers, all connected to the client."""

    def __init__(
        self,
        tmp_path: Path,
        servers: int,
        config: Mapping[str, str] | None = None,
        server_configs: Mapping[int, Mapping[str, str]] | None = None,
    ) -> None:
        self.net = MemoryNetwork(data_dir=tmp_path / "peers")
        base = {"segment_size": "4KiB", **(config or {})}
        self.client_peer = self.net.add_peer()
        self.client: StorageProvider = self.client_peer.add_provider(
            "storage", StorageFactory(), config=base
        )
        self.servers: list[MemoryPeer] = []
        for i in range(servers):
            peer = self.net.add_peer()
            options = {**base, **(server_configs or {}).get(i, {})}
            peer.add_provider("storage", StorageFactory(), config=options)
            self.servers.append(peer)
            self.net.connect(self.client_peer, peer)
        self.net.flush()

    def provider(self, peer: MemoryPeer) -> StorageProvider:
        """The storage provider of ``peer``."""
        return peer.providers["storage"]  # type: ignore[return-value]

    def finish(self, job: Job, rounds: int = 200) -> Job:
        """Flush (and let timers run) until ``job`` ends."""
        for _ in range(rounds):
            self.net.flush()
            if job.finished:
                return job
            self.net.advance(0.5)
        raise AssertionError(f"job did not finish: {job.status()}")

    def result(self, d: Any) -> Any:
        """The result of a Deferred or coroutine after flushing."""
        if not isinstance(d, defer.Deferred):
            d = defer.Deferred.fromCoroutine(d)
        box: list = []
        d.addBoth(box.append)
        for _ in range(200):
            self.net.flush()
            if box:
                break
            self.net.advance(1)
        assert box, "never fired"
        if hasattr(box[0], "raiseException"):
            box[0].raiseException()
        return box[0]

    def wait(self, seconds: float, step: float = 5.0) -> None:
        """Let ``seconds`` pass in small steps (so keepalives keep sessions up)."""
        while seconds > 0:
            self.net.advance(min(step, seconds))
            seconds -= step

    def disconnect(self, peer: MemoryPeer) -> None:
        """Take ``peer`` off the network."""
        self.client_peer.manager.disconnect(peer.peer_id, "shutdown", "test")
        peer.accepting = False
        self.net.flush()

    def share_files(self, peer: MemoryPeer) -> list[Path]:
        """The share files ``peer`` holds."""
        root = self.provider(peer).node.data_dir / "shares"
        return sorted(p for p in root.rglob("*") if p.is_file() and p.name.isdigit())
