"""
The relay provider between real peers: a peer with ``[peer] listen = none``
reserves a slot on a relay it is connected to, and a third peer that knows
only the relay downloads from it through a circuit.  Also: circuits refused
for lack of a reservation, a circuit cut at ``circuit_max_bytes``, the
relay's ``rate``, failover to a second relay when the first is killed, and
the same download across three network namespaces where the two ends truly
cannot reach each other.

Content is random with a distinctive ASCII marker embedded many times, so a
relay that wrote plaintext anywhere (data dir, log) would be caught.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import TWISTD, Cluster, Peer, wait_until

MiB = 1024 * 1024
FILES = "providers/files/"
RELAY = "providers/relay/status"
CONNECT_TIMEOUT = 20.0
DOWNLOAD_TIMEOUT = 40.0
FAST = "64MiB"
"""A relay ``rate`` high enough not to matter."""

MARKER = b"<<peerd-relay-plaintext-marker:0f3c9a71d2b84e65a0c7f1e2d3b4a59>>"
assert len(MARKER) == 64


# -- helpers ----------------------------------------------------------------------------


def marked_file(path: Path, size: int, every: int = 64 * 1024) -> bytes:
    """Random ``size`` bytes with :data:`MARKER` at every ``every`` bytes; written to ``path``."""
    content = bytearray(os.urandom(size))
    for offset in range(0, size - len(MARKER), every):
        content[offset : offset + len(MARKER)] = MARKER
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(content))
    return bytes(content)


def relay_section(**options: str) -> dict[str, str]:
    """``[provider:relay]`` options (``rate`` fast unless given)."""
    return {"rate": FAST, **options}


def add_relay(cluster: Cluster, name: str, **options: str) -> Peer:
    """A reachable peer that serves as a relay."""
    return cluster.add(name, sections={"provider:relay": relay_section(**options)})


def add_hidden(cluster: Cluster, name: str, relays: list[Peer], **relay_options: str) -> Peer:
    """A peer with ``listen = none`` that keeps ``relays`` connected (and reserves on them)."""
    directory = cluster.root / name
    sections: dict[str, dict[str, str]] = {
        "peer": {"data_dir": str(directory / "data"), "listen": "none"},
    }
    if relay_options:
        sections["provider:relay"] = dict(relay_options)
    return cluster.add(name, peers=[r.address for r in relays], sections=sections)


def relay_status(peer: Peer) -> dict:
    """``GET providers/relay/status``."""
    return peer.api.get(RELAY)


def reserved_on(peer: Peer, *relays: Peer) -> bool:
    """``peer`` holds a granted reservation on each of ``relays``."""
    granted = {r["relay"] for r in relay_status(peer)["relayed_via"] if r["expires_in"] is not None}
    return {r.peer_id for r in relays} <= granted


def wait_reserved(peer: Peer, *relays: Peer) -> None:
    """Wait until ``peer`` holds reservations on ``relays`` and announces them."""
    wait_until(
        lambda: reserved_on(peer, *relays),
        CONNECT_TIMEOUT,
        f"{peer.name} to reserve on {', '.join(r.name for r in relays)}",
    )


def wait_connected(peer: Peer, *others: Peer) -> None:
    """Wait until ``peer`` lists every one of ``others``."""
    wanted = {o.peer_id for o in others}
    wait_until(
        lambda: wanted <= set(peer.peers()),
        CONNECT_TIMEOUT,
        f"{peer.name} to connect to {', '.join(o.name for o in others)}",
    )


def share(peer: Peer, path: Path) -> str:
    """``peerctl share PATH``; the content ID."""
    return peer.peerctl("share", str(path))["share"]["cid"]


def download_status(peer: Peer, cid: str) -> dict:
    """``GET downloads/{cid}``."""
    return peer.api.get(f"{FILES}downloads/{cid}")["download"]


def start_download(peer: Peer, cid: str, destination: Path) -> None:
    """``POST downloads`` without waiting."""
    peer.api.post(FILES + "downloads", {"cid": cid, "destination": str(destination)})


def wait_complete(peer: Peer, cid: str, timeout: float = DOWNLOAD_TIMEOUT) -> dict:
    """Poll until the download is complete; fail at once if it failed."""

    def done() -> dict | None:
        status = download_status(peer, cid)
        if status["state"] in ("failed", "cancelled"):
            raise AssertionError(f"download on {peer.name} ended {status['state']}: {status}")
        return status if status["state"] == "complete" else None

    try:
        return wait_until(done, timeout, f"the download on {peer.name}", interval=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{peer.log_tail()}") from None


def get(peer: Peer, cid: str, destination: Path, timeout: float = 60.0) -> None:
    """``peerctl get CID -o PATH --quiet``, which must succeed."""
    result = peer.run_peerctl(
        "get", cid, "-o", str(destination), "--quiet", json_output=False, timeout=timeout
    )
    assert result.returncode == 0, f"peerctl get failed: {result.stderr}\n{peer.log_tail()}"
    assert result.stdout.strip() == str(destination)


def relay_of(peer: Peer, other: Peer) -> str | None:
    """The relay ``peer``'s session with ``other`` runs through (``None``: direct or none)."""
    return peer.peers().get(other.peer_id, {}).get("relay")


