"""
Integration tests: real ``twistd -n peerd`` processes on 127.0.0.1, driven
with ``peerctl --json``.  Every test here is marked ``integration``; skip
them with ``pytest -m "not integration"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import PEERCTL, TWISTD, Cluster

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: starts real twistd peerd processes (deselect with -m 'not integration')",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _executables() -> None:
    """The daemon and peerctl must sit next to the running interpreter."""
    for tool in (TWISTD, PEERCTL):
        if not tool.exists():
            pytest.fail(f"{tool} not found: install peerd into the virtualenv running pytest")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Peers for one test; all of them are stopped afterwards, pass or fail."""
    peers = Cluster(tmp_path)
    try:
        yield peers
    finally:
        peers.cleanup()
