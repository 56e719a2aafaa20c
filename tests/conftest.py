"""Fixtures shared by the unit tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """
    A fresh directory under /tmp (short enough for a unix socket path),
    removed afterwards.
    """
    path = Path(tempfile.mkdtemp(prefix="peerd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
