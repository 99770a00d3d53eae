"""Every kind of bad input gets a precise 4xx, is counted by reason, and stores nothing."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import add_school, auth, batch, enroll, usage, usage_batch
from tice_collector.app import create_app
from tice_collector.keys import METRICS


@pytest.fixture
async def device(client, db):
    secret = await add_school(db)
    return await enroll(client, secret)


def rejections(client, reason: str) -> float:
    value = client.server.app[METRICS].registry.get_sample_value(
        "tice_ingest_rejections_total", {"reason": reason})
    return value or 0.0


async def post_raw(client, token: str, data: bytes, **headers: str):
    return await client.post("/api/v1/reports", data=data, headers={
        **auth(token), "Content-Type": "application/json", **headers})


async def assert_problem(resp, status: int, code: str) -> dict:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error"] == code, body
    assert body["detail"]
    return body


async def assert_nothing_stored(db):
    assert await db.fetchval("SELECT count(*) FROM usage_records") == 0


async def test_body_over_limit_after_decompression_is_413(aiohttp_client, make_settings, db):
    client = await aiohttp_client(create_app(make_settings(max_body_bytes=64 * 1024)))
    dev = await enroll(client, await add_school(db))
    # 2 KiB on the wire, 50 MiB once inflated: the limit must count the inflated bytes.
    bomb = gzip.compress(b" " * (50 * 1024 * 1024))
    assert len(bomb) < 100_000
    resp = await post_raw(client, dev["token"], bomb, **{"Content-Encoding": "gzip"})
    await assert_problem(resp, 413, "body_too_large")
    plain = await post_raw(client, dev["token"], b" " * (64 * 1024 + 1))
    await assert_problem(plain, 413, "body_too_large")
    assert rejections(client, "body_too_large") == 2
    await assert_nothing_stored(db)


async def test_malformed_json_is_400(client, db, device):
    resp = await post_raw(client, device["token"], b'{"device_id": ')
    await assert_problem(resp, 400, "malformed_json")
    assert rejections(client, "malformed_json") == 1


async def test_corrupt_gzip_is_400(client, db, device):
    resp = await post_raw(client, device["token"], b"\x1f\x8b\x08\x00garbage", **{"Content-Encoding": "gzip"})
    assert resp.status == 400, await resp.text()
    await assert_nothing_stored(db)


async def test_wrong_type_names_the_field(client, db, device):
    body = usage_batch(device["device_id"], 3)
    body["records"][2]["active_s"] = "lots"
    resp = await client.post("/api/v1/reports", json=body, headers=auth(device["token"]))
    problem = await assert_problem(resp, 400, "invalid")
    assert "$.records[2].active_s" in problem["detail"]
    assert rejections(client, "invalid") == 1
    await assert_nothing_stored(db)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_non_finite_numbers_are_400(client, db, device, literal):
    text = json.dumps(usage_batch(device["device_id"], 1)).replace('"active_s": 30.0', f'"active_s": {literal}')
    assert literal in text
    resp = await post_raw(client, device["token"], text.encode())
    assert resp.status == 400, await resp.text()
    await assert_nothing_stored(db)


async def test_unknown_record_type_and_unknown_field_are_400(client, db, device):
    body = usage_batch(device["device_id"], 1)
    body["records"][0]["type"] = "keystrokes"
    await assert_problem(await client.post("/api/v1/reports", json=body, headers=auth(device["token"])),
                         400, "invalid")
    body = usage_batch(device["device_id"], 1)
    body["records"][0]["window_title"] = "Homework - Firefox"
    problem = await assert_problem(
        await client.post("/api/v1/reports", json=body, headers=auth(device["token"])), 400, "invalid")
    assert "window_title" in problem["detail"]


async def test_oversized_string_is_400(client, db, device):
    now = datetime.now(UTC).isoformat()
    rec = {"type": "probe", "seq": 1, "at": now, "probe": "x" * 65, "ok": True, "duration_s": 0.1}
    resp = await client.post("/api/v1/reports", json=batch(device["device_id"], [rec]),
                             headers=auth(device["token"]))
    problem = await assert_problem(resp, 400, "invalid")
    assert "$.records[0].probe" in problem["detail"]


async def test_naive_timestamp_is_400(client, db, device):
    body = usage_batch(device["device_id"], 1)
    body["records"][0]["at"] = "2026-11-28T10:00:00"
    problem = await assert_problem(await client.post("/api/v1/reports", json=body, headers=auth(device["token"])),
                                   400, "invalid")
    assert "timezone" in problem["detail"]


async def test_too_many_records_is_400(client, db, device):
    body = usage_batch(device["device_id"], 5001)
    await assert_problem(await client.post("/api/v1/reports", json=body, headers=auth(device["token"])),
                         400, "invalid")


async def test_future_and_too_old_records_are_rejected_alone(client, db, device):
    now = datetime.now(UTC)
    records = [usage(1, now - timedelta(minutes=1)),
               usage(2, now + timedelta(minutes=11)),      # beyond the 10-minute future skew
               usage(3, now - timedelta(days=101)),        # beyond the 100-day maximum age
               usage(4, now - timedelta(days=99))]         # old but allowed (a sleeping laptop)
    resp = await client.post("/api/v1/reports", json=batch(device["device_id"], records),
                             headers=auth(device["token"]))
    assert resp.status == 200
    result = await resp.json()
    assert (result["accepted"], result["rejected"]) == (2, 2)
    assert {(r["seq"], r["reason"]) for r in result["rejections"]} == {(2, "future_timestamp"), (3, "too_old")}
    assert sorted(r["seq"] for r in await db.fetch("SELECT seq FROM usage_records")) == [1, 4]
    assert rejections(client, "future_timestamp") == 1 and rejections(client, "too_old") == 1


async def test_missing_unknown_and_revoked_tokens_are_401(client, db, device):
    body = usage_batch(device["device_id"], 1)
    resp = await client.post("/api/v1/reports", json=body)
    await assert_problem(resp, 401, "missing_token")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.post("/api/v1/reports", json=body, headers=auth("tice_dev_not-a-real-token"))
    await assert_problem(resp, 401, "invalid_token")
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    # Revoke through the admin API: the very next request fails.
    assert (await client.post("/api/v1/reports", json=body, headers=auth(device["token"]))).status == 200
    revoke = await client.post(f"/api/v1/admin/devices/{device['device_id']}/revoke",
                               headers=auth("admin-secret-token"))
    assert revoke.status == 200
    resp = await client.post("/api/v1/reports", json=body, headers=auth(device["token"]))
    await assert_problem(resp, 401, "invalid_token")
    assert rejections(client, "invalid_token") == 2


async def test_batch_for_another_device_is_403(client, db, device):
    other = await enroll(client, await add_school(db), serial="SN-OTHER")
    body = usage_batch(other["device_id"], 2)
    resp = await client.post("/api/v1/reports", json=body, headers=auth(device["token"]))
    await assert_problem(resp, 403, "wrong_device")
    assert rejections(client, "wrong_device") == 1
    await assert_nothing_stored(db)


async def test_per_device_rate_limit_is_429(aiohttp_client, make_settings, db):
    client = await aiohttp_client(create_app(make_settings(rate_limit_per_minute=6, rate_limit_burst=3)))
    secret = await add_school(db)
    noisy = await enroll(client, secret, serial="SN-NOISY")
    calm = await enroll(client, secret, serial="SN-CALM")
    statuses = []
    for i in range(5):
        resp = await client.post("/api/v1/reports", json=usage_batch(noisy["device_id"], 1, start_seq=i),
                                 headers=auth(noisy["token"]))
        statuses.append(resp.status)
    assert statuses == [200, 200, 200, 429, 429]
    assert int(resp.headers["Retry-After"]) >= 1
    # Another device is not affected by its neighbour's bucket.
    resp = await client.post("/api/v1/reports", json=usage_batch(calm["device_id"], 1), headers=auth(calm["token"]))
    assert resp.status == 200
    assert rejections(client, "rate_limited") == 2


async def test_wrong_content_type_is_415(client, db, device):
    resp = await client.post("/api/v1/reports", data=b"a=b", headers={
        **auth(device["token"]), "Content-Type": "application/x-www-form-urlencoded"})
    await assert_problem(resp, 415, "unsupported_media_type")


async def test_unknown_route_and_method_are_json_problems(client):
    await assert_problem(await client.get("/api/v1/nothing"), 404, "not_found")
    await assert_problem(await client.get("/api/v1/reports"), 405, "method_not_allowed")


async def test_rejected_records_counter_matches(client, db, device):
    body = usage_batch(device["device_id"], 2)
    body["records"][1]["at"] = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    await client.post("/api/v1/reports", json=body, headers=auth(device["token"]))
    reg = client.server.app[METRICS].registry
    assert reg.get_sample_value("tice_ingest_records_total", {"outcome": "rejected"}) == 1
    assert reg.get_sample_value("tice_ingest_records_total", {"outcome": "stored"}) == 1


async def test_garbage_device_id_is_400_not_500(client, db, device):
    body = usage_batch(device["device_id"], 1)
    body["device_id"] = "not-a-uuid"
    body["spool"] = str(uuid.uuid4())
    await assert_problem(await client.post("/api/v1/reports", json=body, headers=auth(device["token"])),
                         400, "invalid")


@pytest.mark.parametrize("encoding", ["zstd", "br", "x-unknown"])
async def test_unsupported_content_encoding_is_4xx(client, db, device, encoding):
    resp = await post_raw(client, device["token"], b"garbage", **{"Content-Encoding": encoding})
    assert 400 <= resp.status < 500, await resp.text()
    await assert_nothing_stored(db)


def test_client_errors_are_logged_as_one_line_without_traceback():
    import logging

    from aiohttp.http_exceptions import ContentEncodingError

    from tice_collector.logs import ClientErrorFilter, TextFormatter

    try:
        raise ContentEncodingError("Can not decode content-encoding: br")
    except ContentEncodingError:
        import sys

        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", None,
                                   sys.exc_info())
    assert ClientErrorFilter().filter(record)
    line = TextFormatter().format(record)
    assert record.levelname == "WARNING" and "Traceback" not in line and "\n" not in line
    assert "Can not decode content-encoding: br" in line
