"""
Namespace for peerd provider plugins.

Any module in this package that defines an object providing
:class:`peerd.interfaces.IResourceProviderFactory` adds a provider: peerd
finds it with ``twisted.plugin.getPlugins``. Third-party packages install
their module here (see ``docs/writing-providers.rst``).
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # noqa: F821 - allow drop-ins from other sys.path entries
__all__: list[str] = []
