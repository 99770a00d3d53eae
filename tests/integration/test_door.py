"""Extreme times and odd input never give a 5xx (each case was once a 500 or a 503)."""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import add_school, auth, batch, enroll, usage
from tice_collector.keys import METRICS

ADMIN = auth("admin-secret-token")


@pytest.fixture
async def device(client, db):
    return await enroll(client, await add_school(db))


async def problem(resp, status: int, code: str) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"] == code, body
    return body


@pytest.mark.parametrize(("sent_at", "at", "reason"), [
    ("9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+00:00", "too_old"),
    ("0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00", "future_timestamp"),
    # Times Python holds but UTC cannot: year 1 east of Greenwich, year 9999 west of it.
    ("0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00+01:00", "too_old"),
    ("9999-12-31T23:30:00-01:00", "9999-12-31T23:30:00-01:00", "future_timestamp"),
])
async def test_times_past_the_calendar_are_rejected_per_record(client, db, device, sent_at, at, reason):
    now = datetime.now(UTC)
    body = batch(device["device_id"], [usage(1, now), {**usage(2, now), "at": at}])
    body["sent_at"] = sent_at
    resp = await client.post("/api/v1/reports", json=body, headers=auth(device["token"]))
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    # The good record is judged by the same (absurd) clock offset; the extreme one never
    # reaches the database.
    assert result["rejections"][-1] == {"seq": 2, "reason": reason}
    assert result["accepted"] + result["rejected"] == 2
    assert await db.fetchval("SELECT count(*) FROM usage_records WHERE seq = 2") == 0


async def test_a_boot_time_utc_cannot_hold_rejects_its_record_alone(client, db, device):
    now = datetime.now(UTC)
    health = {"type": "health", "seq": 2, "at": now.isoformat(), "boot_at": "0001-01-01T00:30:00+01:00"}
    resp = await client.post("/api/v1/reports", json=batch(device["device_id"], [usage(1, now), health]),
                             headers=auth(device["token"]))
    result = await resp.json()
    assert (resp.status, result["accepted"], result["rejections"]) == (200, 1, [{"seq": 2, "reason": "too_old"}])


async def test_nul_in_a_serial_or_a_query_is_400_and_no_outage(client, db, caplog):
    secret = await add_school(db)
    with caplog.at_level(logging.INFO):
        resp = await client.post("/api/v1/enroll", json={"secret": secret, "serial": "CB\u0000001", "kind": "laptop"})
        body = await problem(resp, 400, "invalid")
        assert "U+0000" in body["detail"] and "$.serial" in body["detail"]
        await problem(await client.get("/api/v1/admin/devices?school=%00", headers=ADMIN), 400, "invalid")
        now = datetime.now(UTC).isoformat()
        dev = await enroll(client, secret)
        probe = {"type": "probe", "seq": 1, "at": now, "probe": "usage\u0000", "ok": True, "duration_s": 0.1}
        resp = await client.post("/api/v1/reports", json=batch(dev["device_id"], [probe]), headers=auth(dev["token"]))
        assert "$.records[0].probe" in (await problem(resp, 400, "invalid"))["detail"]
    assert "database unavailable" not in caplog.text


@pytest.mark.parametrize("query", ["limit=²", "limit=１０", "offset=-1", "limit=10001", "limit=1e3", "limit=",
                                   "school=0210001", "sort=serial"])
async def test_admin_query_is_parsed_strictly(client, query):
    await problem(await client.get(f"/api/v1/admin/devices?{query}", headers=ADMIN), 400, "invalid")


async def test_admin_query_within_bounds_is_served(client, device):
    resp = await client.get("/api/v1/admin/devices?school=0210001a&limit=10&offset=0", headers=ADMIN)
    assert resp.status == 200
    assert [d["serial"] for d in (await resp.json())["devices"]] == ["SN-0001"]


