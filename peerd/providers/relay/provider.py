"""
:class:`RelayProvider`: peers lend bandwidth so that unreachable peers can
still take part.

Three kinds of stream, told apart by the open header's ``op``:

``reserve``
    a peer asks this relay for a reservation (records: ``reserve`` ->
    ``reserved`` / ``refused``; ``renew`` while it stays connected);
``connect``
    a dialer asks for a circuit to ``to``; the relay opens an ``incoming``
    stream to that peer (it must hold a reservation) and splices the two;
``incoming``
    on the reserved peer: the far end of a circuit; a full mutual-TLS peer
    session runs inside it.

The relay only ever connects a circuit to a peer holding a reservation on
it; it never dials anything on anyone's behalf.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from peerd.interfaces import INode, IPeerInfo, IPeerObserver, IResourceProvider, IStream
from peerd.net.recordstream import RecordProtocol
from peerd.peerid import InvalidPeerID, PeerAddress, PeerID
from peerd.providers.relay.accounting import MonthlyUsage
from peerd.providers.relay.circuits import CircuitTable
from peerd.providers.relay.limits import Refused, RelayLimits
from peerd.providers.relay.reservations import ReservationTable
from peerd.providers.relay.shared_rate import RelayRate
from peerd.providers.relay.splice import Splice
from peerd.wire.records import Record

NAME = "relay"
TICK = 1.0


class ReservationServer(RecordProtocol):
    """The relay's side of one peer's reservation stream."""

    max_body = 0

    def __init__(self, provider: RelayProvider, peer_id: PeerID) -> None:
        super().__init__()
        self.provider = provider
        self.peer_id = peer_id

    def record_received(self, record: Record) -> None:
        """``reserve`` or ``renew``."""
        if record.type not in ("reserve", "renew"):
            self.protocol_error(f"unknown relay request {record.type!r}")
            return
        self.send(self.provider.grant(self.peer_id))

    def connectionLost(self, reason: object = None) -> None:
        """The peer went away: its reservation ends with the stream."""
        self.provider.reservation_stream_lost(self.peer_id, self)


class ReservationClient(RecordProtocol):
    """A relayed peer's side of its reservation on one relay."""

    max_body = 0

    def __init__(self, provider: RelayProvider, relay_id: PeerID) -> None:
        super().__init__()
        self.provider = provider
        self.relay_id = relay_id
        self.expires_at: float | None = None
        #: How long the relay granted the reservation for, last time (seconds).
        self.granted_for = 0.0
        self.addresses: list[str] = []
        self.lost = False

    def connectionMade(self) -> None:
        """Ask at once."""
        self.send({"t": "reserve"})

    def record_received(self, record: Record) -> None:
        """``reserved`` or ``refused``."""
        self.provider.reservation_answer(self, record)

    def renew(self) -> None:
        """Ask for more time."""
        if not self.lost:
            self.send({"t": "renew"})

    def connectionLost(self, reason: object = None) -> None:
        """The relay went away (or refused): fail over."""
        self.lost = True
        self.provider.reservation_lost(self)


class _Placeholder(Protocol):
    """Holds a circuit stream until the peer session's TLS protocol takes it over."""


