"""
The core routes of the control API (see ``docs/api.rst``).

Each handler is a thin translation between HTTP and :class:`IPeerControl`.
"""

from __future__ import annotations

from twisted.internet.defer import maybeDeferred
from twisted.python.failure import Failure

from peerd.control.router import ApiError, ApiRequest, Router
from peerd.interfaces import IPeerControl
from peerd.peerid import InvalidAddress, PeerAddress


def install_core_routes(router: Router, control: IPeerControl) -> None:
    """Register ``id``, ``address``, ``status``, ``peers`` and ``providers``."""

    def get_id(request: ApiRequest) -> dict:
        return control.identity()

    def get_address(request: ApiRequest) -> dict:
        return {"addresses": control.identity()["addresses"]}

    def get_status(request: ApiRequest) -> dict:
        return control.status()

    def get_peers(request: ApiRequest) -> dict:
        return {"peers": control.peers()}

    def post_peers(request: ApiRequest) -> object:
        text = request.json().get("address")
        if not isinstance(text, str):
            raise ApiError(400, 'the request body must be {"address": "[PEERID@]host:port"}')
        try:
            address = str(PeerAddress.parse(text))
        except InvalidAddress as e:
            raise ApiError(400, str(e)) from None

        def connect_failed(failure: Failure) -> Failure:
            if failure.check(ApiError):
                return failure
            reason = failure.getErrorMessage() or failure.type.__name__
            raise ApiError(502, f"could not connect to {address}: {reason}")

        d = maybeDeferred(control.connect, address)
        d.addCallbacks(lambda peer: {"peer": peer}, connect_failed)
        return d

    def get_providers(request: ApiRequest) -> dict:
        return control.providers()

    router.route("GET", "id", get_id)
    router.route("GET", "address", get_address)
    router.route("GET", "status", get_status)
    router.route("GET", "peers", get_peers)
    router.route("POST", "peers", post_peers)
    router.route("GET", "providers", get_providers)