@pytest.mark.parametrize("encoding", ["br", "zstd", "foo", "gzip, gzip", "compress"])
async def test_every_unsupported_encoding_is_a_json_415(client, db, device, encoding):
    for path in ("/api/v1/reports", "/api/v1/enroll"):
        resp = await client.post(path, data=gzip.compress(b"{}"), headers={
            **auth(device["token"]), "Content-Type": "application/json", "Content-Encoding": encoding})
        body = await problem(resp, 415, "unsupported_encoding")
        assert "gzip, deflate, identity" in body["detail"]
        assert resp.headers["Accept-Encoding"] == "gzip, deflate"
    assert await db.fetchval("SELECT count(*) FROM usage_records") == 0


def _gzip_body(device_id: str) -> bytes:
    return gzip.compress(json.dumps(batch(device_id, [usage(1, datetime.now(UTC))])).encode())


@pytest.mark.parametrize("corrupt", ["truncated", "no_trailer", "trailing_bytes", "garbage"])
async def test_every_corrupt_body_is_bad_encoding(client, db, device, corrupt):
    whole = _gzip_body(device["device_id"])
    data = {"truncated": whole[: len(whole) // 2], "no_trailer": whole[:-8], "trailing_bytes": whole + b"xyz",
            "garbage": b"\x1f\x8b\x08\x00garbage"}[corrupt]
    resp = await client.post("/api/v1/reports", data=data, headers={
        **auth(device["token"]), "Content-Type": "application/json", "Content-Encoding": "gzip"})
    await problem(resp, 400, "bad_encoding")
    assert await db.fetchval("SELECT count(*) FROM usage_records") == 0
    value = client.server.app[METRICS].registry.get_sample_value("tice_ingest_rejections_total",
                                                                 {"reason": "bad_encoding"})
    assert value == 1


async def test_gzip_and_deflate_bodies_are_read(client, db, device):
    raw = json.dumps(batch(device["device_id"], [usage(1, datetime.now(UTC))])).encode()
    for encoding, data in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw)), ("identity", raw)):
        resp = await client.post("/api/v1/reports", data=data, headers={
            **auth(device["token"]), "Content-Type": "application/json", "Content-Encoding": encoding})
        assert resp.status == 200, (encoding, await resp.text())
    assert await db.fetchval("SELECT count(*) FROM usage_records") == 1  # the same record thrice


async def test_405_names_the_allowed_methods(client):
    resp = await client.get("/api/v1/reports")
    await problem(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "POST"
    resp = await client.delete("/api/v1/admin/devices", headers=ADMIN)
    await problem(resp, 405, "method_not_allowed")
    assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}


async def test_an_integer_written_with_a_zero_fraction_is_an_integer(client, db, device):
    # The OpenAPI document says integer, and JSON Schema counts 1172.0 as one.
    now = datetime.now(UTC)
    modem = {"type": "modem", "seq": 1172.0, "at": now.isoformat(), "up": True, "tx_bytes": 3281546.0}
    resp = await client.post("/api/v1/reports", json=batch(device["device_id"], [modem], dropped=3.0),
                             headers=auth(device["token"]))
    assert resp.status == 200, await resp.text()
    row = await db.fetchrow("SELECT seq, tx_bytes FROM modem_records")
    assert (row["seq"], row["tx_bytes"]) == (1172, 3281546)
    # A fraction is still not an integer.
    modem = {**modem, "seq": 1172.5}
    resp = await client.post("/api/v1/reports", json=batch(device["device_id"], [modem]), headers=auth(device["token"]))
    assert "$.records[0].seq" in (await problem(resp, 400, "invalid"))["detail"]


async def test_a_float_bound_still_holds_after_the_integer_reading(client, device):
    modem = {"type": "modem", "seq": 1e300, "at": datetime.now(UTC).isoformat(), "up": True}
    resp = await client.post("/api/v1/reports", json=batch(device["device_id"], [modem]), headers=auth(device["token"]))
    await problem(resp, 400, "invalid")


async def test_records_past_the_window_are_still_partial_success(client, db, device):
    now = datetime.now(UTC)
    body = batch(device["device_id"], [usage(1, now), usage(2, now + timedelta(days=3650))])
    result = await (await client.post("/api/v1/reports", json=body, headers=auth(device["token"]))).json()
    assert (result["accepted"], result["rejections"]) == (1, [{"seq": 2, "reason": "future_timestamp"}])
