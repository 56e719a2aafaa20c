"""The relay provider's plugin object: name, version, config schema."""

from __future__ import annotations

from types import MappingProxyType

from twisted.plugin import IPlugin
from zope.interface import implementer

from peerd.config import ConfigOption, parse_duration, parse_int, parse_rate, parse_size
from peerd.interfaces import INode, IResourceProvider, IResourceProviderFactory


def _choice(*allowed: str):
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"not one of {', '.join(allowed)}")
        return value

    return parse


_auto_yes_no = _choice("auto", "yes", "no")

# fmt: off
SCHEMA = MappingProxyType({
    "serve": ConfigOption(_auto_yes_no, "auto",
        "Lend bandwidth: accept reservations and relay circuits for others. auto: only when "
        "this peer accepts inbound connections.", "auto, yes or no"),
    "reserve": ConfigOption(_auto_yes_no, "auto",
        "Reserve a slot on connected relays so others can reach this peer through them. "
        "auto: only when this peer accepts no inbound connections ([peer] listen = none).",
        "auto, yes or no"),
    "max_relays": ConfigOption(parse_int(min=1, max=8), "2",
        "Relays to hold reservations on at once (more give failover).", "a whole number 1-8"),
    "max_reservations": ConfigOption(parse_int(min=0), "16",
        "Reservations this relay grants at once.", "a whole number >= 0"),
    "reservation_seconds": ConfigOption(parse_duration, "1h",
        "How long a reservation lasts; renewed while the peer stays connected.", "a duration like 1h"),
    "max_circuits": ConfigOption(parse_int(min=0), "16",
        "Circuits this relay carries at once.", "a whole number >= 0"),
    "max_circuits_per_peer": ConfigOption(parse_int(min=0), "4",
        "Circuits one peer may have through this relay at once.", "a whole number >= 0"),
    "circuit_max_seconds": ConfigOption(parse_duration, "10m",
        "A circuit is cut after this long.", "a duration like 10m"),
    "circuit_max_bytes": ConfigOption(parse_size, "256MiB",
        "A circuit is cut after carrying this many bytes (both ways).", "a size like 256MiB"),
    "rate": ConfigOption(parse_rate, "1MiB",
        "Bytes per second across all circuits (0: unlimited).", "a rate like 1MiB"),
    "monthly_bytes": ConfigOption(parse_size, "0",
        "Bytes this relay carries per calendar month before it refuses new circuits "
        "(0: no allowance).", "a size like 50GiB"),
})
# fmt: on


@implementer(IPlugin, IResourceProviderFactory)
class RelayFactory:
    """Peers lend bandwidth so that unreachable peers can still take part."""

    name = "relay"
    version = "1"
    enabled_by_default = True
    config_schema = SCHEMA

    def build(self, node: INode, config: dict) -> IResourceProvider:
        """The relay provider of ``node``."""
        from peerd.providers.relay.provider import RelayProvider

        return RelayProvider(node, config)
