"""tice-collector school add | list | hours and class add: the schools and their classes."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from tice_collector import names
from tice_collector.calendar import TIMETABLES as CALENDAR_TIMETABLES
from tice_collector.calendar import ZONES
from tice_collector.cli import _args
from tice_collector.cli._console import CliError
from tice_collector.cli._db import on_connection
from tice_collector.db.queries import q
from tice_collector.serials import printable
from tice_collector.settings import Settings
from tice_collector.uai import EXPECTED, parse_uai

SCHOOL_KINDS = ("nursery", "elementary", "primary")
TIMETABLES = tuple(CALENDAR_TIMETABLES)
TIMETABLE_DAYS = {name: t.weekdays for name, t in CALENDAR_TIMETABLES.items()}


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    school = sub.add_parser("school", help="manage schools").add_subparsers(dest="action", required=True)
    add = school.add_parser("add", parents=[common], help="add a school")
    add.add_argument("uai", help="official school code, 7 digits and a letter (e.g. 0210001A)")
    add.add_argument("--name", required=True, type=_args.name("school name", names.SCHOOL_NAME_MAX),
                     help=f"the school's name, 1 to {names.SCHOOL_NAME_MAX} characters")
    add.add_argument("--zone", required=True, choices=ZONES, help="school-holiday zone (Dijon: A)")
    add.add_argument("--kind", required=True, choices=SCHOOL_KINDS)
    add.add_argument("--timetable", default="four_day", choices=TIMETABLES,
                     help="teaching week (default four_day: Mon/Tue/Thu/Fri)")
    add.set_defaults(func=on_connection(school_add))
    school.add_parser("list", parents=[common], help="list schools").set_defaults(func=on_connection(school_list))
    hours = school.add_parser("hours", parents=[common], help="show or set a school's teaching hours", description=(
        "Use counts as use in class only inside teaching hours (local time, the collector's timezone). "
        "Without --set or --reset: show them. Defaults: the settings teaching_hours and wednesday_hours."))
    hours.add_argument("uai", help="the school's UAI code")
    hours.add_argument("--days", default="all", metavar="DAYS",
                       help="weekdays to change, e.g. mon,tue,thu,fri or wed (default: all)")
    change = hours.add_mutually_exclusive_group()
    change.add_argument("--set", metavar="PERIODS",
                        help='periods, e.g. "08:20-11:35 13:35-16:20"; "-" for a day without class')
    change.add_argument("--reset", action="store_true", help="back to the defaults for --days")
    hours.set_defaults(func=on_connection(school_hours))

    klass = sub.add_parser("class", help="manage classes").add_subparsers(dest="action", required=True)
    cadd = klass.add_parser("add", parents=[common], help="add a class to a school")
    cadd.add_argument("--school", required=True, metavar="UAI")
    cadd.add_argument("code", type=_args.name("class code", names.CLASS_CODE_MAX),
                      help=f"short class code, e.g. CP-A (1 to {names.CLASS_CODE_MAX} characters)")
    cadd.add_argument("--name", type=_args.name("class name", names.TEXT_MAX),
                      help=f"its full name (at most {names.TEXT_MAX} characters)")
    cadd.set_defaults(func=on_connection(class_add))


async def require_school(conn: asyncpg.Connection, uai: str) -> None:
    """CliError (exit 2) unless school `uai` exists, saying how to add it."""
    if not await conn.fetchval(q("school_exists"), uai):
        raise CliError(f"no school {uai!r}; add it first: tice-collector school add {uai} --name ...")


async def school_add(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    uai = parse_uai(a.uai.strip())
    if uai is None:
        raise CliError(f"UAI {a.uai!r}: expected {EXPECTED}")
    try:
        await conn.execute(q("school_insert"), uai, a.name, a.zone, a.kind, a.timetable)
    except asyncpg.UniqueViolationError:
        raise CliError(f"school {uai} already exists") from None
    except asyncpg.CheckViolationError as e:
        raise CliError(f"school {uai}: {e.detail or e}") from None
    print(f"school {uai} added: {printable(a.name)} (zone {a.zone}, {a.kind}, {a.timetable})")
    return 0


async def school_list(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    rows = await conn.fetch(q("schools_list"))
    print("uai       zone kind        timetable          classes devices name")
    for r in rows:
        print(f"{r['uai']:<9} {r['zone']:<4} {r['kind']:<11} {r['timetable']:<18} {r['classes']:>7} "
              f"{r['devices']:>7} {printable(r['name'])}")
    return 0


async def school_hours(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    """Show a school's teaching hours, or change them for some weekdays and recompute the daily
    figures its devices' raw records still allow (the last LOOKBACK_DAYS days: what verdicts read)."""
    from tice_collector import hours as h
    from tice_collector.fleet import LOOKBACK_DAYS
    from tice_collector.rollup import recompute

    uai = a.uai.strip().upper()
    row = await conn.fetchrow(q("school_timetable"), uai)
    if row is None:
        raise CliError(f"no school {a.uai!r} (see: tice-collector school list)")
    try:
        days = h.parse_weekdays(a.days)
        periods = h.parse_periods(a.set) if a.set is not None else None
    except ValueError as e:
        raise CliError(f"school hours: {e}") from None
    if periods is not None or a.reset:
        async with conn.transaction():
            if periods is not None:
                for day in days:
                    await conn.execute(q("school_hours_set"), uai, day, h.format_periods(periods))
            else:
                await conn.execute(q("school_hours_reset"), uai, list(days))
            tz = ZoneInfo(settings.timezone)
            since = datetime.now(tz).date() - timedelta(days=LOOKBACK_DAYS)
            pairs = await conn.fetch(q("rollup_school_days"), uai, since, settings.timezone)
            await recompute(conn, settings, pairs)
        print(f"teaching hours of school {uai} changed for {', '.join(h.WEEKDAYS[d] for d in days)}; "
              f"daily figures of the last {LOOKBACK_DAYS} days recomputed: {len(pairs)} "
              f"device-day{'s' if len(pairs) != 1 else ''}")
    own = [(r["weekday"], r["periods"]) for r in await conn.fetch(q("school_hours_of"), uai)]
    hours = h.hours_from(settings.teaching_hours, settings.wednesday_hours, own, row["timetable"])
    taught = TIMETABLE_DAYS[row["timetable"]]
    print(f"school {uai}: {row['timetable']} week, local time in {settings.timezone}")
    for day, name in enumerate(h.WEEKDAYS):
        notes = [] if hours.is_own(day) else ["default"]
        if day not in taught:
            notes.append(f"not taught on a {row['timetable']} week but on a day an override opens")
        print(f"{name}  {h.format_periods(hours.periods(day)):<24} {'(' + '; '.join(notes) + ')' if notes else ''}"
              .rstrip())
    return 0


async def class_add(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    await require_school(conn, a.school)
    try:
        await conn.fetchval(q("class_insert"), a.school, a.code, a.name)
    except asyncpg.UniqueViolationError:
        raise CliError(f"class {a.code} already exists in school {a.school}") from None
    except asyncpg.CheckViolationError:
        raise CliError(f"class code {a.code!r}: expected 1 to 64 characters") from None
    print(f"class {printable(a.code)} added to school {printable(a.school)}")
    return 0
