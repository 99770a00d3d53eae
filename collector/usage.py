"""The regular-use policy, as pure functions over daily figures and a list of school days.

The city's question is "is the equipment used regularly in class?", judged on school days
only. The rules, with their defaults (collector settings override them):

- A device is *used* on a school day when its figure for that day reaches `used_threshold_s`
  (600 s = 10 minutes, 600 s included). The figure is: for a computer, its active seconds; for a
  projector, the longer of lamp-on and external-display time (`projector_seconds`); for a 3G
  key, whether it carried at least `modem_used_bytes` (`modem_used`).
- A device is *used regularly* when it was used on at least `regular_share` (50 %, included)
  of the last `window_school_days` (20) school days up to the day judged.
- A device enrolled inside the window is judged only on the school days since its enrolment
  (the enrolment day included): the window is not stretched back to before it existed. With
  fewer than `min_judged_days` (5) such days it is *too new*, neither regular nor irregular,
  so a device installed last week is not reported as unused.
- A class is *regular* when at least `class_min_regular` (3) of its judged devices are used
  regularly (a class with fewer judged devices cannot be regular).
- A school's ratio is its regular classes over its classes (None for a school without any).
- A 3G key is used on a day when it carried at least `modem_used_bytes` (64 KiB, received plus
  sent). Not 1 byte: a key left plugged in and connected still exchanges a few kilobytes a day
  (network keep-alives, time sync, the laptop's update and push-notification checks), while any
  real use in class (one web page is hundreds of kilobytes) is far above 64 KiB.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from math import isfinite
from typing import Literal

Verdict = Literal["regular", "irregular", "too_new"]


@dataclass(frozen=True)
class Policy:
    used_threshold_s: float = 600.0  # seconds of use that make a school day "used"
    window_school_days: int = 20  # the judging window, in school days
    regular_share: float = 0.5  # share of the window's days that must be used
    min_judged_days: int = 5  # fewer observable days than this: "too_new"
    class_min_regular: int = 3  # K regular devices make a regular class (of 5 Chromebooks)
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
        if self.class_min_regular < 1:
            problems.append(f"class_min_regular must be >= 1, got {self.class_min_regular}")
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
    # Exact fractions: 0.28 * 25 is 7.000000000000001 in floats; 7 days of 25 must pass.
    regular = Fraction(used, len(days)) >= Fraction(str(policy.regular_share))
    return DeviceVerdict("regular" if regular else "irregular", used, len(days))


def class_regular(device_regular: Iterable[bool], policy: Policy) -> bool:
    """A class is regular when at least `class_min_regular` of its judged devices are used
    regularly. Pass one boolean per judged device (too-new devices left out)."""
    return sum(bool(r) for r in device_regular) >= policy.class_min_regular


def school_ratio(regular_classes: int, classes: int) -> float | None:
    """Regular classes over classes, 0..1; None for a school without classes."""
    if not 0 <= regular_classes <= classes:
        raise ValueError(f"regular classes ({regular_classes}) must be between 0 and classes ({classes})")
    return regular_classes / classes if classes else None


def projector_seconds(lamp_on_s: float, external_display_s: float) -> float:
    """Projector use in a day: the longer of the two signals, never their sum (a projector
    switched on and fed by the laptop shows up in both, for the same lesson)."""
    return max(lamp_on_s, external_display_s)


def modem_used(bytes_carried: int, policy: Policy) -> bool:
    """Whether a 3G key's day counts as used: received + sent bytes reach `modem_used_bytes`."""
    return bytes_carried >= policy.modem_used_bytes
