"""The health probe: batteries told by their `type` from fixture sysfs trees (firmware names,
peripheral batteries, empty bays, UPS), the probe on this machine's real psutil, and a failing
source losing its own fields only (a VM without /sys/class/power_supply, each psutil call
failing in turn) with a fake psutil."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from agent_testing import roundtrip
from tice_agent.probes._run import ParseError
from tice_agent.probes.health import (
    Battery,
    HealthProbe,
    default_disk_path,
    parse_supply,
    read_supplies,
    sysfs_battery,
    system_batteries,
)
from tice_wire import Health

FIX = Path(__file__).resolve().parent / "fixtures" / "health"
NOW = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(("tree", "charge", "plugged", "wear"), [
    ("power_supply", 0.8, True, 31250000 / 44400000),          # BAT0 + AC online
    ("power_supply_charge", 1.0, True, 1.0),                   # charge_* (µAh), status Full
    # An ASUS-style battery named CMB0, energy units: 40000000 / 72000000.
    ("power_supply_cmb0", 0.75, False, 0.5556),
    # C1AC in charge units (3600000 / 4400000) beside a wireless mouse (scope Device) at 35 %:
    # the mouse is neither the charge nor the wear.
    ("power_supply_c1ac", 0.5, True, 0.8182),
    ("power_supply_two", 0.5, False, 0.85),                    # BAT0 garbled: BAT1 answers
    ("power_supply_bad", None, False, None),                   # N/A: no figure, no crash
    ("power_supply_zero_design", 0.8, None, None),             # design 0: unknown wear; capacity %
    ("power_supply_empty_bay", 0.5, False, 0.8),               # BAT1 present=0; USB-C charger offline
])
def test_system_battery_from_sysfs(tree, charge, plugged, wear):
    bat = sysfs_battery(FIX / tree)
    assert bat is not None
    assert bat.charge_ratio == (pytest.approx(charge) if charge is not None else None)
    assert bat.plugged is plugged
    assert bat.wear_ratio == (pytest.approx(wear, abs=1e-4) if wear is not None else None)


@pytest.mark.parametrize("tree", ["power_supply_desktop", "power_supply_mouse_only", "power_supply_ups",
                                  "power_supply_bad_type"])
def test_no_system_battery(tree):
    # Mains only; a mouse's battery only; a UPS; a supply whose type cannot be read.
    assert sysfs_battery(FIX / tree) == Battery(None, None, None)


def test_found_by_type_not_by_name():
    supplies = read_supplies(FIX / "power_supply_c1ac")
    assert supplies is not None
    assert [s.name for s in supplies] == ["ACAD", "C1AC", "hid-001f20aabbcc-battery"]
    assert [s.name for s in system_batteries(supplies)] == ["C1AC"]
    assert read_supplies(FIX / "no-such-dir") is None  # a VM: no power_supply class at all
    assert sysfs_battery(FIX / "no-such-dir") is None   # then psutil is asked


def test_parse_supply_rejects_words_the_kernel_never_writes():
    with pytest.raises(ParseError, match="BAT0/type: expected one of Battery, UPS, Mains, USB, Wireless, "
                                         "got 'Batery\\?'"):
        parse_supply("BAT0", {"type": "Batery?\n"})
    with pytest.raises(ParseError, match="BAT0/type: missing"):
        parse_supply("BAT0", {"energy_full": "1\n"})
    with pytest.raises(ParseError, match="hid/scope: expected one of Unknown, System, Device, got 'Mouse'"):
        parse_supply("hid", {"type": "Battery", "scope": "Mouse"})
    with pytest.raises(ParseError, match="BAT0/energy_full: expected an integer, got 'N/A'"):
        parse_supply("BAT0", {"type": "Battery", "energy_full": "N/A\n"}).number("energy_full")


async def test_on_this_machine_with_a_fixture_battery():
    before = datetime.now(UTC)
    probe = HealthProbe(power_supply_root=str(FIX / "power_supply"))
    [rec] = roundtrip(await probe.collect())
    assert isinstance(rec, Health) and rec.seq == 0 and rec.at >= before
    assert rec.cpu_load_ratio is not None and rec.cpu_load_ratio >= 0
    assert rec.memory_used_ratio is not None and 0 < rec.memory_used_ratio <= 1
    assert rec.disk_total_bytes == psutil.disk_usage("/").total and 0 < rec.disk_free_bytes <= rec.disk_total_bytes
    assert rec.battery_health_ratio == 0.7038 and rec.battery_ratio == 0.8 and rec.battery_plugged is True
    assert rec.uptime_s > 0 and rec.boot_at == datetime.fromtimestamp(psutil.boot_time(), UTC)
    assert rec.boot_at + timedelta(seconds=rec.uptime_s) == pytest.approx(rec.at, abs=timedelta(seconds=1))


class FakePsutil:
    """What a Windows laptop on battery, with a missing data disk, could answer."""

    def cpu_count(self):
        return 4

    def getloadavg(self):
        return (6.0, 3.0, 1.0)

    def virtual_memory(self):
        return SimpleNamespace(total=8 * 2**30, available=2 * 2**30)

    def disk_usage(self, path):
        raise FileNotFoundError(path)

    def sensors_battery(self):
        return SimpleNamespace(percent=42.5, secsleft=3600, power_plugged=False)

    def boot_time(self):
        return (NOW - timedelta(hours=2)).timestamp()


async def test_numbers_from_a_fake_psutil():
    probe = HealthProbe(disk_path="D:\\", power_supply_root=str(FIX / "no-such-dir"), ps=FakePsutil(), now=lambda: NOW)
    [rec] = roundtrip(await probe.collect())
    assert rec == Health(seq=0, at=NOW, cpu_load_ratio=1.5, memory_used_ratio=0.75, disk_free_bytes=None,
                         disk_total_bytes=None, battery_ratio=0.425, battery_plugged=False, battery_health_ratio=None,
                         uptime_s=7200.0, boot_at=NOW - timedelta(hours=2))


async def test_no_battery_and_no_load_average():
    class Desktop(FakePsutil):
        def sensors_battery(self):
            return None

        def getloadavg(self):
            raise OSError("not supported")

    probe = HealthProbe(ps=Desktop(), power_supply_root=str(FIX / "no-such-dir"), now=lambda: NOW)
    [rec] = roundtrip(await probe.collect())
    assert (rec.battery_ratio, rec.battery_plugged, rec.cpu_load_ratio) == (None, None, None)
    assert probe.note == "disk unreadable (FileNotFoundError: /); load unreadable (OSError: not supported)"


async def test_a_vm_without_power_supply_keeps_the_rest_of_the_record(caplog):
    class VirtualMachine(FakePsutil):
        def sensors_battery(self):  # what psutil does on Linux without /sys/class/power_supply
            raise FileNotFoundError(2, "No such file or directory", "/sys/class/power_supply")

        def disk_usage(self, path):
            return SimpleNamespace(free=10 * 2**30, total=40 * 2**30)

    probe = HealthProbe(ps=VirtualMachine(), power_supply_root=str(FIX / "no-such-dir"), now=lambda: NOW)
    with caplog.at_level(logging.INFO, logger="tice.agent.probes.health"):
        for _ in range(3):
            [rec] = roundtrip(await probe.collect())
    assert rec == Health(seq=0, at=NOW, cpu_load_ratio=1.5, memory_used_ratio=0.75, disk_free_bytes=10 * 2**30,
                         disk_total_bytes=40 * 2**30, battery_ratio=None, battery_plugged=None,
                         battery_health_ratio=None, uptime_s=7200.0, boot_at=NOW - timedelta(hours=2))
    assert probe.note == ("battery unreadable (FileNotFoundError: [Errno 2] No such file or directory: "
                          "'/sys/class/power_supply')")
    # Said once when it started failing, not at every collect.
    assert [r.getMessage()[:38] for r in caplog.records] == ["health: battery unreadable, its fields"]


@pytest.mark.parametrize(("call", "lost"), [
    ("getloadavg", {"cpu_load_ratio"}),
    ("cpu_count", {"cpu_load_ratio"}),
    ("virtual_memory", {"memory_used_ratio"}),
    ("disk_usage", {"disk_free_bytes", "disk_total_bytes"}),
    ("sensors_battery", {"battery_ratio", "battery_plugged"}),
    ("boot_time", {"uptime_s", "boot_at"}),
])
async def test_each_failing_source_loses_its_own_fields_only(call, lost):
    class Working(FakePsutil):
        def disk_usage(self, path):
            return SimpleNamespace(free=1, total=2)

    def broken(*args):
        raise RuntimeError(f"{call} broke")

    ps = Working()
    good = (await HealthProbe(ps=ps, power_supply_root=str(FIX / "no-such-dir"), now=lambda: NOW).collect())[0]
    setattr(ps, call, broken)
    probe = HealthProbe(ps=ps, power_supply_root=str(FIX / "no-such-dir"), now=lambda: NOW)
    [rec] = roundtrip(await probe.collect())
    fields = set(Health.__struct_fields__) - {"seq", "at"}
    assert {f for f in fields if getattr(good, f) is not None and getattr(rec, f) is None} == lost
    assert all(getattr(rec, f) == getattr(good, f) for f in fields - lost)
    assert probe.note is not None and f"{call} broke" in probe.note
    setattr(ps, call, getattr(Working, call).__get__(ps))  # the source recovers
    await probe.collect()
    assert probe.note is None


async def test_sysfs_wins_over_psutil_on_linux():
    # psutil's Linux reader takes any BAT* or *battery* name: it would report the mouse.
    class MouseFan(FakePsutil):
        def sensors_battery(self):
            return SimpleNamespace(percent=35.0, secsleft=-2, power_plugged=None)

    probe = HealthProbe(ps=MouseFan(), power_supply_root=str(FIX / "power_supply_c1ac"), now=lambda: NOW)
    [rec] = roundtrip(await probe.collect())
    assert (rec.battery_ratio, rec.battery_plugged, rec.battery_health_ratio) == (0.5, True, 0.8182)


def test_options():
    assert HealthProbe().disk_path == default_disk_path() == "/"
    assert HealthProbe(interval_s=300, disk_path="/srv").interval_s == 300
