"""Peripherals as devices: 3G keys, projectors and backup disks are registered on first sight of
their identity, follow the host that reports them, are rolled up per day from their own readings
(whichever host sent them), judged like the equipment they are, and exported on /metrics.

Readings are posted through the real collector's door; the jobs run as the scheduler runs them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import SCHOOL, add_school, auth, batch, enroll
from tice_collector import calendar as cal
from tice_collector.app import create_app
from tice_collector.db.queries import q
from tice_collector.jobs import JobContext, all_jobs, run_job
from tice_collector.metrics import Metrics

PARIS = ZoneInfo("Europe/Paris")
OTHER_SCHOOL = "0210002B"
KEY = "a1" * 16  # PeripheralIds as the agents compute them (32 hex digits)
PROJECTOR = "b2" * 16
DISK = "c3" * 16
OLD_DISK = "d4" * 16


@pytest.fixture
async def jobs(make_settings, database_url):
    pools: list[asyncpg.Pool] = []

    async def run(name: str, **settings: Any) -> str:
        if not pools:
            pools.append(await asyncpg.create_pool(database_url, min_size=1, max_size=3))
        ctx = JobContext(pool=pools[0], settings=make_settings(**settings), metrics=Metrics())
        outcome = await run_job(all_jobs()[name], ctx, force=True)
        async with pools[0].acquire() as conn:
            detail = await conn.fetchval("SELECT detail FROM job_runs WHERE job = $1 ORDER BY started_at DESC "
                                         "LIMIT 1", name)
        return f"{outcome}: {detail}"

    yield run
    for pool in pools:
        await pool.close()


def at(day: date, hhmm: str) -> datetime:
    return datetime.fromisoformat(f"{day.isoformat()}T{hhmm}:00").replace(tzinfo=PARIS)


def modem(seq: int, when: datetime, duration: float | None = None, rx: int | None = None, tx: int | None = None,
          connected: float | None = None, key: str | None = KEY, **fields: Any) -> dict[str, Any]:
    rec = {"type": "modem", "seq": seq, "at": when.isoformat(), "up": True, "modem_id": key, "state": "connected",
           "technology": "lte", "rsrp_dbm": -98.0, "rssi_dbm": -70.0, **fields}
    if duration is not None:
        rec |= {"duration_s": duration, "rx_bytes": rx, "tx_bytes": tx, "connected_s": connected}
    return rec


def projector(seq: int, when: datetime, power: str, hours: int | None, duration: float | None = None,
              up: bool = True, **fields: Any) -> dict[str, Any]:
    rec = {"type": "projector", "seq": seq, "at": when.isoformat(), "up": up, "projector_id": PROJECTOR,
           "power": power, "duration_s": duration, **fields}
    if hours is not None:
        rec |= {"lamp_hours": hours, "lamps_hours": [hours], "lamp_on": power == "on", "lamps_on": [power == "on"]}
    return rec


def display(seq: int, when: datetime, duration: float, external: float) -> dict[str, Any]:
    return {"type": "display", "seq": seq, "at": when.isoformat(), "duration_s": duration, "external_s": external,
            "external_connected": external > 0}


def disk(seq: int, when: datetime, present: bool, ident: str = DISK, last: datetime | None = None,
         **fields: Any) -> dict[str, Any]:
    return {"type": "disk", "seq": seq, "at": when.isoformat(), "present": present, "disk_id": ident,
            "last_connected_at": (last or when).isoformat(), **fields}


async def send(client: Any, dev: dict[str, Any], records: list[dict[str, Any]], *,
               sent_at: datetime | None = None) -> None:
    resp = await client.post("/api/v1/reports", json=batch(dev["device_id"], records, sent_at=sent_at),
                             headers=auth(dev["token"]))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["accepted"] == len(records)


async def device_of(db: asyncpg.Connection, serial: str) -> asyncpg.Record:
    row = await db.fetchrow("SELECT d.*, p.host_id, p.host_seen_at, p.last_connected_at FROM devices d "
                            "JOIN peripherals p ON p.device_id = d.id WHERE d.serial = $1", serial)
    assert row is not None, f"peripheral {serial} not registered"
    return row


async def days_of(db: asyncpg.Connection, device: uuid.UUID) -> dict[date, asyncpg.Record]:
    return {r["day"]: r for r in await db.fetch("SELECT * FROM daily_usage WHERE device_id = $1", device)}


async def test_a_3g_key_is_registered_rolled_up_from_its_intervals_and_follows_its_host(client, db, jobs):
    laptop = await enroll(client, await add_school(db), serial="LP-1")
    d = datetime.now(PARIS).date() - timedelta(days=3)
    await send(client, laptop, [
        modem(1, at(d, "09:00"), total_rx_bytes=40_000_000),  # the agent's first reading: no interval yet
        modem(2, at(d, "09:00"), 600, 1_000_000, 100_000, 600),
        modem(3, at(d, "09:10"), 600, 200_000, 0, 300, state="disconnected"),
        # Re-plugged at 09:30: the key's counters start again from 0. The agent sends the bytes
        # of each interval, so the collector never sees the drop; a first reading again, then
        # an interval, which a PC whose disk is restored at each boot sends a second time.
        modem(4, at(d, "09:30"), total_rx_bytes=5_000),
        modem(5, at(d, "09:30"), 600, 500_000, 50_000, 600, total_rx_bytes=505_000),
        modem(6, at(d, "09:30"), 600, 500_000, 50_000, 600, total_rx_bytes=505_000),
        modem(7, at(d, "12:00"), up=False, state="unknown"),  # unplugged: the host says so
        modem(8, at(d, "18:00"), 600, 3_000_000, 0, 600),  # in the evening: out of hours
        modem(9, at(d, "10:00"), 60, 7_000, 0, 60, key=None),  # no identity: the host's own reading
    ])
    assert (await jobs("rollup")).endswith("peripherals: 1 new, 0 seen again, 0 moved")

    key = await device_of(db, KEY)
    assert (key["kind"], key["school"], key["class_id"], key["status"]) == ("modem", SCHOOL, None, "active")
    assert key["enrolled_at"] == at(d, "09:00")  # first seen: its first reading
    assert key["host_id"] == uuid.UUID(laptop["device_id"])
    assert key["host_seen_at"] == at(d, "18:10") and key["last_connected_at"] == at(d, "18:10")
    day = (await days_of(db, key["id"]))[d]
    assert day["modem_bytes"] == 1_100_000 + 200_000 + 550_000 + 3_000_000  # the resent interval once
    assert day["modem_in_hours_bytes"] == 1_100_000 + 200_000 + 550_000  # 08:30-11:30
    assert day["modem_connected_s"] == 600 + 300 + 600 + 600
    assert day["records"] == 7  # readings in which it answered (the unplugged one is not)
    assert (day["first_active_at"], day["last_active_at"]) == (at(d, "09:00"), at(d, "18:10"))
    host = (await days_of(db, uuid.UUID(laptop["device_id"])))[d]
    assert (host["modem_bytes"], host["records"]) == (7_000, 1)  # nothing of the key's on its host

    # The next day the key is plugged into a PC of another school: it moves there, with its past.
    other = await enroll(client, await add_school(db, OTHER_SCHOOL), serial="LP-2")
    await send(client, other, [modem(1, at(d + timedelta(days=1), "09:00")),
                               modem(2, at(d + timedelta(days=1), "09:00"), 600, 80_000, 0, 600)])
    assert (await jobs("rollup")).endswith("peripherals: 0 new, 1 seen again, 1 moved")
    moved = await device_of(db, KEY)
    assert (moved["id"], moved["school"], moved["host_id"]) == (key["id"], OTHER_SCHOOL, uuid.UUID(other["device_id"]))
    days = await days_of(db, key["id"])
    assert days[d]["modem_bytes"] == 4_850_000 and days[d + timedelta(days=1)]["modem_bytes"] == 80_000
    # A late reading from the first PC (its backlog) does not take the key back: it is older.
    await send(client, laptop, [modem(20, at(d, "19:00"), 600, 1_000, 0, 600)])
    assert (await jobs("rollup")).endswith("0 moved")
    assert (await device_of(db, KEY))["school"] == OTHER_SCHOOL


async def test_a_projector_is_on_once_from_two_pcs_from_its_lamp_counter_and_else_from_its_host(client, db, jobs):
    secret = await add_school(db)
    laptop = await enroll(client, secret, serial="LP-1")
    director = await enroll(client, secret, serial="DIR-1")
    d1 = datetime.now(PARIS).date() - timedelta(days=6)
    d2, d3, d4 = d1 + timedelta(days=1), d1 + timedelta(days=2), d1 + timedelta(days=3)
    # Day 1: a lesson from 09:00 to 10:00 seen by the laptop, and by the director's PC, which
    # polls the same projector 5 minutes behind: on from 09:00 to 10:05, counted once.
    await send(client, director, [projector(i + 1, at(d1, "09:05") + timedelta(minutes=15 * i), "on", 100 + (i > 0),
                                            900) for i in range(4)]
               + [projector(9, at(d1, "11:00"), "unknown", None)])  # a refused password: no power state
    await send(client, laptop, [projector(i + 1, at(d1, "09:00") + timedelta(minutes=15 * i), "on", 100 + (i > 1),
                                          900) for i in range(4)]
               + [display(10, at(d1, "14:00"), 1800, 1800)]
               # Day 2: the laptop read the projector at 08:00 and 17:00 only (it was off in
               # between) and the lamp counter went from 101 to 105 hours: lit at least 3 hours.
               + [projector(20, at(d2, "08:00"), "standby", 101), projector(21, at(d2, "17:00"), "standby", 105)]
               # Day 3: no answer from the projector (network cable out), the laptop's external
               # display for an hour in class. Day 4: no reading at all, the display for 30 minutes.
               + [projector(30, at(d3, "09:00"), "unknown", None, up=False), display(31, at(d3, "09:00"), 3600, 3600),
                  display(40, at(d4, "18:00"), 1800, 1800)])
    assert (await jobs("rollup")).endswith("peripherals: 1 new, 0 seen again, 0 moved")

    proj = await device_of(db, PROJECTOR)
    assert (proj["kind"], proj["school"]) == ("projector", SCHOOL)
    assert proj["host_id"] == uuid.UUID(laptop["device_id"])  # the latest reading is the laptop's
    days = await days_of(db, proj["id"])
    # Day 1: power state. The lamp went 100 -> 101: it proves nothing beyond that. The laptop's
    # external display is not the projector's figure on a day the projector answered.
    assert (days[d1]["projector_on_s"], days[d1]["projector_on_in_hours_s"]) == (3900, 3900)
    assert (days[d1]["external_display_s"], days[d1]["records"]) == (0, 8)
    # Day 2: 3 hours from the lamp counter, spread over 08:00-17:00, of which 6 of 9 hours in class.
    assert days[d2]["projector_on_s"] == pytest.approx(10_800)
    assert days[d2]["projector_on_in_hours_s"] == pytest.approx(7_200)
    assert days[d2]["records"] == 2
    # Days 3 and 4: the host's external display stands in.
    assert (days[d3]["projector_on_s"], days[d3]["external_display_s"], days[d3]["records"]) == (0, 3600, 0)
    assert days[d3]["external_display_in_hours_s"] == 3600
    assert (days[d4]["external_display_s"], days[d4]["external_display_in_hours_s"]) == (1800, 0)
    # The laptop keeps its own display time; the projector's readings are not on it.
    laptop_days = await days_of(db, uuid.UUID(laptop["device_id"]))
    assert laptop_days[d1]["external_display_s"] == 1800 and laptop_days[d1]["projector_on_s"] == 0


async def test_backup_disks_last_connection_even_remembered_by_the_agent_and_clock_corrected(client, db, jobs):
    director = await enroll(client, await add_school(db), serial="DIR-1")
    d = datetime.now(PARIS).date() - timedelta(days=2)
    smart = {"free_bytes": 400_000_000_000, "total_bytes": 1_000_000_000_000, "smart_ok": True}
    await send(client, director, [disk(1, at(d, "10:00"), True, **smart), disk(2, at(d, "10:05"), True, **smart),
                                  disk(3, at(d + timedelta(days=1), "10:00"), False, last=at(d, "10:05"))])
    # A disk the agent remembers from 20 days ago, sent by a PC whose clock is an hour behind:
    # the remembered time is corrected like the reading's.
    now = datetime.now(UTC)
    behind = timedelta(hours=1)
    await send(client, director, [disk(1, now - timedelta(minutes=5) - behind, False, OLD_DISK,
                                       last=now - timedelta(days=20) - behind)], sent_at=now - behind)
    assert (await jobs("rollup")).endswith("peripherals: 2 new, 0 seen again, 0 moved")

    backup = await device_of(db, DISK)
    assert backup["kind"] == "disk" and backup["last_connected_at"] == at(d, "10:05")
    days = await days_of(db, backup["id"])
    assert (days[d]["records"], days[d]["first_active_at"], days[d]["last_active_at"]) == (
        2, at(d, "10:00"), at(d, "10:05"))
    assert days[d + timedelta(days=1)]["records"] == 0
    old = await device_of(db, OLD_DISK)
    assert abs((old["last_connected_at"] - (now - timedelta(days=20))).total_seconds()) < 5
    # Backup disks are watched, not judged.
    assert (await jobs("detect")).startswith("ok")
    assert await db.fetchval("SELECT count(*) FROM device_flags WHERE device_id = $1", backup["id"]) == 0


async def test_a_nursery_schools_key_and_projector_are_judged_on_use_in_class(client, db, jobs):
    secret = await add_school(db, kind="nursery")
    laptop = await enroll(client, secret, serial="LP-1")
    today = datetime.now(PARIS).date()
    school = cal.SchoolCalendar(zone="A", timetable=cal.TIMETABLES["four_day"], school=SCHOOL)
    days = school.school_days(today - timedelta(days=100), today - timedelta(days=1))[-5:]
    records: list[dict[str, Any]] = []
    for n, d in enumerate(days):
        seq = 100 * n
        records.append({"type": "usage", "seq": seq + 1, "at": at(d, "09:00").isoformat(), "duration_s": 900,
                        "active_s": 900, "source": "x11"})
        # The key: 100 KiB in class on the first three days; the fourth day's 100 KiB are carried
        # in the evening (out of hours); on the fifth, 10 KiB: below the 64 KiB that make a day.
        when, carried = ((at(d, "10:00"), 100 * 1024) if n < 3 else
                         (at(d, "19:00"), 100 * 1024) if n == 3 else (at(d, "10:00"), 10 * 1024))
        records += [modem(seq + 2, when), modem(seq + 3, when, 600, carried, 0, 600)]
        # The projector: on 20 minutes in class on the first two days, 5 minutes on the third,
        # in standby otherwise.
        on = 1200 if n < 2 else 300 if n == 2 else 0
        records.append(projector(seq + 4, at(d, "10:00"), "on" if on else "standby", 500, on or 600))
    await send(client, laptop, records)
    await db.execute("UPDATE devices SET enrolled_at = $2 WHERE id = $1", uuid.UUID(laptop["device_id"]),
                     at(days[0] - timedelta(days=1), "08:00"))
    for job in ("rollup", "detect"):
        assert (await jobs(job, regular_window_school_days=5, min_judged_days=3)).startswith("ok")
    flags = {r["kind"]: r for r in await db.fetch(
        "SELECT d.kind, f.* FROM device_flags f JOIN devices d ON d.id = f.device_id")}
    assert (flags["laptop"]["verdict"], flags["laptop"]["used_days"]) == ("regular", 5)
    assert (flags["modem"]["verdict"], flags["modem"]["used_days"], flags["modem"]["judged_days"]) == ("regular", 3, 5)
    assert flags["modem"]["out_of_hours_days"] == 1
    assert (flags["projector"]["verdict"], flags["projector"]["used_days"]) == ("irregular", 2)
    assert not any(f["silent"] for f in flags.values())
    # The school's ratio counts the key and the projector beside the laptop: 2 of 3.
    assert (await jobs("snapshot")).startswith("ok")
    body = await db.fetchval("SELECT body FROM fleet_snapshot")
    assert json.loads(body)["schools"][0]["regular_ratio"] == pytest.approx(2 / 3)


async def test_an_unplugged_key_goes_silent_while_a_projector_in_standby_does_not(client, db, jobs):
    laptop = await enroll(client, await add_school(db), serial="LP-1")
    today = datetime.now(PARIS).date()
    school = cal.SchoolCalendar(zone="A", timetable=cal.TIMETABLES["four_day"], school=SCHOOL)
    days = school.school_days(today - timedelta(days=100), today - timedelta(days=1))[-6:]
    records: list[dict[str, Any]] = []
    for n, d in enumerate(days):
        seq = 100 * n
        records.append({"type": "usage", "seq": seq + 1, "at": at(d, "09:00").isoformat(), "duration_s": 900,
                        "active_s": 900, "source": "x11"})
        # The key answers on the first three days; then the PC's agent finds no key (unplugged).
        records.append(modem(seq + 2, at(d, "10:00")) if n < 3 else
                       {"type": "modem", "seq": seq + 2, "at": at(d, "10:00").isoformat(), "up": False,
                        "modem_id": KEY})
        # The projector is on in class the first three days, then left in standby: off, not broken.
        records.append(projector(seq + 3, at(d, "10:00"), "on" if n < 3 else "standby", 500, 600))
    await send(client, laptop, records)
    for job in ("rollup", "detect"):
        assert (await jobs(job)).startswith("ok")
    flags = {r["kind"]: r for r in await db.fetch(
        "SELECT d.kind, f.* FROM device_flags f JOIN devices d ON d.id = f.device_id")}
    assert flags["modem"]["silent"] and flags["modem"]["silent_since"] == days[3]
    assert not flags["projector"]["silent"] and not flags["laptop"]["silent"]
    assert (await jobs("snapshot")).startswith("ok")
    body = json.loads(await db.fetchval("SELECT body FROM fleet_snapshot"))
    silent = {r["kind"]: r["silent"] for r in body["kinds"]}  # tice_devices_silent{kind=...}
    assert silent == {"laptop": 0, "modem": 1, "projector": 0}, body["kinds"]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


async def test_metrics_show_each_key_projector_and_disk(aiohttp_client, make_settings, client, db, jobs):
    laptop = await enroll(client, await add_school(db), serial="LP-1")
    now = datetime.now(UTC)
    await send(client, laptop, [
        modem(1, now - timedelta(seconds=130)),
        modem(2, now - timedelta(seconds=130), 60, 3_000_000, 1_000_000, 60),
        modem(3, now - timedelta(seconds=70), 60, 1_000_000, 0, 60),
        projector(4, now - timedelta(seconds=100), "on", 2900, 90, fan="ok", lamp="error", temperature="ok",
                  cover="ok", filter="warning", other="ok"),
        disk(5, now - timedelta(minutes=30), True, free_bytes=123_000_000_000, total_bytes=500_000_000_000,
             smart_ok=False),
    ])
    settings = {"modem_quota_bytes": 10_000_000, "projector_lamp_life_hours": 3000}
    for job in ("rollup", "detect", "snapshot"):
        assert (await jobs(job, **settings)).startswith("ok")
    replica = await aiohttp_client(create_app(make_settings(snapshot_cache_s=0)))
    text = await (await replica.get("/metrics")).text()
    got = samples(text)

    def m(name: str, peripheral: str, **labels: str) -> float:
        return got[(name, tuple(sorted({"school": SCHOOL, "peripheral": peripheral, **labels}.items())))]

    assert m("tice_modem_connected", KEY) == 1
    assert m("tice_modem_signal_dbm", KEY, measure="rsrp") == -98
    assert m("tice_modem_network_info", KEY, technology="lte") == 1
    assert m("tice_modem_month_bytes", KEY) == 5_000_000
    assert m("tice_modem_quota_used_ratio", KEY) == 0.5
    # Today's connected time and on-time: the two key intervals (60 s each, connected all along)
    # and the projector's 90 s on, when all of them fall on today's local day (not just after midnight).
    paris = ZoneInfo("Europe/Paris")
    if (now - timedelta(seconds=190)).astimezone(paris).date() == now.astimezone(paris).date():
        assert m("tice_modem_connected_today_seconds", KEY) == pytest.approx(120)
        assert m("tice_projector_on_today_seconds", PROJECTOR) == pytest.approx(90)
    else:
        assert 0 <= m("tice_modem_connected_today_seconds", KEY) <= 120
    assert m("tice_projector_power_state", PROJECTOR, state="on") == 1
    assert m("tice_projector_power_state", PROJECTOR, state="standby") == 0
    assert m("tice_projector_lamp_seconds", PROJECTOR) == 2900 * 3600
    assert m("tice_projector_lamp_remaining_seconds", PROJECTOR) == 100 * 3600
    assert (m("tice_projector_error_level", PROJECTOR, component="lamp"),
            m("tice_projector_error_level", PROJECTOR, component="filter"),
            m("tice_projector_error_level", PROJECTOR, component="fan")) == (2, 1, 0)
    assert m("tice_disk_smart_healthy", DISK) == 0
    assert m("tice_disk_free_bytes", DISK) == 123_000_000_000 and m("tice_disk_size_bytes", DISK) == 500_000_000_000
    assert abs(m("tice_disk_last_connected_timestamp_seconds", DISK) - (now - timedelta(minutes=30)).timestamp()) < 1
    for kind, ident in (("modem", KEY), ("projector", PROJECTOR), ("disk", DISK)):
        assert m("tice_peripheral_host_info", ident, kind=kind, host=laptop["device_id"]) == 1
    # The peripherals are devices of the inventory, judged by kind (too new here).
    assert got[("tice_devices_enrolled", (("kind", "modem"), ("school", SCHOOL)))] == 1
    # Labels are identities and codes, never a serial number or an IMEI.
    tool = shutil.which("promtool")
    if tool is not None:
        lint = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert lint.returncode == 0, lint.stdout + lint.stderr

    # Without a quota there is no ratio; without per-device series, no peripheral series at all.
    assert (await jobs("snapshot")).startswith("ok")
    got = samples(await (await replica.get("/metrics")).text())
    assert not any(name == "tice_modem_quota_used_ratio" for name, _ in got)
    assert m("tice_modem_month_bytes", KEY) == 5_000_000
    assert (await jobs("snapshot", per_device_metrics=False)).startswith("ok")
    got = samples(await (await replica.get("/metrics")).text())
    assert not any(name.startswith(("tice_modem_", "tice_projector_", "tice_disk_", "tice_peripheral_"))
                   for name, _ in got)
    assert got[("tice_devices_enrolled", (("kind", "projector"), ("school", SCHOOL)))] == 1


async def test_stale_readings_do_not_show_a_key_connected_nor_a_projector_on(aiohttp_client, make_settings, client,
                                                                           db, jobs):
    laptop = await enroll(client, await add_school(db), serial="LP-1")
    then = datetime.now(UTC) - timedelta(hours=2)  # the PC went off two hours ago
    await send(client, laptop, [modem(1, then, 60, 1_000, 0, 60), projector(2, then, "on", 10, 90)])
    for job in ("rollup", "snapshot"):
        assert (await jobs(job)).startswith("ok")
    replica = await aiohttp_client(create_app(make_settings(snapshot_cache_s=0)))
    got = samples(await (await replica.get("/metrics")).text())
    key = (("peripheral", KEY), ("school", SCHOOL))
    assert got[("tice_modem_connected", key)] == 0
    assert got[("tice_modem_signal_dbm", (("measure", "rsrp"), *key))] == -98  # the last one known
    on = (("peripheral", PROJECTOR), ("school", SCHOOL))
    assert got[("tice_projector_power_state", (*on, ("state", "unknown")))] == 1
    assert got[("tice_projector_power_state", (*on, ("state", "on")))] == 0
    assert got[("tice_peripheral_reading_timestamp_seconds", (("kind", "modem"), *key))] == pytest.approx(
        (then + timedelta(seconds=60)).timestamp(), abs=1e-3)


async def test_connected_and_on_time_never_exceed_their_intervals_nor_the_day(client, db, jobs):
    laptop = await enroll(client, await add_school(db), serial="LP-1")
    d = datetime.now(PARIS).date() - timedelta(days=4)
    start = datetime(d.year, d.month, d.day, tzinfo=PARIS)
    # The door refuses an interval whose connected part is longer than the interval itself.
    resp = await client.post("/api/v1/reports", json=batch(laptop["device_id"], [
        modem(1, start, 600, 0, 0, 700)]), headers=auth(laptop["token"]))
    assert resp.status == 400 and (await resp.json())["error"] == "implausible"
    # 100 readings of 7,200 s, fully connected and on, starting every 864 s from midnight: 200
    # hours claimed in one day. The day holds one day; the rest spills into the next.
    await send(client, laptop, [modem(i + 1, start + timedelta(seconds=864 * i), 7200, 0, 0, 7200)
                                for i in range(100)]
               + [projector(200 + i, start + timedelta(seconds=864 * i), "on", None, 7200) for i in range(100)])
    # A reading without an interval stands for 60 s: its connected seconds count up to that.
    later = start + timedelta(days=2, hours=9)
    await send(client, laptop, [modem(300, later, connected_s=600)])
    assert (await jobs("rollup")).startswith("ok")
    key, proj = (await device_of(db, KEY))["id"], (await device_of(db, PROJECTOR))["id"]
    keys, projs = await days_of(db, key), await days_of(db, proj)
    # 86,400 s, or 90,000/82,800 on the days the clocks change (in UTC: Python subtracts two times
    # of one time zone on the wall clock).
    day = (at(d + timedelta(days=1), "00:00").astimezone(UTC) - start.astimezone(UTC)).total_seconds()
    spill = 864 * 99 + 7200 - day
    assert (keys[d]["modem_connected_s"], keys[d + timedelta(days=1)]["modem_connected_s"]) == (day, spill)
    assert (projs[d]["projector_on_s"], projs[d + timedelta(days=1)]["projector_on_s"]) == (day, spill)
    assert keys[d + timedelta(days=2)]["modem_connected_s"] == 60


async def test_a_backup_disk_remembered_by_its_host_is_seen_when_it_was_last_connected(client, db, jobs):
    """A backup disk is plugged in for the backup, then put away: its host remembers when."""
    director = await enroll(client, await add_school(db), serial="DIR-1")
    now = datetime.now(UTC)
    yesterday = now - timedelta(days=1)
    await send(client, director, [disk(1, now - timedelta(minutes=10), False, last=yesterday),
                                  disk(2, now - timedelta(minutes=5), False, last=yesterday)])
    assert (await jobs("rollup")).endswith("peripherals: 1 new, 0 seen again, 0 moved")
    backup = await device_of(db, DISK)
    assert backup["last_connected_at"] == backup["last_seen_at"]
    assert abs((backup["last_seen_at"] - yesterday).total_seconds()) < 1
    # Not in the cupboard: `devices verdicts --never-seen` and tice_devices_never_seen leave it out.
    never = await db.fetch(q("devices_verdicts"), None, "disk", True)
    assert [r["serial"] for r in never] == []
    assert (await jobs("snapshot")).startswith("ok")
    body = json.loads(await db.fetchval("SELECT body::text FROM fleet_snapshot"))
    disks = [k for k in body["kinds"] if k["kind"] == "disk"]
    assert disks and all(k["never_seen"] == 0 for k in disks), disks
