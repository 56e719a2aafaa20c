"""A third-party provider, installed with pip, is found and used by real peers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from harness import REPO_ROOT, Cluster, wait_until

from peerd.peerctl.client import ControlClient

ECHO_PACKAGE = REPO_ROOT / "examples" / "peerd-echo"


def pip(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout}{result.stderr}"


@pytest.fixture
def echo_installed() -> Iterator[None]:
    """peerd-echo installed into this virtualenv for one test, then removed."""
    if not (ECHO_PACKAGE / "setup.cfg").exists():
        pytest.fail(f"{ECHO_PACKAGE} is missing")
    pip("install", "--no-deps", "--no-build-isolation", str(ECHO_PACKAGE))
    try:
        yield
    finally:
        pip("uninstall", "-y", "peerd-echo")


def test_echo_provider(echo_installed: None, cluster: Cluster) -> None:
    """
    With peerd-echo installed, two peers both run the ``echo`` provider, see
    it offered by each other, and ``POST /api/v1/providers/echo/ping`` through
    the control socket gets the message echoed back by the other peer.
    """
    a = cluster.add("a")
    b = cluster.add("b", peers=[a.address])
    cluster.start(a, b)
    wait_until(lambda: a.peer_id in b.peers() and b.peer_id in a.peers(), 10, "A and B to connect")

    for peer, other in ((a, b), (b, a)):
        providers = peer.peerctl("providers")
        assert "echo" in providers["local"]
        assert "echo" in providers["peers"][other.peer_id]
        assert "echo" in peer.peers()[other.peer_id]["providers"]
        assert "echo" in peer.status()["providers"]

    for peer, other, message in ((a, b, "hello from A"), (b, a, "héllo ✓ from B")):
        client = ControlClient(peer.data_dir / "control.sock", timeout=30)
        answer = client.post("providers/echo/ping", {"peer": other.peer_id, "message": message})
        assert answer["peer"] == other.peer_id
        assert answer["echo"] == message
        assert isinstance(answer["rtt_ms"], (int, float)) and answer["rtt_ms"] >= 0
