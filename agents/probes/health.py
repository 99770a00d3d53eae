"""health: CPU load, memory, disk, battery, uptime. psutil for the portable parts; battery
wear from Linux sysfs (`/sys/class/power_supply/BAT*`), whose root is injectable."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from agents.probes import register
from agents.probes._run import ParseError
from collector.wire import Health, Record


def parse_battery(values: dict[str, str]) -> float | None:
    """Wear ratio (full / design) from a power_supply directory's files; None if not given.

    Batteries report energy (µWh) or charge (µAh) pairs; either ratio is the same quantity.
    """
    for full_key, design_key in (("energy_full", "energy_full_design"), ("charge_full", "charge_full_design")):
        if full_key in values and design_key in values:
            full, design = values[full_key].strip(), values[design_key].strip()
            if not full.isdigit() or not design.isdigit():
                raise ParseError(f"{full_key}/{design_key}: expected integers, got {full[:20]!r}/{design[:20]!r}")
            if int(design) == 0:
                return None
            return min(2.0, int(full) / int(design))
    return None


def battery_health(sysfs: Path) -> float | None:
    """The first battery's wear ratio, or None when there is no battery or no figure."""
    for bat in sorted(sysfs.glob("BAT*")):
        values = {}
        for name in ("energy_full", "energy_full_design", "charge_full", "charge_full_design"):
            try:
                values[name] = (bat / name).read_text(encoding="ascii", errors="replace")
            except OSError:
                continue
        try:
            ratio = parse_battery(values)
        except ParseError:
            return None
        if ratio is not None:
            return ratio
    return None


def default_disk_path() -> str:
    return os.environ.get("SystemDrive", "C:") + "\\" if sys.platform == "win32" else "/"


@register("health")
class HealthProbe:
    """Options: `disk_path` (default "/" or the system drive), `power_supply_root`."""

    name = "health"

    def __init__(self, disk_path: str = "", power_supply_root: str = "/sys/class/power_supply", *,
                 ps: Any = psutil, now: Any = lambda: datetime.now(UTC)) -> None:
        self.disk_path = disk_path or default_disk_path()
        self.power_supply = Path(power_supply_root)
        self._ps, self._now = ps, now

    async def collect(self) -> list[Record]:
        ps = self._ps
        at = self._now()
        cores = ps.cpu_count() or 1
        try:
            load = ps.getloadavg()[0] / cores
        except (AttributeError, OSError):
            load = None
        mem = ps.virtual_memory()
        free: int | None = None
        total: int | None = None
        try:
            disk = ps.disk_usage(self.disk_path)
            free, total = int(disk.free), int(disk.total)
        except OSError:
            pass
        battery = ps.sensors_battery() if hasattr(ps, "sensors_battery") else None
        boot = datetime.fromtimestamp(ps.boot_time(), UTC)
        return [Health(
            seq=0, at=at,
            cpu_load_ratio=round(min(load, 1024.0), 4) if load is not None else None,
            memory_used_ratio=round((mem.total - mem.available) / mem.total, 4) if mem.total else None,
            disk_free_bytes=free, disk_total_bytes=total,
            battery_ratio=round(min(100.0, max(0.0, battery.percent)) / 100, 4) if battery is not None else None,
            battery_plugged=bool(battery.power_plugged) if battery is not None and battery.power_plugged is not None
            else None,
            battery_health_ratio=battery_health(self.power_supply),
            uptime_s=round(max(0.0, (at - boot).total_seconds()), 1),
            boot_at=boot,
        )]
