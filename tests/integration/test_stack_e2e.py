"""The whole chain on loopback: `tice-collector demo` (the simulated city, backfilled, fed by the
agent's spool and sender and its peripheral probes against the simulators), a real Prometheus
scraping it with the repository's configuration and rules, then every dashboard panel's query
evaluated through Prometheus' HTTP API (and each history panel's SQL on the demo's PostgreSQL),
and the alerts the city must raise: those and no other.

The rules run without their `for` durations (tests/stack.py immediate_rules): the test proves
what the expressions find, not that Prometheus can wait half an hour.
"""

from __future__ import annotations

import asyncio
import csv
import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests import grafana
from tests.helpers import wait_until
from tests.promql import PROMETHEUS_OWN, allowed_names, metric_names
from tests.stack import Demo, Prometheus
from tice_collector import demo, embedded
from tice_collector.calendar import SCHOOL_TZ

pytestmark = pytest.mark.slow  # starts Prometheus and the demo collector as processes

ROOT = Path(__file__).resolve().parents[2]
# The value a dashboard's `school` variable takes: one school (the School dashboard), every
# school (the multi-valued ones, as Grafana's "All" makes a regex of every value).
SCHOOL = demo.CUPBOARD[0]
EVERY_SCHOOL = ".+"
RATE_INTERVAL = "1m"
BACKFILL_DAYS = 28  # the demo's history


