"""Slow and abusive clients: stalled connections are closed by their bound, enrolment is limited,
and every 503 is counted."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import psutil
import pytest

from tests.helpers import CollectorProcess, add_school, auth, enroll, usage_batch, wait_until
from tice_collector.app import create_app
from tice_collector.keys import METRICS

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only

BODY_TIMEOUT_S = 30  # generous: opening 200 connections on a loaded machine takes a while


async def _stall(port: int, head: bytes, tail: bytes) -> bytes:
    """Send `head` + `tail`, then nothing; return what comes back until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + tail)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout=BODY_TIMEOUT_S + 120)
    finally:
        writer.close()


def _request(path: str, token: str | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: collector", "Content-Type: application/json", "Content-Length: 1000"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_200_stalled_connections_are_closed_by_the_bound_and_readyz_answers(database_url, db):
    secret = await add_school(db)
    collector = CollectorProcess(env={
        "TICE_DATABASE_URL": database_url, "TICE_JOBS_ENABLED": "false", "TICE_LOG_LEVEL": "warning",
        "TICE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S), "TICE_HEADER_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "TICE_RATE_LIMIT_BURST": "100000", "TICE_ENROLL_PER_ADDRESS_BURST": "100000"})
    try:
        await collector.wait_ready()
        server = psutil.Process(collector.proc.pid)
        async with aiohttp.ClientSession() as http:
            async with http.post(collector.url + "/api/v1/enroll",
                                 json={"secret": secret, "serial": "SLOW-1", "kind": "laptop"}) as r:
                token = (await r.json())["token"]
            async with http.get(collector.url + "/metrics") as r:
                assert r.status == 200

            def clients() -> int:
                """Connections the collector holds on its listening port."""
                return sum(1 for c in server.net_connections(kind="tcp")
                           if c.laddr and c.laddr.port == collector.port and c.status != psutil.CONN_LISTEN)

            half_body = b'{"device_id": "' + b"x" * 485  # 500 of the 1000 bytes announced
            reports = [asyncio.create_task(_stall(collector.port, _request("/api/v1/reports", token), half_body))
                       for _ in range(80)]
            enrols = [asyncio.create_task(_stall(collector.port, _request("/api/v1/enroll"), half_body))
                      for _ in range(80)]
            half_head = _request("/api/v1/reports", token)[:40]
            heads = [asyncio.create_task(_stall(collector.port, half_head, b"")) for _ in range(40)]
            stalls = reports + enrols + heads
            await wait_until(lambda: clients() >= 200, "the 200 stalled connections to open")
            async with http.get(collector.url + "/readyz", timeout=aiohttp.ClientTimeout(total=60)) as r:
                ready = r.status
            closed_already = sum(t.done() for t in stalls)
            answers = await asyncio.gather(*stalls)
        assert ready == 200
        assert closed_already == 0, "/readyz was asked while the stalled connections were open"
        # Closed by the bound: the body ones were told why, the header ones just closed.
        for answer in answers[:160]:
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b'"error":"body_timeout"' in answer and b"Connection: close" in answer
        assert answers[160:] == [b""] * 40
        await wait_until(lambda: clients() == 0, "the collector to hold no client connection")
        async with aiohttp.ClientSession() as http, http.get(collector.url + "/metrics") as r:
            text = await r.text()
        assert 'tice_ingest_rejections_total{reason="body_timeout"} 80.0' in text
        assert 'tice_enroll_total{outcome="body_timeout"} 80.0' in text
    finally:
        code, err = collector.stop()
    assert code == 0 and "Traceback" not in err, err


async def test_enrolment_attempts_are_limited_per_address(aiohttp_client, make_settings, db):
    client = await aiohttp_client(create_app(make_settings(enroll_per_address_per_minute=6,
                                                           enroll_per_address_burst=3)))
    secret = await add_school(db)
    statuses = []
    for i in range(5):
        resp = await client.post("/api/v1/enroll", json={"secret": "tice_enr_guess-" + str(i), "serial": "S",
                                                         "kind": "laptop"})
        statuses.append(resp.status)
    assert statuses == [401, 401, 401, 429, 429]
    assert int(resp.headers["Retry-After"]) >= 1 and (await resp.json())["error"] == "rate_limited"
    # The good secret from the same address waits too: the limit is the address's.
    resp = await client.post("/api/v1/enroll", json={"secret": secret, "serial": "S", "kind": "laptop"})
    assert resp.status == 429
    metric = client.server.app[METRICS].registry.get_sample_value
    assert metric("tice_enroll_total", {"outcome": "rate_limited"}) == 3
    assert await db.fetchval("SELECT count(*) FROM devices") == 0


async def test_enrolment_attempts_are_limited_per_secret(aiohttp_client, make_settings, db):
    # Behind a proxy: the address is the one the proxy passes.
    client = await aiohttp_client(create_app(make_settings(client_ip_header="X-Real-IP", enroll_per_secret_burst=3,
                                                           enroll_per_address_burst=3)))
    secret, other = await add_school(db), await add_school(db)
    statuses = []
    for i in range(5):
        resp = await client.post("/api/v1/enroll", headers={"X-Real-IP": f"192.0.2.{i}"},
                                 json={"secret": secret, "serial": f"CB-{i}", "kind": "chromebook"})
        statuses.append(resp.status)
    assert statuses == [201, 201, 201, 429, 429]
    resp = await client.post("/api/v1/enroll", headers={"X-Real-IP": "192.0.2.9"},
                             json={"secret": other, "serial": "CB-9", "kind": "chromebook"})
    assert resp.status == 201  # another secret has its own allowance


async def test_a_secret_creates_at_most_its_cap_of_devices(aiohttp_client, make_settings, db):
    client = await aiohttp_client(create_app(make_settings(enroll_secret_max_devices=2)))
    secret = await add_school(db)
    first = await enroll(client, secret, serial="CB-1")
    await enroll(client, secret, serial="CB-2")
    resp = await client.post("/api/v1/enroll", json={"secret": secret, "serial": "CB-3", "kind": "laptop"})
    assert resp.status == 403
    body = await resp.json()
    assert body["error"] == "secret_exhausted" and "enroll-secret create --school 0210001A" in body["detail"]
    again = await enroll(client, secret, serial="CB-1")  # re-enrolling a known device creates nothing
    assert again["device_id"] == first["device_id"]
    assert await db.fetchval("SELECT devices_created FROM enroll_secrets") == 2
    assert (await enroll(client, await add_school(db), serial="CB-3"))["device_id"]  # a new secret goes on


@pytest.mark.parametrize("cache_s", [0.0, 600.0])
async def test_every_503_of_an_outage_is_counted(aiohttp_client, make_settings, db, pg_admin_url, cache_s):
    """The token lookup's 503s were counted nowhere (640 of 701 answers in an outage)."""
    client = await aiohttp_client(create_app(make_settings(auth_cache_s=cache_s, db_timeout_s=2.0, writer_lock_timeout_s=1.0)))
    secret = await add_school(db)
    dev = await enroll(client, secret)
    name = await db.fetchval("SELECT current_database()")
    admin = await asyncpg.connect(pg_admin_url)
    # The database refuses every new connection, and the collector's are cut: an outage.
    await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
    try:
        for i in range(5):
            resp = await client.post("/api/v1/reports", json=usage_batch(dev["device_id"], 1, start_seq=i),
                                     headers=auth(dev["token"]))
            assert resp.status == 503, await resp.text()
        resp = await client.post("/api/v1/enroll", json={"secret": secret, "serial": "NEW", "kind": "laptop"})
        assert resp.status == 503
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
    metric = client.server.app[METRICS].registry.get_sample_value
    assert metric("tice_ingest_requests_total", {"outcome": "unavailable"}) == 5
    assert metric("tice_ingest_rejections_total", {"reason": "unavailable"}) == 5
    assert metric("tice_enroll_total", {"outcome": "unavailable"}) == 1