@implementer(IResourceProvider, IPeerObserver)
class RelayProvider:
    """Reservations and circuits (serving), and reservations on relays (client)."""

    name = NAME

    def __init__(self, node: INode, config: dict) -> None:
        self.node = node
        self.clock = node.clock
        self.log = node.log
        self.limits = RelayLimits(
            max_reservations=config["max_reservations"],
            reservation_seconds=config["reservation_seconds"],
            max_circuits=config["max_circuits"],
            max_circuits_per_peer=config["max_circuits_per_peer"],
            circuit_max_seconds=config["circuit_max_seconds"],
            circuit_max_bytes=config["circuit_max_bytes"],
            rate=config["rate"],
            monthly_bytes=config["monthly_bytes"],
        )
        serve = config["serve"]
        self.serving = node.reachable if serve == "auto" else serve == "yes"
        reserve = config["reserve"]
        self.reserving = (not node.reachable) if reserve == "auto" else reserve == "yes"
        self.max_relays = config["max_relays"]
        now = self.clock.seconds
        self.reservations = ReservationTable(self.limits, now)
        self.usage = MonthlyUsage(
            node.data_dir / "usage.json", self.limits.monthly_bytes, time.time
        )
        self.circuits = CircuitTable(self.limits, self.reservations, self.usage, now)
        self.rate = RelayRate(self.limits, now)
        self._reservation_streams: dict[PeerID, ReservationServer] = {}
        self._splices: dict[int, Splice] = {}
        self.my_reservations: dict[PeerID, ReservationClient] = {}
        self._refused_by: dict[PeerID, str] = {}
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self.clock

    # -- IResourceProvider ------------------------------------------------------------

    def start(self) -> None:
        """Become the daemon's relay dialer, mount the API, start the timers."""
        from peerd.providers.relay.api import install_routes

        if not self.serving:
            self.reservations.stop()
            self.circuits.stop()
        self.node.set_relay_dialer(self.dial)
        self.node.add_peer_observer(self)
        install_routes(self.node.control, self)
        self._ticker.start(TICK, now=False)
        for peer in self.node.connected_peers():
            self.peer_connected(peer)
        self.log.info(
            "relay: serving {serving}; reserving on relays {reserving}",
            serving="yes" if self.serving else "no",
            reserving="yes" if self.reserving else "no",
        )

    def stop(self) -> None:
        """Stop timers; persist the month's usage."""
        if self._ticker.running:
            self._ticker.stop()
        self.node.remove_peer_observer(self)
        self.usage.flush()

    def stream_opened(self, stream: IStream) -> None:
        """Dispatch on the open header's ``op``."""
        op = stream.header.get("op")
        peer_id = stream.peer.peer_id
        if op == "reserve":
            self._serve_reservation(stream, peer_id)
        elif op == "connect":
            self._open_circuit(stream, peer_id)
        elif op == "incoming":
            self._accept_circuit(stream)
        else:
            stream.reset(f"unknown relay operation {op!r}", "refused")

    def status(self) -> dict:
        """Counts for ``peerctl status``."""
        return {
            "serving": self.serving,
            "reservations": len(self.reservations),
            "circuits": len(self.circuits),
            "relayed_bytes": self.usage.snapshot()["bytes"],
            "relayed_via": [str(r) for r, c in self.my_reservations.items() if c.expires_at],
        }

    # -- serving: reservations ------------------------------------------------------------

    def _serve_reservation(self, stream: IStream, peer_id: PeerID) -> None:
        server = ReservationServer(self, peer_id)
        old = self._reservation_streams.get(peer_id)
        self._reservation_streams[peer_id] = server
        stream.attach(server)
        if old is not None and old.transport is not None:
            old.transport.loseConnection()

    def grant(self, peer_id: PeerID) -> dict:
        """Reserve (or renew) for ``peer_id``; the answer record."""
        try:
            expiry = self.reservations.reserve(peer_id)
        except Refused as e:
            self.log.warn(
                "refusing a reservation for {peer}: {reason}", peer=peer_id, reason=e.reason
            )
            self.node.emit("relay.reservation", peer=str(peer_id), state="refused", reason=e.reason)
            self._limit_hit(e)
            return {"t": "refused", "code": e.code, "reason": e.reason}
        self.node.emit("relay.reservation", peer=str(peer_id), state="granted", reason=None)
        addresses = []
        for own in self.node.addresses():
            parsed = PeerAddress.parse(own)
            if parsed.relay_id is None:
                addresses.append(f"{peer_id}@{own}")
        return {
            "t": "reserved",
            "expires_in": expiry - self.clock.seconds(),
            "addresses": addresses,
        }

    def reservation_stream_lost(self, peer_id: PeerID, server: ReservationServer) -> None:
        """A reservation lives as long as its stream."""
        if self._reservation_streams.get(peer_id) is server:
            del self._reservation_streams[peer_id]
            self.reservations.drop(peer_id)

    # -- serving: circuits -------------------------------------------------------------------

    def _open_circuit(self, stream: IStream, source: PeerID) -> None:
        try:
            target = PeerID.parse(str(stream.header.get("to", "")))
        except InvalidPeerID as e:
            stream.reset(f"bad circuit target: {e}", "refused")
            return
        try:
            if target not in self._reservation_streams or self.node.peer(target) is None:
                self.reservations.drop(target)
            circuit = self.circuits.open(source, target)
        except Refused as e:
            self.log.info(
                "refusing a circuit {src} -> {dst}: {reason}",
                src=source,
                dst=target,
                reason=e.reason,
            )
            stream.reset(e.reason, e.code)
            self._limit_hit(e)
            return
        splice = Splice(circuit, self.circuits, self.rate, self.clock, self.limits)
        self._splices[circuit.id] = splice
        d = self.node.open_stream(target, {"op": "incoming", "from": str(source)}, splice.target)

        def opened(target_stream: IStream) -> None:
            splice.join(stream, target_stream)
            self.log.info("circuit {id}: {src} -> {dst}", id=circuit.id, src=source, dst=target)
            self._circuit_event(circuit, "opened")

        def failed(failure: Any) -> None:
            self.circuits.close(circuit, "target-unreachable")
            self._splices.pop(circuit.id, None)
            stream.reset(f"cannot reach {target}: {failure.getErrorMessage()}", "no-reservation")

        d.addCallbacks(opened, failed)

    def _circuit_event(self, circuit: Any, state: str) -> None:
        self.node.emit(
            "relay.circuit",
            id=circuit.id,
            src=str(circuit.src),
            dst=str(circuit.dst),
            state=state,
            bytes=circuit.bytes_forward + circuit.bytes_backward,
        )

    def _limit_hit(self, refused: Refused) -> None:
        if refused.option is not None:
            self.node.emit(
                "limit.hit", key=f"[provider:relay] {refused.option}", reason=refused.reason
            )

    # -- the far end of a circuit ------------------------------------------------------------

    def _accept_circuit(self, stream: IStream) -> None:
        """Someone reaches us through this relay: run a peer session inside."""
        relay = stream.peer.peer_id
        if relay not in self.my_reservations:
            stream.reset("no reservation on this relay", "no-reservation")
            return
        d = self.node.session_over(stream, False, None, relay)
        d.addErrback(
            lambda f: self.log.info(
                "relayed session through {relay} failed: {error}",
                relay=relay,
                error=f.getErrorMessage(),
            )
        )

    # -- dialing relayed addresses --------------------------------------------------------------

    def dial(self, address: PeerAddress) -> defer.Deferred:
        """Open a circuit to ``address.peer_id`` through ``address.relay_id``."""
        relay = address.relay
        assert relay is not None and address.peer_id is not None
        d = self.node.connect(str(relay))

        def connected(info: IPeerInfo) -> defer.Deferred:
            if NAME not in info.providers:
                raise Refused("not-serving", f"{relay.peer_id} does not run a relay")
            return self.node.open_stream(
                info.peer_id, {"op": "connect", "to": str(address.peer_id)}, _Placeholder()
            )

        return d.addCallback(connected)

    # -- reserving on relays (as a relayed peer) ---------------------------------------------------

    def peer_connected(self, peer: IPeerInfo) -> None:
        """A relay candidate connected: reserve if we need more relays."""
        if not self.reserving or NAME not in peer.providers or peer.peer_id in self.my_reservations:
            return
        if peer.relay is not None:
            return  # only a relay we reach directly can relay for us
        if peer.peer_id in self._refused_by or len(self.my_reservations) >= self.max_relays:
            return
        client = ReservationClient(self, peer.peer_id)
        self.my_reservations[peer.peer_id] = client
        d = self.node.open_stream(peer.peer_id, {"op": "reserve"}, client)
        d.addErrback(lambda _: self.reservation_lost(client))

    def peer_disconnected(self, peer: IPeerInfo, reason: str) -> None:
        """Circuits and reservations through that peer end with their streams."""
        self._refused_by.pop(peer.peer_id, None)

    def reservation_answer(self, client: ReservationClient, record: Record) -> None:
        """The relay granted or refused."""
        if record.type == "reserved":
            expires_in = record.header.get("expires_in")
            addresses = record.header.get("addresses")
            if not isinstance(expires_in, int | float) or not isinstance(addresses, list):
                client.protocol_error("malformed reservation answer")
                return
            first = client.expires_at is None
            client.expires_at = self.clock.seconds() + float(expires_in)
            client.granted_for = float(expires_in)
            client.addresses = [a for a in addresses if isinstance(a, str)][:8]
            if first:
                self.log.info(
                    "reserved a slot on relay {relay}; reachable as {addresses}",
                    relay=client.relay_id,
                    addresses=" ".join(client.addresses),
                )
            self._announce()
        elif record.type == "refused":
            reason = str(record.header.get("reason", ""))
            self.log.warn(
                "relay {relay} refused a reservation: {reason}",
                relay=client.relay_id,
                reason=reason,
            )
            self._refused_by[client.relay_id] = reason
            if client.transport is not None:
                client.transport.loseConnection()

    def reservation_lost(self, client: ReservationClient) -> None:
        """A reservation ended: announce without it and reserve elsewhere."""
        client.lost = True
        if self.my_reservations.get(client.relay_id) is not client:
            return
        del self.my_reservations[client.relay_id]
        if client.expires_at is not None:
            self.log.info("lost the reservation on relay {relay}", relay=client.relay_id)
        self._announce()
        for peer in self.node.connected_peers():
            self.peer_connected(peer)

    def _announce(self) -> None:
        addresses = [a for c in self.my_reservations.values() if c.expires_at for a in c.addresses]
        self.node.set_relayed_addresses(addresses)

    # -- timers --------------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = self.clock.seconds()
        for circuit in self.circuits.expire():
            splice = self._splices.pop(circuit.id, None)
            if splice is not None:
                splice.close("circuit-time")
                self._circuit_event(circuit, "closed")
        for circuit_id in [i for i, s in self._splices.items() if s.closed]:
            self._circuit_event(self._splices.pop(circuit_id).circuit, "closed")
        for peer_id in self.reservations.expire():
            server = self._reservation_streams.pop(peer_id, None)
            if server is not None and server.transport is not None:
                server.transport.loseConnection()
        for client in list(self.my_reservations.values()):
            if client.expires_at is not None and client.expires_at - now < client.granted_for / 2:
                client.renew()

    # -- API ----------------------------------------------------------------------------------------------

    def details(self) -> dict:
        """Everything ``peerctl relay`` shows."""
        now = self.clock.seconds()
        return {
            "serving": self.serving,
            "reserving": self.reserving,
            "limits": {
                "max_reservations": self.limits.max_reservations,
                "max_circuits": self.limits.max_circuits,
                "max_circuits_per_peer": self.limits.max_circuits_per_peer,
                "circuit_max_seconds": self.limits.circuit_max_seconds,
                "circuit_max_bytes": self.limits.circuit_max_bytes,
                "rate": self.limits.rate,
                "monthly_bytes": self.limits.monthly_bytes,
            },
            "reservations": [
                {"peer": str(r["peer"]), "expires_in": r["expires_in"]}
                for r in self.reservations.snapshot()
            ],
            "circuits": [_circuit_json(c) for c in self.circuits.snapshot()],
            "monthly": self.usage.snapshot(),
            "relayed_via": [
                {
                    "relay": str(relay),
                    "expires_in": (c.expires_at - now) if c.expires_at else None,
                    "addresses": c.addresses,
                }
                for relay, c in self.my_reservations.items()
            ],
        }


def _circuit_json(snapshot: dict) -> dict:
    return {k: (str(v) if k in ("src", "dst") else v) for k, v in snapshot.items()}
