"""tice-collector devices import | list | revoke | move | verdicts | days: the device inventory."""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from tice_collector import serials
from tice_collector.cli import _args
from tice_collector.cli._console import CliError, ProgressLine
from tice_collector.cli._db import on_connection
from tice_collector.cli._inventory import InventoryRow, parse_inventory
from tice_collector.cli.schools import require_school
from tice_collector.db.queries import q
from tice_collector.serials import printable
from tice_collector.settings import Settings
from tice_collector.usage import explain
from tice_wire import DEVICE_KINDS


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    devices = sub.add_parser("devices", help="manage the device inventory").add_subparsers(
        dest="action", required=True)
    dimport = devices.add_parser("import", parents=[common],
                                 help="import an inventory CSV (serial,kind,school,class): all or nothing")
    dimport.add_argument("file", type=Path)
    dimport.set_defaults(func=on_connection(devices_import))
    dlist = devices.add_parser("list", parents=[common], help="list devices")
    dlist.add_argument("--school", metavar="UAI")
    dlist.set_defaults(func=on_connection(devices_list))
    drevoke = devices.add_parser("revoke", parents=[common],
                                 help="revoke a device's token (every collector stops taking it at once)")
    drevoke.add_argument("device", help="device id, or serial number")
    drevoke.add_argument("--kind", choices=DEVICE_KINDS, help="with a serial that several kinds share")
    drevoke.set_defaults(func=on_connection(devices_revoke))
    dmove = devices.add_parser("move", parents=[common], help="move a device to another school (and class)")
    dmove.add_argument("device", help="device id, or serial number")
    dmove.add_argument("--school", required=True, metavar="UAI", help="the school it now belongs to")
    dmove.add_argument("--class", dest="klass", metavar="CODE", help="its class there (default: none)")
    dmove.add_argument("--kind", choices=DEVICE_KINDS, help="with a serial that several kinds share")
    dmove.set_defaults(func=on_connection(devices_move))
    dverdicts = devices.add_parser("verdicts", parents=[common],
                                   help="each device's verdict: used regularly, low use, or why not judged yet")
    dverdicts.add_argument("--school", metavar="UAI")
    dverdicts.add_argument("--kind", choices=DEVICE_KINDS, help="only devices of this kind")
    dverdicts.add_argument("--never-seen", action="store_true",
                           help="only active devices that never reported since their enrolment or import")
    dverdicts.set_defaults(func=on_connection(devices_verdicts))
    ddays = devices.add_parser("days", parents=[common], help=(
        "a device's daily active time, in class and out of hours, and which source each day came from"))
    ddays.add_argument("device", help="device id, or serial number")
    ddays.add_argument("--kind", choices=DEVICE_KINDS, help="with a serial that several kinds share")
    ddays.add_argument("--days", type=_args.bounded_int(1, 3660), default=30, metavar="N",
                       help="the last N days, 1 to 3660 (default 30)")
    ddays.set_defaults(func=on_connection(devices_days))


# Advisory-lock keys of admin commands: a key space apart from the jobs' (JOB_LOCK_SPACE) and the
# migration lock; the second half names the command.
ADMIN_LOCK_SPACE = 1952672103
IMPORT_LOCK_KEY = 0


def check_identity(where: str, row: InventoryRow, known: list[asyncpg.Record]) -> None:
    """CliError unless `row` names the device the inventory already knows by its serial, in its school.

    The rules of enrolment (docs/ingest.md): a serial names one device for its life, so the same
    serial as another kind is refused (enrolment: 409 kind_mismatch), and a device in another
    school stays there: moving it is an admin's decision (`devices move`, which says so and
    keeps its history). Its class within its school is the inventory's to say.
    """
    serial = printable(row.serial)
    same_kind = [d for d in known if d["kind"] == row.kind]
    elsewhere = [d for d in (same_kind or known) if d["school"] != row.school]
    if elsewhere:
        d = elsewhere[0]
        move = f"tice-collector devices move {serial} --school {row.school}"
        if len(known) > 1:
            move += f" --kind {d['kind']}"
        if row.klass:
            move += f" --class {printable(row.klass)}"
        raise CliError(f"{where}:{row.line}: {d['kind']} {serial} belongs to school {d['school']}, not "
                       f"{row.school}; moving a device is an admin's decision: {move} (or correct the line); "
                       "nothing was imported")
    if not same_kind and known:
        kinds = ", ".join(d["kind"] for d in known)
        raise CliError(f"{where}:{row.line}: serial {serial} is already in the inventory as {kinds}, not "
                       f"{row.kind}; a serial names one device: write its kind as {known[0]['kind']} on this "
                       "line (or correct the serial); nothing was imported")


async def devices_import(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    try:
        data = a.file.read_bytes()
    except OSError as e:
        raise CliError(f"{a.file}: cannot read ({e.strerror})") from None
    rows = parse_inventory(data, str(a.file))
    inserted = updated = classes_created = 0
    progress = ProgressLine(len(rows), "importing devices")
    async with conn.transaction():  # all or nothing
        # One import at a time: two would create the same classes and devices at once and the
        # later one fail on them; this one waits for the other, then reads what it wrote.
        await conn.execute(q("admin_lock_xact"), ADMIN_LOCK_SPACE, IMPORT_LOCK_KEY)
        schools = {r["uai"] for r in await conn.fetch(q("school_codes"))}
        for row in rows:
            if row.school not in schools:
                raise CliError(f"{a.file}:{row.line}: no school {row.school}; add it first with "
                               f"tice-collector school add {row.school} ...")
        known: dict[str, list[asyncpg.Record]] = {}
        for d in await conn.fetch(q("devices_of_serials"), sorted({r.serial for r in rows})):
            known.setdefault(d["serial"], []).append(d)
        for row in rows:
            check_identity(str(a.file), row, known.get(row.serial, []))
        class_ids: dict[tuple[str, str], int] = {}
        for school in {r.school for r in rows}:
            for c in await conn.fetch(q("classes_of_school"), school):
                class_ids[(school, c["code"])] = c["id"]
        try:
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
        except asyncpg.UniqueViolationError:
            # `class add`, enrolment or `google attach` wrote the same class or device meanwhile.
            raise CliError(f"{a.file}: another command added the same classes or devices at the same time; "
                           "nothing was imported: run the import again", 1) from None
    progress.done()
    print(f"{len(rows)} devices imported from {a.file}: {inserted} new, {updated} updated, "
          f"{classes_created} classes created")
    return 0


async def devices_list(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
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


async def devices_verdicts(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    school = a.school.strip().upper() if a.school else None
    if school is not None:
        await require_school(conn, school)
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


async def devices_revoke(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
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


async def devices_move(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    """Move a device to another school: an admin's decision, never a side effect of enrolment."""
    school = a.school.strip().upper()
    await require_school(conn, school)
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