def connect_through(peer: Peer, target: Peer, relay: Peer) -> None:
    """``peerctl connect TARGET@RELAY@host:port`` on ``peer`` (no waiting for peer exchange)."""
    peer.peerctl("connect", f"{target.peer_id}@{relay.pinned_address}")
    assert relay_of(peer, target) == relay.peer_id


def files_under(root: Path) -> Iterator[Path]:
    """Every regular file under ``root``."""
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if path.is_file():
                yield path


# -- through one relay ------------------------------------------------------------------


def test_download_through_relay(cluster: Cluster) -> None:
    """
    B (``listen = none``) reserves on relay R and shares a file; C, connected
    only to R, finds B by peer exchange and downloads the file byte-exact
    with ``peerctl get``.  C's session with B runs through R (``relay`` in
    ``peers --json``), R's status lists the circuit C -> B with the bytes it
    carried, and neither R's data dir nor its log holds a byte of plaintext.
    """
    r = add_relay(cluster, "r")
    b = add_hidden(cluster, "b", [r])
    c = cluster.add("c", peers=[r.address])
    cluster.start(r, b, c)
    wait_reserved(b, r)
    content = marked_file(cluster.root / "share" / "secret.bin", 4 * MiB)
    cid = share(b, cluster.root / "share" / "secret.bin")
    wait_connected(c, r)

    destination = cluster.root / "got" / "secret.bin"
    destination.parent.mkdir()
    get(c, cid, destination)
    assert destination.read_bytes() == content

    assert relay_of(c, b) == r.peer_id
    assert relay_of(b, c) == r.peer_id
    status = relay_status(r)
    assert status["serving"] is True
    assert [x["peer"] for x in status["reservations"]] == [b.peer_id]
    circuits = [x for x in status["circuits"] if (x["src"], x["dst"]) == (c.peer_id, b.peer_id)]
    assert len(circuits) == 1, status["circuits"]
    assert circuits[0]["bytes_backward"] > len(content)
    assert status["monthly"]["bytes"] >= len(content)

    r.stop()
    leaks = [p for p in files_under(r.data_dir) if MARKER in p.read_bytes()]
    assert not leaks, f"plaintext in the relay's files: {leaks}"
    log = r.log_file.read_bytes()
    assert MARKER not in log
    assert MARKER[:24] not in log
    assert MARKER in b"".join(p.read_bytes() for p in files_under(cluster.root / "share"))


