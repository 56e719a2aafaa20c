"""
Provider discovery, in one place: find every
:class:`~peerd.interfaces.IResourceProviderFactory` in ``peerd.plugins``,
match them by name against the config, and validate each enabled
provider's section against its schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from twisted.plugin import getPlugins
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

import peerd.plugins
from peerd.config import ConfigError, ProviderSection, Settings, validate_provider_options
from peerd.interfaces import IResourceProviderFactory

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class SelectedProvider:
    """A provider to run, with its parsed options."""

    factory: IResourceProviderFactory
    options: dict


def discover_factories(
    plugins: Iterable[object] | None = None,
) -> dict[str, IResourceProviderFactory]:
    """
    Every installed provider factory by name.

    :raises ConfigError: two plugins claim one name, or a plugin is malformed.
    """
    if plugins is None:
        plugins = getPlugins(IResourceProviderFactory, peerd.plugins)
    found: dict[str, IResourceProviderFactory] = {}
    for factory in plugins:
        try:
            verifyObject(IResourceProviderFactory, factory)
        except Invalid as e:
            raise ConfigError(f"provider plugin {factory!r} is malformed: {e}") from None
        name = factory.name
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"provider plugin {factory!r} has an invalid name {name!r}")
        if name in found and found[name] is not factory:
            raise ConfigError(
                f"two installed plugins provide {name!r}: {found[name]!r} and {factory!r}"
            )
        found[name] = factory
    return found


def select_providers(
    settings: Settings, factories: Mapping[str, IResourceProviderFactory]
) -> list[SelectedProvider]:
    """
    The providers to run: those enabled by their section, or enabled by
    default with no section saying otherwise.

    :raises ConfigError: a ``[provider:NAME]`` section names a provider that
        is not installed, or has an unknown key or bad value.
    """
    for name, section in settings.providers.items():
        if name not in factories:
            installed = ", ".join(sorted(factories)) or "none"
            raise ConfigError(
                f"{section.source}: [provider:{name}] names a provider that is not installed "
                f"(installed: {installed})",
                source=section.source,
                section=f"provider:{name}",
            )
    selected = []
    for name in sorted(factories):
        factory = factories[name]
        section = settings.providers.get(name) or ProviderSection(name, None, {}, settings.source)
        enabled = factory.enabled_by_default if section.enabled is None else section.enabled
        if not enabled:
            continue
        options = validate_provider_options(
            section.source, f"provider:{name}", factory.config_schema, section.options
        )
        selected.append(SelectedProvider(factory, options))
    return selected
