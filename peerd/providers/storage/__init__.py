"""
The storage provider: peers keep each other's data, encrypted on the client
and erasure-coded into ``n`` shares of which any ``k`` rebuild it, so the
data outlives any one peer (see ``docs/protocol.rst``, "Storage provider").
"""
