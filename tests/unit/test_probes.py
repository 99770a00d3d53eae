"""The four agent probes: pure parsers on captured output (good, malformed, empty) and the
probes themselves with injected sources, clocks and files."""

from __future__ import annotations

import asyncio
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from agents.probes import PROBES, load_all
from agents.probes._run import CommandError, ParseError, run_cmd
from agents.probes.display import DisplayProbe, parse_drm_connectors, parse_xrandr, read_drm
from agents.probes.health import HealthProbe, battery_health, parse_battery
from agents.probes.network import NetworkProbe, interface_kind, parse_proc_net_route
from agents.probes.usage import (
    IdleSample,
    LogindSource,
    MutterSource,
    UsageProbe,
    logind_sample,
    parse_gdbus_idletime,
    parse_loginctl_sessions,
    parse_loginctl_show,
)
from collector.wire import AnyRecord

FIX = Path(__file__).resolve().parents[1] / "fixtures"
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def text(*parts: str) -> str:
    return FIX.joinpath(*parts).read_text()


def roundtrip(records: list) -> list:
    out = [msgspec.json.decode(msgspec.json.encode(r), type=AnyRecord) for r in records]
    assert out == records
    return out


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------- parsers

def test_xrandr_counts_the_projector_as_external():
    assert parse_xrandr(text("display", "xrandr-laptop-projector.txt")) == (2, 1)
    assert parse_xrandr(text("display", "xrandr-laptop-only.txt")) == (1, 0)


@pytest.mark.parametrize("name", ["xrandr-garbage.txt", "xrandr-empty.txt"])
def test_xrandr_garbage_is_a_parse_error(name):
    with pytest.raises(ParseError):
        parse_xrandr(text("display", name))


def test_drm_connectors():
    assert parse_drm_connectors(read_drm(FIX / "display" / "drm")) == (2, 1)
    with pytest.raises(ParseError, match="unexpected DRM status"):
        parse_drm_connectors(read_drm(FIX / "display" / "drm-bad"))
    assert read_drm(FIX / "display" / "nothing-here") == {}


def test_loginctl_parsers_read_only_what_they_need():
    assert parse_loginctl_sessions(text("usage", "loginctl-sessions.txt")) == ["2", "c1"]
    assert parse_loginctl_sessions("") == []
    props = parse_loginctl_show(text("usage", "loginctl-show-idle-locked.txt"))
    assert props["LockedHint"] == "yes" and props["Type"] == "x11"
    with pytest.raises(ParseError):
        parse_loginctl_show(text("usage", "loginctl-show-garbage.txt"))
    with pytest.raises(ParseError):
        parse_loginctl_show(text("usage", "loginctl-show-empty.txt"))
    with pytest.raises(ParseError):
        parse_loginctl_sessions("$(rm -rf) 1000 x")


def test_logind_sample_picks_the_active_graphical_user_session():
    active = parse_loginctl_show(text("usage", "loginctl-show-active.txt"))
    locked = parse_loginctl_show(text("usage", "loginctl-show-idle-locked.txt"))
    greeter = parse_loginctl_show(text("usage", "loginctl-show-greeter.txt"))
    assert logind_sample([greeter, active], now_us=0) == IdleSample(0.0, False, True)
    s = logind_sample([locked], now_us=1795870000000000 + 90_000_000)
    assert s.locked and s.idle_s == 90.0
    assert logind_sample([greeter], now_us=0).session is False
    assert logind_sample([], now_us=0).session is False


def test_gdbus_idletime():
    assert parse_gdbus_idletime(text("usage", "gdbus-idletime.txt")) == 42.137
    with pytest.raises(ParseError):
        parse_gdbus_idletime(text("usage", "gdbus-garbage.txt"))
    with pytest.raises(ParseError):
        parse_gdbus_idletime("")


def test_default_route_and_interface_kind():
    assert parse_proc_net_route(text("network", "route-wifi.txt")) == "wlp2s0"  # lowest metric wins
    assert parse_proc_net_route(text("network", "route-no-default.txt")) is None
    for name in ("route-garbage.txt", "route-empty.txt"):
        with pytest.raises(ParseError):
            parse_proc_net_route(text("network", name))
    assert interface_kind("eth0", "1\n", False) == "ethernet"
    assert interface_kind("wlp2s0", "1\n", True) == "wifi"
    assert interface_kind("wwan0", "65534\n", False) == "cellular"
    assert interface_kind("ppp0", "512\n", False) == "cellular"
    assert interface_kind("tun0", "65535\n", False) == "other"


