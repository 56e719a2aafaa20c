"""
Control API routes of the storage provider, under
``/api/v1/providers/storage/`` (documented in ``docs/api.rst``).
"""

from __future__ import annotations

import os
from typing import Any

from peerd.control.router import ApiError, ApiRequest, ApiResponse
from peerd.interfaces import IControlRouter
from peerd.providers.storage.capability import Capability, InvalidCapability, check_encoding
from peerd.providers.storage.jobs import StorageFailed
from peerd.providers.storage.maintain import renew, repair
from peerd.providers.storage.retrieve import retrieve
from peerd.providers.storage.store import store
from peerd.providers.storage.verify import check

DAY = 86400.0
DEFAULT_LEASE_DAYS = 31
DEFAULT_NEEDED = 3
DEFAULT_TOTAL = 10


def _capability(body: dict) -> Capability:
    text = body.get("capability")
    if not isinstance(text, str):
        raise ApiError(400, 'field "capability" (a pdcap1-... string) is required')
    try:
        return Capability.parse(text)
    except InvalidCapability as e:
        raise ApiError(400, str(e)) from None


def _int(body: dict, name: str, default: int) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, f'field "{name}" must be a whole number')
    return value


def _lease(body: dict) -> float:
    days = body.get("lease_days", DEFAULT_LEASE_DAYS)
    if not isinstance(days, (int, float)) or isinstance(days, bool) or not 0 < days <= 36500:
        raise ApiError(400, 'field "lease_days" must be a number of days from 0 to 36500')
    return float(days) * DAY


def _absolute(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not os.path.isabs(value):
        raise ApiError(400, f'field "{name}" must be an absolute path')
    return value


def install_routes(router: IControlRouter, provider: Any) -> None:
    """Mount the storage routes."""

    def client() -> Any:
        if provider.client is None:
            raise ApiError(503, "the storage provider is starting")
        return provider.client

    def post_store(request: ApiRequest) -> ApiResponse:
        body = request.json()
        path = _absolute(body, "path")
        k = _int(body, "needed", DEFAULT_NEEDED)
        n = _int(body, "total", DEFAULT_TOTAL)
        try:
            check_encoding(k, n)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        if not os.path.isfile(path):
            raise ApiError(404 if not os.path.exists(path) else 400, f"{path}: not a regular file")
        job = store(client(), path, k, n, _lease(body), bool(body.get("allow_doubling", False)))
        return ApiResponse(202, {"job": provider.add_job(job).status()})

    def post_retrieve(request: ApiRequest) -> ApiResponse:
        body = request.json()
        cap = _capability(body)
        destination = _absolute(body, "destination")
        force = bool(body.get("force", False))
        if os.path.lexists(destination) and not force:
            raise ApiError(409, f"{destination} exists (use --force to replace it)")
        parent = os.path.dirname(destination) or "/"
        if not os.path.isdir(parent):
            raise ApiError(400, f"{parent}: no such directory")
        job = retrieve(client(), cap, destination, force)
        return ApiResponse(202, {"job": provider.add_job(job).status()})

    def post_repair(request: ApiRequest) -> ApiResponse:
        body = request.json()
        cap = _capability(body)
        job = repair(client(), cap, _lease(body), bool(body.get("allow_doubling", False)))
        return ApiResponse(202, {"job": provider.add_job(job).status()})

    async def post_check(request: ApiRequest) -> dict:
        body = request.json()
        cap = _capability(body)
        return {"check": await check(client(), cap, bool(body.get("verify", False)))}

    async def post_renew(request: ApiRequest) -> dict:
        body = request.json()
        cap = _capability(body)
        try:
            return {"renew": await renew(client(), cap, _lease(body))}
        except StorageFailed as e:
            raise ApiError(404, str(e)) from None

    def get_jobs(request: ApiRequest) -> dict:
        return {"jobs": [j.status() for j in provider.jobs.values()]}

    def get_job(request: ApiRequest, job_id: str) -> dict:
        job = provider.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no storage job {job_id}")
        return {"job": job.status()}

    def get_status(request: ApiRequest) -> dict:
        status = provider.server.status()
        status["jobs_running"] = sum(1 for j in provider.jobs.values() if not j.finished)
        status["storage_peers"] = len(provider.client.storage_peers()) if provider.client else 0
        return status

    router.route("POST", "store", post_store)
    router.route("POST", "retrieve", post_retrieve)
    router.route("POST", "repair", post_repair)
    router.route("POST", "check", post_check)
    router.route("POST", "renew", post_renew)
    router.route("GET", "jobs", get_jobs)
    router.route("GET", "jobs/{job_id}", get_job)
    router.route("GET", "status", get_status)
