"""
Routing for the control API, and the ``twisted.web`` resource that serves it.

A :class:`Router` maps ``(method, path)`` to a handler. Paths are relative to
``/api/v1/`` and may hold ``{name}`` segments, passed to the handler as
keyword arguments. Handlers get an :class:`ApiRequest` and return a
JSON-serialisable value, a Deferred of one, or a coroutine of one; raising
:class:`ApiError` answers with its status and message. Any other exception
is logged and answered with a 500; the server keeps serving.

:class:`ControlResource` is the only part that knows about ``twisted.web``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from peerd.interfaces import IControlRouter

API_PREFIX = "/api/v1/"
METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})
MAX_BODY_SIZE = 1024 * 1024

_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_PROVIDER_NAME = re.compile(r"^[a-z0-9_-]+$")

log = Logger()


class ApiError(Exception):
    """Raised by a handler to answer ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


@dataclass(frozen=True)
class ApiResponse:
    """Returned by a handler that answers with a status other than 200."""

    status: int
    body: object


@dataclass
class ApiRequest:
    """One API request, as a handler sees it."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> dict:
        """
        The body as a JSON object; an empty body is ``{}``.

        :raises ApiError: 400 if the body is not JSON or not an object.
        """
        if not self.body.strip():
            return {}
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"request body is not valid JSON: {e}") from None
        if not isinstance(value, dict):
            raise ApiError(400, "request body must be a JSON object")
        return value

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``name``, or ``default``."""
        values = self.query.get(name)
        return values[0] if values else default


Handler = Callable[..., object]


@dataclass(frozen=True)
class _Route:
    method: str
    segments: tuple[str, ...]
    handler: Handler

    @property
    def label(self) -> str:
        return f"{self.method} {API_PREFIX}{'/'.join(self.segments)}"

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sorts literal segments before parameters, position by position."""
        return tuple(1 if _PARAM.match(s) else 0 for s in self.segments)

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params = {}
        for pattern, segment in zip(self.segments, segments, strict=True):
            param = _PARAM.match(pattern)
            if param is not None:
                if not segment:
                    return None
                params[param[1]] = segment
            elif pattern != segment:
                return None
        return params


def _split(path: str) -> list[str]:
    path = path.strip("/")
    return path.split("/") if path else []


@implementer(IControlRouter)
class Router:
    """The table of API routes; paths are relative to ``/api/v1/``."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def route(self, method: str, path: str, handler: Handler) -> None:
        """
        Serve ``method`` on ``path`` with ``handler(request, **params)``.

        :raises ValueError: unknown method, bad parameter segment, or the
            same method and path registered twice.
        """
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"unsupported method {method!r}; use one of {sorted(METHODS)}")
        segments = tuple(_split(path))
        for segment in segments:
            if ("{" in segment or "}" in segment) and not _PARAM.match(segment):
                raise ValueError(f"bad path segment {segment!r} in {path!r}: use {{name}}")
        shape = tuple("{}" if _PARAM.match(s) else s for s in segments)
        for existing in self._routes:
            existing_shape = tuple("{}" if _PARAM.match(s) else s for s in existing.segments)
            if existing.method == method and existing_shape == shape:
                raise ValueError(f"route {existing.label} is already registered")
        self._routes.append(_Route(method, segments, handler))

    def for_provider(self, name: str) -> IControlRouter:
        """A router that mounts routes under ``providers/NAME/``."""
        if not _PROVIDER_NAME.match(name):
            raise ValueError(f"bad provider name {name!r}: lowercase letters, digits, - and _")
        return _PrefixedRouter(self, f"providers/{name}")

    def allowed_methods(self, path: str) -> list[str]:
        """The methods served on ``path``, sorted; empty if none."""
        segments = [unquote(s) for s in _split(path)]
        return sorted({r.method for r in self._routes if r.match(segments) is not None})

    def label(self, method: str, path: str) -> str:
        """The pattern of the route serving ``method`` on ``path`` (``/api/v1/x/{id}``),
        or ``unmatched``: a bounded name for metrics."""
        found = self._find(method.upper(), path)
        return API_PREFIX + "/".join(found[0].segments) if found else "unmatched"

    def _find(self, method: str, path: str) -> tuple[_Route, dict[str, str]] | None:
        segments = [unquote(s) for s in _split(path)]
        candidates = []
        for route in self._routes:
            if route.method != method:
                continue
            params = route.match(segments)
            if params is not None:
                candidates.append((route.specificity, route, params))
        if not candidates:
            return None
        _, route, params = min(candidates, key=lambda c: c[0])
        return route, params

    def dispatch(self, request: ApiRequest) -> Deferred[tuple[int, object]]:
        """
        Run the handler for ``request``.

        :return: a Deferred that always succeeds with ``(status, body)``;
            errors have the body ``{"error": message}``.
        """
        found = self._find(request.method, request.path)
        if found is None:
            where = f"{API_PREFIX}{request.path.strip('/')}"
            allowed = self.allowed_methods(request.path)
            if allowed:
                message = f"method {request.method} not allowed on {where} (allowed: "
                return succeed((405, {"error": message + ", ".join(allowed) + ")"}))
            return succeed((404, {"error": f"no such API route: {where}"}))
        route, params = found
        d = maybeDeferred(route.handler, request, **params)
        d.addCallbacks(_response, _error, errbackArgs=(route,))
        return d


