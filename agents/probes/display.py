"""display: is an external display (the classroom projector) plugged into this laptop, and for
how long? That is projector use even when the projector has no network.

Linux: DRM connector status in sysfs (`/sys/class/drm/card*-<connector>/status`), which needs
no X session; `xrandr --query` as a fallback. An *external* output is any connected output that
is not the laptop's own panel (eDP, LVDS, DSI). Windows: more than one monitor. Sampled every
`sample_every_s` (15 s) within the interval, like the usage probe.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from agents.probes import register
from agents.probes._run import CommandError, ParseError, run_cmd
from agents.probes._sampling import Sampler
from collector.wire import Display, Record

INTERNAL = ("edp", "lvds", "dsi")


def is_internal(connector: str) -> bool:
    return connector.lower().startswith(INTERNAL)


def parse_drm_connectors(statuses: dict[str, str]) -> tuple[int, int]:
    """{connector name: status file content} -> (connected outputs, connected external ones)."""
    connected = external = 0
    for name, status in statuses.items():
        value = status.strip()
        if value not in ("connected", "disconnected", "unknown"):
            raise ParseError(f"{name}: unexpected DRM status {value[:40]!r}")
        if value == "connected":
            connected += 1
            external += not is_internal(name)
    return connected, external


_XRANDR_OUTPUT = re.compile(r"^(\S+) (connected|disconnected|unknown connection)\b")


def parse_xrandr(text: str) -> tuple[int, int]:
    """`xrandr --query` -> (connected outputs, connected external ones)."""
    if not text.strip():
        raise ParseError("xrandr printed nothing")
    if not text.lstrip().startswith("Screen "):
        raise ParseError(f"expected xrandr output starting with 'Screen', got {text.strip()[:60]!r}")
    connected = external = 0
    for line in text.splitlines():
        m = _XRANDR_OUTPUT.match(line)
        if m and m[2] == "connected":
            connected += 1
            external += not is_internal(m[1])
    return connected, external


def read_drm(root: Path) -> dict[str, str]:
    statuses = {}
    for status in sorted(root.glob("card*-*/status")):
        connector = status.parent.name.split("-", 1)[1]
        try:
            statuses[connector] = status.read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
    return statuses


@register("display")
class DisplayProbe:
    """Options: `sample_every_s` (default 15), `drm_root` (default /sys/class/drm)."""

    name = "display"

    def __init__(self, sample_every_s: float = 15.0, drm_root: str = "/sys/class/drm", *,
                 run: Callable[[list[str], float], Awaitable[str]] = run_cmd,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if not 0.5 <= sample_every_s <= 300:
            raise ValueError("sample_every_s must be between 0.5 and 300")
        self.drm_root = Path(drm_root)
        self._run, self._now = run, now
        self._last: tuple[int, int] = (0, 0)
        self._interval_start = now()
        self.sampler = Sampler(self._classify, every_s=sample_every_s, clock=clock)

    async def outputs(self) -> tuple[int, int]:
        """(connected, external) now; (0, 0) when nothing can tell."""
        if sys.platform == "win32":  # pragma: no cover - Windows only
            import ctypes

            monitors = ctypes.windll.user32.GetSystemMetrics(80)  # type: ignore[attr-defined]  # SM_CMONITORS
            return monitors, max(0, monitors - 1)
        statuses = read_drm(self.drm_root)
        if statuses:
            return parse_drm_connectors(statuses)
        try:
            return parse_xrandr(await self._run(["xrandr", "--query"], 5.0))
        except (CommandError, ParseError):
            return 0, 0

    async def _classify(self, slot: float) -> str:
        self._last = await self.outputs()
        return "external" if self._last[1] else "internal"

    async def collect(self) -> list[Record]:
        self.sampler.start()
        at = self._interval_start
        elapsed, totals = await self.sampler.drain()
        self._interval_start = self._now()
        connected, external = self._last
        return [Display(seq=0, at=at, duration_s=round(elapsed, 3), external_s=round(totals.get("external", 0.0), 3),
                        external_connected=external > 0, displays=min(connected, 64))]
