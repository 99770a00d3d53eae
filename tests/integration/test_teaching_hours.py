"""Use is judged where and when the plan means it: inside each school's teaching hours, on its
school days; out-of-hours use is its own figure; every school and class size can be judged; a
device not judged yet says why and from when. The issue's reproduced cases, end to end."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import auth, batch, enroll
from tice_collector.app import create_app
from tice_collector.jobs import JobContext, all_jobs, run_job
from tice_collector.metrics import Metrics

PARIS = ZoneInfo("Europe/Paris")
FOUR_DAY, WEDNESDAY = "0210001A", "0210002B"
ENROLLED = "2026-09-20T08:00:00+02:00"  # long before: judged on a full window


@pytest.fixture
async def app_client(aiohttp_client, make_settings):
    # Records from November 2026 must be accepted whenever the suite runs.
    return await aiohttp_client(create_app(make_settings(max_record_age_days=3650, admin_token="admin-secret-token")))


@pytest.fixture
def jobs(make_settings, database_url):
    metrics = Metrics()

    async def run(*names: str, today: date) -> None:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            ctx = JobContext(pool=pool, settings=make_settings(), metrics=metrics, today=lambda: today)
            for name in names:
                assert await run_job(all_jobs()[name], ctx, force=True) == "ok", name
        finally:
            await pool.close()

    return run


async def school(db, uai: str, timetable: str = "four_day", kind: str = "elementary") -> str:
    await db.execute("INSERT INTO schools (uai, name, zone, kind, timetable) VALUES ($1, $2, 'A', $3, $4)",
                     uai, f"École {uai}", kind, timetable)
    from tice_collector.auth import digest, new_secret

    secret = new_secret()
    await db.execute("INSERT INTO enroll_secrets (school, digest) VALUES ($1, $2)", uai, digest(secret))
    return secret


async def device(client, db, secret: str, serial: str, kind: str = "laptop", enrolled: str = ENROLLED) -> dict:
    dev = await enroll(client, secret, serial=serial, kind=kind)
    await db.execute("UPDATE devices SET enrolled_at = $2::timestamptz WHERE id = $1", uuid.UUID(dev["device_id"]),
                     datetime.fromisoformat(enrolled))
    return dev


async def active(client, dev: dict, *spans: tuple[str, str, float]) -> None:
    """Fully active intervals: (local day, HH:MM start, seconds)."""
    records = [{"type": "usage", "seq": i, "source": "x11", "duration_s": seconds, "active_s": seconds,
                "at": datetime.fromisoformat(f"{day}T{hhmm}:00").replace(tzinfo=PARIS).isoformat()}
               for i, (day, hhmm, seconds) in enumerate(spans, 1)]
    resp = await client.post("/api/v1/reports", json=batch(dev["device_id"], records), headers=auth(dev["token"]))
    assert resp.status == 200 and (await resp.json())["accepted"] == len(records), await resp.text()


async def day_row(db, dev: dict, day: str) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM daily_usage WHERE device_id = $1 AND day = $2",
                             uuid.UUID(dev["device_id"]), date.fromisoformat(day))


async def flags(db, dev: dict) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM device_flags WHERE device_id = $1", uuid.UUID(dev["device_id"]))


async def scrape(aiohttp_client, make_settings) -> dict:
    other = await aiohttp_client(create_app(make_settings()))
    text = await (await other.get("/metrics")).text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


# ---------------------------------------------------------------- in hours, out of hours

async def test_activity_at_night_is_not_use_in_class(app_client, db, jobs, aiohttp_client, make_settings):
    # The case: active 22:30-22:45 and 00:30-00:45 (15 + 15 min, over the 10-minute bar).
    secret = await school(db, FOUR_DAY)
    night = await device(app_client, db, secret, "NIGHT")
    day = await device(app_client, db, secret, "DAY")
    await active(app_client, night, ("2026-11-16", "22:30", 900), ("2026-11-17", "00:30", 900))
    await active(app_client, day, ("2026-11-16", "09:00", 900), ("2026-11-16", "11:20", 900))
    await jobs("rollup", today=date(2026, 11, 18))
    monday, tuesday = await day_row(db, night, "2026-11-16"), await day_row(db, night, "2026-11-17")
    assert (monday["active_s"], monday["active_in_hours_s"]) == (900, 0)
    assert (tuesday["active_s"], tuesday["active_in_hours_s"]) == (900, 0)
    # 11:20-11:35 straddles the end of the morning (11:30): 600 s in hours, 300 s out.
    assert (await day_row(db, day, "2026-11-16"))["active_in_hours_s"] == 900 + 600
    await jobs("detect", today=date(2026, 11, 18))
    assert ((await flags(db, night))["used_days"], (await flags(db, night))["out_of_hours_days"]) == (0, 2)
    assert ((await flags(db, day))["used_days"], (await flags(db, day))["out_of_hours_days"]) == (1, 0)
    # Today (Tuesday 17th) at the scrape: the night device was used, out of hours only.
    await jobs("snapshot", today=date(2026, 11, 17))
    m = await scrape(aiohttp_client, make_settings)
    labels = (("kind", "laptop"), ("school", FOUR_DAY))
    assert m[("tice_devices_used_today", labels)] == 0
    assert m[("tice_devices_used_outside_class_today", labels)] == 1


async def test_wednesday_afternoon_counts_only_where_wednesday_is_taught(app_client, db, jobs):
    wed = await school(db, WEDNESDAY, "wednesday_morning")
    four = await school(db, FOUR_DAY)
    morning = await device(app_client, db, wed, "W-MORNING")
    afternoon = await device(app_client, db, wed, "W-AFTERNOON")
    four_day = await device(app_client, db, four, "F-MORNING")
    await active(app_client, morning, ("2026-11-18", "09:00", 1200))
    await active(app_client, afternoon, ("2026-11-18", "14:00", 3600))
    await active(app_client, four_day, ("2026-11-18", "09:00", 1200))
    await jobs("rollup", "detect", today=date(2026, 11, 19))
    assert (await day_row(db, morning, "2026-11-18"))["active_in_hours_s"] == 1200
    assert (await day_row(db, afternoon, "2026-11-18"))["active_in_hours_s"] == 0  # Wednesday: 08:30-11:30
    got = {name: ((await flags(db, d))["used_days"], (await flags(db, d))["out_of_hours_days"])
           for name, d in (("morning", morning), ("afternoon", afternoon), ("four_day", four_day))}
    # The four-day school does not teach on Wednesday: its morning is out of hours too.
    assert got == {"morning": (1, 0), "afternoon": (0, 1), "four_day": (0, 1)}


# ---------------------------------------------------------------- a school's own hours
# `cli` (tests/conftest.py) runs tice-collector in this process, on the test's database.

async def test_a_school_sets_its_own_hours_and_its_days_are_recomputed(app_client, db, jobs, cli):
    secret = await school(db, FOUR_DAY)
    dev = await device(app_client, db, secret, "EARLY")
    # Monday 08:00-08:20: before the default 08:30 start.
    recent = (datetime.now(PARIS).date() - timedelta(days=7))
    monday = recent - timedelta(days=recent.weekday())
    await active(app_client, dev, (monday.isoformat(), "08:00", 1200))
    await jobs("rollup", today=monday + timedelta(days=1))
    assert (await day_row(db, dev, monday.isoformat()))["active_in_hours_s"] == 0
    shown = cli("school", "hours", FOUR_DAY)
    assert shown.returncode == 0, shown.stderr
    assert "mon  08:30-11:30 13:30-16:30  (default)" in shown.stdout
    # A four-day school's Wednesday is taught only when an override opens it: a full day then.
    assert "wed  08:30-11:30 13:30-16:30  (default; not taught on a four_day week but on a day an override opens)" \
        in shown.stdout
    changed = cli("school", "hours", FOUR_DAY, "--days", "mon,tue,thu,fri", "--set", "08:00-11:30 13:30-16:30")
    assert changed.returncode == 0, changed.stderr
    assert "changed for mon, tue, thu, fri; daily figures of the last 120 days recomputed: 1 device-day\n" \
        in changed.stdout
    assert "mon  08:00-11:30 13:30-16:30" in changed.stdout
    assert (await day_row(db, dev, monday.isoformat()))["active_in_hours_s"] == 1200
    back = cli("school", "hours", FOUR_DAY, "--reset")
    assert back.returncode == 0 and "mon  08:30-11:30 13:30-16:30  (default)" in back.stdout
    assert (await day_row(db, dev, monday.isoformat()))["active_in_hours_s"] == 0
    bad = cli("school", "hours", FOUR_DAY, "--set", "13:30-11:30")
    assert bad.returncode == 2 and "'13:30-11:30' ends before it starts" in bad.stderr
    nobody = cli("school", "hours", "0219999Z")
    assert nobody.returncode == 2 and "no school '0219999Z'" in nobody.stderr


# ---------------------------------------------------------------- every school, every class size

async def used_every_day(db, dev_id: uuid.UUID, days: list[date], **figures: float) -> None:
    await db.executemany(
        "INSERT INTO daily_usage (device_id, day, active_s, active_in_hours_s, projector_on_s, projector_on_in_hours_s,"
        " modem_bytes, modem_in_hours_bytes, records) VALUES ($1, $2, $3, $3, $4, $4, $5, $5, 10)",
        [(dev_id, d, figures.get("active", 0.0), figures.get("lamp", 0.0), int(figures.get("bytes", 0)))
         for d in days])


async def test_a_nursery_school_and_a_class_of_two_are_judged(app_client, db, jobs, aiohttp_client, make_settings):
    today = date(2026, 11, 20)
    window = [date(2026, 10, 15) + timedelta(days=i) for i in range(40)]
    nursery = await school(db, FOUR_DAY, kind="nursery")
    laptop = await device(app_client, db, nursery, "N-LAPTOP")
    projector = await device(app_client, db, nursery, "N-PROJ", kind="projector")
    modem = await device(app_client, db, nursery, "N-KEY", kind="modem")
    elementary = await school(db, WEDNESDAY)
    pair = [await device(app_client, db, elementary, f"E-CB-{i}", kind="chromebook") for i in (1, 2)]
    klass = await db.fetchval("INSERT INTO classes (school, code) VALUES ($1, 'PS-MS') RETURNING id", WEDNESDAY)
    await db.execute("UPDATE devices SET class_id = $1 WHERE school = $2", klass, WEDNESDAY)
    await used_every_day(db, uuid.UUID(laptop["device_id"]), window, active=1800)
    await used_every_day(db, uuid.UUID(projector["device_id"]), window, lamp=0)  # never switched on
    await used_every_day(db, uuid.UUID(modem["device_id"]), window, bytes=500_000)
    for d in pair:
        await used_every_day(db, uuid.UUID(d["device_id"]), window, active=1800)
    await jobs("detect", "snapshot", today=today)
    m = await scrape(aiohttp_client, make_settings)
    # No class, yet judged: laptop and 3G key regular, projector not: 2 of 3.
    assert m[("tice_school_regular_ratio", (("school", FOUR_DAY),))] == pytest.approx(2 / 3)
    assert m[("tice_classes", (("school", FOUR_DAY),))] == 0
    # A class of 2 Chromebooks, both regular: a regular class (it never could be under "3 devices").
    assert m[("tice_classes", (("school", WEDNESDAY),))] == 1
    assert m[("tice_classes_regular", (("school", WEDNESDAY),))] == 1
    assert m[("tice_school_regular_ratio", (("school", WEDNESDAY),))] == 1.0


# ---------------------------------------------------------------- too new: why, and from when

async def test_every_verdict_view_says_when_a_new_device_will_be_judged(app_client, db, jobs, cli, aiohttp_client,
                                                                        make_settings):
    secret = await school(db, FOUR_DAY)
    new = await device(app_client, db, secret, "NEW-1", kind="chromebook", enrolled="2026-11-10T10:00:00+01:00")
    await db.execute("INSERT INTO devices (serial, kind, school) VALUES ('SHELF-1', 'chromebook', $1)", FOUR_DAY)
    # Friday 13 Nov: 10 and 12 Nov are done (11 Nov is a holiday); the fifth school day is Tue 17.
    await jobs("detect", "snapshot", today=date(2026, 11, 13))
    f = await flags(db, new)
    assert (f["verdict"], f["judged_days"], f["judged_from"]) == ("too_new", 2, date(2026, 11, 18))
    expected = "not judged yet: 2 school days since enrolment; judged from 2026-11-18"
    shown = cli("devices", "verdicts", "--school", FOUR_DAY)
    assert shown.returncode == 0, shown.stderr
    assert f"NEW-1: {expected}" in shown.stdout
    assert "SHELF-1: not judged: never enrolled (known from the inventory only)" in shown.stdout
    resp = await app_client.get("/api/v1/admin/devices", headers=auth("admin-secret-token"))
    listed = {d["serial"]: d for d in (await resp.json())["devices"]}
    assert listed["NEW-1"]["verdict"] == "too_new" and listed["NEW-1"]["judged_from"] == "2026-11-18"
    assert listed["NEW-1"]["verdict_note"] == expected
    assert listed["SHELF-1"]["verdict"] is None and listed["SHELF-1"]["verdict_note"].startswith("not judged:")
    m = await scrape(aiohttp_client, make_settings)
    labels = (("kind", "chromebook"), ("school", FOUR_DAY))
    assert m[("tice_devices_too_new", labels)] == 1 and m[("tice_devices_judged", labels)] == 0
    # On the 18th it is judged.
    await jobs("detect", today=date(2026, 11, 18))
    assert (await flags(db, new))["verdict"] == "irregular"
    assert (await flags(db, new))["judged_from"] is None
