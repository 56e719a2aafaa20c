"""
What the control endpoints serve: one resource tree for the unix socket and
the web endpoint alike.

``/api/v1/events`` is the event stream, other ``/api/v1/`` paths the JSON
API, ``/metrics`` the Prometheus metrics, ``/`` and ``/static/`` the
dashboard. Every answer carries the security headers (a strict
Content-Security-Policy, no framing, no sniffing, no referrer). The web
endpoint wraps this tree in :class:`peerd.control.web.WebGuard`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.resource import Resource

from peerd.control.router import API_PREFIX
from peerd.control.static_files import StaticFiles

EVENTS_PATH = API_PREFIX + "events"
METRICS_PATH = "/metrics"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    b"Content-Security-Policy": CSP.encode("ascii"),
    b"X-Frame-Options": b"DENY",
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"Cross-Origin-Opener-Policy": b"same-origin",
    b"Cross-Origin-Resource-Policy": b"same-origin",
}

Observe = Callable[[str, str, float], None]


def add_security_headers(request: Any) -> None:
    """Set the headers every answer carries."""
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)


def request_path(request: Any) -> str:
    """The request's path, decoded (undecodable bytes replaced)."""
    return request.path.decode("utf-8", "replace")


class ControlRoot(Resource):
    """
    Dispatches by path to the API, the event stream, metrics and the
    dashboard's files.

    :param label: ``label(method, api_path)`` names the route of an API
        request for the latency histogram (bounded label values).
    :param observe: ``observe(method, route, seconds)`` gets each API
        request's latency.
    """

    isLeaf = True

    def __init__(
        self,
        api: Resource,
        *,
        events: Resource | None = None,
        metrics: Resource | None = None,
        static: StaticFiles | None = None,
        clock: Any = None,
        label: Callable[[str, str], str] | None = None,
        observe: Observe | None = None,
    ) -> None:
        super().__init__()
        self._api = api
        self._events = events
        self._metrics = metrics
        self._static = static
        self._clock = clock
        self._label = label
        self._observe = observe

    def render(self, request: Any) -> object:
        add_security_headers(request)
        path = request_path(request)
        if path == EVENTS_PATH and self._events is not None:
            return self._events.render(request)
        if (path + "/").startswith(API_PREFIX):
            self._time(request, path)
            return self._api.render(request)
        if path == METRICS_PATH and self._metrics is not None:
            return self._metrics.render(request)
        if self._static is not None:
            return self._static.render(request, path)
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"not found\n"

    def _time(self, request: Any, path: str) -> None:
        if self._observe is None or self._clock is None:
            return
        method = request.method.decode("ascii", "replace")
        route = self._label(method, path[len(API_PREFIX) :]) if self._label else path
        start = self._clock.seconds()

        def done(result: object) -> None:
            self._observe(method, route, self._clock.seconds() - start)

        request.notifyFinish().addBoth(done)
