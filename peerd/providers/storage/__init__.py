"""
The storage provider: peers keep each other's data, encrypted on the client
and erasure-coded into ``n`` shares of which any ``k`` rebuild it, so the
data outlives any one peer (see ``docs/protocol.rst``, "Storage provider").

The client's verbs: :mod:`.store`, :mod:`.retrieve`, :mod:`.verify` (check),
:mod:`.maintain` (renew, repair); :mod:`.placement` chooses holders (pure);
:mod:`.jobs` and :mod:`.upload` are the plumbing the verbs share.  The
server's side: :mod:`.server` and :mod:`.share_files`.  Both ends speak
:mod:`.protocol` and use the formats of :mod:`.capability` and :mod:`.codec`.
"""
