"""The database goes away and comes back: 503 + Retry-After meanwhile, never a 500 or a hang."""

from __future__ import annotations

import asyncio
import contextlib

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
    settings = msgspec.structs.replace(load_settings(environ={}), database_url=url, db_timeout_s=2.0, writer_lock_timeout_s=1.0,
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


@pytest.mark.slow  # stops and restarts a PostgreSQL server
async def test_an_outage_is_one_pool_log_line_each_way_not_a_traceback_every_few_seconds(data_root, caplog):
    import asyncpg

    from tice_collector.db.outage import pool_outage_log

    caplog.set_level("INFO", logger="tice.db")
    admin_url, server = await asyncio.to_thread(pg.start_server, data_root, "stop")
    outage = pool_outage_log()
    pool = await asyncpg.create_pool(admin_url, min_size=2, max_size=4, init=outage.connected)
    try:
        await asyncio.to_thread(server.cleanup)  # the database stops
        failures_before = outage.dropped

        async def floor_retried_twice() -> int | None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                async with pool.acquire(timeout=2) as conn:  # each try makes the pool restore its floor
                    await conn.fetchval("SELECT 1")
            return outage.dropped - failures_before if outage.dropped - failures_before >= 2 else None

        await wait_until(floor_retried_twice, "the pool to fail restoring its connections three times")
        down = [r for r in caplog.records if "the connection pool cannot reconnect" in r.getMessage()]
        assert len(down) == 1, [r.getMessage() for r in down]
        assert down[0].exc_info is None and down[0].levelname == "WARNING"
        assert "retrying quietly until it is back" in down[0].getMessage()
        assert not [r for r in caplog.records if r.name == "asyncpg.pool"]

        admin_url, server = await asyncio.to_thread(pg.start_server, data_root, "stop")  # it comes back

        async def back() -> bool:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                async with pool.acquire(timeout=2) as conn:
                    return bool(await conn.fetchval("SELECT 1"))
            return False

        await wait_until(back, "a pooled connection once the database is back")
        again = [r for r in caplog.records if "the connection pool reconnected" in r.getMessage()]
        assert len(again) == 1 and not outage.down
    finally:
        await pool.close()
        await asyncio.to_thread(server.cleanup)
