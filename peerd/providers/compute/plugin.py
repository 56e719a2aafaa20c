"""The compute provider's plugin object: name, version, config schema."""

from __future__ import annotations

import os
from types import MappingProxyType

from twisted.plugin import IPlugin
from zope.interface import implementer

from peerd.config import (
    ConfigOption,
    duration_between,
    parse_bool,
    parse_int,
    parse_peer_id_set,
    size_between,
)
from peerd.interfaces import INode, IResourceProvider, IResourceProviderFactory

MiB = 1024 * 1024


def default_concurrency() -> int:
    """Jobs at once by default: one fewer than the CPUs, at least one."""
    return max(1, (os.cpu_count() or 2) - 1)


def _concurrency(text: str) -> int:
    if text.strip().lower() == "auto":
        return default_concurrency()
    return parse_int(min=1, max=1024)(text)


def _fuel(text: str) -> int:
    value = int(float(text.replace("_", "")))
    if not 1000 <= value <= 10**15:
        raise ValueError("must be from 1000 to 10^15")
    return value


def _seconds_or_zero(text: str) -> float:
    if text.strip() in ("0", "0s"):
        return 0.0
    return duration_between(0.001, 366 * 86400)(text)


# fmt: off
SCHEMA = MappingProxyType({
    "serve": ConfigOption(parse_bool, "yes",
        "Lend this peer's CPU: run other peers' sandboxed jobs.", "yes or no"),
    "allow": ConfigOption(parse_peer_id_set, "any",
        "Who may run jobs here: any, or PeerIDs separated by spaces.", "any, or PeerIDs"),
    "concurrency": ConfigOption(_concurrency, "auto",
        "Jobs run at once (each in its own process); auto is one fewer than the CPUs.",
        "auto or a whole number 1-1024"),
    "max_fuel": ConfigOption(_fuel, "100000000000",
        "Fuel (WebAssembly instructions, roughly) a job may use; about a minute of work.",
        "a whole number like 100000000000 or 1e11"),
    "max_memory": ConfigOption(size_between(64 * 1024, 4096 * MiB), "256MiB",
        "Linear memory a job may use.", "a size like 256MiB, up to 4GiB"),
    "max_seconds": ConfigOption(duration_between(0.1, 86400), "60s",
        "Wall-clock time after which a job is killed.", "a duration like 60s"),
    "max_output": ConfigOption(size_between(1, 64 * MiB), "16MiB",
        "Bytes a job may write to stdout; the job ends when it writes more.",
        "a size like 16MiB, up to 64MiB"),
    "max_module": ConfigOption(size_between(8, 64 * MiB), "16MiB",
        "Size of a module this peer accepts.", "a size like 16MiB, up to 64MiB"),
    "max_input": ConfigOption(size_between(0, 64 * MiB), "16MiB",
        "Size of a job's stdin this peer accepts.", "a size like 16MiB, up to 64MiB"),
    "daily_cpu_per_peer": ConfigOption(_seconds_or_zero, "1h",
        "CPU time one requesting peer may use here per UTC day (0: no cap).", "a duration like 1h"),
    "daily_cpu_total": ConfigOption(_seconds_or_zero, "4h",
        "CPU time all requesting peers together may use here per UTC day (0: no cap).",
        "a duration like 4h"),
    "nice": ConfigOption(parse_int(min=0, max=19), "10",
        "Scheduling priority of job processes (0-19, higher is gentler): the daemon and "
        "this machine's own work come first.", "a whole number 0-19"),
    "cache_size": ConfigOption(size_between(1 * MiB, 64 * 1024 * MiB), "256MiB",
        "Disk space for compiled modules in the data dir.", "a size like 256MiB"),
})
# fmt: on


@implementer(IPlugin, IResourceProviderFactory)
class ComputeFactory:
    """Peers lend processing power: sandboxed WebAssembly jobs."""

    name = "compute"
    version = "1"
    enabled_by_default = True
    config_schema = SCHEMA

    def build(self, node: INode, config: dict) -> IResourceProvider:
        """The compute provider of ``node``."""
        from peerd.providers.compute.provider import ComputeProvider

        return ComputeProvider(node, config)
