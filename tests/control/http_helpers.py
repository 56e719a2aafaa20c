"""Render a twisted.web resource for one request, in memory, and parse the answer."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any
from urllib.parse import parse_qs

from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.test.requesthelper import DummyChannel


@dataclass
class Answer:
    """What the resource answered."""

    status: int
    headers: dict[str, list[str]]
    body: bytes
    request: Any

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None


def call(
    resource: Resource,
    method: str,
    uri: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    port: int = 8080,
) -> Answer:
    """Send one request through a real ``Site`` and ``Request`` over a dummy channel."""
    channel = DummyChannel()
    channel.transport.port = port
    channel.site = Site(resource)
    request = Request(channel)
    request.method = method.encode()
    request.uri = uri.encode()
    request.path = uri.split("?")[0].encode()
    request.clientproto = b"HTTP/1.1"
    request.args = parse_qs(uri.partition("?")[2].encode(), keep_blank_values=True)
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name.encode(), [value.encode()])
    request.parseCookies()
    request.content = BytesIO(body)
    request.process()
    raw = channel.transport.written.getvalue()
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0] else 0
    parsed: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        parsed.setdefault(name.strip().lower(), []).append(value.strip())
    return Answer(status, parsed, payload, request)
