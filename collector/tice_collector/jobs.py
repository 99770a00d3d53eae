"""Scheduled jobs (APScheduler 3.x in the collector process), each run once per schedule.

Every run first takes a PostgreSQL advisory lock for its job (so two replicas never run the
same job at once), then claims its *slot* (the scheduled time, floored to the job's period) in
`job_runs`: the INSERT succeeds for one replica only, so N replicas run each slot once. Jobs are
idempotent (rollups recompute whole days), so a slot lost to a crash is caught up by the next.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from tice_collector.db.queries import q
from tice_collector.hours import MAX_PERIODS, TeachingHours, hours_from, intervals
from tice_collector.metrics import Metrics
from tice_collector.settings import Settings
from tice_wire import MAX_INTERVAL_S

log = logging.getLogger("tice.jobs")

# pg_try_advisory_lock(JOB_LOCK_SPACE, job index): a key space apart from the migration lock.
JOB_LOCK_SPACE = 1952672102
# Records committed up to this long after their received_at are still rolled up.
ROLLUP_OVERLAP = timedelta(minutes=5)
ROLLUP_CHUNK = 5000

@dataclass(frozen=True)
class JobContext:
    pool: asyncpg.Pool
    settings: Settings
    metrics: Metrics
    running: set[asyncio.Task[Any]] = field(default_factory=set)  # awaited at shutdown
    # The local date the fleet is judged on; None = today in the settings' time zone.
    today: Callable[[], date] | None = None

    def local_today(self) -> date:
        if self.today is not None:
            return self.today()
        return datetime.now(ZoneInfo(self.settings.timezone)).date()


JobFunc = Callable[[asyncpg.Connection, JobContext], Awaitable[str]]


@dataclass(frozen=True)
class JobSpec:
    name: str
    func: JobFunc
    period_s: Callable[[Any], float]  # from the settings
    description: str


def slot_for(period_s: float, now: datetime) -> datetime:
    epoch = int(now.timestamp() // period_s * period_s)
    return datetime.fromtimestamp(epoch, UTC)


async def run_job(spec: JobSpec, ctx: JobContext, *, force: bool = False) -> str:
    """Run one job if this replica gets it; return "ok", "skipped" or "error".

    `force` (a run by hand) waits while another run of the same job holds its lock, and
    then runs in a slot of its own, so it is never skipped.
    """
    task = asyncio.current_task()
    if task is not None:
        ctx.running.add(task)
        task.add_done_callback(ctx.running.discard)
    metrics = ctx.metrics
    index = list(all_jobs()).index(spec.name)
    started = time.perf_counter()
    slot = slot_for(spec.period_s(ctx.settings), datetime.now(UTC))
    runner = f"{socket.gethostname()}:{id(ctx)}"
    try:
        async with ctx.pool.acquire(timeout=ctx.settings.db_timeout_s) as conn:
            if force:  # by hand: wait for a scheduled run of this job to end, then run
                await conn.execute("SELECT pg_advisory_lock($1, $2)", JOB_LOCK_SPACE, index)
            elif not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", JOB_LOCK_SPACE, index):
                metrics.job_runs.labels(spec.name, "skipped").inc()
                return "skipped"
            try:
                if force:
                    slot = datetime.now(UTC)  # a run by hand gets its own slot
                if await conn.fetchval(q("job_claim"), spec.name, slot, runner) is None:
                    metrics.job_runs.labels(spec.name, "skipped").inc()
                    return "skipped"
                try:
                    detail = await spec.func(conn, ctx)
                except asyncio.CancelledError:
                    await asyncio.shield(conn.execute(q("job_finish"), spec.name, slot, False, "cancelled"))
                    raise
                except Exception as e:
                    log.exception("job %s failed", spec.name)
                    await conn.execute(q("job_finish"), spec.name, slot, False, f"{type(e).__name__}: {e}"[:500])
                    metrics.job_runs.labels(spec.name, "error").inc()
                    return "error"
                await conn.execute(q("job_finish"), spec.name, slot, True, detail[:500])
                metrics.job_runs.labels(spec.name, "ok").inc()
                metrics.job_last_success.labels(spec.name).set(time.time())
                log.debug("job %s: %s", spec.name, detail)
                return "ok"
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1, $2)", JOB_LOCK_SPACE, index)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
        log.warning("job %s not run: database unavailable (%s)", spec.name, type(e).__name__)
        metrics.job_runs.labels(spec.name, "error").inc()
        return "error"
    except asyncio.CancelledError:
        # Only the shutdown cancels a job; its transaction rolled back and the next start
        # catches up (jobs are idempotent). End quietly instead of a scheduler traceback.
        log.info("job %s cancelled by shutdown", spec.name)
        return "cancelled"
    finally:
        metrics.job_duration.labels(spec.name).observe(time.perf_counter() - started)


# ---------------------------------------------------------------- rollup

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


# ---------------------------------------------------------------- retention

async def retention(conn: asyncpg.Connection, ctx: JobContext) -> str:
    """Drop raw monthly partitions older than the retention; keep daily rollups."""
    from tice_collector.app import add_months, partition_range

    # Month M is dropped once all of it is older than the retention: it then holds nothing a
    # report may still need. So slightly more than `retention_months` is kept, never less.
    cutoff = add_months(datetime.now(UTC).date().replace(day=1), -ctx.settings.retention_months)
    await conn.fetchval(q("ensure_partitions"), *partition_range(datetime.now(UTC).date(),
                                                                   ctx.settings.retention_months))
    dropped = []
    for row in await conn.fetch(q("partitions_list")):
        suffix = row["name"][-6:]
        month = datetime(int(suffix[:4]), int(suffix[4:]), 1, tzinfo=UTC).date()
        if month < cutoff:
            await conn.execute(f'DROP TABLE "{row["name"]}"')
            dropped.append(row["name"])
    # Rows from far-off device clocks sit in DEFAULT partitions: prune them by corrected time.
    pruned = 0
    for parent in {r["parent"] for r in await conn.fetch(q("partitions_list"))}:
        status = await conn.execute(f'DELETE FROM "{parent}_default" WHERE at_corrected < $1',
                                    datetime(cutoff.year, cutoff.month, 1, tzinfo=UTC))
        pruned += int(status.split()[-1])
    # Google's daily figures are raw data too: the daily usage they made stays.
    pruned += int((await conn.execute(q("google_daily_prune"), cutoff)).split()[-1])
    await conn.execute(q("job_runs_prune"))
    if dropped:
        log.info("retention dropped %d partitions older than %s", len(dropped), cutoff)
    return f"{len(dropped)} partitions dropped, {pruned} stray rows pruned, cutoff {cutoff}"


ROLLUP = JobSpec("rollup", rollup, lambda s: s.rollup_interval_s,
                 "recompute daily per-device usage for days that received records")
RETENTION = JobSpec("retention", retention, lambda s: 86400.0,
                    "drop raw partitions past the retention; create the coming months")


@cache
def all_jobs() -> dict[str, JobSpec]:
    """Every job by name, in a fixed order (the order gives each its advisory-lock key)."""
    from tice_collector import fleet, google_sync, identity

    return {spec.name: spec for spec in (ROLLUP, fleet.DETECT, fleet.SNAPSHOT, RETENTION, identity.IDENTITY,
                                         google_sync.GOOGLE)}
