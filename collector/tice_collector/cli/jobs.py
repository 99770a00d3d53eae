"""tice-collector jobs list | run: the scheduled jobs, and one of them run now by hand."""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg

from tice_collector.cli._console import CliError
from tice_collector.cli._db import database
from tice_collector.db.errors import DB_ERRORS
from tice_collector.db.migrate import MigrationError
from tice_collector.db.queries import q
from tice_collector.settings import Settings


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    jobs = sub.add_parser("jobs", help="scheduled jobs").add_subparsers(dest="action", required=True)
    jobs.add_parser("list", parents=[common], help="list the jobs and their periods").set_defaults(func=jobs_list)
    jrun = jobs.add_parser("run", parents=[common], help="run one job now, by hand")
    jrun.add_argument("name", help="job name (see: tice-collector jobs list)")
    jrun.set_defaults(func=jobs_run)


def jobs_list(settings: Settings, args: argparse.Namespace) -> int:
    from tice_collector.jobs import all_jobs

    for spec in all_jobs().values():
        print(f"{spec.name:<10} every {spec.period_s(settings):>6.0f} s  {spec.description}")
    return 0


def jobs_run(settings: Settings, args: argparse.Namespace) -> int:
    from tice_collector.jobs import all_jobs

    if args.name not in all_jobs():
        raise CliError(f"no job {args.name!r}; jobs are: {', '.join(all_jobs())}")
    with database(settings) as ready:
        return asyncio.run(_run_job(ready, args.name))


async def _run_job(settings: Settings, name: str) -> int:
    from tice_collector.app import prepare_database
    from tice_collector.jobs import JobContext, all_jobs, run_job
    from tice_collector.metrics import Metrics

    try:
        await prepare_database(settings.database_url, settings.retention_months)
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    except MigrationError as e:
        raise CliError(str(e), 1) from None
    except DB_ERRORS as e:
        raise CliError(f"cannot connect to the database: {type(e).__name__}: {e}", 1) from None
    try:
        started = time.perf_counter()
        ctx = JobContext(pool=pool, settings=settings, metrics=Metrics())
        outcome = await run_job(all_jobs()[name], ctx, force=True)
        detail = await pool.fetchval(q("job_last_detail"), name)
    finally:
        await pool.close()
    print(f"{name}: {outcome} in {time.perf_counter() - started:.2f} s: {detail or 'another run holds the lock'}")
    return 0 if outcome == "ok" else 1