def test_circuit_without_reservation_refused(cluster: Cluster) -> None:
    """
    A circuit to a peer connected to R but holding no reservation there (X,
    reachable, ``reserve = no``) is refused: ``peerctl connect X@R@host:port``
    on C fails with ``no-reservation``, R logs the refusal, and no session
    between C and X exists.
    """
    r = add_relay(cluster, "r")
    x = cluster.add("x", peers=[r.address], sections={"provider:relay": {"reserve": "no"}})
    c = cluster.add("c", peers=[r.address])
    cluster.start(r, x, c)
    wait_connected(r, x, c)
    wait_connected(c, r)
    assert relay_status(x)["relayed_via"] == []

    result = c.run_peerctl("connect", f"{x.peer_id}@{r.pinned_address}")
    assert result.returncode != 0
    assert "no-reservation" in result.stderr, result.stderr
    assert x.peer_id not in c.peers()
    assert relay_status(r)["circuits"] == []
    assert f"refusing a circuit {c.peer_id} -> {x.peer_id}" in r.log_text()


def test_circuit_cut_at_max_bytes(cluster: Cluster) -> None:
    """
    With ``circuit_max_bytes = 2MiB`` a 6 MB download from B cuts the
    circuit: R logs the cut naming ``[provider:relay] circuit_max_bytes``, C's
    session with B through R ends, and no circuit in R's status (polled all
    along) ever reports more than 2 MiB carried.
    """
    limit = 2 * MiB
    r = add_relay(cluster, "r", circuit_max_bytes="2MiB", rate="8MiB")
    b = add_hidden(cluster, "b", [r])
    c = cluster.add("c", peers=[r.address])
    cluster.start(r, b, c)
    wait_reserved(b, r)
    marked_file(cluster.root / "share" / "big.bin", 6 * 1000 * 1000)
    cid = share(b, cluster.root / "share" / "big.bin")
    wait_connected(c, r)
    connect_through(c, b, r)
    start_download(c, cid, cluster.root / "got.bin")

    largest = 0
    deadline = time.monotonic() + DOWNLOAD_TIMEOUT
    while "circuit_max_bytes" not in r.log_text():
        for circuit in relay_status(r)["circuits"]:
            carried = circuit["bytes_forward"] + circuit["bytes_backward"]
            largest = max(largest, carried)
            assert carried <= limit, circuit
            assert circuit["limits"]["remaining_bytes"] == limit - carried
        assert time.monotonic() < deadline, f"no cut within the time:\n{r.log_tail()}"
        time.sleep(0.05)
    for _ in range(20):  # and for a while after the first cut
        for circuit in relay_status(r)["circuits"]:
            assert circuit["bytes_forward"] + circuit["bytes_backward"] <= limit, circuit
        time.sleep(0.05)

    cut = [line for line in r.log_text().splitlines() if "cutting circuit" in line]
    assert cut, r.log_tail()
    assert f"({c.peer_id} -> {b.peer_id})" in cut[0]
    assert f"the circuit carried its {limit} bytes ([provider:relay] circuit_max_bytes)" in cut[0]
    assert largest > 0
    wait_until(
        lambda: f"disconnected from {b.peer_id}" in c.log_text(),
        CONNECT_TIMEOUT,
        "C's session with B to end",
    )


