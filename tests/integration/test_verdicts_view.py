"""The per-device view and the report page: `tice-collector devices verdicts`, GET
/api/v1/admin/verdicts, the never-seen metric (the cupboard at a glance) and GET /report with the
admin token or the read-only report token, on the known fleet of tests/report_fleet.py.

The detect job judges the fleet on Saturday 7 November 2026, the day after its period: its last
20 school days (the alert window) at a four-day school of zone A are 21 September to 6 November
(Toussaint break left out), at the Wednesday-morning school B 28 September to 6 November.
"""

from __future__ import annotations

import base64
import uuid
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import report_fleet
from tice_collector.app import create_app
from tice_collector.jobs import JobContext, all_jobs, run_job
from tice_collector.keys import METRICS

ADMIN = {"Authorization": "Bearer admin-secret-token"}
A, B, D = report_fleet.A, report_fleet.B, report_fleet.D
JUDGED_ON = date(2026, 11, 7)
PERIOD = {"from": "2026-10-12", "to": "2026-11-06"}
# Devices that reported at some point; the others of the fleet never did.
SEEN = ("A1", "A2", "A5", "A6", "A12", "B1", "B2", "D1")


@pytest.fixture
async def judged(db: asyncpg.Connection, database_url: str, make_settings: Any, client: Any) -> dict[str, uuid.UUID]:
    ids = await report_fleet.seed(db)
    seen_at = datetime(2026, 11, 6, 16, 0, tzinfo=ZoneInfo("Europe/Paris"))
    await db.execute("UPDATE devices SET last_seen_at = $2 WHERE id = ANY($1::uuid[])", [ids[n] for n in SEEN], seen_at)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    try:
        ctx = JobContext(pool=pool, settings=make_settings(), metrics=client.server.app[METRICS],
                         today=lambda: JUDGED_ON)
        for job in ("detect", "snapshot"):
            assert await run_job(all_jobs()[job], ctx, force=True) == "ok"
    finally:
        await pool.close()
    return ids


async def test_verdicts_by_school_and_kind(client: Any, judged: Any) -> None:
    resp = await client.get("/api/v1/admin/verdicts", params={"school": "0210001a", "kind": "chromebook"},
                            headers=ADMIN)
    assert resp.status == 200, await resp.text()
    got = {d["serial"]: d for d in (await resp.json())["devices"]}
    assert list(got) == ["A-CB-01", "A-CB-02", "A-CB-03", "A-CB-10"]
    # A1: used (>= 600 s in class) on 12, 13, 15, 16 Oct and 2, 3 Nov: 6 of its last 20 school
    # days, under half: low use. A2: 12, 13 Oct and 2 Nov (15 Oct 420 s, 6 Nov 30 s): 3 of 20.
    assert (got["A-CB-01"]["verdict"], got["A-CB-01"]["used_days"], got["A-CB-01"]["judged_days"]) == \
        ("irregular", 6, 20)
    # Its 2,000 s of Wednesday 14 October (no class at a four-day school) and 5,000 s of the
    # holidays (20 October) are use out of class, said and not counted.
    assert got["A-CB-01"]["verdict_note"] == ("low use: used in class on 6 of its last 20 school days; used out of "
                                              "hours on 2 days (not counted)")
    assert (got["A-CB-02"]["verdict"], got["A-CB-02"]["used_days"], got["A-CB-02"]["judged_days"]) == \
        ("irregular", 3, 20)
    # A3 enrolled on 3 November: 3 school days (3, 5, 6 Nov), too few to judge; A10's enrolment
    # is dated 10 November, after the judging day: none.
    assert (got["A-CB-03"]["verdict"], got["A-CB-03"]["used_days"], got["A-CB-03"]["judged_days"]) == ("too_new", 1, 3)
    assert got["A-CB-03"]["verdict_note"].startswith("not judged yet: 3 school days since enrolment; judged from ")
    assert got["A-CB-03"]["last_seen_at"] is None
    assert (got["A-CB-10"]["verdict"], got["A-CB-10"]["judged_days"]) == ("too_new", 0)
    assert got["A-CB-01"]["last_seen_at"].startswith("2026-11-06T15:00:00")
    # B2: used on each of its 10 school days in the period, and none of the 10 before: 10 of 20,
    # exactly the regular share (0.5): regular.
    resp = await client.get("/api/v1/admin/verdicts", params={"school": B}, headers=ADMIN)
    b = {d["serial"]: (d["verdict"], d["used_days"], d["judged_days"]) for d in (await resp.json())["devices"]}
    assert b == {"B-CB-01": ("irregular", 4, 20), "B-CB-02": ("regular", 10, 20)}


