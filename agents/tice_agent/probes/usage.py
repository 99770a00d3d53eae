"""usage: is someone using this computer? Active, idle, locked, no-session and unclassified seconds.

The rule. Every `sample_every_s` (default 5 s) the probe asks the user session how long ago
the last keyboard or mouse input was. The *slot* between two samples is counted whole as
- no_session: nobody is logged in to a graphical session (the device is unused);
- locked: the session is locked (locked is idle, never active);
- unclassified: a session is there but no source that can be trusted says whether it is used
  (a desktop that never maintains the idle figure the source reads), or no source answered at
  all. Unclassified time is never active: it shows which machines have no working source;
- active: the last input happened within the slot, i.e. idle time < slot length;
- idle: otherwise.
The five buckets add up to `duration_s`. `collect()` returns one `Usage` record for the time
since the previous collect (`at` = when that time began). The first record covers the time
from the probe's start to its first collect, in one slot. Input is only ever seen as "how long
ago": a slot with one key press and a slot with a thousand count the same.
After a suspend (or an interval longer than configured) a collect returns one record per
stretch of time, and none for the night (see Sampler in agents/tice_agent/probes/_run.py).

Sources, in order of preference; the first whose answer can be trusted is kept, and when it
stops answering (logout, display gone) the list is tried again at once; when only untrusted
answers come, the first of them is used (its time unclassified) and the list is tried again
at the next interval; when none answers, likewise, never at every look:
- win32: `GetLastInputInfo`. It only sees the session of the calling process, so on Windows
  the agent must run as a logon task in the user's session, not as a session-0 service.
- x11: `XScreenSaverQueryInfo` from libXss (needs DISPLAY; not used under Wayland, where it
  would only see X clients).
- mutter: GNOME's `org.gnome.Mutter.IdleMonitor` on Wayland, via `gdbus`.
- wayland: the compositor's own idle notification, ext-idle-notify-v1 (KDE Plasma, COSMIC,
  sway, Hyprland, niri...; not GNOME), over the Wayland socket (see `_wayland.py`). The
  notification's timeout is the sampling period, so "not idle" means input within the last
  look, and "idled" came that long after the last input. Its first period cannot tell (a new
  notification is never idle at first) and is unclassified. It does not see the lock screen.
- kde: KDE Plasma's screen locker on the session bus (`org.kde.screensaver`, interface
  `org.freedesktop.ScreenSaver`): `GetSessionIdleTime` (ms, from KIdleTime) and `GetActive`
  (locked), via `gdbus`. Trusted once it has answered a non-zero idle time: on Plasma Wayland
  KWin's KIdleTime backend cannot be polled and the answer is 0 forever (kwin
  src/plugins/idletime/poller.cpp, `forcePollRequest()` returns 0), which would read as
  "always active". There only its lock state is used, and the rest is unclassified.
- logind: `IdleHint`/`LockedHint` of the active graphical session. A graphical session's
  IdleHint is only what its desktop sets (systemd's session_get_idle_hint); KDE Plasma and
  COSMIC on Wayland never set it, so it stays "no" however long nobody touches the machine.
  IdleHint is trusted once it has changed in this session (`IdleSinceHint` is not 0, as
  logind stamps each change), and `LockedHint=yes` always. Coarse even then: desktops raise
  IdleHint only after their own idle delay, so active time is over-counted by up to that delay.

Privacy: only idle time, lock state and whether a session exists are read. Never keystrokes,
window titles or user names: `loginctl list-sessions` prints user names, so only its first
column (the session id) is read, and `show-session` is asked for the needed properties only;
any other property in its answer is dropped by the parser.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tice_agent.clock import boot_clock
from tice_agent.probes import _wayland, register
from tice_agent.probes._run import (
    CommandError,
    Monotonic,
    Now,
    ParseError,
    RunCmd,
    Sampler,
    check_every,
    excerpt,
    run_cmd,
    utc_now,
)
from tice_wire import Record, Usage

GRAPHICAL = frozenset({"x11", "wayland", "mir"})
# systemd >= 256 marks a session that is still starting as "user-early".
USER_CLASSES = frozenset({"user", "user-early"})
# The only loginctl properties read; anything else in its output is dropped.
LOGIND_PROPS = ("IdleHint", "IdleSinceHint", "LockedHint", "Type", "Active", "Class")
# What a source raises when it cannot answer (AttributeError: a missing C symbol via ctypes).
SOURCE_ERRORS = (OSError, CommandError, ParseError, AttributeError)


@dataclass(frozen=True)
class IdleSample:
    idle_s: float               # seconds since the last keyboard or mouse input
    locked: bool = False
    session_present: bool = True
    # False when the source answered but its idle figure cannot be believed; `why` says why.
    trusted: bool = True
    why: str = ""


class IdleSource(Protocol):
    name: str

    async def idle_state(self) -> IdleSample: ...


def classify(sample: IdleSample | None, slot_s: float) -> str:
    """The bucket a slot of `slot_s` seconds ending with `sample` counts in (see the module doc)."""
    if sample is None:
        return "unclassified"
    if not sample.session_present:
        return "no_session"
    if sample.locked:
        return "locked"
    if not sample.trusted:
        return "unclassified"
    return "active" if sample.idle_s < slot_s else "idle"


# ---------------------------------------------------------------- pure parsers

_GDBUS_UINT64 = re.compile(r"\s*\(uint64 (\d+),\)\s*")
_GDBUS_UINT32 = re.compile(r"\s*\(uint32 (\d+),\)\s*")
_GDBUS_BOOL = re.compile(r"\s*\((true|false),\)\s*")


def parse_gdbus_idletime(text: str) -> int:
    """`(uint64 12345,)` from Mutter's GetIdletime -> milliseconds since the last input."""
    m = _GDBUS_UINT64.fullmatch(text)
    if not m:
        raise ParseError(f"GetIdletime: expected '(uint64 N,)', got {excerpt(text)}")
    return int(m[1])


