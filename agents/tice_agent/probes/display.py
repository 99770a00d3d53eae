"""display: is an external display (the classroom projector) in use with this laptop, and for
how many seconds of the interval? That is projector use even when the projector has no network.

The rule: a *screen in use* is an output the computer is driving with a picture right now.
- Linux DRM (`/sys/class/drm/card*-<connector>/`, no X session needed): the connector's
  `status` is `connected` or `unknown` (some DVI and VGA ports cannot sense a monitor), it is
  `enabled` (a CRTC scans out to it), its `dpms` is `On` (not blanked) and it has `modes`.
  A connector the kernel reports `disconnected` is not in use even if a stale CRTC still
  drives it; one that is plugged in but not switched on in the desktop is not in use either.
  Files a kernel does not provide are not held against the connector.
- `xrandr --query` when there is no DRM connector (some proprietary drivers): an output with a
  current geometry (`1024x768+1024+0`: a CRTC drives it) whose connection is `connected` or
  `unknown connection`. A `connected` output without geometry is plugged in but shows nothing.
- Writeback connectors (a memory sink for screen capture) and virtual connectors (vkms, a
  virtual GPU's outputs) are never screens, whatever their status says.
An *external* screen is any screen in use that is not the laptop's own panel: by default any
whose name does not start with eDP, LVDS or DSI (option `internal_outputs`; on a desktop, name
its monitor's output there so that only a second display counts).
Windows: the monitor count (`GetSystemMetrics(SM_CMONITORS)`, monitors the desktop spans)
minus the laptop's panel, which misses a projector used alone ("second screen only").

Timing is sampled like the usage probe: every `sample_every_s` (15 s) the outputs are looked
at, and the slot since the previous look counts as external when an external screen is in use
at its end. `external_connected` (an external screen in use) and `displays` (screens in use)
are as of the end of the interval.
After a suspend a collect returns one record per stretch of time (agents/tice_agent/probes/_run.py).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from tice_agent.clock import boot_clock
from tice_agent.probes import register
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
from tice_wire import Display, Record

INTERNAL_OUTPUTS = ("eDP", "LVDS", "DSI")
# Connector types that never show a picture to anyone: DRM's "Writeback" and "Virtual"
# (drm_connector_enum_list in the kernel), xrandr's "VIRTUAL1"/"Virtual-1".
NOT_SCREENS = ("writeback", "virtual")

DRM_STATUS = ("connected", "disconnected", "unknown")
DRM_ENABLED = ("enabled", "disabled")
DRM_DPMS = ("On", "Standby", "Suspend", "Off")


def is_screen(name: str) -> bool:
    """False for writeback and virtual outputs ("Writeback-1", "Virtual-1", "VIRTUAL1")."""
    return not name.lower().startswith(NOT_SCREENS)


def external_outputs(in_use: Sequence[str], internal: Sequence[str] = INTERNAL_OUTPUTS) -> list[str]:
    prefixes = tuple(p.lower() for p in internal)
    return [name for name in in_use if not name.lower().startswith(prefixes)]


def _one_of(text: str | None, allowed: tuple[str, ...], where: str) -> str | None:
    if text is None:
        return None
    value = text.strip()
    if value not in allowed:
        raise ParseError(f"{where}: expected {'/'.join(allowed)}, got {excerpt(value, 40)}")
    return value


def parse_drm_status(text: str, where: str = "status") -> bool:
    """One DRM connector `status` file -> could a monitor be there? (`unknown`: the port cannot
    sense one, so it may; only `disconnected` says no)."""
    return _one_of(text, DRM_STATUS, where) != "disconnected"


def drm_in_use(files: dict[str, str | None], where: str = "connector") -> bool:
    """Is a DRM connector a screen in use, from its sysfs files {name: content or None}?

    `status` is required; `enabled`, `dpms` and `modes` count only when present. Raises
    ParseError on a value the kernel never writes (it names the file and the value).
    """
    status = files.get("status")
    if status is None:
        raise ParseError(f"{where}/status: missing")
    if not parse_drm_status(status, f"{where}/status"):
        return False
    if _one_of(files.get("enabled"), DRM_ENABLED, f"{where}/enabled") == "disabled":
        return False
    if _one_of(files.get("dpms"), DRM_DPMS, f"{where}/dpms") not in (None, "On"):
        return False
    modes = files.get("modes")
    return modes is None or bool(modes.strip())


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:  # absent on this kernel, or unreadable
        return None


def read_drm(root: Path) -> list[str] | None:
    """DRM connectors under root that are screens in use ("HDMI-A-1", ...); None when there
    are no connectors at all (then xrandr is asked)."""
    dirs = sorted(p.parent for p in root.glob("card*-*/status"))
    if not dirs:
        return None
    in_use = []
    for d in dirs:
        connector = d.name.split("-", 1)[1]  # "card0-HDMI-A-1" -> "HDMI-A-1"
        files = {name: _read(d / name) for name in ("status", "enabled", "dpms", "modes")}
        if files["status"] is None:
            continue  # vanished between the listing and the read (unplugged dock)
        if drm_in_use(files, d.name) and is_screen(connector):
            in_use.append(connector)
    return in_use


# "<name> connected|disconnected|unknown connection [primary] [WxH+X+Y] ..."
_XRANDR_OUTPUT = re.compile(r"^(\S+) (connected|disconnected|unknown connection)(?: primary)?"
                            r"(?: (\d+x\d+\+\d+\+\d+))?")


def parse_xrandr(text: str) -> list[str]:
    """`xrandr --query` -> the names of the outputs in use (a geometry, not disconnected), in order."""
    if not text.strip():
        raise ParseError("xrandr --query: empty output")
    if not text.lstrip().startswith("Screen "):
        raise ParseError(f"xrandr --query: expected a first line 'Screen N: ...', got {excerpt(text)}")
    return [m[1] for m in map(_XRANDR_OUTPUT.match, text.splitlines())
            if m and m[3] and m[2] != "disconnected" and is_screen(m[1])]


def windows_monitors() -> int:  # pragma: no cover - Windows only
    import ctypes

    return int(ctypes.windll.user32.GetSystemMetrics(80))  # type: ignore[attr-defined]  # SM_CMONITORS


@register("display")
class DisplayProbe:
    """Seconds with an external screen in use; one `Display` record per collect.

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
        self._last: tuple[int, int] = (0, 0)  # (screens, external screens) in use at the latest sample
        self.sampler = Sampler(self._classify, every_s=check_every(sample_every_s), clock=clock, now=now,
                               interval_s=interval_s)

    async def outputs(self) -> tuple[int, int] | None:
        """(screens in use, external screens in use) now; None when nothing can tell."""
        if self._platform == "win32":  # pragma: no cover - Windows only
            monitors = windows_monitors()
            return monitors, max(0, monitors - 1)
        in_use = read_drm(self.drm_root)
        if in_use is None:
            try:
                in_use = parse_xrandr(await self._run(["xrandr", "--query"], 5.0))
            except CommandError:
                return None
        return len(in_use), len(external_outputs(in_use, self.internal))

    async def _classify(self, slot_s: float) -> str:
        now = await self.outputs()
        self._last = now or (0, 0)
        if now is None:
            return "unknown"
        return "external" if now[1] else "internal"

    async def aclose(self) -> None:
        await self.sampler.aclose()

    async def collect(self) -> list[Record]:
        self.sampler.start()
        segments = await self.sampler.drain()
        screens, external = self._last
        return [Display(seq=0, at=at, duration_s=round(elapsed, 3), external_s=round(totals.get("external", 0.0), 3),
                        external_connected=external > 0, displays=min(screens, 64))
                for at, elapsed, totals in segments]
