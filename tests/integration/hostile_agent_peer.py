"""
A test double: a real peer whose agent string is an HTML injection attempt.

Usage: ``python hostile_agent_peer.py --config FILE``. It starts peerd as
``twistd -n --pidfile= peerd --config FILE`` does, after replacing the agent
string it announces in its handshake with :data:`HOSTILE`.
"""

from __future__ import annotations

import sys

HOSTILE = "<img src=x onerror=alert(1)>"


def main(argv: list[str]) -> None:
    """Patch the agent string, then hand over to twistd."""
    from twisted.scripts.twistd import run

    import peerd.peer

    peerd.peer.AGENT = HOSTILE
    sys.argv = ["twistd", "-n", "--pidfile=", "peerd", *argv]
    run()


if __name__ == "__main__":
    main(sys.argv[1:])
