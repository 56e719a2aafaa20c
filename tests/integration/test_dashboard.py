"""
The web dashboard in a real browser (headless Debian Chromium), against a
network of three real peers on 127.0.0.1:

* ``a`` is the peer whose dashboard is open; it keeps ``b`` and ``h``
  connected (so they come back after a restart);
* ``b`` seeds a file, slowly (an upload limit), so progress can be watched;
* ``h`` announces the agent string ``<img src=x onerror=alert(1)>`` and
  shares a file of that name.

The tests share the network and the browser and run in file order. A
screenshot of each state goes to ``tests/artifacts/dashboard/``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import Browser, browser_available, wait_for
from harness import PEERCTL, Cluster, Peer, child_env, wait_until
from hostile_agent_peer import HOSTILE

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
FILE_SIZE = 6 * MiB
SLOW = "2MiB"  # b's upload limit: the download takes about 3 s

pytestmark = pytest.mark.skipif(browser_available() is not None, reason=str(browser_available()))


class Network:
    """The three peers, the browser, and a few facts about them."""

    def __init__(self, cluster: Cluster, root: Path) -> None:
        self.cluster = cluster
        self.root = root
        self.b = cluster.add("b", sections={"provider:files": {"upload_rate": SLOW}})
        self.h = cluster.add("h", launcher=[sys.executable, str(HERE / "hostile_agent_peer.py")])
        cluster.start(self.b, self.h)
        self.a = cluster.add("a", peers=[self.b.pinned_address, self.h.pinned_address])
        cluster.start(self.a)
        self.downloads = root / "downloads"
        self.downloads.mkdir()
        big = root / "b-files" / "big.bin"
        big.parent.mkdir()
        big.write_bytes(os.urandom(FILE_SIZE))
        self.big = big
        self.big_cid = self.b.api.post("providers/files/shares", {"path": str(big)})["share"]["cid"]
        hostile = root / "h-files" / HOSTILE
        hostile.parent.mkdir()
        hostile.write_bytes(b"not a picture\n")
        self.hostile_cid = self.h.api.post("providers/files/shares", {"path": str(hostile)})[
            "share"
        ]["cid"]
        self.dashboard = self.a.peerctl("dashboard")["url"]
        self.base = self.dashboard.split("/login")[0]
        self.browser: Browser | None = None


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """Three peers and a headless browser, for every test of this module."""
    root = tmp_path_factory.mktemp("dash", numbered=True)
    cluster = Cluster(root)
    try:
        network = Network(cluster, root)
        wait_until(
            lambda: {network.b.peer_id, network.h.peer_id} <= set(network.a.peers()),
            20,
            "a to connect to b and h",
        )
        network.browser = Browser()
        yield network
    finally:
        if getattr(locals().get("network"), "browser", None) is not None:
            network.browser.close()
        cluster.cleanup()


def row_for(browser: Browser, peer: Peer) -> str:
    return f'#peers tr[data-peer="{peer.peer_id}"]'


def card_for(cid: str) -> str:
    return f'#downloads article[data-cid="{cid}"]'


def start_download_from_page(browser: Browser, cid: str, directory: Path) -> None:
    """Fill the Get form and submit it, as a user would."""
    cid_input = browser.find("#get-form input[name=cid]")
    cid_input.clear()
    cid_input.send_keys(cid)
    directory_input = browser.find("#get-form input[name=directory]")
    directory_input.clear()
    directory_input.send_keys(str(directory))
    browser.find("#get-form button").click()


def test_peers_appear(net: Network) -> None:
    """After logging in with the printed URL, both connected peers are listed, live."""
    browser = net.browser
    browser.get(net.dashboard)
    wait_for(lambda: browser.text("#conn-state") == "live", 15, "the event stream to be live")
    for peer in (net.b, net.h):
        wait_for(lambda p=peer: browser.find_all(row_for(browser, p)), 10, f"{peer.name}'s row")
    assert browser.text("#self-id") == net.a.peer_id
    assert len(browser.find_all("#graph .node")) == 3  # this peer and two others
    cookie = [n for n in browser.cookies() if n.startswith("peerd_session_")]
    assert cookie, "the login URL set a session cookie"
    browser.screenshot("1-peers")


def test_download_from_page_shows_progress_and_completes(net: Network) -> None:
    """A download started from the page shows its progress moving, then completes."""
    browser = net.browser
    start_download_from_page(browser, net.big_cid, net.downloads)
    card = card_for(net.big_cid)
    wait_for(lambda: browser.find_all(card), 10, "the download's card")
    seen: set[int] = set()

    def progress_moved() -> bool:
        done = int(browser.js(f"return document.querySelector('{card}').dataset.done;") or 0)
        if 0 < done < FILE_SIZE:
            seen.add(done)
        return len(seen) >= 2

    wait_for(progress_moved, 20, "two different partial progress figures", interval=0.05)
    browser.find(f"{card} button.toggle").click()  # show the piece map
    wait_for(lambda: browser.find_all(f"{card} .piece-map canvas"), 5, "the piece map")
    browser.screenshot("2-download-in-progress")
    wait_for(
        lambda: browser.js(f"return document.querySelector('{card}').dataset.state;") == "complete",
        30,
        "the download to complete",
    )
    assert (net.downloads / "big.bin").read_bytes() == net.big.read_bytes()
    assert "100.0%" in browser.text(f"{card} .figures")
    legend = browser.text(f"{card} .piece-map .legend")
    assert net.b.peer_id[:13] in legend, "the piece map names b as the source"
    browser.screenshot("3-download-complete")


def test_hostile_strings_render_as_text(net: Network) -> None:
    """An agent string and a file name made of HTML show as text; no script runs."""
    browser = net.browser
    agent = browser.text(f"{row_for(browser, net.h)} td.agent")
    assert agent == HOSTILE
    start_download_from_page(browser, net.hostile_cid, net.downloads)
    card = card_for(net.hostile_cid)
    wait_for(
        lambda: browser.text(f"{card} .name") == HOSTILE, 20, "the hostile file name in its card"
    )
    wait_for(
        lambda: browser.js(f"return document.querySelector('{card}').dataset.state;") == "complete",
        20,
        "the hostile download to complete",
    )
    assert browser.js("return document.querySelectorAll('img').length;") == 0
    assert browser.alerts() == []
    events = browser.text("#event-log")
    assert HOSTILE in events  # the event log shows it too, as text
    browser.screenshot("4-hostile-strings")


def _request(
    net: Network,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None = None,
) -> tuple[int, dict]:
    host, port = net.base.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        headers = dict(response.getheaders())
        headers["_body"] = response.read().decode("utf-8", "replace")
        return response.status, headers
    finally:
        connection.close()


def test_foreign_host_origin_or_no_session_refused(net: Network) -> None:
    """DNS rebinding, CSRF and anonymous requests are refused; the page's own requests pass."""
    session = {k: v for k, v in net.browser.cookies().items() if k.startswith("peerd_session_")}
    cookie = "; ".join(f"{k}={v}" for k, v in session.items())
    own = {"Host": net.base.removeprefix("http://"), "Cookie": cookie}
    body = json.dumps({"address": net.b.address}).encode()
    json_type = {"Content-Type": "application/json"}

    status, headers = _request(net, "GET", "/api/v1/status", own)
    assert status == 200
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert not any(h.lower().startswith("access-control-") for h in headers)

    assert _request(net, "GET", "/api/v1/status", {**own, "Host": "evil.example:80"})[0] == 403
    assert _request(net, "GET", "/", {"Host": "evil.example"})[0] == 403
    assert _request(net, "GET", "/api/v1/status", {"Host": own["Host"]})[0] == 401
    assert _request(net, "GET", "/metrics", {"Host": own["Host"]})[0] == 401
    foreign = {**own, **json_type, "Origin": "http://evil.example"}
    assert _request(net, "POST", "/api/v1/peers", foreign, body)[0] == 403
    no_origin = {**own, **json_type}
    assert _request(net, "POST", "/api/v1/peers", no_origin, body)[0] == 403
    origin = {**own, "Origin": net.base}
    assert (
        _request(net, "POST", "/api/v1/peers", {**origin, "Content-Type": "text/plain"}, body)[0]
        == 415
    )
    assert _request(net, "POST", "/api/v1/peers", {**origin, **json_type}, body)[0] == 200
    token = Path(net.a.data_dir / "web.token").read_text().strip()
    bearer = {"Host": own["Host"], "Authorization": f"Bearer {token}"}
    status, headers = _request(net, "GET", "/metrics", bearer)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    downloaded = re.search(
        r'peerd_provider_bytes_total\{direction="in",provider="files"\} (\S+)', headers["_body"]
    )
    assert downloaded and float(downloaded[1]) >= FILE_SIZE, "the download counts as files bytes"
    assert 'peerd_downloads_total{outcome="completed"} 2.0' in headers["_body"]
    assert _request(net, "GET", "/login?token=wrong", {"Host": own["Host"]})[0] == 403
    # The unix socket needs no token, as before.
    assert net.a.peerctl("status")["peer_id"] == net.a.peer_id


