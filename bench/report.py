"""Evidence report: a city's school year, rendered from the daily rollups, in each format.

    python bench/report.py [--devices 2000] [--rounds 3]

Seeds a fresh embedded PostgreSQL with schools of 70 devices (50 Chromebooks in 10 classes of
5, 8 laptops of which 2 carry a 3G key and 4 drive a projector, 6 desktops, 4 projectors with
daily rows of their own, 2 keys) and one daily_usage row per device and calendar day of the
2025-2026 school year (1 September 2025 to 3 July 2026, 306 days: school days, weekends and
holidays alike), then times, each round:

- `tice-collector report --format html|csv|json` for the whole city, end to end (a new process:
  start-up, database, figures, file);
- in one process, the parts: reading the figures (source), computing them, and rendering each
  format;
- the baseline: a bare `SELECT count(*), sum(active_in_hours_s)` over the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import clean_env, exit_on_sigterm, run, start_embedded, uninterrupted  # noqa: E402
from tice_collector.app import prepare_database  # noqa: E402
from tice_collector.fleet import policy_from  # noqa: E402
from tice_collector.report import compute, render, source  # noqa: E402
from tice_collector.report.make import method_of  # noqa: E402
from tice_collector.settings import load_settings  # noqa: E402

PARIS = ZoneInfo("Europe/Paris")
FIRST, LAST = date(2025, 9, 1), date(2026, 7, 3)
# Per school: (kind, count, class size or 0); laptops 0-1 carry a key, 2-5 a projector.
SCHOOL = (("chromebook", 50, 5), ("laptop", 8, 0), ("desktop", 6, 0), ("projector", 4, 0), ("modem", 2, 0))


async def seed(url: str, n_devices: int) -> int:
    conn = await asyncpg.connect(url)
    rng = random.Random(1)
    per_school = sum(n for _, n, _ in SCHOOL)
    n_schools = max(1, -(-n_devices // per_school))
    try:
        schools = [(f"{210000 + i:07d}{'ABCDEFGH'[i % 8]}", f"École {i}", "A", "elementary",
                    "wednesday_morning" if i % 10 == 0 else "four_day") for i in range(n_schools)]
        await conn.copy_records_to_table("schools", records=schools,
                                         columns=["uai", "name", "zone", "kind", "timetable"])
        enrolled = datetime(2025, 8, 25, 9, 0, tzinfo=PARIS)
        devices: list[tuple[uuid.UUID, str, str, str, int | None, datetime, datetime, int]] = []
        for s in schools:
            class_ids = [await conn.fetchval("INSERT INTO classes (school, code) VALUES ($1, $2) RETURNING id",
                                             s[0], f"C{c:02d}") for c in range(10)]
            for kind, count, size in SCHOOL:
                for k in range(count):
                    if len(devices) >= n_devices:
                        break
                    klass = class_ids[k // size] if size else None
                    devices.append((uuid.uuid4(), f"{s[0]}-{kind[:2].upper()}{k:02d}", kind, s[0], klass, enrolled,
                                    enrolled, k))
        await conn.copy_records_to_table("devices", records=[d[:7] for d in devices], columns=[
            "id", "serial", "kind", "school", "class_id", "created_at", "enrolled_at"])
        rows: list[tuple[object, ...]] = []
        days = [FIRST + timedelta(days=i) for i in range((LAST - FIRST).days + 1)]
        total = 0
        for dev_id, _, kind, _, _, _, _, k in devices:
            habit = rng.random()
            for day in days:
                weekday = day.weekday() < 5
                used = weekday and rng.random() < habit
                inside = 1800.0 * rng.random() if used else 0.0
                active = inside + 300.0 * rng.random()
                projector = (inside, inside) if kind == "projector" or (kind == "laptop" and 2 <= k < 6) else (0, 0)
                modem = (0, 0)
                if kind == "modem" or (kind == "laptop" and k < 2):
                    b = int(2_000_000 * rng.random()) if used else 0
                    modem = (b + 1000, b)
                if kind in ("projector", "modem"):
                    active, inside = 0.0, 0.0
                rows.append((dev_id, day, active, inside, float(projector[0]), float(projector[1]), modem[0], modem[1],
                             1))
            if len(rows) >= 200_000:
                await conn.copy_records_to_table("daily_usage", records=rows, columns=[
                    "device_id", "day", "active_s", "active_in_hours_s", "projector_on_s", "projector_on_in_hours_s",
                    "modem_bytes", "modem_in_hours_bytes", "records"])
                total += len(rows)
                rows.clear()
        if rows:
            await conn.copy_records_to_table("daily_usage", records=rows, columns=[
                "device_id", "day", "active_s", "active_in_hours_s", "projector_on_s", "projector_on_in_hours_s",
                "modem_bytes", "modem_in_hours_bytes", "records"])
            total += len(rows)
        await conn.execute("ANALYZE")
        return total
    finally:
        await conn.close()


async def baseline(url: str) -> float:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await conn.fetchrow("SELECT count(*), sum(active_in_hours_s) FROM daily_usage WHERE day BETWEEN $1 AND $2",
                            FIRST, LAST)
        return time.perf_counter() - started
    finally:
        await conn.close()


def cli(url: str, fmt: str, out: Path) -> tuple[float, int]:
    env = clean_env(TICE_DATABASE_URL=url, TICE_LOG_LEVEL="warning")
    started = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "tice_collector.cli", "report", "--from", str(FIRST), "--to", str(LAST),
                        "--format", fmt, "--out", str(out)], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    elapsed = time.perf_counter() - started
    if r.returncode != 0:
        raise SystemExit(f"report --format {fmt} failed: {r.stderr}")
    return elapsed, out.stat().st_size


async def parts(url: str) -> dict[str, float]:
    settings = load_settings(environ={}, database_url=url)
    policy = policy_from(settings)
    conn = await asyncpg.connect(url)
    try:
        t0 = time.perf_counter()
        schools = await source.load_schools(conn, None, query_timeout_s=600)
        data = await source.load(conn, schools, None, FIRST, LAST, policy, PARIS, query_timeout_s=600)
        t1 = time.perf_counter()
    finally:
        await conn.close()
    report = compute.compute(data, FIRST, LAST, policy, method_of(settings), scope="city", default_term=False,
                             now=datetime.now(UTC))
    t2 = time.perf_counter()
    out = {"read": t1 - t0, "compute": t2 - t1}
    for fmt, fn in (("json", render.to_json), ("csv", render.to_csv), ("html", render.to_html)):
        started = time.perf_counter()
        fn(report)  # type: ignore[operator]
        out[f"render {fmt}"] = time.perf_counter() - started
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.devices < 1 or args.rounds < 1:
        ap.error("need --devices >= 1 and --rounds >= 1")
    exit_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="tice-report-bench-"))
    os.chmod(tmp, 0o755)
    server = None
    try:
        url, server = await start_embedded(tmp)
        await prepare_database(url, 6)
        started = time.perf_counter()
        rows = await seed(url, args.devices)
        print(f"seeded {args.devices:,} devices x {(LAST - FIRST).days + 1} days = {rows:,} rollup rows in "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
        results: dict[str, list[float]] = {}
        sizes: dict[str, int] = {}
        for rnd in range(1, args.rounds + 1):
            results.setdefault("baseline", []).append(await baseline(url))
            for fmt in ("html", "csv", "json"):
                elapsed, sizes[fmt] = await asyncio.to_thread(cli, url, fmt, tmp / f"report.{fmt}")
                results.setdefault(f"cli {fmt}", []).append(elapsed)
            for name, value in (await parts(url)).items():
                results.setdefault(name, []).append(value)
            print(f"round {rnd}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in results.items()), file=sys.stderr)
        base = statistics.median(results["baseline"])
        print()
        print("| what | median s (rounds) | ÷ baseline | file size |")
        print("|---|---:|---:|---:|")
        labels = {"baseline": "baseline: count+sum of the year's rollup rows",
                  "cli html": "`tice-collector report --format html`, end to end",
                  "cli csv": "`tice-collector report --format csv`, end to end",
                  "cli json": "`tice-collector report --format json`, end to end",
                  "read": "in process: read the figures (source)", "compute": "in process: compute",
                  "render json": "in process: render JSON", "render csv": "in process: render CSV",
                  "render html": "in process: render HTML"}
        for key, label in labels.items():
            values = results[key]
            size = f"{sizes[key[4:]] / 1024:,.0f} KiB" if key.startswith("cli ") else ""
            print(f"| {label} | {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) | "
                  f"{statistics.median(values) / base:.1f} | {size} |")
    finally:
        with uninterrupted():
            if server is not None:
                await asyncio.to_thread(server.cleanup)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run(lambda: asyncio.run(main()))
