"""
The dashboard at 200 peers and 50 transfers: load time, memory, redraws.

The peers are simulated in memory: a child process serves the real control
tree (:class:`peerd.control.site.ControlRoot`, the real static files, the
real event stream) over a router that answers with 200 peers and 50
downloads, and emits 50 progress events a second, a ``stats.tick`` every
2 s and a peer leaving and coming back every second. Headless Chromium
opens the page and we measure:

* load: from navigation start until all 200 peer rows and 50 transfer cards
  are drawn;
* memory: the page's JS heap and DOM node count after ``--seconds`` of live
  events;
* redraws per second and event-to-screen lag while the events flow.

Run: ``.venv/bin/python bench/dashboard_load.py`` (needs chromium and
chromium-driver from Debian, and selenium).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

PEERS = 200
DOWNLOADS = 50
HERE = Path(__file__).resolve().parent


def fake_peer_id(rng: random.Random) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "-".join("".join(rng.choice(letters) for _ in range(6)) for _ in range(6))


def serve(port_file: Path) -> None:
    """The child: a control tree with simulated peers and downloads."""
    from twisted.internet import reactor, task
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.web.server import Site

    from peerd.control.events import EventLog
    from peerd.control.router import ControlResource, Router
    from peerd.control.site import ControlRoot
    from peerd.control.sse import EventStreamResource
    from peerd.control.static_files import StaticFiles

    rng = random.Random(7)
    now = time.time()
    me = fake_peer_id(rng)
    peers = {}
    for i in range(PEERS):
        pid = fake_peer_id(rng)
        relay = list(peers)[rng.randrange(len(peers))] if peers and i % 10 == 0 else None
        peers[pid] = {
            "peer_id": pid,
            "address": f"10.0.{i // 250}.{i % 250}:7845",
            "direction": "inbound" if i % 3 else "outbound",
            "providers": {"files": "1", "relay": "1"},
            "listen_addresses": [],
            "agent": f"peerd/0.{i % 4}.0",
            "since": now - rng.uniform(0, 86400),
            "relay": relay,
            "rtt": 0.01,
            "bytes_in": rng.randrange(10**9),
            "bytes_out": rng.randrange(10**9),
        }
    downloads = {}
    for i in range(DOWNLOADS):
        cid = "pd1" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(52))
        downloads[cid] = {
            "cid": cid, "name": f"file-{i}.bin", "state": "downloading", "detail": "downloading",
            "error": None, "destination": "", "path": None, "size": 1 << 30, "bytes_done": 0,
            "blocks_done": 0, "blocks": 1024, "rate": 0.0, "eta": None, "peers": 5,
            "banned": 0, "started": now - i, "finished": None,
        }  # fmt: skip
    status = {
        "peer_id": me, "agent": "peerd/0.1.0", "version": "0.1.0", "pid": os.getpid(),
        "uptime": 100.0, "data_dir": "/tmp/x", "listen": ["tcp:7845"], "addresses": [],
        "connections": {"total": PEERS, "inbound": 133, "outbound": 67, "max": 256},
        "providers": {"files": {"version": "1", "status": {"shares": 0}},
                      "dht": {"version": "1", "status": {"records": 5000, "buckets": 40}}},
        "bytes_in": 0, "bytes_out": 0,
    }  # fmt: skip
    router = Router()
    router.route("GET", "status", lambda r: status)
    router.route("GET", "peers", lambda r: {"peers": list(peers.values())})
    router.route(
        "GET", "providers/files/downloads", lambda r: {"downloads": list(downloads.values())}
    )
    router.route("GET", "providers/files/shares", lambda r: {"shares": []})
    events = EventLog(time.time, epoch="bench")
    stream = EventStreamResource(events, reactor)

    def progress() -> None:
        for d in downloads.values():
            d["bytes_done"] = min(d["size"], d["bytes_done"] + rng.randrange(1 << 20, 8 << 20))
            d["rate"] = rng.uniform(1e6, 8e6)
            d["eta"] = (d["size"] - d["bytes_done"]) / d["rate"]
            events.emit("download.progress", cid=d["cid"], download=d, provider="files")

    def churn() -> None:
        pid = rng.choice(list(peers))
        peer = peers.pop(pid)
        events.emit("peer.disconnected", peer=pid, reason="bench", direction=peer["direction"])
        peers[pid] = peer
        events.emit("peer.connected", **{k: peer[k] for k in ("address", "direction", "relay",
                    "agent", "providers", "since")}, peer=pid)  # fmt: skip

    def tick() -> None:
        events.broadcast(
            "stats.tick",
            status=status,
            peers={p: [v["bytes_in"], v["bytes_out"]] for p, v in peers.items()},
        )

    task.LoopingCall(progress).start(1.0)
    task.LoopingCall(churn).start(1.0)
    task.LoopingCall(tick).start(2.0)
    root = ControlRoot(ControlResource(router), events=stream, static=StaticFiles())

    def listening(port) -> None:
        port_file.write_text(str(port.getHost().port))

    TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(root)).addCallback(listening)
    reactor.run()


def measure(seconds: float) -> None:
    """The parent: start the child, drive Chromium, print the figures."""
    sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
    from browser import Browser

    port_file = Path(f"/tmp/peerd-bench-dash-{os.getpid()}")
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)])
    browser = None
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline:
                raise SystemExit("the simulated daemon did not start")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}/"
        browser = Browser()
        browser.driver.execute_cdp_cmd("Performance.enable", {})
        loads = []
        for _ in range(3):
            browser.get(url)
            ready = None
            while ready is None:
                ready = browser.js(
                    "return document.querySelectorAll('#peers tbody tr').length >= arguments[0]"
                    " && document.querySelectorAll('#downloads article').length >= arguments[1]"
                    " ? performance.now() : null;",
                    PEERS,
                    DOWNLOADS,
                )
                if ready is None:
                    time.sleep(0.01)
            loads.append(ready)
        redraws0 = browser.js("return window.peerdDashboard.counters.redraws;")
        time.sleep(seconds)
        redraws = browser.js("return window.peerdDashboard.counters.redraws;") - redraws0
        metrics = {
            m["name"]: m["value"]
            for m in browser.driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
        }
        browser.driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
        after_gc = {
            m["name"]: m["value"]
            for m in browser.driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
        }
        rows = browser.js("return document.querySelectorAll('#peers tbody tr').length;")
        browser.screenshot("bench-200-peers")
        print(f"peers {PEERS}, transfers {DOWNLOADS}, 50 progress events/s, 1 peer churn/s")
        print(f"load (navigation start -> all rows and cards drawn): "
              f"{', '.join(f'{x:.0f}' for x in loads)} ms")  # fmt: skip
        print(f"JS heap used after {seconds:g} s live: {metrics['JSHeapUsedSize'] / 2**20:.1f} MiB "
              f"({after_gc['JSHeapUsedSize'] / 2**20:.1f} MiB after GC), "
              f"total heap {metrics['JSHeapTotalSize'] / 2**20:.1f} MiB")  # fmt: skip
        print(f"DOM nodes: {int(metrics['Nodes'])}; rows shown: {rows}")
        print(f"redraw passes: {redraws / seconds:.1f}/s; "
              f"script time: {metrics['ScriptDuration']:.2f} s, layout: "
              f"{metrics['LayoutDuration']:.2f} s over the whole run")  # fmt: skip
    finally:
        if browser is not None:
            browser.close()
        child.terminate()
        child.wait()
        port_file.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", metavar="PORT_FILE", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to watch live")
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve))
    else:
        measure(args.seconds)


if __name__ == "__main__":
    main()
