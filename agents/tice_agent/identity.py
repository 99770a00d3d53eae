"""Which machine is this agent on: the serial it enrols with, and signs of a copied disk.

The serial `tice-agent enroll` uses when `--serial` is not given:
1. the hardware serial. Linux: DMI `product_serial`, else `board_serial` (/sys/class/dmi/id/;
   most distributions let only root read them). Windows: the BIOS serial (wmic, else
   PowerShell), else the baseboard's. Values firmware vendors leave there ("To be filled by
   O.E.M.", "Default string", "0123456789", "System Serial Number", all zeros...) are not
   serials and are skipped;
2. else this install's own id, `iid-<32 hex digits>`: random, made the first time it is
   needed and kept in the state directory (`identity.json`).
Never /etc/machine-id: a disk image carries it to every laptop cloned from it (unless the image
was prepared with it emptied), so they all enrolled as one device and revoked each other's
token at each enrolment.

`identity.json` also keeps a fingerprint of the hardware it was made on: salted SHA-256 hashes
(never the values) of the permanent MAC addresses of the machine's own network cards, of its
disks' hardware ids (/dev/disk/by-id: model and serial, not the content-derived LVM or LUKS ids
that a clone copies) and of /etc/machine-id. The salt is random per install, so the hashes
cannot be matched across machines, and nothing of it is ever sent. When the state directory is
found on hardware that shares none of those hashes, it was made on another machine: a disk
image taken after the agent was installed (the same machine-id says so), or a home directory
moved. Its credentials, spool and install id then belong to the other machine: `status` and
`run` warn, and `enroll` makes a new install id for this one.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from tice_agent import state as st
from tice_wire import MAX_SHORT_TEXT

log = logging.getLogger("tice.agent.identity")

IDENTITY = "identity.json"

# Values firmware vendors leave in serial fields: not serials. Compared in lower case.
PLACEHOLDERS = frozenset({
    "", "0", "none", "null", "n/a", "na", "not available", "not applicable", "not specified", "unknown",
    "default string", "to be filled by o.e.m.", "to be filled by oem", "o.e.m.", "oem", "system serial number",
    "chassis serial number", "base board serial number", "serial number", "type1productconfigid", "0123456789",
    "123456789", "1234567890", "01234567890", "invalid", "empty", "sn", "xxxxxxxxxx", "none of the above",
})
# Disk ids derived from the content (LVM, LUKS, RAID, partitions): a clone copies them.
HARDWARE_DISK_IDS = ("ata-", "nvme-", "scsi-", "wwn-", "mmc-", "virtio-", "usb-")

RunCmd = Callable[[list[str]], "str | None"]


def usable(serial: str | None) -> str | None:
    """The serial, stripped and bounded, or None for a placeholder (see PLACEHOLDERS, and any
    value made of one repeated character: "00000000", "FFFFFFFF", "XXXXXXXX")."""
    if serial is None:
        return None
    s = serial.strip().strip("\x00").strip()
    low = s.lower()
    if low in PLACEHOLDERS or len(set(low)) <= 1 or "to be filled" in low or "o.e.m" in low:
        return None
    return s[:MAX_SHORT_TEXT]


def _run(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _wmic_value(out: str | None) -> str | None:
    lines = [ln.strip() for ln in (out or "").splitlines() if ln.strip()]
    return usable(lines[1]) if len(lines) >= 2 else None


def hardware_serial(sys_root: Path = Path("/"), platform: str = sys.platform,
                    run: RunCmd = _run) -> tuple[str, str] | None:
    """(serial, where it came from) from the firmware, or None when none is readable."""
    if platform == "win32":
        for what, wmic, cim in (("BIOS serial", "bios", "Win32_BIOS"), ("baseboard serial", "baseboard",
                                                                       "Win32_BaseBoard")):
            if s := _wmic_value(run(["wmic", wmic, "get", "serialnumber"])):
                return s, what
            out = run(["powershell", "-NoProfile", "-NonInteractive", "-Command",
                       f"(Get-CimInstance -ClassName {cim}).SerialNumber"])
            if out and (s := usable(out)):
                return s, what
        return None
    for name in ("product_serial", "board_serial"):
        try:
            text = (sys_root / "sys/class/dmi/id" / name).read_text(encoding="utf-8", errors="replace")
        except OSError:  # absent, or readable by root only
            continue
        if s := usable(text):
            return s, f"DMI {name}"
    return None


# ---------------------------------------------------------------- the install's identity file

class Identity(msgspec.Struct, kw_only=True):
    install_id: uuid.UUID
    created_at: datetime
    salt: str
    machine_id: str | None = None  # salted hash of /etc/machine-id
    hardware: list[str] = []       # salted hashes of permanent MACs and disk hardware ids


def _hash(salt: str, value: str) -> str:
    return hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:16]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def machine_id(sys_root: Path = Path("/")) -> str | None:
    for path in ("etc/machine-id", "var/lib/dbus/machine-id"):
        if mid := _read(sys_root / path):
            return mid
    return None


def hardware_facts(sys_root: Path = Path("/"), platform: str = sys.platform) -> set[str]:
    """Facts tied to this machine's hardware: permanent MAC addresses of its own network
    cards (a `device` in sysfs; `addr_assign_type` 0 = permanent, not random or set by
    software) and disks' hardware ids. Elsewhere than Linux, psutil's link addresses."""
    facts = set()
    if platform == "win32" or not (sys_root / "sys/class/net").is_dir():
        import psutil

        for entries in psutil.net_if_addrs().values():
            for e in entries:
                if e.family == psutil.AF_LINK and e.address and set(e.address) - {"0", ":", "-"}:
                    facts.add("mac:" + e.address.lower().replace("-", ":"))
        return facts
    for iface in sorted((sys_root / "sys/class/net").iterdir()):
        mac = _read(iface / "address")
        if (iface / "device").exists() and _read(iface / "addr_assign_type") == "0" and mac \
                and set(mac) - {"0", ":"}:
            facts.add("mac:" + mac.lower())
    try:
        disks = sorted(p.name for p in (sys_root / "dev/disk/by-id").iterdir())
    except OSError:
        disks = []
    facts |= {"disk:" + d for d in disks if d.startswith(HARDWARE_DISK_IDS) and "-part" not in d}
    return facts


def new_identity(sys_root: Path = Path("/"), platform: str = sys.platform) -> Identity:
    salt = secrets.token_hex(16)
    mid = machine_id(sys_root)
    return Identity(install_id=uuid.uuid4(), created_at=datetime.now(UTC), salt=salt,
                    machine_id=_hash(salt, mid) if mid else None,
                    hardware=sorted(_hash(salt, f) for f in hardware_facts(sys_root, platform)))


def load(state_dir: Path) -> Identity | None:
    try:
        return msgspec.json.decode((state_dir / IDENTITY).read_bytes(), type=Identity)
    except (FileNotFoundError, msgspec.DecodeError):
        return None


def save(state_dir: Path, ident: Identity) -> None:
    st.ensure_dir(state_dir)
    st.write_private(state_dir / IDENTITY, msgspec.json.encode(ident))


def copied_from_elsewhere(ident: Identity, sys_root: Path = Path("/"), platform: str = sys.platform) -> str | None:
    """Why this identity looks made on another machine (a sentence), or None.

    Made elsewhere = none of the hardware facts it recorded is here, while both sides know
    some: one new network card or disk leaves the others in common.
    """
    here = {_hash(ident.salt, f) for f in hardware_facts(sys_root, platform)}
    if not ident.hardware or not here or here & set(ident.hardware):
        return None
    mid = machine_id(sys_root)
    if ident.machine_id and mid and _hash(ident.salt, mid) == ident.machine_id:
        return ("this disk looks cloned from another machine: the state directory and /etc/machine-id were made "
                "on other hardware (a disk image taken after the agent was installed)")
    return "the state directory was made on another machine (copied or moved here)"


def ensure(state_dir: Path, sys_root: Path = Path("/"), platform: str = sys.platform) -> Identity:
    """This install's identity, made and saved when missing."""
    ident = load(state_dir)
    if ident is None:
        ident = new_identity(sys_root, platform)
        save(state_dir, ident)
    return ident


