"""
The control API client ``peerctl`` uses: HTTP+JSON over the daemon's unix
socket, with the standard library only (no Twisted, so ``peerctl`` starts
fast), and the errors it reports as one line.
"""

from __future__ import annotations

import http.client
import json
import os
import socket

API_PREFIX = "/api/v1/"
DEFAULT_TIMEOUT = 120.0

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3


class PeerctlError(Exception):
    """An error that ``peerctl`` reports as one line on stderr."""

    exit_code = EXIT_API_ERROR


class DaemonUnreachable(PeerctlError):
    """The daemon's control socket cannot be used."""

    exit_code = EXIT_NOT_RUNNING


class ApiClientError(PeerctlError):
    """The API answered with an error status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An ``HTTPConnection`` to a unix socket path."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("peerd", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class ControlClient:
    """Calls the control API on ``socket_path``; paths are relative to ``/api/v1/``."""

    def __init__(self, socket_path: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout

    def get(self, path: str) -> object:
        """``GET`` ``path``; the parsed JSON answer."""
        return self._request("GET", path)

    def post(self, path: str, body: object) -> object:
        """``POST`` ``body`` as JSON to ``path``; the parsed JSON answer."""
        return self._request("POST", path, body)

    def delete(self, path: str) -> object:
        """``DELETE`` ``path``; the parsed JSON answer."""
        return self._request("DELETE", path)

    def _request(self, method: str, path: str, body: object = None) -> object:
        sock = self.socket_path
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        connection = _UnixHTTPConnection(sock, self.timeout)
        try:
            connection.request(method, API_PREFIX + path.lstrip("/"), data, headers)
            response = connection.getresponse()
            payload = response.read()
        except FileNotFoundError:
            raise DaemonUnreachable(f"peerd is not running (no control socket at {sock})") from None
        except ConnectionRefusedError:
            raise DaemonUnreachable(
                f"peerd is not running (control socket {sock} refuses connections)"
            ) from None
        except PermissionError:
            raise DaemonUnreachable(
                f"permission denied on control socket {sock} (run peerctl as the user running peerd)"
            ) from None
        except TimeoutError:
            raise DaemonUnreachable(
                f"peerd did not answer within {self.timeout:g}s (control socket {sock})"
            ) from None
        except (OSError, http.client.HTTPException) as e:
            raise DaemonUnreachable(f"lost the connection to peerd on {sock}: {e}") from None
        finally:
            connection.close()
        try:
            value = json.loads(payload) if payload.strip() else None
        except ValueError:
            value = None
            if 200 <= response.status < 300:
                raise ApiClientError("peerd sent a response that is not JSON") from None
        if not 200 <= response.status < 300:
            if isinstance(value, dict) and isinstance(value.get("error"), str):
                raise ApiClientError(value["error"], response.status)
            raise ApiClientError(f"HTTP {response.status} {response.reason}", response.status)
        return value