def parse_gdbus_uint32(text: str, what: str = "GetSessionIdleTime") -> int:
    """`(uint32 12345,)`, as gdbus prints an unsigned 32-bit answer."""
    m = _GDBUS_UINT32.fullmatch(text)
    if not m:
        raise ParseError(f"{what}: expected '(uint32 N,)', got {excerpt(text)}")
    return int(m[1])


def parse_gdbus_bool(text: str) -> bool:
    """`(true,)` or `(false,)`, as gdbus prints a boolean answer (ScreenSaver.GetActive)."""
    m = _GDBUS_BOOL.fullmatch(text)
    if not m:
        raise ParseError(f"gdbus: expected '(true,)' or '(false,)', got {excerpt(text)}")
    return m[1] == "true"


_SESSION_ID = re.compile(r"[A-Za-z0-9_-]+")


def parse_loginctl_sessions(text: str) -> list[str]:
    """Session ids from `loginctl list-sessions --no-legend`: the first column, nothing else."""
    ids = []
    for line in text.splitlines():
        fields = line.split(maxsplit=1)
        if not fields:
            continue
        if not _SESSION_ID.fullmatch(fields[0]):
            raise ParseError(f"loginctl list-sessions: unexpected session id {excerpt(fields[0], 40)}")
        ids.append(fields[0])
    return ids


_PROP_KEY = re.compile(r"[A-Za-z]+")


def parse_loginctl_show(text: str) -> dict[str, str]:
    """`Key=Value` lines from `loginctl show-session -p ...` -> {key: value} for LOGIND_PROPS only."""
    props: dict[str, str] = {}
    seen = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not _PROP_KEY.fullmatch(key):
            raise ParseError(f"loginctl show-session: expected Key=Value, got {excerpt(line)}")
        seen += 1
        if key in LOGIND_PROPS:
            props[key] = value.strip()
    if not seen:
        raise ParseError("loginctl show-session: empty output")
    return props


NEVER_SET = "this desktop never sets logind's IdleHint"


