"""WorkerPool: blocking work runs off the reactor thread, with bounded queueing."""

from __future__ import annotations

import queue
import threading

import pytest

from peerd.workers import WorkerPool

WAIT = 5.0  # seconds; only reached if something is broken


class ThreadSafeReactor:
    """
    Just enough reactor for ``deferToThreadPool``: ``callFromThread`` queues
    the call, and the test runs queued calls on its own thread with
    :meth:`run_one`, deterministically.
    """

    def __init__(self) -> None:
        self.calls: queue.Queue = queue.Queue()

    def callFromThread(self, function, *args, **kwargs) -> None:
        self.calls.put((function, args, kwargs))

    def run_one(self) -> None:
        """Run the next call a worker handed back (waiting for it)."""
        function, args, kwargs = self.calls.get(timeout=WAIT)
        function(*args, **kwargs)


@pytest.fixture
def reactor():
    return ThreadSafeReactor()


@pytest.fixture
def pool(reactor):
    pool = WorkerPool(reactor, size=2, queue_factor=2)
    pool.start()
    yield pool
    pool.stop()


def _results(d):
    out: list = []
    d.addBoth(out.append)
    return out


def test_run_calls_the_function_on_another_thread(pool, reactor):
    """The function runs on a worker thread; its result comes back through the reactor."""
    outcome = _results(pool.run(lambda x: (threading.get_ident(), x * 2), 21))
    assert outcome == []  # nothing fires until the reactor runs the hand-back
    reactor.run_one()
    worker_thread, value = outcome[0]
    assert value == 42
    assert worker_thread != threading.get_ident()


def test_run_reports_exceptions_through_the_deferred(pool, reactor):
    """An exception in the function fails the Deferred."""

    def broken():
        raise ValueError("bad input")

    outcome = _results(pool.run(broken))
    reactor.run_one()
    assert outcome[0].check(ValueError)


def test_at_most_size_times_queue_factor_calls_are_handed_to_the_pool(pool, reactor):
    """With every worker blocked, calls beyond size * queue_factor wait in the reactor."""
    started = threading.Semaphore(0)
    releases = [threading.Event() for _ in range(6)]

    def blocked(i: int) -> int:
        started.release()
        assert releases[i].wait(WAIT)
        return i

    outcomes = [_results(pool.run(blocked, i)) for i in range(6)]
    assert started.acquire(timeout=WAIT) and started.acquire(timeout=WAIT)
    assert not started.acquire(timeout=0.05)  # only `size` run at once
    assert pool.waiting == 2  # 4 handed to the pool (2 running, 2 queued), 2 waiting

    releases[0].set()
    reactor.run_one()  # call 0 done: its slot goes to call 4
    assert outcomes[0] == [0]
    assert pool.waiting == 1

    for event in releases[1:]:
        event.set()
    for _ in range(5):
        reactor.run_one()
    assert [o for (o,) in outcomes] == [0, 1, 2, 3, 4, 5]
    assert pool.waiting == 0
