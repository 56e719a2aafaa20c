"""The web endpoint's guard: host check, login, sessions, CSRF rules, headers, the token file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from http_helpers import call
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from peerd.control.web import (
    Sessions,
    WebGuard,
    host_name,
    is_allowed_host,
    load_or_create_token,
)

TOKEN = "t" * 43
PORT = 8123


class Inner(Resource):
    """Stands for the control tree: answers 200 with what it got."""

    isLeaf = True

    def render(self, request) -> bytes:
        return json.dumps(
            {"method": request.method.decode(), "path": request.path.decode()}
        ).encode()


def guard(clock: Clock | None = None, hosts: tuple[str, ...] = ()) -> WebGuard:
    clock = clock or Clock()
    return WebGuard(Inner(), TOKEN, Sessions(clock.seconds, lifetime=100.0), hosts)


def login(g: WebGuard) -> str:
    answer = call(g, "GET", f"/login?token={TOKEN}", {"Host": "127.0.0.1"}, port=PORT)
    assert answer.status == 303 and answer.header("location") == "/"
    cookie = answer.header("set-cookie")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    return cookie.split(";")[0]


def own(cookie: str = "", **extra: str) -> dict[str, str]:
    headers = {"Host": f"127.0.0.1:{PORT}", **extra}
    if cookie:
        headers["Cookie"] = cookie
    return headers


@pytest.mark.parametrize(
    ("header", "name"),
    [("127.0.0.1:80", "127.0.0.1"), ("[::1]:8", "::1"), ("LocalHost", "localhost"), ("a.b", "a.b")],
)
def test_host_name(header: str, name: str) -> None:
    """The name part of a Host header, without port or brackets."""
    assert host_name(header) == name


@pytest.mark.parametrize("name", ["127.0.0.1", "127.9.9.9", "::1", "localhost", "peer.lan"])
def test_allowed_hosts(name: str) -> None:
    """Loopback literals, localhost and configured names pass."""
    assert is_allowed_host(name, ("peer.lan",))


@pytest.mark.parametrize("name", ["evil.example", "192.168.1.1", "0.0.0.0", "localhost.evil", ""])
def test_refused_hosts(name: str) -> None:
    """Any other name (a rebinding attacker's) is refused."""
    assert not is_allowed_host(name, ("peer.lan",))


def test_foreign_host_is_refused_everywhere() -> None:
    """Even the dashboard's files are refused under a foreign Host."""
    for path in ("/", "/static/app.js", "/api/v1/status", "/login?token=" + TOKEN):
        answer = call(guard(), "GET", path, {"Host": "evil.example"}, port=PORT)
        assert answer.status == 403, path
        assert "not allowed" in json.loads(answer.body)["error"]


def test_files_are_public_but_the_api_needs_a_login() -> None:
    """The page loads without a session; the API, events and metrics answer 401."""
    g = guard()
    assert call(g, "GET", "/", own(), port=PORT).status == 200
    for path in ("/api/v1/status", "/api/v1/events", "/metrics"):
        answer = call(g, "GET", path, own(), port=PORT)
        assert answer.status == 401, path
        assert "peerctl dashboard" in json.loads(answer.body)["error"]


def test_login_with_the_token_gives_a_working_session() -> None:
    """The login URL sets a per-port session cookie that opens the API."""
    g = guard()
    cookie = login(g)
    assert cookie.startswith(f"peerd_session_{PORT}=")
    assert call(g, "GET", "/api/v1/status", own(cookie), port=PORT).status == 200
    other_port = call(g, "GET", "/api/v1/status", own(cookie), port=PORT + 1)
    assert other_port.status == 401, "another daemon's cookie name differs"


def test_wrong_token_is_refused() -> None:
    """A wrong or missing token sets no cookie."""
    g = guard()
    for uri in ("/login?token=nope", "/login"):
        answer = call(g, "GET", uri, own(), port=PORT)
        assert answer.status == 403 and answer.header("set-cookie") is None


def test_sessions_expire() -> None:
    """A session stops working after its lifetime."""
    clock = Clock()
    g = guard(clock)
    cookie = login(g)
    clock.advance(101)
    assert call(g, "GET", "/api/v1/status", own(cookie), port=PORT).status == 401


def test_bearer_token_works_for_scripts() -> None:
    """Authorization: Bearer TOKEN opens the API and metrics; a wrong one does not."""
    g = guard()
    assert call(g, "GET", "/metrics", own(Authorization=f"Bearer {TOKEN}"), port=PORT).status == 200
    assert call(g, "GET", "/metrics", own(Authorization="Bearer nope"), port=PORT).status == 401
    body = b"{}"
    headers = own(Authorization=f"Bearer {TOKEN}", **{"Content-Type": "application/json"})
    assert call(g, "POST", "/api/v1/peers", headers, body, port=PORT).status == 200


def test_state_changes_need_origin_and_json() -> None:
    """With a session cookie, POST needs this endpoint's Origin and a JSON body type."""
    g = guard()
    cookie = login(g)
    origin = f"http://127.0.0.1:{PORT}"
    json_type = {"Content-Type": "application/json"}
    cases = [
        (own(cookie, **json_type), 403),  # no Origin
        (own(cookie, Origin="http://evil.example", **json_type), 403),
        (own(cookie, Origin=f"http://127.0.0.1:{PORT + 1}", **json_type), 403),
        (own(cookie, Origin=origin, **{"Content-Type": "text/plain"}), 415),
        (own(cookie, Origin=origin, **{"Content-Type": "application/x-www-form-urlencoded"}), 415),
        (own(cookie, Origin=origin, **{"Content-Type": "application/json; charset=utf-8"}), 200),
    ]
    for headers, status in cases:
        for method in ("POST", "DELETE"):
            answer = call(g, method, "/api/v1/peers", headers, b"{}", port=PORT)
            assert answer.status == status, (method, headers)


def test_foreign_origin_refused_even_for_reads() -> None:
    """A cross-origin GET is refused too (no CORS, and no data)."""
    g = guard()
    cookie = login(g)
    answer = call(g, "GET", "/api/v1/status", own(cookie, Origin="http://evil.example"), port=PORT)
    assert answer.status == 403


def test_security_headers_on_every_answer() -> None:
    """CSP, frame denial, nosniff on refusals and successes alike; never CORS."""
    g = guard()
    for answer in (
        call(g, "GET", "/", own(), port=PORT),
        call(g, "GET", "/api/v1/status", own(), port=PORT),
        call(g, "GET", "/", {"Host": "evil.example"}, port=PORT),
    ):
        assert "frame-ancestors 'none'" in answer.header("content-security-policy")
        assert answer.header("x-frame-options") == "DENY"
        assert answer.header("x-content-type-options") == "nosniff"
        assert not any(name.startswith("access-control-") for name in answer.headers)


def test_token_file_is_private_and_kept(tmp_path: Path) -> None:
    """The token is created 0600, kept across restarts, and a loose mode is tightened."""
    token = load_or_create_token(tmp_path)
    path = tmp_path / "web.token"
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    assert load_or_create_token(tmp_path) == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("short")
    assert load_or_create_token(tmp_path) != "short"
