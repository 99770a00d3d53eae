"""Daily rollups: late and out-of-order records land on the right local day, idempotently."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from collector.jobs import JobContext, all_jobs, run_job
from collector.metrics import Metrics
from tests.helpers import add_school, auth, batch, enroll, wait_until

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
async def jobs(make_settings, database_url):
    import asyncpg

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    ctx = JobContext(pool=pool, settings=make_settings(), metrics=Metrics())

    async def run(name: str) -> str:
        return await run_job(all_jobs()[name], ctx, force=True)

    yield run
    await pool.close()


def at(day: str, hhmm: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}:00").replace(tzinfo=PARIS)


def rec(seq: int, when: datetime, active: float, kind: str = "usage") -> dict:
    if kind == "display":
        return {"type": "display", "seq": seq, "at": when.isoformat(), "duration_s": 60, "external_s": active,
                "external_connected": active > 0}
    if kind == "modem":
        return {"type": "modem", "seq": seq, "at": when.isoformat(), "up": True, "state": "connected",
                "rx_bytes": int(active), "tx_bytes": 0}
    return {"type": "usage", "seq": seq, "at": when.isoformat(), "duration_s": 60, "active_s": active,
            "idle_s": 60 - active, "source": "x11"}


async def test_late_out_of_order_records_roll_up_on_their_local_day(client, db, jobs):
    dev = await enroll(client, await add_school(db))
    device = uuid.UUID(dev["device_id"])
    today = datetime.now(PARIS).date()
    d1, d2 = (today - timedelta(days=9)).isoformat(), (today - timedelta(days=8)).isoformat()
    spool = str(uuid.uuid4())
    # First delivery: part of day 2 only.
    first = [rec(10, at(d2, "09:00"), 60), rec(11, at(d2, "09:01"), 30)]
    await client.post("/api/v1/reports", json=batch(dev["device_id"], first, spool=spool), headers=auth(dev["token"]))
    assert await jobs("rollup") == "ok"
    row = await db.fetchrow("SELECT active_s, records FROM daily_usage WHERE device_id = $1 AND day = $2",
                            device, today - timedelta(days=8))
    assert (row["active_s"], row["records"]) == (90, 2)
    # Later, out of order: older records for day 1 (one at 23:59 local, which is 22:59 UTC,
    # must stay on day 1), more for day 2, a display and a 3G-key reading.
    late = [rec(3, at(d1, "23:59"), 45), rec(1, at(d1, "00:00"), 15), rec(12, at(d2, "16:30"), 60),
            rec(13, at(d2, "10:00"), 40, "display"), rec(14, at(d2, "10:00"), 70_000, "modem")]
    await client.post("/api/v1/reports", json=batch(dev["device_id"], late, spool=spool), headers=auth(dev["token"]))
    assert await jobs("rollup") == "ok"
    rows = {r["day"]: r for r in await db.fetch("SELECT * FROM daily_usage WHERE device_id = $1", device)}
    day1, day2 = rows[today - timedelta(days=9)], rows[today - timedelta(days=8)]
    assert day1["active_s"] == 60 and day1["records"] == 2
    assert day1["first_active_at"] == at(d1, "00:00") and day1["last_active_at"] == at(d1, "23:59") + timedelta(
        seconds=60)
    assert day2["active_s"] == 150 and day2["external_display_s"] == 40 and day2["modem_bytes"] == 70_000
    assert day2["records"] == 5
    # Rolling up again changes nothing.
    assert await jobs("rollup") == "ok"
    again = {r["day"]: r["active_s"] for r in await db.fetch("SELECT * FROM daily_usage WHERE device_id = $1", device)}
    assert again == {today - timedelta(days=9): 60, today - timedelta(days=8): 150}


async def test_a_second_run_in_the_same_slot_is_skipped(make_settings, database_url):
    import asyncpg

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    try:
        ctx = JobContext(pool=pool, settings=make_settings(), metrics=Metrics())
        assert await run_job(all_jobs()["rollup"], ctx) == "ok"
        assert await run_job(all_jobs()["rollup"], ctx) == "skipped"
        assert ctx.metrics.registry.get_sample_value("tice_job_runs_total", {"job": "rollup", "outcome": "skipped"}) == 1
    finally:
        await pool.close()


async def test_a_run_by_hand_waits_for_a_scheduled_run_instead_of_being_skipped(make_settings, database_url, db):
    import asyncio

    import asyncpg

    from collector.jobs import JOB_LOCK_SPACE

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    try:
        ctx = JobContext(pool=pool, settings=make_settings(), metrics=Metrics())
        index = list(all_jobs()).index("snapshot")
        await db.execute("SELECT pg_advisory_lock($1, $2)", JOB_LOCK_SPACE, index)  # a scheduled run, ongoing
        by_hand = asyncio.create_task(run_job(all_jobs()["snapshot"], ctx, force=True))

        async def waiting_on_the_lock() -> bool:
            return await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                                     "AND objid = $1", index) == 1

        await wait_until(waiting_on_the_lock, "the run by hand to wait for the lock")
        assert not by_hand.done()
        await db.execute("SELECT pg_advisory_unlock($1, $2)", JOB_LOCK_SPACE, index)
        assert await asyncio.wait_for(by_hand, 60) == "ok"
    finally:
        await pool.close()


async def test_retention_drops_old_partitions_and_keeps_rollups(db, jobs):
    await db.execute("SELECT tice_ensure_partitions('2020-01-01', '2020-02-01')")
    assert await db.fetchval("SELECT to_regclass('usage_records_202001')") is not None
    await db.execute("INSERT INTO schools (uai, name, zone, kind) VALUES ('0210001A', 'x', 'A', 'nursery')")
    device = await db.fetchval("INSERT INTO devices (serial, kind, school) VALUES ('S', 'laptop', '0210001A') RETURNING id")
    await db.execute("INSERT INTO daily_usage (device_id, day, active_s) VALUES ($1, '2020-01-15', 600)", device)
    assert await jobs("retention") == "ok"
    assert await db.fetchval("SELECT to_regclass('usage_records_202001')") is None
    current = datetime.now(UTC).strftime("%Y%m")
    assert await db.fetchval(f"SELECT to_regclass('usage_records_{current}')") is not None
    assert await db.fetchval("SELECT count(*) FROM daily_usage") == 1
