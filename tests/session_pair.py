"""Two wire ``Session``s wired back to back in memory, for the wire tests."""

from __future__ import annotations

from peerd.wire import events as ev
from peerd.wire.frames import Frame, FrameDecoder
from peerd.wire.messages import Hello
from peerd.wire.session import Session


def hello_for(session: Session, peer_id: str) -> Hello:
    """A HELLO announcing ``session``'s own limits, as a real node would send."""
    return Hello(
        peer_id=peer_id,
        agent="peerd-test",
        max_frame_size=session.max_frame_size,
        window=session.window,
    )


def split_frames(chunks: list[bytes]) -> list[Frame]:
    """Decode the output of ``data_to_send`` back into frames."""
    return FrameDecoder(2**32).feed(b"".join(chunks))


class SessionPair:
    """
    A dialer and a listener session; ``pump`` moves bytes between them until
    neither has output, recording each side's events in ``events``.
    """

    def __init__(
        self, dialer: dict | None = None, listener: dict | None = None, handshake: bool = True
    ) -> None:
        self.dialer = Session(initiator=True, **(dialer or {}))
        self.listener = Session(initiator=False, **(listener or {}))
        self.events: dict[Session, list[ev.Event]] = {self.dialer: [], self.listener: []}
        if handshake:
            self.dialer.send_hello(hello_for(self.dialer, "dialer"))
            self.listener.send_hello(hello_for(self.listener, "listener"))
            self.pump()
            self.clear()

    def peer(self, session: Session) -> Session:
        """The other side."""
        return self.listener if session is self.dialer else self.dialer

    def transfer(self, source: Session, budget: int = 4 * 1024 * 1024) -> list[bytes]:
        """Move one ``data_to_send`` batch from ``source`` to its peer; return the chunks."""
        chunks = source.data_to_send(budget)
        self.events[source].extend(source.pop_events())
        destination = self.peer(source)
        self.events[destination].extend(destination.receive_data(b"".join(chunks)))
        return chunks

    def pump(self, max_rounds: int = 10_000) -> None:
        """Exchange bytes both ways until neither side has anything to send."""
        for _ in range(max_rounds):
            for side in (self.dialer, self.listener):
                self.events[side].extend(side.pop_events())
            if not (self.dialer.has_output() or self.listener.has_output()):
                return
            self.transfer(self.dialer)
            self.transfer(self.listener)
        raise AssertionError("sessions still talking after max_rounds")

    def clear(self) -> None:
        """Forget the events recorded so far."""
        for recorded in self.events.values():
            recorded.clear()

    def received(self, session: Session, stream_id: int) -> bytes:
        """All DATA ``session`` has reported on ``stream_id``."""
        return b"".join(
            e.data
            for e in self.events[session]
            if isinstance(e, ev.DataReceived) and e.stream_id == stream_id
        )
