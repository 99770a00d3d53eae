"""display: is an external display (the classroom projector) plugged into this laptop, and for
how many seconds of the interval? That is projector use even when the projector has no network.

An *external* output is any connected output that is not the laptop's own panel: by default
any whose name does not start with eDP, LVDS or DSI (option `internal_outputs`; on a desktop,
name its monitor's output there so that only a second display counts). "Connected" means
plugged in, whether or not the desktop shows anything on it.

Where: Linux DRM connector status in sysfs (`/sys/class/drm/card*-<connector>/status`), which
needs no X session; `xrandr --query` when there is no DRM connector (some proprietary
drivers); Windows: the monitor count (`GetSystemMetrics(SM_CMONITORS)`) minus the laptop's
panel, which misses a projector used alone ("second screen only").

Timing is sampled like the usage probe: every `sample_every_s` (15 s) the outputs are looked
at, and the slot since the previous look counts as external when an external output is
connected at its end. `external_connected` and `displays` are as of the end of the interval.
After a suspend a collect returns one record per stretch of time (agents/probes/_run.py).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from agents.clock import boot_clock
from agents.probes import register
from agents.probes._run import (
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
from collector.wire import Display, Record

INTERNAL_OUTPUTS = ("eDP", "LVDS", "DSI")


def external_outputs(connected: Sequence[str], internal: Sequence[str] = INTERNAL_OUTPUTS) -> list[str]:
    prefixes = tuple(p.lower() for p in internal)
    return [name for name in connected if not name.lower().startswith(prefixes)]


def parse_drm_status(text: str, where: str = "status") -> bool:
    """One DRM connector `status` file -> connected? ("unknown" is a connector that cannot tell)."""
    value = text.strip()
    if value not in ("connected", "disconnected", "unknown"):
        raise ParseError(f"{where}: expected connected/disconnected/unknown, got {excerpt(value, 40)}")
    return value == "connected"


def read_drm(root: Path) -> list[str] | None:
    """Connected DRM connectors under root ("HDMI-A-1", ...); None when there are no connectors."""
    files = sorted(root.glob("card*-*/status"))
    if not files:
        return None
    connected = []
    for status in files:
        try:
            text = status.read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        connector = status.parent.name.split("-", 1)[1]  # "card0-HDMI-A-1" -> "HDMI-A-1"
        if parse_drm_status(text, f"{status.parent.name}/status"):
            connected.append(connector)
    return connected


_XRANDR_OUTPUT = re.compile(r"^(\S+) (connected|disconnected|unknown connection)\b")


def parse_xrandr(text: str) -> list[str]:
    """`xrandr --query` -> the names of the connected outputs, in order."""
    if not text.strip():
        raise ParseError("xrandr --query: empty output")
    if not text.lstrip().startswith("Screen "):
        raise ParseError(f"xrandr --query: expected a first line 'Screen N: ...', got {excerpt(text)}")
    return [m[1] for m in map(_XRANDR_OUTPUT.match, text.splitlines()) if m and m[2] == "connected"]


def windows_monitors() -> int:  # pragma: no cover - Windows only
    import ctypes

    return int(ctypes.windll.user32.GetSystemMetrics(80))  # type: ignore[attr-defined]  # SM_CMONITORS


@register("display")
class DisplayProbe:
    """Seconds with an external display connected; one `Display` record per collect.

    Options: `interval_s` (60), `sample_every_s` (15), `drm_root` ("/sys/class/drm"),
    `internal_outputs` (output name prefixes of the built-in panel). Tests inject `run`
    (the command runner for xrandr), `platform`, `clock` (monotonic) and `now` (for `at`).
    """

    name = "display"
    interval_s = 60.0

    def __init__(self, *, interval_s: float = 60.0, sample_every_s: float = 15.0, drm_root: str = "/sys/class/drm",
                 internal_outputs: Sequence[str] = INTERNAL_OUTPUTS, run: RunCmd = run_cmd,
                 platform: str = sys.platform, clock: Monotonic = boot_clock, now: Now = utc_now) -> None:
        self.interval_s = interval_s
        self.drm_root = Path(drm_root)
        self.internal = tuple(internal_outputs)
        self._run, self._platform = run, platform
        self._last: tuple[int, int] = (0, 0)  # (connected, external) at the latest sample
        self.sampler = Sampler(self._classify, every_s=check_every(sample_every_s), clock=clock, now=now,
                               interval_s=interval_s)

    async def outputs(self) -> tuple[int, int] | None:
        """(connected, external) now; None when nothing can tell."""
        if self._platform == "win32":  # pragma: no cover - Windows only
            monitors = windows_monitors()
            return monitors, max(0, monitors - 1)
        connected = read_drm(self.drm_root)
        if connected is None:
            try:
                connected = parse_xrandr(await self._run(["xrandr", "--query"], 5.0))
            except CommandError:
                return None
        return len(connected), len(external_outputs(connected, self.internal))

    async def _classify(self, slot_s: float) -> str:
        now = await self.outputs()
        self._last = now or (0, 0)
        if now is None:
            return "unknown"
        return "external" if now[1] else "internal"

    async def collect(self) -> list[Record]:
        self.sampler.start()
        segments = await self.sampler.drain()
        connected, external = self._last
        return [Display(seq=0, at=at, duration_s=round(elapsed, 3), external_s=round(totals.get("external", 0.0), 3),
                        external_connected=external > 0, displays=min(connected, 64))
                for at, elapsed, totals in segments]
