"""
Tests for the control API router, its ``twisted.web`` resource and the core
routes, driven through a real ``Site`` over an in-memory transport.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from peerd.control.api import install_core_routes
from peerd.control.router import ApiError, ApiRequest, ApiResponse, Router
from peerd.control.server import control_site
from peerd.interfaces import IControlRouter, IPeerControl
from peerd.peerid import PeerID

PEER_A = str(PeerID(b"\x01" * 20))
PEER_B = str(PeerID(b"\x02" * 20))


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class Exchange:
    """One HTTP request to a site over a ``StringTransport``."""

    def __init__(self, site, method: str, path: str, body: bytes = b"") -> None:
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: peerd\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.channel.dataReceived(head.encode("ascii") + body)

    def response(self) -> Response | None:
        """The parsed response, or ``None`` if nothing was written yet."""
        raw = self.transport.value()
        if not raw:
            return None
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return Response(int(status_line.split()[1]), headers, body)

    def disconnect(self) -> None:
        self.channel.connectionLost(Failure(ConnectionDone()))


def request(router: Router, method: str, path: str, body: bytes = b"") -> Response:
    """Send one request and return its (immediate) response."""
    response = Exchange(control_site(router), method, path, body).response()
    assert response is not None, "no response written"
    return response


def peer_dict(peer_id: str = PEER_B, address: str = "10.0.0.2:7845") -> dict:
    return {
        "peer_id": peer_id,
        "address": address,
        "direction": "outbound",
        "providers": {"files": "1"},
        "listen_addresses": [f"{peer_id}@{address}"],
        "agent": "peerd/0.1",
        "since": 1000.0,
        "bytes_in": 10,
        "bytes_out": 20,
    }


@implementer(IPeerControl)
class FakePeerControl:
    """An ``IPeerControl`` with canned answers that records ``connect`` calls."""

    def __init__(self) -> None:
        self.connects: list[str] = []
        self.connect_result: Deferred | None = None

    def identity(self) -> dict:
        return {"peer_id": PEER_A, "addresses": [f"{PEER_A}@10.0.0.1:7845"]}

    def status(self) -> dict:
        return {"peer_id": PEER_A, "uptime": 12.5, "bytes_in": 1, "bytes_out": 2}

    def peers(self) -> list:
        return [peer_dict()]

    def providers(self) -> dict:
        return {
            "local": {"files": {"version": "1", "status": {}}},
            "peers": {PEER_B: {"files": "1"}},
        }

    def connect(self, address: str) -> object:
        self.connects.append(address)
        if self.connect_result is not None:
            return self.connect_result
        return succeed(peer_dict(address=address.rpartition("@")[2]))


@pytest.fixture
def control() -> FakePeerControl:
    fake = FakePeerControl()
    assert verifyObject(IPeerControl, fake)
    return fake


@pytest.fixture
def core(control: FakePeerControl) -> Router:
    router = Router()
    install_core_routes(router, control)
    return router


# -- routing -------------------------------------------------------------------


def test_router_provides_icontrolrouter() -> None:
    """A Router and its provider views provide IControlRouter."""
    router = Router()
    assert verifyObject(IControlRouter, router)
    assert verifyObject(IControlRouter, router.for_provider("files"))


def test_value_handler_answers_json() -> None:
    """A handler's return value is sent as a JSON body with status 200."""
    router = Router()
    router.route("GET", "ping", lambda request: {"pong": True})
    response = request(router, "GET", "/api/v1/ping")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"pong": True}


def test_path_params_passed_as_keywords() -> None:
    """``{name}`` segments match one segment and reach the handler as keyword arguments."""
    router = Router()
    router.route("GET", "items/{item}/parts/{part}", lambda request, item, part: [item, part])
    assert request(router, "GET", "/api/v1/items/a%20b/parts/7").json() == ["a b", "7"]


def test_literal_segment_preferred_over_param() -> None:
    """A literal segment wins over a ``{param}`` segment at the same position."""
    router = Router()
    router.route("GET", "items/{item}", lambda request, item: "param")
    router.route("GET", "items/active", lambda request: "literal")
    assert request(router, "GET", "/api/v1/items/active").json() == "literal"
    assert request(router, "GET", "/api/v1/items/other").json() == "param"


def test_query_and_trailing_slash() -> None:
    """Query parameters reach the handler through ``arg``; a trailing slash is ignored."""
    router = Router()
    router.route("GET", "echo", lambda request: [request.arg("x"), request.arg("y", "none")])
    assert request(router, "GET", "/api/v1/echo/?x=1&x=2").json() == ["1", "none"]


