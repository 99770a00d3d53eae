"""Fleet scale check: 20,000 devices with a school year of daily rollups.

    python bench/fleet_scale.py [--devices 20000] [--days 300] [--usage-minutes 480] [--rounds 3]

Seeds a fresh embedded PostgreSQL with schools (70 devices each, 5 Chromebooks per class),
enrolled devices and one daily_usage row per device and calendar day (a school year and
more), then times the jobs that read them (detect, snapshot) and a /metrics scrape of the real
collector, with per-device series on and off. Baseline in the same run: a bare
`SELECT count(*), sum(active_s) FROM daily_usage` over the same rows, the floor for any job
that reads the window.

It also seeds a full school day of raw usage records for every device (`--usage-minutes`
one-minute intervals from 08:00 local time yesterday: 480 = 08:00-16:00) and times the
`rollup` job recomputing all those device-days, as it does at the end of a school day, when
every device reported within the last minutes. Its baseline: a bare
`SELECT count(*), sum(active_s)` over the same raw rows.

Peripherals (`--keys`, `--projectors`, 600 each by default): as many 3G keys and projectors,
each read by the agent of one device over the same school day (a key every minute, a projector
every 90 s, with their identities), so the rollup registers them and rolls them up, and detect,
snapshot and /metrics carry them. The raw baseline then counts and sums their rows too. The
first rollup (which registers them) runs before the timed rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import clean_env, exit_on_sigterm, free_port, run, start_embedded, uninterrupted, wait_http  # noqa: E402
from tice_collector.app import prepare_database  # noqa: E402
from tice_collector.jobs import JobContext, all_jobs, run_job  # noqa: E402
from tice_collector.metrics import Metrics  # noqa: E402
from tice_collector.settings import load_settings  # noqa: E402

PARIS = ZoneInfo("Europe/Paris")


async def seed(url: str, n_devices: int, n_days: int) -> None:
    conn = await asyncpg.connect(url)
    rng = random.Random(1)
    try:
        n_schools = max(1, n_devices // 70)
        schools = [(f"{210000 + i:07d}{'ABCDEFGH'[i % 8]}", f"École {i}", "A", "elementary",
                    "wednesday_morning" if i % 10 == 0 else "four_day") for i in range(n_schools)]
        await conn.copy_records_to_table("schools", records=schools, columns=["uai", "name", "zone", "kind", "timetable"])
        classes = [(s[0], f"C{c:02d}") for s in schools for c in range(14)]
        await conn.copy_records_to_table("classes", records=classes, columns=["school", "code"])
        class_ids = [r["id"] for r in await conn.fetch("SELECT id FROM classes ORDER BY id")]
        enrolled = datetime.now(UTC) - timedelta(days=n_days + 1)
        devices = []
        for i in range(n_devices):
            school = schools[min(i // 70, n_schools - 1)][0]
            devices.append((uuid.uuid4(), f"SN{i:06d}", "chromebook", school, class_ids[min(i // 5, len(class_ids) - 1)],
                            enrolled, datetime.now(UTC) - timedelta(hours=rng.random() * 30)))
        await conn.copy_records_to_table("devices", records=devices, columns=[
            "id", "serial", "kind", "school", "class_id", "enrolled_at", "last_seen_at"])
        today = datetime.now(UTC).date()
        batch = []
        for d in devices:
            habit = rng.random()
            for k in range(n_days):
                day = today - timedelta(days=k)
                active = 1800.0 * rng.random() if rng.random() < habit else 0.0
                batch.append((d[0], day, active, 0.0, 0.0, 0, 1))
            if len(batch) >= 200_000:
                await conn.copy_records_to_table("daily_usage", records=batch, columns=[
                    "device_id", "day", "active_s", "external_display_s", "projector_on_s", "modem_bytes", "records"])
                batch.clear()
        if batch:
            await conn.copy_records_to_table("daily_usage", records=batch, columns=[
                "device_id", "day", "active_s", "external_display_s", "projector_on_s", "modem_bytes", "records"])
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def seed_raw(url: str, minutes: int) -> date:
    """One-minute usage records from 08:00 local yesterday, `minutes` per device; the day."""
    conn = await asyncpg.connect(url)
    rng = random.Random(2)
    day = datetime.now(PARIS).date() - timedelta(days=1)
    start = datetime(day.year, day.month, day.day, 8, 0, tzinfo=PARIS)
    columns: tuple[str, ...] = ("device_id", "spool", "seq", "at", "at_corrected", "received_at", "duration_s", "active_s",
                                "idle_s", "locked_s", "no_session_s", "unclassified_s", "source")
    received = datetime.now(UTC)
    try:
        devices = [r["id"] for r in await conn.fetch("SELECT id FROM devices ORDER BY id")]
        rows: list[tuple[object, ...]] = []
        for device in devices:
            spool = uuid.uuid4()
            for k in range(minutes):
                at = start + timedelta(minutes=k)
                active = 60.0 * rng.random()
                rows.append((device, spool, k, at, at, received, 60.0, active, 60.0 - active, 0.0, 0.0, 0.0, "x11"))
            if len(rows) >= 200_000:
                await conn.copy_records_to_table("usage_records", records=rows, columns=columns)
                rows.clear()
        if rows:
            await conn.copy_records_to_table("usage_records", records=rows, columns=columns)
        await conn.execute("ANALYZE usage_records")
    finally:
        await conn.close()
    return day


async def seed_peripherals(url: str, day: date, minutes: int, keys: int, projectors: int) -> int:
    """3G keys read every minute and projectors every 90 s over `minutes` from 08:00 local on
    `day`, each by one device's agent, with their identities, as the probes send them: a first
    reading without an interval, then intervals (a key carrying bytes; a projector on from 09:00
    to 10:00 and 14:00 to 15:00). Returns the rows written."""
    conn = await asyncpg.connect(url)
    rng = random.Random(3)
    start = datetime(day.year, day.month, day.day, 8, 0, tzinfo=PARIS)
    received = datetime.now(UTC)
    written = 0
    try:
        devices = [r["id"] for r in await conn.fetch("SELECT id FROM devices ORDER BY id")]
        step = max(1, len(devices) // max(keys, projectors, 1))
        rows: list[tuple[object, ...]] = []
        columns: tuple[str, ...] = (
            "device_id", "spool", "seq", "at", "at_corrected", "received_at", "up", "state", "technology",
            "rssi_dbm", "rsrp_dbm", "rx_bytes", "tx_bytes", "connected_s", "duration_s", "modem_id")
        for k in range(keys):
            host, spool, key = devices[(k * step) % len(devices)], uuid.uuid4(), uuid.uuid4().hex
            for i in range(minutes):
                at = start + timedelta(minutes=max(0, i - 1))
                interval = (None, None, None, None) if i == 0 else (rng.randrange(200_000), rng.randrange(20_000),
                                                                    60.0, 60.0)
                rows.append((host, spool, i, at, at, received, True, "connected", "lte", -71.0, -95.0, *interval, key))
        await conn.copy_records_to_table("modem_records", records=rows, columns=columns)
        written += len(rows)
        rows = []
        columns = ("device_id", "spool", "seq", "at", "at_corrected", "received_at", "up", "power", "lamp_hours",
                   "lamp_on", "fan", "lamp", "temperature", "cover", "filter", "other", "duration_s", "projector_id")
        for k in range(projectors):
            host, spool, ident = devices[(k * step + 1) % len(devices)], uuid.uuid4(), uuid.uuid4().hex
            lamp = rng.randrange(100, 2900)
            for i in range(minutes * 60 // 90):
                at = start + timedelta(seconds=90 * max(0, i - 1))
                hour = (at + timedelta(seconds=90)).astimezone(PARIS).hour
                on = hour in (9, 14)
                lamp += on and i % 40 == 0
                rows.append((host, spool, i, at, at, received, True, "on" if on else "standby", lamp, on,
                             "ok", "ok", "ok", "ok", "ok", "ok", None if i == 0 else 90.0, ident))
        await conn.copy_records_to_table("projector_records", records=rows, columns=columns)
        written += len(rows)
        await conn.execute("ANALYZE modem_records")
        await conn.execute("ANALYZE projector_records")
    finally:
        await conn.close()
    return written


async def raw_baseline(url: str, day: date) -> float:
    """count+sum over the day's raw rows the rollup reads: usage, and the peripherals' readings."""
    conn = await asyncpg.connect(url)
    try:
        t0 = datetime(day.year, day.month, day.day, tzinfo=PARIS)
        started = time.perf_counter()
        for sql in ("SELECT count(*), sum(active_s) FROM usage_records WHERE at_corrected >= $1 AND at_corrected < $2",
                    "SELECT count(*), sum(rx_bytes) FROM modem_records WHERE at_corrected >= $1 AND at_corrected < $2",
                    "SELECT count(*), sum(lamp_hours) FROM projector_records WHERE at_corrected >= $1 "
                    "AND at_corrected < $2"):
            await conn.fetchrow(sql, t0, t0 + timedelta(days=1))
        return time.perf_counter() - started
    finally:
        await conn.close()


async def time_rollup(url: str) -> float:
    """The rollup recomputing every seeded device-day (its watermark moved back first)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE rollup_state SET watermark = '2000-01-01T00:00:00Z'")
    finally:
        await conn.close()
    return await time_job(url, "rollup")


