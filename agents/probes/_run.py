"""Shared probe plumbing: typed errors, running a command with a timeout, clocks, and the
sampler that turns frequent looks into seconds per interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("tice.agent.probes")

# Injected by tests: a monotonic clock for durations, a wall clock for record times, a command runner.
Monotonic = Callable[[], float]
Now = Callable[[], datetime]
RunCmd = Callable[[list[str], float], Awaitable[str]]


class ParseError(ValueError):
    """Output we cannot read; the message says what was expected and what came."""


class CommandError(RuntimeError):
    """A command that is missing, failed, or did not answer in time."""


class DeviceErrors(Exception):
    """Some of a probe's devices (projectors, disks...) could not be read, the others could.

    The runner keeps `records` (the readings of the devices that answered, and the data that
    the failing ones still gave) and reports the probe run as failed with this message, so one
    bad device neither hides the others nor goes unnoticed.
    """

    def __init__(self, records: list[Any], problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.records = records
        self.problems = problems


def utc_now() -> datetime:
    return datetime.now(UTC)


def excerpt(text: str, limit: int = 60) -> str:
    """A short quoted piece of unreadable output for an error message (never the whole of it)."""
    return repr(text.strip()[:limit])


async def run_cmd(argv: list[str], timeout_s: float = 5.0) -> str:
    """Run argv (no shell) and return its stdout as text; raise CommandError otherwise."""
    code, out, err = await run_cmd_status(argv, timeout_s)
    if code != 0:
        reason = err.strip().splitlines()[:1]
        raise CommandError(f"{argv[0]}: exit {code}" + (f": {reason[0][:120]}" if reason else ""))
    return out


# Injected by tests: a command runner that also returns the exit status and stderr.
RunCmdStatus = Callable[[list[str], float], Awaitable[tuple[int, str, str]]]


async def run_cmd_status(argv: list[str], timeout_s: float = 5.0) -> tuple[int, str, str]:
    """Run argv (no shell); return (exit status, stdout, stderr), for commands whose exit
    status is data (smartctl's is a bit mask). CommandError when missing or too slow."""
    if shutil.which(argv[0]) is None:
        raise CommandError(f"{argv[0]}: not installed")
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE,
                                                stdin=asyncio.subprocess.DEVNULL)
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the command ends, and the agent would then never stop.
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError:
        _kill(proc)
        await proc.wait()
        raise CommandError(f"{argv[0]}: no answer within {timeout_s:g} s") from None
    except asyncio.CancelledError:
        _kill(proc)  # the runner gave up on us: do not leave the child running
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            proc.kill()


def check_every(every_s: float, what: str = "sample_every_s") -> float:
    if not 0.5 <= every_s <= 300:
        raise ValueError(f"{what} must be between 0.5 and 300, got {every_s!r}")
    return float(every_s)


# Given a slot's length in seconds, the category the whole slot is counted in.
Classify = Callable[[float], Awaitable[str]]


class Sampler:
    """Seconds per category within a probe's interval, from samples taken every few seconds.

    A background task samples every `every_s`. Each sample closes the *slot* since the
    previous sample and adds the slot's whole length to the category `classify(slot)` gives.
    A slot whose classification fails counts as "error", never as nothing.
    `drain()` closes the current slot, returns (elapsed, totals) since the previous drain and
    starts over, so the totals always add up to the elapsed time, to the second, whatever the
    probe's reporting interval. Samples are serialised: a drain never returns while a sample
    is still being classified, or that slot would fall between two intervals.
    """

    def __init__(self, classify: Classify, every_s: float = 5.0, clock: Monotonic = time.monotonic) -> None:
        self.classify = classify
        self.every_s = every_s
        self.clock = clock
        self.totals: dict[str, float] = {}
        # The first slot starts when the probe is built, not at its first sample.
        self._last = self._started = clock()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> None:
        """Close the slot since the previous sample."""
        async with self._lock:
            now = self.clock()
            slot = max(0.0, now - self._last)
            self._last = now
            try:
                category = await self.classify(slot)
            except Exception as e:  # the slot still happened: count it, as "error"
                log.debug("sample failed: %s", e)
                category = "error"
            self.totals[category] = self.totals.get(category, 0.0) + slot

    def start(self) -> None:
        """Start sampling in the background (needs a running loop, hence not in __init__)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="probe-sampler")

    async def _loop(self) -> None:
        me = asyncio.current_task()
        # Not `while True`: should an await below ever swallow our cancellation, the
        # pending request still shows in cancelling() and the loop ends.
        while me is None or not me.cancelling():
            await asyncio.sleep(self.every_s)
            await self.sample()

    async def drain(self) -> tuple[float, dict[str, float]]:
        """Take a last sample now; return (elapsed, totals) since the previous drain, and reset."""
        await self.sample()
        async with self._lock:
            elapsed = self._last - self._started
            totals, self.totals = self.totals, {}
            self._started = self._last
        return elapsed, totals

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