def test_relay_rate_holds(cluster: Cluster) -> None:
    """
    With ``rate = 2MiB`` (and nothing else limiting) C downloads a 12 MB file
    from B at 2 MiB/s within 10%, measured from the download's ``bytes_done``
    over the transfer after its first second.
    """
    rate = 2 * MiB
    r = add_relay(cluster, "r", rate="2MiB")
    b = add_hidden(cluster, "b", [r])
    c = cluster.add("c", peers=[r.address])
    cluster.start(r, b, c)
    wait_reserved(b, r)
    content = marked_file(cluster.root / "share" / "rated.bin", 12 * 1000 * 1000)
    cid = share(b, cluster.root / "share" / "rated.bin")
    wait_connected(c, r)
    connect_through(c, b, r)
    destination = cluster.root / "got.bin"
    start_download(c, cid, destination)

    samples: list[tuple[float, int]] = []
    first: float | None = None
    while True:
        status = download_status(c, cid)
        now = time.monotonic()
        if status["state"] == "complete":
            break
        assert status["state"] not in ("failed", "cancelled"), status
        if status["bytes_done"] > 0:
            first = first if first is not None else now
            if now - first >= 1.0:
                samples.append((now, status["bytes_done"]))
        assert not first or now - first < DOWNLOAD_TIMEOUT, status
        time.sleep(0.1)
    assert destination.read_bytes() == content
    (t0, b0), (t1, b1) = samples[0], samples[-1]
    assert t1 - t0 >= 3.0, samples
    measured = (b1 - b0) / (t1 - t0)
    assert abs(measured - rate) <= 0.1 * rate, f"{measured / MiB:.2f} MiB/s"


# -- failover ---------------------------------------------------------------------------


def test_failover_to_second_relay(cluster: Cluster) -> None:
    """
    B reserves on two relays (``max_relays = 2``); C, connected to both,
    downloads from B.  The relay carrying the circuit (C's ``relay`` field
    for B) is killed with SIGKILL mid-transfer, and the download completes
    byte-exact through the other relay.
    """
    r1 = add_relay(cluster, "r1", rate="4MiB")
    r2 = add_relay(cluster, "r2", rate="4MiB")
    b = add_hidden(cluster, "b", [r1, r2], max_relays="2")
    c = cluster.add("c", peers=[r1.address, r2.address])
    cluster.start(r1, r2, b, c)
    wait_reserved(b, r1, r2)
    content = marked_file(cluster.root / "share" / "payload.bin", 16 * MiB)
    cid = share(b, cluster.root / "share" / "payload.bin")
    wait_connected(c, r1, r2)
    destination = cluster.root / "got.bin"
    start_download(c, cid, destination)

    wait_until(
        lambda: download_status(c, cid)["bytes_done"] >= 3 * MiB,
        DOWNLOAD_TIMEOUT,
        "3 MiB downloaded",
    )
    via = relay_of(c, b)
    relays = {r1.peer_id: r1, r2.peer_id: r2}
    assert via in relays, c.peers()
    carrying = relays.pop(via)
    (other,) = relays.values()
    carrying.kill()
    status = download_status(c, cid)
    assert status["bytes_done"] < len(content), status

    wait_complete(c, cid)
    assert destination.read_bytes() == content
    assert relay_of(c, b) == other.peer_id


# -- network namespaces -----------------------------------------------------------------

NAMESPACES = ("pd-b", "pd-r", "pd-c")
B_SIDE = ("10.201.1.2", "10.201.1.1")  # B's and R's address on the b<->r link
C_SIDE = ("10.201.2.2", "10.201.2.1")  # C's and R's address on the r<->c link


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


def _delete_namespaces() -> None:
    for ns in NAMESPACES:
        _ip("netns", "delete", ns)


