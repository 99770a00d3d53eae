"""A fleet across the Toussaint break: late, out-of-order records; rollups, verdicts and
/metrics must match a hand computation, and the holidays must not make anyone silent."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import add_school, auth, batch, enroll
from tice_collector.app import create_app
from tice_collector.jobs import JobContext, all_jobs, run_job
from tice_collector.keys import METRICS

PARIS = ZoneInfo("Europe/Paris")
TODAY = date(2026, 11, 13)  # a Friday, two weeks after the Toussaint break (17 Oct - 1 Nov, zone A)
SCHOOL = "0210001A"

# The 20 completed school days before TODAY on the four-day week, by hand:
# 25, 28, 29 Sep; 1, 2, 5, 6, 8, 9, 12, 13, 15, 16 Oct; 2, 3, 5, 6, 9, 10, 12 Nov
# (no Wednesdays, nothing from 17 Oct to 1 Nov, not 11 Nov).
WINDOW = [date(2026, 9, d) for d in (25, 28, 29)] + \
         [date(2026, 10, d) for d in (1, 2, 5, 6, 8, 9, 12, 13, 15, 16)] + \
         [date(2026, 11, d) for d in (2, 3, 5, 6, 9, 10, 12)]
HOLIDAYS = [date(2026, 10, 19) + timedelta(days=i) for i in range(12)]


def usage_at(seq: int, day: date, hour: int, active: float) -> dict:
    at = datetime(day.year, day.month, day.day, hour, 0, tzinfo=PARIS)
    return {"type": "usage", "seq": seq, "at": at.isoformat(), "duration_s": 1800, "active_s": active,
            "idle_s": 1800 - active, "source": "chrome"}


@pytest.fixture
async def fleet(client, db):
    secret = await add_school(db, SCHOOL)
    class_id = await db.fetchval("INSERT INTO classes (school, code) VALUES ($1, 'CP-A') RETURNING id", SCHOOL)
    devices = []
    for i in range(1, 8):
        kind = "chromebook" if i <= 5 else "laptop"
        dev = await enroll(client, secret, serial=f"CB-{i}", kind=kind)
        await db.execute("UPDATE devices SET enrolled_at = '2026-09-20T08:00:00+02:00', class_id = $2 WHERE id = $1",
                         uuid.UUID(dev["device_id"]), class_id if i <= 5 else None)
        devices.append(dev)
    return devices


def plan() -> dict[int, dict[date, float]]:
    """Active seconds per device and day. Two records a day: 09:00 and 14:00."""
    used = {d: 700.0 for d in WINDOW}
    return {
        1: dict(used), 2: dict(used), 3: dict(used),
        4: {d: (700.0 if i % 2 == 0 else 100.0) for i, d in enumerate(WINDOW)},   # 10 of 20: regular
        5: {d: (700.0 if i < 9 else 100.0) for i, d in enumerate(WINDOW)},        # 9 of 20: low use
        6: {d: 50.0 for d in WINDOW},                                             # on, never used
        7: {d: 700.0 for d in WINDOW if d <= date(2026, 11, 6)},                  # silent since 6 Nov
    }


async def test_fleet_across_the_holidays(aiohttp_client, make_settings, client, db, database_url, fleet):
    rng = random.Random(7)
    # Every device also "reports" during the holidays with zero use (a laptop left on).
    for n, dev in enumerate(fleet, 1):
        records, seq = [], 0
        for day, active in plan()[n].items():
            for hour, share in ((9, 0.5), (14, 0.5)):
                seq += 1
                records.append(usage_at(seq, day, hour, active * share))
        if n != 7:
            for day in HOLIDAYS[:3]:
                seq += 1
                records.append(usage_at(seq, day, 10, 0.0))
        rng.shuffle(records)  # out of order, in several late batches
        spool = str(uuid.uuid4())
        for i in range(0, len(records), 7):
            resp = await client.post("/api/v1/reports", json=batch(dev["device_id"], records[i:i + 7], spool=spool),
                                     headers=auth(dev["token"]))
            assert resp.status == 200 and (await resp.json())["accepted"] == len(records[i:i + 7])

    # Device 6's agent reported that its full spool dropped 7 records (an older spool) and 5.
    await db.execute("INSERT INTO device_spools (device_id, spool, dropped, last_seen_at) VALUES "
                     "($1, gen_random_uuid(), 7, now()), ($1, gen_random_uuid(), 5, now())",
                     uuid.UUID(fleet[5]["device_id"]))
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    try:
        ctx = JobContext(pool=pool, settings=make_settings(), metrics=client.server.app[METRICS], today=lambda: TODAY)
        for job in ("rollup", "detect", "snapshot"):
            assert await run_job(all_jobs()[job], ctx, force=True) == "ok"
    finally:
        await pool.close()

    # Rollups: per device and local day, exactly the planned seconds.
    for n, dev in enumerate(fleet, 1):
        rows = {r["day"]: r["active_s"] for r in await db.fetch(
            "SELECT day, active_s FROM daily_usage WHERE device_id = $1 AND active_s > 0", uuid.UUID(dev["device_id"]))}
        assert rows == {d: a for d, a in plan()[n].items() if a > 0}, n

    flags = {r["device_id"]: r for r in await db.fetch("SELECT * FROM device_flags")}
    verdict = {n: flags[uuid.UUID(d["device_id"])] for n, d in enumerate(fleet, 1)}
    assert [verdict[n]["verdict"] for n in range(1, 8)] == ["regular"] * 4 + ["irregular"] * 2 + ["regular"]
    assert [verdict[n]["used_days"] for n in range(1, 8)] == [20, 20, 20, 10, 9, 0, 17]
    assert [verdict[n]["silent"] for n in range(1, 8)] == [False] * 6 + [True]
    assert verdict[7]["silent_since"] == date(2026, 11, 9) and verdict[7]["missed_days"] == 3
    assert [verdict[n]["low_use"] for n in range(1, 8)] == [False] * 4 + [True, True, False]

    # /metrics on a second app, as another replica would serve them.
    other = await aiohttp_client(create_app(make_settings()))
    text = await (await other.get("/metrics")).text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}

    def m(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    cb = {"school": SCHOOL, "kind": "chromebook"}
    assert m("tice_devices_used_regularly", **cb) == 4 and m("tice_devices_judged", **cb) == 5
    assert m("tice_devices_regular_ratio", **cb) == 0.8
    assert m("tice_devices_low_use", **cb) == 1 and m("tice_devices_silent", **cb) == 0
    lap = {"school": SCHOOL, "kind": "laptop"}
    assert m("tice_devices_silent", **lap) == 1 and m("tice_devices_low_use", **lap) == 1
    assert m("tice_agent_spool_dropped_records", **lap) == 12 and m("tice_agent_spool_dropped_records", **cb) == 0
    assert m("tice_classes", school=SCHOOL) == 1 and m("tice_classes_regular", school=SCHOOL) == 1
    # Every judged device counts, with or without a class: 5 of 7 used regularly (counting the
    # class alone, 4 regular of 5, the school showed 1.0 with 2 low-use laptops outside it).
    assert m("tice_school_regular_ratio", school=SCHOOL) == 5 / 7
    assert m("tice_devices_too_new", **cb) == 0 and m("tice_devices_too_new", **lap) == 0
    assert m("tice_school_day", school=SCHOOL) == 1  # 13 Nov 2026 is a Friday in term
    assert m("tice_school_silent", school=SCHOOL) == 0
    assert m("tice_calendar_covered", zone="A") == 1
    assert m("tice_devices", status="active", **cb) == 5
    # The scrape with real fleet data passes promtool's lint too.
    tool = shutil.which("promtool")
    if tool is not None:
        lint = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert lint.returncode == 0, lint.stdout + lint.stderr
    elif os.environ.get("CI"):
        pytest.fail("promtool is required in CI")
    dev1 = fleet[0]["device_id"]
    assert ("tice_device_last_seen_timestamp_seconds",
            tuple(sorted({"device": dev1, **cb}.items()))) in samples


async def test_whole_school_quiet_is_school_silent_not_device_silent(client, db, database_url, make_settings):
    secret = await add_school(db, SCHOOL)
    for i in range(3):
        dev = await enroll(client, secret, serial=f"Q-{i}", kind="chromebook")
        await db.execute("UPDATE devices SET enrolled_at = '2026-09-20T08:00:00+02:00' WHERE id = $1",
                         uuid.UUID(dev["device_id"]))
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        ctx = JobContext(pool=pool, settings=make_settings(), metrics=client.server.app[METRICS], today=lambda: TODAY)
        for job in ("detect", "snapshot"):
            assert await run_job(all_jobs()[job], ctx, force=True) == "ok"
    finally:
        await pool.close()
    assert await db.fetchval("SELECT count(*) FROM device_flags WHERE silent") == 0
    body = await db.fetchval("SELECT body::text FROM fleet_snapshot")
    assert '"silent": true' in body