def _response(value: object) -> tuple[int, object]:
    if isinstance(value, ApiResponse):
        return value.status, value.body
    return 200, value


def _error(failure: Failure, route: _Route) -> tuple[int, object]:
    if failure.check(ApiError):
        return failure.value.status, {"error": failure.value.message}
    log.failure("control API handler for {route} failed", failure, route=route.label)
    exc = failure.value
    return 500, {"error": f"internal error in {route.label}: {type(exc).__name__}: {exc}"}


@implementer(IControlRouter)
class _PrefixedRouter:
    """A view of a :class:`Router` that prefixes every path."""

    def __init__(self, router: Router, prefix: str) -> None:
        self._router = router
        self._prefix = prefix

    def route(self, method: str, path: str, handler: Handler) -> None:
        path = path.strip("/")
        self._router.route(method, f"{self._prefix}/{path}" if path else self._prefix, handler)


class ControlResource(Resource):
    """Serves a :class:`Router` under ``/api/v1/`` as JSON."""

    isLeaf = True

    def __init__(self, router: Router, max_body_size: int = MAX_BODY_SIZE) -> None:
        super().__init__()
        self._router = router
        self._max_body_size = max_body_size

    def render(self, request) -> object:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        try:
            api_request = self._api_request(request)
        except ApiError as e:
            self._write(request, gone, e.status, {"error": e.message})
            return NOT_DONE_YET
        d = self._router.dispatch(api_request)
        d.addCallback(lambda result: self._write(request, gone, *result, api_request))
        d.addErrback(lambda f: log.failure("control API response failed", f))
        return NOT_DONE_YET

    def _api_request(self, request) -> ApiRequest:
        try:
            method = request.method.decode("ascii")
            uri = request.uri.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "request line is not UTF-8") from None
        parts = urlsplit(uri)
        if not (parts.path + "/").startswith(API_PREFIX):
            raise ApiError(404, f"no such API route: {parts.path} (the API is under {API_PREFIX})")
        body = request.content.read(self._max_body_size + 1) if request.content else b""
        if len(body) > self._max_body_size:
            raise ApiError(413, f"request body is larger than {self._max_body_size} bytes")
        return ApiRequest(
            method=method,
            path=parts.path[len(API_PREFIX) :],
            query=parse_qs(parts.query, keep_blank_values=True),
            body=body,
        )

    def _write(
        self,
        request,
        gone: list[bool],
        status: int,
        body: object,
        api_request: ApiRequest | None = None,
    ) -> None:
        if gone:
            return  # the client went away; nobody to answer
        try:
            data = json.dumps(body).encode("utf-8") + b"\n"
        except (TypeError, ValueError) as e:
            log.failure("control API response is not JSON-serialisable", Failure())
            status = 500
            where = f"{api_request.method} {API_PREFIX}{api_request.path}" if api_request else ""
            message = f"internal error in {where}: response is not JSON-serialisable: {e}"
            data = json.dumps({"error": message}).encode("utf-8") + b"\n"
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", str(len(data)).encode("ascii"))
        if status == 405 and api_request is not None:
            allowed = self._router.allowed_methods(api_request.path)
            request.setHeader(b"Allow", ", ".join(allowed).encode("ascii"))
        request.write(data)
        request.finish()
