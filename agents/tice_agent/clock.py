"""The agent's clocks: the wall clock, a boot clock that counts suspend, and the boot id.

Records carry the wall clock (`at`), which NTP may step at any moment: a school PC with a dead
CMOS battery boots at 2009-01-01 and is put right minutes later. Like journald (which stores a
boot id and a monotonic time with every entry), the spool keeps, with each record, the boot
it was taken in and a *boot clock* reading, so that records of the running boot can be
re-dated when the wall clock jumps (agents/tice_agent/spool.py).

The boot clock must keep counting while the machine is suspended, or a laptop closed
overnight would look like a clock step of 16 hours:
- Linux: CLOCK_BOOTTIME ("includes any time that the system is suspended", clock_gettime(2));
  CLOCK_MONOTONIC, behind time.monotonic(), stops in suspend.
- Windows: GetTickCount64, which includes time spent in sleep or hibernation (PEP 418);
  time.monotonic() changed source in Python 3.13, so it is not relied on.
- elsewhere: time.monotonic() (on macOS it stops in sleep: a sleep there looks like a step).

The boot id: Linux /proc/sys/kernel/random/boot_id (a random UUID per boot); Windows the
`BootId` boot counter under ...\\Memory Management\\PrefetchParameters; elsewhere the boot
time rounded to the minute from psutil (it moves when the wall clock is stepped, so after a
step records of the running boot are taken for another boot's and simply not re-dated).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

BootClock = Callable[[], float]
WallClock = Callable[[], float]

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def wall() -> float:
    """Unix seconds from the wall clock (the one NTP steps)."""
    return time.time()


def utc_now() -> datetime:
    return datetime.now(UTC)


def _boot_clock() -> BootClock:
    if sys.platform.startswith("linux") and hasattr(time, "CLOCK_BOOTTIME"):
        return lambda: time.clock_gettime(time.CLOCK_BOOTTIME)
    if sys.platform == "win32":  # pragma: no cover - Windows only
        import ctypes

        tick = ctypes.windll.kernel32.GetTickCount64  # type: ignore[attr-defined]
        tick.restype = ctypes.c_uint64
        return lambda: tick() / 1000.0
    return time.monotonic  # pragma: no cover - neither Linux nor Windows


boot_clock: BootClock = _boot_clock()
"""Seconds since boot, suspend included (see the module doc for the source on each system)."""


def boot_id(path: Path = BOOT_ID_FILE, platform: str = sys.platform) -> str:
    """An id of the running boot: the same for every process until the next boot."""
    if platform.startswith("linux"):
        try:
            value = path.read_text(encoding="ascii").strip()
        except OSError:
            value = ""
        if value:
            return value
    if platform == "win32":  # pragma: no cover - Windows only
        counter = _windows_boot_counter()
        if counter is not None:
            return f"win-boot-{counter}"
    import psutil

    return f"boot-at-{int(psutil.boot_time() // 60)}"


def _windows_boot_counter() -> int | None:  # pragma: no cover - Windows only
    """Windows counts its boots in the registry (BootId, PrefetchParameters)."""
    if sys.platform != "win32":
        return None
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\Session Manager"
                            r"\Memory Management\PrefetchParameters") as key:
            return int(winreg.QueryValueEx(key, "BootId")[0])
    except (OSError, ValueError):
        return None
