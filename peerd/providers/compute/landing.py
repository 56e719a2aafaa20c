"""
Where a batch's outputs land: ``OUTDIR/NAME.out``, written atomically
(temporary file, fsync, rename, fsync of the directory), each with a small
record ``OUTDIR/.NAME.out.job`` of the job it answers (module, input,
arguments, limits) and the output's hash.  A batch started again over the
same OUTDIR skips the jobs whose output is there and still matches its
record, so an interrupted ``map`` resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from peerd.disk import write_atomically


def output_name(input_path: Path) -> str:
    """The output file of an input: its name with ``.out`` added."""
    return input_path.name + ".out"


def record_path(output: Path) -> Path:
    """The job record kept next to ``output``."""
    return output.with_name(f".{output.name}.job")


def job_key(module: str, input_hash: str, args: list[str], request: dict) -> str:
    """What identifies a job's answer: module, input, arguments and requested limits."""
    text = json.dumps([module, input_hash, args, request], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def verified(output: Path, key: str) -> bool:
    """Whether ``output`` holds the answer to job ``key`` (record present and hash matching)."""
    try:
        record = json.loads(record_path(output).read_bytes())
        data = output.read_bytes()
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("job") == key
        and record.get("sha256") == hashlib.sha256(data).hexdigest()
    )


def is_ours(output: Path) -> bool:
    """Whether ``output`` was landed by a batch (so a new batch may replace it)."""
    return record_path(output).exists() or not output.exists()


def land(output: Path, data: bytes, key: str, peers: list[str]) -> None:
    """
    Write ``data`` to ``output`` atomically, its record first: a crash in
    between leaves a record that does not match, so the job runs again.
    """
    record = {"job": key, "sha256": hashlib.sha256(data).hexdigest(), "peers": peers}
    write_atomically(record_path(output), json.dumps(record).encode() + b"\n", replace=True)
    write_atomically(output, data, replace=True)
