"""health: CPU load, memory, disk, battery charge and wear, uptime and boot time.

psutil for the portable parts; battery wear (full capacity / design capacity) from Linux
sysfs, `<power_supply_root>/BAT*/{energy,charge}_full[_design]`, whose root is injectable.
psutil reads run in a worker thread: a disk on a hung network mount must not freeze the
agent's event loop (the runner's timeout could not interrupt it).
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from agents.probes import register
from agents.probes._run import Now, ParseError, excerpt, utc_now
from collector.wire import Health, Record

# Batteries report energy (µWh) or charge (µAh); the ratio full/design is the same quantity.
CAPACITY_PAIRS = (("energy_full", "energy_full_design"), ("charge_full", "charge_full_design"))
CAPACITY_FILES = tuple(name for pair in CAPACITY_PAIRS for name in pair)


def parse_battery(values: dict[str, str]) -> float | None:
    """Wear ratio from a power_supply directory's {file name: content}; None when not given.

    The ratio can exceed 1 on a new battery (capped at 2, the wire bound); a design capacity
    of 0 means the firmware does not know it, so None.
    """
    for full_key, design_key in CAPACITY_PAIRS:
        if full_key in values and design_key in values:
            full, design = values[full_key].strip(), values[design_key].strip()
            if not full.isdigit() or not design.isdigit():
                raise ParseError(f"{full_key}/{design_key}: expected integers, got {excerpt(full, 20)}/"
                                 f"{excerpt(design, 20)}")
            if int(design) == 0:
                return None
            return min(2.0, int(full) / int(design))
    return None


def read_battery(bat: Path) -> dict[str, str]:
    values = {}
    for name in CAPACITY_FILES:
        try:
            values[name] = (bat / name).read_text(encoding="ascii", errors="replace")
        except OSError:  # absent (the other unit) or unreadable
            continue
    return values


def battery_health(root: Path) -> float | None:
    """The first battery's wear ratio; None without a battery or a readable figure.

    A garbled figure gives None too: wear is a nice-to-have, not a reason to lose the rest
    of the health record.
    """
    for bat in sorted(root.glob("BAT*")):
        try:
            ratio = parse_battery(read_battery(bat))
        except ParseError:
            continue
        if ratio is not None:
            return ratio
    return None


def default_disk_path() -> str:
    return os.environ.get("SystemDrive", "C:") + "\\" if sys.platform == "win32" else "/"


def _ratio(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 4)


@register("health")
class HealthProbe:
    """One `Health` record per collect.

    Options: `interval_s` (60), `disk_path` ("" = "/" or the system drive),
    `power_supply_root` ("/sys/class/power_supply"). Tests inject `ps` (a psutil-like
    module) and `now` (the wall clock for `at`).
    """

    name = "health"
    interval_s = 60.0

    def __init__(self, *, interval_s: float = 60.0, disk_path: str = "",
                 power_supply_root: str = "/sys/class/power_supply", ps: Any = psutil, now: Now = utc_now) -> None:
        self.interval_s = interval_s
        self.disk_path = disk_path or default_disk_path()
        self.power_supply = Path(power_supply_root)
        self._ps, self._now = ps, now

    async def collect(self) -> list[Record]:
        return [await asyncio.to_thread(self._read, self._now())]

    def _read(self, at: datetime) -> Health:
        ps = self._ps
        load: float | None = None
        try:
            # psutil emulates the load average on Windows (0 at first, then a 5 s average).
            load = round(min(1024.0, ps.getloadavg()[0] / (ps.cpu_count() or 1)), 4)
        except (AttributeError, OSError):
            pass
        mem = ps.virtual_memory()
        free = total = None
        try:
            disk = ps.disk_usage(self.disk_path)
            free, total = int(disk.free), int(disk.total)
        except OSError:
            pass
        battery = ps.sensors_battery() if hasattr(ps, "sensors_battery") else None
        boot = datetime.fromtimestamp(ps.boot_time(), UTC)
        return Health(
            seq=0, at=at,
            cpu_load_ratio=load,
            memory_used_ratio=_ratio((mem.total - mem.available) / mem.total) if mem.total else None,
            disk_free_bytes=free, disk_total_bytes=total,
            battery_ratio=_ratio(battery.percent / 100) if battery is not None else None,
            battery_plugged=bool(battery.power_plugged)
            if battery is not None and battery.power_plugged is not None else None,
            battery_health_ratio=battery_health(self.power_supply),
            # boot_time follows the wall clock: a clock step can put it after `at`.
            uptime_s=round(max(0.0, (at - boot).total_seconds()), 1),
            boot_at=boot,
        )
