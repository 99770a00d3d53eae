"""The Google Admin sync: Google's Chromebooks into the collector's inventory and daily usage.

One sync reads every page of the Directory API (collector/tice_collector/google_admin.py), then in one
transaction:
- matches each Chromebook to the inventory by serial number (normalised, collector/tice_collector/serials.py);
  a serial the inventory does not know is listed (`google_devices.device_id` NULL, the CLI, the
  metric tice_google_unknown_serials), never made into a device: an admin adds it
  (`tice-collector google attach`, or an inventory import);
- keeps each Chromebook's device facts (OU, asset id, model, OS, auto-update expiry, last sync,
  latest CPU, RAM and disk) in `google_devices`; no user, e-mail, location or note;
- stores Google's per-day active time of matched devices in `google_daily_usage`, and
  recomputes the daily usage of the (device, day) pairs whose figure is new or changed, with
  the rollup's own query, so both sources combine by one rule (docs/usage-policy.md).
It holds the rollup job's lock meanwhile, so the two never recompute a day from different
states. A failed sync writes nothing but its error (`google_sync_state`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from tice_collector.db.queries import q
from tice_collector.google_admin import Chromebook, Directory, GoogleError, credentials
from tice_collector.jobspec import JOB_LOCK_SPACE, JobContext, JobSpec
from tice_collector.rollup import ROLLUP, recompute
from tice_collector.settings import Settings

log = logging.getLogger("tice.google")


@dataclass(frozen=True)
class Unknown:
    """A serial Google lists and the inventory does not know."""

    serial: str
    status: str | None
    org_unit_path: str | None
    model: str | None
    school: str | None  # what google_ou_schools maps its OU to


@dataclass(frozen=True)
class Elsewhere:
    """A matched device whose OU maps to another school than the inventory's."""

    serial: str
    kind: str
    school: str
    ou_school: str
    org_unit_path: str


@dataclass
class SyncResult:
    devices: int = 0
    pages: int = 0
    retries: int = 0
    matched: int = 0
    days: int = 0  # daily figures read for matched devices
    recomputed: int = 0  # device-days new or changed, recomputed
    no_serial: int = 0
    unreadable: list[str] = field(default_factory=list)
    implausible: list[str] = field(default_factory=list)
    unknown: list[Unknown] = field(default_factory=list)
    elsewhere: list[Elsewhere] = field(default_factory=list)
    seconds: float = 0.0


def ou_school(path: str | None, mapping: dict[str, str]) -> str | None:
    """The school an OU path maps to: the longest mapped path that is it or one of its parents.
    Paths compare without regard to case, as Google's do."""
    if not path:
        return None
    p = path.rstrip("/").casefold() or "/"
    best: tuple[int, str] | None = None
    for ou, uai in mapping.items():
        o = ou.rstrip("/").casefold() or "/"
        if p == o or p.startswith(o + "/") or o == "/":
            if best is None or len(o) > best[0]:
                best = (len(o), uai.upper())
    return best[1] if best else None


Progress = Callable[[int, int, int], None]  # (pages, devices, retries) so far


async def sync(conn: asyncpg.Connection, settings: Settings, *, today: date | None = None,
               progress: Progress | None = None,
               on_retry: Callable[[int, str, float], None] | None = None) -> SyncResult:
    """Read every Chromebook from Google and write it all, or nothing; raises GoogleError."""
    started = time.perf_counter()
    began = datetime.now(UTC)
    tz = ZoneInfo(settings.timezone)
    today = today or datetime.now(tz).date()
    result = SyncResult()
    books: list[Chromebook] = []
    directory: Directory | None = None
    try:
        directory = Directory(settings, credentials(settings), on_retry=on_retry)
        async with directory:
            async for page in directory.pages(tz, today):
                result.pages = page.number
                books += page.chromebooks
                result.no_serial += page.no_serial
                result.unreadable += page.unreadable
                result.implausible += page.implausible
                if progress is not None:
                    progress(page.number, len(books) + result.no_serial, directory.retries)
    except GoogleError as e:
        await conn.execute(q("google_sync_failed"), began, str(e)[:500], directory.retries if directory else 0)
        raise
    result.retries = directory.retries
    result.devices = len(books) + result.no_serial + len(result.unreadable)
    async with conn.transaction():
        # The rollup's lock, for this transaction: the rollup job skips a run meanwhile.
        await conn.execute(q("job_lock_xact"), JOB_LOCK_SPACE, ROLLUP.lock_key)
        await _write(conn, settings, books, began, result)
        await conn.execute(q("google_sync_ok"), began, result.devices, result.matched, len(result.unknown),
                           result.retries, len(result.implausible))
    for line in result.unreadable + result.implausible:
        log.warning("google sync: %s", line)
    result.seconds = time.perf_counter() - started
    return result


