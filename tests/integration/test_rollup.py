"""Daily rollups: late and out-of-order records land on the right local day, idempotently; a
device's intervals are merged on the time axis, so nothing counts twice and no day holds more
than a day."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.helpers import add_school, auth, batch, enroll, wait_until
from tice_collector.app import create_app
from tice_collector.jobs import JobContext, all_jobs, run_job
from tice_collector.metrics import Metrics

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

    from tice_collector.jobs import JOB_LOCK_SPACE

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


# ---------------------------------------------------------------- merged on the time axis

def span(seq: int, when: datetime, duration: float, active: float) -> dict:
    return {"type": "usage", "seq": seq, "at": when.isoformat(), "duration_s": duration, "active_s": active,
            "idle_s": duration - active, "source": "x11"}


async def send(client, dev: dict, records: list[dict]) -> None:
    for i in range(0, len(records), 500):
        resp = await client.post("/api/v1/reports", json=batch(dev["device_id"], records[i:i + 500]),
                                 headers=auth(dev["token"]))
        assert resp.status == 200, await resp.text()


async def daily(db, device: uuid.UUID) -> dict:
    return {r["day"]: r for r in await db.fetch("SELECT * FROM daily_usage WHERE device_id = $1", device)}


async def test_repeated_and_overlapping_intervals_never_count_twice(client, db, jobs):
    dev = await enroll(client, await add_school(db))
    device = uuid.UUID(dev["device_id"])
    day = (datetime.now(PARIS).date() - timedelta(days=3)).isoformat()
    # 100 copies of one fully active hour (a PC whose disk is restored at each boot resends the
    # same interval under new seqs), then two minutes that overlap by 30 s.
    records = [span(i, at(day, "09:00"), 3600, 3600) for i in range(1, 101)]
    records += [span(101, at(day, "11:00"), 60, 60), span(102, at(day, "11:00") + timedelta(seconds=30), 60, 60)]
    await send(client, dev, records)
    assert await jobs("rollup") == "ok"
    row = (await daily(db, device))[datetime.fromisoformat(day).date()]
    assert row["active_s"] == 3600 + 90 and row["records"] == 102
    assert row["first_active_at"] == at(day, "09:00") and row["last_active_at"] == at(day, "11:01") + timedelta(
        seconds=30)


async def test_a_day_of_hour_long_records_holds_one_day_and_spills_into_the_next(client, db, jobs):
    dev = await enroll(client, await add_school(db))
    device = uuid.UUID(dev["device_id"])
    d = datetime.now(PARIS).date() - timedelta(days=5)
    start = datetime(d.year, d.month, d.day, tzinfo=PARIS)
    # 100 fully active hours starting every 864 s from midnight: 100 hours claimed in one day.
    await send(client, dev, [span(i + 1, start + timedelta(seconds=864 * i), 3600, 3600) for i in range(100)])
    assert await jobs("rollup") == "ok"
    rows = await daily(db, device)
    # The day holds exactly one day; the last records end 2,736 s into the next day (85,536 + 3,600).
    assert rows[d]["active_s"] == 86400 and rows[d]["records"] == 100
    assert rows[d + timedelta(days=1)]["active_s"] == 2736 and rows[d + timedelta(days=1)]["records"] == 0


async def test_an_interval_crossing_midnight_is_split_in_the_school_time_zone(client, db, jobs):
    dev = await enroll(client, await add_school(db))
    device = uuid.UUID(dev["device_id"])
    d = datetime.now(PARIS).date() - timedelta(days=4)
    # 23:50 Paris is 22:50 or 21:50 UTC: the UTC date is the same, the split is at local midnight.
    await send(client, dev, [span(1, at(d.isoformat(), "23:50"), 1200, 1200)])
    assert await jobs("rollup") == "ok"
    rows = await daily(db, device)
    assert rows[d]["active_s"] == 600 and rows[d + timedelta(days=1)]["active_s"] == 600
    assert rows[d]["last_active_at"] == at((d + timedelta(days=1)).isoformat(), "00:00")
    assert rows[d + timedelta(days=1)]["first_active_at"] == at((d + timedelta(days=1)).isoformat(), "00:00")
    assert (rows[d]["records"], rows[d + timedelta(days=1)]["records"]) == (1, 0)


async def test_day_long_records_stored_before_the_door_refused_them_count_as_one_interval(client, db, jobs):
    # The third case, as rows already in the database (the door now refuses them, see
    # test_plausible.py): 100 records of 86,400 s of activity for one device and day. The rollup
    # cuts each to the longest interval a record may cover (7,500 s) and merges them: 7,500 s.
    dev = await enroll(client, await add_school(db))
    device = uuid.UUID(dev["device_id"])
    d = datetime.now(PARIS).date() - timedelta(days=6)
    start = datetime(d.year, d.month, d.day, 8, tzinfo=PARIS)
    spool = uuid.uuid4()
    await db.executemany(
        "INSERT INTO usage_records (device_id, spool, seq, at, at_corrected, received_at, duration_s, active_s, "
        "idle_s, locked_s, no_session_s, source) VALUES ($1, $2, $3, $4, $4, now(), 86400, 86400, 0, 0, 0, 'x11')",
        [(device, spool, i, start) for i in range(100)])
    assert await jobs("rollup") == "ok"
    rows = await daily(db, device)
    assert rows[d]["active_s"] == 7500 and rows[d]["records"] == 100


async def test_the_night_clocks_go_back_the_day_holds_25_hours(aiohttp_client, make_settings, db, jobs):
    # 25 Oct 2026 in Paris lasts 25 hours: fully active all along, the day holds 90,000 s, never more.
    client = await aiohttp_client(create_app(make_settings(max_record_age_days=3650)))
    dev = await enroll(client, await add_school(db))
    device = uuid.UUID(dev["device_id"])
    start = datetime(2026, 10, 25, tzinfo=PARIS).astimezone(UTC)
    records = [span(i + 1, start + timedelta(hours=i), 3600, 3600) for i in range(25)]
    records += [span(100 + i, start + timedelta(minutes=30 * i), 3600, 3600) for i in range(50)]  # overlaps
    resp = await client.post("/api/v1/reports", json=batch(dev["device_id"], records), headers=auth(dev["token"]))
    assert resp.status == 200 and (await resp.json())["accepted"] == 75
    assert await jobs("rollup") == "ok"
    rows = await daily(db, device)
    assert rows[start.astimezone(PARIS).date()]["active_s"] == 90000
