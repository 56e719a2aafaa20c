"""
Prometheus metrics (``GET /metrics``) with ``prometheus_client``.

Three kinds of figures, all in one registry per daemon (never the library's
global one, so several daemons can live in one test process):

* read at scrape time from a :class:`Snapshot` of the daemon (connections,
  streams, bytes, and the providers' ``status()`` dicts): nothing to keep in
  sync;
* counted from the :class:`~peerd.control.events.EventLog` (bans, downloads
  by outcome, limits hit, every event type);
* measured: control API latency and the reactor's lag (:class:`ReactorLag`).

Every name is listed in ``docs/api.rst``, "Metrics".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from twisted.web.resource import Resource

from peerd.control.events import Event

# No *_created series: they double the output and no dashboard uses them.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
LAG_INTERVAL = 0.25

# Provider status fields with a metric of their own: (provider, field) ->
# (name, help, kind). Every other number in a provider's status is exported
# as peerd_provider_status{provider, field}.
PROVIDER_FIELDS: Mapping[tuple[str, str], tuple[str, str, str]] = {
    ("files", "shares"): ("peerd_files_shares", "Contents shared by this peer.", "gauge"),
    ("files", "downloads"): (
        "peerd_files_downloads_active",
        "Downloads not yet finished.",
        "gauge",
    ),
    ("files", "uploading_to"): ("peerd_files_uploading_to", "Peers being served now.", "gauge"),
    ("files", "upload_rate"): (
        "peerd_files_upload_rate_bytes",
        "Recent upload rate (bytes per second).",
        "gauge",
    ),
    ("files", "download_rate"): (
        "peerd_files_download_rate_bytes",
        "Recent download rate of all downloads (bytes per second).",
        "gauge",
    ),
    ("files", "bytes_uploaded"): (
        "peerd_files_uploaded_bytes",
        "Bytes of blocks uploaded since start.",
        "counter",
    ),
    ("files", "blocks_verified"): (
        "peerd_files_blocks_verified",
        "Downloaded blocks that passed verification.",
        "counter",
    ),
    ("files", "blocks_rejected"): (
        "peerd_files_blocks_rejected",
        "Downloaded blocks that failed verification.",
        "counter",
    ),
    ("storage", "used"): ("peerd_storage_used_bytes", "Bytes of others' shares held.", "gauge"),
    ("storage", "quota"): ("peerd_storage_quota_bytes", "Storage quota in bytes.", "gauge"),
    ("storage", "shares"): ("peerd_storage_shares", "Shares held for other peers.", "gauge"),
    ("storage", "jobs_running"): (
        "peerd_storage_jobs_running",
        "Store, retrieve and repair jobs running.",
        "gauge",
    ),
    ("relay", "circuits"): ("peerd_relay_circuits", "Relay circuits open.", "gauge"),
    ("relay", "reservations"): (
        "peerd_relay_reservations",
        "Relay reservations granted.",
        "gauge",
    ),
    ("relay", "relayed_bytes"): (
        "peerd_relay_bytes",
        "Bytes relayed this calendar month.",
        "gauge",
    ),
}

DOWNLOAD_OUTCOMES = {
    "download.started": "started",
    "download.completed": "completed",
    "download.failed": "failed",
    "download.cancelled": "cancelled",
}


@dataclass
class Snapshot:
    """What the daemon looks like now, for one scrape."""

    peer_id: str
    version: str
    uptime: float
    connections: dict[str, int]  # direction -> sessions
    relayed: int
    streams: int
    bytes_in: int
    bytes_out: int
    provider_bytes: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (in, out)
    providers: dict[str, dict] = field(default_factory=dict)  # name -> status()


class _SnapshotCollector(Collector):
    """Turns a :class:`Snapshot` into metric families at scrape time."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Any:
        s = self._snapshot()
        info = GaugeMetricFamily(
            "peerd_info", "This peer; the value is always 1.", labels=["peer_id", "version"]
        )
        info.add_metric([s.peer_id, s.version], 1)
        yield info
        yield GaugeMetricFamily("peerd_uptime_seconds", "Seconds since start.", value=s.uptime)
        connections = GaugeMetricFamily(
            "peerd_connections", "Peer sessions by direction.", labels=["direction"]
        )
        for direction in ("inbound", "outbound"):
            connections.add_metric([direction], s.connections.get(direction, 0))
        yield connections
        yield GaugeMetricFamily(
            "peerd_connections_relayed", "Peer sessions through a relay.", value=s.relayed
        )
        yield GaugeMetricFamily("peerd_streams", "Open streams on all sessions.", value=s.streams)
        traffic = CounterMetricFamily(
            "peerd_peer_bytes", "Bytes exchanged with peers.", labels=["direction"]
        )
        traffic.add_metric(["in"], s.bytes_in)
        traffic.add_metric(["out"], s.bytes_out)
        yield traffic
        by_provider = CounterMetricFamily(
            "peerd_provider_bytes",
            "Stream bytes by provider and direction.",
            labels=["provider", "direction"],
        )
        for name, (received, sent) in sorted(s.provider_bytes.items()):
            by_provider.add_metric([name, "in"], received)
            by_provider.add_metric([name, "out"], sent)
        yield by_provider
        yield from _provider_families(s.providers)


