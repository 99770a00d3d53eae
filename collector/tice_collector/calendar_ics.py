"""Closure days from an iCalendar file (the official French school calendar, or the city's own).

`parse_ics` turns every day of every VEVENT into a closed-day override for the school calendar
(calendar.py); the official file's conventions it follows are in its docstring.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from tice_collector.calendar import SCHOOL_TZ, Override
from tice_collector.holiday_data import SAT, ZONES

log = logging.getLogger("tice.calendar")

MAX_LABEL = 200
MAX_EVENT_DAYS = 400
MAX_ICS_BYTES = 2 * 1024 * 1024  # an official calendar is a few kilobytes


class CalendarImportError(ValueError):
    """An iCalendar file we cannot use; the message says what and where."""


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


def _days(start: date, end: date) -> Iterator[date]:
    for n in range(start.toordinal(), end.toordinal() + 1):
        yield date.fromordinal(n)
