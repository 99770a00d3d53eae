"""A stalled database: requests are answered 503 + Retry-After in bounded time, then recover."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import pytest

from tests.helpers import add_school, auth, enroll, usage_batch, wait_until
from tice_collector.app import create_app


@pytest.mark.slow  # waits out the commit timeout
async def test_full_queue_and_slow_commit_answer_503_not_hang(aiohttp_client, make_settings, db, database_url):
    settings = make_settings(writer_queue_max=2, writer_tasks=1, writer_commit_timeout_s=1.0,
                             rate_limit_per_minute=100000, rate_limit_burst=100000)
    client = await aiohttp_client(create_app(settings))
    secret = await add_school(db)
    devices = [await enroll(client, secret, serial=f"SN-{i}") for i in range(12)]

    blocker = await asyncpg.connect(database_url)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE usage_records IN ACCESS EXCLUSIVE MODE")  # the database stalls
    try:
        # Answered, not hung: every request is answered while the lock is still held (the client
        # would give up after 60 s; the commit timeout is 1 s).
        responses = await asyncio.gather(*(
            client.post("/api/v1/reports", json=usage_batch(d["device_id"], 5), headers=auth(d["token"]),
                        timeout=aiohttp.ClientTimeout(total=60))
            for d in devices))
        statuses = sorted(r.status for r in responses)
        assert set(statuses) == {503}, statuses
        codes = {(await r.json())["error"] for r in responses}
        assert codes == {"overloaded", "unavailable"}  # queue full at once; queued ones time out
        assert all(int(r.headers["Retry-After"]) >= 1 for r in responses)
    finally:
        await tx.rollback()
        await blocker.close()
    # Once the database moves again, reports go through again.
    for d in devices:
        async def stored(d: dict = d) -> bool:
            resp = await client.post("/api/v1/reports", json=usage_batch(d["device_id"], 5), headers=auth(d["token"]))
            return resp.status == 200

        await wait_until(stored, f"a 200 for {d['device_id']} once the database moves again")
    assert await db.fetchval("SELECT count(*) FROM usage_records") >= 12 * 5
