"""
Stand-in providers and stream protocols for tests: :class:`StreamRecorder`
records what a stream receives, :class:`RecordingProvider` accepts every
stream, :class:`RecordingProviderFactory` builds them as a plugin would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from peerd.config import ConfigOption
from peerd.interfaces import IResourceProvider, IResourceProviderFactory, IStream


@implementer(IHalfCloseableProtocol)
class StreamRecorder(Protocol):
    """
    A stream protocol that records what happens to it.

    :ivar received: all bytes received, joined.
    :ivar chunks: each ``dataReceived`` call's bytes.
    :ivar ended: the peer half-closed (``readConnectionLost``).
    :ivar lost: the ``Failure`` given to ``connectionLost``, or None.
    :param echo: write every chunk back, and half-close when the peer does.
    """

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.received = b""
        self.chunks: list[bytes] = []
        self.ended = False
        self.write_ended = False
        self.lost: Failure | None = None

    @property
    def stream(self) -> IStream:
        """The stream this protocol is attached to."""
        return self.transport

    def dataReceived(self, data: bytes) -> None:
        """Record ``data``; echo it if asked to."""
        self.received += data
        self.chunks.append(data)
        if self.echo:
            self.transport.write(data)

    def readConnectionLost(self) -> None:
        """The peer sends no more; an echoing recorder half-closes in turn."""
        self.ended = True
        if self.echo:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """We will send no more (IHalfCloseableProtocol)."""
        self.write_ended = True

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Record why the stream ended."""
        self.lost = reason


@implementer(IResourceProvider)
class RecordingProvider:
    """
    An :class:`IResourceProvider` that accepts every stream with a new
    protocol and records it.

    :param name: the provider's name.
    :param echo: attach echoing :class:`StreamRecorder`\\ s.
    :param protocol_factory: ``() -> protocol`` to attach instead.
    :ivar streams: every stream opened to it, in order.
    :ivar protocols: the protocol attached to each.
    :ivar started: / :ivar stopped: whether ``start``/``stop`` were called.
    """

    version = "1.0"

    def __init__(
        self,
        name: str = "recording",
        *,
        echo: bool = False,
        protocol_factory: Callable[[], Any] | None = None,
        node: Any = None,
        config: dict | None = None,
    ) -> None:
        self.name = name
        self.echo = echo
        self.protocol_factory = protocol_factory
        self.node = node
        self.config = config or {}
        self.streams: list[IStream] = []
        self.protocols: list[Any] = []
        self.started = False
        self.stopped = False

    def start(self) -> None:
        """Record the start."""
        self.started = True

    def stop(self) -> None:
        """Record the stop."""
        self.stopped = True

    def stream_opened(self, stream: IStream) -> None:
        """Record ``stream`` and attach a new protocol to it."""
        protocol = (
            self.protocol_factory()
            if self.protocol_factory is not None
            else StreamRecorder(echo=self.echo)
        )
        self.streams.append(stream)
        self.protocols.append(protocol)
        stream.attach(protocol)

    def status(self) -> dict:
        """How many streams it has seen."""
        return {"streams": len(self.streams)}


@implementer(IPlugin, IResourceProviderFactory)
class RecordingProviderFactory:
    """
    An :class:`IResourceProviderFactory` that builds :class:`RecordingProvider`\\ s
    (given the node and config) and keeps them in ``built``.
    """

    def __init__(
        self,
        name: str = "recording",
        *,
        version: str = "1.0",
        enabled_by_default: bool = True,
        config_schema: Mapping[str, ConfigOption] | None = None,
        echo: bool = False,
    ) -> None:
        self.name = name
        self.version = version
        self.enabled_by_default = enabled_by_default
        self.config_schema = dict(config_schema or {})
        self.echo = echo
        self.built: list[RecordingProvider] = []

    def build(self, node: Any, config: dict) -> RecordingProvider:
        """A new :class:`RecordingProvider` holding ``node`` and ``config``."""
        provider = RecordingProvider(self.name, echo=self.echo, node=node, config=config)
        self.built.append(provider)
        return provider

    def __repr__(self) -> str:
        return f"<RecordingProviderFactory {self.name!r}>"
