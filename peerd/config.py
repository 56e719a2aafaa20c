"""
The config file: INI text -> frozen, typed, validated settings.

:func:`load_settings` reads a file and hands its text to
:func:`parse_settings`, which parses it (no interpolation; ``#`` and ``;``
comments, also after a value), checks it against a whitelist and converts it
once into frozen dataclasses.  Nobody downstream sees a ``ConfigParser``.

:data:`DEFAULTS` describes every key of the core sections (``[peer]``,
``[network]``, ``[control]``) and is what validation uses.  A
``[provider:NAME]`` section is kept raw here (:class:`ProviderSection`) and
checked later against its plugin's ``config_schema`` with
:func:`validate_provider_options`, once plugins are discovered.

Every error is a :class:`ConfigError` whose message names the file, section
and key and says what was expected.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from peerd.config_values import (
    ConfigError,
    ConfigOption,
    did_you_mean,
    duration_between,
    escape_endpoint_value,
    format_size,
    parse_address_list,
    parse_bool,
    parse_duration,
    parse_int,
    parse_peer_id_set,
    parse_rate,
    parse_section,
    parse_server_endpoint,
    parse_size,
    parse_value,
    reject_unknown_keys,
    size_between,
    validate_provider_options,
)
from peerd.peerid import PeerAddress, PeerID

__all__ = [
    "DEFAULTS",
    "DEFAULT_SOURCE",
    "ConfigError",
    "ConfigOption",
    "ControlSettings",
    "NetworkSettings",
    "PeerSettings",
    "ProviderSection",
    "Settings",
    "control_socket_endpoint",
    "duration_between",
    "format_size",
    "load_settings",
    "parse_address_list",
    "parse_bool",
    "parse_duration",
    "parse_int",
    "parse_peer_id_set",
    "parse_rate",
    "parse_server_endpoint",
    "parse_settings",
    "parse_size",
    "size_between",
    "validate_provider_options",
]

DEFAULT_SOURCE = "<defaults>"
PROVIDER_PREFIX = "provider:"
_PROVIDER_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_NO_DEFAULT_SECTION = "\x00no-default-section"  # so that [DEFAULT] is just an unknown section


def _string(text: str) -> str:
    if not text.strip():
        raise ValueError("empty")
    return text.strip()


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.lower().strip("[]") for name in text.split())
    for name in names:
        if not re.fullmatch(r"[a-z0-9.:-]+", name):
            raise ValueError(f"{name!r} is not a host name")
    return names


_DERIVED = ""  # the default of an option computed from other settings


def _section(**options: ConfigOption) -> Mapping[str, ConfigOption]:
    return MappingProxyType(options)


_Opt = ConfigOption
_positive = duration_between(0.01)

# The whitelist of the core sections: key -> (parser, default, doc, expected).
# fmt: off
DEFAULTS: Mapping[str, Mapping[str, ConfigOption]] = MappingProxyType({
    "peer": _section(
        data_dir=_Opt(_string, "~/.peerd",
            "Where the identity and all state live; a relative path is relative to this "
            "file's directory.  Default: $PEERD_HOME if set, else ~/.peerd.",
            "a directory path"),
        listen=_Opt(parse_server_endpoint, "tcp:7845",
            "Twisted server endpoint for peer connections (peerd adds TLS itself), "
            "or 'none' to only dial out.",
            "a Twisted server endpoint like tcp:7845, or none"),
        worker_threads=_Opt(parse_int(min=1, max=64), "4",
            "Threads for hashing and bulk disk I/O.", "a whole number from 1 to 64"),
    ),
    "network": _section(
        peers=_Opt(parse_address_list, "",
            "Peers to dial at start and keep connected: [PEERID@]host:port, separated "
            "by spaces or newlines.",
            "addresses like PEERID@host:port or host:port"),
        max_connections=_Opt(parse_int(min=1), "64",
            "Most peer connections at once, inbound and outbound together.",
            "a whole number >= 1"),
        allow=_Opt(parse_peer_id_set, "any",
            "'any', or the PeerIDs allowed to connect (separated by spaces).",
            "'any' or PeerIDs separated by spaces"),
        announce=_Opt(parse_address_list, "",
            "host:port addresses to advertise to other peers instead of those derived "
            "from listen (behind NAT or port forwarding).",
            "addresses like host:port"),
        keepalive_interval=_Opt(_positive, "15s",
            "Send a keepalive after this long without traffic.", "a duration like 15s"),
        idle_timeout=_Opt(_positive, "60s",
            "Close a connection silent for this long; must exceed keepalive_interval.",
            "a duration like 60s, longer than keepalive_interval"),
        handshake_timeout=_Opt(_positive, "10s",
            "Drop a connection whose TLS and peerd handshake take longer.",
            "a duration like 10s"),
        max_frame_size=_Opt(size_between(16 << 10, 16 << 20), "256KiB",
            "Largest wire frame accepted or sent.", "a size from 16KiB to 16MiB"),
        stream_window=_Opt(size_between(64 << 10, 64 << 20), "4MiB",
            "Bytes a peer may send on one stream before we grant more (flow control).",
            "a size from 64KiB to 64MiB"),
        max_streams=_Opt(parse_int(min=1, max=65535), "256",
            "Most open streams per connection.", "a whole number from 1 to 65535"),
        backoff_initial=_Opt(_positive, "1s",
            "First wait before redialing a lost peer; doubles on each failure.",
            "a duration like 1s"),
        backoff_max=_Opt(_positive, "300s",
            "Longest wait between redials; at least backoff_initial.",
            "a duration like 5m, at least backoff_initial"),
    ),
    "control": _section(
        listen=_Opt(parse_server_endpoint, _DERIVED,
            "Twisted server endpoint of the control API (used by peerctl), or 'none'.  "
            "Default: unix:<data_dir>/control.sock:mode=600.",
            "a Twisted server endpoint like unix:/path/control.sock:mode=600, or none"),
        web=_Opt(parse_server_endpoint, "tcp:0:interface=127.0.0.1",
            "Twisted server endpoint of the web dashboard and API (login with the URL "
            "'peerctl dashboard' prints), or 'none'.  Default: a free port on loopback.",
            "a Twisted server endpoint like tcp:7846:interface=127.0.0.1, or none"),
        web_hosts=_Opt(_names, "",
            "Host names the web endpoint answers to besides loopback addresses and "
            "localhost (e.g. the name of a reverse proxy), separated by spaces.",
            "host names separated by spaces"),
        metrics=_Opt(parse_server_endpoint, "none",
            "A second endpoint serving only /metrics with no login, for Prometheus; "
            "keep it on loopback.  Example: tcp:9846:interface=127.0.0.1",
            "a Twisted server endpoint like tcp:9846:interface=127.0.0.1, or none"),
    ),
})
# fmt: on


@dataclass(frozen=True)
class PeerSettings:
    """``[peer]``: who and where this peer is."""

    data_dir: Path
    listen: str | None
    worker_threads: int


@dataclass(frozen=True)
class NetworkSettings:
    """``[network]``: connections, limits and timeouts (durations in seconds)."""

    peers: tuple[PeerAddress, ...]
    max_connections: int
    allow: frozenset[PeerID] | None
    announce: tuple[PeerAddress, ...]
    keepalive_interval: float
    idle_timeout: float
    handshake_timeout: float
    max_frame_size: int
    stream_window: int
    max_streams: int
    backoff_initial: float
    backoff_max: float


@dataclass(frozen=True)
class ControlSettings:
    """``[control]``: the local control API."""

    listen: str | None
    web: str | None = None
    web_hosts: tuple[str, ...] = ()
    metrics: str | None = None


@dataclass(frozen=True)
class ProviderSection:
    """
    One ``[provider:NAME]`` section, unvalidated: its plugin's schema is known
    only after discovery (see :func:`validate_provider_options`).
    """

    name: str
    enabled: bool | None
    options: Mapping[str, str]
    source: str

    @property
    def section(self) -> str:
        """The section's name as written, ``provider:NAME``."""
        return PROVIDER_PREFIX + self.name


