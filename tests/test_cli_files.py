"""
Tests for the files provider's ``peerctl`` commands (``peerd.providers.files.cli``),
against the canned stdlib HTTP server of ``test_cli`` on a unix socket.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import FakeDaemon

from peerd.peerctl.client import EXIT_API_ERROR
from peerd.peerctl.main import COMMANDS, main
from peerd.providers.files.cli import (
    CancelCommand,
    DownloadsCommand,
    GetCommand,
    ProgressDisplay,
    ShareCommand,
    SharedCommand,
    UnshareCommand,
    format_downloads,
    format_progress,
)

CID = "pd1fvyrmqvxe2yeialcpsu7xlbs6xefgd5rsa6mjwycewdrpeq2jca7key"
CID2 = "pd1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
API = "/api/v1/providers/files/"
MiB = 1024 * 1024


class ScriptedRoutes(dict):
    """Routes whose answer may be a list of answers, served in turn; the last one repeats."""

    def get(self, key, default=None):
        value = super().get(key, default)
        if isinstance(value, list):
            return value.pop(0) if len(value) > 1 else value[0]
        return value


class FakeTime:
    """A clock and a ``sleep`` that advances it at once; optionally interrupts a sleep."""

    def __init__(self, interrupt_on: int | None = None) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.interrupt_on = interrupt_on

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) == self.interrupt_on:
            raise KeyboardInterrupt
        self.now += seconds


def status(state: str, bytes_done: int = 0, **fields: object) -> dict:
    """A download status as the daemon reports it."""
    known = state not in ("finding-sources", "fetching-metadata")
    detail = {"finding-sources": "no sources yet", "failed": fields.get("error")}.get(state, state)
    value = {
        "cid": CID,
        "name": "movie.mkv" if known else None,
        "state": state,
        "detail": detail,
        "error": None,
        "destination": None,
        "path": "/home/u/movie.mkv" if state == "complete" else None,
        "size": 10 * MiB if known else None,
        "bytes_done": bytes_done,
        "blocks_done": bytes_done // MiB,
        "blocks": 10 if known else None,
        "rate": 2 * MiB if state == "downloading" else 0.0,
        "eta": (10 * MiB - bytes_done) / (2 * MiB) if state == "downloading" else None,
        "peers": 2 if known else 0,
        "sources": {},
        "banned": {},
        "started": 1790000000.0,
        "finished": None,
    }
    value.update(fields)
    return value


def share(**fields: object) -> dict:
    value = {
        "cid": CID,
        "name": "photos",
        "kind": "dir",
        "path": "/home/u/photos",
        "size": 3 * MiB,
        "files": 12,
        "blocks": 48,
        "blocks_held": 48,
        "status": "sharing",
    }
    value.update(fields)
    return value


@pytest.fixture
def daemon(data_dir: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(data_dir / "control.sock")
    fake.routes = ScriptedRoutes()
    yield fake
    fake.close()


def run(data_dir: Path, *argv: str, get: GetCommand | None = None) -> int:
    commands = [
        ShareCommand(),
        SharedCommand(),
        UnshareCommand(),
        get or GetCommand(sleep=FakeTime().sleep, isatty=lambda: False),
        DownloadsCommand(),
        CancelCommand(),
    ]
    return main(["--data-dir", str(data_dir), *argv], commands=commands)


def posted(daemon: FakeDaemon) -> object:
    method, path, body = daemon.requests[0]
    assert method == "POST"
    return json.loads(body)


def script_download(daemon: FakeDaemon, first: dict, *then: dict) -> None:
    """``POST downloads`` answers ``first``; ``GET downloads/CID`` answers ``then`` in turn."""
    daemon.routes[("POST", API + "downloads")] = (202, {"download": first})
    daemon.routes[("GET", API + f"downloads/{CID}")] = [(200, {"download": s}) for s in then]


def gets(daemon: FakeDaemon) -> int:
    return sum(1 for m, p, _ in daemon.requests if m == "GET")


# -- share, shared, unshare ---------------------------------------------------------


def test_commands_registered() -> None:
    """``peerd.peerctl.main.COMMANDS`` includes the files commands, so ``peerctl`` offers them."""
    names = [c.name for c in COMMANDS]
    for name in ("share", "shared", "unshare", "get", "downloads", "cancel"):
        assert names.count(name) == 1


def test_share(daemon: FakeDaemon, data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """``share PATH`` posts the absolute path and prints the content ID alone on stdout."""
    daemon.routes[("POST", API + "shares")] = (200, {"share": share()})
    monkeypatch.chdir(tmp_path)
    assert run(data_dir, "share", "photos") == 0
    assert posted(daemon) == {"path": str(tmp_path / "photos")}
    captured = capsys.readouterr()
    assert captured.out == CID + "\n"
    assert captured.err == "shared photos (3.0 MiB, 12 files, 48 blocks)\n"


def test_share_file_json(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """``share --json`` prints the API's answer and nothing on stderr."""
    answer = {"share": share(kind="file", files=1, name="a.iso")}
    daemon.routes[("POST", API + "shares")] = (200, answer)
    assert run(data_dir, "share", "/srv/a.iso", "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == answer
    assert captured.err == ""


def test_share_waits_long() -> None:
    """``share`` waits far longer than the default timeout: hashing takes a while."""
    assert ShareCommand().timeout >= 3600


def test_share_missing(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """A path the daemon cannot share: its message on one line, exit 1."""
    daemon.routes[("POST", API + "shares")] = (404, {"error": "/x: no such file or directory"})
    assert run(data_dir, "share", "/x") == EXIT_API_ERROR
    assert capsys.readouterr().err == "peerctl: /x: no such file or directory\n"


def test_shared_table(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """``shared`` lists ID, name, size, blocks held/total, and ok or the change note."""
    note = "changed on disk: 1 file; those blocks are not served"
    shares = [share(), share(cid=CID2, name="notes.txt", blocks_held=40, status=note)]
    daemon.routes[("GET", API + "shares")] = (200, {"shares": shares})
    assert run(data_dir, "shared") == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == ["CONTENT", "ID", "NAME", "SIZE", "BLOCKS", "STATUS"]
    assert first.split() == [CID, "photos", "3.0", "MiB", "48/48", "ok"]
    assert second.split()[:5] == [CID2, "notes.txt", "3.0", "MiB", "40/48"]
    assert second.endswith(note)
    assert second.index("notes.txt") == header.index("NAME")


def test_shared_empty(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """``shared`` with nothing shared says so."""
    daemon.routes[("GET", API + "shares")] = (200, {"shares": []})
    assert run(data_dir, "shared") == 0
    assert capsys.readouterr().out == "nothing shared\n"


def test_unshare(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """``unshare ID`` deletes the share and says so."""
    daemon.routes[("DELETE", API + f"shares/{CID}")] = (200, {"removed": CID})
    assert run(data_dir, "unshare", CID) == 0
    assert capsys.readouterr().out == f"stopped sharing {CID}\n"
    assert daemon.requests == [("DELETE", API + f"shares/{CID}", b"")]


def test_malformed_id_from_daemon(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """An ID is not checked locally: the daemon's 400 message comes through, quoted safely."""
    message = "'x/y' is not a content ID: it should start with 'pd1'"
    daemon.routes[("DELETE", API + "shares/x%2Fy")] = (400, {"error": message})
    assert run(data_dir, "unshare", "x/y") == EXIT_API_ERROR
    assert capsys.readouterr().err == f"peerctl: {message}\n"


# -- get ------------------------------------------------------------------------------


def test_get_into_cwd(daemon: FakeDaemon, data_dir: Path, tmp_path, monkeypatch) -> None:
    """Without ``-o`` the download goes into the current directory, under its own name."""
    script_download(daemon, status("complete", 10 * MiB))
    monkeypatch.chdir(tmp_path)
    assert run(data_dir, "get", CID) == 0
    assert posted(daemon) == {
        "cid": CID,
        "destination": None,
        "directory": str(tmp_path),
        "force": False,
    }


def test_get_output_force(daemon: FakeDaemon, data_dir: Path, tmp_path, monkeypatch) -> None:
    """``-o PATH --force`` sends the absolute destination and ``force``."""
    script_download(daemon, status("complete", 10 * MiB))
    monkeypatch.chdir(tmp_path)
    assert run(data_dir, "get", CID, "-o", "out/film.mkv", "--force") == 0
    assert posted(daemon) == {
        "cid": CID,
        "destination": str(tmp_path / "out/film.mkv"),
        "directory": None,
        "force": True,
    }


def test_get_follows_to_completion(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """
    ``get`` polls from finding sources through downloading to complete; stdout
    has only the final path, progress goes to stderr, and no real time passes.
    """
    script_download(
        daemon,
        status("finding-sources"),
        status("fetching-metadata"),
        status("downloading", 2 * MiB),
        status("downloading", 6 * MiB),
        status("complete", 10 * MiB),
    )
    fake = FakeTime()
    get = GetCommand(sleep=fake.sleep, clock=fake.clock, isatty=lambda: False, plain_every=3.0)
    assert run(data_dir, "get", CID, get=get) == 0
    captured = capsys.readouterr()
    assert captured.out == "/home/u/movie.mkv\n"
    assert gets(daemon) == 4
    assert fake.sleeps == [0.25] * 4
    # one plain line per state change (all within 3 s here)
    assert captured.err.splitlines() == [
        "0 B / ?  -  0 B/s  0 peers  ETA ?  finding sources: no sources yet",
        "0 B / ?  -  0 B/s  0 peers  ETA ?  fetching metadata",
        "2.0 MiB / 10.0 MiB  20%  2.0 MiB/s  2 peers  ETA 4s",
        "10.0 MiB / 10.0 MiB  100%  0 B/s  2 peers  ETA ?  complete",
    ]


def test_get_plain_lines_every_few_seconds(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """Off a terminal, progress is one line every ``plain_every`` seconds, not per poll."""
    downloading = [status("downloading", i * MiB // 4) for i in range(1, 30)]
    script_download(daemon, downloading[0], *downloading[1:], status("complete", 10 * MiB))
    fake = FakeTime()
    get = GetCommand(sleep=fake.sleep, clock=fake.clock, isatty=lambda: False, plain_every=3.0)
    assert run(data_dir, "get", CID, get=get) == 0
    lines = capsys.readouterr().err.splitlines()
    # 29 polls 0.25 s apart span 7 s: lines at 0 s, 3 s and 6 s, then the final one
    assert [line.split("  ")[0] for line in lines] == [
        "256.0 KiB / 10.0 MiB",
        "3.2 MiB / 10.0 MiB",
        "6.2 MiB / 10.0 MiB",
        "10.0 MiB / 10.0 MiB",
    ]


def test_get_tty_progress(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """On a terminal, one line is redrawn with ``\\r``: bar, bytes, percent, rate, peers, ETA."""
    script_download(
        daemon,
        status("finding-sources"),
        status("downloading", 5 * MiB),
        status("complete", 10 * MiB),
    )
    fake = FakeTime()
    get = GetCommand(sleep=fake.sleep, isatty=lambda: True, terminal_width=lambda: 120)
    assert run(data_dir, "get", CID, get=get) == 0
    captured = capsys.readouterr()
    assert captured.out == "/home/u/movie.mkv\n"
    err = captured.err
    assert err.endswith("\n") and err.count("\n") == 1
    frames = err[:-1].split("\r")[1:]
    assert len(frames) == 3
    assert frames[0].startswith("[" + "-" * 24 + "]  0 B / ?")
    assert frames[0].endswith("no sources yet")
    assert frames[1].startswith("[" + "#" * 12 + "-" * 12 + "]  5.0 MiB / 10.0 MiB  50%")
    assert "2.0 MiB/s  2 peers  ETA 2s" in frames[1]
    assert frames[2].startswith("[" + "#" * 24 + "]  10.0 MiB / 10.0 MiB  100%")
    # a shorter line blanks out what is left of the longer one before it
    assert len(frames[1]) == len(frames[0]) and frames[1].endswith(" ")


def test_get_tty_line_fits_terminal(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """The redrawn line is cut to the terminal's width so that it never wraps."""
    script_download(daemon, status("finding-sources"), status("complete", 10 * MiB))
    get = GetCommand(sleep=FakeTime().sleep, isatty=lambda: True, terminal_width=lambda: 30)
    assert run(data_dir, "get", CID, get=get) == 0
    frames = capsys.readouterr().err.rstrip("\n").split("\r")[1:]
    assert all(len(f) <= 29 for f in frames)


def test_get_quiet(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """``--quiet`` shows no progress but still prints the final path."""
    script_download(daemon, status("finding-sources"), status("complete", 10 * MiB))
    get = GetCommand(sleep=FakeTime().sleep, isatty=lambda: True)
    assert run(data_dir, "get", CID, "--quiet", get=get) == 0
    assert capsys.readouterr() == ("/home/u/movie.mkv\n", "")


def test_get_json(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """``get --json`` prints the final status as the API gives it, and no progress."""
    final = status("complete", 10 * MiB)
    script_download(daemon, status("downloading", MiB), final)
    assert run(data_dir, "get", CID, "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"download": final}
    assert captured.err == ""


def test_get_failed(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """A failed download: one line with the error on stderr, exit 1."""
    error = "no peer has block 7"
    script_download(daemon, status("downloading", MiB), status("failed", MiB, error=error))
    assert run(data_dir, "get", CID, "--quiet") == EXIT_API_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"peerctl: download of {CID} failed: {error}\n"


def test_get_cancelled(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """A download cancelled meanwhile (e.g. by ``peerctl cancel``) exits 1."""
    script_download(daemon, status("downloading", MiB), status("cancelled", MiB))
    assert run(data_dir, "get", CID, "-q") == EXIT_API_ERROR
    assert capsys.readouterr().err == f"peerctl: download of {CID} was cancelled\n"


@pytest.mark.parametrize(
    "code, message",
    [
        (409, "/home/u/movie.mkv exists (use --force to replace it)"),
        (400, "'pd1xyz' is not a content ID: wrong length"),
        (507, "not enough disk space for 10.0 MiB"),
    ],
)
def test_get_refused(daemon: FakeDaemon, data_dir: Path, capsys, code: int, message: str) -> None:
    """A refused download (exists, malformed ID, disk full): the message, exit 1, no polling."""
    daemon.routes[("POST", API + "downloads")] = (code, {"error": message})
    assert run(data_dir, "get", "pd1xyz", "-o", "/home/u/movie.mkv") == EXIT_API_ERROR
    assert capsys.readouterr() == ("", f"peerctl: {message}\n")
    assert len(daemon.requests) == 1


def test_get_no_wait(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """``--no-wait`` returns once the download is started, without polling."""
    script_download(daemon, status("finding-sources"), status("complete"))
    fake = FakeTime()
    get = GetCommand(sleep=fake.sleep, isatty=lambda: False)
    assert run(data_dir, "get", CID, "--no-wait", get=get) == 0
    assert capsys.readouterr().out == f"downloading {CID}\n"
    assert [m for m, _, _ in daemon.requests] == ["POST"]
    assert fake.sleeps == []


def test_get_interrupted(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """
    Ctrl-C while waiting leaves the download running: it says how to cancel
    it, exits 130 and sends no DELETE.
    """
    script_download(daemon, status("finding-sources"), status("downloading", MiB))
    fake = FakeTime(interrupt_on=2)
    get = GetCommand(sleep=fake.sleep, isatty=lambda: True, terminal_width=lambda: 120)
    assert run(data_dir, "get", CID, get=get) == 130
    captured = capsys.readouterr()
    assert captured.out == ""
    last = captured.err.splitlines()[-1]
    assert last == f"peerctl: download continues in the daemon; `peerctl cancel {CID}` stops it"
    assert captured.err.startswith("\r[")  # the progress line was ended first
    assert [m for m, _, _ in daemon.requests] == ["POST", "GET"]


# -- downloads, cancel ---------------------------------------------------------------


def test_downloads_table(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """``downloads`` lists ID, name, state, percent, rate, peers and ETA."""
    downloads = [
        status("downloading", 5 * MiB),
        status("finding-sources", cid=CID2),
        status("complete", 10 * MiB),
    ]
    daemon.routes[("GET", API + "downloads")] = (200, {"downloads": downloads})
    assert run(data_dir, "downloads") == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["CONTENT", "ID", "NAME", "STATE", "DONE", "RATE", "PEERS", "ETA"]
    assert rows[0].split() == [CID, "movie.mkv", "downloading", "50%", "2.0", "MiB/s", "2", "2s"]
    assert rows[1].startswith(f"{CID2}  ?")
    assert rows[1][header.index("STATE") :].startswith("finding sources: no sources yet")
    assert rows[1].split()[-5:] == ["-", "0", "B/s", "0", "?"]
    assert rows[2].split() == [CID, "movie.mkv", "complete", "100%", "-", "-", "-"]


def test_downloads_empty() -> None:
    """With no downloads the table says so."""
    assert format_downloads([]) == "no downloads"


def test_cancel(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """``cancel ID`` deletes the download and says so."""
    daemon.routes[("DELETE", API + f"downloads/{CID}")] = (200, {"cancelled": CID})
    assert run(data_dir, "cancel", CID) == 0
    assert capsys.readouterr().out == f"cancelled {CID}\n"
    assert daemon.requests == [("DELETE", API + f"downloads/{CID}", b"")]


def test_cancel_unknown(daemon: FakeDaemon, data_dir: Path, capsys) -> None:
    """Cancelling what is not downloading: the daemon's 404 message, exit 1."""
    message = f"no download of {CID} in progress"
    daemon.routes[("DELETE", API + f"downloads/{CID}")] = (404, {"error": message})
    assert run(data_dir, "cancel", CID) == EXIT_API_ERROR
    assert capsys.readouterr().err == f"peerctl: {message}\n"


# -- formatting ----------------------------------------------------------------------


def test_progress_empty_file() -> None:
    """A zero-byte download shows 100% and a full bar once complete, not a division error."""
    line = format_progress(status("complete", 0, size=0), bar=True)
    assert line.startswith("[" + "#" * 24 + "]  0 B / 0 B  100%")


def test_progress_never_100_before_complete() -> None:
    """The percentage stays below 100 until the download is complete."""
    assert "  99%  " in format_progress(status("finishing", 10 * MiB))
    assert format_progress(status("finishing", 10 * MiB)).endswith("finishing")


def test_plain_display_repeats_only_when_due() -> None:
    """Off a terminal the same state is shown again only after ``plain_every`` seconds."""
    out = io.StringIO()
    fake = FakeTime()
    display = ProgressDisplay(out, tty=False, clock=fake.clock, plain_every=3.0)
    for _ in range(4):  # at 0, 1.4, 2.8 and 4.2 s
        display.update(status("downloading", MiB))
        fake.now += 1.4
    display.end()
    assert out.getvalue().count("\n") == 2  # at 0 and 4.2 s; end() adds nothing
