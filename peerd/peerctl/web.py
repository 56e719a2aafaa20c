"""
``peerctl dashboard`` and ``peerctl events``: the web dashboard's login URL,
and the live event stream in a terminal.
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path

from peerd.peerctl.client import (
    API_PREFIX,
    EXIT_OK,
    ApiClientError,
    ControlClient,
    DaemonUnreachable,
    PeerctlError,
    _UnixHTTPConnection,
)
from peerd.peerctl.command import Command

RECONNECT_DELAY = 1.0


class DashboardCommand(Command):
    name = "dashboard"
    help = "print the URL that opens the web dashboard logged in (--open opens it)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--open", action="store_true", help="open it in a browser")

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        info = client.get("web")
        if not isinstance(info, dict) or not info.get("url"):
            raise PeerctlError("the web dashboard is off ([control] web = none)")
        url = login_url(info["url"], Path(info["token_file"]))
        if args.json:
            print(json.dumps({"url": url, "metrics": info.get("metrics", [])}, indent=2))
        else:
            print(url)
        if args.open and not webbrowser.open(url):
            raise PeerctlError("no browser could be opened; open the URL above yourself")
        return EXIT_OK


def login_url(base: str, token_file: Path) -> str:
    """``BASE/login?token=TOKEN`` with the token read from ``token_file``."""
    try:
        token = token_file.read_text(encoding="ascii").strip()
    except PermissionError:
        raise PeerctlError(
            f"cannot read {token_file} (run peerctl as the user running peerd)"
        ) from None
    except OSError as e:
        raise PeerctlError(f"cannot read the web token {token_file}: {e.strerror or e}") from None
    return f"{base.rstrip('/')}/login?token={token}"


class EventsCommand(Command):
    name = "events"
    help = "follow the live event stream (one event per line; --json for JSON lines)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--types",
            metavar="T,T",
            default="",
            help="only these kinds, e.g. peer,download (type prefixes)",
        )
        parser.add_argument(
            "--since", metavar="ID", default=None, help="replay what followed event ID first"
        )
        parser.add_argument("--count", type=int, default=None, help="stop after this many events")

    def run(self, client: ControlClient, args: argparse.Namespace) -> int:
        seen = 0
        for event in follow(client.socket_path, args.types, args.since):
            if event.get("type") == "stats.tick":
                continue
            print(json.dumps(event, sort_keys=True) if args.json else format_event(event))
            seen += 1
            if args.count is not None and seen >= args.count:
                break
        return EXIT_OK


def format_event(event: dict) -> str:
    """``12:00:01  peer.connected  peer=... direction=outbound``."""
    when = time.strftime("%H:%M:%S", time.localtime(event.get("time", 0)))
    skip = {"id", "type", "time"}
    fields = " ".join(
        f"{k}={_short(v)}" for k, v in event.items() if k not in skip and v is not None
    )
    return f"{when}  {event.get('type', '?')}  {fields}".rstrip()


def _short(value: object) -> str:
    if isinstance(value, dict):
        if "state" in value and "cid" in value:  # a download's status
            done, size = value.get("bytes_done") or 0, value.get("size")
            return f"{value['state']}:{done}/{size if size is not None else '?'}"
        return ",".join(sorted(value)) or "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


def follow(socket_path: str, types: str = "", since: str | None = None) -> Iterator[dict]:
    """
    The events from the daemon on ``socket_path``, for ever: a dropped
    connection is resumed from the last id (the daemon says if events were
    missed with a ``stream.gap`` event).

    :raises DaemonUnreachable: the daemon is not (or no longer) running.
    """
    last_id = since
    while True:
        for event_id, data in _stream(socket_path, types, last_id):
            if event_id is not None:
                last_id = event_id
            yield data
        time.sleep(RECONNECT_DELAY)


def _stream(socket_path: str, types: str, last_id: str | None) -> Iterator[tuple[str | None, dict]]:
    connection = _UnixHTTPConnection(socket_path, timeout=None)  # type: ignore[arg-type]
    headers = {"Accept": "text/event-stream"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    query = f"?types={types}" if types else ""
    try:
        connection.request("GET", f"{API_PREFIX}events{query}", headers=headers)
        response = connection.getresponse()
    except FileNotFoundError:
        raise DaemonUnreachable(
            f"peerd is not running (no control socket at {socket_path})"
        ) from None
    except ConnectionRefusedError:
        raise DaemonUnreachable(
            f"peerd is not running (control socket {socket_path} refuses connections)"
        ) from None
    except (OSError, http.client.HTTPException) as e:
        raise DaemonUnreachable(f"lost the connection to peerd on {socket_path}: {e}") from None
    if response.status != 200:
        raise ApiClientError(f"HTTP {response.status} {response.reason}", response.status)
    event_id: str | None = None
    data: list[str] = []
    try:
        while True:
            raw = response.readline()
            if not raw:
                return
            line = raw.decode("utf-8").rstrip("\r\n")
            if line == "":
                if data:
                    yield event_id, json.loads("\n".join(data))
                event_id, data = None, []
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
    except (OSError, http.client.HTTPException, ValueError):
        return
    finally:
        connection.close()


COMMANDS: list[Command] = [DashboardCommand(), EventsCommand()]