def test_peerctl_events_follows_the_stream(net: Network) -> None:
    """peerctl --json events prints events as they happen, one JSON object a line."""
    follower = subprocess.Popen(
        [str(PEERCTL), "--json", "--data-dir", str(net.a.data_dir), "events", "--types",
         "share", "--count", "1"],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(net.a.home),
    )  # fmt: skip
    try:
        wait_until(lambda: net.a.peerctl("status")["peer_id"], 5, "a to answer")
        shared = net.root / "a-share.txt"
        shared.write_text("hello\n")

        def share_seen() -> bool:
            net.a.api.post("providers/files/shares", {"path": str(shared)})
            return follower.poll() is not None

        wait_until(share_seen, 15, "peerctl events to print the share and stop", interval=0.3)
        event = json.loads(follower.stdout.read().splitlines()[0])
        assert event["type"] == "share.added" and event["name"] == "a-share.txt"
        assert follower.returncode == 0
    finally:
        if follower.poll() is None:
            follower.kill()
        follower.wait()


def test_page_keeps_working_after_a_peer_leaves_and_returns(net: Network) -> None:
    """b stops: its row goes; b starts again and a redials it: its row is back, still live."""
    browser = net.browser
    net.b.stop()
    wait_for(lambda: not browser.find_all(row_for(browser, net.b)), 15, "b's row to go")
    browser.screenshot("5-peer-left")
    net.cluster.start(net.b)
    wait_for(lambda: browser.find_all(row_for(browser, net.b)), 30, "b's row to come back")
    assert browser.text("#conn-state") == "live"
    assert len(browser.find_all("#graph .node")) == 3
    assert browser.alerts() == []
    browser.screenshot("6-peer-returned")