def logind_sample(sessions: Sequence[dict[str, str]], now_us: int) -> IdleSample:
    """The active graphical user session's state; without one, no session.

    `IdleSinceHint` is wall-clock microseconds of the hint's latest change, 0 when it never
    changed in this session: then IdleHint=no is only the initial value, not a fact about the
    user (untrusted). 0 with IdleHint=yes means "idle since ever".
    """
    for s in sessions:
        if s.get("Class") in USER_CLASSES and s.get("Active") == "yes" and s.get("Type") in GRAPHICAL:
            since = s.get("IdleSinceHint", "0")
            if not since.isdigit():
                raise ParseError(f"IdleSinceHint: expected microseconds, got {excerpt(since, 40)}")
            locked = s.get("LockedHint") == "yes"
            if s.get("IdleHint") == "yes":
                idle = max(0.0, (now_us - int(since)) / 1e6) if int(since) else float("inf")
                return IdleSample(idle_s=idle, locked=locked)
            if int(since) == 0:
                return IdleSample(idle_s=0.0, locked=locked, trusted=False, why=NEVER_SET)
            return IdleSample(idle_s=0.0, locked=locked)
    return IdleSample(idle_s=float("inf"), session_present=False)


# ---------------------------------------------------------------- sources

class Win32Source:
    """GetLastInputInfo; sees only the calling session (run the agent as a logon task)."""

    name = "win32"

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise OSError("GetLastInputInfo exists on Windows only")

    async def idle_state(self) -> IdleSample:  # pragma: no cover - Windows only
        class LastInputInfo(ctypes.Structure):
            _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint32)]

        windll = ctypes.windll  # type: ignore[attr-defined]
        info = LastInputInfo(ctypes.sizeof(LastInputInfo), 0)
        if not windll.user32.GetLastInputInfo(ctypes.byref(info)):
            raise OSError("GetLastInputInfo failed")
        # Both are 32-bit tick counts that wrap after 49.7 days: subtract modulo 2**32.
        idle_ms = (windll.kernel32.GetTickCount() - info.dwTime) & 0xFFFFFFFF
        # The input desktop cannot be opened while the lock screen (Winlogon desktop) has it.
        open_input_desktop = windll.user32.OpenInputDesktop
        open_input_desktop.restype = ctypes.c_void_p  # a handle: do not truncate it to an int
        desktop = open_input_desktop(0, False, 0x0100)  # DESKTOP_SWITCHDESKTOP
        if desktop:
            windll.user32.CloseDesktop(ctypes.c_void_p(desktop))
        return IdleSample(idle_s=idle_ms / 1000.0, locked=not desktop)


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [("window", ctypes.c_ulong), ("state", ctypes.c_int), ("kind", ctypes.c_int),
                ("til_or_since", ctypes.c_ulong), ("idle", ctypes.c_ulong), ("eventMask", ctypes.c_ulong)]


class X11Source:
    """XScreenSaverQueryInfo through ctypes (libX11 + libXss)."""

    name = "x11"

    def __init__(self, display: str | None = None, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        if env.get("XDG_SESSION_TYPE") == "wayland" or env.get("WAYLAND_DISPLAY"):
            # XWayland would answer, but only about input to X clients: wrong, not missing.
            raise OSError("a Wayland session: X11 idle time would only cover X clients")
        self.display = display or env.get("DISPLAY", "")
        if not self.display:
            raise OSError("no DISPLAY")
        x11, xss = ctypes.util.find_library("X11"), ctypes.util.find_library("Xss")
        if not x11 or not xss:
            raise OSError("libX11 or libXss is not installed")
        self._x11, self._xss = ctypes.cdll.LoadLibrary(x11), ctypes.cdll.LoadLibrary(xss)
        self._x11.XOpenDisplay.restype = ctypes.c_void_p
        self._x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self._x11.XDefaultRootWindow.restype = ctypes.c_ulong
        self._x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        self._x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self._x11.XFree.argtypes = [ctypes.c_void_p]
        self._xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
        self._xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong,
                                                    ctypes.POINTER(_XScreenSaverInfo)]

    async def idle_state(self) -> IdleSample:  # pragma: no cover - needs an X server
        # Open and close the display at each sample: Xlib exits the whole process when the
        # server of an open connection goes away (logout), and opening a gone display just fails.
        dpy = self._x11.XOpenDisplay(self.display.encode())
        if not dpy:
            raise OSError(f"cannot open display {self.display}")
        try:
            info = self._xss.XScreenSaverAllocInfo()
            try:
                if not self._xss.XScreenSaverQueryInfo(dpy, self._x11.XDefaultRootWindow(dpy), info):
                    raise OSError("XScreenSaverQueryInfo failed")
                return IdleSample(idle_s=info.contents.idle / 1000.0)
            finally:
                self._x11.XFree(info)
        finally:
            self._x11.XCloseDisplay(dpy)


