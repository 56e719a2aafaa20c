"""The compute provider between in-memory peers: offers, refusals, the module upload."""

from __future__ import annotations

from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from peerd.interfaces import IResourceProvider
from peerd.providers.compute import reasons
from peerd.providers.compute.modules import content_hash
from peerd.providers.compute.plugin import ComputeFactory
from peerd.providers.compute.protocol import Request, RequestFailed
from peerd.testing import MemoryNetwork


def ask(net: MemoryNetwork, client, server, header: dict, body: bytes = b"") -> object:
    request = Request(header, body)
    client.node("compute").open_stream(server.peer_id, {}, request)
    net.flush()
    results: list = []
    request.done.addBoth(results.append)
    return results[0] if results else None


def pair(server_config: dict | None = None) -> tuple[MemoryNetwork, object, object]:
    net = MemoryNetwork()
    server = net.add_peer()
    server.add_provider("compute", ComputeFactory(), config=server_config or {"concurrency": "3"})
    client = net.add_peer()
    client.add_provider("compute", ComputeFactory())
    net.connect(client, server)
    net.flush()
    return net, client, server


def test_provider_contract_and_status() -> None:
    """The built provider provides IResourceProvider; its status advertises concurrency and limits."""
    net, _, server = pair()
    provider = server.providers["compute"]
    verifyObject(IResourceProvider, provider)
    status = provider.status()
    assert status["concurrency"] == 3
    assert status["limits"]["max_memory"] == 256 * 1024 * 1024


def test_offer_carries_concurrency_limits_and_module_presence() -> None:
    """A requester learns the worker's concurrency and limits, and whether it has the module."""
    net, client, server = pair()
    answer = ask(net, client, server, {"t": "offer?", "module": "0" * 64})
    assert answer.type == "offer"
    assert answer.header["limits"]["concurrency"] == 3
    assert answer.header["has_module"] is False


def test_refused_peer_is_told_which_key() -> None:
    """A peer outside ``allow`` is refused with not-allowed, naming the key."""
    net, client, server = pair({"allow": "AEAQCA-IBAEAQ-CAIBAE-AQCAIB-AEAQCA-IB4BWQ"})
    answer = ask(net, client, server, {"t": "offer?"})
    assert answer.type == "refused" and answer.header["code"] == reasons.NOT_ALLOWED
    assert "[provider:compute] allow" in answer.header["reason"]


def test_job_for_an_unknown_module_and_oversize_module() -> None:
    """A job naming a module the worker lacks is refused; so is a module over max_module."""
    net, client, server = pair({"max_module": "1KiB"})
    answer = ask(net, client, server, {"t": "job", "module": "1" * 64, "args": []}, b"in")
    assert answer.header["code"] == reasons.UNKNOWN_MODULE
    big = b"x" * 2048
    answer = ask(net, client, server, {"t": "module", "hash": content_hash(big)}, big)
    assert answer.type == "refused" and answer.header["code"] == reasons.MODULE_TOO_LARGE
    assert "[provider:compute] max_module" in answer.header["reason"]


def test_malformed_request_resets_the_stream() -> None:
    """An unknown request type is a protocol error: the requester gets no answer."""
    net, client, server = pair()
    result = ask(net, client, server, {"t": "nonsense"})
    assert isinstance(result, Failure) and result.check(RequestFailed)
