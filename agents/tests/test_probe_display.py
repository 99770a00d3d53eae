"""The display probe: the "screen in use" rule on captured xrandr output and DRM sysfs trees
(its corners: writeback and virtual connectors, plugged but not shown, blanked, a DVI port that
cannot sense its monitor, a stale CRTC after unplugging, no modes, a closed lid), and
external-display seconds accumulated from samples against a DRM tree that changes under a fake
clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent_testing import Clock, roundtrip
from tice_agent.probes._run import CommandError, ParseError
from tice_agent.probes.display import (
    DisplayProbe,
    drm_in_use,
    external_outputs,
    parse_drm_status,
    parse_xrandr,
    read_drm,
)
from tice_wire import Display

FIX = Path(__file__).resolve().parent / "fixtures" / "display"
NOW = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)


def fixture(name: str) -> str:
    return (FIX / name).read_text()




# ---------------------------------------------------------------- parsers

@pytest.mark.parametrize(("name", "in_use", "external"), [
    ("xrandr-laptop-projector.txt", ["eDP-1", "HDMI-1"], ["HDMI-1"]),
    ("xrandr-laptop-only.txt", ["LVDS-1"], []),
    # Plugged in but not switched on in the desktop: no geometry, nothing shown on it.
    ("xrandr-projector-connected-off.txt", ["eDP-1"], []),
    ("xrandr-desktop-vga.txt", ["VGA-1"], ["VGA-1"]),
    # A DVI port that cannot sense its monitor, yet has a mode and a position: in use.
    ("xrandr-dvi-unknown.txt", ["LVDS1", "DVI1"], ["DVI1"]),
    # Unplugged a moment ago: xrandr still shows the stale geometry, but nothing is there.
    ("xrandr-stale-disconnected.txt", ["eDP-1"], []),
    # A virtual output is never a screen, even with a geometry.
    ("xrandr-virtual-in-use.txt", ["eDP1"], []),
    # Lid closed, the projector alone, rotated ("left" after the geometry).
    ("xrandr-lid-closed-rotated.txt", ["HDMI-1"], ["HDMI-1"]),
])
def test_xrandr_screens_in_use_and_external(name, in_use, external):
    assert parse_xrandr(fixture(name)) == in_use
    assert external_outputs(in_use) == external


def test_a_desktop_names_its_own_monitor_internal():
    assert external_outputs(["VGA-1"], internal=["VGA-1"]) == []
    assert external_outputs(["VGA-1", "HDMI-1"], internal=["vga"]) == ["HDMI-1"]


@pytest.mark.parametrize(("name", "message"), [
    ("xrandr-garbage.txt", "expected a first line 'Screen N: ...', got \"Can't open display\""),
    ("xrandr-empty.txt", "empty output"),
])
def test_xrandr_garbage_and_empty_are_parse_errors(name, message):
    with pytest.raises(ParseError, match=message):
        parse_xrandr(fixture(name))


def test_drm_status():
    assert parse_drm_status("connected\n") is True
    assert parse_drm_status("unknown\n") is True  # the port cannot sense a monitor: it may be there
    assert parse_drm_status("disconnected\n") is False
    with pytest.raises(ParseError, match="card0-HDMI-A-1/status: expected connected/disconnected/unknown, got 'maybe\\?'"):
        parse_drm_status("maybe?\n", "card0-HDMI-A-1/status")


@pytest.mark.parametrize(("files", "in_use"), [
    ({"status": "connected", "enabled": "enabled", "dpms": "On", "modes": "1024x768\n"}, True),
    ({"status": "unknown", "enabled": "enabled", "dpms": "On", "modes": "1024x768\n"}, True),
    ({"status": "disconnected", "enabled": "enabled", "dpms": "On", "modes": "1024x768\n"}, False),  # stale CRTC
    ({"status": "connected", "enabled": "disabled", "dpms": "Off", "modes": "1024x768\n"}, False),  # not shown
    ({"status": "connected", "enabled": "enabled", "dpms": "Off", "modes": "1024x768\n"}, False),  # blanked
    ({"status": "connected", "enabled": "enabled", "dpms": "Standby", "modes": "1024x768\n"}, False),
    ({"status": "connected", "enabled": "enabled", "dpms": "On", "modes": ""}, False),  # nothing to show
    ({"status": "connected", "enabled": None, "dpms": None, "modes": None}, True),  # a kernel without them
    ({"status": "unknown", "enabled": None, "dpms": None, "modes": None}, True),
])
def test_drm_in_use_rule(files, in_use):
    assert drm_in_use(files) is in_use


def test_drm_in_use_rejects_values_the_kernel_never_writes():
    with pytest.raises(ParseError, match="c/enabled: expected enabled/disabled, got 'yes'"):
        drm_in_use({"status": "connected", "enabled": "yes"}, "c")
    with pytest.raises(ParseError, match="c/status: missing"):
        drm_in_use({"enabled": "enabled"}, "c")


@pytest.mark.parametrize(("tree", "in_use", "external"), [
    ("drm", ["HDMI-A-1", "eDP-1"], ["HDMI-A-1"]),  # status files only (an old kernel)
    ("drm-laptop-only", ["eDP-1"], []),
    # A writeback connector says connected, enabled, On, with modes (a screen capture is
    # running): it is a memory sink, never a screen, and never the projector.
    ("drm-writeback", ["eDP-1"], []),
    ("drm-virtual", ["eDP-1"], []),
    ("drm-plugged-not-shown", ["eDP-1"], []),
    ("drm-blanked", [], []),
    ("drm-dvi-unknown", ["DVI-I-1", "LVDS-1"], ["DVI-I-1"]),
    ("drm-stale-disconnected", ["eDP-1"], []),
    ("drm-no-modes", ["eDP-1"], []),
    ("drm-lid-closed", ["HDMI-A-1"], ["HDMI-A-1"]),
])
def test_drm_trees(tree, in_use, external):
    assert read_drm(FIX / tree) == in_use
    assert external_outputs(in_use) == external


def test_drm_without_connectors_and_garbled_trees():
    assert read_drm(FIX / "no-such-dir") is None  # no DRM at all: try xrandr
    with pytest.raises(ParseError, match=r"card0-HDMI-A-1/status: .* got 'maybe\?'"):
        read_drm(FIX / "drm-bad")
    with pytest.raises(ParseError, match=r"card0-eDP-1/status: .* got ''"):
        read_drm(FIX / "drm-empty-status")
    with pytest.raises(ParseError, match=r"card0-HDMI-A-1/dpms: expected On/Standby/Suspend/Off, got 'Maybe'"):
        read_drm(FIX / "drm-bad-dpms")


# ---------------------------------------------------------------- the probe

def drm_tree(root: Path, **statuses: str) -> None:
    """Connectors whose status is given; a connected one is also enabled, On, with a mode."""
    for connector, status in statuses.items():
        d = root / f"card0-{connector}"
        d.mkdir(parents=True, exist_ok=True)
        on = status == "connected"
        (d / "status").write_text(status + "\n")
        (d / "enabled").write_text("enabled\n" if on else "disabled\n")
        (d / "dpms").write_text("On\n" if on else "Off\n")
        (d / "modes").write_text("1024x768\n" if on else "")


async def test_external_seconds_accumulate_over_the_interval(tmp_path):
    drm_tree(tmp_path, **{"eDP-1": "connected", "HDMI-A-1": "disconnected"})
    clock = Clock(50.0)
    probe = DisplayProbe(sample_every_s=15, drm_root=str(tmp_path), clock=clock, now=lambda: NOW)
    # The projector is plugged in during the 2nd and 3rd of four 15 s slots...
    for status in ("disconnected", "connected", "connected", "disconnected"):
        drm_tree(tmp_path, **{"HDMI-A-1": status})
        clock.t += 15
        await probe.sampler.sample()
    # ...and again just as the interval ends: connected now, but no time counted yet.
    drm_tree(tmp_path, **{"HDMI-A-1": "connected"})
    [rec] = roundtrip(await probe.collect())
    assert isinstance(rec, Display)
    assert (rec.duration_s, rec.external_s, rec.external_connected, rec.displays) == (60, 30, True, 2)
    assert rec.at == NOW and rec.seq == 0
    await probe.sampler.aclose()


async def test_falls_back_to_xrandr_without_drm(tmp_path):
    asked = []

    async def xrandr(argv, timeout):
        asked.append(argv)
        return fixture("xrandr-laptop-projector.txt")

    clock = Clock(50.0)
    probe = DisplayProbe(drm_root=str(tmp_path), run=xrandr, clock=clock, platform="linux")
    clock.t += 15
    [rec] = roundtrip(await probe.collect())
    assert asked == [["xrandr", "--query"]]
    assert (rec.external_s, rec.external_connected, rec.displays) == (15, True, 2)
    await probe.sampler.aclose()


async def test_nothing_to_tell_is_no_external_time(tmp_path):
    async def no_xrandr(argv, timeout):
        raise CommandError("xrandr: not installed")

    clock = Clock(50.0)
    probe = DisplayProbe(drm_root=str(tmp_path), run=no_xrandr, clock=clock, platform="linux")
    clock.t += 30
    [rec] = roundtrip(await probe.collect())
    assert (rec.duration_s, rec.external_s, rec.external_connected, rec.displays) == (30, 0, False, 0)
    await probe.sampler.aclose()


async def test_a_garbled_status_costs_its_slot_not_the_interval(tmp_path):
    drm_tree(tmp_path, **{"eDP-1": "connected", "HDMI-A-1": "connected"})
    clock = Clock(50.0)
    probe = DisplayProbe(drm_root=str(tmp_path), clock=clock)
    clock.t += 15
    await probe.sampler.sample()
    drm_tree(tmp_path, **{"HDMI-A-1": "maybe?"})
    clock.t += 15
    await probe.sampler.sample()
    drm_tree(tmp_path, **{"HDMI-A-1": "connected"})
    clock.t += 15
    [rec] = roundtrip(await probe.collect())
    assert (rec.duration_s, rec.external_s) == (45, 30)
    await probe.sampler.aclose()


def test_options():
    with pytest.raises(ValueError, match="sample_every_s"):
        DisplayProbe(sample_every_s=1000)
    probe = DisplayProbe(interval_s=300, internal_outputs=["eDP", "DP-1"])
    assert probe.interval_s == 300 and probe.internal == ("eDP", "DP-1")