class MutterSource:
    """GNOME on Wayland: Mutter's IdleMonitor, plus the screen shield for the lock state."""

    name = "mutter"
    IDLETIME = ("gdbus", "call", "--session", "--dest", "org.gnome.Mutter.IdleMonitor", "--object-path",
                "/org/gnome/Mutter/IdleMonitor/Core", "--method", "org.gnome.Mutter.IdleMonitor.GetIdletime")
    LOCKED = ("gdbus", "call", "--session", "--dest", "org.gnome.ScreenSaver", "--object-path",
              "/org/gnome/ScreenSaver", "--method", "org.gnome.ScreenSaver.GetActive")

    def __init__(self, run: RunCmd = run_cmd, timeout_s: float = 3.0) -> None:
        self._run, self.timeout_s = run, timeout_s

    async def idle_state(self) -> IdleSample:
        idle_ms = parse_gdbus_idletime(await self._run(list(self.IDLETIME), self.timeout_s))
        try:
            locked = parse_gdbus_bool(await self._run(list(self.LOCKED), self.timeout_s))
        except (CommandError, ParseError):
            locked = False  # no lock information is not a reason to lose the idle time
        return IdleSample(idle_s=idle_ms / 1000.0, locked=locked)


WAITING = "the compositor's idle notification has not had its first period yet"


class WaylandSource:
    """ext-idle-notify-v1 on the session's Wayland compositor; see the module doc."""

    name = "wayland"

    def __init__(self, timeout_s: float = 5.0, environ: dict[str, str] | None = None,
                 clock: Monotonic = boot_clock) -> None:
        self.path = _wayland.socket_path(dict(os.environ) if environ is None else environ)
        self.timeout_s, self.clock = timeout_s, clock
        self._watch: _wayland.IdleWatch | None = None
        self._resumes_seen = 0

    async def idle_state(self) -> IdleSample:
        if self._watch is None:
            watch = _wayland.IdleWatch(self.path, max(1, round(self.timeout_s * 1000)), self.clock)
            await watch.start()
            self._watch, self._resumes_seen = watch, 0
        watch = self._watch
        if watch.closed:
            self._watch = None
            await watch.aclose()
            raise OSError(watch.closed)  # logout, compositor restart: the probe looks again
        now = self.clock()
        resumed = watch.resumes > self._resumes_seen
        self._resumes_seen = watch.resumes
        if resumed and not watch.idle:
            return IdleSample(idle_s=0.0)            # input since the previous look
        if watch.idle and watch.idled_at is not None:
            if resumed:                               # input, then idle again since the previous look
                return IdleSample(idle_s=0.0)
            return IdleSample(idle_s=self.timeout_s + now - watch.idled_at)
        if watch.started_at is not None and now - watch.started_at < self.timeout_s:
            return IdleSample(idle_s=0.0, trusted=False, why=WAITING)
        return IdleSample(idle_s=0.0)                # not idle: input within the last period

    async def aclose(self) -> None:
        if self._watch is not None:
            await self._watch.aclose()
            self._watch = None


STUCK_AT_ZERO = "GetSessionIdleTime has only answered 0 (Plasma on Wayland cannot tell)"


