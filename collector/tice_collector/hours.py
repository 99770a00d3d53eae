"""Teaching hours: when in a school day use counts as use in class. Pure functions and data.

The plan's question is regular use *in class*, so a device's day is judged on its activity
inside the school's teaching hours; activity outside them (22:30, a Wednesday afternoon at a
school that teaches Wednesday mornings) is kept as its own figure and never counts as evidence.

Hours are periods of local time (the collector's `timezone`, Europe/Paris by default), written
`08:30-11:30 13:30-16:30`. The collector settings give the defaults: `teaching_hours` for a
school day, `wednesday_hours` for the Wednesday of a `wednesday_morning` school (a four-day
school's Wednesday, taught only when an override opens it as a make-up day, gets a school
day's hours). A school can set its own periods for any weekday (`tice-collector school hours`).
Which days are school days is the calendar's business (collector/tice_collector/calendar.py): hours say when,
inside a day, class time is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, tzinfo

Period = tuple[time, time]
Periods = tuple[Period, ...]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WED = 2
MAX_PERIODS = 4  # a morning, an afternoon and a split or two; the rollup has room for this many
DEFAULT_TEACHING_HOURS = "08:30-11:30 13:30-16:30"
DEFAULT_WEDNESDAY_HOURS = "08:30-11:30"

_PERIOD = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def parse_periods(text: str) -> Periods:
    """`"08:30-11:30 13:30-16:30"` (spaces or commas between periods) -> the periods.

    Each period is HH:MM-HH:MM in 24-hour local time, start before end; periods are in order
    and do not overlap; at most MAX_PERIODS. `"-"` or an empty text is a day without class.
    Raises ValueError with a sentence naming the offending part.
    """
    parts = [p for p in re.split(r"[\s,;]+", text.strip()) if p]
    if parts in ([], ["-"]):
        return ()
    if len(parts) > MAX_PERIODS:
        raise ValueError(f"at most {MAX_PERIODS} periods a day, got {len(parts)} in {text!r}")
    periods: list[Period] = []
    for part in parts:
        m = _PERIOD.match(part)
        if m is None:
            raise ValueError(f"{part!r} is not a period like 08:30-11:30 (24-hour HH:MM-HH:MM)")
        start, end = time(int(m[1]), int(m[2])), time(int(m[3]), int(m[4]))
        if end <= start:
            raise ValueError(f"{part!r} ends before it starts")
        if periods and start < periods[-1][1]:
            raise ValueError(f"{part!r} starts before the previous period ends; list periods in order")
        periods.append((start, end))
    return tuple(periods)


def format_periods(periods: Periods) -> str:
    return " ".join(f"{a:%H:%M}-{b:%H:%M}" for a, b in periods) or "-"


def parse_weekdays(text: str) -> tuple[int, ...]:
    """`"mon,tue,thu,fri"` or `"all"` -> weekday numbers (0 = Monday)."""
    if text.strip().lower() == "all":
        return tuple(range(7))
    days = []
    for name in (p.strip().lower() for p in text.split(",")):
        if name not in WEEKDAYS:
            raise ValueError(f"{name!r} is not a weekday; use {', '.join(WEEKDAYS)} or all")
        days.append(WEEKDAYS.index(name))
    return tuple(sorted(set(days)))


DEFAULT_SCHOOL_DAY = parse_periods(DEFAULT_TEACHING_HOURS)
DEFAULT_WEDNESDAY = parse_periods(DEFAULT_WEDNESDAY_HOURS)


@dataclass(frozen=True)
class TeachingHours:
    """A school's periods for each weekday: its own where set, else the defaults.

    `school_day` is the default of every weekday but Wednesday, `wednesday` Wednesday's
    (Saturday and Sunday get the school-day default too, for a make-up day an override opens).
    """

    school_day: Periods = DEFAULT_SCHOOL_DAY
    wednesday: Periods = DEFAULT_WEDNESDAY
    own: Mapping[int, Periods] = field(default_factory=dict)

    def periods(self, weekday: int) -> Periods:
        if weekday in self.own:
            return self.own[weekday]
        return self.wednesday if weekday == WED else self.school_day

    def is_own(self, weekday: int) -> bool:
        return weekday in self.own


def hours_from(teaching_hours: str, wednesday_hours: str, own: Iterable[tuple[int, str]] = (),
               timetable: str = "four_day") -> TeachingHours:
    """A school's hours from the defaults (the collector settings `teaching_hours` and
    `wednesday_hours`, the latter for `wednesday_morning` schools only), its timetable's name
    and its own (weekday, periods) rows."""
    school_day = parse_periods(teaching_hours)
    wednesday = parse_periods(wednesday_hours) if timetable == "wednesday_morning" else school_day
    return TeachingHours(school_day=school_day, wednesday=wednesday,
                         own={weekday: parse_periods(text) for weekday, text in own})


def intervals(hours: TeachingHours, day: date, tz: tzinfo) -> list[tuple[datetime, datetime]]:
    """The teaching periods of `day` as instants (tz-aware), as if the day were a school day.

    Whether the day *is* a school day is decided when the day is judged, from the calendar, so
    a closure or a make-up day added later needs no recomputation of the daily figures.
    """
    return [(datetime.combine(day, a, tz), datetime.combine(day, b, tz)) for a, b in hours.periods(day.weekday())]
