"""
Config values: :class:`ConfigOption`, the value parsers, and checking one
section against a schema.

Every parser takes the text of one INI value and returns a typed value, or
raises :class:`ValueError` with a short reason; :func:`parse_value` turns that
into a :class:`ConfigError` that names file, section and key and says what
was expected.  Provider plugins use these in their ``config_schema``;
:mod:`peerd.config` re-exports them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from peerd.peerid import InvalidAddress, InvalidPeerID, PeerAddress, PeerID


@dataclass(frozen=True)
class ConfigOption:
    """
    One allowed key of a config section.

    :ivar parse: text -> value; raises ``ValueError`` with a short reason.
    :ivar default: the textual default, parsed like user input.  An empty
        default on a core option means "derived from other settings" (see
        its ``doc``).
    :ivar doc: one or two sentences for humans (and ``conf/peerd.ini``).
    :ivar expected: what a good value looks like, for error messages
        ("a size like 64MiB").
    """

    parse: Callable[[str], object]
    default: str
    doc: str
    expected: str

    def __post_init__(self) -> None:
        if getattr(self.parse, "makes_parser", False):
            name = self.parse.__name__
            raise TypeError(
                f"ConfigOption: {name} makes a parser, it is not one: "
                f"write {name}(...) (for example parse_int(min=1) or parse_int())"
            )


def makes_parser(factory: Callable[..., Callable[[str], object]]) -> Callable:
    """Mark ``factory`` as a maker of parsers, so that passing it as one is a clear error."""
    factory.makes_parser = True  # type: ignore[attr-defined]
    return factory


class ConfigError(Exception):
    """
    The configuration is unusable.  ``str(error)`` is the message for the
    user; ``source``, ``section`` and ``key`` are set where they apply.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        section: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.source = source
        self.section = section
        self.key = key


def validate_provider_options(
    source: str, section: str, schema: Mapping[str, ConfigOption], raw: Mapping[str, str]
) -> dict[str, object]:
    """
    Check a provider's raw options against its plugin's ``config_schema``:
    every schema key is in the result, parsed (missing keys take the parsed
    default).  An ``enabled`` key in ``raw`` is ignored.

    :raises ConfigError: an unknown key or a bad value, naming source,
        section and key.
    """
    raw = {key: value for key, value in raw.items() if key != "enabled"}
    reject_unknown_keys(source, section, [*schema, "enabled"], raw)
    return parse_section(source, section, schema, raw)


def reject_unknown_keys(
    source: str, section: str, known: Iterable[str], raw: Mapping[str, str]
) -> None:
    """Raise :class:`ConfigError` for the first key of ``raw`` not in ``known``."""
    known = list(known)
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"{source}: [{section}] unknown key {key!r} (known: {', '.join(sorted(known))})"
                + did_you_mean(key, known, "{!r}"),
                source=source,
                section=section,
                key=key,
            )


