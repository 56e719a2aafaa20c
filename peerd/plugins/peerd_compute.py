"""The built-in compute provider, found like any third-party plugin."""

from peerd.providers.compute.plugin import ComputeFactory

compute = ComputeFactory()
