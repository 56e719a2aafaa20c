"""
The peer protocol on Twisted: one mutual-TLS connection per peer
(:mod:`.connection`) carrying multiplexed streams (:mod:`.streams`,
:mod:`.recordstream`), the peer manager that dials, accepts and keeps peers
(:mod:`.manager`), what we know of other peers' addresses
(:mod:`.addressbook`) and the addresses we announce as our own
(:mod:`.own_addresses`).

Everything here is I/O glue around the sans-IO :mod:`peerd.wire` package.
"""
