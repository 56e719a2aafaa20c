"""
Stream throughput over real mutual TLS on loopback: one bulk peerd stream
from a sender process to a receiver process (each with its own reactor),
with both sides' CPU seconds.  Compare with BASELINES.md's "Twisted +
pyOpenSSL, TLS 1.3 stream" ceiling (about 1,350 MB/s).

    python bench/stream_throughput.py [--mib 1024]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from peerd.identity import Identity
from peerd.net.connection import ConnectionSettings
from peerd.net.manager import tls_dialer
from peerd.peer import LocalPeer
from peerd.peerid import PeerAddress, PeerID

CHUNK = b"x" * (256 * 1024)


class Sink(Protocol):
    """Counts bytes; closes the stream once the announced size has arrived."""

    def __init__(self, total: int, done: defer.Deferred) -> None:
        self.total, self.got, self.done = total, 0, done

    def dataReceived(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= self.total:
            self.transport.loseConnection()

    def connectionLost(self, reason: object) -> None:
        if not self.done.called:
            self.done.callback(self.got)


@implementer(IPushProducer)
class Source(Protocol):
    """Writes ``total`` bytes as fast as the stream lets it."""

    def __init__(self, total: int, done: defer.Deferred) -> None:
        self.left, self.paused, self.done = total, False, done

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.left > 0:
            self.transport.write(CHUNK)
            self.left -= len(CHUNK)

    def stopProducing(self) -> None:
        self.left = 0

    def connectionLost(self, reason: object) -> None:
        if not self.done.called:
            self.done.callback(None)


class SinkProvider:
    """A provider named ``sink`` whose streams are read to the end."""

    name = "sink"

    def __init__(self, done: defer.Deferred) -> None:
        self.done = done

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def status(self) -> dict:
        return {}

    def stream_opened(self, stream) -> None:
        stream.attach(Sink(stream.header["size"], self.done))


def local_peer(reactor) -> LocalPeer:
    """A peer put together as the daemon does it, with no providers and no disk state."""
    data_dir = Path(tempfile.mkdtemp(prefix="peerd-bench-"))
    atexit.register(shutil.rmtree, data_dir, True)
    return LocalPeer(
        Identity.generate(),
        clock=reactor,
        data_dir=data_dir,
        dialer=lambda tls_policy: tls_dialer(reactor, tls_policy),
        workers=None,
        connection_settings=ConnectionSettings(window=int(os.environ.get("WINDOW", 1 << 20))),
        agent="bench",
    )


async def receiver(reactor) -> None:
    from twisted.internet.endpoints import TCP4ServerEndpoint

    done: defer.Deferred = defer.Deferred()
    peer = local_peer(reactor)
    peer.add_provider("sink", SinkProvider(done), "1")
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        peer.inbound_factory()
    )
    print(json.dumps({"port": port.getHost().port, "peer_id": str(peer.peer_id)}), flush=True)
    cpu = time.process_time()
    await done
    print(json.dumps({"cpu": time.process_time() - cpu}), flush=True)
    await peer.manager.stop()


async def sender(reactor, total: int) -> None:
    child = subprocess.Popen(
        [sys.executable, __file__, "--receiver"], stdout=subprocess.PIPE, text=True
    )
    hello = json.loads(child.stdout.readline())
    peer = local_peer(reactor)
    m = peer.manager
    conn = await m.connect(PeerAddress("127.0.0.1", hello["port"], PeerID.parse(hello["peer_id"])))
    done: defer.Deferred = defer.Deferred()
    start, cpu = time.perf_counter(), time.process_time()
    conn.open_stream("sink", {"size": total}, Source(total, done))
    await done
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    receiver_cpu = json.loads(child.stdout.readline())["cpu"]
    child.wait()
    await m.stop()
    gib = total / 2**30
    print(f"{'MiB':>6} {'seconds':>8} {'MB/s':>8} {'send CPU s/GiB':>15} {'recv CPU s/GiB':>15}")
    print(
        f"{total / 2**20:>6.0f} {elapsed:>8.2f} {total / elapsed / 1e6:>8.0f} "
        f"{cpu / gib:>15.2f} {receiver_cpu / gib:>15.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from twisted.internet import reactor

    if args.receiver and os.environ.get("PROFILE_RECEIVER"):
        import atexit
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        atexit.register(lambda: profiler.dump_stats(os.environ["PROFILE_RECEIVER"]))
    work = receiver(reactor) if args.receiver else sender(reactor, args.mib * 2**20)
    d = defer.Deferred.fromCoroutine(work)
    d.addErrback(lambda f: f.printTraceback())
    d.addBoth(lambda _: reactor.stop())
    reactor.run()


if __name__ == "__main__":
    main()
