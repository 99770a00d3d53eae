"""tice-collector calendar: check school days, import the official calendar, add overrides."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import asyncpg

from tice_collector import calendar as cal
from tice_collector import calendar_ics, names
from tice_collector.cli import _args
from tice_collector.cli._console import CliError, ProgressLine
from tice_collector.cli._db import on_connection
from tice_collector.db.queries import q
from tice_collector.serials import printable
from tice_collector.settings import Settings

SOURCE_ICS = "ics"
SOURCE_MANUAL = "manual"


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    calendar = sub.add_parser("calendar", help="the school calendar").add_subparsers(dest="action", required=True)
    days = calendar.add_parser("days", parents=[common], help="print the school days of a range, one per line")
    who = days.add_mutually_exclusive_group(required=True)
    who.add_argument("--school", metavar="UAI", help="a school: its zone, timetable and overrides")
    who.add_argument("--zone", choices=cal.ZONES, help="a zone, on --timetable, with city-wide overrides")
    days.add_argument("--timetable", choices=sorted(cal.TIMETABLES), default="four_day",
                      help="with --zone (default four_day)")
    days.add_argument("--from", dest="start", type=_date, required=True, metavar="DATE")
    days.add_argument("--to", dest="end", type=_date, required=True, metavar="DATE")
    days.set_defaults(func=on_connection(school_days))

    imp = calendar.add_parser("import", parents=[common], help="import closures from an iCalendar (.ics) file")
    imp.add_argument("file", type=Path)
    imp.add_argument("--school", metavar="UAI", help="only for this school (default: city-wide)")
    imp.add_argument("--zone", choices=cal.ZONES,
                     help="keep only this zone's breaks from a file listing every zone (default: the "
                          "school's zone with --school, else every event)")
    imp.set_defaults(func=on_connection(import_ics))

    ovr = calendar.add_parser("override", parents=[common], help="close or open one day")
    ovr.add_argument("--day", type=_date, required=True, metavar="DATE")
    state = ovr.add_mutually_exclusive_group(required=True)
    state.add_argument("--closed", action="store_true", help="no class that day (strike, closure)")
    state.add_argument("--open", action="store_true", help="class that day (a make-up day)")
    ovr.add_argument("--school", metavar="UAI", help="only for this school (default: city-wide)")
    ovr.add_argument("--label", default="", type=_args.name("label", names.TEXT_MAX, blank_ok=True))
    ovr.set_defaults(func=on_connection(override))

    lst = calendar.add_parser("overrides", parents=[common], help="list overrides")
    lst.add_argument("--school", metavar="UAI")
    lst.set_defaults(func=on_connection(list_overrides))


async def _overrides(conn: asyncpg.Connection) -> tuple[cal.Override, ...]:
    rows = await conn.fetch(q("calendar_overrides_all"))
    return tuple(cal.Override(r["day"], r["kind"], r["school"], r["label"]) for r in rows)


async def _school(conn: asyncpg.Connection, uai: str) -> asyncpg.Record:
    row = await conn.fetchrow(q("school_calendar"), uai.upper())
    if row is None:
        raise CliError(f"no school {uai!r} (see: tice-collector school list)")
    return row


async def school_days(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    if a.end < a.start:
        raise CliError(f"--to {a.end} is before --from {a.start}")
    if (a.end - a.start).days > 3660:
        raise CliError("the range is longer than ten years; ask for less")
    if a.school:
        row = await _school(conn, a.school)
        calendar = cal.SchoolCalendar(row["zone"], cal.TIMETABLES[row["timetable"]], await _overrides(conn),
                                      school=row["uai"])
    else:
        calendar = cal.SchoolCalendar(a.zone, cal.TIMETABLES[a.timetable], await _overrides(conn))
    uncovered = [d for d in (a.start, a.end) if not calendar.is_covered(d)]
    if uncovered:
        print(f"warning: no school-holiday data for zone {calendar.zone} on {uncovered[0]}; there the days "
              "follow the timetable and public holidays only. Import the official calendar: "
              "tice-collector calendar import FILE.ics", file=sys.stderr)
    for d in calendar.school_days(a.start, a.end):
        print(d.isoformat())
    return 0


async def import_ics(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    row = await _school(conn, a.school) if a.school else None
    school = row["uai"] if row else None
    zone = a.zone or (row["zone"] if row else None)
    try:
        data = a.file.read_bytes()
    except OSError as e:
        raise CliError(f"{a.file}: cannot read ({e.strerror})") from None
    try:
        overrides = cal.unique_days(calendar_ics.parse_ics(data, school=school, zone=zone))
    except calendar_ics.CalendarImportError as e:
        raise CliError(f"{a.file}: {e}") from None
    if not overrides:
        raise CliError(f"{a.file}: no closed day to import" + (f" for zone {zone}" if zone else ""))
    progress = ProgressLine(len(overrides), "importing days")
    async with conn.transaction():  # all or nothing
        for i, o in enumerate(overrides, 1):
            await conn.execute(q("calendar_override_set"), o.school, o.day, o.kind, o.label, SOURCE_ICS)
            progress.update(i)
    progress.done()
    first, last = min(o.day for o in overrides), max(o.day for o in overrides)
    scope = f"school {school}" if school else "every school"
    print(f"{len(overrides)} closed days imported from {a.file} for {scope}, {first} to {last}")
    return 0


async def override(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    school = (await _school(conn, a.school))["uai"] if a.school else None
    kind = "closed" if a.closed else "open"
    await conn.execute(q("calendar_override_set"), school, a.day, kind, a.label, SOURCE_MANUAL)
    print(f"{a.day} is now {kind} for {f'school {school}' if school else 'every school'}")
    return 0


async def list_overrides(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    rows = await conn.fetch(q("calendar_overrides_list"), a.school.upper() if a.school else None)
    for r in rows:
        print(f"{r['day']} {r['kind']:<6} {r['school'] or 'city':<9} {r['source']:<6} {printable(r['label'])}")
    return 0
