"""The built-in storage provider, found like any third-party plugin."""

from peerd.providers.storage.plugin import StorageFactory

storage = StorageFactory()