async def time_job(url: str, name: str, **overrides: Any) -> float:
    settings = load_settings(environ={}, database_url=url, **overrides)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        started = time.perf_counter()
        outcome = await run_job(all_jobs()[name], JobContext(pool=pool, settings=settings, metrics=Metrics()), force=True)
        if outcome == "cancelled":  # Ctrl-C or SIGTERM while it ran: the job runner reports it as an outcome
            raise KeyboardInterrupt
        if outcome != "ok":
            raise SystemExit(f"the {name} job ended {outcome!r}: see its log lines above")
        return time.perf_counter() - started
    finally:
        await pool.close()


async def baseline(url: str) -> float:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await conn.fetchrow("SELECT count(*), sum(active_s) FROM daily_usage WHERE day >= $1",
                            date.today() - timedelta(days=120))
        return time.perf_counter() - started
    finally:
        await conn.close()


async def scrape(url: str, per_device: bool) -> tuple[float, int, int]:
    port = free_port()
    env = clean_env(TICE_DATABASE_URL=url, TICE_JOBS_ENABLED="false", TICE_LOG_LEVEL="warning",
                    TICE_SNAPSHOT_CACHE_S="0")
    # per_device_metrics only changes what the snapshot job writes: recompute it first.
    await time_job(url, "snapshot", per_device_metrics=per_device)
    proc = subprocess.Popen([sys.executable, "-m", "tice_collector.cli", "serve", "--listen", f"127.0.0.1:{port}"],
                            env=env, cwd=ROOT)
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/readyz")
        async with aiohttp.ClientSession() as http:
            times, size, series = [], 0, 0
            for _ in range(5):
                started = time.perf_counter()
                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    body = await r.read()
                times.append(time.perf_counter() - started)
                size = len(body)
                series = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
            return statistics.median(times), size, series
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=300, help="days of rollups per device")
    ap.add_argument("--usage-minutes", type=int, default=480,
                    help="one-minute usage records per device for the rollup (0: skip it)")
    ap.add_argument("--keys", type=int, default=600, help="3G keys read over the school day (0: none)")
    ap.add_argument("--projectors", type=int, default=600, help="projectors read over the school day (0: none)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.devices < 1 or args.rounds < 1 or min(args.days, args.usage_minutes, args.keys, args.projectors) < 0:
        ap.error("need --devices >= 1, --rounds >= 1, and --days, --usage-minutes, --keys, --projectors >= 0")
    if args.days > 3650 or args.usage_minutes > 1440:
        # Rollup days go back from today (ten years at most), and usage minutes fill one day.
        ap.error("need --days <= 3650 and --usage-minutes <= 1440 (one day)")
    exit_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="tice-fleet-bench-"))
    server = None
    try:
        url, server = await start_embedded(tmp)
        await prepare_database(url, 6)
        started = time.perf_counter()
        await seed(url, args.devices, args.days)
        print(f"seeded {args.devices:,} devices x {args.days} days = {args.devices * args.days:,} rollup rows "
              f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        day = None
        if args.usage_minutes:
            started = time.perf_counter()
            day = await seed_raw(url, args.usage_minutes)
            print(f"seeded {args.devices:,} devices x {args.usage_minutes} usage records = "
                  f"{args.devices * args.usage_minutes:,} raw rows in {time.perf_counter() - started:.1f} s",
                  file=sys.stderr)
            if args.keys or args.projectors:
                started = time.perf_counter()
                n = await seed_peripherals(url, day, args.usage_minutes, args.keys, args.projectors)
                print(f"seeded {args.keys:,} 3G keys and {args.projectors:,} projectors: {n:,} raw rows in "
                      f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
                first = await time_rollup(url)
                print(f"first rollup (registers the peripherals): {first:.2f} s", file=sys.stderr)
        rows = []
        for rnd in range(1, args.rounds + 1):
            base = await baseline(url)
            detect = await time_job(url, "detect")
            snap = await time_job(url, "snapshot")
            raw = await raw_baseline(url, day) if day else float("nan")
            roll = await time_rollup(url) if day else float("nan")
            rows.append((base, detect, snap, raw, roll))
            print(f"round {rnd}: baseline {base:.2f} s, detect {detect:.2f} s, snapshot {snap:.2f} s, "
                  f"raw baseline {raw:.2f} s, rollup {roll:.2f} s", file=sys.stderr)
        on = await scrape(url, True)
        off = await scrape(url, False)
        med = [statistics.median(r[i] for r in rows) for i in range(5)]
        print()
        print("| what | median s | ÷ baseline |")
        print("|---|---:|---:|")
        print(f"| baseline: count+sum of 120 days of rollups | {med[0]:.2f} | 1.0 |")
        print(f"| detect job (verdicts for every device) | {med[1]:.2f} | {med[1] / med[0]:.1f} |")
        print(f"| snapshot job (fleet aggregates) | {med[2]:.2f} | {med[2] / med[0]:.1f} |")
        if day:
            print(f"| baseline: count+sum of a day of raw records (usage, 3G keys, projectors) | {med[3]:.2f} | 1.0 |")
            print(f"| rollup job (every device-day of that day) | {med[4]:.2f} | {med[4] / med[3]:.1f} |")
        print()
        print("| /metrics scrape | median ms | size KiB | series |")
        print("|---|---:|---:|---:|")
        print(f"| per-device series on | {on[0] * 1000:.0f} | {on[1] / 1024:.0f} | {on[2]:,} |")
        print(f"| per-device series off | {off[0] * 1000:.0f} | {off[1] / 1024:.0f} | {off[2]:,} |")
    finally:
        with uninterrupted():
            if server is not None:
                await asyncio.to_thread(server.cleanup)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run(lambda: asyncio.run(main()))
