"""Tests for peerd.config: INI text -> frozen, typed, validated settings."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor

from peerd.config import (
    DEFAULTS,
    ConfigError,
    ConfigOption,
    Settings,
    format_size,
    load_settings,
    parse_bool,
    parse_duration,
    parse_int,
    parse_rate,
    parse_settings,
    parse_size,
    validate_provider_options,
)
from peerd.peerid import PeerAddress, PeerID

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
HOME = {"HOME": "/home/user"}
ID_A = PeerID.from_public_key_der(b"peer a")
ID_B = PeerID.from_public_key_der(b"peer b")


def parse(text: str, **kwargs) -> Settings:
    kwargs.setdefault("environ", HOME)
    return parse_settings(text, "conf/a.ini", base_dir=Path("/etc/peerd"), **kwargs)


def error_of(text: str, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, **kwargs)
    return info.value


# -- defaults ---------------------------------------------------------------


def test_defaults_without_file() -> None:
    """With no file every setting has its documented default and ~ is $HOME."""
    settings = load_settings(environ=HOME)
    assert settings.source == "<defaults>"
    assert settings.peer.data_dir == Path("/home/user/.peerd")
    assert settings.peer.listen == "tcp:7845"
    assert settings.peer.worker_threads == 4
    network = settings.network
    assert network.peers == () and network.announce == ()
    assert network.allow is None
    assert network.max_connections == 64
    assert (network.keepalive_interval, network.idle_timeout) == (15.0, 60.0)
    assert network.handshake_timeout == 10.0
    assert network.max_frame_size == 256 * 1024
    assert network.stream_window == 4 * 1024 * 1024
    assert network.max_streams == 256
    assert (network.backoff_initial, network.backoff_max) == (1.0, 300.0)
    assert settings.control.listen == "unix:/home/user/.peerd/control.sock:mode=600"
    assert dict(settings.providers) == {}


def test_peerd_home_sets_data_dir_and_control_socket() -> None:
    """$PEERD_HOME is the data dir when neither file nor option names one."""
    settings = load_settings(environ={"PEERD_HOME": "/var/lib/peerd", **HOME})
    assert settings.peer.data_dir == Path("/var/lib/peerd")
    assert settings.control.listen == "unix:/var/lib/peerd/control.sock:mode=600"


def test_control_socket_path_is_escaped() -> None:
    """':' and '=' in the data dir are escaped so Twisted reads back the same path."""
    settings = load_settings(environ={"PEERD_HOME": "/srv/a:b=c"})
    assert settings.control.listen == r"unix:/srv/a\:b\=c/control.sock:mode=600"
    reactor = MemoryReactor()
    serverFromString(reactor, settings.control.listen).listen(Factory())
    assert reactor.unixServers[0][0] == "/srv/a:b=c/control.sock"


def test_settings_are_frozen() -> None:
    """Settings and their parts cannot be changed after parsing."""
    settings = parse("[provider:files]\nslots = 4\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.peer.worker_threads = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.providers["files"].options["slots"] = "5"  # type: ignore[index]
    with pytest.raises(TypeError):
        settings.providers["x"] = None  # type: ignore[index]


# -- every key --------------------------------------------------------------

FULL = f"""
[peer]
data_dir = /srv/peerd
listen = tcp:7000:interface=127.0.0.1
worker_threads = 8

[network]
peers = {ID_A}@10.0.0.1:7845
    example.org:7846   # a comment after a value
    [::1]:7847
max_connections = 10
allow = {ID_A} {ID_B}
announce = 203.0.113.5:7845
keepalive_interval = 500ms
idle_timeout = 2m
handshake_timeout = 1.5s
max_frame_size = 1MiB
stream_window = 4MiB
max_streams = 32
backoff_initial = 2
backoff_max = 1h

