"""
The contracts of peerd.

Every zope Interface of the project lives here.  A resource provider is a
plugin (:class:`IResourceProviderFactory`) that builds an
:class:`IResourceProvider`; the provider sees the rest of the daemon only
through the :class:`INode` it is handed.  Streams (:class:`IStream`) are the
only way providers talk to other peers.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface


class StreamReset(ConnectionDone):
    """
    A stream was aborted, by the peer or locally: the reason a stream
    protocol's ``connectionLost`` gets. ``code`` is the machine word of
    :meth:`IStream.reset`, ``reason`` the human text.
    """

    def __init__(self, code: str, reason: str = "") -> None:
        super().__init__(f"stream reset ({code}): {reason}" if reason else f"stream reset ({code})")
        self.code = code
        self.reason = reason


class NotConnected(Exception):
    """:meth:`INode.open_stream`: the peer has no session with us, or does not offer the provider."""


class IResourceProviderFactory(IPlugin):
    """
    A provider plugin, found with ``twisted.plugin.getPlugins`` in the
    ``peerd.plugins`` package.
    """

    name = Attribute(
        "``str``: the provider's name; its config section is ``[provider:NAME]``, "
        "its API routes live under ``/api/v1/providers/NAME/`` and incoming "
        "streams tagged with this name are handed to it. Lowercase letters, "
        "digits, ``-`` and ``_``."
    )
    version = Attribute(
        "``str``: the provider's protocol version, announced to peers in the handshake."
    )
    enabled_by_default = Attribute(
        "``bool``: whether the provider runs when its section is absent or has no ``enabled`` key."
    )
    config_schema = Attribute(
        "``Mapping[str, peerd.config.ConfigOption]``: the keys allowed in the "
        "provider's section (besides ``enabled``), with parser, default and doc."
    )

    def build(node: INode, config: dict) -> IResourceProvider:
        """
        Build the provider.

        :param node: what the provider may use of the daemon.
        :param config: the provider's section, parsed against ``config_schema``:
            every key of the schema is present, with the parsed value.
        """


class IResourceProvider(Interface):
    """
    A running provider: lends one kind of resource to other peers.
    """

    name = Attribute("``str``: same as its factory's name.")

    def start() -> object:
        """
        Start serving. May return a Deferred; the daemon waits for it before
        it reports itself ready. An exception stops only this provider.
        """

    def stop() -> object:
        """
        Stop serving and release resources. May return a Deferred; the daemon
        waits for it (bounded) on shutdown.
        """

    def stream_opened(stream: IStream) -> None:
        """
        A peer opened a stream to this provider.

        The provider attaches a protocol with ``stream.attach(protocol)``
        before returning (or resets the stream). ``stream.header`` holds what
        the opener sent with the open request. An exception raised here resets
        the stream and is logged; the daemon keeps running.
        """

    def status() -> dict:
        """
        A JSON-serialisable summary for ``peerctl status`` and the API.
        """


class IPeerInfo(Interface):
    """
    What is known of one connected peer (read-only snapshot semantics).
    """

    peer_id = Attribute("``peerd.identity.PeerID``: the identity the peer proved with TLS.")
    address = Attribute("``str``: the remote transport address, ``host:port``.")
    direction = Attribute("``str``: ``'inbound'`` or ``'outbound'``.")
    providers = Attribute("``dict[str, str]``: provider name to version, from its handshake.")
    listen_addresses = Attribute(
        "``list[str]``: the dialable addresses the peer announced (``PEERID@host:port``)."
    )
    agent = Attribute("``str``: the peer's software, from its handshake.")
    connected_since = Attribute("``float``: POSIX time the session was established.")
    relay = Attribute("``PeerID | None``: the relay this session runs through, or None if direct.")


class IPeerObserver(Interface):
    """
    Told when peer sessions come and go.  Register with
    :meth:`INode.add_peer_observer`.
    """

    def peer_connected(peer: IPeerInfo) -> None:
        """A session with ``peer`` completed its handshake."""

    def peer_disconnected(peer: IPeerInfo, reason: str) -> None:
        """The session with ``peer`` ended; its streams are gone."""


class IStream(ITransport, IConsumer, IPushProducer):
    """
    One multiplexed, flow-controlled, bidirectional byte stream to a peer.

    It is a Twisted transport: the attached protocol gets ``makeConnection``,
    ``dataReceived`` and ``connectionLost``. ``write`` never blocks: register
    a streaming producer (``registerProducer(p, True)``) and it is paused
    while the peer's window is exhausted. ``pauseProducing`` stops granting
    the peer window, so the remote sender pauses. ``loseConnection`` sends
    end-of-stream after buffered data; ``abortConnection`` resets the stream.
    """

    stream_id = Attribute("``int``: the stream's number on its connection.")
    peer = Attribute("``IPeerInfo``: the peer at the other end.")
    provider = Attribute("``str``: the provider the stream belongs to.")
    header = Attribute("``dict``: metadata sent by the opener with the open request.")

    def attach(protocol: object) -> None:
        """
        Connect ``protocol`` (an ``IProtocol``) to this stream; data that
        arrived before is delivered right after ``makeConnection``.
        ``dataReceived`` gets ``bytes``; a protocol whose
        ``accepts_buffers`` attribute is true may get ``memoryview`` pieces
        instead, which saves a copy on bulk transfers.
        """

    def reset(reason: str, code: str = "cancelled") -> None:
        """
        Abort the stream at once, telling the peer ``code`` and ``reason``.

        ``code`` is a short machine-readable word (at most 64 characters)
        the other side's protocol sees as :class:`StreamReset` ``.code``;
        ``reason`` is for humans (at most 500 characters). The codes peerd
        itself uses: ``cancelled`` (the default: the application gave up),
        ``refused`` (the request is not allowed; the reason says which
        limit or rule), ``unknown-provider``, ``provider-error`` (the
        provider raised). Providers may add their own, such as the relay's
        ``no-reservation``.
        """


class IControlRouter(Interface):
    """
    Where a provider mounts its control API routes, under
    ``/api/v1/providers/NAME/``.
    """

    def route(method: str, path: str, handler: object) -> None:
        """
        Serve ``method`` (``GET``, ``POST``, ``PUT``, ``DELETE``) on ``path``, relative
        to the provider's prefix. Path segments written ``{name}`` match one
        segment and are passed to the handler as keyword arguments.

        ``handler(request, **params)`` gets a
        :class:`peerd.control.router.ApiRequest` and returns a
        JSON-serialisable value or a Deferred/coroutine of one (answered
        200), or a :class:`peerd.control.router.ApiResponse` for another
        status; raising :class:`peerd.control.router.ApiError` answers with
        its status and message.
        """


class INode(Interface):
    """
    What a provider may use of the daemon that runs it.
    """

    peer_id = Attribute("``PeerID``: this peer's identity.")
    clock = Attribute("``IReactorTime``: the clock; use it for every timer.")
    reactor = Attribute("The reactor, for anything the clock does not cover.")
    log = Attribute("``twisted.logger.Logger`` namespaced for the provider.")
    data_dir = Attribute(
        "``pathlib.Path``: a directory of the provider's own inside the data "
        "dir, created (mode 0700) before ``build``."
    )
    control = Attribute("``IControlRouter`` for the provider's own API routes.")

    def connected_peers() -> list:
        """``list[IPeerInfo]`` of every peer with an established session."""

    def peer(peer_id: object) -> IPeerInfo | None:
        """The connected peer with that ``PeerID``, or ``None``."""

    def open_stream(peer_id: object, header: dict, protocol: object) -> object:
        """
        Open a stream to this provider's counterpart on a connected peer.

        :return: a Deferred that fires with the :class:`IStream` once
            ``protocol`` is attached, or fails if the peer is not connected,
            does not offer the provider, or refuses.
        """

    def connect(address: str) -> object:
        """
        Dial ``PEERID@host:port`` (or ``host:port``) unless already
        connected. Returns a Deferred firing with the :class:`IPeerInfo`.
        """

    def disconnect(peer_id: object, reason: str) -> None:
        """
        Close the session with ``peer_id`` (GOAWAY ``misbehaving`` with
        ``reason``), e.g. after it sent data that failed verification.
        """

    def addresses() -> list:
        """``list[str]``: this peer's dialable addresses, direct and relayed."""

    reachable = Attribute(
        "``bool``: whether this peer accepts direct inbound connections "
        "(``[peer] listen`` is not ``none``)."
    )

    def set_relayed_addresses(addresses: list) -> None:
        """
        Add these relayed addresses (``PEERID@RELAYID@host:port``) to the
        ones this peer announces, replacing any set before, and tell every
        connected peer (UPDATE). For the relay provider.
        """

    def set_relay_dialer(dialer: object) -> None:
        """
        ``dialer(address: PeerAddress) -> Deferred[IStream]`` opens a circuit
        to a relayed address; the daemon then runs a peer session through it.
        For the relay provider.
        """

    def session_over(
        stream: IStream, initiator: bool, expected_peer_id: object, via: object
    ) -> object:
        """
        Run a full mutual-TLS peer session inside ``stream`` (one end of a
        relay circuit), with the same PeerID checks as a direct connection.
        A Deferred firing with the peer's :class:`IPeerInfo`.
        """

    def add_peer_observer(observer: IPeerObserver) -> None:
        """Be told of peer sessions that start and end from now on."""

    def remove_peer_observer(observer: IPeerObserver) -> None:
        """Stop telling ``observer``."""

    def emit(event_type: str, **fields: object) -> None:
        """
        Publish an event on the daemon's event stream (``/api/v1/events``,
        ``peerctl events``, the dashboard). ``event_type`` is dotted
        lowercase words, e.g. ``download.completed``; the fields are
        JSON-serialisable (other values become strings), at most 16 KiB of
        JSON. The provider's name is added as ``provider``. Progress-like
        events should be emitted at a bounded rate (at most a few per
        second per subject). Never raises: a malformed event is logged.
        """

    def run_in_thread(function: object, *args: object, **kwargs: object) -> object:
        """
        Run blocking or CPU-heavy work (hashing, bulk disk I/O) on the
        daemon's bounded worker pool; return a Deferred of its result.
        Calls queue when every worker is busy (backpressure).
        """


