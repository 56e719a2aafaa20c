"""
Control API routes of the compute provider, under
``/api/v1/providers/compute/`` (see ``docs/api.rst``).

Paths in requests (module, stdin, inputs, output directory) are read and
written by the daemon, so they must be absolute.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from peerd.control.router import ApiError, ApiRequest, ApiResponse
from peerd.interfaces import IControlRouter
from peerd.peerid import InvalidPeerID, PeerID
from peerd.providers.compute.batch import Batch, JobInput
from peerd.providers.compute.landing import output_name

MAX_INPUTS = 100_000
MAX_REPLICAS = 9


def _path(value: object, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"'{what}' must be a path")
    path = Path(value)
    if not path.is_absolute():
        raise ApiError(400, f"'{what}' must be an absolute path, not {value!r}")
    return path


def _file(value: object, what: str, limit: int) -> Path:
    path = _path(value, what)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ApiError(404, f"{path}: no such file") from None
    except OSError as e:
        raise ApiError(400, f"{path}: {e.strerror}") from None
    if not path.is_file():
        raise ApiError(400, f"{path} is not a regular file")
    if size > limit:
        raise ApiError(400, f"{path} has {size} bytes, over the limit of {limit}")
    return path


def _options(body: dict) -> tuple[list[str], dict, int, list | None]:
    args = body.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ApiError(400, "'args' must be a list of strings")
    request = {}
    for name in ("fuel", "memory", "timeout"):
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int | float) or isinstance(value, bool) or value <= 0
        ):
            raise ApiError(400, f"'{name}' must be a positive number")
        request[name] = value
    replicas = body.get("replicas", 1)
    if (
        not isinstance(replicas, int)
        or isinstance(replicas, bool)
        or not 1 <= replicas <= MAX_REPLICAS
    ):
        raise ApiError(400, f"'replicas' must be a whole number from 1 to {MAX_REPLICAS}")
    peers = body.get("peers")
    if peers is not None:
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise ApiError(400, "'peers' must be a list of PeerIDs")
        try:
            peers = [str(PeerID.parse(p)) for p in peers]
        except InvalidPeerID as e:
            raise ApiError(400, str(e)) from None
    return args, request, replicas, peers


def batch_json(batch: Batch) -> dict:
    """A batch for the API; a one-job batch (``run``) also carries its result and stdout."""
    summary = batch.summary()
    if batch.keep_outputs and len(batch.jobs) == 1:
        job = batch.jobs[0]
        summary["result"] = {
            "reason": job.reason,
            "exit_code": job.result.get("exit_code"),
            "detail": job.detail,
            "cpu": job.result.get("cpu"),
            "fuel_used": job.result.get("fuel_used"),
            "peers": job.peers,
            "stdout": None if job.stdout is None else base64.b64encode(job.stdout).decode(),
        }
    return summary


def install_routes(router: IControlRouter, provider: Any) -> None:
    """Mount the compute routes."""
    limits = provider.limits

    def get_status(request: ApiRequest) -> dict:
        return provider.details()

    async def read(path: Path) -> bytes:
        return await provider.node.run_in_thread(path.read_bytes)

    async def post_run(request: ApiRequest) -> ApiResponse:
        body = request.json()
        module_path = _file(body.get("module"), "module", limits.max_module)
        args, options, replicas, peers = _options(body)
        if body.get("peer") is not None:
            _, _, _, peers = _options({"peers": [body.get("peer")]})
        stdin = b""
        if body.get("stdin") is not None:
            stdin = await read(_file(body.get("stdin"), "stdin", limits.max_input))
        module = await read(module_path)
        job = JobInput(name="stdin", data=stdin)
        batch = provider.start_batch(module, [job], args, options, replicas, peers, True)
        return ApiResponse(202, {"batch": batch_json(batch)})

    async def post_map(request: ApiRequest) -> ApiResponse:
        body = request.json()
        module_path = _file(body.get("module"), "module", limits.max_module)
        args, options, replicas, peers = _options(body)
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs or len(inputs) > MAX_INPUTS:
            raise ApiError(400, f"'inputs' must be a list of 1 to {MAX_INPUTS} paths")
        outdir = _path(body.get("outdir"), "outdir")
        paths = [_file(p, "inputs", limits.max_input) for p in inputs]
        names = [output_name(p) for p in paths]
        if len(set(names)) != len(names):
            raise ApiError(400, "two inputs have the same file name: their outputs would collide")
        try:
            os.makedirs(outdir, exist_ok=True)
        except OSError as e:
            raise ApiError(400, f"cannot create {outdir}: {e.strerror}") from None
        module = await read(module_path)
        jobs = [
            JobInput(name=str(p), path=p, output=outdir / name)
            for p, name in zip(paths, names, strict=True)
        ]
        batch = provider.start_batch(module, jobs, args, options, replicas, peers, False)
        return ApiResponse(202, {"batch": batch_json(batch)})

    def get_batches(request: ApiRequest) -> dict:
        return {"batches": [b.summary() for b in provider.batches.values()]}

    def find(batch_id: str) -> Batch:
        batch = provider.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"no batch {batch_id}")
        return batch

    def get_batch(request: ApiRequest, batch_id: str) -> dict:
        return {"batch": batch_json(find(batch_id))}

    def delete_batch(request: ApiRequest, batch_id: str) -> dict:
        batch = find(batch_id)
        batch.cancel()
        return {"cancelled": batch.id}

    def get_jobs(request: ApiRequest) -> dict:
        return {
            "jobs": provider.book.all(),
            "batches": [b.summary() for b in provider.batches.values()],
        }

    def delete_job(request: ApiRequest, job_id: str) -> dict:
        if job_id in provider.batches:
            return delete_batch(request, job_id)
        record = provider.book.running.get(job_id)
        if record is None or record.cancel is None:
            raise ApiError(404, f"no running job {job_id}")
        record.cancel()
        return {"cancelled": job_id}

    router.route("GET", "status", get_status)
    router.route("POST", "run", post_run)
    router.route("POST", "map", post_map)
    router.route("GET", "batches", get_batches)
    router.route("GET", "batches/{batch_id}", get_batch)
    router.route("DELETE", "batches/{batch_id}", delete_batch)
    router.route("GET", "jobs", get_jobs)
    router.route("DELETE", "jobs/{job_id}", delete_job)
