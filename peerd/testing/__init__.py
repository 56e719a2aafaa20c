"""
In-memory peers and fake providers, for peerd's tests and for provider authors.

Nothing here opens a socket or touches the global reactor.  A
:class:`MemoryNetwork` holds a :class:`~twisted.internet.task.Clock` and any
number of :class:`MemoryPeer`\\ s; each peer is a real
:class:`~peerd.net.manager.PeerManager` with a fresh identity, and connecting two
peers runs the real mutual-TLS handshake, HELLO exchange and stream layer,
with the bytes carried by Twisted's ``iosim`` instead of TCP::

    from peerd.testing import MemoryNetwork, RecordingProvider

    def test_echo():
        net = MemoryNetwork()
        server = net.add_peer({"echo": RecordingProvider("echo", echo=True)})
        client = net.add_peer()
        net.connect(client, server)
        net.flush()
        stream = client.open_stream(server, "echo")  # attaches a StreamRecorder
        stream.write(b"hi")
        net.flush()
        assert stream.protocol.received == b"hi"

Time only moves when the test says so: :meth:`MemoryNetwork.flush` moves
bytes and runs what is due *now* (``Clock.advance(0)``, which runs the
``callLater(0, ...)`` write pumps of :mod:`peerd.net.connection` and of the TLS
layer); :meth:`MemoryNetwork.advance` moves the clock, then flushes.

A provider under test gets a real :class:`peerd.node.ProviderNode` (see
:meth:`MemoryPeer.node`) whose worker pool is :class:`SynchronousWorkers`:
``run_in_thread`` calls the function at once, on the calling thread.
"""

from peerd.testing.network import (
    AGENT,
    PORT,
    MemoryLink,
    MemoryNetwork,
    MemoryPeer,
    NotQuiet,
    SynchronousWorkers,
)
from peerd.testing.providers import RecordingProvider, RecordingProviderFactory, StreamRecorder

__all__ = [
    "AGENT",
    "PORT",
    "MemoryLink",
    "MemoryNetwork",
    "MemoryPeer",
    "NotQuiet",
    "RecordingProvider",
    "RecordingProviderFactory",
    "StreamRecorder",
    "SynchronousWorkers",
]
