"""disk: the school director's external backup disk, when it is plugged into this PC.

Which disks: on Linux every USB disk (a block device whose sysfs path goes through a USB
port: `/sys/block/sd*` resolving under `.../usbN/...`); elsewhere, or to choose, the `devices`
option. For each: `smartctl -j -a <dev>` (smartmontools 7+) gives model, serial, capacity,
SMART health, power-on hours and temperature. Many USB bridges hide SMART unless smartctl is
told to pass ATA commands through (`-d sat`): when smartctl says "Unknown USB bridge" or sees
a SCSI disk without SMART, the probe asks again with `-d sat`, and reports the disk without
SMART when that fails too. smartctl's exit status is a bit mask of health findings, not a
failure: only bits 0-1 (bad command line, device not opened) are. Free space is that of the
disk's mounted file systems (psutil). Facts: smartctl(8) "EXIT STATUS" and `-d TYPE`, and
captured answers under agents/tests/fixtures/disk/.

No smartctl is not an error: on Linux the disks are still reported from sysfs and udev
(identity, capacity, free space), without SMART, and the log says once what to install.
smartctl needs the right to open the disk: run it through sudo (option `smartctl`), see
docs/peripherals.md.

The disk's identity is its serial number as a salted hash: smartctl's (the disk's own) when
smartctl can read the disk, else udev's (often the USB bridge's). The agent remembers the
disks it has seen (`state_file`), and reports each one that is absent with the last time it was
connected, so a backup routine that stopped shows up at the collector.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import psutil

from tice_agent.probes import register
from tice_agent.probes._identity import check_salt, peripheral_id, usable
from tice_agent.probes._run import (
    CommandError,
    DeviceErrors,
    Now,
    ParseError,
    RunCmdStatus,
    excerpt,
    run_cmd_status,
    utc_now,
)
from tice_agent.state import write_private
from tice_wire import Disk, Record

log = logging.getLogger("tice.agent.probes.disk")

MAX_REMEMBERED = 16  # disks remembered for their absence; the least recently seen are forgotten
EXIT_BAD_COMMAND, EXIT_OPEN_FAILED = 0x01, 0x02
_NEEDS_SAT = ("unknown usb bridge", "unsupported usb bridge", "specify device type", "please specify")


@dataclass
class Smart:
    """What one `smartctl -j -a` answer says about a disk."""

    exit_status: int
    messages: list[str]
    protocol: str | None = None
    model: str | None = None
    serial: str | None = None
    capacity_bytes: int | None = None
    smart_ok: bool | None = None
    power_on_hours: int | None = None
    temperature_c: float | None = None

    @property
    def opened(self) -> bool:
        return not self.exit_status & (EXIT_BAD_COMMAND | EXIT_OPEN_FAILED)

    @property
    def needs_sat(self) -> bool:
        """A USB bridge smartctl did not see through: worth asking again with `-d sat`."""
        said = " ".join(self.messages).lower()
        if any(m in said for m in _NEEDS_SAT):
            return True
        return self.opened and self.protocol == "SCSI" and self.smart_ok is None


def _typed(doc: dict[str, Any], path: str, kind: type | tuple[type, ...]) -> Any:
    node: Any = doc
    for key in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    if node is None:
        return None
    if isinstance(node, bool) and kind is not bool:
        raise ParseError(f"smartctl: {path}: expected a number, got {node!r}")
    if not isinstance(node, kind):
        raise ParseError(f"smartctl: {path}: expected {getattr(kind, '__name__', 'a number')}, "
                         f"got {excerpt(json.dumps(node), 30)}")
    return node


def parse_smartctl(text: str) -> Smart:
    """`smartctl -j -a` -> Smart. ParseError for output that is not smartctl's JSON (6.x has none)."""
    try:
        doc = json.loads(text)
    except ValueError:
        hint = " (smartmontools 7 or later is needed for JSON)" if "UNRECOGNIZED OPTION" in text else ""
        raise ParseError(f"smartctl: expected JSON{hint}, got {excerpt(text)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("smartctl"), dict):
        raise ParseError(f"smartctl: expected its JSON document, got {excerpt(text)}")
    exit_status = _typed(doc, "smartctl.exit_status", int) or 0
    messages = [m.get("string", "") for m in (_typed(doc, "smartctl.messages", list) or []) if isinstance(m, dict)]
    hours = _typed(doc, "power_on_time.hours", int)
    if hours is None:
        hours = _typed(doc, "nvme_smart_health_information_log.power_on_hours", int)
    temperature = _typed(doc, "temperature.current", (int, float))
    model = _typed(doc, "model_name", str) or _typed(doc, "scsi_model_name", str)
    return Smart(
        exit_status=exit_status, messages=messages,
        protocol=_typed(doc, "device.protocol", str),
        model=usable(model), serial=usable(_typed(doc, "serial_number", str)),
        capacity_bytes=_typed(doc, "user_capacity.bytes", int) or _typed(doc, "nvme_total_capacity", int),
        smart_ok=_typed(doc, "smart_status.passed", bool),
        power_on_hours=hours,
        # A bridge without SMART reports 0 °C: no reading, not a freezing disk.
        temperature_c=float(temperature) if temperature else None,
    )


def parse_udev(text: str) -> dict[str, str]:
    """A udev database file (`/run/udev/data/b8:16`) -> its E: properties."""
    return dict(line[2:].split("=", 1) for line in text.splitlines() if line.startswith("E:") and "=" in line)


@dataclass
class BlockDevice:
    """A disk found in sysfs: its node, whether it hangs off USB, size, model, udev serial."""

    node: str
    usb: bool
    size_bytes: int | None
    model: str | None
    udev_serial: str | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def scan_sysfs(sys_block: Path, udev_data: Path) -> list[BlockDevice]:
    """The SCSI/SATA disks under `sys_block` (sd*), with what sysfs and udev know of each."""
    found = []
    for entry in sorted(sys_block.glob("sd*")):
        real = os.path.realpath(entry)
        size = _read(entry / "size")
        dev = _read(entry / "dev") or ""
        udev = parse_udev(_read(udev_data / f"b{dev}") or "") if dev else {}
        found.append(BlockDevice(
            node=f"/dev/{entry.name}", usb="/usb" in real,
            size_bytes=int(size) * 512 if size and size.isdigit() else None,  # sysfs counts 512-byte sectors
            model=usable(_read(entry / "device" / "model")),
            udev_serial=usable(udev.get("ID_SERIAL_SHORT"))))
    return found


def free_bytes(node: str, partitions: Sequence[Any], usage: Callable[[str], Any]) -> int | None:
    """Free space summed over the mounted file systems of `node` (/dev/sdb1, /dev/sdb2...)."""
    own = re.compile(re.escape(node) + r"p?\d*")
    total, seen = 0, False
    for part in partitions:
        if own.fullmatch(os.path.realpath(part.device) if part.device.startswith("/dev/disk/") else part.device):
            try:
                total += int(usage(part.mountpoint).free)
                seen = True
            except OSError:
                continue
    return total if seen else None


class Remembered(msgspec.Struct):
    last_connected_at: datetime


@register("disk")
class DiskProbe:
    """One `Disk` record per backup disk plugged in, and one (present=false) per disk seen
    before and absent now.

    Options: `interval_s` (300), `devices` ([] = every USB disk, Linux; elsewhere list them:
    ["/dev/sdb"]), `smartctl` (["smartctl"]; ["sudo", "-n", "smartctl"] when the agent may not
    open disks itself), `timeout_s` (30 per smartctl run), `state_file` (filled in by the agent:
    where the disks seen are remembered), `id_salt` (filled in by the agent). Tests inject
    `run`, `sys_block`, `udev_data`, `partitions`, `usage`, `platform` and `now`.
    """

    name = "disk"
    interval_s = 300.0

    def __init__(self, *, interval_s: float = 300.0, devices: Sequence[str] = (),
                 smartctl: Sequence[str] = ("smartctl",), timeout_s: float = 30.0, state_file: str = "",
                 id_salt: str = "", run: RunCmdStatus = run_cmd_status, sys_block: str = "/sys/block",
                 udev_data: str = "/run/udev/data", partitions: Callable[[], Sequence[Any]] = psutil.disk_partitions,
                 usage: Callable[[str], Any] = psutil.disk_usage, platform: str = sys.platform,
                 now: Now = utc_now) -> None:
        if not smartctl or not all(isinstance(a, str) and a for a in smartctl):
            raise ValueError("smartctl: expected a command, like [\"smartctl\"] or [\"sudo\", \"-n\", \"smartctl\"]")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.interval_s = interval_s
        self.devices, self.smartctl, self.timeout_s = list(devices), list(smartctl), timeout_s
        self.salt = check_salt(id_salt)
        self.state_file = Path(state_file) if state_file else None
        self._run, self._platform, self._now = run, platform, now
        self.sys_block, self.udev_data = Path(sys_block), Path(udev_data)
        self._partitions, self._usage = partitions, usage
        self._said: set[str] = set()  # things the log says once
        self._memory: dict[str, Remembered] = self._load()

    # ---------------------------------------------------------------- memory of the disks seen

    def _load(self) -> dict[str, Remembered]:
        if self.state_file is None:
            return {}
        try:
            return msgspec.json.decode(self.state_file.read_bytes(), type=dict[str, Remembered])
        except FileNotFoundError:
            return {}
        except (OSError, msgspec.MsgspecError) as e:
            log.warning("disk: cannot read %s (%s); disks seen before are forgotten", self.state_file, e)
            return {}

    def _save(self, before: dict[str, Remembered]) -> None:
        keep = dict(sorted(self._memory.items(), key=lambda kv: kv[1].last_connected_at)[-MAX_REMEMBERED:])
        if len(keep) < len(self._memory):
            log.warning("disk: more than %d disks seen; the %d seen longest ago are no longer reported absent",
                        MAX_REMEMBERED, len(self._memory) - len(keep))
        self._memory = keep
        if self.state_file is None or keep == before:
            return
        try:
            write_private(self.state_file, msgspec.json.encode(keep), durable=False)
        except OSError as e:
            log.warning("disk: cannot write %s: %s", self.state_file, e)

    # ---------------------------------------------------------------- reading

    def _candidates(self) -> list[BlockDevice]:
        if self.devices:
            known = {d.node: d for d in scan_sysfs(self.sys_block, self.udev_data)} if self._platform == "linux" \
                else {}
            return [known.get(n, BlockDevice(n, True, None, None, None)) for n in self.devices]
        if self._platform != "linux":
            self._say_once("devices", "disk: list the backup disk in [probes.disk] devices "
                           "(found automatically on Linux only)")
            return []
        return [d for d in scan_sysfs(self.sys_block, self.udev_data) if d.usb]

    def _say_once(self, what: str, message: str) -> None:
        if what not in self._said:
            self._said.add(what)
            log.warning("%s", message)

    async def _smartctl(self, node: str, *kind: str) -> Smart | None:
        """One smartctl run; None when smartctl is not installed."""
        try:
            _, out, _ = await self._run([*self.smartctl, "-j", "-a", *kind, node], self.timeout_s)
        except CommandError as e:
            if "not installed" in str(e):
                self._say_once("smartctl", f"disk: {e}; backup disks are reported without SMART health "
                               "(install smartmontools 7 or later)")
                return None
            raise
        return parse_smartctl(out)

    async def _read(self, dev: BlockDevice, at: datetime) -> tuple[Disk | None, list[str]]:
        problems: list[str] = []
        smart = await self._smartctl(dev.node)
        if smart is not None and smart.needs_sat:
            retry = await self._smartctl(dev.node, "-d", "sat")
            if retry is not None and retry.opened:
                smart = retry if retry.smart_ok is not None or not smart.opened else smart
        if smart is not None and not smart.opened:
            said = "; ".join(smart.messages) or f"exit status {smart.exit_status}"
            if "no such device" in said.lower():
                return None, []  # unplugged between the scan and smartctl
            hint = " (let the agent run smartctl through sudo: docs/peripherals.md)" if "permission" in said.lower() \
                else ""
            problems.append(f"{dev.node}: smartctl: {said}{hint}")
            smart = None
        serial = (smart.serial if smart else None) or dev.udev_serial
        disk_id = peripheral_id(self.salt, "disk", serial)
        if disk_id is not None:
            self._memory[disk_id] = Remembered(last_connected_at=at)
        record = Disk(seq=0, at=at, present=True, disk_id=disk_id,
                      total_bytes=(smart.capacity_bytes if smart else None) or dev.size_bytes,
                      free_bytes=free_bytes(dev.node, self._partitions(), self._usage),
                      smart_ok=smart.smart_ok if smart else None,
                      power_on_hours=smart.power_on_hours if smart else None,
                      temperature_c=smart.temperature_c if smart else None,
                      last_connected_at=at)
        return record, problems

    async def collect(self) -> list[Record]:
        at = self._now()
        before = dict(self._memory)
        records: list[Record] = []
        problems: list[str] = []
        present: set[str] = set()
        for dev in self._candidates():
            try:
                record, trouble = await self._read(dev, at)
            except (CommandError, ParseError) as e:
                problems.append(f"{dev.node}: {e}")
                continue
            problems += trouble
            if record is not None:
                records.append(record)
                if record.disk_id:
                    present.add(record.disk_id)
        for disk_id, seen in sorted(self._memory.items()):
            if disk_id not in present:
                records.append(Disk(seq=0, at=at, present=False, disk_id=disk_id,
                                    last_connected_at=seen.last_connected_at))
        self._save(before)
        if problems:
            raise DeviceErrors(records, problems)
        return records
