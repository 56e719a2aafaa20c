"""
:class:`ControlEndpoints`: everything the daemon serves to its user, as one
service: the unix control socket, the guarded web endpoint
(``[control] web``) and the optional metrics-only endpoint
(``[control] metrics``), all answering from one resource tree
(:mod:`peerd.control.site`), plus the reactor lag probe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.web.resource import Resource

from peerd.control.core_events import StatsTicker
from peerd.control.events import EventLog
from peerd.control.metrics import DaemonMetrics, MetricsResource, ReactorLag, Snapshot
from peerd.control.router import ApiRequest, ControlResource, Router
from peerd.control.server import control_service, prepare_unix_socket
from peerd.control.site import ControlRoot
from peerd.control.sse import EventStreamResource
from peerd.control.static_files import StaticFiles
from peerd.control.web import (
    TOKEN_FILE,
    Sessions,
    WebGuard,
    WebListener,
    host_name,
    is_allowed_host,
    load_or_create_token,
)


class _HostOnly(Resource):
    """The metrics endpoint's guard: only the Host check (no login)."""

    isLeaf = True

    def __init__(self, inner: Resource, hosts: Iterable[str]) -> None:
        super().__init__()
        self._inner = inner
        self._hosts = tuple(hosts)

    def render(self, request: Any) -> object:
        host = host_name((request.getHeader(b"host") or b"").decode("latin-1"))
        if not is_allowed_host(host, self._hosts):
            request.setResponseCode(403)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"host not allowed\n"
        return self._inner.render(request)


class _NoApi(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"only /metrics is served here\n"


class ControlEndpoints(MultiService):
    """
    The control endpoints of one daemon.

    :param listen: ``[control] listen`` (unix socket), or None.
    :param web: ``[control] web``, or None.
    :param web_hosts: ``[control] web_hosts``: Host names allowed besides loopback.
    :param metrics_endpoint: ``[control] metrics``, or None.
    :param snapshot: what ``/metrics`` reads at each scrape.
    :param stats: the fields of the periodic ``stats.tick`` event.
    """

    def __init__(
        self,
        *,
        reactor: Any,
        data_dir: Path,
        router: Router,
        events: EventLog,
        snapshot: Callable[[], Snapshot],
        listen: str | None,
        web: str | None,
        web_hosts: Iterable[str] = (),
        metrics_endpoint: str | None = None,
        static: StaticFiles | None = None,
        stats: Callable[[], dict] | None = None,
    ) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.events = events
        self.metrics = DaemonMetrics(snapshot)
        events.subscribe(self.metrics.event)
        self.lag = ReactorLag(reactor, self.metrics.observe_lag)
        self.stream = EventStreamResource(events, reactor)
        self.ticker = StatsTicker(reactor, events, stats or dict, lambda: self.stream.clients > 0)
        self.root = ControlRoot(
            ControlResource(router),
            events=self.stream,
            metrics=MetricsResource(self.metrics),
            static=static if static is not None else StaticFiles(),
            clock=reactor,
            label=router.label,
            observe=self.metrics.observe_request,
        )
        self.listeners: list[WebListener] = []
        if listen is not None:
            prepare_unix_socket(listen)
            control_service(reactor, listen, router, resource=self.root).setServiceParent(self)
        self.web: WebListener | None = None
        if web is not None:
            token = load_or_create_token(data_dir)
            guard = WebGuard(self.root, token, Sessions(reactor.seconds), web_hosts)
            self.web = WebListener(reactor, web, guard, "[control] web")
            self.listeners.append(self.web)
        if metrics_endpoint is not None:
            only_metrics = ControlRoot(_NoApi(), metrics=MetricsResource(self.metrics))
            self.listeners.append(
                WebListener(
                    reactor,
                    metrics_endpoint,
                    _HostOnly(only_metrics, web_hosts),
                    "[control] metrics",
                )
            )
        for listener in self.listeners:
            listener.setServiceParent(self)
        router.route("GET", "web", self._web_info)

    def listen(self) -> None:
        """Bind the TCP endpoints now (before the daemon reports itself started).

        :raises peerd.control.web.WebListenError: one cannot listen.
        """
        for listener in self.listeners:
            listener.listen()

    def startService(self) -> None:
        super().startService()
        self.lag.start()
        self.ticker.start()

    def stopService(self) -> Any:
        self.lag.stop()
        self.ticker.stop()
        return super().stopService()

    def _web_info(self, request: ApiRequest) -> dict:
        url = self.web.base_url() if self.web is not None else None
        return {
            "url": url,
            "token_file": str(self.data_dir / TOKEN_FILE) if url else None,
            "metrics": [
                f"{u}metrics" for u in (listener.base_url() for listener in self.listeners) if u
            ],
        }
