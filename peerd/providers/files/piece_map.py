"""
A download's piece map: which blocks are held and which peer each came
from, for the dashboard (``GET .../downloads/{cid}/pieces``).
"""

from __future__ import annotations

import base64
from typing import Any

from peerd.providers.files import bitfield
from peerd.providers.files.download.download import DownloadState

MISSING = 0
HELD_BEFORE = 1  # held when this run started (resumed, or found on disk)
FIRST_SOURCE = 2
MAX_SOURCES = 254


def piece_map(download: Any) -> dict:
    """
    ``{"blocks": N, "sources": [PEERID, ...], "map": BASE64}``: ``map`` has
    one byte per block: 0 missing, 1 held before this run, ``k + 2`` received
    from ``sources[k]`` (at most 254 sources are told apart; the rest share
    the last value).
    """
    count = download.picker_count
    cells = bytearray(count)
    partial = download.partial
    if download.state is DownloadState.COMPLETE:
        cells = bytearray([HELD_BEFORE]) * count
    elif partial is not None:
        for index in bitfield.indices(partial.bitfield, count):
            cells[index] = HELD_BEFORE
    sources: list[str] = []
    numbers: dict[str, int] = {}
    for index, peer in sorted(download.origins.items()):
        if index >= count:
            continue
        name = str(peer)
        if name not in numbers:
            numbers[name] = min(len(sources), MAX_SOURCES - 1)
            if len(sources) < MAX_SOURCES:
                sources.append(name)
        cells[index] = FIRST_SOURCE + numbers[name]
    return {
        "cid": download.cid_text,
        "blocks": count,
        "sources": sources,
        "map": base64.b64encode(bytes(cells)).decode("ascii"),
    }