; a semicolon comment
[control]
listen = tcp:7900:interface=127.0.0.1
"""


def test_every_key_is_parsed() -> None:
    """Each key of each core section is converted to its typed value."""
    settings = parse(FULL)
    assert settings.source == "conf/a.ini"
    assert settings.peer.data_dir == Path("/srv/peerd")
    assert settings.peer.listen == "tcp:7000:interface=127.0.0.1"
    assert settings.peer.worker_threads == 8
    network = settings.network
    assert network.peers == (
        PeerAddress("10.0.0.1", 7845, ID_A),
        PeerAddress("example.org", 7846),
        PeerAddress("::1", 7847),
    )
    assert network.max_connections == 10
    assert network.allow == frozenset({ID_A, ID_B})
    assert network.announce == (PeerAddress("203.0.113.5", 7845),)
    assert network.keepalive_interval == 0.5
    assert network.idle_timeout == 120.0
    assert network.handshake_timeout == 1.5
    assert network.max_frame_size == 1 << 20
    assert network.stream_window == 4 << 20
    assert network.max_streams == 32
    assert (network.backoff_initial, network.backoff_max) == (2.0, 3600.0)
    assert settings.control.listen == "tcp:7900:interface=127.0.0.1"


def test_none_and_any() -> None:
    """'none' turns off a listener; 'any' (any case) lifts the allow list."""
    settings = parse("[peer]\nlisten = none\n[control]\nlisten = None\n[network]\nallow = ANY\n")
    assert settings.peer.listen is None
    assert settings.control.listen is None
    assert settings.network.allow is None


def test_no_interpolation() -> None:
    """'%' is literal: interpolation is off."""
    settings = parse("[provider:x]\npattern = %(name)s 100%\n")
    assert settings.providers["x"].options["pattern"] == "%(name)s 100%"


def test_comments_inside_a_multi_line_value() -> None:
    """A commented-out line inside a list (e.g. one peer) is skipped, not the end of it."""
    text = "[network]\npeers = 1.1.1.1:1\n#    3.3.3.3:3\n    2.2.2.2:2 ; inline\n"
    assert [str(a) for a in parse(text).network.peers] == ["1.1.1.1:1", "2.2.2.2:2"]


def test_keys_are_case_insensitive() -> None:
    """Keys are folded to lower case, like configparser does."""
    assert parse("[peer]\nWorker_Threads = 2\n").peer.worker_threads == 2


# -- errors -----------------------------------------------------------------


def test_bad_value_message() -> None:
    """A bad value names file, section, key, the value and what was expected."""
    error = error_of("[network]\nmax_connections = lots\n")
    assert str(error).startswith(
        "conf/a.ini: [network] max_connections = 'lots': expected a whole number >= 1"
    )
    assert (error.source, error.section, error.key) == ("conf/a.ini", "network", "max_connections")


def test_unknown_section_message() -> None:
    """An unknown section lists the known ones and suggests the closest."""
    error = error_of("[netwrok]\npeers =\n")
    assert str(error).startswith(
        "conf/a.ini: unknown section [netwrok] (known: peer, network, control, provider:NAME)"
    )
    assert "did you mean [network]?" in str(error)


def test_unknown_key_message() -> None:
    """An unknown key lists the section's keys and suggests the closest."""
    error = error_of("[peer]\nlisen = tcp:1\n")
    assert str(error).startswith(
        "conf/a.ini: [peer] unknown key 'lisen' (known: data_dir, listen, worker_threads)"
    )
    assert "did you mean 'listen'?" in str(error)


def test_default_section_is_not_special() -> None:
    """[DEFAULT] is an unknown section, not values leaking into every section."""
    assert "unknown section [DEFAULT]" in str(error_of("[DEFAULT]\nlisten = tcp:1\n"))


