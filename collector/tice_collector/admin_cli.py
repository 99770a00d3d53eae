"""Admin commands: schools, classes, enrol secrets and the device inventory."""

from __future__ import annotations

import argparse
import csv
import io
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from tice_collector import serials
from tice_collector.auth import digest, new_secret
from tice_collector.calendar import TIMETABLES as CALENDAR_TIMETABLES
from tice_collector.calendar import ZONES
from tice_collector.console import CliError, ProgressLine
from tice_collector.db.queries import q
from tice_collector.serials import printable
from tice_collector.settings import Settings
from tice_collector.uai import EXPECTED, parse_uai
from tice_collector.usage import explain
from tice_wire import DEVICE_KINDS

SCHOOL_KINDS = ("nursery", "elementary", "primary")
TIMETABLES = tuple(CALENDAR_TIMETABLES)
TIMETABLE_DAYS = {name: t.weekdays for name, t in CALENDAR_TIMETABLES.items()}
CSV_COLUMNS = ("serial", "kind", "school", "class")


def add_commands(sub: Any, common: argparse.ArgumentParser, handler: Callable[..., int]) -> None:
    school = sub.add_parser("school", help="manage schools").add_subparsers(dest="action", required=True)
    add = school.add_parser("add", parents=[common], help="add a school")
    add.add_argument("uai", help="official school code, 7 digits and a letter (e.g. 0210001A)")
    add.add_argument("--name", required=True)
    add.add_argument("--zone", required=True, choices=ZONES, help="school-holiday zone (Dijon: A)")
    add.add_argument("--kind", required=True, choices=SCHOOL_KINDS)
    add.add_argument("--timetable", default="four_day", choices=TIMETABLES,
                     help="teaching week (default four_day: Mon/Tue/Thu/Fri)")
    school.add_parser("list", parents=[common], help="list schools")
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

    klass = sub.add_parser("class", help="manage classes").add_subparsers(dest="action", required=True)
    cadd = klass.add_parser("add", parents=[common], help="add a class to a school")
    cadd.add_argument("--school", required=True, metavar="UAI")
    cadd.add_argument("code", help="short class code, e.g. CP-A")
    cadd.add_argument("--name")

    secret = sub.add_parser("enroll-secret", help="manage enrol secrets").add_subparsers(
        dest="action", required=True)
    screate = secret.add_parser("create", parents=[common],
                                help="create a school's enrol secret, shown once on stdout (> secret.txt saves it)")
    screate.add_argument("--school", required=True, metavar="UAI")
    screate.add_argument("--label", default="")
    slist = secret.add_parser("list", parents=[common], help="list enrol secrets (never their value)")
    slist.add_argument("--school", metavar="UAI")
    srevoke = secret.add_parser("revoke", parents=[common], help="revoke an enrol secret")
    srevoke.add_argument("id", type=int)

    devices = sub.add_parser("devices", help="manage the device inventory").add_subparsers(
        dest="action", required=True)
    dimport = devices.add_parser("import", parents=[common],
                                 help="import an inventory CSV (serial,kind,school,class): all or nothing")
    dimport.add_argument("file", type=Path)
    dlist = devices.add_parser("list", parents=[common], help="list devices")
    dlist.add_argument("--school", metavar="UAI")
    drevoke = devices.add_parser("revoke", parents=[common],
                                 help="revoke a device's token (every collector stops taking it at once)")
    drevoke.add_argument("device", help="device id, or serial number")
    drevoke.add_argument("--kind", choices=DEVICE_KINDS, help="with a serial that several kinds share")
    dmove = devices.add_parser("move", parents=[common], help="move a device to another school (and class)")
    dmove.add_argument("device", help="device id, or serial number")
    dmove.add_argument("--school", required=True, metavar="UAI", help="the school it now belongs to")
    dmove.add_argument("--class", dest="klass", metavar="CODE", help="its class there (default: none)")
    dmove.add_argument("--kind", choices=DEVICE_KINDS, help="with a serial that several kinds share")
    dverdicts = devices.add_parser("verdicts", parents=[common],
                                   help="each device's verdict: used regularly, low use, or why not judged yet")
    dverdicts.add_argument("--school", metavar="UAI")
    dverdicts.add_argument("--kind", choices=DEVICE_KINDS, help="only devices of this kind")
    dverdicts.add_argument("--never-seen", action="store_true",
                           help="only active devices that never reported since their enrolment or import")
    ddays = devices.add_parser("days", parents=[common], help=(
        "a device's daily active time, in class and out of hours, and which source each day came from"))
    ddays.add_argument("device", help="device id, or serial number")
    ddays.add_argument("--kind", choices=DEVICE_KINDS, help="with a serial that several kinds share")
    ddays.add_argument("--days", type=int, default=30, metavar="N", help="the last N days (default 30)")

    for p in (add, school.choices["list"], hours, cadd, screate, slist, srevoke, dimport, dlist, drevoke, dmove,
              dverdicts, ddays):
        p.set_defaults(func=handler)