@pytest.fixture
def namespaces() -> Iterator[None]:
    """``pd-b`` -- ``pd-r`` -- ``pd-c`` joined by two veth pairs on separate subnets."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    _delete_namespaces()
    try:
        added = _ip("netns", "add", NAMESPACES[0])
        if added.returncode != 0:
            pytest.skip(f"ip netns add failed: {added.stderr.strip()}")
        steps = [
            ("netns", "add", "pd-r"),
            ("netns", "add", "pd-c"),
            (
                "link",
                "add",
                "pdv-b",
                "netns",
                "pd-b",
                "type",
                "veth",
                "peer",
                "pdv-rb",
                "netns",
                "pd-r",
            ),
            (
                "link",
                "add",
                "pdv-c",
                "netns",
                "pd-c",
                "type",
                "veth",
                "peer",
                "pdv-rc",
                "netns",
                "pd-r",
            ),
            ("-n", "pd-b", "addr", "add", f"{B_SIDE[0]}/24", "dev", "pdv-b"),
            ("-n", "pd-r", "addr", "add", f"{B_SIDE[1]}/24", "dev", "pdv-rb"),
            ("-n", "pd-r", "addr", "add", f"{C_SIDE[1]}/24", "dev", "pdv-rc"),
            ("-n", "pd-c", "addr", "add", f"{C_SIDE[0]}/24", "dev", "pdv-c"),
        ]
        steps += [("-n", ns, "link", "set", "lo", "up") for ns in NAMESPACES]
        steps += [
            ("-n", ns, "link", "set", dev, "up")
            for ns, dev in (
                ("pd-b", "pdv-b"),
                ("pd-r", "pdv-rb"),
                ("pd-r", "pdv-rc"),
                ("pd-c", "pdv-c"),
            )
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"ip {' '.join(step)} failed: {done.stderr.strip()}")
        subprocess.run(
            ["ip", "netns", "exec", "pd-r", "sysctl", "-qw", "net.ipv4.ip_forward=0"],
            capture_output=True,
            timeout=10,
        )
        yield
    finally:
        _delete_namespaces()


UNREACHABLE_PROBE = """
import errno, socket, sys
s = socket.socket()
s.settimeout(3)
try:
    s.connect((sys.argv[1], 9))
except OSError as e:
    print("unreachable" if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH) else repr(e))
else:
    print("connected")
"""
"""Run in ``pd-c``: whether B's subnet is unroutable from there (not merely closed)."""


def in_namespace(ns: str) -> list[str]:
    """The launcher of a peer inside network namespace ``ns``."""
    return ["ip", "netns", "exec", ns, str(TWISTD), "-n", "--pidfile=", "peerd"]


def test_relay_across_namespaces(cluster: Cluster, namespaces: None) -> None:
    """
    Three namespaces, B -- R -- C, on two subnets with no forwarding: C
    cannot reach B at all (``ping`` fails), yet downloads B's file
    byte-exact through R, which listens on all of its addresses and hands B
    relayed addresses C can dial.
    """
    port = 7845
    r = cluster.add("r", launcher=in_namespace("pd-r"), port=port)
    r.write_config(
        sections={
            "peer": {"data_dir": str(r.data_dir), "listen": f"tcp:{port}"},
            "provider:relay": relay_section(),
        }
    )
    b = cluster.add("b", launcher=in_namespace("pd-b"))
    b.write_config(
        peers=[f"{B_SIDE[1]}:{port}"],
        sections={"peer": {"data_dir": str(b.data_dir), "listen": "none"}},
    )
    c = cluster.add("c", launcher=in_namespace("pd-c"))
    c.write_config(
        peers=[f"{C_SIDE[1]}:{port}"],
        sections={"peer": {"data_dir": str(c.data_dir), "listen": f"tcp:{c.port}"}},
    )
    cluster.start(r, b, c)
    wait_reserved(b, r)
    wait_connected(c, r)
    ping = subprocess.run(
        ["ip", "netns", "exec", "pd-c", "ping", "-c1", "-W1", B_SIDE[0]],
        capture_output=True,
        timeout=10,
    )
    assert ping.returncode != 0, "C can reach B directly: the namespaces leak"
    probe = subprocess.run(
        ["ip", "netns", "exec", "pd-c", sys.executable, "-c", UNREACHABLE_PROBE, B_SIDE[0]],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert probe.stdout.strip() == "unreachable", probe.stdout + probe.stderr

    content = marked_file(cluster.root / "share" / "far.bin", 4 * MiB)
    cid = share(b, cluster.root / "share" / "far.bin")
    destination = cluster.root / "got.bin"
    get(c, cid, destination)
    assert destination.read_bytes() == content
    assert relay_of(c, b) == r.peer_id
