"""The control tree: dispatch by path, the dashboard's files, API latency, INode.emit."""

from __future__ import annotations

from pathlib import Path

from http_helpers import call
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from peerd.control.events import EventLog
from peerd.control.router import ControlResource, Router
from peerd.control.site import ControlRoot
from peerd.control.sse import EventStreamResource
from peerd.control.static_files import StaticFiles, default_directory
from peerd.node import ProviderNode


def tree(tmp_path: Path) -> tuple[ControlRoot, list, Clock]:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>t</title>")
    (static / "app.js").write_text("export {};")
    (static / "notes.bak").write_text("secret")
    (tmp_path / "outside.js").write_text("nope")
    router = Router()
    router.route("GET", "things/{id}", lambda request, id: {"id": id})
    clock = Clock()
    seen: list = []
    root = ControlRoot(
        ControlResource(router),
        events=EventStreamResource(EventLog(clock.seconds, "e"), clock),
        static=StaticFiles(static),
        clock=clock,
        label=router.label,
        observe=lambda method, route, seconds: seen.append((method, route)),
    )
    return root, seen, clock


def test_paths_go_to_their_part(tmp_path: Path) -> None:
    """/api/v1/ is the API, /api/v1/events the stream, / and /static/ the files."""
    root, _, _ = tree(tmp_path)
    assert call(root, "GET", "/api/v1/things/7").body.strip() == b'{"id": "7"}'
    assert (
        call(root, "GET", "/api/v1/events").header("content-type").startswith("text/event-stream")
    )
    index = call(root, "GET", "/")
    assert index.status == 200 and index.header("content-type").startswith("text/html")
    script = call(root, "GET", "/static/app.js")
    assert script.header("content-type").startswith("text/javascript")
    assert call(root, "GET", "/metrics").status == 404  # no metrics in this tree


def test_only_listed_files_are_served(tmp_path: Path) -> None:
    """Unknown suffixes, traversal and anything outside the directory are 404."""
    root, _, _ = tree(tmp_path)
    for path in ("/static/notes.bak", "/static/../outside.js", "/static/%2e%2e/outside.js", "/x"):
        assert call(root, "GET", path).status == 404, path
    assert call(root, "POST", "/static/app.js").status == 405


def test_etag_revalidation(tmp_path: Path) -> None:
    """A matching If-None-Match gets 304."""
    root, _, _ = tree(tmp_path)
    etag = call(root, "GET", "/static/app.js").header("etag")
    assert call(root, "GET", "/static/app.js", {"If-None-Match": etag}).status == 304


def test_api_latency_is_observed_by_route_pattern(tmp_path: Path) -> None:
    """Each API request is timed under its route's pattern (bounded label values)."""
    root, seen, _ = tree(tmp_path)
    call(root, "GET", "/api/v1/things/1")
    call(root, "GET", "/api/v1/things/2")
    call(root, "GET", "/api/v1/nothing")
    assert seen == [
        ("GET", "/api/v1/things/{id}"),
        ("GET", "/api/v1/things/{id}"),
        ("GET", "unmatched"),
    ]


def test_the_package_ships_the_dashboard() -> None:
    """The installed package has the page and its modules."""
    names = StaticFiles(default_directory()).names
    assert {"index.html", "app.js", "dashboard.css", "dom.js"} <= set(names)


class _Manager:
    local_peer_id = "ME"
    clock = Clock()


def test_node_emit_tags_the_provider_and_never_raises(tmp_path: Path) -> None:
    """INode.emit adds the provider's name; a malformed event is logged, not raised."""
    log = EventLog(Clock().seconds, "e")
    node = ProviderNode(
        name="dht",
        manager=_Manager(),  # type: ignore[arg-type]
        reactor=None,
        data_dir=tmp_path,
        control=None,  # type: ignore[arg-type]
        workers=None,  # type: ignore[arg-type]
        events=log,
    )
    node.emit("dht.record-stored", key="k")
    with capturedLogs() as logged:
        node.emit("Bad Type")
    [event] = log.recent()
    assert event.type == "dht.record-stored" and event.fields == {"key": "k", "provider": "dht"}
    assert any("bad event" in str(e.get("log_format")) for e in logged)
