"""
Content-addressed modules and the worker's cache of compiled ones.

A module (or an input) is named by the SHA-256 of its bytes, in hex.  A
worker compiles a module once, in a job process of its own, and keeps the
compiled artifact in its data dir (``modules/HASH.TAG.cwasm``, ``TAG``
naming the wasmtime version and engine settings it was built for), least
recently used first out when the cache is over ``cache_size``.  So a batch
sends each module to each peer at most once, and not at all to a peer that
ran it before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from peerd.providers.compute import reasons

HASH = re.compile(r"^[0-9a-f]{64}$")
MAX_REMEMBERED_ERRORS = 256


def content_hash(data: bytes) -> str:
    """The name of ``data``: its SHA-256 in hex."""
    return hashlib.sha256(data).hexdigest()


def config_tag(reservation: int) -> str:
    """
    Names what a compiled module was built for (wasmtime's version and the
    engine's memory reservation, see :func:`.sandbox.engine_config`), without
    importing wasmtime into the daemon.
    """
    from importlib.metadata import version

    return f"wasmtime{version('wasmtime')}-r{reservation}"


def valid_hash(value: object) -> bool:
    """Whether ``value`` is a content hash."""
    return isinstance(value, str) and HASH.match(value) is not None


class CompileFailed(Exception):
    """The module does not compile; ``detail`` says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = reasons.COMPILE


class ModuleCache:
    """
    Compiled modules on disk, bounded.

    :param run_in_thread: the node's worker pool, for disk work.
    :param compile: ``compile(source, dest) -> Deferred`` of the runner's
        ``done`` message (see :meth:`RunnerProcess.compile`).
    """

    def __init__(
        self,
        directory: Path,
        tag: str,
        limit: int,
        compile: Callable[[str, str], defer.Deferred],
        run_in_thread: Callable[..., defer.Deferred],
    ) -> None:
        self.directory = directory
        self.tag = tag
        self.limit = limit
        self._compile = compile
        self._run_in_thread = run_in_thread
        self._adding: dict[str, list[defer.Deferred]] = {}
        self._errors: OrderedDict[str, str] = OrderedDict()
        self._pinned: Counter[str] = Counter()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, module: str) -> Path:
        """Where the compiled ``module`` lives."""
        return self.directory / f"{module}.{self.tag}.cwasm"

    def has(self, module: str) -> bool:
        """Whether ``module`` is compiled and ready."""
        return valid_hash(module) and self.path(module).exists()

    def error(self, module: str) -> str | None:
        """Why ``module`` failed to compile here, if it did."""
        return self._errors.get(module)

    def pin(self, module: str) -> None:
        """Keep ``module`` while a job uses it."""
        self._pinned[module] += 1

    def unpin(self, module: str) -> None:
        """A job is done with ``module``."""
        self._pinned[module] -= 1
        if self._pinned[module] <= 0:
            del self._pinned[module]

    def touch(self, module: str) -> None:
        """Mark ``module`` as just used (for least-recently-used eviction)."""
        with contextlib.suppress(OSError):
            os.utime(self.path(module))

    def add(self, module: str, data: bytes) -> defer.Deferred:
        """
        Store and compile ``data`` as ``module`` (checked against its hash).
        Fires when it is ready; fails with :class:`CompileFailed` or ``ValueError``.
        """
        waiter: defer.Deferred = defer.Deferred()
        if module in self._adding:
            self._adding[module].append(waiter)
            return waiter
        if self.has(module):
            return defer.succeed(None)
        if module in self._errors:
            return defer.fail(CompileFailed(self._errors[module]))
        self._adding[module] = [waiter]

        def done(result: Any) -> None:
            for each in self._adding.pop(module, []):
                each.callback(None) if not isinstance(result, Failure) else each.errback(result)

        defer.ensureDeferred(self._add(module, data)).addBoth(done)
        return waiter

    async def _add(self, module: str, data: bytes) -> None:
        source = self.directory / f".{module}.src"
        actual = await self._run_in_thread(_write_checked, source, data)
        if actual != module:
            raise ValueError(f"the module's bytes hash to {actual}, not {module}")
        try:
            done = await self._compile(str(source), str(self.path(module)))
        finally:
            await self._run_in_thread(_unlink, source)
        result = done.get("result") or {}
        if result.get("reason") != reasons.OK:
            detail = str(result.get("detail") or result.get("reason"))
            self._errors[module] = detail
            while len(self._errors) > MAX_REMEMBERED_ERRORS:
                self._errors.popitem(last=False)
            raise CompileFailed(detail)
        await self._run_in_thread(self.evict, set(self._pinned) | {module})

    def evict(self, keep: set[str]) -> None:
        """Delete the least recently used compiled modules (but those in ``keep``) while over the limit."""
        files = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".cwasm"):
                stat = entry.stat()
                files.append((stat.st_mtime, stat.st_size, entry.name))
        total = sum(size for _, size, _ in files)
        for _, size, name in sorted(files):
            if total <= self.limit:
                break
            if name.split(".", 1)[0] in keep:
                continue
            try:
                os.unlink(self.directory / name)
            except OSError:
                continue
            total -= size

    def size(self) -> int:
        """Bytes of compiled modules held."""
        return sum(
            e.stat().st_size for e in os.scandir(self.directory) if e.name.endswith(".cwasm")
        )


def _write_checked(path: Path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return content_hash(data)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
