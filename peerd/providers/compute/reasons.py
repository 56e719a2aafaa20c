"""
The reason codes of the compute provider: how a job ended, or why it was
refused.  Stable strings, fit for the wire, the API and the logs.
"""

from __future__ import annotations

# -- how a job that ran ended ----------------------------------------------------------

OK = "ok"
"""The job returned or called ``proc_exit(0)``."""
EXIT = "exit"
"""The job called ``proc_exit`` with a non-zero status (``exit_code``)."""
FUEL = "fuel-exhausted"
"""The job used up its fuel (instructions): an endless loop, or too little ``--fuel``."""
MEMORY = "memory-limit"
"""The job ended while its linear memory was at the memory limit (a memory bomb)."""
TIMEOUT = "timeout"
"""The job ran past its wall-clock (or CPU) time and was killed."""
TRAP = "trap"
"""The job trapped: unreachable, division by zero, out-of-bounds access, ..."""
OUTPUT = "output-too-large"
"""The job wrote more than the output limit to stdout; the output was cut there."""
COMPILE = "compile-error"
"""The module is not valid WebAssembly, or imports something a job may not have."""
CRASHED = "worker-crashed"
"""The worker process died for another reason (a bug, or an OS limit)."""
CANCELLED = "cancelled"
"""Someone cancelled the job."""

RAN = frozenset({OK, EXIT, FUEL, MEMORY, TIMEOUT, TRAP, OUTPUT, COMPILE, CRASHED, CANCELLED})
"""Every code a job that was accepted can end with."""

DETERMINISTIC = frozenset({OK, EXIT, FUEL, TRAP, COMPILE})
"""Outcomes that every honest peer reaches for the same job and limits."""

# -- why a job was not run ----------------------------------------------------------------

DISABLED = "disabled"
NOT_ALLOWED = "not-allowed"
MODULE_TOO_LARGE = "module-too-large"
INPUT_TOO_LARGE = "input-too-large"
BUSY = "busy"
PEER_ALLOWANCE = "peer-allowance"
TOTAL_ALLOWANCE = "total-allowance"
UNKNOWN_MODULE = "unknown-module"
BAD_REQUEST = "bad-request"

# -- what a requester saw -------------------------------------------------------------------

DISCONNECTED = "disconnected"
"""The peer went away (or reset the stream) before it answered."""
NO_ANSWER = "no-answer"
"""The peer did not answer within the job's timeout plus a grace period."""


def exit_status(reason: str, exit_code: int | None) -> int:
    """
    The exit status ``peerctl run`` passes on: the job's own for ``ok`` and
    ``exit``; 125 for any other way a job ends (as ``timeout(1)`` and
    container runners do for "the runner, not the job, failed").
    """
    if reason in (OK, EXIT) and exit_code is not None:
        return exit_code & 0xFF
    return 125
