"""
A small in-memory swarm for the files provider's tests: memory peers
(:class:`peerd.testing.MemoryNetwork`) running the real files provider,
plus recorders for what the downloads ask for.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer

from peerd.providers.files.content import ContentID
from peerd.providers.files.download.download import Download
from peerd.providers.files.plugin import FilesFactory
from peerd.testing import MemoryNetwork, MemoryPeer

BLOCK = 256 * 1024
"""The block size ``manifest_for_path`` picks for content up to 1 GiB."""


def payload(size: int, seed: int = 0) -> bytes:
    """``size`` pseudo-random bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


class Swarm:
    """
    A :class:`MemoryNetwork` whose peers run the files provider.

    :param tmp_path: holds the peers' data dirs and the test's files.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.net = MemoryNetwork(data_dir=tmp_path / "peers")
        self._seeds = iter(range(1000, 10_000))

    def peer(self, config: dict[str, str] | None = None, **kwargs: Any) -> MemoryPeer:
        """
        A new peer running the files provider with ``config`` (raw option
        strings) over the defaults, its picker randomness seeded; ``kwargs``
        go to :meth:`MemoryNetwork.add_peer`.
        """
        peer = self.net.add_peer(**kwargs)
        provider = peer.add_provider("files", FilesFactory(), config=config)
        provider.rng.seed(next(self._seeds))
        self.net.flush()
        return peer

    def connect(self, dialer: MemoryPeer, listener: MemoryPeer) -> None:
        """``dialer`` dials ``listener``; both are connected when this returns."""
        results: list = []
        self.net.connect(dialer, listener).addBoth(results.append)
        self.net.flush()
        assert results and not isinstance(results[0], Exception), results
        assert dialer.session(listener) is not None

    def share(self, peer: MemoryPeer, path: Path) -> str:
        """``peer`` shares ``path``; its content ID."""
        results: list = []
        defer.ensureDeferred(files(peer).share(str(path))).addBoth(results.append)
        self.net.flush()
        assert results and isinstance(results[0], dict), results
        return results[0]["cid"]

    def get(
        self,
        peer: MemoryPeer,
        cid: str,
        destination: Path | None = None,
        directory: Path | None = None,
    ) -> Download:
        """``peer`` starts downloading ``cid``."""
        return files(peer).get(
            ContentID.parse(cid),
            str(destination) if destination is not None else None,
            str(directory) if directory is not None else None,
            False,
        )

    def run_until(self, done: Callable[[], bool], limit: float, step: float = 0.1) -> float:
        """
        Advance the clock ``step`` at a time until ``done()`` holds; the
        simulated seconds it took.  Fails after ``limit`` seconds.
        """
        start = self.net.clock.seconds()
        while not done():
            elapsed = self.net.clock.seconds() - start
            assert elapsed < limit, f"still not done after {elapsed:.1f} simulated seconds"
            self.net.advance(step)
        return self.net.clock.seconds() - start

    def run_for(self, seconds: float, step: float = 0.1) -> None:
        """Advance the clock ``seconds``, ``step`` at a time."""
        for _ in range(round(seconds / step)):
            self.net.advance(step)


def files(peer: MemoryPeer) -> Any:
    """The files provider of ``peer``."""
    return peer.providers["files"]


class RequestLog:
    """
    Wraps a files provider's ``request`` (what its downloads send to peers)
    and records each ``get``: ``(peer_id, block index, in endgame)``.

    :param endgame: ``() -> bool``, whether the download is in endgame now
        (asked as the request goes out, after the picker recorded it, so the
        last free block to be picked already counts as endgame).
    """

    def __init__(self, provider: Any, endgame: Callable[[], bool] = lambda: False) -> None:
        self.gets: list[tuple[Any, int, bool]] = []
        self._request = provider.request
        self._endgame = endgame
        provider.request = self

    def __call__(self, peer_id: Any, header: dict) -> None:
        if header.get("t") == "get":
            self.gets.append((peer_id, header["i"], self._endgame()))
        self._request(peer_id, header)

    def counts(self, *, endgame: bool | None = None) -> Counter:
        """Requests per block index (only those made in or out of endgame, if given)."""
        return Counter(i for _, i, e in self.gets if endgame is None or e == endgame)

    def from_peer(self, peer_id: Any) -> list[int]:
        """Block indexes asked of ``peer_id``, in order."""
        return [i for p, i, _ in self.gets if p == peer_id]


class WriteLog:
    """
    Wraps a files provider's ``open_partial`` so every block its downloads
    write to disk is recorded in ``written`` as ``(index, data)``.
    """

    def __init__(self, provider: Any) -> None:
        self.written: list[tuple[int, bytes]] = []
        self._open_partial = provider.open_partial
        provider.open_partial = self

    def __call__(self, download: Download) -> Any:
        partial = self._open_partial(download)
        write_block = partial.write_block

        def recording_write(index: int, data: Any) -> None:
            whole = data if isinstance(data, bytes) else b"".join(data)
            self.written.append((index, whole))
            write_block(index, data)

        partial.write_block = recording_write
        return partial
