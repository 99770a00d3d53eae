"""What the fleet snapshot exports about each peripheral (3G key, projector, backup disk): pure
functions from a peripheral's latest reading and its daily figures to the figures on /metrics.

The readings come from `peripherals_latest` (collector/tice_collector/db/queries.sql): a peripheral's latest
reading from any host; the bytes of its plan month from its daily rows. See docs/peripherals.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Literal

# PJLink ERST's six components, in the order the projector gives them.
COMPONENTS = ("fan", "lamp", "temperature", "cover", "filter", "other")
LEVELS = {"ok": 0, "warning": 1, "error": 2}
# A projector's power as exported: the PJLink states, "unknown" (no readable answer, or a
# reading too old to tell) and "unreachable" (no answer on the network).
POWER_STATES = ("on", "warming", "cooling", "standby", "unknown", "unreachable")
SignalMeasure = Literal["rsrp", "rssi"]


def plan_month_start(today: date, reset_day: int) -> date:
    """The first day of the data plan's current month: the latest `reset_day` of a month on or
    before `today` (reset_day 1..28, so every month has it). 13 Nov with reset day 15 -> 15 Oct."""
    if not 1 <= reset_day <= 28:
        raise ValueError(f"reset_day must be 1..28, got {reset_day}")
    if today.day >= reset_day:
        return today.replace(day=reset_day)
    year, month = (today.year - 1, 12) if today.month == 1 else (today.year, today.month - 1)
    return date(year, month, reset_day)


def quota_ratio(month_bytes: int, quota_bytes: int) -> float | None:
    """This plan month's bytes over the plan's quota, 0..1 (a key past its quota is 1: it is cut
    off, or paying extra); None without a quota (0)."""
    if quota_bytes <= 0:
        return None
    return min(1.0, max(0, month_bytes) / quota_bytes)


def signal(rsrp_dbm: float | None, rssi_dbm: float | None) -> tuple[SignalMeasure, float] | None:
    """The key's signal in dBm, and which measure it is: RSRP when the key gives it (4G: the
    reference signal's power, what the key's bars follow), else RSSI (2G/3G: the whole channel's
    power). They are not comparable (an LTE key gives both, RSRP some 20 to 30 dB below RSSI),
    hence the label. None when the key gave neither."""
    if rsrp_dbm is not None:
        return "rsrp", float(rsrp_dbm)
    if rssi_dbm is not None:
        return "rssi", float(rssi_dbm)
    return None


def fresh(taken: datetime | None, now: datetime, max_age_s: float) -> bool:
    """Whether a reading taken at `taken` still tells the present state."""
    return taken is not None and (now - taken).total_seconds() <= max_age_s


def modem_connected(reading: Mapping[str, Any], now: datetime, max_age_s: float) -> bool:
    """A key is connected when its latest reading, fresh enough, found it up and connected."""
    return (fresh(reading.get("modem_at"), now, max_age_s) and bool(reading.get("modem_up"))
            and reading.get("state") == "connected")


def projector_power(reading: Mapping[str, Any], now: datetime, max_age_s: float) -> str:
    """One of POWER_STATES, from the latest reading: unreachable when it did not answer on the
    network, unknown when the reading is too old or gave no power state (a refused password)."""
    if not fresh(reading.get("projector_at"), now, max_age_s):
        return "unknown"
    if not reading.get("projector_up"):
        return "unreachable"
    power = reading.get("power") or "unknown"
    return power if power in POWER_STATES else "unknown"


def lamp_remaining_s(lamp_hours: int | None, life_hours: int) -> float | None:
    """Lamp life left in seconds: the rated life less the lamp's hours, never below 0; None
    without lamp hours (a laser or LED projector answers no LAMP)."""
    if lamp_hours is None:
        return None
    return max(0, life_hours - lamp_hours) * 3600.0


def error_levels(reading: Mapping[str, Any]) -> dict[str, int]:
    """The projector's own error status per component, 0 ok, 1 warning, 2 error; a component it
    did not report is left out."""
    return {c: LEVELS[reading[c]] for c in COMPONENTS if reading.get(c) in LEVELS}
