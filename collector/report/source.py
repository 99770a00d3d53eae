"""Where the evidence report's figures come from: the one module that reads the database.

Everything the report knows passes through here: the schools and their calendars, the
inventory, and per device the figures of each school day (daily rollups, `daily_usage`).
The rest of the report sees only the types below, so a new source of a figure is a change
here (and its named queries in collector/db/queries.sql), not in the computations:

- A device-day's figure in class is the detect job's (`fleet.measure`): active time for
  computers, the longer of lamp-on and external-display time for projectors, "used" for a 3G
  key that carried `modem_used_bytes`, each inside the school's teaching hours.
- 3G bytes and projector lamp-on time are read from the daily row of the device that counted
  them. Today that is the computer whose agent reads the key or polls the projector (its
  `modem_bytes` and `projector_on_s`), reported as counted on the `host`; once keys and
  projectors have daily rows of their own, their rows carry them and `counted_on` says so.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from collector import calendar as cal
from collector import usage
from collector.db.queries import q
from collector.fleet import measure

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


@dataclass(frozen=True)
class DayFigures:
    """A device's figures on one school day, inside the school's teaching hours."""

    in_class: float  # its own figure, in seconds (fleet.measure); used when >= used_threshold_s
    modem_bytes: int  # 3G bytes it counted
    projector_on_s: float  # projector lamp-on seconds it counted


@dataclass(frozen=True)
class WeekTotals:
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
    kind_of = {d.id: d.kind for d in devices}

    pairs = [(uai, day) for uai, s in schools.items() for day in s.calendar.school_days(start, end)]
    rows = await conn.fetch(q("report_school_day_figures"), [p[0] for p in pairs], [p[1] for p in pairs],
                            start, end, timeout=query_timeout_s)
    days: dict[uuid.UUID, dict[date, DayFigures]] = defaultdict(dict)
    for r in rows:
        kind = kind_of.get(r["device_id"])
        if kind is None:
            continue
        days[r["device_id"]][r["day"]] = DayFigures(
            in_class=measure(kind, r, policy, True)[0], modem_bytes=int(r["modem_in_hours_bytes"]),
            projector_on_s=float(r["projector_on_in_hours_s"]))
    data.days = dict(days)

    weeks: dict[uuid.UUID, dict[date, WeekTotals]] = defaultdict(dict)
    for r in await conn.fetch(q("report_week_totals"), start, end, school, timeout=query_timeout_s):
        if r["device_id"] in kind_of:
            weeks[r["device_id"]][r["week"]] = WeekTotals(int(r["modem_bytes"]), float(r["projector_on_s"]))
    data.weeks = dict(weeks)
    data.last_data = {r["device_id"]: r["day"]
                      for r in await conn.fetch(q("report_last_data_day"), end, school,
                                                timeout=query_timeout_s)}
    return data


def monday(day: date) -> date:
    return day - timedelta(days=day.weekday())