def exported() -> set[str]:
    """Series names this collector declares in collector/tice_collector/metrics.csv, with histograms' parts."""
    with open(ROOT / "collector" / "tice_collector" / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = set(PROMETHEUS_OWN)
    for row in rows:
        names.add(row["name"])
        if row["type"] == "histogram":
            names |= {f"{row['name']}_{part}" for part in ("bucket", "sum", "count")}
    return names


def panel_queries() -> list[tuple[grafana.PanelQuery, str]]:
    """Every PromQL target of every committed dashboard, its variables replaced."""
    out = []
    for name, board in grafana.load_all().items():
        multi = grafana.variables(board).get("school", {}).get("multi", False)
        values = {"school": EVERY_SCHOOL if multi else SCHOOL}
        for query in grafana.panel_queries(name, board):
            if query.kind == "promql":
                out.append((query, grafana.expand_promql(query.text, values, RATE_INTERVAL)))
    return out


def history_window(now: datetime) -> tuple[datetime, datetime]:
    """The last 7 days; in the school holidays, from 7 days before the city's last school day:
    the history panels show school days, and a user in the holidays picks a range with some."""
    school = next(s for s in demo.city() if s.uai == SCHOOL)
    today = now.astimezone(SCHOOL_TZ).date()
    days = demo.school_days(school, today - timedelta(days=BACKFILL_DAYS), today)
    if not days:
        return now - timedelta(days=7), now
    return min(now - timedelta(days=7), datetime.combine(days[-1] - timedelta(days=6), time(0), SCHOOL_TZ)), now


def test_in_the_holidays_the_history_window_reaches_back_to_the_last_school_day() -> None:
    # 2026-12-28 is in zone A's Christmas holidays (19 December to 4 January); Friday the 18th
    # is the last school day before them.
    start, end = history_window(datetime(2026, 12, 28, 12, 0, tzinfo=UTC))
    assert start == datetime(2026, 12, 12, 0, 0, tzinfo=SCHOOL_TZ), start
    assert end == datetime(2026, 12, 28, 12, 0, tzinfo=UTC)
    start, _ = history_window(datetime(2026, 12, 3, 12, 0, tzinfo=UTC))  # a school week: the last 7 days
    assert start == datetime(2026, 11, 26, 12, 0, tzinfo=UTC), start


def history_queries() -> list[tuple[grafana.PanelQuery, str]]:
    """Every PostgreSQL target of every committed dashboard, its variables and macros replaced,
    over `history_window`: one school (a nursery school with a 3G key and a projector on the
    multi-valued dashboards, whose history panels are about those)."""
    start, end = history_window(datetime.now(UTC))
    out = []
    for name, board in grafana.load_all().items():
        multi = grafana.variables(board).get("school", {}).get("multi", False)
        values = {"school": demo.WORN_LAMP_SCHOOL if multi else SCHOOL, **grafana.constants(board)}
        for query in grafana.panel_queries(name, board):
            if query.kind == "sql":
                out.append((query, grafana.expand_sql(query.text, values, start, end)))
    return out


def expected_alerts(school_day: dict[str, bool], names: set[str]) -> set[tuple[str, str]]:
    """What the demo's city must raise (collector/tice_collector/demo.py): use and silence on a school day
    only; the peripherals' alerts when this collector exports their series (the broken 3G key's
    low use too: it has carried no data for BROKEN_KEY_SCHOOL_DAYS school days)."""
    out = set()
    if school_day[demo.CUPBOARD[0]]:
        out.add(("TiceDevicesLowUse", demo.CUPBOARD[0]))
    if school_day[demo.OFFLINE_SCHOOL]:
        out.add(("TiceSchoolSilent", demo.OFFLINE_SCHOOL))
    if {"tice_modem_connected", "tice_peripheral_reading_timestamp_seconds"} <= names:
        out.add(("TiceModemDisconnected", demo.BROKEN_KEY_SCHOOL))
        if school_day[demo.BROKEN_KEY_SCHOOL]:  # it has carried no data for BROKEN_KEY_SCHOOL_DAYS
            out.add(("TiceDevicesLowUse", demo.BROKEN_KEY_SCHOOL))
    if "tice_disk_last_connected_timestamp_seconds" in names:
        out.add(("TiceBackupDiskNotConnected", demo.FORGOTTEN_DISK_SCHOOL))
    return out


async def test_the_demo_city_fills_every_panel_and_raises_exactly_the_expected_alerts(capsys):
    city = Demo(seed=7, backfill_days=BACKFILL_DAYS, tick_s=5.0)
    prometheus = None
    try:
        said = await city.wait_city()
        assert f"http://127.0.0.1:{city.port}/metrics" in said, said
        # Every 10 s: a scrape of the city's /metrics (some 2,000 series) may take seconds on a
        # busy machine, and one timing out would read as the collector down.
        prometheus = Prometheus({"tice-collector": [f"127.0.0.1:{city.port}"]}, interval="10s", immediate=True)
        await prometheus.wait_ready()
        names = exported()
        queries = panel_queries()
        assert len(queries) >= 60, len(queries)
        async with aiohttp.ClientSession() as http:
            # Three scrapes at least: rates and increases need two samples.
            await wait_until(lambda: prometheus.query(http, 'count_over_time(up{job="tice-collector"}[2m]) >= 3'),
                             "three scrapes of the demo", timeout=300, every=1.0)

            evaluated, skipped, empty = [], [], []
            for query, expr in queries:
                where = f"{query.dashboard} / {query.panel} / {query.ref}"
                if not metric_names(expr) <= names:
                    # A series of the contract the rules may read but this collector does not export.
                    assert metric_names(expr) <= allowed_names(), (where, expr)
                    skipped.append(f"{where}: {expr} (not exported by this collector)")
                    continue

                async def answered(expr: str = expr) -> list:
                    return await prometheus.query(http, expr)

                try:
                    result = await wait_until(answered, f"data for {where}", timeout=120, every=2.0)
                except AssertionError:
                    empty.append(f"{where}: {expr}")
                    continue
                evaluated.append(f"{where}: {expr} -> {len(result)} series")
            # The history panels, on the demo's own PostgreSQL (its data directory, printed).
            found = re.search(r"^  data: +(\S+)", said, re.M)
            assert found, said
            url, server = await asyncio.to_thread(embedded.start, Path(found.group(1)))
            conn = await asyncpg.connect(url)
            try:
                for query, sql in history_queries():
                    where = f"{query.dashboard} / {query.panel} / {query.ref} (PostgreSQL)"

                    async def rows(sql: str = sql) -> list:
                        return list(await conn.fetch(sql))

                    try:
                        got = await wait_until(rows, f"rows for {where}", timeout=180, every=2.0)
                    except AssertionError:
                        empty.append(f"{where}: {sql}")
                        continue
                    evaluated.append(f"{where} -> {len(got)} rows")
            finally:
                await conn.close()
                server.cleanup()
            with capsys.disabled():
                print(f"\nevaluated {len(evaluated)} panel queries on Prometheus and PostgreSQL:")
                print("\n".join(f"  {line}" for line in evaluated))
                print(f"skipped {len(skipped)} queries" + (":" if skipped else ""))
                print("\n".join(f"  {line}" for line in skipped))
            assert not empty, "panel queries without data:\n" + "\n".join(empty)
            assert len(evaluated) >= 40

            # The directors' disks, plugged in and read through sysfs, udev and smartctl: every
            # school's but the forgotten one's and the offline school's, one failing SMART.
            healthy = await prometheus.query(http, "max without (instance) (tice_disk_smart_healthy)")
            plugged = {s.uai for s in demo.city()} - {demo.FORGOTTEN_DISK_SCHOOL, demo.OFFLINE_SCHOOL}
            assert {s["metric"]["school"]: s["value"][1] for s in healthy} == {
                uai: "0" if uai == demo.FAILING_DISK_SCHOOL else "1" for uai in plugged}

            days = await prometheus.query(http, "max without (instance) (tice_school_day)")
            school_day = {s["metric"]["school"]: s["value"][1] == "1" for s in days}
            assert set(school_day) == {s.uai for s in demo.city()}
            want = expected_alerts(school_day, names)

            async def alerts() -> set[tuple[str, str]] | None:
                body = await prometheus.api(http, "alerts")
                got = {(a["labels"]["alertname"], a["labels"].get("school", "")) for a in body["alerts"]
                       if a["state"] == "firing"}
                return got if got >= want else None

            firing = await wait_until(alerts, f"the alerts {sorted(want)} firing", timeout=180, every=2.0)
            with capsys.disabled():
                print(f"alerts firing: {sorted(firing)}")
            assert firing == want
    finally:
        if prometheus is not None:
            prometheus.stop()
        city.stop()
