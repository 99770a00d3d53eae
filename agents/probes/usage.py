"""usage: is someone using this computer? Active, idle, locked and no-session seconds.

Rule: every `sample_every_s` (5 s) the probe asks the user session how long ago the last
keyboard or mouse input was. The slot since the previous sample counts as
- *no_session* when nobody is logged in to a graphical session (the device is unused),
- *locked* when the session is locked (locked is idle, never active),
- *active* when the last input happened within the slot (idle time < slot length),
- *idle* otherwise.
`collect()` returns one `Usage` record for the time since the previous collect.

Sources, tried in order (the first that answers is kept): Windows `GetLastInputInfo` (it
only sees the calling session, so the agent must run as a logon task in the user's session),
X11 `XScreenSaverQueryInfo`, GNOME Mutter's IdleMonitor on Wayland, logind's
IdleHint/LockedHint. Only idle time and lock state are read: never keystrokes, window
titles or user names (`loginctl list-sessions` prints user names; only the session id column
is read, and `show-session` is asked for the needed properties only).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from agents.probes import register
from agents.probes._run import CommandError, ParseError, run_cmd
from agents.probes._sampling import Sampler
from collector.wire import Record, Usage

GRAPHICAL = {"x11", "wayland", "mir"}


@dataclass(frozen=True)
class IdleSample:
    idle_s: float
    locked: bool = False
    session: bool = True


class IdleSource(Protocol):
    name: str

    async def sample(self) -> IdleSample: ...


# ---------------------------------------------------------------- pure parsers

def parse_gdbus_idletime(text: str) -> float:
    """`(uint64 12345,)` from Mutter's GetIdletime -> seconds."""
    m = re.fullmatch(r"\s*\(uint64 (\d+),\)\s*", text)
    if not m:
        raise ParseError(f"expected '(uint64 N,)' from GetIdletime, got {text.strip()[:80]!r}")
    return int(m[1]) / 1000.0


def parse_loginctl_sessions(text: str) -> list[str]:
    """Session ids from `loginctl list-sessions --no-legend` (first column only)."""
    ids = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if not re.fullmatch(r"[A-Za-z0-9_-]+", fields[0]):
            raise ParseError(f"unexpected session id {fields[0][:40]!r} in loginctl output")
        ids.append(fields[0])
    return ids


def parse_loginctl_show(text: str) -> dict[str, str]:
    """`Key=Value` lines from `loginctl show-session` -> dict; anything else is an error."""
    props = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z]+", key):
            raise ParseError(f"expected Key=Value from loginctl show-session, got {line[:80]!r}")
        props[key] = value.strip()
    if not props:
        raise ParseError("loginctl show-session printed nothing")
    return props


def logind_sample(sessions: Sequence[dict[str, str]], now_us: int) -> IdleSample:
    """The active graphical user session's state; no such session means no session."""
    for s in sessions:
        if s.get("Class") == "user" and s.get("Active") == "yes" and s.get("Type") in GRAPHICAL:
            locked = s.get("LockedHint") == "yes"
            idle = 0.0
            if s.get("IdleHint") == "yes":
                since = s.get("IdleSinceHint", "0")
                if not since.isdigit():
                    raise ParseError(f"IdleSinceHint: expected microseconds, got {since[:40]!r}")
                idle = max(0.0, (now_us - int(since)) / 1e6) if int(since) else float("inf")
            return IdleSample(idle_s=idle, locked=locked, session=True)
    return IdleSample(idle_s=float("inf"), locked=False, session=False)


# ---------------------------------------------------------------- sources

class Win32Source:
    name = "win32"

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise OSError("GetLastInputInfo exists on Windows only")

    async def sample(self) -> IdleSample:  # pragma: no cover - Windows only
        class LastInputInfo(ctypes.Structure):
            _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint32)]

        info = LastInputInfo(ctypes.sizeof(LastInputInfo), 0)
        windll = ctypes.windll  # type: ignore[attr-defined]
        if not windll.user32.GetLastInputInfo(ctypes.byref(info)):
            raise OSError("GetLastInputInfo failed")
        idle_ms = (windll.kernel32.GetTickCount() - info.dwTime) & 0xFFFFFFFF
        return IdleSample(idle_s=idle_ms / 1000.0)


