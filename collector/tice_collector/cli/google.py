"""tice-collector google sync | unknown | attach: the Google Admin connector by hand."""

from __future__ import annotations

import argparse
import sys

import asyncpg

from tice_collector import serials
from tice_collector.cli._console import CliError
from tice_collector.cli._db import on_connection
from tice_collector.cli.schools import require_school
from tice_collector.db.queries import q
from tice_collector.google_admin import GoogleError
from tice_collector.google_sync import SyncResult, Unknown, ou_school, sync
from tice_collector.serials import printable
from tice_collector.settings import Settings


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    google = sub.add_parser("google", help="the Google Admin connector (Chromebooks)").add_subparsers(
        dest="action", required=True)
    gsync = google.add_parser("sync", parents=[common], help=(
        "read every Chromebook from Google Admin now: daily active time, inventory facts, health"))
    gunknown = google.add_parser("unknown", parents=[common],
                                 help="the serials Google listed at the last sync that the inventory does not know")
    gattach = google.add_parser("attach", parents=[common], help=(
        "add unknown serials to the inventory as Chromebooks of the school their OU maps to (google_ou_schools)"))
    gattach.add_argument("serials", nargs="*", metavar="SERIAL", help="the serials to add (see: google unknown)")
    gattach.add_argument("--all", action="store_true", help="every unknown serial whose OU maps to a school")
    gattach.add_argument("--school", metavar="UAI", help="this school instead of the one the OU maps to")
    gsync.set_defaults(func=on_connection(google_sync))
    gunknown.set_defaults(func=on_connection(google_unknown))
    gattach.set_defaults(func=on_connection(google_attach))


