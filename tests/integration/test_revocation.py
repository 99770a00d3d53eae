"""`tice-collector devices revoke` takes effect at once on every running collector, not after
their token caches expire."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.helpers import CollectorProcess, add_school, auth, usage_batch, wait_until

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only

CACHE_S = "600"  # ten minutes: anything quicker than that is the notification, not the cache


async def test_cli_revocation_reaches_every_collector_at_once(database_url, db, cli):
    secret = await add_school(db)
    env = {"TICE_DATABASE_URL": database_url, "TICE_AUTH_CACHE_S": CACHE_S, "TICE_JOBS_ENABLED": "false",
           "TICE_LOG_LEVEL": "warning"}
    replicas = [CollectorProcess(env=env), CollectorProcess(env=env)]
    try:
        for replica in replicas:
            await replica.wait_ready()
        async with aiohttp.ClientSession() as http:
            async with http.post(replicas[0].url + "/api/v1/enroll",
                                 json={"secret": secret, "serial": "LP-REVOKED", "kind": "laptop"}) as r:
                device = await r.json()
            seq = 0

            async def report(replica: CollectorProcess) -> int:
                nonlocal seq
                seq += 1
                async with http.post(replica.url + "/api/v1/reports", headers=auth(device["token"]),
                                     json=usage_batch(device["device_id"], 1, start_seq=seq)) as r:
                    return r.status

            for replica in replicas:  # both now hold the token in their cache
                assert await report(replica) == 200
            revoked = await asyncio.to_thread(cli, "devices", "revoke", device["device_id"])
            assert revoked.returncode == 0, revoked.stderr
            for replica in replicas:
                async def refused(replica: CollectorProcess = replica) -> bool:
                    return await report(replica) == 401

                await wait_until(refused, f"{replica.url} to refuse the revoked token", timeout=60)
    finally:
        for replica in replicas:
            code, err = replica.stop()
            assert code == 0 and "Traceback" not in err, err
