"""The regular-use policy, as pure functions over daily figures and a list of school days.

The city's question is "is the equipment used regularly in class?", judged on school days
only, inside each school's teaching hours (collector/tice_collector/hours.py). The rules, with their defaults
(collector settings override them):

- A device is *used* on a school day when its figure for that day, counted inside the school's
  teaching hours, reaches `used_threshold_s` (600 s = 10 minutes, 600 s included). The figure
  is: for a computer, its active seconds; for a projector, the longer of lamp-on and
  external-display time (`projector_seconds`); for a 3G key, whether it carried at least
  `modem_used_bytes` (`modem_used`). Activity outside teaching hours is its own figure, kept
  and shown, never evidence of use in class.
- A device is *used regularly* when it was used on at least `regular_share` (50 %, included)
  of the last `window_school_days` (20) school days up to the day judged.
- A device enrolled inside the window is judged only on the school days since its enrolment
  (the enrolment day included): the window is not stretched back to before it existed. With
  fewer than `min_judged_days` (5) such days it is *too new*, neither regular nor irregular,
  so a device installed last week is not reported as unused.
- A device too new to judge is judged from the day after its `min_judged_days`-th school day
  (`judged_from`): every verdict view says so.
- A class is *regular* when at least `class_regular_share` (60 %, included: 3 of 5) of its
  judged devices are used regularly, so a class of any size can be regular (2 of 2, 3 of 5).
- A school's ratio is its judged devices used regularly over its judged devices, every kind,
  with or without a class (None for a school with no judged device): a nursery school with one
  laptop, one projector and one 3G key and no class is judged like any other.
- A 3G key is used on a day when it carried at least `modem_used_bytes` (64 KiB, received plus
  sent). Not 1 byte: a key left plugged in and connected still exchanges a few kilobytes a day
  (network keep-alives, time sync, the laptop's update and push-notification checks), while any
  real use in class (one web page is hundreds of kilobytes) is far above 64 KiB.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction
from math import isfinite
from typing import Any, Literal

Verdict = Literal["regular", "irregular", "too_new"]


@dataclass(frozen=True)
class Policy:
    used_threshold_s: float = 600.0  # seconds of use that make a school day "used"
    window_school_days: int = 20  # the judging window, in school days
    regular_share: float = 0.5  # share of the window's days that must be used
    min_judged_days: int = 5  # fewer observable days than this: "too_new"
    class_regular_share: float = 0.6  # share of a class's judged devices used regularly (3 of 5)
    modem_used_bytes: int = 65536  # received + sent bytes that make a 3G key's day "used"

    def __post_init__(self) -> None:
        problems = []
        # The same bounds as the collector settings, so valid settings always make a policy.
        if not (isfinite(self.used_threshold_s) and self.used_threshold_s >= 0):
            problems.append(f"used_threshold_s must be >= 0, got {self.used_threshold_s}")
        if self.window_school_days < 1:
            problems.append(f"window_school_days must be >= 1, got {self.window_school_days}")
        if not 0 < self.regular_share <= 1:
            problems.append(f"regular_share must be in (0, 1], got {self.regular_share}")
        if self.min_judged_days < 1:
            problems.append(f"min_judged_days must be >= 1, got {self.min_judged_days}")
        if not 0 < self.class_regular_share <= 1:
            problems.append(f"class_regular_share must be in (0, 1], got {self.class_regular_share}")
        if self.modem_used_bytes < 1:
            problems.append(f"modem_used_bytes must be >= 1, got {self.modem_used_bytes}")
        if problems:
            raise ValueError("invalid policy: " + "; ".join(problems))


@dataclass(frozen=True)
class DeviceVerdict:
    verdict: Verdict
    used_days: int  # school days of the window on which the device was used
    judged_days: int  # school days of the window the device could be judged on

    @property
    def share(self) -> float | None:
        """Used days over judged days; None when there is no day to judge on."""
        return self.used_days / self.judged_days if self.judged_days else None


def used_days(daily: Mapping[date, float], school_days: Iterable[date], policy: Policy) -> list[date]:
    """The school days on which the device's figure reached the threshold (the threshold
    itself counts as used). A day missing from `daily` is a day without use, even with a
    threshold of 0."""
    threshold = policy.used_threshold_s
    return [d for d in school_days if d in daily and daily[d] >= threshold]


def judging_window(school_days: Iterable[date], until: date, policy: Policy,
                   enrolled: date | None = None) -> list[date]:
    """The school days a device is judged on: the last `window_school_days` school days up to
    and including `until`, minus those before its enrolment day."""
    days = sorted({d for d in school_days if d <= until})[-policy.window_school_days:]
    return days if enrolled is None else [d for d in days if d >= enrolled]


def device_verdict(daily: Mapping[date, float], school_days: Sequence[date], policy: Policy,
                   enrolled: date | None = None) -> DeviceVerdict:
    """Judge one device over the window.

    `school_days` are the window's school days, in order (from `judging_window`, or the
    calendar's school days up to the day judged); only the last `window_school_days` count,
    and with `enrolled` only those from the enrolment day on. Fewer than `min_judged_days`
    left: "too_new". Otherwise "regular" when used on at least `regular_share` of them.
    """
    days = list(school_days)[-policy.window_school_days:]
    if enrolled is not None:
        days = [d for d in days if d >= enrolled]
    used = len(used_days(daily, days, policy))
    if len(days) < policy.min_judged_days:
        return DeviceVerdict("too_new", used, len(days))
    regular = at_least(used, len(days), policy.regular_share)
    return DeviceVerdict("regular" if regular else "irregular", used, len(days))


def at_least(part: int, whole: int, share: float) -> bool:
    """part/whole >= share, exactly: 0.28 * 25 is 7.000000000000001 in floats, yet 7 of 25
    must pass a 28 % share. False when whole is 0."""
    return whole > 0 and Fraction(part, whole) >= Fraction(str(share))


def judged_from(school_days: Iterable[date], enrolled: date, policy: Policy) -> date | None:
    """The first day a device enrolled on `enrolled` gets a verdict: the day after its
    `min_judged_days`-th school day from enrolment on (the enrolment day included; a day is
    judged once it is over). None when `school_days` (in order, reaching far enough ahead)
    hold fewer such days."""
    n = 0
    for d in school_days:
        if d >= enrolled:
            n += 1
            if n == policy.min_judged_days:
                return d + timedelta(days=1)
    return None


def class_regular(device_regular: Iterable[bool], policy: Policy) -> bool:
    """A class is regular when at least `class_regular_share` of its judged devices are used
    regularly (exact fractions: 3 of 5 passes 60 %, 2 of 2 too). Pass one boolean per judged
    device (too-new devices left out); no judged device: not regular."""
    flags = [bool(r) for r in device_regular]
    return at_least(sum(flags), len(flags), policy.class_regular_share)


def school_ratio(regular_devices: int, judged_devices: int) -> float | None:
    """A school's figure: its judged devices used regularly over its judged devices (every
    kind, with or without a class), 0..1; None for a school with no judged device."""
    if not 0 <= regular_devices <= judged_devices:
        raise ValueError(f"regular devices ({regular_devices}) must be between 0 and judged devices "
                         f"({judged_devices})")
    return regular_devices / judged_devices if judged_devices else None


def projector_seconds(lamp_on_s: float, external_display_s: float) -> float:
    """Projector use in a day: the longer of the two signals, never their sum (a projector
    switched on and fed by the laptop shows up in both, for the same lesson)."""
    return max(lamp_on_s, external_display_s)


def modem_used(bytes_carried: int, policy: Policy) -> bool:
    """Whether a 3G key's day counts as used: received + sent bytes reach `modem_used_bytes`."""
    return bytes_carried >= policy.modem_used_bytes


