"""Shared probe plumbing: typed errors, running a command with a timeout, clocks, and the
sampler that turns frequent looks into seconds per interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from tice_agent.clock import boot_clock

log = logging.getLogger("tice.agent.probes")

# Injected by tests: a monotonic clock for durations (by default the boot clock, which counts
# suspend: agents/tice_agent/clock.py), a wall clock for record times, a command runner.
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


# Names under which devices hand out subscriber or hardware identity: a 3G key's XML (<Imsi>,
# <Iccid>, <Msisdn>, <Imei>, <PhoneNumber>, <SerialNumber>), mmcli's JSON ("imsi", "own-numbers"),
# smartctl's "serial_number". Their values never leave the device (docs/agent.md, "What is
# collected, and what never is"); a hardware identity leaves it only as a salted hash.
_ID_NAME = r"[\w-]*(?:imsi|iccid|msisdn|imei|meid|phone[-_ ]?number|own[-_]?numbers?|serial[-_ ]?number)[\w-]*"
_ID_XML = re.compile(rf"(<(?:\w+:)?{_ID_NAME}\b[^>]*>)[^<'\"]*", re.I)
_ID_JSON = re.compile(rf"(\"{_ID_NAME}\"\s*:\s*)(\"(?:[^\"\\]|\\.)*\"?|\[[^\]]*\]?|[^,}}\s]+)", re.I)
_ID_KEY = re.compile(rf"(\b{_ID_NAME}\s*[=:]\s*)(\S+)", re.I)
# IMSI (15 digits), ICCID (19-20), IMEI (15), a phone number (0612345678): any run of 6 digits
# or more; and a phone number written in groups (+33 6 12 34 56 78, 06.12.34.56.78): 9 digits or
# more with single spaces, dots or dashes between them (fewer is a date or "uint32 42137").
_DIGITS = re.compile(r"(?<!\d)\+?(?:\d{6,}|\d(?:[ .-]?\d){8,})(?!\d)")
_MAC = re.compile(r"(?<![0-9A-F])(?:[0-9A-F]{2}[:-]){5}[0-9A-F]{2}(?![0-9A-F])", re.I)


def mask_identifiers(text: str) -> str:
    """`text` with what could identify a SIM, a subscriber or a piece of hardware masked: the
    values of elements or keys named like Imsi/Iccid/Msisdn/Imei/PhoneNumber/SerialNumber
    ("***"), runs of 6 digits or more ("[N digits]") and MAC addresses ("[MAC]")."""
    text = _ID_XML.sub(r"\1***", text)
    text = _ID_JSON.sub(r'\1"***"', text)
    text = _ID_KEY.sub(r"\1***", text)
    text = _MAC.sub("[MAC]", text)
    return _DIGITS.sub(lambda m: f"[{sum(c.isdigit() for c in m.group())} digits]", text)


def excerpt(text: str, limit: int = 60) -> str:
    """A short quoted piece of unreadable output for an error message (never the whole of it),
    with identifiers masked (mask_identifiers): an error text is sent to the collector."""
    # Masked before the cut, so that a value cut in two is still seen whole.
    return repr(mask_identifiers(text.strip()[:limit + 200])[:limit])


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


class Segment(NamedTuple):
    """A stretch of sampled time: where it starts on the wall clock, how long, and by category."""

    at: datetime
    elapsed_s: float
    totals: dict[str, float]


# A clock step smaller than this leaves a segment's start as read (the collector's own clock
# tolerance: an error below it is accepted as is there too).
STEP_TOLERANCE_S = 120.0


class Sampler:
    """Seconds per category within a probe's interval, from samples taken every few seconds.

    A background task samples every `every_s`. Each sample closes the *slot* since the
    previous sample and adds the slot's whole length to the category `classify(slot)` gives.
    A slot whose classification fails counts as "error", never as nothing.
    `drain()` closes the current slot and returns the *segments* since the previous drain
    (usually one), each with its totals adding up to its length to the second, whatever the
    probe's reporting interval. Samples are serialised: a drain never returns while a sample
    is still being classified, or that slot would fall between two intervals.

    Suspend. The clock counts time suspended (tice_agent.clock.boot_clock), so a laptop closed at
    16:00 and opened at 08:30 shows one slot of 16.5 hours. A slot longer than `every_s +
    tolerance_s` is a gap (suspended, or the process was stopped): it is counted nowhere, and
    the segment ends before it; a new one starts after it, dated by the wall clock then. The
    night is neither activity nor one long interval. (On Linux time.monotonic() stops in
    suspend and would hide the night inside an ordinary slot, dating the morning at 16:00; on
    Windows before Python 3.13 it counts suspend, PEP 418.)
    The cap. A segment also ends when it reaches `interval_s + tolerance_s`: no record is ever
    longer than its configured interval plus the tolerance.
    Clock steps. A segment's start is the wall clock read when it began, unless that clock has
    been stepped since by more than STEP_TOLERANCE_S against the sampling clock (NTP putting
    right a PC that booted at 2009-01-01): it is then dated from the sampling clock, backwards
    from now. Records spooled later are re-dated by the spool (agents/tice_agent/spool.py).
    """

    def __init__(self, classify: Classify, every_s: float = 5.0, clock: Monotonic = boot_clock, *,
                 now: Now = utc_now, interval_s: float = 60.0, tolerance_s: float | None = None) -> None:
        self.classify = classify
        self.every_s = every_s
        self.clock = clock
        self.now = now
        self.tolerance_s = tolerance_s if tolerance_s is not None else max(30.0, 2 * every_s)
        self.cap_s = max(interval_s, every_s) + self.tolerance_s
        self.totals: dict[str, float] = {}
        # The first slot starts when the probe is built, not at its first sample.
        self._last = clock()
        self._start = (self._last, now())  # the current segment's start: (clock, wall clock)
        self._closed: list[tuple[float, datetime, float, dict[str, float]]] = []  # (start, wall, length, totals)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> None:
        """Close the slot since the previous sample."""
        async with self._lock:
            now = self.clock()
            slot = now - self._last
            if slot < 0 or slot > self.every_s + self.tolerance_s:  # a gap: suspended or stopped
                self._cut()
                self._last = now
                self._start = (now, self.now())
                return
            if self._last - self._start[0] + slot > self.cap_s:  # the cap: a new segment from here
                self._cut()
                start, wall = self._start
                self._start = (self._last, wall + timedelta(seconds=self._last - start))
            self._last = now
            try:
                category = await self.classify(slot)
            except Exception as e:  # the slot still happened: count it, as "error"
                log.debug("sample failed: %s", e)
                category = "error"
            self.totals[category] = self.totals.get(category, 0.0) + slot

    def _cut(self) -> None:
        """End the current segment at the latest sample."""
        start, wall = self._start
        self._closed.append((start, wall, self._last - start, self.totals))
        self.totals = {}

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

    async def drain(self) -> list[Segment]:
        """Take a last sample now; return the segments since the previous drain (at least one,
        the last ending now), and start over."""
        await self.sample()
        async with self._lock:
            self._cut()
            closed, self._closed = self._closed, []
            clock_now, wall_now = self._last, self.now()
            self._start = (self._last, wall_now)
        segments = []
        for start, wall, length, totals in closed:
            from_clock = wall_now - timedelta(seconds=clock_now - start)
            at = from_clock if abs((from_clock - wall).total_seconds()) > STEP_TOLERANCE_S else wall
            segments.append(Segment(at, length, totals))
        # An empty segment says nothing, unless it is all there is (a collect right after a gap).
        kept = [seg for seg in segments[:-1] if seg.elapsed_s > 0] + segments[-1:]
        if len(kept) > 1 and kept[-1].elapsed_s == 0:
            kept.pop()
        return kept

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
