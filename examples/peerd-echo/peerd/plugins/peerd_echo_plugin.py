"""The ``echo`` provider plugin; the implementation lives in :mod:`peerd_echo`."""

from peerd_echo import EchoFactory

echo = EchoFactory()