async def _write(conn: asyncpg.Connection, settings: Settings, books: list[Chromebook], began: datetime,
                 result: SyncResult) -> None:
    found = {r["serial"]: r for r in await conn.fetch(q("google_match"), sorted({b.serial for b in books}))}
    cols: dict[str, list[Any]] = {k: [] for k in (
        "id", "serial", "device", "status", "ou", "asset", "model", "os", "aue", "sync", "cpu", "temp", "ram",
        "ram_free", "disk", "disk_free", "first")}
    daily: dict[tuple[Any, date], int] = {}
    matched = set()
    for b in books:
        device = found.get(b.serial)
        for k, v in (("id", b.google_id), ("serial", b.serial), ("device", device["id"] if device else None),
                     ("status", b.status), ("ou", b.org_unit_path), ("asset", b.asset_id), ("model", b.model),
                     ("os", b.os_version), ("aue", b.auto_update_through), ("sync", b.last_sync),
                     ("cpu", b.cpu_utilization_ratio), ("temp", b.cpu_temperature_c), ("ram", b.ram_total_bytes),
                     ("ram_free", b.ram_free_bytes), ("disk", b.disk_total_bytes),
                     ("disk_free", b.disk_free_bytes), ("first", min(b.active_ms, default=None))):
            cols[k].append(v)
        mapped = ou_school(b.org_unit_path, settings.google_ou_schools)
        if device is None:
            result.unknown.append(Unknown(b.serial, b.status, b.org_unit_path, b.model, mapped))
            continue
        matched.add(device["id"])
        if mapped and mapped != device["school"] and b.org_unit_path:
            result.elsewhere.append(Elsewhere(b.serial, device["kind"], device["school"], mapped, b.org_unit_path))
        for day, ms in b.active_ms.items():
            # Two Google entries for one device (re-enrolled): the larger figure, never a sum.
            daily[(device["id"], day)] = max(ms, daily.get((device["id"], day), 0))
    result.matched = len(matched)
    result.days = len(daily)
    result.unknown.sort(key=lambda u: (u.org_unit_path or "", u.serial))
    await conn.execute(q("google_devices_upsert"), *cols.values(), began)
    await conn.execute(q("google_devices_seen"), began)
    keys = list(daily)
    changed = await conn.fetch(q("google_daily_upsert"), [k[0] for k in keys], [k[1] for k in keys],
                               list(daily.values()))
    pairs = await conn.fetch(q("google_pairs"), [r["device_id"] for r in changed], [r["day"] for r in changed])
    await recompute(conn, settings, pairs)
    result.recomputed = len(pairs)


# ---------------------------------------------------------------- the scheduled job

async def google_job(conn: asyncpg.Connection, ctx: JobContext) -> str:
    """The scheduled sync; "not configured" while google_key_file is empty."""
    if not ctx.settings.google_key_file:
        return "not configured (google_key_file is empty)"
    r = await sync(conn, ctx.settings, today=ctx.local_today())
    if r.unknown:
        log.warning("google sync: %d serial(s) not in the inventory (tice-collector google unknown)", len(r.unknown))
    return summary(r)


def summary(r: SyncResult) -> str:
    return (f"{r.devices} Chromebooks in {r.pages} page{'s' if r.pages != 1 else ''}, {r.retries} quota "
            f"retr{'ies' if r.retries != 1 else 'y'}; {r.matched} matched, {len(r.unknown)} unknown serial"
            f"{'s' if len(r.unknown) != 1 else ''}; {r.days} daily figures, {r.recomputed} device-days recomputed")


GOOGLE = JobSpec("google", google_job, lambda s: s.google_sync_interval_s,
                 "read every Chromebook's daily active time and facts from Google Admin", lock_key=5)
