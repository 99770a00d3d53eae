"""French holidays for the school calendar: public holidays and each zone's school holidays.

Public holidays (jours fériés) come from the `holidays` package; school holidays from the
`vacances-scolaires-france` data, read here directly, with the flaws below corrected. The school
calendar (calendar.py) combines them with each school's timetable and overrides.

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
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from importlib import resources

from dateutil.easter import easter

log = logging.getLogger("tice.calendar")

ZONES = ("A", "B", "C")
BRIDGE = "Pont de l'Ascension"
SAT = 5  # date.weekday() of a Saturday


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



def ascension_bridge(year: int) -> date:
    """The Friday after Ascension Thursday (Ascension is Easter Sunday + 39 days; Gregorian
    Easter from dateutil)."""
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