@pytest.mark.parametrize(
    ("text", "section", "key", "detail"),
    [
        ("[peer]\nworker_threads = 65\n", "peer", "worker_threads", "above the maximum 64"),
        ("[peer]\nworker_threads = 0\n", "peer", "worker_threads", "below the minimum 1"),
        ("[peer]\ndata_dir =\n", "peer", "data_dir", "expected a directory path"),
        ("[peer]\nlisten = bogus:1\n", "peer", "listen", "Unknown endpoint type: 'bogus'"),
        ("[peer]\nlisten = tcp:port\n", "peer", "listen", "invalid literal"),
        ("[control]\nlisten = tcp:1:foo=2\n", "control", "listen", "foo"),
        ("[network]\npeers = 1.2.3.4\n", "network", "peers", "is not host:port"),
        ("[network]\npeers = nobody@1.2.3.4:5\n", "network", "peers", "is not a PeerID"),
        ("[network]\nallow = ABC\n", "network", "allow", "is not a PeerID"),
        ("[network]\nallow =\n", "network", "allow", "'any'"),
        ("[network]\nannounce = x:0\n", "network", "announce", "out of range"),
        ("[network]\nmax_frame_size = 8KiB\n", "network", "max_frame_size", "below the minimum"),
        ("[network]\nmax_frame_size = 32MiB\n", "network", "max_frame_size", "16MiB"),
        ("[network]\nstream_window = 1XB\n", "network", "stream_window", "unknown unit 'XB'"),
        ("[network]\nmax_streams = 1.5\n", "network", "max_streams", "not a whole number"),
        ("[network]\nhandshake_timeout = soon\n", "network", "handshake_timeout", "duration"),
        ("[network]\nkeepalive_interval = 0\n", "network", "keepalive_interval", "minimum"),
        ("[network]\nidle_timeout = 15s\n", "network", "idle_timeout", "keepalive_interval"),
        ("[network]\nkeepalive_interval = 2m\n", "network", "idle_timeout", "(default) '60s'"),
        ("[network]\nbackoff_max = 500ms\n", "network", "backoff_max", "backoff_initial"),
        ("[provider:files]\nenabled = maybe\n", "provider:files", "enabled", "yes or no"),
    ],
)
def test_bad_values_name_file_section_and_key(text, section, key, detail) -> None:
    """Each bad value is reported with file, [section], key and a reason."""
    error = error_of(text)
    message = str(error)
    assert message.startswith(f"conf/a.ini: [{section}] {key} = "), message
    assert detail in message
    assert (error.source, error.section, error.key) == ("conf/a.ini", section, key)


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("listen = tcp:1\n", "conf/a.ini, line 1: 'listen = tcp:1' comes before any [section]"),
        ("[peer]\n[peer]\n", "conf/a.ini, line 2: section [peer] appears twice"),
        ("[peer]\nlisten = a\nlisten = b\n", "conf/a.ini, line 3: [peer] listen is set twice"),
        ("[peer]\nlisten tcp:1\n", "conf/a.ini, line 2: cannot parse 'listen tcp:1'"),
    ],
)
def test_syntax_errors_name_file_and_line(text, detail) -> None:
    """INI syntax errors name the file and the line."""
    assert str(error_of(text)).startswith(detail)


def test_bad_provider_name() -> None:
    """Provider section names must be lowercase letters, digits, '-' and '_'."""
    message = str(error_of("[provider:Files]\n"))
    assert message.startswith("conf/a.ini: section [provider:Files]: expected a provider name")


def test_missing_file(tmp_path: Path) -> None:
    """An unreadable file is reported with its name and the OS's reason."""
    path = tmp_path / "a.ini"
    with pytest.raises(ConfigError) as info:
        load_settings(str(path))
    assert str(info.value) == f"{path}: cannot read config file: No such file or directory"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 is reported, not a UnicodeDecodeError."""
    path = tmp_path / "a.ini"
    path.write_bytes(b"[peer]\n# \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(path)


# -- overrides and paths ----------------------------------------------------


def test_data_dir_option_beats_file_and_environment() -> None:
    """--data-dir wins over [peer] data_dir and $PEERD_HOME."""
    settings = parse(
        "[peer]\ndata_dir = /from/file\n",
        data_dir="/from/option",
        environ={"PEERD_HOME": "/from/env"},
    )
    assert settings.peer.data_dir == Path("/from/option")
    assert settings.control.listen == "unix:/from/option/control.sock:mode=600"


def test_file_data_dir_beats_environment() -> None:
    """[peer] data_dir wins over $PEERD_HOME."""
    settings = parse("[peer]\ndata_dir = /from/file\n", environ={"PEERD_HOME": "/from/env"})
    assert settings.peer.data_dir == Path("/from/file")


def test_relative_data_dir_in_file_is_relative_to_the_file(tmp_path: Path) -> None:
    """A relative data_dir in a file is resolved against the file's directory."""
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "a.ini"
    path.write_text("[peer]\ndata_dir = ../data/a\n")
    settings = load_settings(path, environ=HOME)
    assert settings.source == str(path)
    assert settings.peer.data_dir == tmp_path / "data" / "a"


def test_relative_data_dir_option_is_relative_to_cwd() -> None:
    """A relative --data-dir (and $PEERD_HOME) is resolved against the current directory."""
    assert parse("", data_dir="d").peer.data_dir == Path.cwd() / "d"
    assert parse("", environ={"PEERD_HOME": "e"}).peer.data_dir == Path.cwd() / "e"


def test_tilde_expands_with_home_from_environ() -> None:
    """'~' in data_dir is the HOME of the given environment."""
    assert parse("[peer]\ndata_dir = ~/p\n").peer.data_dir == Path("/home/user/p")


def test_listen_option_beats_file() -> None:
    """--listen wins over [peer] listen, even a bad one."""
    settings = parse("[peer]\nlisten = bogus\n", listen="tcp:9000")
    assert settings.peer.listen == "tcp:9000"