def test_battery_wear():
    assert parse_battery({"energy_full": "31250000\n", "energy_full_design": "44400000\n"}) == pytest.approx(0.7038, 1e-3)
    assert battery_health(FIX / "health" / "power_supply") == pytest.approx(0.7038, 1e-3)
    assert battery_health(FIX / "health" / "power_supply_charge") == 1.0
    assert battery_health(FIX / "health" / "power_supply_bad") is None
    assert battery_health(FIX / "health" / "no-such-dir") is None
    with pytest.raises(ParseError):
        parse_battery({"energy_full": "N/A", "energy_full_design": "1"})
    assert parse_battery({}) is None


# ---------------------------------------------------------------- probes

class ScriptedSource:
    name = "x11"

    def __init__(self, samples: list[IdleSample]) -> None:
        self.samples = samples

    async def sample(self) -> IdleSample:
        return self.samples.pop(0) if len(self.samples) > 1 else self.samples[0]


async def test_usage_counts_active_idle_locked_and_no_session_exactly():
    clock = Clock()
    # One probe-time check of the source, then one sample per 5-second slot.
    script = [IdleSample(0)] + [IdleSample(1)] * 6 + [IdleSample(30)] * 3 + [IdleSample(0, locked=True)] * 2 + \
        [IdleSample(float("inf"), session=False)] + [IdleSample(2)]
    probe = UsageProbe(sample_every_s=5, candidates=[lambda: ScriptedSource(script)], clock=clock, now=lambda: NOW)
    for _ in range(12):
        clock.t += 5
        await probe.sampler.sample()
    [rec] = roundtrip(await probe.collect())
    assert (rec.duration_s, rec.active_s, rec.idle_s, rec.locked_s, rec.no_session_s) == (60, 30, 15, 10, 5)
    assert rec.source == "x11" and rec.at == NOW
    await probe.sampler.aclose()


async def test_usage_on_a_machine_without_a_desktop_reports_no_session():
    async def no_command(argv, timeout):
        raise CommandError(f"{argv[0]}: not installed")

    clock = Clock()
    probe = UsageProbe(candidates=[lambda: MutterSource(no_command), lambda: LogindSource(no_command)], clock=clock)
    clock.t += 60
    [rec] = roundtrip(await probe.collect())
    assert rec.source == "none" and rec.no_session_s == 60 and rec.active_s == 0
    await probe.sampler.aclose()


async def test_usage_through_logind_with_captured_output():
    outputs = {"list-sessions": text("usage", "loginctl-sessions.txt"),
               "2": text("usage", "loginctl-show-idle-locked.txt"), "c1": text("usage", "loginctl-show-greeter.txt")}

    async def loginctl(argv, timeout):
        assert "Name" not in argv and "User" not in argv  # never asks for user names
        return outputs["list-sessions"] if argv[1] == "list-sessions" else outputs[argv[2]]

    clock = Clock()
    probe = UsageProbe(candidates=[lambda: LogindSource(loginctl, now_us=lambda: 1795870000000000)], clock=clock)
    clock.t += 10
    [rec] = await probe.collect()
    assert rec.source == "logind" and rec.locked_s == 10
    assert "eleve" not in msgspec.json.encode(rec).decode()
    await probe.sampler.aclose()


def test_usage_options_are_checked():
    with pytest.raises(ValueError, match="unknown usage sources"):
        UsageProbe(sources=["keylogger"])
    with pytest.raises(ValueError):
        UsageProbe(sample_every_s=0)


