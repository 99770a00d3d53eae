"""What the agent's tests share (and tests/ borrows): settable clocks, a wire round-trip check,
a condition wait, and a small filesystem that really fills.

Imports nothing but the agent's own distribution (tice-agent, tice-wire) and the standard library:
these tests run in a venv holding only the agent."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from tice_wire import AnyRecord


class Clock:
    """A monotonic clock the test moves by hand (`clock.t += 5`)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Machine:
    """One computer's clocks: a boot clock that counts suspend (CLOCK_BOOTTIME), and a wall
    clock that follows it until someone steps it (NTP)."""

    def __init__(self, wall: datetime) -> None:
        self.boot = 1000.0                       # seconds since boot, suspend included
        self.offset = wall.timestamp() - self.boot  # wall clock minus boot clock

    def boot_clock(self) -> float:
        return self.boot

    def wall(self) -> float:
        return self.boot + self.offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.wall(), UTC)

    def run(self, seconds: float) -> None:
        self.boot += seconds

    suspend = run  # the boot clock counts suspend; only the sampler's gaps tell them apart

    def step_wall(self, to: datetime) -> None:
        """NTP steps the wall clock; the boot clock does not move."""
        self.offset = to.timestamp() - self.boot


def roundtrip(records: list) -> list:
    """Every record survives JSON encoding and decoding as the collector reads it."""
    out = [msgspec.json.decode(msgspec.json.encode(r), type=AnyRecord) for r in records]
    assert out == records
    return out


async def wait_until(check: Callable[[], Any] | Callable[[], Awaitable[Any]], what: str,
                     timeout: float = 60.0, every: float = 0.1) -> Any:
    """Poll `check` (plain or async) until it returns something truthy, and return that; the pause
    between looks doubles from 10 ms up to `every` seconds.

    Tests wait for a condition, never for a time: the bound is generous (shared 2-core machines
    are slow at times) and a timeout says what was awaited and what was last seen (a `check`
    may raise AssertionError to fail at once, say when a child process died).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    pause = min(every, 0.01)  # most conditions hold within milliseconds: look again soon, then less often
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last seen: {last!r})")
        await asyncio.sleep(pause)
        pause = min(every, pause * 2)


class SmallFilesystem:
    """A tmpfs of `size` bytes mounted at `where` for one test (the tests run as root where they
    can): a disk that really fills. `fill()` takes every free byte with a filler file, `free()`
    gives them back. `mount()` is False where no tmpfs can be mounted (no root, a container
    without CAP_SYS_ADMIN): the caller then limits file sizes instead (RLIMIT_FSIZE)."""

    def __init__(self, where: Path, size: int) -> None:
        self.where, self.size = where, size
        self.filler = where / "filler"
        self.mounted = False

    def mount(self) -> bool:
        if os.environ.get("TICE_TEST_NO_TMPFS") or not sys.platform.startswith("linux") or os.geteuid() != 0:
            return False
        self.where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs",
                               str(self.where)], capture_output=True, text=True)
        self.mounted = done.returncode == 0
        return self.mounted

    def free_bytes(self) -> int:
        st = os.statvfs(self.where)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Write the filler until the disk refuses even one byte; return its size."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):
                try:
                    while True:
                        os.write(fd, chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
        finally:
            os.close(fd)
        return self.filler.stat().st_size

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def umount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.where)], capture_output=True, check=False)
            self.mounted = False