@dataclass(frozen=True)
class Settings:
    """Everything the config file (and command line) decided."""

    source: str
    peer: PeerSettings
    network: NetworkSettings
    control: ControlSettings
    providers: Mapping[str, ProviderSection]


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    data_dir: str | None = None,
    listen: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """
    Read the config file at ``path`` (all defaults when ``None``) and parse
    it with :func:`parse_settings`; relative paths in it are relative to its
    directory.

    :raises ConfigError: unreadable file or bad content.
    """
    if path is None:
        return parse_settings(
            "",
            DEFAULT_SOURCE,
            base_dir=Path.cwd(),
            data_dir=data_dir,
            listen=listen,
            environ=environ,
        )
    source = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(
            f"{source}: cannot read config file: {e.strerror or e}", source=source
        ) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{source}: cannot read config file: not UTF-8 text (byte {e.start})", source=source
        ) from None
    return parse_settings(
        text,
        source,
        base_dir=Path(os.path.abspath(path)).parent,
        data_dir=data_dir,
        listen=listen,
        environ=environ,
    )


def parse_settings(
    text: str,
    source: str,
    *,
    base_dir: Path,
    data_dir: str | None = None,
    listen: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """
    Parse config ``text`` read from ``source`` (a name for messages).

    :param base_dir: what a relative ``[peer] data_dir`` is relative to.
    :param data_dir: ``--data-dir``; beats ``[peer] data_dir``, which beats
        ``$PEERD_HOME``, which beats ``~/.peerd``.  Relative to the current
        directory.
    :param listen: ``--listen``; beats ``[peer] listen``.
    :param environ: for ``PEERD_HOME`` and ``HOME``; ``os.environ`` if ``None``.
    :raises ConfigError: naming source, section and key.
    """
    environ = os.environ if environ is None else environ
    sections = _read_ini(text, source)
    providers = {}
    for name, raw in sections.items():
        if name in DEFAULTS:
            reject_unknown_keys(source, name, DEFAULTS[name].keys(), raw)
        elif name.startswith(PROVIDER_PREFIX):
            section = _provider_section(source, name, raw)
            providers[section.name] = section
        else:
            known = ", ".join([*DEFAULTS, PROVIDER_PREFIX + "NAME"])
            raise ConfigError(
                f"{source}: unknown section [{name}] (known: {known})"
                + did_you_mean(name, DEFAULTS, "[{}]"),
                source=source,
                section=name,
            )

    peer_raw = sections.get("peer", {})
    if listen is not None:
        peer_raw = {key: value for key, value in peer_raw.items() if key != "listen"}
    peer_schema = {key: option for key, option in DEFAULTS["peer"].items() if key != "data_dir"}
    peer = parse_section(source, "peer", peer_schema, peer_raw)
    if listen is not None:
        peer["listen"] = parse_value("--listen ", listen, peer_schema["listen"], source=source)
    home = _data_dir(source, peer_raw, base_dir, data_dir, environ)

    network_raw = sections.get("network", {})
    network = parse_section(source, "network", DEFAULTS["network"], network_raw)
    _check_order(source, network_raw, "keepalive_interval", "idle_timeout", network, strict=True)
    _check_order(source, network_raw, "backoff_initial", "backoff_max", network, strict=False)

    control_raw = dict(sections.get("control", {}))
    control_raw.setdefault("listen", control_socket_endpoint(home))
    control = parse_section(source, "control", DEFAULTS["control"], control_raw)

    return Settings(
        source=source,
        peer=PeerSettings(data_dir=home, **peer),
        network=NetworkSettings(**network),
        control=ControlSettings(**control),
        providers=MappingProxyType(providers),
    )


def control_socket_endpoint(data_dir: Path) -> str:
    """The default control endpoint: ``unix:<data_dir>/control.sock:mode=600``."""
    return f"unix:{escape_endpoint_value(str(data_dir / 'control.sock'))}:mode=600"


def _read_ini(text: str, source: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(
        interpolation=None,
        delimiters=("=",),  # endpoint strings are full of ':'
        comment_prefixes=("#", ";"),
        inline_comment_prefixes=("#", ";"),
        default_section=_NO_DEFAULT_SECTION,
        strict=True,
    )
    try:
        parser.read_string(text, source=source)
    except configparser.MissingSectionHeaderError as e:
        message = f"line {e.lineno}: {e.line.strip()!r} comes before any [section] header"
    except configparser.DuplicateSectionError as e:
        message = f"line {e.lineno}: section [{e.section}] appears twice"
    except configparser.DuplicateOptionError as e:
        message = f"line {e.lineno}: [{e.section}] {e.option} is set twice"
    except configparser.ParsingError as e:
        lineno, line = e.errors[0]  # line is the repr() of the raw line
        message = (
            f"line {lineno}: cannot parse {ast.literal_eval(line).strip()!r} (expected key = value)"
        )
    except configparser.Error as e:
        message = str(e)
    else:
        return {name: dict(parser.items(name)) for name in parser.sections()}
    raise ConfigError(f"{source}, {message}", source=source)


def _check_order(
    source: str,
    raw: Mapping[str, str],
    first: str,
    second: str,
    values: Mapping[str, object],
    *,
    strict: bool,
) -> None:
    """Require ``[network] second`` > (or >= unless ``strict``) ``first``."""
    low, high = values[first], values[second]
    if high > low or (not strict and high == low):
        return
    text = raw.get(second, DEFAULTS["network"][second].default)
    relation = "longer than" if strict else "at least"
    default = "" if second in raw else "(default) "
    raise ConfigError(
        f"{source}: [network] {second} = {default}{text!r}: expected a duration {relation} "
        f"{first} ({low:g}s)",
        source=source,
        section="network",
        key=second,
    )


def _data_dir(
    source: str,
    peer_raw: Mapping[str, str],
    base_dir: Path,
    override: str | None,
    environ: Mapping[str, str],
) -> Path:
    """``--data-dir`` > ``[peer] data_dir`` > ``$PEERD_HOME`` > ``~/.peerd``, made absolute."""
    option = DEFAULTS["peer"]["data_dir"]
    if override is not None:
        text = parse_value("--data-dir ", override, option, source=source)
        base = Path.cwd()
    elif "data_dir" in peer_raw:
        prefix = f"{source}: [peer] data_dir = "
        text = parse_value(
            prefix, peer_raw["data_dir"], option, source=source, section="peer", key="data_dir"
        )
        base = base_dir
    elif environ.get("PEERD_HOME", "").strip():
        text, base = environ["PEERD_HOME"].strip(), Path.cwd()
    else:
        text, base = option.default, Path.cwd()
    if text == "~" or text.startswith("~/"):
        home = environ.get("HOME") or os.path.expanduser("~")
        path = Path(home + text[1:])
    else:
        path = Path(os.path.expanduser(text))
    return Path(os.path.normpath(base / path))


def _provider_section(source: str, section: str, raw: Mapping[str, str]) -> ProviderSection:
    name = section[len(PROVIDER_PREFIX) :]
    if not _PROVIDER_NAME.fullmatch(name):
        raise ConfigError(
            f"{source}: section [{section}]: expected a provider name of lowercase letters, "
            "digits, '-' and '_', starting with a letter",
            source=source,
            section=section,
        )
    enabled = None
    if "enabled" in raw:
        option = ConfigOption(parse_bool, "", "", "yes or no")
        prefix = f"{source}: [{section}] enabled = "
        enabled = parse_value(
            prefix, raw["enabled"], option, source=source, section=section, key="enabled"
        )
    options = {key: value for key, value in raw.items() if key != "enabled"}
    return ProviderSection(name, enabled, MappingProxyType(options), source)
