"""health: CPU load, memory, disk, battery charge and wear, uptime and boot time.

Each figure has its own source, and a source that fails loses its own fields, never the
record: a VM without `/sys/class/power_supply`, a disk on a dead mount or a psutil call the
platform lacks leaves those fields empty (null) while the others are still reported. The
failing sources are named in `tice-agent status` (the probe's note) and logged once when they
start failing and once when they recover.

Sources:
- load: `psutil.getloadavg()` / `cpu_count()` (emulated on Windows);
- memory: `psutil.virtual_memory()`; disk: `psutil.disk_usage(disk_path)`;
- battery (Linux): sysfs `<power_supply_root>/*/`. What a power supply is comes from its `type`
  file, never from its name: batteries are called BAT0, but also CMB0, C1AC, ... The kernel's
  ABI (Documentation/ABI/testing/sysfs-class-power) lists the types "Battery", "UPS", "Mains",
  "USB", "Wireless"; a battery whose `scope` is "Device" (power_supply_sysfs.c: "Unknown",
  "System", "Device") powers a peripheral, such as a wireless mouse or a gamepad (HID
  batteries), not the computer, and is left out, as is a bay whose `present` is 0 (a missing
  `present` means present, says the ABI). UPS units are not the computer's battery either.
  Charge = sum of `energy_now` / sum of `energy_full` (or the `charge_*` pair, in µAh, else the
  mean `capacity`); wear = sum of `*_full` / sum of `*_full_design`; plugged = any mains, USB or
  wireless supply `online`, else the batteries' `status`.
- battery elsewhere (Windows, or Linux without that directory): `psutil.sensors_battery()`;
- uptime and boot time: `psutil.boot_time()`.
psutil reads run in a worker thread: a disk on a hung network mount must not freeze the
agent's event loop (the runner's timeout could not interrupt it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psutil

from tice_agent.probes import register
from tice_agent.probes._run import Now, ParseError, excerpt, utc_now
from tice_wire import Health, Record

log = logging.getLogger("tice.agent.probes.health")

SUPPLY_TYPES = ("Battery", "UPS", "Mains", "USB", "Wireless")
SCOPES = ("Unknown", "System", "Device")
STATUSES = ("Unknown", "Charging", "Discharging", "Not charging", "Full")
# The files read from each power supply directory; no other (serial_number, model_name) is.
SUPPLY_FILES = ("type", "scope", "present", "online", "status", "capacity", "energy_now", "energy_full",
                "energy_full_design", "charge_now", "charge_full", "charge_full_design")
# Batteries report energy (µWh) or charge (µAh); within one unit the ratios are the same quantity.
UNITS = ("energy", "charge")
CHARGER_TYPES = ("Mains", "USB", "Wireless")


@dataclass(frozen=True)
class PowerSupply:
    name: str
    values: dict[str, str]  # file name -> stripped content, for the SUPPLY_FILES that exist

    @property
    def type(self) -> str:
        return self.values.get("type", "")

    def number(self, key: str) -> int | None:
        """An integer file; None when absent; ParseError when it is not an integer."""
        text = self.values.get(key)
        if text is None:
            return None
        if not text.isdigit():
            raise ParseError(f"{self.name}/{key}: expected an integer, got {excerpt(text, 20)}")
        return int(text)


def parse_supply(name: str, values: dict[str, str]) -> PowerSupply:
    """A power supply directory's {file: content} -> PowerSupply; ParseError on a bad `type`,
    `scope` or `status` (words the kernel never writes)."""
    clean = {k: v.strip() for k, v in values.items()}
    for key, allowed in (("type", SUPPLY_TYPES), ("scope", SCOPES), ("status", STATUSES)):
        if key in clean and clean[key] not in allowed:
            raise ParseError(f"{name}/{key}: expected one of {', '.join(allowed)}, got {excerpt(clean[key], 30)}")
    if "type" not in clean:
        raise ParseError(f"{name}/type: missing")
    return PowerSupply(name, clean)


def read_supplies(root: Path) -> list[PowerSupply] | None:
    """Every power supply under root, sorted by name; None when root does not exist.

    A supply with an unreadable or garbled `type` is skipped: it cannot be told apart.
    """
    try:
        names = sorted(p.name for p in root.iterdir())
    except FileNotFoundError:
        return None
    supplies = []
    for name in names:
        values = {}
        for key in SUPPLY_FILES:
            try:
                values[key] = (root / name / key).read_text(encoding="ascii", errors="replace")
            except OSError:  # absent (the other unit, a property the driver lacks) or unreadable
                continue
        try:
            supplies.append(parse_supply(name, values))
        except ParseError as e:
            log.debug("power supply skipped: %s", e)
    return supplies


def system_batteries(supplies: Sequence[PowerSupply]) -> list[PowerSupply]:
    """The batteries that power this computer: type Battery, scope not Device, present."""
    return [s for s in supplies
            if s.type == "Battery" and s.values.get("scope") != "Device" and s.values.get("present") != "0"]


def _ratio_of_sums(batteries: Sequence[PowerSupply], part: str, whole: str) -> float | None:
    """sum(part) / sum(whole) over the batteries that report both in one unit; a battery with a
    garbled figure is left out (the others still answer); None when none can tell."""
    for unit in UNITS:
        parts = wholes = 0
        for bat in batteries:
            try:
                p, w = bat.number(f"{unit}_{part}"), bat.number(f"{unit}_{whole}")
            except ParseError as e:
                log.debug("battery figure skipped: %s", e)
                continue
            if p is not None and w is not None:
                parts, wholes = parts + p, wholes + w
        if wholes > 0:
            return parts / wholes
    return None


def battery_charge(batteries: Sequence[PowerSupply]) -> float | None:
    """Charge ratio 0..1 of all system batteries together (energy_now / energy_full)."""
    ratio = _ratio_of_sums(batteries, "now", "full")
    if ratio is None:
        capacities = []
        for bat in batteries:
            try:
                cap = bat.number("capacity")
            except ParseError:
                continue
            if cap is not None:
                capacities.append(cap)
        ratio = sum(capacities) / len(capacities) / 100 if capacities else None
    return None if ratio is None else min(1.0, ratio)


def battery_wear(batteries: Sequence[PowerSupply]) -> float | None:
    """Full capacity / design capacity of all system batteries together; None when not known.

    Above 1 on a new battery (capped at 2, the wire bound); a design capacity of 0 means the
    firmware does not know it.
    """
    ratio = _ratio_of_sums(batteries, "full", "full_design")
    return None if ratio is None else min(2.0, ratio)


def on_mains(supplies: Sequence[PowerSupply], batteries: Sequence[PowerSupply]) -> bool | None:
    """Plugged in? None without a battery (a desktop: the question means nothing)."""
    if not batteries:
        return None
    chargers = [s.values["online"] for s in supplies if s.type in CHARGER_TYPES
                and s.values.get("scope") != "Device" and s.values.get("online", "").isdigit()]
    if chargers:
        return any(v != "0" for v in chargers)
    statuses = {b.values.get("status") for b in batteries}
    if statuses & {"Charging", "Full", "Not charging"}:
        return True
    return False if "Discharging" in statuses else None


@dataclass(frozen=True)
class Battery:
    charge_ratio: float | None = None
    plugged: bool | None = None
    wear_ratio: float | None = None


def sysfs_battery(root: Path) -> Battery | None:
    """The battery as Linux sysfs tells it; None when root does not exist (then ask psutil)."""
    supplies = read_supplies(root)
    if supplies is None:
        return None
    batteries = system_batteries(supplies)
    if not batteries:
        return Battery()
    return Battery(battery_charge(batteries), on_mains(supplies, batteries), battery_wear(batteries))


def default_disk_path() -> str:
    return os.environ.get("SystemDrive", "C:") + "\\" if sys.platform == "win32" else "/"


def _ratio(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 4)


T = TypeVar("T")


@dataclass
class _Sources:
    """Which sources failed during one read, and the error of each."""

    failed: dict[str, str] = field(default_factory=dict)

    def read(self, name: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except Exception as e:  # any failure of one source costs its fields only
            self.failed[name] = f"{type(e).__name__}: {e}"[:160]
            return None


@register("health")
class HealthProbe:
    """One `Health` record per collect.

    Options: `interval_s` (60), `disk_path` ("" = "/" or the system drive),
    `power_supply_root` ("/sys/class/power_supply"). Tests inject `ps` (a psutil-like
    module) and `now` (the wall clock for `at`). `note` names the sources that failed at the
    latest collect (None when all answered).
    """

    name = "health"
    interval_s = 60.0

    def __init__(self, *, interval_s: float = 60.0, disk_path: str = "",
                 power_supply_root: str = "/sys/class/power_supply", ps: Any = psutil, now: Now = utc_now) -> None:
        self.interval_s = interval_s
        self.disk_path = disk_path or default_disk_path()
        self.power_supply = Path(power_supply_root)
        self._ps, self._now = ps, now
        self.note: str | None = None
        self._failing: set[str] = set()

    async def collect(self) -> list[Record]:
        return [await asyncio.to_thread(self._read, self._now())]

    def _load(self) -> float:
        # psutil emulates the load average on Windows (0 at first, then a 5 s average).
        return round(min(1024.0, self._ps.getloadavg()[0] / (self._ps.cpu_count() or 1)), 4)

    def _memory(self) -> float | None:
        mem = self._ps.virtual_memory()
        return _ratio((mem.total - mem.available) / mem.total) if mem.total else None

    def _disk(self) -> tuple[int, int]:
        disk = self._ps.disk_usage(self.disk_path)
        return int(disk.free), int(disk.total)

    def _battery(self) -> Battery:
        from_sysfs = sysfs_battery(self.power_supply)
        if from_sysfs is not None:
            return from_sysfs
        if not hasattr(self._ps, "sensors_battery"):
            return Battery()
        # Linux without power_supply (a VM) makes psutil raise FileNotFoundError: caught by
        # the caller, it empties the battery fields and nothing else.
        bat = self._ps.sensors_battery()
        if bat is None:
            return Battery()
        plugged = bool(bat.power_plugged) if bat.power_plugged is not None else None
        return Battery(charge_ratio=bat.percent / 100, plugged=plugged)

    def _boot(self) -> datetime:
        return datetime.fromtimestamp(self._ps.boot_time(), UTC)

    def _read(self, at: datetime) -> Health:
        src = _Sources()
        load = src.read("load", self._load)
        memory = src.read("memory", self._memory)
        disk = src.read("disk", self._disk)
        battery = src.read("battery", self._battery) or Battery()
        boot = src.read("boot time", self._boot)
        self._report(src.failed)
        return Health(
            seq=0, at=at,
            cpu_load_ratio=load,
            memory_used_ratio=memory,
            disk_free_bytes=disk[0] if disk else None, disk_total_bytes=disk[1] if disk else None,
            battery_ratio=_ratio(battery.charge_ratio) if battery.charge_ratio is not None else None,
            battery_plugged=battery.plugged,
            battery_health_ratio=round(battery.wear_ratio, 4) if battery.wear_ratio is not None else None,
            # boot_time follows the wall clock: a clock step can put it after `at`.
            uptime_s=round(max(0.0, (at - boot).total_seconds()), 1) if boot else None,
            boot_at=boot,
        )

    def _report(self, failed: dict[str, str]) -> None:
        """Log a source when it starts failing and when it recovers, not at every collect."""
        for name in sorted(failed.keys() - self._failing):
            log.warning("health: %s unreadable, its fields are left empty: %s", name, failed[name])
        for name in sorted(self._failing - failed.keys()):
            log.info("health: %s readable again", name)
        self._failing = set(failed)
        self.note = "; ".join(f"{name} unreadable ({err})" for name, err in sorted(failed.items())) or None
