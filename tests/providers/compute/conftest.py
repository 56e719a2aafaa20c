"""Fixtures of the compute provider's tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner_helpers import RunnerClient  # noqa: E402


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerClient]:
    """One job runner (a fork server) for a test module."""
    client = RunnerClient(tmp_path_factory.mktemp("runner"))
    try:
        yield client
    finally:
        client.close()
