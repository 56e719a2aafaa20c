"""
What a worker lends, and the checks a job must pass before it runs.

:class:`ComputeLimits` holds the ``[provider:compute]`` options;
:func:`admit` decides whether a job may run, and refuses with a
:class:`Refused` whose reason names the option at fault, so one log line
tells the operator what to change.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from peerd.providers.compute import reasons
from peerd.providers.compute.allowance import DailyUsage
from peerd.ratelimit import format_utc

SECTION = "provider:compute"

MiB = 1024 * 1024


def config_key(option: str) -> str:
    """How an option is named to the operator: ``[provider:compute] OPTION``."""
    return f"[{SECTION}] {option}"


@dataclass(frozen=True)
class ComputeLimits:
    """The options of ``[provider:compute]`` that bound what other peers' jobs get here."""

    serve: bool = True
    allow: frozenset | None = None  # None: any peer
    concurrency: int = 1
    max_fuel: int = 100_000_000_000
    max_memory: int = 256 * MiB
    max_seconds: float = 60.0
    max_output: int = 16 * MiB
    max_module: int = 16 * MiB
    max_input: int = 16 * MiB
    daily_cpu_per_peer: float = 3600.0
    daily_cpu_total: float = 4 * 3600.0
    cache_size: int = 256 * MiB
    nice: int = 10

    def advertised(self) -> dict:
        """What a requester may plan with (sent in the ``offer`` record)."""
        return {
            "concurrency": self.concurrency,
            "max_fuel": self.max_fuel,
            "max_memory": self.max_memory,
            "max_seconds": self.max_seconds,
            "max_output": self.max_output,
            "max_module": self.max_module,
            "max_input": self.max_input,
            "daily_cpu_per_peer": self.daily_cpu_per_peer,
            "daily_cpu_total": self.daily_cpu_total,
        }


class Refused(Exception):
    """
    A job that will not run here: ``code`` for machines, ``reason`` (naming
    the option at fault) for people.  ``final`` says asking again soon is
    pointless (as opposed to ``busy``).
    """

    def __init__(self, code: str, reason: str, option: str | None = None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = f"{reason} ({config_key(option)})" if option else reason
        self.option = option

    @property
    def final(self) -> bool:
        """Whether this refusal holds for the rest of a batch."""
        return self.code != reasons.BUSY

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


def admit_peer(limits: ComputeLimits, peer: Hashable) -> None:
    """Whether ``peer`` may use this worker at all (``enabled``/``serve``, ``allow``)."""
    if not limits.serve:
        raise Refused(reasons.DISABLED, "this peer does not lend its CPU", "serve")
    if limits.allow is not None and peer not in limits.allow:
        raise Refused(reasons.NOT_ALLOWED, f"{peer} is not allowed to run jobs here", "allow")


def admit(
    limits: ComputeLimits,
    usage: DailyUsage,
    peer: Hashable,
    running: int,
    module_size: int,
    input_size: int,
) -> None:
    """
    Raise :class:`Refused` unless a job from ``peer`` may start now.

    Checked in order: serving, ``allow``, sizes, the daily allowances, then
    room: ``running`` counts the jobs admitted and not finished, and a worker
    takes as many waiting jobs as it runs at once, so a requester can keep
    the next job queued behind each running one (``busy`` beyond that, the
    only refusal worth retrying soon).
    """
    admit_peer(limits, peer)
    if module_size > limits.max_module:
        raise Refused(
            reasons.MODULE_TOO_LARGE,
            f"the module has {module_size} bytes, over {limits.max_module}",
            "max_module",
        )
    if input_size > limits.max_input:
        raise Refused(
            reasons.INPUT_TOO_LARGE,
            f"the input has {input_size} bytes, over {limits.max_input}",
            "max_input",
        )
    if usage.peer_exhausted(peer):
        raise Refused(
            reasons.PEER_ALLOWANCE,
            f"{peer} has used its {limits.daily_cpu_per_peer:g} CPU seconds for today; "
            f"the allowance resets at {format_utc(usage.resets_at())}",
            "daily_cpu_per_peer",
        )
    if usage.total_exhausted():
        raise Refused(
            reasons.TOTAL_ALLOWANCE,
            f"the {limits.daily_cpu_total:g} CPU seconds lent per day are used up; "
            f"the allowance resets at {format_utc(usage.resets_at())}",
            "daily_cpu_total",
        )
    if running >= 2 * limits.concurrency:
        raise Refused(
            reasons.BUSY,
            f"all {limits.concurrency} job slots and as many queue places are in use",
            "concurrency",
        )


def clamp_request(
    limits: ComputeLimits, fuel: int | None, memory: int | None, seconds: float | None
) -> tuple[int, int, float]:
    """A job's fuel, memory and seconds: what it asked for, at most this worker's caps."""
    fuel = limits.max_fuel if not fuel or fuel <= 0 else min(int(fuel), limits.max_fuel)
    memory = limits.max_memory if not memory or memory <= 0 else min(int(memory), limits.max_memory)
    if not seconds or seconds <= 0:
        seconds = limits.max_seconds
    return fuel, memory, min(float(seconds), limits.max_seconds)
