"""
The download side of the files provider: find sources (:mod:`.lookup`), ask
them for blocks in parallel (:mod:`.swarm`, :mod:`.picker`), keep what has
arrived across restarts (:mod:`.partial`) and land the finished files
(:mod:`.landing`).
"""