class X11Source:
    name = "x11"

    def __init__(self, display: str | None = None) -> None:
        display = display or os.environ.get("DISPLAY")
        if not display:
            raise OSError("no DISPLAY")
        x11, xss = ctypes.util.find_library("X11"), ctypes.util.find_library("Xss")
        if not x11 or not xss:
            raise OSError("libX11/libXss not installed")
        self._x11, self._xss = ctypes.cdll.LoadLibrary(x11), ctypes.cdll.LoadLibrary(xss)
        self._x11.XOpenDisplay.restype = ctypes.c_void_p
        self._dpy = self._x11.XOpenDisplay(display.encode())
        if not self._dpy:
            raise OSError(f"cannot open display {display}")

    async def sample(self) -> IdleSample:  # pragma: no cover - needs an X server
        class Info(ctypes.Structure):
            _fields_ = [("window", ctypes.c_ulong), ("state", ctypes.c_int), ("kind", ctypes.c_int),
                        ("til_or_since", ctypes.c_ulong), ("idle", ctypes.c_ulong), ("eventMask", ctypes.c_ulong)]

        self._xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(Info)
        self._x11.XDefaultRootWindow.restype = ctypes.c_ulong
        info = self._xss.XScreenSaverAllocInfo()
        root = self._x11.XDefaultRootWindow(ctypes.c_void_p(self._dpy))
        if not self._xss.XScreenSaverQueryInfo(ctypes.c_void_p(self._dpy), ctypes.c_ulong(root), info):
            raise OSError("XScreenSaverQueryInfo failed")
        idle = info.contents.idle / 1000.0
        self._x11.XFree(info)
        return IdleSample(idle_s=idle)


class CommandSource:
    """Base for sources that run a command: the command runner is injectable."""

    def __init__(self, run: Callable[[list[str], float], Awaitable[str]] = run_cmd) -> None:
        self._run = run


class MutterSource(CommandSource):
    name = "mutter"
    ARGV = ("gdbus", "call", "--session", "--dest", "org.gnome.Mutter.IdleMonitor", "--object-path",
            "/org/gnome/Mutter/IdleMonitor/Core", "--method", "org.gnome.Mutter.IdleMonitor.GetIdletime")

    async def sample(self) -> IdleSample:
        return IdleSample(idle_s=parse_gdbus_idletime(await self._run(list(self.ARGV), 3.0)))


class LogindSource(CommandSource):
    name = "logind"
    PROPS = ("-p", "IdleHint", "-p", "IdleSinceHint", "-p", "LockedHint", "-p", "Type", "-p", "Active",
             "-p", "Class")

    def __init__(self, run: Callable[[list[str], float], Awaitable[str]] = run_cmd,
                 now_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        super().__init__(run)
        self._now_us = now_us

    async def sample(self) -> IdleSample:
        ids = parse_loginctl_sessions(await self._run(["loginctl", "list-sessions", "--no-legend"], 3.0))
        sessions = [parse_loginctl_show(await self._run(["loginctl", "show-session", i, *self.PROPS], 3.0))
                    for i in ids]
        return logind_sample(sessions, self._now_us())


def default_sources() -> list[Callable[[], IdleSource]]:
    return [Win32Source, X11Source, MutterSource, LogindSource]


# ---------------------------------------------------------------- the probe

@register("usage")
class UsageProbe:
    """Options: `sample_every_s` (default 5), `sources` (names to try, default all, in order)."""

    name = "usage"

    def __init__(self, sample_every_s: float = 5.0, sources: list[str] | None = None, *,
                 candidates: Sequence[Callable[[], IdleSource]] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if not 0.5 <= sample_every_s <= 300:
            raise ValueError("sample_every_s must be between 0.5 and 300")
        known = {c.name: c for c in (Win32Source, X11Source, MutterSource, LogindSource)}
        if sources is not None:
            unknown = [s for s in sources if s not in known]
            if unknown:
                raise ValueError(f"unknown usage sources {unknown}; known: {', '.join(known)}")
        self._candidates = list(candidates) if candidates is not None else (
            [known[s] for s in sources] if sources is not None else default_sources())
        self._source: IdleSource | None = None
        self._source_tried = False
        self._now = now
        self._interval_start = now()
        self.sampler = Sampler(self._classify, every_s=sample_every_s, clock=clock)

    async def _pick_source(self) -> IdleSource | None:
        for make in self._candidates:
            try:
                source = make()
                await source.sample()
                return source
            except (OSError, CommandError, ParseError, AttributeError):
                continue
        return None

    async def _classify(self, slot: float) -> str:
        if not self._source_tried:
            self._source, self._source_tried = await self._pick_source(), True
        if self._source is None:
            return "no_session"
        try:
            s = await self._source.sample()
        except (OSError, CommandError, ParseError):
            return "no_session"  # the session went away (logout, display gone)
        if not s.session:
            return "no_session"
        if s.locked:
            return "locked"
        return "active" if s.idle_s < slot else "idle"

    async def collect(self) -> list[Record]:
        self.sampler.start()
        at = self._interval_start
        elapsed, totals = await self.sampler.drain()
        self._interval_start = self._now()
        source = self._source.name if self._source is not None else "none"
        return [Usage(seq=0, at=at, duration_s=round(elapsed, 3), active_s=round(totals.get("active", 0.0), 3),
                      idle_s=round(totals.get("idle", 0.0), 3), locked_s=round(totals.get("locked", 0.0), 3),
                      no_session_s=round(totals.get("no_session", 0.0), 3), source=source)]  # type: ignore[arg-type]
