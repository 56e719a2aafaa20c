"""Admission, the daily allowance, output landing, and the plugin's contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from peerd.config import ConfigError, validate_provider_options
from peerd.interfaces import IResourceProviderFactory
from peerd.providers.compute import landing, reasons
from peerd.providers.compute.allowance import DailyUsage
from peerd.providers.compute.limits import ComputeLimits, Refused, admit, clamp_request
from peerd.providers.compute.plugin import ComputeFactory, default_concurrency

DAY = 86400.0


class WallClock:
    def __init__(self, t: float = 1_790_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def refusal(**kw) -> Refused:
    args = {
        "limits": ComputeLimits(),
        "peer": "p",
        "running": 0,
        "module_size": 10,
        "input_size": 10,
    }
    args.setdefault("usage", DailyUsage(3600, 14400, WallClock()))
    args.update(kw)
    with pytest.raises(Refused) as info:
        admit(**args)
    return info.value


def test_refusals_name_the_config_key() -> None:
    """Each refusal has a stable code and names the [provider:compute] key to change."""
    cases = [
        (dict(limits=ComputeLimits(serve=False)), reasons.DISABLED, "serve"),
        (dict(limits=ComputeLimits(allow=frozenset({"q"}))), reasons.NOT_ALLOWED, "allow"),
        (dict(module_size=10**9), reasons.MODULE_TOO_LARGE, "max_module"),
        (dict(input_size=10**9), reasons.INPUT_TOO_LARGE, "max_input"),
        (dict(running=2), reasons.BUSY, "concurrency"),
    ]
    for kw, code, key in cases:
        e = refusal(**kw)
        assert e.code == code and f"[provider:compute] {key}" in e.reason


def test_daily_allowance_per_peer_and_total() -> None:
    """Past its daily seconds a peer is refused; past the total everyone is; a new day resets."""
    clock = WallClock()
    usage = DailyUsage(10, 15, clock)
    limits = ComputeLimits(concurrency=4)
    usage.add("a", 10.5)
    assert refusal(usage=usage, peer="a", limits=limits).code == reasons.PEER_ALLOWANCE
    admit(limits, usage, "b", 0, 1, 1)
    usage.add("b", 5)
    e = refusal(usage=usage, peer="c", limits=limits)
    assert e.code == reasons.TOTAL_ALLOWANCE and "daily_cpu_total" in e.reason
    clock.t += DAY
    admit(limits, usage, "a", 0, 1, 1)


def test_allowance_survives_a_restart_but_not_a_new_day() -> None:
    """Saved counts are taken back on the same day and dropped on a later one."""
    clock = WallClock()
    usage = DailyUsage(10, 0, clock)
    usage.add("a", 7)
    saved = usage.encode()
    again = DailyUsage(10, 0, clock)
    again.load(saved)
    assert again.used("a") == 7
    clock.t += DAY
    later = DailyUsage(10, 0, clock)
    later.load(saved)
    assert later.used("a") == 0


def test_requests_are_clamped_to_the_workers_caps() -> None:
    """A job asking for more fuel, memory or time than offered gets the caps."""
    limits = ComputeLimits(max_fuel=100, max_memory=1000, max_seconds=5)
    assert clamp_request(limits, 10**9, 10**9, 99) == (100, 1000, 5.0)
    assert clamp_request(limits, None, None, None) == (100, 1000, 5.0)
    assert clamp_request(limits, 10, 500, 1) == (10, 500, 1.0)


def test_landing_and_resume(tmp_path: Path) -> None:
    """A landed output verifies against its job; a changed job or output does not."""
    out = tmp_path / "a.txt.out"
    key = landing.job_key("m" * 64, "i" * 64, [], {})
    landing.land(out, b"result", key, ["peer"])
    assert out.read_bytes() == b"result" and landing.verified(out, key)
    assert not landing.verified(out, landing.job_key("m" * 64, "j" * 64, [], {}))
    out.write_bytes(b"tampered")
    assert not landing.verified(out, key)
    assert landing.is_ours(out)
    mine = tmp_path / "user.out"
    mine.write_bytes(b"the user's")
    assert not landing.is_ours(mine)


def test_plugin_contract_and_config() -> None:
    """The factory provides the interface; defaults parse; bad values name the key."""
    factory = ComputeFactory()
    verifyObject(IResourceProviderFactory, factory)
    config = validate_provider_options("t.ini", "provider:compute", factory.config_schema, {})
    assert config["concurrency"] == default_concurrency()
    assert config["allow"] is None and config["max_memory"] == 256 * 1024 * 1024
    config = validate_provider_options(
        "t.ini",
        "provider:compute",
        factory.config_schema,
        {"max_fuel": "1e9", "daily_cpu_total": "0"},
    )
    assert config["max_fuel"] == 10**9 and config["daily_cpu_total"] == 0
    with pytest.raises(ConfigError, match="max_memory"):
        validate_provider_options(
            "t.ini", "provider:compute", factory.config_schema, {"max_memory": "lots"}
        )


def test_plugin_is_discovered() -> None:
    """Twisted's plugin system finds the compute provider like any other."""
    from twisted.plugin import getPlugins

    import peerd.plugins

    names = [p.name for p in getPlugins(IResourceProviderFactory, peerd.plugins)]
    assert "compute" in names


def test_module_cache_evicts_least_recently_used(tmp_path: Path) -> None:
    """Over its size, the cache drops the compiled modules used longest ago, never pinned ones."""
    import os

    from peerd.providers.compute.modules import ModuleCache

    cache = ModuleCache(tmp_path, "tag", 250, lambda s, d: None, lambda f, *a: f(*a))
    names = [c * 64 for c in "abcd"]
    for age, name in enumerate(names):
        path = cache.path(name)
        path.write_bytes(b"x" * 100)
        os.utime(path, (1000 + age, 1000 + age))
    cache.evict({names[0]})
    assert [cache.has(n) for n in names] == [True, False, False, True]
