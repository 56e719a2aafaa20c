"""
The download side of the files provider: one :mod:`.download` finds sources
(:mod:`.lookup`), asks them for blocks in parallel (:mod:`.swarm`,
:mod:`.picker`), keeps what has arrived across restarts (:mod:`.partial`)
and lands the finished files (:mod:`.landing`).
"""
