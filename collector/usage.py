"""The regular-use policy, as pure functions over daily figures and a list of school days.

The city's question is "is the equipment used regularly in class?", judged on school days
only. The rules, with their defaults (collector settings override them):

- A device is *used* on a school day when its figure for that day reaches `used_threshold_s`
  (600 s = 10 minutes of active use; for a projector, lamp-on or external-display time).
- A device is *used regularly* when it was used on at least `regular_share` (50 %) of the last
  `window_school_days` (20) completed school days. Only school days since the device was
  enrolled count; with fewer than `min_judged_days` (5) of them it is *too new* to judge,
  which is neither regular nor irregular.
- A class is *regular* when at least `class_min_regular` (3) of its judged devices are.
- A school's ratio is its regular classes over its judged classes (None without any).
- A 3G key counts as used on a day when it carried at least `modem_used_bytes` (64 KiB):
  an idle connected key still exchanges a few kilobytes of keep-alives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

Verdict = Literal["regular", "irregular", "too_new"]


@dataclass(frozen=True)
class Policy:
    used_threshold_s: float = 600.0
    window_school_days: int = 20
    regular_share: float = 0.5
    min_judged_days: int = 5
    class_min_regular: int = 3
    modem_used_bytes: int = 65536


@dataclass(frozen=True)
class DeviceVerdict:
    verdict: Verdict
    used_days: int
    judged_days: int


def used_days(daily: Mapping[date, float], school_days: Iterable[date], policy: Policy) -> list[date]:
    """The school days on which the device's figure reached the threshold."""
    return [d for d in school_days if daily.get(d, 0.0) >= policy.used_threshold_s]


def device_verdict(daily: Mapping[date, float], school_days: Sequence[date], policy: Policy) -> DeviceVerdict:
    """Judge one device over the window.

    `school_days` are the completed school days of the window that the device could have
    been used on (already cut to the days since its enrolment); only the last
    `window_school_days` of them count.
    """
    days = list(school_days)[-policy.window_school_days:]
    used = len(used_days(daily, days, policy))
    if len(days) < policy.min_judged_days:
        return DeviceVerdict("too_new", used, len(days))
    regular = used >= policy.regular_share * len(days)
    return DeviceVerdict("regular" if regular else "irregular", used, len(days))


def class_regular(device_regular: Sequence[bool], policy: Policy) -> bool:
    """A class is regular when at least K of its judged devices are used regularly."""
    return sum(device_regular) >= policy.class_min_regular


def school_ratio(regular_classes: int, classes: int) -> float | None:
    return regular_classes / classes if classes else None


def projector_seconds(lamp_on_s: float, external_display_s: float) -> float:
    """Projector use in a day: the longer of the two signals, never their sum (a projector
    plugged into the laptop and switched on shows up in both)."""
    return max(lamp_on_s, external_display_s)


def modem_used(bytes_carried: int, policy: Policy) -> bool:
    return bytes_carried >= policy.modem_used_bytes
