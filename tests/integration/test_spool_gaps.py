"""Gaps in an agent spool's seq sequence: seqs below the highest stored one that never arrive
within the grace, beyond what the agent reports as dropped, are counted and exported
(tice_agent_spool_gap_records). The real collector app, PostgreSQL and the snapshot job."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import add_school, auth, batch, enroll, usage
from tice_collector.jobs import JobContext, all_jobs, run_job
from tice_collector.keys import METRICS
from tice_collector.writer import seq_runs

MIGRATION = Path(__file__).resolve().parents[2] / "collector" / "tice_collector" / "db" / "migrations" / "0006_spool_gaps.sql"


class Fleet:
    def __init__(self, client: Any, db: Any, database_url: str, make_settings: Any) -> None:
        self.client, self.db, self.database_url, self.make_settings = client, db, database_url, make_settings

    async def device(self, serial: str) -> dict[str, Any]:
        return await enroll(self.client, await add_school(self.db), serial=serial)

    async def send(self, dev: dict[str, Any], spool: str, seqs: list[int], *, dropped: int = 0,
                   at: datetime | None = None) -> dict[str, Any]:
        base = at or datetime.now(UTC) - timedelta(hours=1)
        records = [usage(s, base + timedelta(seconds=s)) for s in seqs]
        resp = await self.client.post("/api/v1/reports", headers=auth(dev["token"]),
                                      json=batch(dev["device_id"], records, spool=spool, dropped=dropped))
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    async def check(self, grace_s: float = 0.0) -> None:
        """One run of the snapshot job, which counts the gaps."""
        pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=2)
        try:
            ctx = JobContext(pool=pool, settings=self.make_settings(spool_gap_grace_s=grace_s),
                             metrics=self.client.server.app[METRICS])
            assert await run_job(all_jobs()["snapshot"], ctx, force=True) == "ok"
        finally:
            await pool.close()

    async def gaps(self, spool: str) -> int:
        return int(await self.db.fetchval("SELECT gaps FROM device_spools WHERE spool = $1", uuid.UUID(spool)))

    async def metric(self, kind: str = "laptop") -> float:
        text = await (await self.client.get("/metrics")).text()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "tice_agent_spool_gap_records" and s.labels.get("kind") == kind:
                    return float(s.value)
        raise AssertionError("tice_agent_spool_gap_records not exported")


@pytest.fixture
def f(client: Any, db: Any, database_url: str, make_settings: Any) -> Fleet:
    return Fleet(client, db, database_url, make_settings)


async def test_missing_seqs_are_counted_once_settled_and_a_late_one_closes_its_gap(f: Fleet) -> None:
    dev = await f.device("GAP-1")
    spool = str(uuid.uuid4())
    await f.send(dev, spool, list(range(1, 11)))
    await f.send(dev, spool, list(range(15, 21)))  # 11..14 never came (a torn write on the device)
    await f.check()
    assert await f.gaps(spool) == 0  # nothing settled yet: they may still be on their way
    await f.check()
    assert await f.gaps(spool) == 4
    await f.send(dev, spool, [12, 11])  # late, out of order
    await f.check()
    assert await f.gaps(spool) == 2
    assert await f.metric() == 2


async def test_the_grace_lets_late_seqs_arrive_first(f: Fleet) -> None:
    dev = await f.device("GAP-2")
    spool = str(uuid.uuid4())
    await f.send(dev, spool, [1, 2, 3, 7, 8])
    for _ in range(3):
        await f.check(grace_s=3600)
    assert await f.gaps(spool) == 0  # 4..6 have had less than an hour to arrive
    # An hour and more later (the check's own clock moved back instead):
    await f.db.execute("UPDATE device_spools SET gap_check_at = gap_check_at - interval '2 hours' "
                        "WHERE spool = $1", uuid.UUID(spool))
    await f.check(grace_s=3600)
    assert await f.gaps(spool) == 3


async def test_the_agents_own_drop_count_explains_holes_and_is_not_counted_twice(f: Fleet) -> None:
    dev = await f.device("GAP-3")
    full, torn = str(uuid.uuid4()), str(uuid.uuid4())
    # A spool that was full while offline: its 50 oldest records were dropped, and it says so.
    await f.send(dev, full, list(range(51, 101)), dropped=50)
    # Another one dropped 40 but 50 are missing: 10 lost somewhere else.
    await f.send(dev, torn, list(range(51, 101)), dropped=40)
    await f.check()
    await f.check()
    assert (await f.gaps(full), await f.gaps(torn)) == (0, 10)


async def test_repeats_refusals_and_duplicates_are_not_gaps(f: Fleet) -> None:
    dev = await f.device("GAP-4")
    spool = str(uuid.uuid4())
    # A classroom PC with a restore card: the same spool and seqs every day, with other times.
    day1 = datetime.now(UTC) - timedelta(days=2)
    await f.send(dev, spool, list(range(1, 11)), at=day1)
    await f.send(dev, spool, list(range(1, 11)), at=day1 + timedelta(days=1))
    await f.send(dev, spool, list(range(1, 11)), at=day1 + timedelta(days=1))  # a resend: duplicates
    # Seqs 11 and 12 refused as too old by the collector: refused, not lost.
    answer = await f.send(dev, spool, [11, 12], at=datetime.now(UTC) - timedelta(days=400))
    assert answer["rejected"] == 2
    await f.send(dev, spool, [13])
    await f.check()
    await f.check()
    assert await f.gaps(spool) == 0


async def test_the_migration_fills_in_the_seqs_stored_before_it(client, db) -> None:
    dev = await enroll(client, await add_school(db), serial="GAP-5")
    spool = str(uuid.uuid4())
    records = [usage(s, datetime.now(UTC) - timedelta(minutes=s)) for s in (1, 2, 3, 5, 9)]
    resp = await client.post("/api/v1/reports", headers=auth(dev["token"]),
                             json=batch(dev["device_id"], records, spool=spool))
    assert resp.status == 200
    await db.execute("UPDATE device_spools SET seqs = '{}'")  # as before the migration
    backfill = MIGRATION.read_text()
    await db.execute(backfill[backfill.index("UPDATE device_spools"):])
    assert await db.fetchval("SELECT seqs::text FROM device_spools WHERE spool = $1", uuid.UUID(spool)) == \
        "{[1,4),[5,6),[9,10)}"


def test_seq_runs() -> None:
    assert seq_runs([]) == []
    assert seq_runs([3, 1, 2, 2, 7, 9, 8, 20]) == [(1, 3), (7, 9), (20, 20)]
