"""The storage provider's plugin object: name, version, config schema."""

from __future__ import annotations

from types import MappingProxyType

from twisted.plugin import IPlugin
from zope.interface import implementer

from peerd.config import ConfigOption, duration_between, size_between
from peerd.interfaces import INode, IResourceProvider, IResourceProviderFactory

_TIB = 1 << 40


@implementer(IPlugin, IResourceProviderFactory)
class StorageFactory:
    """Keep other peers' encrypted, erasure-coded shares; store yours on theirs."""

    name = "storage"
    version = "1"
    enabled_by_default = True
    config_schema = MappingProxyType(
        {
            "quota": ConfigOption(
                size_between(0, 1 << 60),
                "1GiB",
                "The most bytes of other peers' shares this peer keeps (0: serve none).",
                "a size like 10GiB",
            ),
            "max_share_size": ConfigOption(
                size_between(1024, _TIB * 64),
                "1GiB",
                "The largest single share accepted.",
                "a size like 1GiB, from 1KiB to 64TiB",
            ),
            "min_free_disk": ConfigOption(
                size_between(0, 1 << 60),
                "1GiB",
                "Refuse shares that would leave less than this free on the disk.",
                "a size like 1GiB",
            ),
            "max_lease": ConfigOption(
                duration_between(60, 10 * 365 * 86400),
                "365d",
                "The longest lease granted; longer requests are shortened to it.",
                "a duration like 365d, from 1m to 3650d",
            ),
            "lease_gc_interval": ConfigOption(
                duration_between(1, 7 * 86400),
                "1h",
                "How often shares whose leases all expired are deleted.",
                "a duration like 1h, from 1s to 7d",
            ),
            "segment_size": ConfigOption(
                size_between(4096, 8 << 20),
                "1MiB",
                "Client side: plaintext bytes per segment (memory use grows with it).",
                "a size like 1MiB, from 4KiB to 8MiB",
            ),
            "request_timeout": ConfigOption(
                duration_between(0.1, 3600),
                "60s",
                "Client side: how long to wait for a storage peer's answer.",
                "a duration like 60s",
            ),
        }
    )

    def build(self, node: INode, config: dict) -> IResourceProvider:
        """The storage provider of ``node``."""
        from peerd.providers.storage.provider import StorageProvider

        return StorageProvider(node, config)
