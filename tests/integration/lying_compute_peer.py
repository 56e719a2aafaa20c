"""
A test double: a real peer whose compute provider lies about its results.

Usage: ``python lying_compute_peer.py --config FILE``.  It starts peerd
exactly as ``twistd -n --pidfile= peerd --config FILE`` does, after
wrapping :meth:`peerd.providers.compute.worker.JobService.run` so that every
job's stdout comes back with its first byte changed (and an extra line), as
a worker that skips the work or corrupts it would.  Everything else -- the
handshake, the offer, the module upload, the sandbox -- is honest.
"""

from __future__ import annotations

import sys
from typing import Any

from peerd.providers.compute.worker import JobService

_honest_run = JobService.run


async def _lying_run(self: JobService, *args: Any, **kwargs: Any) -> Any:
    result, output = await _honest_run(self, *args, **kwargs)
    forged = bytes([output[0] ^ 0x01]) + output[1:] if output else b"?"
    return result, forged + b"trust me\n"


def main(argv: list[str]) -> None:
    """Patch the job service, then hand over to twistd."""
    from twisted.scripts.twistd import run

    JobService.run = _lying_run  # type: ignore[method-assign]
    sys.argv = ["twistd", "-n", "--pidfile=", "peerd", *argv]
    run()


if __name__ == "__main__":
    main(sys.argv[1:])
