"""The built-in files provider, found like any third-party plugin."""

from peerd.providers.files.plugin import FilesFactory

files = FilesFactory()