class Progress:
    """One self-updating line on a terminal while pages arrive; nothing when output is piped."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = False

    def page(self, pages: int, devices: int, retries: int) -> None:
        if self.tty:
            more = f", {retries} quota retr{'ies' if retries != 1 else 'y'}" if retries else ""
            sys.stderr.write(f"\rreading Chromebooks from Google: page {pages}, {devices} devices{more}")
            sys.stderr.flush()
            self.shown = True

    def retry(self, attempt: int, why: str, delay: float) -> None:
        if self.tty:
            sys.stderr.write(f"\r\033[Kquota or server error ({why}): retry {attempt} in {delay:.1f} s\n")
            sys.stderr.flush()

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


async def absent_schools(conn: asyncpg.Connection, settings: Settings) -> dict[str, str]:
    """The OUs of google_ou_schools that map to a school that does not exist: {OU path: UAI}."""
    schools = {r["uai"] for r in await conn.fetch(q("school_codes"))}
    return {ou: uai.upper() for ou, uai in sorted(settings.google_ou_schools.items()) if uai.upper() not in schools}


async def google_sync(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    # As `google attach` refuses: the serials of these OUs cannot be attached until the school exists.
    for ou, uai in (await absent_schools(conn, settings)).items():
        print(f"tice-collector: warning: google_ou_schools maps {printable(ou)} to school {uai}, which does not "
              f"exist; add it first: tice-collector school add {uai} --name ...", file=sys.stderr)
    progress = Progress()
    try:
        r = await sync(conn, settings, progress=progress.page, on_retry=progress.retry)
    except GoogleError as e:
        progress.done()
        raise CliError(f"google sync: {e}", e.code) from None
    progress.done()
    report(r)
    return 0


def report(r: SyncResult) -> None:
    print(f"google sync: {r.devices} Chromebooks in {r.pages} page{'s' if r.pages != 1 else ''} "
          f"({r.retries} quota retr{'ies' if r.retries != 1 else 'y'}) in {r.seconds:.1f} s")
    print(f"matched to the inventory: {r.matched} devices; {r.days} daily figures from Google, "
          f"{r.recomputed} device-days new or changed")
    if r.no_serial or r.unreadable:
        print(f"skipped: {r.no_serial} without a serial number, {len(r.unreadable)} unreadable entries")
        for line in r.unreadable[:10]:
            print(f"  {printable(line)}")
    if r.implausible:
        print(f"daily figures refused as impossible: {len(r.implausible)}")
        for line in r.implausible[:10]:
            print(f"  {printable(line)}")
    if r.unknown:
        print(f"unknown serials ({len(r.unknown)}), not counted until the inventory has them "
              "(tice-collector google attach, or devices import):")
        print_unknown(r.unknown)
    else:
        print("unknown serials: none")
    if r.elsewhere:
        print(f"organisational unit and inventory disagree ({len(r.elsewhere)}); nothing was moved: "
              "tice-collector devices move SERIAL --school UAI")
        for e in r.elsewhere:
            print(f"  {printable(e.serial)} ({e.kind}): inventory {e.school}, OU {printable(e.org_unit_path)} "
                  f"maps to {e.ou_school}")


def print_unknown(rows: list[Unknown]) -> None:
    print("  serial           status         school     organisational unit")
    for u in rows:
        print(f"  {printable(u.serial):<16} {printable(u.status or '-'):<14} {u.school or '-':<10} "
              f"{printable(u.org_unit_path or '-')}")


async def _unknown(conn: asyncpg.Connection, settings: Settings) -> list[Unknown]:
    return [Unknown(r["serial"], r["status"], r["org_unit_path"], r["model"],
                    ou_school(r["org_unit_path"], settings.google_ou_schools))
            for r in await conn.fetch(q("google_unknown"))]


async def google_unknown(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    rows = await _unknown(conn, settings)
    if not rows:
        print("no unknown serial at the last sync" if await conn.fetchval(q("google_devices_count"))
              else "no sync yet: tice-collector google sync")
        return 0
    print(f"{len(rows)} serial{'s' if len(rows) != 1 else ''} Google listed at the last sync that the inventory "
          "does not know:")
    print_unknown(rows)
    return 0


async def google_attach(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    """Add unknown serials to the inventory: an admin's decision, never a side effect of a sync."""
    if bool(a.serials) == bool(a.all):
        raise CliError("google attach: name the serials to add, or --all (see: tice-collector google unknown)")
    unknown = {u.serial: u for u in await _unknown(conn, settings)}
    if a.all:
        chosen = [u for u in unknown.values() if a.school or u.school]
    else:
        chosen = []
        for given in a.serials:
            try:
                serial = serials.normalise(given)
            except serials.SerialError as e:
                raise CliError(f"google attach: {e}") from None
            if serial not in unknown:
                raise CliError(f"google attach: {printable(given)} is not an unknown serial of the last sync "
                                 "(see: tice-collector google unknown)")
            chosen.append(unknown[serial])
    school = a.school.strip().upper() if a.school else None
    if school:
        await require_school(conn, school)
    missing = [u.serial for u in chosen if not (school or u.school)]
    if missing:
        raise CliError(f"google attach: no school for {', '.join(map(printable, missing[:5]))}: their OU maps to "
                         "none in google_ou_schools; add --school UAI")
    schools = {r["uai"] for r in await conn.fetch(q("school_codes"))}
    absent = sorted({school or u.school or "" for u in chosen} - schools)
    if absent:
        raise CliError(f"google_ou_schools names school {absent[0]}, which does not exist; add it first: "
                         f"tice-collector school add {absent[0]} --name ...")
    try:
        async with conn.transaction():
            for u in chosen:
                device_id = await conn.fetchval(q("device_insert_inventory"), u.serial, "chromebook",
                                                school or u.school)
                await conn.execute(q("google_link"), u.serial, device_id)
    except asyncpg.UniqueViolationError:
        raise CliError("google attach: a serial was added to the inventory meanwhile; nothing was added: "
                         "run tice-collector google sync, then attach again") from None
    print(f"{len(chosen)} Chromebook{'s' if len(chosen) != 1 else ''} added to the inventory; their daily active "
          "time comes with the next sync (tice-collector google sync)")
    for u in chosen:
        print(f"  {printable(u.serial)} -> school {school or u.school}")
    return 0