def machine_serial(state_dir: Path, sys_root: Path = Path("/"), platform: str = sys.platform,
                   run: RunCmd = _run) -> tuple[str, str]:
    """(serial, where it came from) for enrolment, by the rule in the module doc.

    Keeps the identity file up to date: an identity made on another machine is replaced by a
    new one for this machine, with a warning (the install id must not be the other's).
    """
    ident = load(state_dir)
    if ident is not None and (why := copied_from_elsewhere(ident, sys_root, platform)):
        log.warning("%s; this machine gets its own install id", why)
        ident = None
    if ident is None:
        ident = new_identity(sys_root, platform)
        save(state_dir, ident)
    hw = hardware_serial(sys_root, platform, run)
    if hw is not None:
        return hw
    return f"iid-{ident.install_id.hex}", "this install's own id: no hardware serial readable"


def legacy_serial(serial: str) -> bool:
    """A serial older agents derived from /etc/machine-id, which cloned laptops share."""
    return serial.startswith("mid-") and len(serial) == 36


LEGACY_WARNING = ("this device enrolled with a serial derived from /etc/machine-id, which every laptop cloned "
                  "from one disk image shares: enrol again (tice-agent enroll) to use the hardware serial or this "
                  "install's own id")


def warnings(state_dir: Path, serial: str | None, sys_root: Path = Path("/"),
             platform: str = sys.platform) -> list[str]:
    """What `status` and `run` should say about this machine's identity (read-only)."""
    out = []
    ident = load(state_dir)
    if ident is not None and (why := copied_from_elsewhere(ident, sys_root, platform)):
        out.append(why + "; its credentials and spool belong to that machine: delete the state directory "
                   "and enrol this machine again (tice-agent enroll)")
    if serial and legacy_serial(serial):
        out.append(LEGACY_WARNING)
    return out
