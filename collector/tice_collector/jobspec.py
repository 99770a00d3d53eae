"""What a scheduled job is: the context it runs in and its spec (name, function, period, lock key).

Apart from the runner (jobs.py) so that the modules defining jobs (rollup, fleet, identity,
google_sync) import these types without importing the registry that imports them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from tice_collector.metrics import Metrics
from tice_collector.settings import Settings

# pg_try_advisory_lock(JOB_LOCK_SPACE, spec.lock_key): a key space apart from the migration lock.
JOB_LOCK_SPACE = 1952672102


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
    # The second half of the job's advisory-lock key: fixed per job, never reused, so replicas
    # running different versions still exclude each other.
    lock_key: int