class KdeSource:
    """KDE Plasma's screen locker: idle time from KIdleTime, lock state; see the module doc."""

    name = "kde"
    _CALL = ("gdbus", "call", "--session", "--dest", "org.kde.screensaver", "--object-path", "/ScreenSaver",
             "--method")
    IDLETIME = (*_CALL, "org.freedesktop.ScreenSaver.GetSessionIdleTime")
    LOCKED = (*_CALL, "org.freedesktop.ScreenSaver.GetActive")

    def __init__(self, run: RunCmd = run_cmd, timeout_s: float = 3.0) -> None:
        self._run, self.timeout_s = run, timeout_s
        self._moved = False  # a non-zero idle time was seen: KIdleTime can be polled here

    async def idle_state(self) -> IdleSample:
        idle_ms = parse_gdbus_uint32(await self._run(list(self.IDLETIME), self.timeout_s))
        try:
            locked = parse_gdbus_bool(await self._run(list(self.LOCKED), self.timeout_s))
        except (CommandError, ParseError):
            locked = False
        self._moved = self._moved or idle_ms > 0
        if not self._moved:
            return IdleSample(idle_s=0.0, locked=locked, trusted=False, why=STUCK_AT_ZERO)
        return IdleSample(idle_s=idle_ms / 1000.0, locked=locked)


class LogindSource:
    """systemd-logind through `loginctl`: IdleHint, IdleSinceHint and LockedHint."""

    name = "logind"

    def __init__(self, run: RunCmd = run_cmd, now_us: Callable[[], int] = lambda: time.time_ns() // 1000,
                 timeout_s: float = 3.0) -> None:
        self._run, self._now_us, self.timeout_s = run, now_us, timeout_s

    async def idle_state(self) -> IdleSample:
        listing = await self._run(["loginctl", "list-sessions", "--no-legend"], self.timeout_s)
        props = [arg for p in LOGIND_PROPS for arg in ("-p", p)]
        sessions = [parse_loginctl_show(await self._run(["loginctl", "show-session", sid, *props], self.timeout_s))
                    for sid in parse_loginctl_sessions(listing)]
        return logind_sample(sessions, self._now_us())


SourceFactory = Callable[[], IdleSource]
SOURCES: dict[str, SourceFactory] = {"win32": Win32Source, "x11": X11Source, "mutter": MutterSource,
                                     "wayland": WaylandSource, "kde": KdeSource, "logind": LogindSource}


def _source_factory(name: str, sample_every_s: float) -> SourceFactory:
    """The factory of a named source; the Wayland one's idle timeout is the sampling period."""
    if name == "wayland":
        return functools.partial(WaylandSource, timeout_s=sample_every_s)
    return SOURCES[name]


# ---------------------------------------------------------------- the probe

