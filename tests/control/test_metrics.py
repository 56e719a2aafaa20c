"""Prometheus metrics: the names exported, their values, and the reactor lag probe."""

from __future__ import annotations

import re
from pathlib import Path

from http_helpers import call
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock

from peerd.control.events import EventLog
from peerd.control.metrics import DaemonMetrics, MetricsResource, ReactorLag, Snapshot

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.rst"

EXPECTED = {
    "peerd_info", "peerd_uptime_seconds", "peerd_connections", "peerd_connections_relayed",
    "peerd_streams", "peerd_peer_bytes", "peerd_provider_bytes", "peerd_provider_status",
    "peerd_files_shares", "peerd_files_downloads_active", "peerd_files_uploading_to",
    "peerd_files_upload_rate_bytes", "peerd_files_download_rate_bytes",
    "peerd_files_uploaded_bytes", "peerd_files_blocks_verified", "peerd_files_blocks_rejected",
    "peerd_storage_used_bytes", "peerd_storage_quota_bytes", "peerd_storage_shares",
    "peerd_storage_jobs_running", "peerd_relay_circuits", "peerd_relay_reservations",
    "peerd_relay_bytes", "peerd_events", "peerd_bans", "peerd_downloads", "peerd_limits_hit",
    "peerd_provider_errors", "peerd_peer_connects", "peerd_control_request_seconds",
    "peerd_reactor_lag_seconds", "peerd_reactor_lag_last_seconds",
}  # fmt: skip


def snapshot() -> Snapshot:
    return Snapshot(
        peer_id="PEER",
        version="9.9",
        uptime=12.0,
        connections={"inbound": 2, "outbound": 3},
        relayed=1,
        streams=7,
        bytes_in=100,
        bytes_out=200,
        provider_bytes={"files": (10, 20)},
        providers={
            "files": {"shares": 3, "downloads": 1, "uploading_to": 0, "upload_rate": 5.0,
                      "download_rate": 6.0, "bytes_uploaded": 9, "blocks_verified": 40,
                      "blocks_rejected": 1},
            "storage": {"quota": 1000, "used": 10, "shares": 2, "jobs_running": 0},
            "relay": {"serving": True, "reservations": 1, "circuits": 2, "relayed_bytes": 77,
                      "relayed_via": []},
            "dht": {"records": 12, "buckets": 4, "mode": "server"},
        },
    )  # fmt: skip


def families(metrics: DaemonMetrics) -> dict:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def sample(found: dict, family: str, **labels: str) -> float:
    for s in found[family].samples:
        if all(s.labels.get(k) == v for k, v in labels.items()) and not s.name.endswith(
            ("_bucket", "_count", "_sum", "_created")
        ):
            return s.value
    raise AssertionError(f"no sample of {family} with {labels}")


def test_every_documented_name_is_exported() -> None:
    """The exported families are exactly the documented set."""
    metrics = DaemonMetrics(snapshot)
    metrics.observe_request("GET", "/api/v1/status", 0.01)
    metrics.observe_lag(0.002)
    assert set(families(metrics)) == EXPECTED


def test_docs_list_every_metric() -> None:
    """docs/api.rst names every metric (with its _total suffix for counters)."""
    text = DOCS.read_text()
    found = families(DaemonMetrics(snapshot))
    for name, family in found.items():
        shown = name + "_total" if family.type == "counter" else name
        assert re.search(rf"``{shown}``", text), f"{shown} is not in docs/api.rst"


def test_values_come_from_the_snapshot() -> None:
    """Connections, bytes and provider figures are read at scrape time."""
    found = families(DaemonMetrics(snapshot))
    assert sample(found, "peerd_connections", direction="inbound") == 2
    assert sample(found, "peerd_connections", direction="outbound") == 3
    assert sample(found, "peerd_peer_bytes", direction="out") == 200
    assert sample(found, "peerd_provider_bytes", provider="files", direction="in") == 10
    assert sample(found, "peerd_storage_quota_bytes") == 1000
    assert sample(found, "peerd_files_blocks_verified") == 40
    assert sample(found, "peerd_relay_circuits") == 2
    # Numbers of other providers are kept generically; strings and booleans are not.
    assert sample(found, "peerd_provider_status", provider="dht", field="records") == 12
    generic = {s.labels["field"] for s in found["peerd_provider_status"].samples}
    assert "mode" not in generic and "serving" not in generic


def test_events_are_counted() -> None:
    """Bans, download outcomes, limits and provider errors are counted from events."""
    clock = Clock()
    log = EventLog(clock.seconds, epoch="x")
    metrics = DaemonMetrics(snapshot)
    log.subscribe(metrics.event)
    log.emit("peer.banned", peer="P", cid="c", reason="bad block")
    log.emit("download.started", cid="c")
    log.emit("download.completed", cid="c")
    log.emit("download.failed", cid="d")
    log.emit("limit.hit", key="[network] max_connections")
    log.emit("provider.error", provider="relay", error="boom")
    log.emit("peer.connected", peer="P", direction="inbound")
    log.broadcast("stats.tick")  # volatile: not counted
    found = families(metrics)
    assert sample(found, "peerd_bans") == 1
    assert sample(found, "peerd_downloads", outcome="completed") == 1
    assert sample(found, "peerd_downloads", outcome="failed") == 1
    assert sample(found, "peerd_limits_hit", key="[network] max_connections") == 1
    assert sample(found, "peerd_provider_errors", provider="relay") == 1
    assert sample(found, "peerd_peer_connects", direction="inbound") == 1
    types = {s.labels["type"] for s in found["peerd_events"].samples}
    assert "stats.tick" not in types and "peer.banned" in types


def test_reactor_lag_is_how_late_the_timer_fires() -> None:
    """A timer due at t+0.25 that runs at t+0.40 measures 0.15 s of lag."""
    clock = Clock()
    lags: list[float] = []
    probe = ReactorLag(clock, lags.append, interval=0.25)
    probe.start()
    clock.advance(0.40)
    clock.advance(0.25)
    probe.stop()
    clock.advance(1.0)
    assert [round(lag, 3) for lag in lags] == [0.15, 0.0]
    assert clock.getDelayedCalls() == []


def test_metrics_resource_serves_the_text_format() -> None:
    """GET /metrics answers the Prometheus text format."""
    answer = call(MetricsResource(DaemonMetrics(snapshot)), "GET", "/metrics")
    assert answer.status == 200
    assert answer.header("content-type").startswith("text/plain; version=")
    assert b"peerd_connections{" in answer.body
