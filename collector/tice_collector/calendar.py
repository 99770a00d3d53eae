"""The school calendar: which days are school days, for a school. Pure functions and data.

A day is a school day for a school when it is one of the school's teaching weekdays (its
timetable), is not a French public holiday (`holidays` package), is not in the school holidays
of the school's zone (`vacances-scolaires-france` data, read here directly), and no override
closes it; an override can also open a day (a make-up Saturday, say). A school-specific
override beats a city-wide one on the same day.

Flaws of the holiday data, found by running against vacances-scolaires-france 0.12.0 and
handled here:

- Its CSV is opened by the package without an encoding: on a cp1252 system the names come out
  garbled ("NoÃ«l") and its name lookups return nothing. We read the bundled file ourselves as
  UTF-8, so the two names we use (the Ascension bridge, in `_read_rows`) are exact everywhere.
- The first listed day of a break is the official "fin des cours" date: classes end *after*
  class that day. When it is a Saturday that is harmless, but some breaks start on a weekday
  (summer 2021-07-06 Tue, 2022-07-07 Thu, 2028-07-04 Tue; Toussaint 2016-10-19 Wed, whose
  official text reads "fin des cours: mercredi 19 octobre 2016, reprise jeudi 3 novembre"):
  that weekday is a teaching day. Rule: a break whose first listed day is Monday to Friday loses
  that day. The Ascension bridge is the exception: its rows start on the first day without
  class (the Thursday, or in 2028 the Friday), so it keeps every day.
- The Ascension bridge (no class on the Friday after Ascension Thursday) is listed for 2019-2022
  and 2027-2028 but missing for 2023-2026, although the official calendars of those years have
  it. From the first year the data lists a bridge, we close the Friday after Ascension every
  covered year; we do not invent one before the data first shows it.
- The data stops after the summer of 2028: later days read as "not a holiday" with no error,
  and the package's own lookups raise `UnsupportedYearException` from 2029. We never call those
  lookups; `coverage(zone, day)` says whether the data knows a day, so callers can say so loudly.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from functools import cache
from importlib import resources
from typing import Any, Literal
from zoneinfo import ZoneInfo

log = logging.getLogger("tice.calendar")

ZONES = ("A", "B", "C")
MAX_LABEL = 200
MAX_EVENT_DAYS = 400
MAX_ICS_BYTES = 2 * 1024 * 1024  # an official calendar is a few kilobytes
BRIDGE = "Pont de l'Ascension"
SCHOOL_TZ = ZoneInfo("Europe/Paris")

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


class CalendarImportError(ValueError):
    """An iCalendar file we cannot use; the message says what and where."""


# ---------------------------------------------------------------- holiday data

@dataclass(frozen=True)
class ZoneData:
    holidays: frozenset[date]  # the zone's school-holiday days, flaws corrected
    first: date  # first day the data knows (first day of its first break for the zone)
    last: date  # last day the data knows (last day of its last break for the zone)
    first_bridge_year: int | None  # first year the data lists an Ascension bridge


NO_DATA = ZoneData(frozenset(), date.max, date.min, None)


@cache
def _read_rows() -> tuple[dict[str, str], ...]:
    """The package's CSV, decoded as UTF-8 whatever the system's default encoding is.

    A missing or unreadable file (a packaging change) is logged and read as "no data", so every
    day reads as not covered and callers raise the alarm, rather than an exception in every job.
    """
    try:
        raw = resources.files("vacances_scolaires_france").joinpath("data/data.csv").read_bytes()
        return tuple(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
    except (OSError, ModuleNotFoundError, UnicodeDecodeError) as e:
        log.error("school holiday data unreadable (%s: %s): no school-holiday coverage", type(e).__name__, e)
        return ()


@cache
def zone_data(zone: str) -> ZoneData:
    if zone not in ZONES:
        raise ValueError(f"unknown zone {zone!r}; expected one of {', '.join(ZONES)}")
    key = f"vacances_zone_{zone.lower()}"
    days: set[date] = set()
    previous = False
    first: date | None = None
    last: date | None = None
    first_bridge: int | None = None
    try:
        for row in _read_rows():
            day = date.fromisoformat(row["date"])
            holiday = row[key] == "True"
            if holiday and row["nom_vacances"] == BRIDGE and first_bridge is None:
                first_bridge = day.year
            starts_break, previous = holiday and not previous, holiday
            if holiday:
                first = day if first is None else first
                last = day
            if starts_break and day.weekday() < SAT and row["nom_vacances"] != BRIDGE:
                continue  # the "fin des cours": the break begins after class on that day
            if holiday:
                days.add(day)
    except (KeyError, ValueError) as e:
        log.error("school holiday data malformed (%s: %s): no coverage for zone %s", type(e).__name__, e, zone)
        return NO_DATA
    if first is None or last is None:
        return NO_DATA
    return ZoneData(frozenset(days), first, last, first_bridge)


def coverage(zone: str, day: date) -> bool:
    """Whether we have school-holiday data for this zone on this day.

    False before the data's first break and after its last (after the summer of 2028 with
    vacances-scolaires-france 0.12.0): there, school days follow the timetable and public
    holidays only, which is a guess the caller must report (a metric and a log line).
    """
    data = zone_data(zone)
    return data.first <= day <= data.last


is_covered = coverage


def easter(year: int) -> date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm, Meeus/Jones/Butcher)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return date(year, month, day + 1)


def ascension_bridge(year: int) -> date:
    """The Friday after Ascension Thursday (Ascension is Easter Sunday + 39 days)."""
    return easter(year) + timedelta(days=40)


@cache
def public_holidays(year: int) -> frozenset[date]:
    """French public holidays (jours fériés) of a year; names are not used."""
    import holidays

    try:
        return frozenset(holidays.France(years=year).keys())
    except Exception as e:  # the package has no data for absurd years; never fail a calendar on it
        log.error("no public holidays for %s (%s: %s)", year, type(e).__name__, e)
        return frozenset()


def is_zone_holiday(zone: str, day: date) -> bool:
    """Whether the day is in the zone's school holidays (flaws corrected, bridge included)."""
    return day in _zone_closed(zone, day.year)


