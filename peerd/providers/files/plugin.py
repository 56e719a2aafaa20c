"""The files provider's plugin object: name, version, config schema."""

from __future__ import annotations

from types import MappingProxyType

from twisted.plugin import IPlugin
from zope.interface import implementer

from peerd.config import ConfigOption, parse_bool, parse_int, parse_rate
from peerd.interfaces import INode, IResourceProvider, IResourceProviderFactory


@implementer(IPlugin, IResourceProviderFactory)
class FilesFactory:
    """Share files and swarm-download them from many peers at once."""

    name = "files"
    version = "1"
    enabled_by_default = True
    config_schema = MappingProxyType(
        {
            "upload_rate": ConfigOption(
                parse_rate, "0", "Total upload limit in bytes/s (0: unlimited).", "a rate like 20MB"
            ),
            "download_rate": ConfigOption(
                parse_rate,
                "0",
                "Total download limit in bytes/s (0: unlimited).",
                "a rate like 20MB",
            ),
            "peer_upload_rate": ConfigOption(
                parse_rate,
                "0",
                "Upload limit to each peer in bytes/s (0: unlimited).",
                "a rate like 5MB",
            ),
            "peer_download_rate": ConfigOption(
                parse_rate,
                "0",
                "Download limit from each peer in bytes/s (0: unlimited).",
                "a rate like 5MB",
            ),
            "upload_slots": ConfigOption(
                parse_int(min=1, max=256),
                "8",
                "Peers served at once; when more wait, slots rotate every 10 s.",
                "a whole number from 1 to 256",
            ),
            "verify_every_upload": ConfigOption(
                parse_bool,
                "no",
                "Hash every block again before each upload, not only after its file's "
                "stat (size, mtime, inode, ctime) changed; for disks that may rot.",
                "yes or no",
            ),
        }
    )

    def build(self, node: INode, config: dict) -> IResourceProvider:
        """The files provider of ``node``."""
        from peerd.providers.files.provider import FilesProvider

        return FilesProvider(node, config)