def explain(device: Mapping[str, Any]) -> str:
    """One sentence on a device's verdict, for every view that shows verdicts (CLI, admin API).

    `device` has the device's `kind`, `status`, `enrolled_at`, `google_listed` (Google Admin lists
    it) and its latest verdict columns (`verdict`, `used_days`, `judged_days`, `judged_from`,
    `out_of_hours_days`, `device_days`, `google_days`), the verdict ones None when it has none. A
    device not judged says why, and a too-new one from which day. A device Google lists says
    which source its judged days' figures came from: its own records, Google's daily total (no
    time of day: counted in class up to the day's teaching time), or none (not used).
    """
    google = bool(device.get("google_listed"))
    if device["status"] != "active":
        return f"not judged: {device['status']}"
    if device["enrolled_at"] is None and not google:
        return "not judged: never enrolled (known from the inventory only)"
    if device["kind"] == "disk":
        return "not judged: backup disks are watched for health, not use"
    verdict = device.get("verdict")
    if verdict is None:
        since = "it enrolled" if device["enrolled_at"] is not None else "Google listed it"
        return f"not judged yet: the detect job has not run since {since} (it runs every few minutes)"
    late = device.get("out_of_hours_days") or 0
    tail = f"; used out of hours on {late} day{'s' if late != 1 else ''} (not counted)" if late else ""
    used, judged = device["used_days"], device["judged_days"]
    if google:
        own, from_google = device.get("device_days") or 0, device.get("google_days") or 0
        tail = (f"; figures: {own} from the device, {from_google} from Google's daily total, "
                f"{judged - own - from_google} none{tail}")
    if verdict == "too_new":
        origin = "enrolment" if not google else "first observed (enrolment or Google)"
        since = f"{judged} school day{'s' if judged != 1 else ''} since {origin}"
        when = device.get("judged_from")
        start = f"judged from {when.isoformat()}" if when else "no judging day known yet in the calendar"
        return f"not judged yet: {since}; {start}{tail}"
    word = "used regularly" if verdict == "regular" else "low use"
    return f"{word}: used in class on {used} of its last {judged} school days{tail}"