@cache
def _zone_closed(zone: str, year: int) -> frozenset[date]:
    data = zone_data(zone)
    days = {d for d in data.holidays if d.year == year}
    bridge = ascension_bridge(year)
    if data.first_bridge_year is not None and year >= data.first_bridge_year and coverage(zone, bridge):
        days.add(bridge)
    return frozenset(days)


@cache
def closed_days(zone: str, year: int) -> frozenset[date]:
    """Days of `year` on which no school of the zone teaches: public and school holidays."""
    return public_holidays(year) | _zone_closed(zone, year)


@cache
def _timetable_days(zone: str, weekdays: frozenset[int], year: int) -> tuple[date, ...]:
    """The year's school days for a timetable, before overrides, sorted (for bisection)."""
    closed = closed_days(zone, year)
    first, last = date(year, 1, 1).toordinal(), date(year, 12, 31).toordinal()
    days = (date.fromordinal(n) for n in range(first, last + 1))
    return tuple(d for d in days if d.weekday() in weekdays and d not in closed)


def _range(base: tuple[date, ...], start: date, end: date) -> tuple[date, ...]:
    return base[bisect_left(base, start):bisect_right(base, end)]


# ---------------------------------------------------------------- a school's calendar

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


def zone_school_days(zone: str, start: date, end: date, timetable: Timetable = FOUR_DAY) -> list[date]:
    """School days of a zone on a timetable, without any override, start and end included."""
    days: list[date] = []
    for year in range(start.year, end.year + 1):
        days.extend(_range(_timetable_days(zone, timetable.weekdays, year), start, end))
    return days


def _days(start: date, end: date) -> Iterator[date]:
    for n in range(start.toordinal(), end.toordinal() + 1):
        yield date.fromordinal(n)


# ---------------------------------------------------------------- iCalendar import