class IPeerControl(Interface):
    """
    The daemon as the control API sees it: the operations behind
    ``/api/v1/`` (implemented by the peer service).
    """

    def identity() -> dict:
        """``{"peer_id": str, "addresses": [str]}``."""

    def status() -> dict:
        """Uptime, listen addresses, connection counts, providers, bytes in/out."""

    def peers() -> list:
        """One dict per connected peer (see docs/api.rst)."""

    def providers() -> dict:
        """Local providers with status, and what each connected peer offers."""

    def connect(address: str) -> object:
        """Dial ``address``; Deferred firing with the peer's dict."""


class IDiscoverySource(Interface):
    """
    A source of peer addresses to dial (bootstrap list, peer exchange, DHT).
    """

    def addresses() -> list:
        """``list[str]`` of addresses worth dialing now."""


class ISourceLookup(Interface):
    """
    Finds peers that may hold a piece of content, by its content ID: the
    files provider asks its connected peers (peer exchange); a DHT can plug
    in later as another lookup.
    """

    def find_sources(content_id: str) -> object:
        """
        A Deferred firing with ``list[str]`` of dialable addresses
        (``PEERID@host:port``) of peers that hold or want ``content_id``.
        It fires within a bounded time (possibly with an empty list) and
        never fails.
        """