def test_bad_command_line_values_name_the_option() -> None:
    """Errors in --listen and --data-dir name the option."""
    assert str(error_of("", listen="bogus:1")).startswith("--listen 'bogus:1': expected")
    assert str(error_of("", data_dir=" ")).startswith("--data-dir ' ': expected a directory")


# -- providers --------------------------------------------------------------


def test_provider_sections_are_kept_raw() -> None:
    """[provider:NAME] sections keep raw strings; 'enabled' is parsed apart."""
    settings = parse(
        "[provider:files]\nenabled = no\nslots = 4\n[provider:relay]\n[provider:my-x_1]\nenabled=on\n"
    )
    files = settings.providers["files"]
    assert (files.name, files.enabled, files.source) == ("files", False, "conf/a.ini")
    assert dict(files.options) == {"slots": "4"}
    assert files.section == "provider:files"
    assert settings.providers["relay"].enabled is None
    assert settings.providers["my-x_1"].enabled is True


SCHEMA = {
    "slots": ConfigOption(parse_int(min=1), "4", "Upload slots.", "a whole number >= 1"),
    "rate": ConfigOption(parse_rate, "0", "Upload limit.", "a rate like 1MiB/s"),
}


def test_validate_provider_options_parses_and_fills_defaults() -> None:
    """Given keys are parsed; missing ones take the parsed default; 'enabled' is ignored."""
    options = validate_provider_options(
        "a.ini", "provider:files", SCHEMA, {"rate": "2MiB/s", "enabled": "yes"}
    )
    assert options == {"slots": 4, "rate": 2 << 20}


def test_validate_provider_options_unknown_key() -> None:
    """An unknown provider key names source, section and key."""
    with pytest.raises(ConfigError) as info:
        validate_provider_options("a.ini", "provider:files", SCHEMA, {"slot": "3"})
    assert str(info.value).startswith(
        "a.ini: [provider:files] unknown key 'slot' (known: enabled, rate, slots)"
    )
    assert info.value.key == "slot"


def test_validate_provider_options_bad_value() -> None:
    """A bad provider value names source, section, key and what was expected."""
    with pytest.raises(ConfigError) as info:
        validate_provider_options("a.ini", "provider:files", SCHEMA, {"slots": "0"})
    assert str(info.value).startswith(
        "a.ini: [provider:files] slots = '0': expected a whole number >= 1"
    )


# -- value parsers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("Yes", True), ("on", True), ("1", True)]
    + [("false", False), ("NO", False), ("off", False), ("0", False)],
)
def test_parse_bool(text, value) -> None:
    """The usual yes/no spellings are accepted in any case."""
    assert parse_bool(text) is value


@pytest.mark.parametrize(
    ("text", "value"),
    [("1048576", 1048576), ("64KiB", 65536), ("1MiB", 1 << 20), ("2GiB", 2 << 30)]
    + [("10MB", 10_000_000), ("0", 0), ("1.5 KiB", 1536), ("3kb", 3000), ("7B", 7)],
)
def test_parse_size(text, value) -> None:
    """Sizes take binary and decimal units."""
    assert parse_size(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0)]
    + [("500ms", 0.5), ("0.25s", 0.25)],
)
def test_parse_duration(text, value) -> None:
    """Durations become float seconds."""
    assert parse_duration(text) == value


def test_parse_rate() -> None:
    """Rates are sizes per second, with an optional '/s'; 0 or unlimited is no limit."""
    assert parse_rate("512KiB") == 512 * 1024
    assert parse_rate("1MiB/s") == 1 << 20
    assert parse_rate("0") == parse_rate("unlimited") == 0


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        (parse_bool, "maybe"),
        (parse_int(), "12x"),
        (parse_int(), ""),
        (parse_int(max=3), "4"),
        (parse_size, "-1"),
        (parse_size, "0.1KiB"),
        (parse_size, "5 parsecs"),
        (parse_duration, "1w"),
        (parse_duration, "-3s"),
        (parse_duration, "nan"),
        (parse_rate, "fast"),
    ],
)
def test_parsers_reject_with_a_reason(parser, text) -> None:
    """Bad text raises ValueError with a non-empty reason."""
    with pytest.raises(ValueError, match=r".+"):
        parser(text)


