"""POST /api/v1/reports: authenticate, validate, correct the clock, hand to the writer."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
from aiohttp import web

from collector.auth import bearer, digest
from collector.db.queries import q
from collector.db.records import TABLES, Table
from collector.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)
from collector.identity import note_stale_token
from collector.keys import LIMITER, METRICS, POOL, SETTINGS, TOKENS, WRITER
from collector.wire import Batch, BatchResult, Rejection, encode
from collector.writer import Job

routes = web.RouteTableDef()
_decoder = msgspec.json.Decoder(Batch)


async def authenticate(request: web.Request) -> uuid.UUID:
    """The device behind the request's bearer token, or 401."""
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        raise Unauthorized("missing or malformed 'Authorization: Bearer <token>' header",
                           code="missing_token", token_given=False)
    key = digest(token)
    cache = request.app[TOKENS]
    device_id = cache.get(key)
    if device_id is not None:
        return device_id
    settings = request.app[SETTINGS]
    row = await request.app[POOL].fetchrow(q("token_lookup"), key, timeout=settings.db_timeout_s)
    if row is None:
        # A token a later enrolment replaced, still in use: two agents share this device.
        await note_stale_token(request.app[POOL], key, settings.shared_identity_grace_s, settings.db_timeout_s)
        raise Unauthorized("unknown or revoked device token; enrol the device again",
                           code="invalid_token")
    if row["status"] != "active":
        raise Forbidden("this device is retired", code="device_retired")
    cache.put(key, row["device_id"])
    return row["device_id"]


async def read_body(request: web.Request) -> bytes:
    if request.content_type != "application/json":
        raise UnsupportedMediaType(f"expected Content-Type: application/json, got {request.content_type!r}")
    try:
        # aiohttp decompresses gzip/deflate itself and counts the decompressed bytes
        # against client_max_size, so a small bomb is still stopped at the limit (413).
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"request body is larger than {request.app[SETTINGS].max_body_bytes} bytes "
            "(counted after decompression); send smaller batches") from None
    except web.HTTPException:
        raise
    except Exception as e:  # a corrupt gzip stream surfaces as a payload/encoding error
        raise BadRequest(f"cannot read the request body: {type(e).__name__}: {e}",
                         code="bad_encoding") from None


def decode(body: bytes) -> Batch:
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as e:
        raise BadRequest(str(e), code="invalid") from None
    except msgspec.DecodeError as e:
        raise BadRequest(f"not valid JSON: {e}", code="malformed_json") from None


@routes.post("/api/v1/reports")
async def post_reports(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    started = time.perf_counter()
    try:
        response = await _ingest(request)
        metrics.requests.labels("accepted").inc()
        return response
    except ApiError as e:
        metrics.rejections.labels(e.code).inc()
        outcome = {429: "throttled", 503: "unavailable"}.get(e.status, "rejected")
        metrics.requests.labels(outcome).inc()
        raise
    finally:
        metrics.duration.observe(time.perf_counter() - started)


async def _ingest(request: web.Request) -> web.Response:
    app = request.app
    settings, metrics = app[SETTINGS], app[METRICS]
    device_id = await authenticate(request)
    wait = app[LIMITER].take(device_id)
    if wait:
        raise TooManyRequests(f"more than {settings.rate_limit_per_minute:g} requests per minute "
                              "from this device", retry_after=int(wait) + 1)
    batch = decode(await read_body(request))
    if batch.device_id != device_id:
        raise Forbidden("this batch names another device than the token's", code="wrong_device")
    received = datetime.now(UTC)
    metrics.batch_size.observe(len(batch.records))

    # Clock rule: the batch says when the device sent it (its own clock). If that differs from
    # our clock by more than the tolerance, the device clock is off by that much: every record
    # time is shifted by the same offset. Within the tolerance, times are kept as sent.
    offset = received - batch.sent_at
    corrected = abs(offset.total_seconds()) > settings.clock_tolerance_s
    if corrected:
        metrics.clock_corrected.inc()
    shift = offset if corrected else timedelta(0)
    newest = received + timedelta(seconds=settings.max_future_skew_s)
    oldest = received - timedelta(days=settings.max_record_age_days)

    rows: dict[Table, list[tuple[object, ...]]] = {}
    rejections: list[Rejection] = []
    envelope_tail = (received,)
    for rec in batch.records:
        at = rec.at + shift
        if at > newest:
            rejections.append(Rejection(seq=rec.seq, reason="future_timestamp"))
            continue
        if at < oldest:
            rejections.append(Rejection(seq=rec.seq, reason="too_old"))
            continue
        table = TABLES[type(rec)]
        rows.setdefault(table, []).append(
            (*msgspec.structs.astuple(rec), device_id, batch.spool, at, *envelope_tail))
    for r in rejections:
        metrics.rejections.labels(r.reason).inc()
    metrics.records.labels("rejected").inc(len(rejections))

    size = len(batch.records) - len(rejections)
    job = Job(device_id=device_id, spool=batch.spool, dropped=batch.dropped, received_at=received,
              agent_version=batch.agent_version, rows=rows, size=size)
    stored, duplicates = await app[WRITER].submit(job)
    metrics.records.labels("stored").inc(stored)
    metrics.records.labels("duplicate").inc(duplicates)
    result = BatchResult(accepted=stored, duplicates=duplicates, rejected=len(rejections),
                         rejections=rejections, clock_offset_s=round(offset.total_seconds(), 3),
                         clock_corrected=corrected)
    return web.Response(body=encode(result), content_type="application/json")
