"""The health probe: battery wear from fixture sysfs trees, the probe on this machine's real
psutil, and the edge cases (no battery, no load average, a missing disk) with a fake psutil."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from agents.probes._run import ParseError
from agents.probes.health import HealthProbe, battery_health, default_disk_path, parse_battery, read_battery
from collector.wire import Health
from tests.fakes import roundtrip

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "health"
NOW = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)



def test_parse_battery_energy_and_charge():
    assert parse_battery(read_battery(FIX / "power_supply" / "BAT0")) == pytest.approx(31250000 / 44400000)
    assert parse_battery(read_battery(FIX / "power_supply_charge" / "BAT1")) == 1.0
    assert parse_battery({"energy_full": "50000000\n", "energy_full_design": "10000000\n"}) == 2.0  # capped
    assert parse_battery(read_battery(FIX / "power_supply_zero_design" / "BAT0")) is None
    assert parse_battery({}) is None


@pytest.mark.parametrize("values", [
    {"energy_full": "N/A\n", "energy_full_design": "44400000\n"},
    {"charge_full": "-1\n", "charge_full_design": "5200000\n"},
    {"energy_full": "\n", "energy_full_design": "44400000\n"},
])
def test_parse_battery_rejects_non_integers(values):
    with pytest.raises(ParseError, match="expected integers"):
        parse_battery(values)


def test_battery_health_on_fixture_trees():
    assert battery_health(FIX / "power_supply") == pytest.approx(0.7038, abs=1e-4)
    assert battery_health(FIX / "power_supply_charge") == 1.0
    assert battery_health(FIX / "power_supply_two") == 0.85  # BAT0 garbled: BAT1 answers
    assert battery_health(FIX / "power_supply_bad") is None
    assert battery_health(FIX / "power_supply_desktop") is None  # mains only
    assert battery_health(FIX / "no-such-dir") is None


async def test_on_this_machine_with_a_fixture_battery():
    before = datetime.now(UTC)
    probe = HealthProbe(power_supply_root=str(FIX / "power_supply"))
    [rec] = roundtrip(await probe.collect())
    assert isinstance(rec, Health) and rec.seq == 0 and rec.at >= before
    assert rec.cpu_load_ratio is not None and rec.cpu_load_ratio >= 0
    assert rec.memory_used_ratio is not None and 0 < rec.memory_used_ratio <= 1
    assert rec.disk_total_bytes == psutil.disk_usage("/").total and 0 < rec.disk_free_bytes <= rec.disk_total_bytes
    assert rec.battery_health_ratio == pytest.approx(0.7038, abs=1e-4)
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

    [rec] = roundtrip(await HealthProbe(ps=Desktop(), now=lambda: NOW).collect())
    assert (rec.battery_ratio, rec.battery_plugged, rec.cpu_load_ratio) == (None, None, None)


def test_options():
    assert HealthProbe().disk_path == default_disk_path() == "/"
    assert HealthProbe(interval_s=300, disk_path="/srv").interval_s == 300
