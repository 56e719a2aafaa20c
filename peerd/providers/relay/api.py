"""Control API routes of the relay provider, under ``/api/v1/providers/relay/``."""

from __future__ import annotations

from typing import Any

from peerd.control.router import ApiRequest
from peerd.interfaces import IControlRouter


def install_routes(router: IControlRouter, provider: Any) -> None:
    """Mount ``GET status``: reservations, circuits, limits, usage, our own reservations."""

    def get_status(request: ApiRequest) -> dict:
        return provider.details()

    router.route("GET", "status", get_status)
