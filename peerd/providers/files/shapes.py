"""
The JSON shapes the files provider shows: a share (API and events) and a
download's status in events.
"""

from __future__ import annotations

from typing import Any

from peerd.providers.files.download.download import Download


def event_status(download: Download) -> dict:
    """A download's status for events: without the per-source details (bounded size)."""
    status = download.status()
    status.pop("sources", None)
    status["banned"] = len(status.get("banned") or {})
    return status


def share_dict(record: Any) -> dict:
    """The API shape of a share."""
    manifest = record.manifest
    return {
        "cid": str(record.cid),
        "name": manifest.name,
        "kind": manifest.kind,
        "path": str(record.path),
        "size": manifest.total_size,
        "files": len(manifest.files),
        "blocks": manifest.block_count,
        "blocks_held": manifest.block_count - _changed_blocks(record),
        "status": record.status,
    }


def _changed_blocks(record: Any) -> int:
    return sum(record.manifest.files[i].block_count for i in record.changed)