def _provider_families(providers: dict[str, dict]) -> Any:
    named: dict[str, Any] = {}
    generic = GaugeMetricFamily(
        "peerd_provider_status",
        "Other numbers in a provider's status.",
        labels=["provider", "field"],
    )
    for provider, status in sorted(providers.items()):
        if not isinstance(status, dict):
            continue
        for key, value in sorted(status.items()):
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            known = PROVIDER_FIELDS.get((provider, key))
            if known is None:
                generic.add_metric([provider, key], value)
                continue
            name, help_text, kind = known
            family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            named[name] = family_type(name, help_text, value=value)
    yield from named.values()
    yield generic


class DaemonMetrics:
    """
    The metrics of one daemon.

    :param snapshot: called at each scrape.
    """

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_SnapshotCollector(snapshot))
        r = self.registry
        self.events = Counter("peerd_events", "Events emitted, by type.", ["type"], registry=r)
        self.bans = Counter("peerd_bans", "Peers banned (e.g. for bad blocks).", registry=r)
        self.downloads = Counter(
            "peerd_downloads", "Downloads by outcome.", ["outcome"], registry=r
        )
        self.limits = Counter(
            "peerd_limits_hit", "Times a configured bound refused something.", ["key"], registry=r
        )
        self.provider_errors = Counter(
            "peerd_provider_errors", "Errors reported by providers.", ["provider"], registry=r
        )
        self.connects = Counter(
            "peerd_peer_connects", "Peer sessions established.", ["direction"], registry=r
        )
        self.api_latency = Histogram(
            "peerd_control_request_seconds",
            "Control API request latency.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reactor_lag = Histogram(
            "peerd_reactor_lag_seconds",
            f"How late a {LAG_INTERVAL:g}s timer fires.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.reactor_lag_last = Gauge(
            "peerd_reactor_lag_last_seconds", "The last reactor lag measured.", registry=r
        )

    def event(self, event: Event) -> None:
        """Count one event (subscribe this to the event log)."""
        if event.volatile:
            return
        self.events.labels(event.type).inc()
        if event.type == "peer.banned":
            self.bans.inc()
        elif event.type == "peer.connected":
            self.connects.labels(str(event.fields.get("direction", "unknown"))).inc()
        elif event.type == "limit.hit":
            self.limits.labels(str(event.fields.get("key", "unknown"))).inc()
        elif event.type == "provider.error":
            self.provider_errors.labels(str(event.fields.get("provider", "unknown"))).inc()
        outcome = DOWNLOAD_OUTCOMES.get(event.type)
        if outcome is not None:
            self.downloads.labels(outcome).inc()

    def observe_request(self, method: str, route: str, seconds: float) -> None:
        """Record one control API request."""
        self.api_latency.labels(method, route).observe(seconds)

    def observe_lag(self, seconds: float) -> None:
        """Record one reactor lag measurement."""
        self.reactor_lag.observe(seconds)
        self.reactor_lag_last.set(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class ReactorLag:
    """
    Measures how late a periodic timer fires: the time the reactor spent
    on something else when it should have run the timer.

    :param clock: ``IReactorTime``.
    :param observe: gets each lag in seconds.
    """

    def __init__(
        self, clock: Any, observe: Callable[[float], None], interval: float = LAG_INTERVAL
    ) -> None:
        self._clock = clock
        self._observe = observe
        self.interval = interval
        self._call: Any = None
        self._due = 0.0

    def start(self) -> None:
        """Start measuring."""
        if self._call is None:
            self._schedule()

    def stop(self) -> None:
        """Stop measuring."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        self._due = self._clock.seconds() + self.interval
        self._call = self._clock.callLater(self.interval, self._fire)

    def _fire(self) -> None:
        self._observe(max(0.0, self._clock.seconds() - self._due))
        self._schedule()


class MetricsResource(Resource):
    """``GET /metrics``."""

    isLeaf = True

    def __init__(self, metrics: DaemonMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return self._metrics.render()