@register("usage")
class UsageProbe:
    """Active/idle/locked/no-session/unclassified seconds per interval; one `Usage` record per collect.

    Options: `interval_s` (60), `sample_every_s` (5), `sources` (names to try in order;
    default all: win32, x11, mutter, wayland, kde, logind). Tests inject `candidates` (source
    factories), `clock` (monotonic seconds) and `now` (the wall clock for `at`). `note` says
    which idle source is in use and how much of the latest interval it could not classify.
    """

    name = "usage"
    interval_s = 60.0

    def __init__(self, *, interval_s: float = 60.0, sample_every_s: float = 5.0, sources: Sequence[str] | None = None,
                 candidates: Sequence[SourceFactory] | None = None, clock: Monotonic = boot_clock,
                 now: Now = utc_now) -> None:
        if sources is not None:
            unknown = [s for s in sources if s not in SOURCES]
            if unknown:
                raise ValueError(f"unknown usage sources {unknown}; known: {', '.join(SOURCES)}")
        self.interval_s = interval_s
        self._candidates = list(candidates) if candidates is not None else \
            [_source_factory(s, sample_every_s) for s in (sources if sources is not None else SOURCES)]
        # One instance per candidate, made when first needed and kept: a source may learn
        # whether it can be trusted (kde) and must not forget it at each new look.
        self._instances: dict[int, IdleSource] = {}
        self._source: IdleSource | None = None
        self._retry_at_next_interval = False  # nothing, or nothing trusted, answered lately
        self._seconds_by_source: dict[str, float] = {}
        self._why: dict[str, float] = {}  # reason a slot was unclassified -> seconds
        self.note: str | None = None
        self.sampler = Sampler(self._classify, every_s=check_every(sample_every_s), clock=clock, now=now,
                               interval_s=interval_s)

    async def _ask(self, index: int) -> tuple[IdleSource, IdleSample]:
        source = self._instances.get(index)
        if source is None:
            source = self._instances[index] = self._candidates[index]()
        return source, await source.idle_state()

    async def _pick(self) -> tuple[IdleSource, IdleSample] | None:
        """The first source whose answer classifies; else the first that answered at all."""
        fallback = None
        for index in range(len(self._candidates)):
            try:
                source, sample = await self._ask(index)
            except SOURCE_ERRORS:
                continue
            if classify(sample, 0.0) != "unclassified":
                return source, sample
            fallback = fallback or (source, sample)
        return fallback

    async def _state(self) -> tuple[str, IdleSample] | None:
        if self._source is not None:
            try:
                return self._source.name, await self._source.idle_state()
            except SOURCE_ERRORS:
                self._source = None  # logout, display gone: the next source may know more
        elif self._retry_at_next_interval:
            return None  # nothing answered lately: do not run every command at every look
        picked = await self._pick()
        if picked is None:
            self._retry_at_next_interval = True
            return None
        self._source = picked[0]
        return self._source.name, picked[1]

    async def _classify(self, slot_s: float) -> str:
        state = await self._state()
        if state is None:
            self._why["no idle source answered"] = self._why.get("no idle source answered", 0.0) + slot_s
            return "unclassified"
        name, sample = state
        self._seconds_by_source[name] = self._seconds_by_source.get(name, 0.0) + slot_s
        bucket = classify(sample, slot_s)
        if bucket == "unclassified":
            self._why[sample.why] = self._why.get(sample.why, 0.0) + slot_s
            # An untrusted source is kept for this interval only: at the next one the list is
            # tried again, in case a source that can be trusted has appeared.
            self._retry_at_next_interval = True
        return bucket

    async def aclose(self) -> None:
        """Stop sampling and close the sources that hold a connection (wayland)."""
        await self.sampler.aclose()
        for source in self._instances.values():
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()

    async def collect(self) -> list[Record]:
        self.sampler.start()
        segments = await self.sampler.drain()
        by_source, self._seconds_by_source = self._seconds_by_source, {}
        why, self._why = self._why, {}
        if self._retry_at_next_interval:
            self._source = None
            self._retry_at_next_interval = False
        # The source that answered for most of the interval names it.
        source = max(by_source, key=by_source.__getitem__) if by_source else "none"
        self.note = usage_note(source, sum(t.get("unclassified", 0.0) + t.get("error", 0.0) for _, _, t in segments),
                               sum(elapsed for _, elapsed, _ in segments), why)
        return [Usage(seq=0, at=at, duration_s=round(elapsed, 3), active_s=round(totals.get("active", 0.0), 3),
                      idle_s=round(totals.get("idle", 0.0), 3), locked_s=round(totals.get("locked", 0.0), 3),
                      no_session_s=round(totals.get("no_session", 0.0), 3),
                      # "error" slots (a source that raised a bug) are unclassified too: the parts add up.
                      unclassified_s=round(totals.get("unclassified", 0.0) + totals.get("error", 0.0), 3),
                      source=source)  # type: ignore[arg-type]  # a SOURCES name, all in the wire Literal
                for at, elapsed, totals in segments]


def usage_note(source: str, unclassified_s: float, elapsed_s: float, why: dict[str, float]) -> str:
    """What `tice-agent status` says about the idle source, e.g.
    `idle source: logind; cannot classify 60 of 60 s: this desktop never sets logind's IdleHint`."""
    note = f"idle source: {source}"
    if unclassified_s > 0:
        reason = max(why, key=why.__getitem__) if why else "a source failed"
        note += f"; cannot classify {unclassified_s:.0f} of {elapsed_s:.0f} s: {reason}"
    return note