@given(st.integers(min_value=0, max_value=10**9))
def test_size_kib_property(n: int) -> None:
    """'{n}KiB' is n * 1024 bytes, '{n}MiB' is n * 2**20."""
    assert parse_size(f"{n}KiB") == n * 1024
    assert parse_size(f"{n}MiB") == n << 20


@given(st.integers(min_value=0, max_value=2**50))
def test_format_size_round_trips(n: int) -> None:
    """format_size gives text that parse_size reads back to the same count."""
    assert parse_size(format_size(n)) == n


@given(st.integers(min_value=0, max_value=10**7))
def test_duration_ms_property(n: int) -> None:
    """'{n}ms' is n / 1000 seconds and '{n}m' is 60 * n."""
    assert parse_duration(f"{n}ms") == pytest.approx(n / 1000)
    assert parse_duration(f"{n}m") == 60.0 * n


@given(st.integers(), st.integers(min_value=-100, max_value=100))
def test_parse_int_bounds_property(n: int, low: int) -> None:
    """parse_int accepts exactly the numbers inside its bounds."""
    parser = parse_int(min=low, max=low + 50)
    if low <= n <= low + 50:
        assert parser(str(n)) == n
    else:
        with pytest.raises(ValueError):
            parser(str(n))


def test_every_default_parses() -> None:
    """Each core option's textual default is valid input (an empty default is derived)."""
    for options in DEFAULTS.values():
        for option in options.values():
            if option.default:
                option.parse(option.default)


# -- conf/ ------------------------------------------------------------------

CONF_FILES = [CONF / "peerd.ini", *sorted((CONF / "local").glob("*.ini"))]


@pytest.mark.parametrize("path", CONF_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_configs_parse(path: Path) -> None:
    """Every example config in conf/ loads without error."""
    load_settings(path, environ=HOME)


def test_example_config_equals_defaults() -> None:
    """conf/peerd.ini (all commented out) gives exactly the defaults."""
    example = load_settings(CONF / "peerd.ini", environ=HOME)
    defaults = load_settings(environ=HOME)
    assert dataclasses.replace(example, source=defaults.source) == defaults


def test_example_config_documents_every_key() -> None:
    """conf/peerd.ini shows '# key = ...' for every core key, in its own section."""
    text = (CONF / "peerd.ini").read_text()
    chunks = re.split(r"^#?\s*\[([^\]]+)\]\s*$", text, flags=re.MULTILINE)
    documented = dict(zip(chunks[1::2], chunks[2::2], strict=True))
    for section, options in DEFAULTS.items():
        for key in options:
            assert re.search(rf"^# {key} =", documented[section], re.MULTILINE), (
                f"[{section}] {key}"
            )
    assert "[provider:" in text


def test_local_network_configs() -> None:
    """conf/local holds three peers on 127.0.0.1: B dials A; C dials A and B."""
    peers = {
        name: load_settings(CONF / "local" / f"peer-{name}.ini", environ=HOME) for name in "abc"
    }
    for name, port in zip("abc", (7851, 7852, 7853), strict=True):
        assert peers[name].peer.listen == f"tcp:{port}:interface=127.0.0.1"
        assert peers[name].peer.data_dir == CONF / "local" / "data" / name
    a, b = PeerAddress("127.0.0.1", 7851), PeerAddress("127.0.0.1", 7852)
    assert peers["a"].network.peers == ()
    assert peers["b"].network.peers == (a,)
    assert peers["c"].network.peers == (a, b)


def test_systemd_unit() -> None:
    """conf/peerd.service runs twistd in the foreground as user peerd, hardened."""
    unit = (CONF / "peerd.service").read_text().splitlines()
    for line in [
        "ExecStart=/usr/bin/env twistd --nodaemon --pidfile= peerd --config /etc/peerd/peerd.ini",
        "User=peerd",
        "Environment=PEERD_HOME=/var/lib/peerd",
        "StateDirectory=peerd",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ]:
        assert line in unit


def test_parser_factory_passed_as_parser_is_a_clear_error() -> None:
    """``ConfigOption(parse_int, ...)`` (a factory, not a parser) says how to call it."""
    from peerd.config import ConfigOption, duration_between, parse_int

    with pytest.raises(TypeError, match=r"parse_int makes a parser.*parse_int\(min=1\)"):
        ConfigOption(parse_int, "4", "workers", "a whole number")
    with pytest.raises(TypeError, match="duration_between makes a parser"):
        ConfigOption(duration_between, "1s", "a timeout", "a duration")
    assert ConfigOption(parse_int(min=1), "4", "workers", "a whole number").parse("5") == 5