async def test_never_seen_lists_the_cupboard(client: Any, judged: Any) -> None:
    resp = await client.get("/api/v1/admin/verdicts", params={"never_seen": "true"}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    # Active devices that never reported, by school, kind and serial: enrolled and silent (A3,
    # A9), never enrolled (A4, A10, A11), a backup disk (A7); the retired A8 is left out.
    assert [(d["school"], d["kind"], d["serial"]) for d in (await resp.json())["devices"]] == [
        (A, "chromebook", "A-CB-03"), (A, "chromebook", "A-CB-10"), (A, "desktop", "A-PC-09"),
        (A, "disk", "A-HD-07"), (A, "laptop", "A-LP-04"), (A, "laptop", "A-LP-11")]
    resp = await client.get("/api/v1/admin/verdicts", params={"never_seen": "1", "kind": "laptop", "school": D},
                            headers=ADMIN)
    assert (await resp.json())["devices"] == []


async def test_the_never_seen_metric_counts_them_by_school_and_kind(aiohttp_client: Any, make_settings: Any,
                                                                    judged: Any) -> None:
    other = await aiohttp_client(create_app(make_settings()))  # another replica reads the same snapshot
    text = await (await other.get("/metrics")).text()
    never = {(s.labels["school"], s.labels["kind"]): s.value
             for f in text_string_to_metric_families(text) for s in f.samples if s.name == "tice_devices_never_seen"}
    assert never == {(A, "chromebook"): 2, (A, "desktop"): 1, (A, "disk"): 1, (A, "laptop"): 2,
                     (A, "projector"): 0, (B, "chromebook"): 0, (D, "laptop"): 0}


@pytest.mark.parametrize(("query", "status", "detail"), [
    ({"kind": "tablet"}, 400, "query parameter kind: expected one of"),
    ({"never_seen": "yes"}, 400, "query parameter never_seen: expected true or false, got 'yes'"),
    ({"school": "Voltaire"}, 400, "query parameter school: expected a UAI code"),
    ({"school": "0219999Z"}, 404, "no school 0219999Z"),
    ({"since": "2026-10-01"}, 400, "unknown query parameter 'since'; known: school, kind, never_seen"),
])
async def test_bad_verdict_queries(client: Any, judged: Any, query: dict[str, str], status: int, detail: str) -> None:
    resp = await client.get("/api/v1/admin/verdicts", params=query, headers=ADMIN)
    assert resp.status == status
    assert detail in (await resp.json())["detail"]


async def test_verdicts_need_the_admin_token(client: Any, judged: Any) -> None:
    assert (await client.get("/api/v1/admin/verdicts")).status == 401


def test_the_command_lists_verdicts_and_never_seen(cli: Any, judged: Any) -> None:
    def run(*args: str) -> Any:
        return cli("devices", "verdicts", *args)

    r = run("--school", A, "--kind", "chromebook")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["school", "kind", "class", "verdict", "used/judged", "last", "seen", "(UTC)",
                                "serial:", "why"]
    assert [line.split()[:6] for line in lines[1:]] == [
        [A, "chromebook", "CP-A", "irregular", "6/20", "2026-11-06T15:00:00Z"],
        [A, "chromebook", "CP-A", "irregular", "3/20", "2026-11-06T15:00:00Z"],
        [A, "chromebook", "CP-A", "too_new", "1/3", "never"],
        [A, "chromebook", "-", "too_new", "0/0", "never"]]
    assert lines[1].endswith("A-CB-01: low use: used in class on 6 of its last 20 school days; used out of hours "
                             "on 2 days (not counted)")
    assert "A-CB-10: not judged yet: 0 school days since enrolment" in lines[4]
    r = run("--never-seen")
    assert r.returncode == 0, r.stderr
    assert [line.split(": ", 1)[0].split()[-1] for line in r.stdout.splitlines()[1:]] == [
        "A-CB-03", "A-CB-10", "A-PC-09", "A-HD-07", "A-LP-04", "A-LP-11"]
    r = run("--school", "0219999Z")
    assert r.returncode != 0 and "no school '0219999Z'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run("--kind", "tablet")
    assert r.returncode == 2 and "invalid choice: 'tablet'" in r.stderr


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"direction:{password}".encode()).decode()}


async def test_the_report_page_opens_with_the_report_token(aiohttp_client: Any, make_settings: Any,
                                                           judged: Any) -> None:
    app = await aiohttp_client(create_app(make_settings(report_token="report-read-only")))
    resp = await app.get("/report", params=PERIOD)
    # No token: a Basic challenge, so a browser asks for it.
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith('Basic realm="tice report"')
    assert (await app.get("/report", params=PERIOD, headers=basic("wrong"))).status == 401
    page = await app.get("/report", params=PERIOD, headers=basic("report-read-only"))
    assert page.status == 200 and page.content_type == "text/html", await page.text()
    html = await page.text()
    assert '<html lang="fr">' in html and "Au placard" in html
    assert 'data-school="" data-kind="all"' in html and "A-PC-09" in html
    # The same figures as the API's JSON, on either token.
    api = await (await app.get("/api/v1/reports/usage", params=PERIOD, headers=ADMIN)).json()
    city = next(r for r in api["rows"] if r["school"] == "" and r["kind"] == "all" and r["week"] is None)
    assert city["devices"] == 12 and 'data-col="devices" data-value="12"' in html
    as_json = await app.get("/report", params={**PERIOD, "format": "json", "school": D},
                            headers={"Authorization": "Bearer report-read-only"})
    assert as_json.status == 200 and (await as_json.json())["scope"] == D
    assert (await app.get("/report", params=PERIOD, headers=ADMIN)).status == 200
    # Read-only: the report token opens the page and nothing else.
    for path in ("/api/v1/reports/usage", "/api/v1/admin/verdicts", "/api/v1/admin/devices"):
        assert (await app.get(path, headers={"Authorization": "Bearer report-read-only"})).status == 401, path
    bad = await app.get("/report", params={"from": "2026-10-19", "to": "2026-10-30"}, headers=basic("report-read-only"))
    assert bad.status == 400 and (await bad.json())["error"] == "empty_period"


async def test_the_report_page_is_off_without_any_token(aiohttp_client: Any, make_settings: Any, judged: Any) -> None:
    app = await aiohttp_client(create_app(make_settings(admin_token="")))
    resp = await app.get("/report", params=PERIOD)
    assert resp.status == 403 and (await resp.json())["error"] == "report_disabled"
