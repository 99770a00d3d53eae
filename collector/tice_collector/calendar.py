"""The school calendar: which days are school days, for a school. Pure functions and data.

A day is a school day for a school when it is one of the school's teaching weekdays (its
timetable), is not a French public holiday, is not in the school holidays of the school's zone
(both from holiday_data.py, which corrects the holiday data's flaws), and no override closes it;
an override can also open a day (a make-up Saturday, say). A school-specific override beats a
city-wide one on the same day. Overrides come from the database, typed by hand or imported from
an iCalendar file (calendar_ics.py).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from typing import Literal
from zoneinfo import ZoneInfo

from tice_collector.holiday_data import ZONES, closed_days, coverage, zone_data

__all__ = ["FOUR_DAY", "SCHOOL_TZ", "TIMETABLES", "WEDNESDAY_MORNING", "ZONES", "Override", "SchoolCalendar",
           "Timetable", "coverage", "unique_days"]

SCHOOL_TZ = ZoneInfo("Europe/Paris")  # the schools' clocks: dates and teaching hours are read in it

MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


@dataclass(frozen=True)
class Timetable:
    """The weekdays a school teaches on (0 = Monday ... 6 = Sunday), with a name."""

    name: str
    weekdays: frozenset[int]

    def __post_init__(self) -> None:
        if not self.weekdays <= frozenset(range(7)):
            raise ValueError(f"timetable {self.name!r}: weekdays must be 0 (Monday) to 6 (Sunday)")


FOUR_DAY = Timetable("four_day", frozenset({MON, TUE, THU, FRI}))  # the national norm
WEDNESDAY_MORNING = Timetable("wednesday_morning", frozenset({MON, TUE, WED, THU, FRI}))  # Dijon
TIMETABLES = {t.name: t for t in (FOUR_DAY, WEDNESDAY_MORNING)}


@dataclass(frozen=True)
class Override:
    """A correction to the calendar: a closed day (strike, closure, imported calendar) or an
    extra school day, for one school (its UAI code) or city-wide (school None)."""

    day: date
    kind: Literal["closed", "open"]
    school: str | None  # None: city-wide
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("closed", "open"):
            raise ValueError(f"override kind must be 'closed' or 'open', not {self.kind!r}")


@cache
def _timetable_days(zone: str, weekdays: frozenset[int], year: int) -> tuple[date, ...]:
    """The year's school days for a timetable, before overrides, sorted (for bisection)."""
    closed = closed_days(zone, year)
    first, last = date(year, 1, 1).toordinal(), date(year, 12, 31).toordinal()
    days = (date.fromordinal(n) for n in range(first, last + 1))
    return tuple(d for d in days if d.weekday() in weekdays and d not in closed)


def _range(base: tuple[date, ...], start: date, end: date) -> tuple[date, ...]:
    return base[bisect_left(base, start):bisect_right(base, end)]


@dataclass(frozen=True)
class SchoolCalendar:
    """The calendar of one school (or, with school None, of a zone with city-wide overrides).

    Overrides for other schools are ignored, so one list of every override can be passed to
    each school. On the same day a school's own override beats a city-wide one; between two
    overrides of the same level, the last one given wins.
    """

    zone: str
    timetable: Timetable = FOUR_DAY
    overrides: tuple[Override, ...] = ()
    school: str | None = None
    _by_day: dict[date, Override] = field(init=False, repr=False, compare=False, hash=False)
    _override_days: tuple[date, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        zone_data(self.zone)  # fail early on an unknown zone
        by_day: dict[date, Override] = {}
        for o in self.overrides:
            if o.school not in (None, self.school):
                continue
            current = by_day.get(o.day)
            if current is None or o.school is not None or current.school is None:
                by_day[o.day] = o
        object.__setattr__(self, "_by_day", by_day)
        object.__setattr__(self, "_override_days", tuple(sorted(by_day)))

    def is_school_day(self, day: date) -> bool:
        override = self._by_day.get(day)
        if override is not None:
            return override.kind == "open"
        return day.weekday() in self.timetable.weekdays and day not in closed_days(self.zone, day.year)

    def is_covered(self, day: date) -> bool:
        return coverage(self.zone, day)

    def school_days(self, start: date, end: date) -> list[date]:
        """School days from start to end, both included, in order.

        The timetable's days of each year are computed once per (zone, timetable, year); a
        range is then two bisections per year plus the overrides that fall inside it.
        """
        days: list[date] = []
        for year in range(start.year, end.year + 1):
            days.extend(_range(_timetable_days(self.zone, self.timetable.weekdays, year), start, end))
        inside = _range(self._override_days, start, end)
        if not inside:
            return days
        is_open = {d: self._by_day[d].kind == "open" for d in inside}
        kept = {d for d in days if is_open.get(d, True)}
        return sorted(kept.union(d for d, opened in is_open.items() if opened))


def unique_days(overrides: Iterable[Override]) -> list[Override]:
    """One override per (school, day): the last one given wins."""
    return list({(o.school, o.day): o for o in overrides}.values())
