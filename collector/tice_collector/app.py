"""create_app(settings) -> web.Application: everything is built here, nothing at import time.

Resources open in cleanup_ctx order: pool, the revocation listener, the writer, then the job
scheduler; teardown runs in reverse, so jobs stop first and the writer drains (on its own
connections) before the pool closes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from tice_collector.auth import RateLimiter, TokenCache
from tice_collector.db.errors import DB_ERRORS
from tice_collector.db.migrate import migrate
from tice_collector.db.outage import pool_outage_log
from tice_collector.db.partitions import partition_range
from tice_collector.db.queries import q
from tice_collector.keys import (
    ENROLL_BY_ADDRESS,
    ENROLL_BY_SECRET,
    LIMITER,
    METRICS,
    POOL,
    SCHEDULER,
    SETTINGS,
    TOKENS,
    WRITER,
)
from tice_collector.metrics import Metrics
from tice_collector.middlewares import error_middleware
from tice_collector.routes import admin, enroll, health, ingest, reports
from tice_collector.settings import Settings
from tice_collector.writer import Writer

log = logging.getLogger("tice.app")

async def prepare_database(dsn: str, retention_months: int) -> list[str]:
    """Apply migrations and create the partitions needed now; return the migrations applied."""
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        applied = await migrate(conn)
        start, end = partition_range(datetime.now(UTC).date(), retention_months)
        await conn.fetchval(q("ensure_partitions"), start, end)
        return applied
    finally:
        await conn.close()


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    applied = await prepare_database(s.database_url, s.retention_months)
    if applied:
        log.info("migrations applied: %s", ", ".join(applied))
    pool = await asyncpg.create_pool(s.database_url, min_size=s.pool_min_size, max_size=s.pool_max_size,
                                     timeout=s.db_timeout_s, init=pool_outage_log().connected)
    app[POOL] = pool
    app[METRICS].watch_pool(lambda: (pool.get_size() - pool.get_idle_size(), pool.get_idle_size(),
                                     pool.get_max_size()))
    yield
    await pool.close()


async def embedded_ctx(app: web.Application) -> AsyncIterator[None]:
    """Watch the embedded PostgreSQL when this process started or joined it (embedded.Watchdog).

    First in, last out: it guards the database during the whole life of the app, and a failed
    restart ends the process with exit code 1 once everything else has stopped.
    """
    from tice_collector import embedded

    url = app[SETTINGS].database_url
    handle = embedded.held(url)
    if handle is None:  # an external database, or a further worker process: not ours to restart
        yield
        return
    watchdog = embedded.Watchdog(handle, url)
    task = asyncio.create_task(watchdog.run(), name="tice-embedded-watchdog")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if watchdog.failed:
        raise embedded.EmbeddedStopped(watchdog.failed)


REVOCATIONS = "tice_tokens_revoked"


async def revocations_ctx(app: web.Application) -> AsyncIterator[None]:
    """Hear the token revocations every collector commits, and forget those tokens at once.

    A revocation (admin API, `tice-collector devices revoke`, a re-enrolment) sends a
    PostgreSQL notification when it commits; this keeps one connection listening. While that
    connection is down nothing is heard, so the cache is emptied whenever it (re)connects or
    is lost: then a revoked token lives at most `auth_cache_s` on a replica that missed it.
    """
    settings, tokens = app[SETTINGS], app[TOKENS]

    def heard(conn: object, pid: int, channel: str, payload: str) -> None:
        try:
            tokens.evict_device(uuid.UUID(payload))
        except ValueError:
            tokens.clear()

    async def listen() -> None:
        warned = False
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(settings.database_url, timeout=settings.db_timeout_s)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _, lost=lost: lost.set())
                await conn.add_listener(REVOCATIONS, heard)
                tokens.clear()  # revocations committed while nobody listened
                if warned:
                    log.info("listening for token revocations again")
                warned = False
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), timeout=max(settings.auth_cache_s, 1.0))
                    except TimeoutError:
                        await conn.fetchval(q("ping"), timeout=settings.db_timeout_s)  # still there?
            except DB_ERRORS as e:
                if not warned:
                    log.warning("not hearing token revocations from other collectors (%s); cached tokens "
                                "expire within auth_cache_s", type(e).__name__)
                    warned = True
            finally:
                tokens.clear()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(settings.retry_after_s)

    task = asyncio.create_task(listen(), name="tice-revocations")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def writer_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    writer = Writer(s.database_url, app[METRICS], tasks=s.writer_tasks, queue_max=s.writer_queue_max,
                    batch_records=s.writer_batch_records, linger_s=s.writer_linger_s,
                    commit_timeout_s=s.writer_commit_timeout_s, db_timeout_s=s.db_timeout_s,
                    retry_after_s=s.retry_after_s, parallel_records=s.writer_parallel_records,
                    turn_wait_s=s.writer_turn_wait_s, lock_timeout_s=s.writer_lock_timeout_s)
    writer.start()
    app[WRITER] = writer
    app[METRICS].watch_writer(writer.depth)
    yield
    await writer.close()
    log.info("writer drained")


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """APScheduler 3.x on this loop; jobs stop (and are cancelled) before the writer and pool close."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    from tice_collector.jobs import JobContext, all_jobs, run_job

    s = app[SETTINGS]
    if not s.jobs_enabled:
        yield
        return
    ctx = JobContext(pool=app[POOL], settings=s, metrics=app[METRICS])
    scheduler = AsyncIOScheduler(timezone=s.timezone, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": int(s.job_misfire_grace_s)})
    for spec in all_jobs().values():
        scheduler.add_job(run_job, IntervalTrigger(seconds=spec.period_s(s), timezone=s.timezone),
                          args=[spec, ctx], id=spec.name, name=spec.description,
                          next_run_time=datetime.now(UTC))
    scheduler.start()
    app[SCHEDULER] = scheduler
    yield
    scheduler.shutdown(wait=False)
    # 3.x defers the shutdown to the loop and cancels running jobs; let that happen now.
    await asyncio.sleep(0)
    running = list(ctx.running)
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


def create_app(settings: Settings) -> web.Application:
    if not settings.database_url:
        raise ValueError("create_app needs settings.database_url (serve resolves the embedded one)")
    # Bodies are decoded by collector/tice_collector/bodies.py, which refuses what aiohttp let through; a
    # connection without a complete request head is closed after header_timeout_s (aiohttp's
    # keep-alive timer is what watches a connection between requests, the first one included).
    handler_args = {"auto_decompress": False, "keepalive_timeout": settings.header_timeout_s}
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[error_middleware],
                          handler_args=handler_args)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[TOKENS] = TokenCache(ttl=settings.auth_cache_s)
    app[LIMITER] = RateLimiter(rate_per_s=settings.rate_limit_per_minute / 60, burst=settings.rate_limit_burst)
    app[ENROLL_BY_ADDRESS] = RateLimiter(rate_per_s=settings.enroll_per_address_per_minute / 60,
                                         burst=settings.enroll_per_address_burst)
    app[ENROLL_BY_SECRET] = RateLimiter(rate_per_s=settings.enroll_per_secret_per_minute / 60,
                                        burst=settings.enroll_per_secret_burst)
    app.cleanup_ctx.extend([embedded_ctx, pool_ctx, revocations_ctx, writer_ctx, scheduler_ctx])
    for module in (health, ingest, enroll, admin, reports):
        app.add_routes(module.routes)
    return app