def did_you_mean(word: str, known: Iterable[str], form: str) -> str:
    """``"; did you mean X?"`` (``X`` is ``form`` filled with a close match), or ``""``."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f"; did you mean {form.format(close[0])}?" if close else ""


def parse_value(
    prefix: str,
    text: str,
    option: ConfigOption,
    *,
    source: str,
    section: str | None = None,
    key: str | None = None,
) -> object:
    """
    ``option.parse(text)``; a ``ValueError`` becomes a :class:`ConfigError`
    reading ``{prefix}{text!r}: expected {option.expected} ({reason})``.
    """
    try:
        return option.parse(text)
    except ValueError as e:
        raise ConfigError(
            f"{prefix}{text!r}: expected {option.expected} ({e})",
            source=source,
            section=section,
            key=key,
        ) from None


def parse_section(
    source: str, section: str, schema: Mapping[str, ConfigOption], raw: Mapping[str, str]
) -> dict[str, object]:
    """Parse every key of ``schema`` from ``raw``, or from its default when absent."""
    values = {}
    for key, option in schema.items():
        text = raw.get(key, option.default)
        prefix = f"{source}: [{section}] {key} = " + ("" if key in raw else "(default) ")
        values[key] = parse_value(prefix, text, option, source=source, section=section, key=key)
    return values


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def parse_bool(text: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case)."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("not a yes/no value")


@makes_parser
def parse_int(*, min: int | None = None, max: int | None = None) -> Callable[[str], int]:
    """A parser of whole numbers (decimal, ``_`` allowed) within ``[min, max]``."""

    def parse(text: str) -> int:
        word = text.strip()
        if not re.fullmatch(r"[+-]?\d+(?:_\d+)*", word):
            raise ValueError("not a whole number")
        value = int(word)
        _check_range(value, min, max, str)
        return value

    return parse


def _check_range(value, low, high, show: Callable[[object], str]) -> None:
    if low is not None and value < low:
        raise ValueError(f"{show(value)} is below the minimum {show(low)}")
    if high is not None and value > high:
        raise ValueError(f"{show(value)} is above the maximum {show(high)}")


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
}
_NUMBER_UNIT = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[A-Za-z]*)")


def _number_and_unit(text: str) -> tuple[Fraction, str]:
    match = _NUMBER_UNIT.fullmatch(text.strip())
    if match is None:
        raise ValueError("not a number followed by an optional unit")
    return Fraction(match["number"]), match["unit"]


def parse_size(text: str) -> int:
    """
    A byte count: ``1048576``, ``64KiB``, ``1MiB``, ``2GiB``, ``1.5GiB``,
    ``10MB`` (decimal units), ``0``.  Units ignore case.
    """
    number, unit = _number_and_unit(text)
    multiplier = _SIZE_UNITS.get(unit.lower())
    if multiplier is None:
        raise ValueError(f"unknown unit {unit!r} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")
    value = number * multiplier
    if value.denominator != 1:
        raise ValueError("not a whole number of bytes")
    return int(value)


@makes_parser
def size_between(low: int, high: int) -> Callable[[str], int]:
    """A :func:`parse_size` that also requires ``low <= size <= high``."""

    def parse(text: str) -> int:
        value = parse_size(text)
        _check_range(value, low, high, format_size)
        return value

    return parse


def format_size(size: int) -> str:
    """The shortest exact binary-unit spelling: ``65536`` -> ``64KiB``."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        multiplier = _SIZE_UNITS[unit.lower()]
        if size and size % multiplier == 0:
            return f"{size // multiplier}{unit}"
    return str(size)


def parse_rate(text: str) -> int:
    """
    Bytes per second: a size with an optional ``/s`` (``512KiB``,
    ``1MiB/s``); ``0`` or ``unlimited`` means no limit and gives ``0``.
    """
    word = text.strip()
    if word.lower() == "unlimited":
        return 0
    if word.lower().endswith("/s"):
        word = word[:-2]
    return parse_size(word)


_DURATION_UNITS = {"": 1, "ms": Fraction(1, 1000), "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds as a float: ``30``, ``30s``, ``1.5s``, ``500ms``, ``5m``, ``2h``, ``1d``."""
    number, unit = _number_and_unit(text)
    multiplier = _DURATION_UNITS.get(unit.lower())
    if multiplier is None:
        raise ValueError(f"unknown unit {unit!r} (use ms, s, m, h, d)")
    return float(number * multiplier)


@makes_parser
def duration_between(low: float, high: float | None = None) -> Callable[[str], float]:
    """A :func:`parse_duration` that also requires ``low <= seconds <= high``."""

    def parse(text: str) -> float:
        value = parse_duration(text)
        _check_range(value, low, high, lambda s: f"{s:g}s")
        return value

    return parse


def parse_address_list(text: str) -> tuple[PeerAddress, ...]:
    """Whitespace- or newline-separated ``[PEERID@]host:port``; may be empty."""
    addresses = []
    for word in text.split():
        try:
            addresses.append(PeerAddress.parse(word))
        except InvalidAddress as e:
            raise ValueError(str(e)) from None
    return tuple(addresses)


def parse_peer_id_set(text: str) -> frozenset[PeerID] | None:
    """``any`` gives ``None`` (no restriction); else whitespace-separated PeerIDs."""
    words = text.split()
    if [w.lower() for w in words] == ["any"]:
        return None
    if not words:
        raise ValueError("empty (write 'any' to allow every peer)")
    try:
        return frozenset(PeerID.parse(word) for word in words)
    except InvalidPeerID as e:
        raise ValueError(str(e)) from None


def parse_server_endpoint(text: str) -> str | None:
    """
    A Twisted server endpoint string, checked by building it against a
    ``MemoryReactor`` (nothing is opened); ``none`` gives ``None``.
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    value = text.strip()
    if value.lower() == "none":
        return None
    try:
        serverFromString(MemoryReactor(), value)
    except Exception as e:  # noqa: BLE001 -- endpoint parsers (plugins too) raise anything
        raise ValueError(str(e) or type(e).__name__) from None
    return value


def escape_endpoint_value(text: str) -> str:
    """Escape ``\\``, ``:`` and ``=`` for use inside a Twisted endpoint string."""
    return re.sub(r"([\\:=])", r"\\\1", text)
