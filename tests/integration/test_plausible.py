"""A record that cannot be true is refused at the door (400 with its path, counted by reason),
and so is a body that repeats a key. The issue's reproduced cases, over real HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import add_school, auth, batch, enroll
from tice_collector.keys import METRICS


@pytest.fixture
async def device(client, db):
    return await enroll(client, await add_school(db))


def counted(client, name: str, **labels: str) -> float:
    return client.server.app[METRICS].registry.get_sample_value(name, labels) or 0.0


def usage(seq: int, duration: float, active: float, **parts: float) -> dict:
    at = datetime.now(UTC) - timedelta(hours=2)
    return {"type": "usage", "seq": seq, "at": at.isoformat(), "duration_s": duration, "active_s": active,
            "source": "x11", **parts}


async def refused(client, device, records: list[dict], path: str, reason: str) -> dict:
    resp = await client.post("/api/v1/reports", json=batch(device["device_id"], records), headers=auth(device["token"]))
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["error"] == "implausible" and body["detail"].endswith(f"- at `{path}`"), body
    assert counted(client, "tice_ingest_implausible_records_total", reason=reason) >= 1
    return body


async def test_an_hour_of_use_in_a_minute_is_refused(client, db, device):
    body = await refused(client, device, [usage(1, 60, 3600)], "$.records[0].active_s", "parts_exceed_interval")
    assert "= 3600 s is more than the interval's duration_s 60 s" in body["detail"]
    assert counted(client, "tice_ingest_implausible_records_total", reason="parts_exceed_interval") == 1
    assert counted(client, "tice_ingest_rejections_total", reason="implausible") == 1
    assert await db.fetchval("SELECT count(*) FROM usage_records") == 0


async def test_a_31_day_interval_is_refused(client, db, device):
    month = 31 * 86400
    body = await refused(client, device, [usage(1, month, month)], "$.records[0].duration_s", "interval_too_long")
    assert "longer than the longest interval a record may cover (7500 s)" in body["detail"]
    assert counted(client, "tice_ingest_implausible_records_total", reason="interval_too_long") == 1
    assert await db.fetchval("SELECT count(*) FROM usage_records") == 0


async def test_a_day_long_record_is_refused_however_often_it_is_sent(client, db, device):
    # The third case sends 100 records of 86,400 s for one device and day: each is
    # refused, so none can be counted (the rollup side is in test_rollup.py).
    records = [usage(i, 86400, 86400) for i in range(1, 101)]
    body = await refused(client, device, records, "$.records[0].duration_s", "interval_too_long")
    assert "(99 more implausible records in this batch)" in body["detail"]
    assert counted(client, "tice_ingest_implausible_records_total", reason="interval_too_long") == 100
    assert await db.fetchval("SELECT count(*) FROM usage_records") == 0


async def test_the_rest_of_the_batch_goes_with_the_implausible_record(client, db, device):
    # Each part fits, the sum does not: the largest part is named.
    records = [usage(1, 60, 30, idle_s=30), usage(2, 60, 20, idle_s=10, no_session_s=40)]
    await refused(client, device, records, "$.records[1].no_session_s", "parts_exceed_interval")
    assert await db.fetchval("SELECT count(*) FROM usage_records") == 0


async def test_the_rounding_tolerance_is_one_second(client, db, device):
    ok = [usage(1, 60, 30.5, idle_s=30.5), usage(2, 60.004, 12.001, idle_s=48.004, unclassified_s=0.001)]
    resp = await client.post("/api/v1/reports", json=batch(device["device_id"], ok), headers=auth(device["token"]))
    assert resp.status == 200 and (await resp.json())["accepted"] == 2
    await refused(client, device, [usage(3, 60, 30.5, idle_s=30.6)], "$.records[0].idle_s", "parts_exceed_interval")


@pytest.mark.parametrize(("record", "path", "reason"), [
    ({"type": "display", "duration_s": 60, "external_s": 3600, "external_connected": True},
     "$.records[0].external_s", "parts_exceed_interval"),
    ({"type": "display", "duration_s": 7501, "external_s": 7501, "external_connected": True},
     "$.records[0].duration_s", "interval_too_long"),
    ({"type": "modem", "up": True, "connected_s": 600, "duration_s": 60},
     "$.records[0].connected_s", "parts_exceed_interval"),
    ({"type": "modem", "up": True, "connected_s": 86400},
     "$.records[0].connected_s", "interval_too_long"),
    ({"type": "projector", "up": True, "power": "on", "duration_s": 86400},
     "$.records[0].duration_s", "interval_too_long"),
])
async def test_every_interval_field_is_checked(client, db, device, record, path, reason):
    at = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    await refused(client, device, [{**record, "seq": 1, "at": at}], path, reason)


async def test_a_repeated_key_is_refused_not_read(client, db, device):
    # The fourth case: msgspec alone keeps the last value and would store 86,400 s.
    body = json.dumps(batch(device["device_id"], [usage(1, 60, 42)]))
    body = body.replace('"active_s": 42', '"active_s": 42, "active_s": 86400')
    resp = await client.post("/api/v1/reports", data=body.encode(), headers={
        **auth(device["token"]), "Content-Type": "application/json"})
    assert resp.status == 400
    problem = await resp.json()
    assert problem["error"] == "repeated_key" and problem["detail"].endswith("- at `$.records[0].active_s`")
    assert counted(client, "tice_ingest_rejections_total", reason="repeated_key") == 1
    # In the batch itself too.
    twice = json.dumps(batch(device["device_id"], [usage(1, 60, 42)])).replace(
        '"dropped": 0', '"dropped": 0, "dropped": 5')
    resp = await client.post("/api/v1/reports", data=twice.encode(), headers={
        **auth(device["token"]), "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["detail"].endswith("- at `$.dropped`")
    assert await db.fetchval("SELECT count(*) FROM usage_records") == 0


async def test_a_repeated_key_in_an_enrolment_is_refused(client, db):
    secret = await add_school(db)
    body = json.dumps({"secret": secret, "serial": "CB-1", "kind": "laptop"})
    body = body.replace('"serial": "CB-1"', '"serial": "CB-1", "serial": "CB-2"')
    resp = await client.post("/api/v1/enroll", data=body.encode(), headers={"Content-Type": "application/json"})
    assert resp.status == 400
    problem = await resp.json()
    assert problem["error"] == "repeated_key" and problem["detail"].endswith("- at `$.serial`")
    assert await db.fetchval("SELECT count(*) FROM devices") == 0
