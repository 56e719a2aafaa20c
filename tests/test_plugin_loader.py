"""Provider discovery and selection: plugins matched by name against the config."""

from __future__ import annotations

import pytest

from peerd.config import ConfigError, ConfigOption, parse_int, parse_settings
from peerd.plugin_loader import discover_factories, select_providers
from peerd.testing import RecordingProviderFactory

SCHEMA = {
    "slots": ConfigOption(parse_int(min=1), "4", "Upload slots.", "a whole number >= 1"),
}


def _settings(tmp_path, text: str = ""):
    return parse_settings(text, "test.ini", base_dir=tmp_path, environ={"HOME": str(tmp_path)})


def test_discover_returns_factories_by_name():
    """Explicitly listed plugins are returned keyed by their name."""
    files, relay = RecordingProviderFactory("files"), RecordingProviderFactory("relay")
    assert discover_factories([files, relay]) == {"files": files, "relay": relay}


def test_discover_rejects_two_plugins_with_one_name():
    """Two different plugins claiming one name is a ConfigError naming the name."""
    with pytest.raises(ConfigError, match="two installed plugins provide 'files'"):
        discover_factories([RecordingProviderFactory("files"), RecordingProviderFactory("files")])


def test_discover_rejects_a_malformed_plugin():
    """A plugin that does not provide IResourceProviderFactory is a ConfigError."""

    class NotAPlugin:
        name = "broken"

    with pytest.raises(ConfigError, match="is malformed"):
        discover_factories([NotAPlugin()])


def test_discover_rejects_a_plugin_with_a_bad_name():
    """A plugin whose name is not lowercase letters, digits, - and _ is a ConfigError."""
    with pytest.raises(ConfigError, match="invalid name 'Bad Name'"):
        discover_factories([RecordingProviderFactory("Bad Name")])


def test_real_discovery_over_peerd_plugins_succeeds():
    """Discovery over the installed peerd.plugins package works and yields a dict."""
    found = discover_factories()
    assert isinstance(found, dict)
    assert all(factory.name == name for name, factory in found.items())


def test_select_honours_enabled_by_default(tmp_path):
    """Without a section, providers run if and only if they are enabled by default."""
    on = RecordingProviderFactory("on", config_schema=SCHEMA)
    off = RecordingProviderFactory("off", enabled_by_default=False)
    selected = select_providers(_settings(tmp_path), {"on": on, "off": off})
    assert [choice.factory for choice in selected] == [on]
    assert selected[0].options == {"slots": 4}


def test_select_enabled_false_disables_and_true_enables(tmp_path):
    """``enabled = false`` turns a default provider off; ``enabled = yes`` turns one on."""
    on = RecordingProviderFactory("on")
    off = RecordingProviderFactory("off", enabled_by_default=False)
    text = "[provider:on]\nenabled = false\n[provider:off]\nenabled = yes\n"
    selected = select_providers(_settings(tmp_path, text), {"on": on, "off": off})
    assert [choice.factory for choice in selected] == [off]


def test_select_parses_options_with_the_schema(tmp_path):
    """A provider's section is parsed against its config_schema."""
    files = RecordingProviderFactory("files", config_schema=SCHEMA)
    selected = select_providers(
        _settings(tmp_path, "[provider:files]\nslots = 12\n"), {"files": files}
    )
    assert selected[0].options == {"slots": 12}


def test_select_rejects_a_section_for_a_missing_provider(tmp_path):
    """A [provider:NAME] section for a provider not installed names file, section and installed ones."""
    factories = {
        "files": RecordingProviderFactory("files"),
        "relay": RecordingProviderFactory("relay"),
    }
    with pytest.raises(ConfigError) as raised:
        select_providers(_settings(tmp_path, "[provider:nope]\nenabled = yes\n"), factories)
    message = str(raised.value)
    assert "test.ini" in message and "[provider:nope]" in message
    assert "installed: files, relay" in message
    assert raised.value.section == "provider:nope" and raised.value.source == "test.ini"


def test_select_rejects_a_bad_option_value_naming_the_key(tmp_path):
    """A bad value in a provider's section is a ConfigError naming the file, section and key."""
    files = RecordingProviderFactory("files", config_schema=SCHEMA)
    with pytest.raises(ConfigError) as raised:
        select_providers(_settings(tmp_path, "[provider:files]\nslots = many\n"), {"files": files})
    assert "test.ini" in str(raised.value) and "slots" in str(raised.value)
    assert raised.value.section == "provider:files" and raised.value.key == "slots"


def test_select_rejects_an_unknown_option(tmp_path):
    """A key not in the provider's schema is a ConfigError naming it."""
    files = RecordingProviderFactory("files", config_schema=SCHEMA)
    with pytest.raises(ConfigError) as raised:
        select_providers(_settings(tmp_path, "[provider:files]\nslotz = 3\n"), {"files": files})
    assert raised.value.key == "slotz"
