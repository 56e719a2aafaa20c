"""The built-in relay provider, found like any third-party plugin."""

from peerd.providers.relay.plugin import RelayFactory

relay = RelayFactory()
