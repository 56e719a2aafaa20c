"""
Stream throughput over real mutual TLS on loopback: one bulk peerd stream
from a sender process to a receiver process (each with its own reactor),
with both sides' CPU seconds.  Compare with BASELINES.md's "Twisted +
pyOpenSSL, TLS 1.3 stream" ceiling (about 1,350 MB/s).

    python bench/stream_throughput.py [--mib 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from peerd.identity import Identity
from peerd.net.connection import ConnectionSettings
from peerd.net.manager import NetworkPolicy, PeerManager, tls_dialer
from peerd.peerid import PeerAddress, PeerID
from peerd.tls import PeerTLSPolicy
from peerd.wire.messages import Hello

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


def manager(reactor, identity: Identity, providers: dict, route) -> PeerManager:
    policy = PeerTLSPolicy(identity)
    m = PeerManager(
        local_peer_id=identity.peer_id,
        clock=reactor,
        settings=ConnectionSettings(window=int(os.environ.get("WINDOW", 1 << 20))),
        policy=NetworkPolicy(),
        dial=tls_dialer(reactor, policy),
        hello=lambda: Hello(str(identity.peer_id), "bench", providers=providers),
        route_stream=route,
    )
    m.tls = policy  # type: ignore[attr-defined]
    return m


async def receiver(reactor) -> None:
    from twisted.internet.endpoints import TCP4ServerEndpoint

    from peerd.service import InboundFactory

    done: defer.Deferred = defer.Deferred()
    ident = Identity.generate()
    m = manager(reactor, ident, {"sink": "1"}, lambda s: s.attach(Sink(s.header["size"], done)))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        InboundFactory(m.tls, m, reactor)
    )
    print(json.dumps({"port": port.getHost().port, "peer_id": str(ident.peer_id)}), flush=True)
    cpu = time.process_time()
    await done
    print(json.dumps({"cpu": time.process_time() - cpu}), flush=True)
    await m.stop()


async def sender(reactor, total: int) -> None:
    child = subprocess.Popen(
        [sys.executable, __file__, "--receiver"], stdout=subprocess.PIPE, text=True
    )
    hello = json.loads(child.stdout.readline())
    m = manager(reactor, Identity.generate(), {}, lambda s: s.reset("no"))
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