async def test_display_accumulates_external_seconds(tmp_path):
    drm = tmp_path / "drm"
    (drm / "card0-eDP-1").mkdir(parents=True)
    (drm / "card0-HDMI-A-1").mkdir()
    (drm / "card0-eDP-1" / "status").write_text("connected\n")
    hdmi = drm / "card0-HDMI-A-1" / "status"
    hdmi.write_text("disconnected\n")
    clock = Clock()
    probe = DisplayProbe(sample_every_s=15, drm_root=str(drm), clock=clock, now=lambda: NOW)
    for status in ("disconnected", "connected", "connected", "disconnected"):
        hdmi.write_text(status + "\n")
        clock.t += 15
        await probe.sampler.sample()
    hdmi.write_text("connected\n")
    [rec] = roundtrip(await probe.collect())
    assert (rec.duration_s, rec.external_s, rec.external_connected, rec.displays) == (60, 30, True, 2)
    await probe.sampler.aclose()


async def test_display_without_drm_or_xrandr_reports_nothing_connected(tmp_path):
    async def no_xrandr(argv, timeout):
        raise CommandError("xrandr: not installed")

    probe = DisplayProbe(drm_root=str(tmp_path), run=no_xrandr)
    [rec] = await probe.collect()
    assert rec.external_s == 0 and rec.external_connected is False
    await probe.sampler.aclose()


async def test_health_on_this_machine_with_a_fixture_battery():
    probe = HealthProbe(power_supply_root=str(FIX / "health" / "power_supply"), now=lambda: datetime.now(UTC))
    [rec] = roundtrip(await probe.collect())
    assert 0 <= rec.memory_used_ratio <= 1 and rec.disk_total_bytes > rec.disk_free_bytes > 0
    assert rec.battery_health_ratio == pytest.approx(0.7038, 1e-3)
    assert rec.uptime_s > 0 and rec.boot_at < rec.at


async def test_network_reachable_and_unreachable_collector():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async def resolver(name):
            if name == "collector.example":
                return [("ok",)]
            raise OSError("no such name")

        up = NetworkProbe(collector=f"127.0.0.1:{port}", dns_name="collector.example", resolver=resolver)
        [rec] = roundtrip(await up.collect())
        assert rec.collector_reachable is True and rec.rtt_s > 0 and rec.dns_ok is True
    finally:
        server.close()
        await server.wait_closed()
    down = NetworkProbe(collector=f"127.0.0.1:{port}", dns_name="nowhere.invalid", resolver=resolver,
                        connect_timeout_s=1)
    [rec] = roundtrip(await down.collect())
    assert rec.collector_reachable is False and rec.rtt_s is None and rec.dns_ok is False


async def test_network_reads_the_default_route_interface(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "route").write_text(text("network", "route-wifi.txt"))
    probe = NetworkProbe(proc_root=str(tmp_path), sys_root=str(FIX / "network" / "sys"))
    [rec] = await probe.collect()
    assert (rec.interface, rec.link_up, rec.collector_reachable) == ("wifi", True, None)
    (tmp_path / "net" / "route").write_text(text("network", "route-no-default.txt"))
    [rec] = await probe.collect()
    assert (rec.interface, rec.link_up) == ("none", False)
    with pytest.raises(ValueError, match="host:port"):
        NetworkProbe(collector="no-port")


async def test_run_cmd_reports_missing_failing_and_slow_commands():
    with pytest.raises(CommandError, match="not installed"):
        await run_cmd(["no-such-command-here"])
    with pytest.raises(CommandError, match="exit 3"):
        await run_cmd(["sh", "-c", "echo boom >&2; exit 3"])
    with pytest.raises(CommandError, match="no answer"):
        await run_cmd(["sleep", "5"], timeout_s=0.2)
    assert (await run_cmd(["echo", "ok"])).strip() == "ok"


@pytest.mark.parametrize("example", sorted((Path(__file__).resolve().parents[2] / "agents" / "probes")
                                           .glob("*.example.toml")), ids=lambda p: p.name)
async def test_every_probe_example_loads_and_builds(example):
    load_all()
    doc = tomllib.loads(example.read_text())
    uncommented = tomllib.loads("\n".join(line[2:] if line.startswith("# ") and "=" in line else line
                                          for line in example.read_text().splitlines()))
    [(name, _)] = doc["probes"].items()
    options = {k: v for k, v in uncommented["probes"][name].items() if k not in ("interval_s", "enabled", "timeout_s")}
    probe = PROBES[name](**options)
    assert probe.name == name
    sampler = getattr(probe, "sampler", None)
    if sampler is not None:
        await sampler.aclose()
