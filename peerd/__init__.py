"""peerd: a peer-to-peer network daemon on Twisted."""

__version__ = "0.1.0"