def test_unknown_path_is_404() -> None:
    """A path no route serves is answered 404 with a JSON error naming it."""
    router = Router()
    router.route("GET", "ping", lambda request: "pong")
    response = request(router, "GET", "/api/v1/nothing/here")
    assert response.status == 404
    assert "/api/v1/nothing/here" in response.json()["error"]


def test_outside_prefix_is_404() -> None:
    """Paths outside ``/api/v1/`` are answered 404."""
    router = Router()
    router.route("GET", "ping", lambda request: "pong")
    response = request(router, "GET", "/ping")
    assert response.status == 404
    assert "/api/v1/" in response.json()["error"]


def test_wrong_method_is_405_with_allow() -> None:
    """A served path with the wrong method is answered 405 with an ``Allow`` header."""
    router = Router()
    router.route("GET", "things", lambda request: [])
    router.route("POST", "things", lambda request: {})
    response = request(router, "DELETE", "/api/v1/things")
    assert response.status == 405
    assert response.headers["allow"] == "GET, POST"
    assert "DELETE" in response.json()["error"]


def test_duplicate_and_bad_routes_rejected() -> None:
    """Registering the same route twice, an unknown method or a bad segment raises ValueError."""
    router = Router()
    router.route("GET", "a/{x}", lambda request, x: x)
    with pytest.raises(ValueError, match="already registered"):
        router.route("get", "a/{y}", lambda request, y: y)
    with pytest.raises(ValueError, match="unsupported method"):
        router.route("PATCH", "b", lambda request: None)
    with pytest.raises(ValueError, match="bad path segment"):
        router.route("GET", "c/{not valid}", lambda request: None)


def test_provider_router_prefixes_routes() -> None:
    """A provider's router mounts routes under ``providers/NAME/``."""
    router = Router()
    files = router.for_provider("files")
    files.route("GET", "shares/{cid}", lambda request, cid: {"cid": cid})
    files.route("GET", "", lambda request: "root")
    assert request(router, "GET", "/api/v1/providers/files/shares/x1").json() == {"cid": "x1"}
    assert request(router, "GET", "/api/v1/providers/files").json() == "root"
    assert request(router, "GET", "/api/v1/shares/x1").status == 404


def test_provider_name_validated() -> None:
    """A provider name outside ``[a-z0-9_-]`` is refused."""
    with pytest.raises(ValueError, match="bad provider name"):
        Router().for_provider("Files/x")


# -- handler results and errors -------------------------------------------------


def test_api_error_sets_status_and_message() -> None:
    """An ApiError raised by a handler answers with its status and ``{"error": message}``."""

    def handler(request: ApiRequest) -> None:
        raise ApiError(409, "already there")

    router = Router()
    router.route("POST", "x", handler)
    response = request(router, "POST", "/api/v1/x")
    assert (response.status, response.json()) == (409, {"error": "already there"})


def test_api_response_sets_status() -> None:
    """A handler returning ApiResponse answers with its status and body."""
    router = Router()
    router.route("POST", "x", lambda request: ApiResponse(202, {"queued": True}))
    response = request(router, "POST", "/api/v1/x")
    assert (response.status, response.json()) == (202, {"queued": True})


def test_handler_exception_contained() -> None:
    """An unexpected exception is logged with its traceback, answered 500, and the
    server keeps serving."""

    def broken(request: ApiRequest) -> None:
        raise ZeroDivisionError("division by zero")

    router = Router()
    router.route("GET", "broken", broken)
    router.route("GET", "ok", lambda request: "fine")
    with capturedLogs() as events:
        response = request(router, "GET", "/api/v1/broken")
    assert response.status == 500
    assert response.json() == {
        "error": "internal error in GET /api/v1/broken: ZeroDivisionError: division by zero"
    }
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(ZeroDivisionError)
    assert request(router, "GET", "/api/v1/ok").json() == "fine"


def test_unserialisable_result_is_500() -> None:
    """A handler result that is not JSON-serialisable is answered 500, not dropped."""
    router = Router()
    router.route("GET", "odd", lambda request: {"x": object()})
    with capturedLogs():
        response = request(router, "GET", "/api/v1/odd")
    assert response.status == 500
    assert "not JSON-serialisable" in response.json()["error"]


def test_deferred_handler() -> None:
    """A handler's Deferred is awaited: nothing is written until it fires."""
    pending: Deferred = Deferred()
    router = Router()
    router.route("GET", "slow", lambda request: pending)
    exchange = Exchange(control_site(router), "GET", "/api/v1/slow")
    assert exchange.response() is None
    pending.callback({"done": 1})
    response = exchange.response()
    assert response is not None
    assert (response.status, response.json()) == (200, {"done": 1})


