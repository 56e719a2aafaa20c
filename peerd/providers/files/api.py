"""
Control API routes of the files provider, under ``/api/v1/providers/files/``
(documented in ``docs/api.rst``).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from peerd.control.router import ApiError, ApiRequest, ApiResponse
from peerd.interfaces import IControlRouter
from peerd.providers.files.content import ContentID, InvalidContentID
from peerd.providers.files.download.partial import DestinationExists, DiskFull
from peerd.providers.files.piece_map import piece_map
from peerd.providers.files.shapes import share_dict


def _content_id(text: Any) -> ContentID:
    if not isinstance(text, str):
        raise ApiError(400, 'field "cid" (a content ID string) is required')
    try:
        return ContentID.parse(text)
    except InvalidContentID as e:
        raise ApiError(400, str(e)) from None


def _absolute(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not os.path.isabs(value):
        raise ApiError(400, f'field "{field}" must be an absolute path')
    return value


def install_routes(router: IControlRouter, provider: Any) -> None:
    """Mount the files routes."""

    async def post_share(request: ApiRequest) -> dict:
        path = request.json().get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ApiError(400, 'field "path" must be an absolute path')
        if not os.path.exists(path):
            raise ApiError(404, f"{path}: no such file or directory")
        if not (os.path.isfile(path) or os.path.isdir(path)):
            raise ApiError(400, f"{path}: not a regular file or directory")
        try:
            return {"share": await provider.share(path)}
        except OSError as e:
            raise ApiError(500, f"{path}: {e.strerror or e}") from None

    def get_shares(request: ApiRequest) -> dict:
        return {"shares": [share_dict(r) for r in provider.shares.all()]}

    def delete_share(request: ApiRequest, cid: str) -> dict:
        parsed = _content_id(cid)
        if not provider.shares.remove(parsed):
            raise ApiError(404, f"{parsed} is not shared here")
        provider.node.emit("share.removed", cid=str(parsed))
        return {"removed": str(parsed)}

    def post_download(request: ApiRequest) -> ApiResponse:
        body = request.json()
        cid = _content_id(body.get("cid"))
        destination = _absolute(body.get("destination"), "destination")
        directory = _absolute(body.get("directory"), "directory")
        force = bool(body.get("force", False))
        if destination is None and directory is None:
            raise ApiError(400, 'one of "destination" or "directory" is required')
        if destination is not None:
            if os.path.lexists(destination) and not force:
                raise ApiError(409, f"{destination} exists (use --force to replace it)")
            parent = os.path.dirname(destination) or "/"
            if not os.path.isdir(parent):
                raise ApiError(400, f"{parent}: no such directory")
        elif not os.path.isdir(directory):  # type: ignore[arg-type]
            raise ApiError(400, f"{directory}: no such directory")
        try:
            download = provider.get(cid, destination, directory, force)
        except DestinationExists as e:
            raise ApiError(409, str(e)) from None
        except DiskFull as e:
            raise ApiError(507, str(e)) from None
        return ApiResponse(202, {"download": download.status()})

    def get_downloads(request: ApiRequest) -> dict:
        return {"downloads": [d.status() for d in provider.downloads.values()]}

    def get_download(request: ApiRequest, cid: str) -> dict:
        parsed = _content_id(cid)
        download = provider.downloads.get(str(parsed))
        if download is None:
            raise ApiError(404, f"no download of {parsed}")
        return {"download": download.status()}

    def get_pieces(request: ApiRequest, cid: str) -> dict:
        parsed = _content_id(cid)
        download = provider.downloads.get(str(parsed))
        if download is None:
            raise ApiError(404, f"no download of {parsed}")
        return piece_map(download)

    def delete_download(request: ApiRequest, cid: str) -> dict:
        parsed = _content_id(cid)
        if not provider.cancel(str(parsed)):
            raise ApiError(404, f"no download of {parsed} in progress")
        return {"cancelled": str(parsed)}

    def get_status(request: ApiRequest) -> dict:
        status = provider.status()
        status["bans"] = provider.bans
        status["disk_free"] = shutil.disk_usage(provider.node.data_dir).free
        return status

    router.route("POST", "shares", post_share)
    router.route("GET", "shares", get_shares)
    router.route("DELETE", "shares/{cid}", delete_share)
    router.route("POST", "downloads", post_download)
    router.route("GET", "downloads", get_downloads)
    router.route("GET", "downloads/{cid}", get_download)
    router.route("GET", "downloads/{cid}/pieces", get_pieces)
    router.route("DELETE", "downloads/{cid}", delete_download)
    router.route("GET", "status", get_status)
