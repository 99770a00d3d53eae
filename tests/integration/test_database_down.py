"""The database goes away and comes back: 503 + Retry-After meanwhile, never a 500 or a hang."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from tests import pg
from tests.helpers import add_school, auth, enroll, usage_batch, wait_until
from tice_collector.app import create_app, prepare_database
from tice_collector.settings import load_settings


@pytest.mark.slow  # stops and restarts a PostgreSQL server
async def test_outage_answers_503_then_recovers(aiohttp_client, data_root):
    import aiohttp
    import asyncpg

    admin_url, server = await asyncio.to_thread(pg.start_server, data_root, "stop")
    name = await pg.create_database(admin_url)
    url = pg.with_database(admin_url, name)
    await prepare_database(url, 6)
    settings = msgspec.structs.replace(load_settings(environ={}), database_url=url, db_timeout_s=2.0,
                                       auth_cache_s=600.0, pool_min_size=1)
    client = await aiohttp_client(create_app(settings))
    conn = await asyncpg.connect(url)
    secret = await add_school(conn)
    await conn.close()
    dev = await enroll(client, secret)
    body = usage_batch(dev["device_id"], 5)
    assert (await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))).status == 200

    await asyncio.to_thread(server.cleanup)  # the database stops
    try:
        # Answered, not hung: the client gives up long before aiohttp's default 5 minutes.
        down = await client.post("/api/v1/reports", json=usage_batch(dev["device_id"], 5, start_seq=10),
                                 headers=auth(dev["token"]), timeout=aiohttp.ClientTimeout(total=60))
        assert down.status == 503, await down.text()
        assert int(down.headers["Retry-After"]) >= 1
        assert (await down.json())["error"] == "unavailable"
        enrol = await client.post("/api/v1/enroll", json={"secret": secret, "serial": "NEW", "kind": "laptop"})
        assert enrol.status == 503
        assert (await client.get("/readyz")).status == 503
        assert (await client.get("/healthz")).status == 200
        metrics = await (await client.get("/metrics")).text()
        assert 'tice_ingest_requests_total{outcome="unavailable"} 1.0' in metrics
    finally:
        admin_url, server = await asyncio.to_thread(pg.start_server, data_root, "stop")  # it comes back
    try:
        async def accepted_again() -> dict | None:
            again = await client.post("/api/v1/reports", json=usage_batch(dev["device_id"], 5, start_seq=10),
                                      headers=auth(dev["token"]))
            return await again.json() if again.status == 200 else None

        result = await wait_until(accepted_again, "a 200 once the database is back")
        assert result["accepted"] == 5
        assert (await client.get("/readyz")).status == 200
    finally:
        await client.close()
        await asyncio.to_thread(server.cleanup)
