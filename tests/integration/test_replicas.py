"""Two collector processes on one database: each job slot runs once, and both serve the same
fleet figures on /metrics."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import CollectorProcess, add_school, auth, usage_batch, wait_until

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only

FLEET_PREFIXES = ("tice_devices", "tice_classes", "tice_school", "tice_calendar", "tice_device_",
                  "tice_fleet_snapshot")


def fleet_samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.name.startswith(FLEET_PREFIXES)}


def job_counts(text: str) -> dict:
    return {(s.labels["job"], s.labels["outcome"]): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.name == "tice_job_runs_total"}


async def test_two_replicas_share_jobs_and_agree_on_metrics(database_url, db):
    env = {"TICE_DATABASE_URL": database_url, "TICE_ROLLUP_INTERVAL_S": "1", "TICE_SNAPSHOT_INTERVAL_S": "1",
           "TICE_DETECT_INTERVAL_S": "1", "TICE_SNAPSHOT_CACHE_S": "0"}
    replicas = [CollectorProcess(env=env), CollectorProcess(env=env)]
    try:
        await asyncio.gather(*(r.wait_ready() for r in replicas))
        secret = await add_school(db)
        async with aiohttp.ClientSession() as http:
            for i, replica in enumerate(replicas):  # each replica enrols and ingests a device
                async with http.post(replica.url + "/api/v1/enroll",
                                     json={"secret": secret, "serial": f"R-{i}", "kind": "chromebook"}) as r:
                    dev = await r.json()
                async with http.post(replica.url + "/api/v1/reports", json=usage_batch(dev["device_id"], 5),
                                     headers=auth(dev["token"])) as r:
                    assert r.status == 200
            enrolled = time.time()

            async def a_few_slots_each() -> bool:
                rows = await db.fetch("SELECT job, count(DISTINCT slot) AS n FROM job_runs GROUP BY job")
                slots = {r["job"]: r["n"] for r in rows}
                return all(slots.get(job, 0) >= 3 for job in ("rollup", "detect", "snapshot"))

            await wait_until(a_few_slots_each, "three 1-second slots run for every job", timeout=120)

            # The snapshot is refreshed every second: compare two reads of the same snapshot, one
            # taken after both devices enrolled (on a slow machine the slots above may all precede it).
            async def same_snapshot() -> list[str] | None:
                texts = []
                for replica in replicas:
                    async with http.get(replica.url + "/metrics") as r:
                        texts.append(await r.text())
                stamps = {fleet_samples(t).get(("tice_fleet_snapshot_timestamp_seconds", ())) for t in texts}
                stamp = stamps.pop() if len(stamps) == 1 else None
                return texts if stamp is not None and stamp >= enrolled else None

            texts = await wait_until(same_snapshot, "both replicas to serve the same snapshot, taken after "
                                     "the enrolments", every=0.02)
    finally:
        for replica in replicas:
            replica.stop()

    rows = await db.fetch("SELECT job, count(*) AS n, count(DISTINCT slot) AS slots, "
                          "extract(epoch FROM max(slot) - min(slot)) AS span FROM job_runs GROUP BY job")
    runs = {r["job"]: r for r in rows}
    assert set(runs) >= {"rollup", "detect", "snapshot", "retention"}
    assert runs["retention"]["n"] == 1  # one daily slot, two replicas: run once
    counts = [job_counts(t) for t in texts]
    for job in ("rollup", "detect", "snapshot"):
        r = runs[job]
        # One run per 1-second slot, not one per replica per slot.
        assert r["n"] == r["slots"] <= r["span"] + 1, (job, dict(r))
        ran = sum(c.get((job, "ok"), 0) + c.get((job, "error"), 0) for c in counts)
        assert 0 < ran <= r["n"]  # the runs both processes report are the recorded ones
    assert sum(c.get((job, "skipped"), 0) for c in counts for job in ("rollup", "snapshot")) > 0
    # Both replicas export the same fleet figures, read from the same snapshot row.
    a, b = fleet_samples(texts[0]), fleet_samples(texts[1])
    assert a and a == b
    assert a[("tice_devices_enrolled", (("kind", "chromebook"), ("school", "0210001A")))] == 2
