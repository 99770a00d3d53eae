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
from datetime import UTC, datetime
from functools import cache

import asyncpg

from tice_collector import fleet, google_sync, identity
from tice_collector.db.errors import DB_ERRORS
from tice_collector.db.partitions import add_months, partition_range
from tice_collector.db.queries import q
from tice_collector.jobspec import JOB_LOCK_SPACE, JobContext, JobSpec
from tice_collector.rollup import ROLLUP

__all__ = ["JOB_LOCK_SPACE", "JobContext", "JobSpec", "all_jobs", "run_job", "slot_for"]

log = logging.getLogger("tice.jobs")


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
    started = time.perf_counter()
    slot = slot_for(spec.period_s(ctx.settings), datetime.now(UTC))
    runner = f"{socket.gethostname()}:{id(ctx)}"
    try:
        async with ctx.pool.acquire(timeout=ctx.settings.db_timeout_s) as conn:
            if force:  # by hand: wait for a scheduled run of this job to end, then run
                await conn.execute(q("job_lock"), JOB_LOCK_SPACE, spec.lock_key)
            elif not await conn.fetchval(q("job_try_lock"), JOB_LOCK_SPACE, spec.lock_key):
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
                    if conn.is_closed() and isinstance(e, DB_ERRORS):
                        raise  # the database went away mid-run: one line below, not a traceback
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
                await conn.execute(q("job_unlock"), JOB_LOCK_SPACE, spec.lock_key)
    except DB_ERRORS as e:
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


# ---------------------------------------------------------------- retention

async def retention(conn: asyncpg.Connection, ctx: JobContext) -> str:
    """Drop raw monthly partitions older than the retention; keep daily rollups."""
    # Month M is dropped once all of it is older than the retention: it then holds nothing a
    # report may still need. So slightly more than `retention_months` is kept, never less.
    cutoff = add_months(datetime.now(UTC).date().replace(day=1), -ctx.settings.retention_months)
    await conn.fetchval(q("ensure_partitions"), *partition_range(datetime.now(UTC).date(),
                                                                   ctx.settings.retention_months))
    # The two statements below name a table: an identifier, which no query parameter can carry, so
    # they are built here, from names PostgreSQL itself listed (partitions_list), never from input.
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


RETENTION = JobSpec("retention", retention, lambda s: 86400.0,
                    "drop raw partitions past the retention; create the coming months", lock_key=3)


@cache
def all_jobs() -> dict[str, JobSpec]:
    """Every job by name, in a fixed order (the order of `tice-collector jobs list`)."""
    return {spec.name: spec for spec in (ROLLUP, fleet.DETECT, fleet.SNAPSHOT, RETENTION, identity.IDENTITY,
                                         google_sync.GOOGLE)}
