"""Where the evidence report's figures come from: the one module that reads the database.

Everything the report knows passes through here: the schools and their calendars, the
inventory, and per device the figures of each school day (daily rollups, `daily_usage`).
The rest of the report sees only the types below, so a new source of a figure is a change
here (and its named queries in collector/tice_collector/db/queries.sql), not in the computations:

- A device-day's figure in class is the detect job's (`fleet.measure`, inside teaching hours):
  active time for computers, the longer of lamp-on and external-display time for projectors,
  "used" for a 3G key that carried `modem_used_bytes` (`in_class`, tested to agree with it).
- 3G bytes and projector lamp-on time are read from the daily row of the device that counted
  them. Today that is the computer whose agent reads the key or polls the projector (its
  `modem_bytes` and `projector_on_s`), reported as counted on the `host`; once keys and
  projectors have daily rows of their own, their rows carry them and `counted_on` says so.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import asyncpg

from tice_collector import calendar as cal
from tice_collector import usage
from tice_collector.db.queries import q

# The in-hours columns a day's figures in class are made of.
IN_HOURS = ("active_in_hours_s", "external_display_in_hours_s", "projector_on_in_hours_s", "modem_in_hours_bytes")
# The kinds whose own daily rows carry their 3G bytes or lamp-on time; any other kind carries
# them as the host of a key or a projector.
OWN_FIGURE_KINDS = {"modem": "key", "projector": "projector"}


@dataclass(frozen=True)
class School:
    uai: str
    name: str
    zone: str
    timetable: str
    calendar: cal.SchoolCalendar
    own_hours: bool  # teaching hours of its own on some weekday
    overrides: tuple[cal.Override, ...]  # its own and the city-wide ones


@dataclass(frozen=True)
class Device:
    id: uuid.UUID
    asset_tag: str  # the serial the inventory lists
    kind: str
    school: str
    class_id: int | None
    class_code: str | None
    active: bool  # not retired
    enrolled: date | None  # local day of its first enrolment; None: known from the inventory only
    created: date  # local day it entered the inventory


class DayFigures(NamedTuple):
    """A device's figures on one school day, inside the school's teaching hours (a tuple: a
    city's year holds a few hundred thousand)."""

    in_class: float  # its own figure, in seconds (fleet.measure); used when >= used_threshold_s
    modem_bytes: int  # 3G bytes it counted
    projector_on_s: float  # projector lamp-on seconds it counted


class WeekTotals(NamedTuple):
    """What a device counted over one week, every day (school day or not, any hour)."""

    modem_bytes: int
    projector_on_s: float


@dataclass
class Data:
    schools: dict[str, School]
    devices: list[Device]
    # device -> school day -> figures; a day missing is a day without data
    days: dict[uuid.UUID, dict[date, DayFigures]] = field(default_factory=dict)
    # device -> Monday -> totals; only devices with some
    weeks: dict[uuid.UUID, dict[date, WeekTotals]] = field(default_factory=dict)
    last_data: dict[uuid.UUID, date] = field(default_factory=dict)  # last day with data up to the end


def in_class(kind: str, columns: Mapping[str, Sequence[Any]], policy: usage.Policy) -> list[float]:
    """Each day's figure in class, as `fleet.measure(kind, row, policy, True)[0]` gives it, from
    a device's in-hours columns (one list per column, one item per day)."""
    if kind == "projector":
        return list(map(usage.projector_seconds, columns["projector_on_in_hours_s"],
                        columns["external_display_in_hours_s"]))
    if kind == "modem":
        used = policy.used_threshold_s
        return [used if usage.modem_used(int(b), policy) else 0.0 for b in columns["modem_in_hours_bytes"]]
    return [float(x) for x in columns["active_in_hours_s"]]


def counted_on(kind: str) -> str:
    """`key`/`projector` when a device of this kind counts its own 3G bytes or lamp time, else `host`."""
    return OWN_FIGURE_KINDS.get(kind, "host")


async def load_schools(conn: asyncpg.Connection, school: str | None, *,
                       query_timeout_s: float) -> dict[str, School]:
    """The schools of the report (one, or all) with their calendars, by UAI."""
    overrides = [cal.Override(day=r["day"], kind=r["kind"], school=r["school"], label=r["label"])
                 for r in await conn.fetch(q("calendar_overrides_all"), timeout=query_timeout_s)]
    own_hours = {r["school"] for r in await conn.fetch(q("school_hours_all"), timeout=query_timeout_s)}
    schools = {}
    for r in await conn.fetch(q("report_schools"), school, timeout=query_timeout_s):
        own = tuple(o for o in overrides if o.school in (None, r["uai"]))
        schools[r["uai"]] = School(
            uai=r["uai"], name=r["name"], zone=r["zone"], timetable=r["timetable"],
            calendar=cal.SchoolCalendar(zone=r["zone"], timetable=cal.TIMETABLES[r["timetable"]], overrides=own,
                                        school=r["uai"]),
            own_hours=r["uai"] in own_hours, overrides=own)
    return schools


async def load(conn: asyncpg.Connection, schools: dict[str, School], school: str | None, start: date, end: date,
               policy: usage.Policy, tz: ZoneInfo, *, query_timeout_s: float) -> Data:
    """Everything the report needs about `schools` from `start` to `end` (both included)."""
    def local(at: datetime) -> date:
        return at.astimezone(tz).date()

    devices = [Device(id=r["id"], asset_tag=r["serial"], kind=r["kind"], school=r["school"], class_id=r["class_id"],
                      class_code=r["class"], active=r["status"] == "active",
                      enrolled=local(r["enrolled_at"]) if r["enrolled_at"] else None, created=local(r["created_at"]))
               for r in await conn.fetch(q("report_devices"), school, timeout=query_timeout_s)
               if r["school"] in schools]
    data = Data(schools=schools, devices=devices)
    kind_of = {d.id: (d.kind, d.school) for d in devices}
    school_days = {uai: set(s.calendar.school_days(start, end)) for uai, s in schools.items()}
    week_of = {d: monday(d) for d in (start + timedelta(days=i) for i in range((end - start).days + 1))}
    for r in await conn.fetch(q("report_daily"), start, end, school, timeout=query_timeout_s):
        if r["device_id"] not in kind_of:
            continue
        kind, uai = kind_of[r["device_id"]]
        days = r["days"]
        wanted = school_days[uai]
        kept = [i for i, d in enumerate(days) if d in wanted]
        if kept:
            columns = {name: _pick(r[name], kept) for name in IN_HOURS}
            figures = zip(in_class(kind, columns, policy), columns["modem_in_hours_bytes"],
                          columns["projector_on_in_hours_s"], strict=True)
            data.days[r["device_id"]] = dict(zip(_pick(days, kept), map(_day_figures, figures), strict=True))
        weeks: dict[date, WeekTotals] = {}
        for d, b, lamp in zip(days, r["modem_bytes"], r["projector_on_s"], strict=True):
            if b or lamp:
                w = weeks.get(week_of[d], WeekTotals(0, 0.0))
                weeks[week_of[d]] = WeekTotals(w.modem_bytes + b, w.projector_on_s + lamp)
        if weeks:
            data.weeks[r["device_id"]] = weeks
    data.last_data = {r["device_id"]: r["day"]
                      for r in await conn.fetch(q("report_last_data_day"), end, school,
                                                timeout=query_timeout_s)}
    return data


# DayFigures from a plain tuple without the Python-level __new__ of a NamedTuple: a city's year
# makes a few hundred thousand of them.
_day_figures = partial(tuple.__new__, DayFigures)


def _pick(values: Sequence[Any], indexes: list[int]) -> list[Any]:
    return [values[i] for i in indexes]


def monday(day: date) -> date:
    return day - timedelta(days=day.weekday())