def parse_ics(data: bytes, *, school: str | None, zone: str | None = None,
              tz: tzinfo = SCHOOL_TZ) -> list[Override]:
    """Closure days from an iCalendar file: every day of every VEVENT is a closed day.

    The official French school calendar (education.gouv.fr, the national open-data export) is
    published this way. Events are closures; there is no way to mark an extra school day in a
    file (add those as "open" overrides). Dates:
    - All-day events end the day before DTEND (RFC 5545: DTEND is exclusive); a timed end
      covers its own day unless it is exactly midnight; DURATION works the same way; an event
      with neither lasts one day.
    - Times with a time zone are read as dates in `tz` (the schools' zone), floating times as
      written: the server's own time zone never matters.
    The official file's conventions:
    - A summary ends with the zones it is for, after " - ": "Vacances d'Hiver - Zone A",
      "... - Zones A/B/C", "... - Zones B/C - Corse", "... - Zones A B C", "... - Corse". The list
      is parsed (`split_zones`); with `zone`, events for other zones only are skipped, so the
      all-zones file can be imported for one zone. A summary without zones is the city's own
      and is taken as written, for every zone.
    - The all-zones file splits a break into pieces, one per combination of zones (zone A's
      winter 2026 is "Zone A", then "Zones A/B", then "Zones A/B/C"). An official break is dated
      from its "fin des cours" day: classes end after class that day, so when its first piece
      starts Monday to Friday that day stays a school day (as in `zone_data`). A piece that
      continues the zone's break (the day before is in another piece) keeps every day.
    - The summer of the last published year is only its first day, a zero-length "Début des
      Vacances d'Été" event: the break runs until the next school year's start ("Rentrée ..."
      event of the zone) in the file; with none, until 31 August, and a warning says so.
    - Events that mark the start of classes ("Rentrée scolaire des élèves", "Prérentrée des
      enseignants", "Reprise ...") are not closures and are skipped.
    Recurring events are refused rather than half-imported.
    """
    from icalendar import Calendar

    if zone is not None and zone not in ZONES:
        raise ValueError(f"unknown zone {zone!r}; expected one of {', '.join(ZONES)}")
    if len(data) > MAX_ICS_BYTES:
        raise CalendarImportError(f"file too large ({len(data)} bytes; at most {MAX_ICS_BYTES})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CalendarImportError(f"not UTF-8 text (byte {e.start}); export the calendar as UTF-8") from None
    if "BEGIN:VCALENDAR" not in text.upper():
        raise CalendarImportError("not an iCalendar file: no BEGIN:VCALENDAR line")
    if "END:VCALENDAR" not in text.upper():
        raise CalendarImportError("incomplete iCalendar file: no END:VCALENDAR line (truncated download?)")
    try:
        parsed = Calendar.from_ical(text)
    except Exception as e:  # icalendar raises ValueError and friends with its own wording
        reason = str(e).splitlines()[0][:MAX_LABEL] if str(e) else type(e).__name__
        raise CalendarImportError(f"malformed iCalendar: {reason}") from None
    if getattr(parsed, "name", None) != "VCALENDAR":
        raise CalendarImportError("not an iCalendar file: the top component is not a VCALENDAR")
    events = list(parsed.walk("VEVENT"))
    if not events:
        raise CalendarImportError("the calendar has no VEVENT: nothing to import")
    kept: list[_Event] = []
    for index, event in enumerate(events, 1):
        summary = " ".join(str(event.get("SUMMARY", "")).split())[:MAX_LABEL]
        where = f"event {index}" + (f" ({summary!r})" if summary else "") + (
            f" UID {str(event.get('UID'))[:MAX_LABEL]}" if event.get("UID") else "")
        start, last = _event_days(event, where, tz)  # validate every event, even skipped ones
        name, zones = split_zones(_fold(summary))
        if zone is None or not zones or zone in zones:
            kept.append(_Event(summary, name, zones, start, last))

    # Days the zone's official break pieces cover as written, to tell a first piece from one
    # that continues a break.
    official = {d for ev in kept if ev.official_break for d in _days(ev.start, ev.last)}
    year_starts = sorted(ev.start for ev in kept if ev.name.startswith(YEAR_START))
    overrides: list[Override] = []
    for ev in kept:
        if ev.name.startswith(CLASS_START):
            continue
        start, last = ev.start, ev.last
        if ev.name.startswith(SUMMER_START):
            # A summer break is at most about nine weeks: a start further away is another year's.
            following = [d for d in year_starts if start < d <= start + timedelta(days=MAX_SUMMER_DAYS)]
            if following:
                last = following[0] - timedelta(days=1)
            else:
                last = max(last, date(start.year, 8, 31))
                log.warning("%s: no school year start after %s in the file; the summer break is taken to end "
                            "on %s. Import the next year's calendar when it is published.", ev.summary, start, last)
        if (ev.official_break or ev.name.startswith(SUMMER_START)) and start.weekday() < SAT \
                and start - timedelta(days=1) not in official:
            start += timedelta(days=1)  # the "fin des cours": the break begins after class
        overrides.extend(Override(d, "closed", school, ev.summary) for d in _days(start, last))
    return overrides


@dataclass(frozen=True)
class _Event:
    summary: str
    name: str  # folded, without its zones
    zones: frozenset[str]
    start: date
    last: date

    @property
    def official_break(self) -> bool:
        return self.name.startswith("vacances") and bool(self.zones)


CLASS_START = ("rentree", "prerentree", "reprise")
YEAR_START = ("rentree", "reprise")
SUMMER_START = "debut des vacances"
MAX_SUMMER_DAYS = 80
CORSICA = "CORSE"
_ZONE_LIST = re.compile(r"zones?\s+([abc](?:\s*(?:/|,|&|\bet\b|\s)\s*[abc])*)")
_SEPARATOR = re.compile(r"\s+[-\u2013\u2014]\s+")


def _fold(text: str) -> str:
    """Lower case without accents, to match the official labels whatever their spelling."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower().strip()


def split_zones(folded: str) -> tuple[str, frozenset[str]]:
    """A folded summary's name and the zones it ends with.

    "vacances d'hiver - zones b/c - corse" is ("vacances d'hiver", {"B", "C", "CORSE"}); a
    summary that does not end with zones is (itself, {}). Zones are read from the trailing
    " - "-separated parts only: "zone a" elsewhere in a label means nothing.
    """
    parts = _SEPARATOR.split(folded)
    zones: set[str] = set()
    while len(parts) > 1:
        tail = parts[-1].strip()
        match = _ZONE_LIST.fullmatch(tail)
        if match:
            zones.update(c.upper() for c in re.findall(r"[abc]", match.group(1)))
        elif tail == "corse":
            zones.add(CORSICA)
        else:
            break
        parts.pop()
    return " - ".join(parts).strip(), frozenset(zones)


def _event_days(event: Any, where: str, tz: tzinfo) -> tuple[date, date]:
    """First and last day (both included) of one VEVENT, or CalendarImportError."""
    for name, reason in getattr(event, "errors", ()):
        if name in ("DTSTART", "DTEND", "DURATION"):
            raise CalendarImportError(f"{where}: unreadable {name} ({reason})")
    if event.get("RRULE") is not None or event.get("RDATE") is not None:
        raise CalendarImportError(f"{where}: recurring events (RRULE/RDATE) are not supported; list each break")
    if event.get("DTSTART") is None:
        raise CalendarImportError(f"{where}: no DTSTART")
    try:
        begin = event.get("DTSTART").dt
        if event.get("DTEND") is not None:
            finish = event.get("DTEND").dt
        elif event.get("DURATION") is not None:
            duration = event.get("DURATION").dt
            if not isinstance(duration, timedelta):
                raise TypeError(f"DURATION is not a duration: {duration!r}")
            finish = begin + duration
        else:
            finish = None
        start = _as_date(begin, tz)
        if finish is None:
            last = start
        else:
            end = _as_date(finish, tz)
            if end < start or (end == start and _instant(finish, tz) < _instant(begin, tz)):
                raise CalendarImportError(f"{where}: ends ({end}) before it starts ({start})")
            # DTEND is exclusive: an all-day or midnight end stops the day before; a timed end
            # covers its own day. A zero-length event still marks its day.
            midnight = not isinstance(finish, datetime) or finish.time() == datetime.min.time()
            last = end - timedelta(days=1) if midnight and end > start else end
    except CalendarImportError:
        raise
    except (AttributeError, TypeError, ValueError, OverflowError) as e:
        raise CalendarImportError(f"{where}: unreadable date ({e})") from None
    span = (last - start).days + 1
    if span > MAX_EVENT_DAYS:
        raise CalendarImportError(f"{where}: spans {span} days ({start} to {last}); at most "
                                  f"{MAX_EVENT_DAYS} are accepted")
    return start, last


def _as_date(value: date | datetime, tz: tzinfo) -> date:
    if isinstance(value, datetime):
        return (value.astimezone(tz) if value.tzinfo is not None else value).date()
    if isinstance(value, date):
        return value
    raise TypeError(f"expected a date or date-time, got {value!r}")


def _instant(value: date | datetime, tz: tzinfo) -> datetime:
    """A comparable point in time for a DATE, floating or zoned DATE-TIME value."""
    if isinstance(value, datetime):
        return value.astimezone(tz).replace(tzinfo=None) if value.tzinfo is not None else value
    return datetime(value.year, value.month, value.day)


def unique_days(overrides: Iterable[Override]) -> list[Override]:
    """One override per (school, day): the last one given wins."""
    return list({(o.school, o.day): o for o in overrides}.values())