def test_failed_deferred_with_api_error() -> None:
    """A Deferred failing with ApiError answers with that error."""
    router = Router()
    router.route("GET", "nope", lambda request: fail(ApiError(404, "no such share")))
    response = request(router, "GET", "/api/v1/nope")
    assert (response.status, response.json()) == (404, {"error": "no such share"})


def test_coroutine_handler() -> None:
    """An ``async def`` handler runs as a coroutine and its result is sent."""
    pending: Deferred = Deferred()

    async def handler(request: ApiRequest, name: str) -> dict:
        value = await pending
        return {"name": name, "value": value}

    router = Router()
    router.route("GET", "co/{name}", handler)
    exchange = Exchange(control_site(router), "GET", "/api/v1/co/n")
    assert exchange.response() is None
    pending.callback(3)
    response = exchange.response()
    assert response is not None
    assert response.json() == {"name": "n", "value": 3}


def test_client_gone_before_answer() -> None:
    """If the client disconnects before a slow handler finishes, the late answer is
    dropped without an error and later requests are served."""
    pending: Deferred = Deferred()
    router = Router()
    router.route("GET", "slow", lambda request: pending)
    router.route("GET", "ok", lambda request: "fine")
    exchange = Exchange(control_site(router), "GET", "/api/v1/slow")
    exchange.disconnect()
    with capturedLogs() as events:
        pending.callback({"late": True})
    assert [e for e in events if "log_failure" in e] == []
    assert request(router, "GET", "/api/v1/ok").json() == "fine"


# -- request bodies ---------------------------------------------------------------


def test_request_json_body() -> None:
    """``ApiRequest.json`` parses an object; an empty body is ``{}``."""
    assert ApiRequest("POST", "x", body=b'{"a": 1}').json() == {"a": 1}
    assert ApiRequest("POST", "x").json() == {}


@pytest.mark.parametrize("body", [b"{nope", b"[1, 2]", b"\xff\xfe"])
def test_request_bad_json_body(body: bytes) -> None:
    """A body that is not a JSON object raises ApiError 400."""
    with pytest.raises(ApiError) as info:
        ApiRequest("POST", "x", body=body).json()
    assert info.value.status == 400


def test_bad_json_answers_400() -> None:
    """A handler reading a malformed body answers 400 over HTTP."""
    router = Router()
    router.route("POST", "x", lambda request: request.json())
    response = request(router, "POST", "/api/v1/x", b"{nope")
    assert response.status == 400
    assert "not valid JSON" in response.json()["error"]


# -- core routes --------------------------------------------------------------------


def test_core_get_routes(core: Router, control: FakePeerControl) -> None:
    """``id``, ``address``, ``status``, ``peers`` and ``providers`` answer from IPeerControl."""
    assert request(core, "GET", "/api/v1/id").json() == control.identity()
    assert request(core, "GET", "/api/v1/address").json() == {
        "addresses": control.identity()["addresses"]
    }
    assert request(core, "GET", "/api/v1/status").json() == control.status()
    assert request(core, "GET", "/api/v1/peers").json() == {"peers": control.peers()}
    assert request(core, "GET", "/api/v1/providers").json() == control.providers()


def test_connect_peer(core: Router, control: FakePeerControl) -> None:
    """``POST peers`` dials the parsed address and answers with the peer."""
    body = json.dumps({"address": f"{PEER_B.lower()}@10.0.0.2:7845"}).encode()
    response = request(core, "POST", "/api/v1/peers", body)
    assert response.status == 200
    assert response.json() == {"peer": peer_dict()}
    assert control.connects == [f"{PEER_B}@10.0.0.2:7845"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'{"address": "10.0.0.2"}', "is not host:port"),
        (b'{"address": "10.0.0.2:99999"}', "out of range"),
        (b'{"address": "ZZZZ@10.0.0.2:7845"}', "is not a PeerID"),
        (b'{"address": 7}', '{"address":'),
        (b"{}", '{"address":'),
    ],
)
def test_connect_bad_address(
    core: Router, control: FakePeerControl, body: bytes, fragment: str
) -> None:
    """A malformed address is answered 400 with the parser's message; nothing is dialled."""
    response = request(core, "POST", "/api/v1/peers", body)
    assert response.status == 400
    assert fragment in response.json()["error"]
    assert control.connects == []


def test_connect_failure_is_502(core: Router, control: FakePeerControl) -> None:
    """A failed dial is answered 502 naming the address and the reason."""
    control.connect_result = fail(ConnectionRefusedError("refused"))
    response = request(core, "POST", "/api/v1/peers", b'{"address": "10.0.0.9:7845"}')
    assert response.status == 502
    assert response.json()["error"].startswith("could not connect to 10.0.0.9:7845: ")
    assert "refused" in response.json()["error"]
