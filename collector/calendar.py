"""The school calendar: which days are school days, for a school. Pure functions and data.

A day is a school day for a school when it is one of the school's teaching weekdays (its
timetable), is not a French public holiday (`holidays` package), is not in the school's zone
holidays (`vacances-scolaires-france` data, read here directly), and no override closes it;
an override can also open a day (a make-up Saturday, say). A school-specific override beats
a city-wide one on the same day.

Known flaws of the holiday data, handled here:
- Its CSV is opened by the package without an encoding, so on a cp1252 system holiday names
  come out garbled and name lookups fail. We read the file ourselves as UTF-8 and never rely
  on names except the summer marker, matched on an ASCII prefix.
- For some years the summer break starts on a weekday (2021-07-06, 2022-07-07, 2028-07-04):
  that day is the official "fin des cours", the last teaching day (the break begins after
  class), not a holiday. A summer break that starts Monday to Friday loses its first day.
- The Ascension bridge (no class on the Friday after Ascension Thursday) is missing for
  2023-2026 although it was in every official calendar since 2019: we add it for every year.
- The data stops after the summer of 2028 (later days read as "not a holiday" with no error).
  `is_covered()` says whether holiday data exists for a day, so callers can say so loudly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Literal

ZONES = ("A", "B", "C")
MAX_LABEL = 200
MAX_EVENT_DAYS = 400
SUMMER = "Vacances d'été"

MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


@dataclass(frozen=True)
class Timetable:
    name: str
    weekdays: frozenset[int]


FOUR_DAY = Timetable("four_day", frozenset({MON, TUE, THU, FRI}))
WEDNESDAY_MORNING = Timetable("wednesday_morning", frozenset({MON, TUE, WED, THU, FRI}))
TIMETABLES = {t.name: t for t in (FOUR_DAY, WEDNESDAY_MORNING)}


@dataclass(frozen=True)
class Override:
    day: date
    kind: Literal["closed", "open"]
    school: str | None  # None: city-wide
    label: str = ""


class CalendarImportError(ValueError):
    """An iCalendar file we cannot use; the message says what and where."""


# ---------------------------------------------------------------- holiday data

@dataclass(frozen=True)
class ZoneData:
    holidays: frozenset[date]
    first: date
    last: date  # last day for which the data says anything (end of the last break)


@cache
def zone_data(zone: str) -> ZoneData:
    if zone not in ZONES:
        raise ValueError(f"unknown zone {zone!r}; expected one of {', '.join(ZONES)}")
    raw = resources.files("vacances_scolaires_france").joinpath("data/data.csv").read_bytes()
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
    key = f"vacances_zone_{zone.lower()}"
    days: set[date] = set()
    previous = False
    last_any = date.min
    for row in rows:
        day = date.fromisoformat(row["date"])
        holiday = row[key] == "True"
        starts_break, previous = holiday and not previous, holiday
        if starts_break and row["nom_vacances"] == SUMMER and day.weekday() < SAT:
            holiday = False  # the summer break starts after class on its first listed day
        if holiday:
            days.add(day)
        if "True" in (row["vacances_zone_a"], row["vacances_zone_b"], row["vacances_zone_c"]):
            last_any = day
    return ZoneData(frozenset(days), date.fromisoformat(rows[0]["date"]), last_any)


@cache
def public_holidays(year: int) -> frozenset[date]:
    import holidays

    days = set(holidays.France(years=year).keys())
    return frozenset(days)


@cache
def ascension_bridge(year: int) -> date | None:
    """The Friday after Ascension Thursday (Easter + 39 days)."""
    import holidays

    for day, name in holidays.France(years=year, language="en_US").items():
        if "Ascension" in name:
            return day + timedelta(days=1)
    return None


def is_covered(zone: str, day: date) -> bool:
    """Whether we have school-holiday data for this zone on this day."""
    data = zone_data(zone)
    return data.first <= day <= data.last


def is_zone_holiday(zone: str, day: date) -> bool:
    if day in zone_data(zone).holidays:
        return True
    return is_covered(zone, day) and day == ascension_bridge(day.year)


# ---------------------------------------------------------------- a school's calendar

@dataclass(frozen=True)
class SchoolCalendar:
    zone: str
    timetable: Timetable = FOUR_DAY
    overrides: tuple[Override, ...] = ()
    school: str | None = None
    _by_day: dict[date, Override] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        zone_data(self.zone)  # fail early on an unknown zone
        by_day: dict[date, Override] = {}
        for o in self.overrides:
            if o.school not in (None, self.school):
                continue
            current = by_day.get(o.day)
            if current is None or (current.school is None and o.school is not None):
                by_day[o.day] = o  # a school's own override beats a city-wide one
        object.__setattr__(self, "_by_day", by_day)

    def is_school_day(self, day: date) -> bool:
        override = self._by_day.get(day)
        if override is not None:
            return override.kind == "open"
        return (day.weekday() in self.timetable.weekdays
                and day not in public_holidays(day.year)
                and not is_zone_holiday(self.zone, day))

    def is_covered(self, day: date) -> bool:
        return is_covered(self.zone, day)

    def school_days(self, start: date, end: date) -> list[date]:
        """School days from start to end, both included."""
        return [d for d in _days(start, end) if self.is_school_day(d)]


def zone_school_days(zone: str, start: date, end: date, timetable: Timetable = FOUR_DAY) -> list[date]:
    return SchoolCalendar(zone, timetable).school_days(start, end)


def _days(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


# ---------------------------------------------------------------- iCalendar import

def parse_ics(data: bytes, *, school: str | None) -> list[Override]:
    """Closure days from an iCalendar file: every day of every VEVENT is a closed day.

    The official French school calendar is published this way, one event per break. All-day
    events end the day before DTEND (RFC 5545: DTEND is exclusive); an event without DTEND or
    DURATION lasts one day.
    """
    from icalendar import Calendar

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CalendarImportError(f"not UTF-8 text (byte {e.start}); export the calendar as UTF-8") from None
    if "BEGIN:VCALENDAR" not in text.upper():
        raise CalendarImportError("not an iCalendar file: no BEGIN:VCALENDAR line")
    try:
        parsed = Calendar.from_ical(text)
    except Exception as e:  # icalendar raises ValueError and friends with its own wording
        raise CalendarImportError(f"malformed iCalendar: {e}") from None
    overrides: list[Override] = []
    events = list(parsed.walk("VEVENT"))
    if not events:
        raise CalendarImportError("the calendar has no VEVENT: nothing to import")
    for index, event in enumerate(events, 1):
        summary = str(event.get("SUMMARY", "")).strip()[:MAX_LABEL]
        where = f"event {index}" + (f" ({summary!r})" if summary else "") + (
            f" UID {event.get('UID')}" if event.get("UID") else "")
        start_prop = event.get("DTSTART")
        if start_prop is None:
            raise CalendarImportError(f"{where}: no DTSTART")
        try:
            start = _as_date(start_prop.dt)
            if event.get("DTEND") is not None:
                end_exclusive = _as_date(event.get("DTEND").dt)
                if isinstance(event.get("DTEND").dt, datetime) and event.get("DTEND").dt.time() != datetime.min.time():
                    end_exclusive += timedelta(days=1)  # a timed end covers that day too
            elif event.get("DURATION") is not None:
                end_exclusive = _as_date(start_prop.dt + event.get("DURATION").dt)
                end_exclusive = max(end_exclusive, start + timedelta(days=1))
            else:
                end_exclusive = start + timedelta(days=1)
        except (AttributeError, TypeError, ValueError) as e:
            raise CalendarImportError(f"{where}: unreadable date ({e})") from None
        if end_exclusive <= start:
            raise CalendarImportError(f"{where}: ends ({end_exclusive}) before it starts ({start})")
        if (end_exclusive - start).days > MAX_EVENT_DAYS:
            raise CalendarImportError(f"{where}: spans {(end_exclusive - start).days} days; at most "
                                      f"{MAX_EVENT_DAYS} are accepted")
        last = end_exclusive - timedelta(days=1)
        overrides.extend(Override(d, "closed", school, summary) for d in _days(start, last))
    return overrides


def _as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


def unique_days(overrides: Iterable[Override]) -> list[Override]:
    """One override per (school, day): the last one given wins."""
    return list({(o.school, o.day): o for o in overrides}.values())
