"""
A bounded pool of worker threads for blocking and CPU-heavy work, so the
reactor thread never waits on hashing or bulk disk I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

log = Logger()


class WorkerPool:
    """
    ``size`` threads; at most ``size * queue_factor`` calls are handed to
    them at once, the rest wait their turn in the reactor (backpressure).
    """

    def __init__(self, reactor: Any, size: int, queue_factor: int = 4) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=size, name="peerd-worker")
        self._slots = defer.DeferredSemaphore(size * queue_factor)
        self.size = size
        self._saturated = False

    def start(self) -> None:
        """Start the threads."""
        self._pool.start()

    def stop(self) -> None:
        """Let running calls finish and stop the threads."""
        self._pool.stop()

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot."""
        return len(self._slots.waiting)

    def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        """Run ``function(*args, **kwargs)`` on a worker; a Deferred of its result."""
        return self._slots.run(
            deferToThreadPool, self._reactor, self._pool, function, *args, **kwargs
        )
