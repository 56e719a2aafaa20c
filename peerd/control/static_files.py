"""
The dashboard's files (``peerd/control/static/``), served from memory.

The directory is read once: only the files found then are served, by exact
name, so no request path can reach anything else on disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".txt": b"text/plain; charset=utf-8",
}
INDEX = "index.html"


@dataclass(frozen=True)
class _File:
    body: bytes
    content_type: bytes
    etag: bytes


def default_directory() -> Path:
    """Where the package keeps the dashboard's files."""
    return Path(str(resources.files("peerd.control") / "static"))


class StaticFiles:
    """Serves ``/`` (``index.html``) and ``/static/NAME`` for the files under ``directory``."""

    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or default_directory()
        self._files: dict[str, _File] = {}
        if directory.is_dir():
            for path in sorted(directory.rglob("*")):
                kind = CONTENT_TYPES.get(path.suffix)
                if path.is_file() and kind is not None:
                    body = path.read_bytes()
                    etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'
                    self._files[path.relative_to(directory).as_posix()] = _File(body, kind, etag)

    @property
    def names(self) -> list[str]:
        """The files served."""
        return sorted(self._files)

    def lookup(self, path: str) -> _File | None:
        """The file for a URL path (``/`` is the index), or None."""
        if path in ("/", "", "/index.html"):
            return self._files.get(INDEX)
        if path.startswith("/static/"):
            return self._files.get(path[len("/static/") :])
        return None

    def render(self, request: Any, path: str) -> bytes:
        """Answer ``request`` for ``path``: the file, 304, 404 or 405."""
        method = request.method
        found = self.lookup(path)
        if found is None:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"not found\n"
        if method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"Allow", b"GET, HEAD")
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"method not allowed\n"
        request.setHeader(b"Content-Type", found.content_type)
        request.setHeader(b"ETag", found.etag)
        request.setHeader(b"Cache-Control", b"no-cache")
        if request.getHeader(b"if-none-match") == found.etag:
            request.setResponseCode(304)
            return b""
        return found.body
