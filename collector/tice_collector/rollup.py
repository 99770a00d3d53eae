"""The rollup job: daily per-device usage recomputed for the days that received records."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from tice_collector.db.queries import q
from tice_collector.hours import MAX_PERIODS, TeachingHours, hours_from, intervals
from tice_collector.jobspec import JobContext, JobSpec
from tice_collector.settings import Settings
from tice_wire import MAX_INTERVAL_S

log = logging.getLogger("tice.jobs")

# Records committed up to this long after their received_at are still rolled up.
ROLLUP_OVERLAP = timedelta(minutes=5)
ROLLUP_CHUNK = 5000


async def rollup(conn: asyncpg.Connection, ctx: JobContext) -> str:
    """Recompute daily_usage for every (device, day) that received records since last time.

    First, every peripheral (3G key, projector, backup disk) whose identity is in the new
    readings is registered as a device of its own, or has its host and last connection updated,
    and follows its host to another school (docs/peripherals.md); then its days are recomputed
    from its own readings, whichever host sent them.
    """
    watermark = await conn.fetchval(q("rollup_watermark"))
    since = watermark - ROLLUP_OVERLAP
    newest = await conn.fetchval(q("rollup_received_max"), since)
    if newest is None:
        return "nothing new"
    seen = await conn.fetch(q("peripherals_register"), since)
    moved = await conn.fetch(q("peripherals_follow_hosts"))
    for m in moved:
        log.info("%s %s now reported by a device of school %s: moved there", m["kind"], m["serial"], m["school"])
    pairs = await conn.fetch(q("rollup_changed"), since, ctx.settings.timezone, MAX_INTERVAL_S)
    await recompute(conn, ctx.settings, pairs)
    await conn.execute(q("rollup_watermark_set"), newest)
    new = sum(1 for r in seen if r["new"])
    return (f"{len(pairs)} device-days recomputed; peripherals: {new} new, {len(seen) - new} seen again, "
            f"{len(moved)} moved")


async def recompute(conn: asyncpg.Connection, settings: Settings, pairs: Sequence[asyncpg.Record]) -> None:
    """Recompute the daily rows of these distinct (device_id, day, school) pairs, in chunks of
    ROLLUP_CHUNK pairs per transaction, each pair with its school's teaching periods."""
    tz = ZoneInfo(settings.timezone)
    hours = await load_hours(conn, settings)
    cache: dict[tuple[str, date], list[float]] = {}
    for i in range(0, len(pairs), ROLLUP_CHUNK):
        chunk = pairs[i:i + ROLLUP_CHUNK]
        starts: list[float] = []
        ends: list[float] = []
        for p in chunk:
            key = (p["school"], p["day"])
            if key not in cache:
                cache[key] = period_bounds(hours[p["school"]], p["day"], tz)
            bounds = cache[key]
            starts.extend(bounds[0::2])
            ends.extend(bounds[1::2])
        async with conn.transaction():
            await conn.execute(q("rollup_upsert"), [p["device_id"] for p in chunk], [p["day"] for p in chunk],
                               settings.timezone, MAX_INTERVAL_S, starts, ends)


def period_bounds(hours: TeachingHours, day: date, tz: ZoneInfo) -> list[float]:
    """The day's teaching periods as [start, end, start, end, ...] Unix times, MAX_PERIODS of
    them (padded with empty periods at time 0), as rollup_upsert takes them."""
    out: list[float] = []
    for a, b in intervals(hours, day, tz):
        out += [a.timestamp(), b.timestamp()]
    return out + [0.0] * (2 * MAX_PERIODS - len(out))


async def load_hours(conn: asyncpg.Connection, settings: Settings) -> dict[str, TeachingHours]:
    """Every school's teaching hours: the defaults for its timetable, and its own where set."""
    own: dict[str, list[tuple[int, str]]] = {}
    for r in await conn.fetch(q("school_hours_all")):
        own.setdefault(r["school"], []).append((r["weekday"], r["periods"]))
    return {r["uai"]: hours_from(settings.teaching_hours, settings.wednesday_hours, own.get(r["uai"], ()),
                                 r["timetable"])
            for r in await conn.fetch(q("school_timetables"))}



ROLLUP = JobSpec("rollup", rollup, lambda s: s.rollup_interval_s,
                 "recompute daily per-device usage for days that received records", lock_key=0)
