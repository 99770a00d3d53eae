"""A simulated USB backup disk as the disk probe finds and reads one, for tests and the demo fleet.

A real disk reaches the probe (agents/tice_agent/probes/disk.py) through three doors, and the
simulator serves each of them from one directory (`root`):

- sysfs and udev: `root/sys/block/sdX` links into a device tree whose path goes through a USB
  port (`.../usb2/2-1/...`), with `size` (512-byte sectors), `dev` and the bridge's `model`;
  `root/udev/data/b8:N` holds udev's properties (`ID_BUS=usb`, the bridge's `ID_SERIAL_SHORT`).
  The PC's own SATA disk, `sda`, is there too and is not a backup disk.
- smartctl: `python -m tice_agent.simulators.smartctl --root DIR -j -a [-d sat] /dev/sdX` answers
  as smartmontools 7.3 does (the shapes of agents/tests/fixtures/disk/), with its exit status a
  bit mask: bit 0 a bad command line, bit 1 a device that could not be opened, bit 2 a SMART
  command that failed, bits 3 and 4 a failing disk. A bridge smartctl knows (`bridge="sat"`)
  answers at once; an unknown one says "Unknown USB bridge" (exit 1) until asked with
  `-d sat`; a `scsi` one shows a SCSI disk without SMART (exit 4) and fails through `-d sat`.
- the mount table and free space: `partitions()` lists each disk's file system (`/dev/sdX1`
  mounted on a directory under `root/media/`) and `usage(path)` gives its figures, in the shapes
  of psutil's `disk_partitions()` and `disk_usage()`, which the probe takes as options.

`probe_options()` gives the probe's options that point it at all three. The disks live in
`root/disks.json`, so the smartctl stand-in (another process) reads what `plug` and `unplug` did.
Serial numbers are made up.

    python -m tice_agent.simulators.smartctl --root DIR --plug [--failing] [--bridge unknown]
    python -m tice_agent.simulators.smartctl --root DIR -j -a /dev/sdb
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

BRIDGES = ("sat", "unknown", "scsi")
EXIT_BAD_COMMAND, EXIT_OPEN_FAILED, EXIT_SMART_FAILED = 0x01, 0x02, 0x04
EXIT_DISK_FAILING, EXIT_PREFAIL_BELOW_THRESHOLD = 0x08, 0x10
SECTOR = 512  # sysfs counts sizes in 512-byte sectors, whatever the disk's own blocks


@dataclass
class SimDisk:
    """One external disk in its USB enclosure. Defaults: the 2 TB WD Elements of usb-sat-ok.json."""

    serial: str = "WD-WX21A19ABCDE"          # the disk's own, as smartctl reads it through the bridge
    model: str = "WDC WD20SDRW-11VUUS0"
    family: str = "Western Digital Elements / My Passport (USB, AF)"
    capacity_bytes: int = 2000398934016
    free_bytes: int = 1_234_567_168           # on its one file system
    passed: bool = True                      # SMART's overall health self-assessment
    power_on_hours: int = 1523
    temperature_c: int = 31
    bridge: str = "sat"                      # sat | unknown | scsi (see the module's docstring)
    bridge_model: str = "Elements 25A2"      # what sysfs and udev call it: the enclosure
    label: str = "SAUVEGARDE"                # the file system's volume label, its mount point's name

    def __post_init__(self) -> None:
        if self.bridge not in BRIDGES:
            raise ValueError(f"bridge: expected one of {', '.join(BRIDGES)}, got {self.bridge!r}")
        if not 0 <= self.free_bytes <= self.capacity_bytes:
            raise ValueError("free_bytes: expected 0 to capacity_bytes")

    @property
    def bridge_serial(self) -> str:
        """udev's ID_SERIAL_SHORT: WD bridges give the disk's serial in hex (usb-sat-ok's udev file)."""
        return self.serial.removeprefix("WD-").encode().hex().upper()


class Mount(NamedTuple):
    """A row of the mount table, as psutil.disk_partitions() gives it."""

    device: str
    mountpoint: str
    fstype: str
    opts: str


class Usage(NamedTuple):
    """A file system's figures, as psutil.disk_usage() gives them."""

    total: int
    used: int
    free: int
    percent: float


class SmartctlSimulator:
    """USB disks plugged into a simulated PC under `root`: `plug(disk) -> "/dev/sdb"`, `unplug(node)`,
    and `probe_options()` for DiskProbe(**options)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.sys_block = self.root / "sys" / "block"
        self.udev_data = self.root / "udev" / "data"
        self.sys_block.mkdir(parents=True, exist_ok=True)
        self.udev_data.mkdir(parents=True, exist_ok=True)
        if not (self.sys_block / "sda").exists():
            self._own_disk()

    # ---------------------------------------------------------------- the disks

    @property
    def state_file(self) -> Path:
        return self.root / "disks.json"

    def disks(self) -> dict[str, SimDisk]:
        """The disks plugged in now, by device name (sdb, sdc...)."""
        return load(self.root)

    def plug(self, disk: SimDisk) -> str:
        """Plug `disk` into the next USB port: its sysfs entry, udev data and mount point appear."""
        plugged = self.disks()
        name = next(f"sd{c}" for c in "bcdefghijklmnopqrstuvwxyz" if f"sd{c}" not in plugged)
        index = ord(name[2]) - ord("a")  # sdb: 1
        host = 5 + index
        device = (self.root / "sys" / "devices" / "pci0000:00" / "0000:00:14.0" / "usb2" / f"2-{index}"
                  / f"2-{index}:1.0" / f"host{host}" / f"target{host}:0:0" / f"{host}:0:0:0")
        self._block(device, name, f"8:{16 * index}", disk.capacity_bytes // SECTOR, disk.bridge_model)
        (self.udev_data / f"b8:{16 * index}").write_text(
            f"S:disk/by-id/usb-{disk.bridge_model.replace(' ', '_')}_{disk.bridge_serial}-0:0\n"
            f"E:ID_BUS=usb\nE:ID_MODEL={disk.bridge_model.replace(' ', '_')}\n"
            f"E:ID_SERIAL={disk.bridge_model.replace(' ', '_')}_{disk.bridge_serial}-0:0\n"
            f"E:ID_SERIAL_SHORT={disk.bridge_serial}\nG:systemd\n", encoding="utf-8")
        self._mountpoint(name, disk).mkdir(parents=True, exist_ok=True)
        plugged[name] = disk
        self._save(plugged)
        return f"/dev/{name}"

    def unplug(self, node: str) -> None:
        """Take the disk at `node` (/dev/sdb) away: sysfs, udev and the mount table forget it."""
        name = node.removeprefix("/dev/")
        plugged = self.disks()
        disk = plugged.pop(name)
        (self.sys_block / name).unlink()
        index = ord(name[2]) - ord("a")
        (self.udev_data / f"b8:{16 * index}").unlink(missing_ok=True)
        self._mountpoint(name, disk).rmdir()
        self._save(plugged)

    def _own_disk(self) -> None:
        device = (self.root / "sys" / "devices" / "pci0000:00" / "0000:00:17.0" / "ata1" / "host0"
                  / "target0:0:0" / "0:0:0:0")
        self._block(device, "sda", "8:0", 500107862016 // SECTOR, "Samsung SSD 870")

    def _block(self, device: Path, name: str, dev: str, sectors: int, model: str) -> None:
        block = device / "block" / name
        block.mkdir(parents=True, exist_ok=True)
        (block / "dev").write_text(f"{dev}\n")
        (block / "size").write_text(f"{sectors}\n")
        (block / "removable").write_text("0\n")
        (device / "model").write_text(f"{model:<16}\n")  # sysfs pads the SCSI model to 16
        if not (block / "device").is_symlink():
            (block / "device").symlink_to("../..")
        link = self.sys_block / name
        if link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(block, self.sys_block))

    def _mountpoint(self, name: str, disk: SimDisk) -> Path:
        return self.root / "media" / f"{disk.label}-{name}"

    def _save(self, plugged: dict[str, SimDisk]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({n: asdict(d) for n, d in plugged.items()}, indent=1), encoding="utf-8")
        tmp.replace(self.state_file)

    # ---------------------------------------------------------------- what the probe reads

    def partitions(self) -> list[Mount]:
        """The mount table: each plugged disk's one file system, `/dev/sdX1` on root/media/LABEL-sdX."""
        return [Mount(f"/dev/{name}1", str(self._mountpoint(name, disk)), "exfat", "rw,nosuid,nodev")
                for name, disk in sorted(self.disks().items())]

    def usage(self, path: str) -> Usage:
        """The figures of the file system mounted on `path`; FileNotFoundError for no mount point of ours."""
        for name, disk in self.disks().items():
            if str(self._mountpoint(name, disk)) == path:
                used = disk.capacity_bytes - disk.free_bytes
                return Usage(disk.capacity_bytes, used, disk.free_bytes, round(100 * used / disk.capacity_bytes, 1))
        raise FileNotFoundError(f"no file system mounted on {path}")

    def command(self) -> list[str]:
        """The smartctl stand-in's command line, before smartctl's own arguments."""
        return [sys.executable, "-m", "tice_agent.simulators.smartctl", "--root", str(self.root)]

    def probe_options(self) -> dict[str, Any]:
        """DiskProbe options that read this PC: sysfs, udev, smartctl, the mount table, on Linux."""
        return {"sys_block": str(self.sys_block), "udev_data": str(self.udev_data), "smartctl": self.command(),
                "partitions": self.partitions, "usage": self.usage, "platform": "linux"}


def load(root: Path) -> dict[str, SimDisk]:
    try:
        doc = json.loads((root / "disks.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    known = {f.name for f in fields(SimDisk)}
    return {name: SimDisk(**{k: v for k, v in d.items() if k in known}) for name, d in doc.items()}


# -------------------------------------------------------------------- the smartctl stand-in

def answer(disks: dict[str, SimDisk], argv: list[str], now: float | None = None) -> tuple[dict[str, Any], int]:
    """smartctl's JSON document and exit status for its arguments `argv` (without "smartctl")."""
    now = time.time() if now is None else now
    kind, node, bad = None, None, []
    args = iter(argv)
    for a in args:
        if a in ("-j", "--json", "-a", "--all"):
            continue
        if a in ("-d", "--device"):
            kind = next(args, "")
        elif a.startswith("--device="):
            kind = a.split("=", 1)[1]
        elif a.startswith("-") or node is not None:
            bad.append(a)
        else:
            node = a
    doc: dict[str, Any] = {
        "json_format_version": [1, 0],
        "smartctl": {"version": [7, 3], "svn_revision": "5338", "platform_info": "x86_64-linux-simulated",
                     "build_info": "(tice_agent.simulators.smartctl)", "argv": ["smartctl", *argv]},
        "local_time": {"time_t": int(now), "asctime": time.strftime("%a %b %d %H:%M:%S %Y %Z", time.localtime(now))}}
    if bad or node is None or kind not in (None, "auto", "sat", "scsi"):
        if bad:
            why = f"UNRECOGNIZED OPTION: {bad[0]}"
        elif node is None:
            why = "no device given"
        else:
            why = f"INVALID ARGUMENT TO -d: {kind}"
        return _said(doc, [why, "Use smartctl -h to get a usage summary"], EXIT_BAD_COMMAND)
    disk = disks.get(node.removeprefix("/dev/"))
    if disk is None:
        return _said(doc, [f"Smartctl open device: {node} failed: No such device"], EXIT_OPEN_FAILED)
    sat = kind == "sat" or (kind in (None, "auto") and disk.bridge == "sat")
    if disk.bridge == "unknown" and kind in (None, "auto"):
        return _said(doc, [f"{node}: Unknown USB bridge [0x1058:0x25a2 (0x1021)]",
                           "Please specify device type with the -d option."], EXIT_BAD_COMMAND)
    if disk.bridge == "scsi" and kind == "sat":
        return _said(doc, ["Read Device Identity failed: scsi error unsupported field in scsi command",
                           "A mandatory SMART command failed: exiting. To continue, add one or more "
                           "'-T permissive' options."], EXIT_OPEN_FAILED)
    if not sat:
        return _scsi(doc, node, disk)
    return _ata(doc, node, disk)


def _said(doc: dict[str, Any], messages: list[str], status: int, severity: str = "error") -> tuple[dict[str, Any], int]:
    doc["smartctl"]["messages"] = [{"string": m, "severity": severity} for m in messages]
    doc["smartctl"]["exit_status"] = status
    return doc, status


def _ata(doc: dict[str, Any], node: str, d: SimDisk) -> tuple[dict[str, Any], int]:
    """A disk read through a SAT bridge: model, serial, capacity, SMART health and attributes."""
    reallocated = (200, 140, "") if d.passed else (120, 140, "FAILING_NOW")  # value, threshold, when_failed
    doc.update({
        "device": {"name": node, "info_name": f"{node} [SAT]", "type": "sat", "protocol": "ATA"},
        "model_family": d.family, "model_name": d.model, "serial_number": d.serial, "firmware_version": "01.01A01",
        "user_capacity": {"blocks": d.capacity_bytes // SECTOR, "bytes": d.capacity_bytes},
        "logical_block_size": SECTOR, "physical_block_size": 4096, "rotation_rate": 5400,
        "in_smartctl_database": True, "smart_support": {"available": True, "enabled": True},
        "smart_status": {"passed": d.passed},
        "ata_smart_attributes": {"revision": 16, "table": [
            _attribute(5, "Reallocated_Sector_Ct", *reallocated, 0 if d.passed else 1872,
                       prefailure=True),
            _attribute(9, "Power_On_Hours", 98, 0, "", d.power_on_hours),
            _attribute(194, "Temperature_Celsius", 116, 0, "", d.temperature_c)]},
        "power_on_time": {"hours": d.power_on_hours}, "power_cycle_count": 412,
        "temperature": {"current": d.temperature_c},
        "ata_smart_error_log": {"summary": {"revision": 1, "count": 0}},
        "ata_smart_self_test_log": {"standard": {"revision": 1, "count": 0}}})
    if d.passed:
        doc["smartctl"]["exit_status"] = 0
        return doc, 0
    return _said(doc, ["SMART overall-health self-assessment test result: FAILED!"],
                 EXIT_DISK_FAILING | EXIT_PREFAIL_BELOW_THRESHOLD)


def _attribute(ident: int, name: str, value: int, thresh: int, when_failed: str, raw: int, *,
               prefailure: bool = False) -> dict[str, Any]:
    return {"id": ident, "name": name, "value": value, "worst": value, "thresh": thresh, "when_failed": when_failed,
            "flags": {"value": 51 if prefailure else 50, "string": "PO--CK " if prefailure else "-O--CK ",
                      "prefailure": prefailure, "updated_online": True, "performance": False, "error_rate": False,
                      "event_count": True, "auto_keep": True},
            "raw": {"value": raw, "string": str(raw)}}


def _scsi(doc: dict[str, Any], node: str, d: SimDisk) -> tuple[dict[str, Any], int]:
    """A bridge that shows a SCSI disk and hides SMART (usb-scsi-no-smart.json)."""
    doc.update({
        "device": {"name": node, "info_name": node, "type": "scsi", "protocol": "SCSI"},
        "scsi_vendor": d.bridge_model.split()[0], "scsi_product": d.bridge_model, "scsi_model_name": d.bridge_model,
        "scsi_revision": "0710", "user_capacity": {"blocks": d.capacity_bytes // SECTOR, "bytes": d.capacity_bytes},
        "logical_block_size": SECTOR, "serial_number": d.serial, "smart_support": {"available": False},
        "temperature": {"current": 0}})
    return _said(doc, ["SMART support is: Unavailable - device lacks SMART capability."], EXIT_SMART_FAILED,
                 severity="information")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["--root"] or len(argv) < 2:
        print("usage: python -m tice_agent.simulators.smartctl --root DIR (--plug [--failing] [--bridge B] | "
              "-j -a [-d sat] /dev/sdX)", file=sys.stderr)
        return EXIT_BAD_COMMAND
    root, rest = Path(argv[1]), argv[2:]
    if "--plug" in rest:
        p = argparse.ArgumentParser(prog="python -m tice_agent.simulators.smartctl --root DIR --plug",
                                    description="Plug a simulated USB backup disk into the PC under DIR.")
        p.add_argument("--plug", action="store_true")
        p.add_argument("--failing", action="store_true", help="SMART's health check fails")
        p.add_argument("--bridge", choices=BRIDGES, default="sat", help="how smartctl sees its USB bridge")
        p.add_argument("--serial", default=SimDisk.serial)
        args = p.parse_args(rest)
        sim = SmartctlSimulator(root)
        node = sim.plug(SimDisk(serial=args.serial, passed=not args.failing, bridge=args.bridge))
        print(f"disk {args.serial} plugged in as {node} under {root} (SMART: "
              f"{'failing' if args.failing else 'passed'}, bridge: {args.bridge}); the probe reads "
              f"{root / 'sys' / 'block'}, {root / 'udev' / 'data'} and this command as smartctl")
        return 0
    if "-j" not in rest and "--json" not in rest:
        print("this smartctl stand-in answers in JSON only (-j)", file=sys.stderr)
        return EXIT_BAD_COMMAND
    doc, status = answer(load(root), rest)
    print(json.dumps(doc, indent=2))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
