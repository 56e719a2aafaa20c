"""
The web endpoint (``[control] web``): the control tree over TCP, guarded.

Who may use it:

* **Host check** (DNS rebinding): the ``Host`` header must name a loopback
  literal (``127.0.0.0/8``, ``[::1]``), ``localhost``, or one of
  ``[control] web_hosts``; anything else gets ``403``.
* **Login**: the token in ``<data_dir>/web.token`` (mode 0600), given once
  as ``/login?token=...`` (the URL ``peerctl dashboard`` prints), is
  exchanged for a session cookie (``HttpOnly; SameSite=Strict``). Scripts
  and Prometheus may send ``Authorization: Bearer TOKEN`` instead.
* The dashboard's own files are public (they hold no data); the API, the
  event stream and ``/metrics`` need a session or the token (``401``).
* **CSRF**: a request that changes state (anything but ``GET``/``HEAD``)
  with a session cookie needs an ``Origin`` equal to this endpoint's own,
  and every such request needs ``Content-Type: application/json``. A
  request with a foreign ``Origin`` is refused whatever its method. No CORS
  header is ever sent.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from peerd.control.site import METRICS_PATH, add_security_headers, request_path

TOKEN_FILE = "web.token"
TOKEN_MODE = 0o600
SESSION_LIFETIME = 7 * 86400.0
MAX_SESSIONS = 64
LOGIN_PATH = "/login"
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})

log = Logger()


def load_or_create_token(data_dir: Path) -> str:
    """
    The web token in ``data_dir/web.token``, created (mode 0600) if missing
    or empty; an existing file's mode is tightened to 0600.
    """
    path = data_dir / TOKEN_FILE
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        token = ""
    if len(token) < 32:
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, TOKEN_MODE)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token + "\n")
    os.chmod(path, TOKEN_MODE)
    return token


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header: no port, no IPv6 brackets, lowercase."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_allowed_host(name: str, extra: Iterable[str] = ()) -> bool:
    """Loopback literals, ``localhost`` and the configured names pass."""
    if name in ("localhost", *extra):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Sessions:
    """Session ids handed out after a login, with their expiry; the oldest go first."""

    def __init__(
        self, now: Any, lifetime: float = SESSION_LIFETIME, limit: int = MAX_SESSIONS
    ) -> None:
        self._now = now
        self._lifetime = lifetime
        self._limit = limit
        self._sessions: OrderedDict[str, float] = OrderedDict()

    def create(self) -> str:
        """A new session id."""
        session = secrets.token_urlsafe(32)
        self._sessions[session] = self._now() + self._lifetime
        while len(self._sessions) > self._limit:
            self._sessions.popitem(last=False)
        return session

    def valid(self, session: str | None) -> bool:
        """Whether ``session`` was handed out and has not expired."""
        if not session:
            return False
        expiry = self._sessions.get(session)
        if expiry is None:
            return False
        if expiry < self._now():
            del self._sessions[session]
            return False
        return True


class WebGuard(Resource):
    """Checks host, login, origin and content type, then hands over to ``inner``."""

    isLeaf = True

    def __init__(
        self,
        inner: Resource,
        token: str,
        sessions: Sessions,
        hosts: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self._inner = inner
        self._token = token
        self._sessions = sessions
        self._hosts = tuple(h.lower() for h in hosts)

    def render(self, request: Any) -> object:
        add_security_headers(request)
        host_header = (request.getHeader(b"host") or b"").decode("latin-1")
        host = host_name(host_header)
        if not is_allowed_host(host, self._hosts):
            return _refuse(
                request, 403, f"host {host_header!r} is not allowed ([control] web_hosts)"
            )
        origin = request.getHeader(b"origin")
        own_origin = f"http://{host_header}".encode("latin-1")
        if origin is not None and origin != own_origin:
            return _refuse(request, 403, "cross-origin requests are refused")
        path = request_path(request)
        if path == LOGIN_PATH:
            return self._login(request)
        if not _needs_login(path):
            return self._inner.render(request)
        by_session = self._sessions.valid(_cookie(request, self.cookie_name(request)))
        if not by_session and not self._bearer_ok(request):
            return _refuse(
                request, 401, "log in first: open the URL that 'peerctl dashboard' prints"
            )
        if request.method not in SAFE_METHODS:
            if by_session and origin != own_origin:
                return _refuse(
                    request, 403, "a request that changes state needs this page's Origin"
                )
            content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip()
            if content_type.lower() != b"application/json":
                return _refuse(
                    request, 415, "a request that changes state must be application/json"
                )
        return self._inner.render(request)

    @staticmethod
    def cookie_name(request: Any) -> bytes:
        """Cookies are shared by every port of a host: the name carries ours."""
        return b"peerd_session_%d" % request.getHost().port

    def _bearer_ok(self, request: Any) -> bool:
        header = request.getHeader(b"authorization") or b""
        scheme, _, value = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(value.strip(), self._token.encode("ascii"))

    def _login(self, request: Any) -> object:
        query = parse_qs(request.uri.decode("latin-1").partition("?")[2])
        given = (query.get("token") or [""])[0]
        if not hmac.compare_digest(given.encode("latin-1"), self._token.encode("ascii")):
            log.warn("refused a dashboard login with a wrong token")
            return _refuse(
                request, 403, "wrong or missing token: use the URL 'peerctl dashboard' prints"
            )
        session = self._sessions.create()
        request.addCookie(
            self.cookie_name(request),
            session.encode("ascii"),
            path=b"/",
            httpOnly=True,
            sameSite="strict",
        )
        request.setResponseCode(303)
        request.setHeader(b"Location", b"/")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"logged in\n"


def _needs_login(path: str) -> bool:
    return path.startswith("/api/") or path == "/api" or path == METRICS_PATH


def _cookie(request: Any, name: bytes) -> str | None:
    value = request.getCookie(name)
    return value.decode("ascii", "replace") if value else None


def _refuse(request: Any, status: int, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps({"error": message}).encode("utf-8") + b"\n"


class WebListenError(Exception):
    """The web endpoint cannot listen; the message names ``[control] web``."""


class QuietSite(Site):
    """A Site that writes no access log."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


class WebListener(Service):
    """
    Listens on one endpoint string with ``resource``; :meth:`listen` is
    synchronous so a busy port stops the daemon's start with one line.
    """

    def __init__(self, reactor: Any, endpoint: str, resource: Resource, key: str) -> None:
        super().__init__()
        self._reactor = reactor
        self.endpoint = endpoint
        self._resource = resource
        self._key = key
        self.port: Any = None

    def listen(self) -> None:
        """Start listening now.

        :raises WebListenError: naming the config key and the reason.
        """
        if self.port is not None:
            return
        outcome: list[Any] = []
        try:
            server = serverFromString(self._reactor, self.endpoint)
            server.listen(QuietSite(self._resource, logPath=None)).addBoth(outcome.append)
        except Exception as e:  # a malformed endpoint string
            raise WebListenError(f"cannot listen on {self.endpoint} ({self._key}): {e}") from None
        if not outcome or isinstance(outcome[0], Failure):
            why = outcome[0].getErrorMessage() if outcome else "listening did not complete"
            raise WebListenError(f"cannot listen on {self.endpoint} ({self._key}): {why}")
        self.port = outcome[0]

    def startService(self) -> None:
        super().startService()
        self.listen()

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    def base_url(self) -> str | None:
        """``http://HOST:PORT/`` for a TCP listener (a wildcard becomes 127.0.0.1)."""
        if self.port is None:
            return None
        address = self.port.getHost()
        host = getattr(address, "host", None)
        if host is None:
            return None
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{address.port}/"
