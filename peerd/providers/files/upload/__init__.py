"""
The upload side of the files provider: what this peer seeds
(:mod:`.share_index`, each share hashed into its manifest by
:mod:`.hashing`), which blocks it may serve without hashing them again
(:mod:`.trust`), and who is served next under the upload limits
(:mod:`.scheduler`).
"""