async def dispatch(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "calendar":
        from tice_collector import calendar_cli

        return await calendar_cli.dispatch(conn, args)
    if args.command == "google":
        from tice_collector import google_cli

        return await google_cli.dispatch(conn, args, settings)
    command = f"{args.command} {args.action}"
    if command == "school hours":
        return await school_hours(conn, args, settings)
    if command == "devices days":
        return await devices_days(conn, args, settings)
    handlers = {
        "school add": school_add, "school list": school_list, "class add": class_add,
        "enroll-secret create": secret_create, "enroll-secret list": secret_list,
        "enroll-secret revoke": secret_revoke, "devices import": devices_import,
        "devices list": devices_list, "devices revoke": devices_revoke, "devices move": devices_move,
        "devices verdicts": devices_verdicts,
    }
    result: int = await handlers[command](conn, args)
    return result


async def _require_school(conn: asyncpg.Connection, uai: str) -> None:
    if not await conn.fetchval(q("school_exists"), uai):
        raise CliError(f"no school {uai!r}; add it first: tice-collector school add {uai} --name ...")


async def school_add(conn: asyncpg.Connection, a: argparse.Namespace) -> int:
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


async def school_list(conn: asyncpg.Connection, a: argparse.Namespace) -> int:
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


async def class_add(conn: asyncpg.Connection, a: argparse.Namespace) -> int:
    await _require_school(conn, a.school)
    try:
        await conn.fetchval(q("class_insert"), a.school, a.code, a.name)
    except asyncpg.UniqueViolationError:
        raise CliError(f"class {a.code} already exists in school {a.school}") from None
    except asyncpg.CheckViolationError:
        raise CliError(f"class code {a.code!r}: expected 1 to 64 characters") from None
    print(f"class {printable(a.code)} added to school {printable(a.school)}")
    return 0


async def secret_create(conn: asyncpg.Connection, a: argparse.Namespace) -> int:
    await _require_school(conn, a.school)
    secret = new_secret()
    secret_id = await conn.fetchval(q("secret_insert"), a.school, digest(secret), a.label)
    # The banner goes to stderr, so `... > secret.txt` saves the secret alone: the file can be
    # given as is to `tice-agent enroll --secret - < secret.txt`.
    print(f"enrol secret {secret_id} for school {a.school} (shown once, store it now):", file=sys.stderr,
          flush=True)
    print(secret)
    return 0


async def secret_list(conn: asyncpg.Connection, a: argparse.Namespace) -> int:
    print("id  school    created              revoked              last used            devices label")
    for r in await conn.fetch(q("secrets_list"), a.school):
        def fmt(v: Any) -> str:
            return v.strftime("%Y-%m-%d %H:%M:%S") if v else "-"
        print(f"{r['id']:<3} {r['school']:<9} {fmt(r['created_at']):<20} {fmt(r['revoked_at']):<20} "
              f"{fmt(r['last_used_at']):<20} {r['devices_created']:>7} {printable(r['label'])}")
    return 0


async def secret_revoke(conn: asyncpg.Connection, a: argparse.Namespace) -> int:
    school = await conn.fetchval(q("secret_revoke"), a.id)
    if school is None:
        raise CliError(f"no live enrol secret with id {a.id} (see: tice-collector enroll-secret list)")
    print(f"enrol secret {a.id} of school {school} revoked; enrolled devices keep their tokens")
    return 0


async def devices_list(conn: asyncpg.Connection, a: argparse.Namespace) -> int:
    rows = await conn.fetch(q("devices_list"), a.school, 1_000_000, 0)
    print("id                                   school    kind       status  class    last seen            serial")
    for r in rows:
        seen = r["last_seen_at"].strftime("%Y-%m-%d %H:%M:%S") if r["last_seen_at"] else "never"
        print(f"{r['id']} {r['school']:<9} {r['kind']:<10} {r['status']:<7} {printable(r['class'] or '-'):<8} "
              f"{seen:<20} {printable(r['serial'])}")
    return 0


async def _device(conn: asyncpg.Connection, given: str, kind: str | None) -> asyncpg.Record:
    """The one device named by its id or its serial (normalised as enrolment does), or CliError."""
    try:
        rows = [await conn.fetchrow(q("device_by_id"), uuid.UUID(given))]
    except ValueError:
        try:
            serial = serials.normalise(given)
        except serials.SerialError as e:
            raise CliError(str(e)) from None
        rows = await conn.fetch(q("devices_by_serial"), serial)
    rows = [r for r in rows if r is not None and (kind is None or r["kind"] == kind)]
    if not rows:
        raise CliError(f"no device {printable(given)!s}" + (f" of kind {kind}" if kind else "")
                         + " (see: tice-collector devices list)")
    if len(rows) > 1:
        kinds = ", ".join(r["kind"] for r in rows)
        raise CliError(f"serial {printable(given)} names devices of several kinds ({kinds}); add --kind")
    return rows[0]


async def devices_verdicts(conn: asyncpg.Connection, a: argparse.Namespace) -> int:
    school = a.school.strip().upper() if a.school else None
    if school is not None:
        await _require_school(conn, school)
    rows = await conn.fetch(q("devices_verdicts"), school, a.kind, a.never_seen)
    print("school    kind       class    verdict    used/judged  last seen (UTC)       serial: why")
    for r in rows:
        counts = f"{r['used_days']}/{r['judged_days']}" if r["verdict"] else "-"
        seen = r["last_seen_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if r["last_seen_at"] else "never"
        print(f"{r['school']:<9} {r['kind']:<10} {printable(r['class'] or '-'):<8} {r['verdict'] or '-':<10} "
              f"{counts:<12} {seen:<20} {printable(r['serial'])}: {explain(r)}")
    if not rows:
        print("(no device)")
    return 0


async def devices_days(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    """Each day's active time of one device, and where it came from: the device's own records
    ("device"), Google's daily total alone ("google"), or neither ("none")."""
    from tice_collector.fleet import load_schools

    if not 1 <= a.days <= 3660:
        raise CliError(f"--days {a.days}: expected 1 to 3660")
    device = await _device(conn, a.device, a.kind)
    tz = ZoneInfo(settings.timezone)
    today = datetime.now(tz).date()
    calendar = (await load_schools(conn))[device["school"]].calendar
    rows = await conn.fetch(q("device_days"), device["id"], today - timedelta(days=a.days - 1))
    print(f"{device['kind']} {printable(device['serial'])} of school {device['school']}: active seconds per local "
          f"day ({settings.timezone}); in class counts on school days only")
    print("day         school day   in class  out of hours  source  Google's figure")
    for r in rows:
        school_day = calendar.is_school_day(r["day"])
        inside = r["active_in_hours_s"] if school_day else 0.0
        google = "-" if r["google_active_s"] is None else f"{r['google_active_s']:.1f}"
        print(f"{r['day']}  {'yes' if school_day else 'no':<10} {inside:>10.1f} {r['active_s'] - inside:>13.1f}  "
              f"{r['active_source']:<7} {google:>15}")
    if not rows:
        print(f"(no day with a figure in the last {a.days} days)")
    return 0


async def devices_revoke(conn: asyncpg.Connection, a: argparse.Namespace) -> int:
    device = await _device(conn, a.device, a.kind)
    async with conn.transaction():
        revoked = await conn.fetch(q("device_token_revoke_all"), device["id"])
        if revoked:
            # Running collectors drop the token from their caches when this commits.
            await conn.execute(q("tokens_revoked_notify"), str(device["id"]))
    if not revoked:
        raise CliError(f"{device['kind']} {printable(device['serial'])} ({device['id']}) has no live token")
    print(f"{device['kind']} {printable(device['serial'])} ({device['id']}): {len(revoked)} token(s) revoked; "
          "it must enrol again")
    return 0


async def devices_move(conn: asyncpg.Connection, a: argparse.Namespace) -> int:
    """Move a device to another school: an admin's decision, never a side effect of enrolment."""
    school = a.school.strip().upper()
    await _require_school(conn, school)
    device = await _device(conn, a.device, a.kind)
    class_id = None
    if a.klass:
        class_id = await conn.fetchval(q("class_id_of"), school, a.klass)
        if class_id is None:
            raise CliError(f"no class {printable(a.klass)} in school {school}; add it first: "
                             f"tice-collector class add --school {school} CODE")
    await conn.execute(q("device_move"), device["id"], school, class_id)
    where = f"school {school}" + (f", class {printable(a.klass)}" if a.klass else "")
    print(f"{device['kind']} {printable(device['serial'])} ({device['id']}) moved from school "
          f"{device['school']} to {where}; its history stays with it")
    return 0


# ---------------------------------------------------------------- inventory CSV

@dataclass(frozen=True)
class InventoryRow:
    line: int
    serial: str
    kind: str
    school: str
    klass: str


def parse_inventory(data: bytes, name: str = "inventory") -> list[InventoryRow]:
    """Parse and check an inventory CSV entirely before anything is written.

    Accepts ',' or ';' as separator (spreadsheets set to French use ';') and a UTF-8 BOM.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CliError(f"{name}: not UTF-8 (byte {e.start}); save the file as CSV UTF-8") from None
    if not text.strip():
        raise CliError(f"{name}: the file is empty; expected a header line {','.join(CSV_COLUMNS)}")
    first = text.splitlines()[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except csv.Error as e:
        raise CliError(f"{name}:1: {e}") from None
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise CliError(f"{name}:1: missing column(s) {', '.join(missing)}; "
                         f"the header must name {','.join(CSV_COLUMNS)}")
    index = {c: header.index(c) for c in CSV_COLUMNS}
    rows: list[InventoryRow] = []
    seen: dict[tuple[str, str], int] = {}
    try:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise CliError(f"{name}:{line}: expected {len(header)} fields, found {len(fields)}")
            serial, kind, school, klass = (fields[index[c]].strip() for c in CSV_COLUMNS)
            try:
                serial = serials.normalise(serial)
            except serials.SerialError as e:
                raise CliError(f"{name}:{line}: {e}") from None
            kind = kind.lower()
            if kind not in DEVICE_KINDS:
                raise CliError(f"{name}:{line}: kind {kind!r} is not one of {', '.join(DEVICE_KINDS)}")
            school = school.upper()
            if len(school) != 8 or not school[:7].isdigit() or not school[7].isalpha():
                raise CliError(f"{name}:{line}: school {school!r} is not a UAI code (7 digits, a letter)")
            if len(klass) > 64:
                raise CliError(f"{name}:{line}: class code longer than 64 characters")
            if not klass.isprintable():
                raise CliError(f"{name}:{line}: class code {printable(klass)} holds a control character")
            if (serial, kind) in seen:
                raise CliError(f"{name}:{line}: {kind} {printable(serial)} already listed on line "
                                 f"{seen[(serial, kind)]}")
            seen[(serial, kind)] = line
            rows.append(InventoryRow(line, serial, kind, school, klass))
    except csv.Error as e:
        raise CliError(f"{name}:{reader.line_num}: {e}") from None
    return rows


async def devices_import(conn: asyncpg.Connection, a: argparse.Namespace) -> int:
    try:
        data = a.file.read_bytes()
    except OSError as e:
        raise CliError(f"{a.file}: cannot read ({e.strerror})") from None
    rows = parse_inventory(data, str(a.file))
    schools = {r["uai"] for r in await conn.fetch(q("school_codes"))}
    for row in rows:
        if row.school not in schools:
            raise CliError(f"{a.file}:{row.line}: no school {row.school}; add it first with "
                             f"tice-collector school add {row.school} ...")
    inserted = updated = classes_created = 0
    progress = ProgressLine(len(rows), "importing devices")
    async with conn.transaction():  # all or nothing
        class_ids: dict[tuple[str, str], int] = {}
        for school in {r.school for r in rows}:
            for c in await conn.fetch(q("classes_of_school"), school):
                class_ids[(school, c["code"])] = c["id"]
        for i, row in enumerate(rows, 1):
            class_id = None
            if row.klass:
                key = (row.school, row.klass)
                if key not in class_ids:
                    class_ids[key] = await conn.fetchval(q("class_insert"), row.school, row.klass, None)
                    classes_created += 1
                class_id = class_ids[key]
            if await conn.fetchval(q("device_upsert_inventory"), row.serial, row.kind, row.school, class_id):
                inserted += 1
            else:
                updated += 1
            progress.update(i)
    progress.done()
    print(f"{len(rows)} devices imported from {a.file}: {inserted} new, {updated} updated, "
          f"{classes_created} classes created")
    return 0
