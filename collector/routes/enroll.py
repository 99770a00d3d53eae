"""POST /api/v1/enroll: a device trades its school's enrol secret for its own bearer token."""

from __future__ import annotations

import logging

import asyncpg
import msgspec
from aiohttp import web

from collector.auth import digest, new_token
from collector.db.queries import q
from collector.errors import ApiError, BadRequest, Conflict, Forbidden, Unauthorized
from collector.keys import METRICS, POOL, SETTINGS, TOKENS
from collector.routes.ingest import read_body
from collector.wire import EnrollRequest, EnrollResult, encode

log = logging.getLogger("tice.enroll")
routes = web.RouteTableDef()
_decoder = msgspec.json.Decoder(EnrollRequest)


@routes.post("/api/v1/enroll")
async def post_enroll(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    try:
        result = await _enroll(request)
    except ApiError as e:
        metrics.enrollments.labels(e.code).inc()
        raise
    metrics.enrollments.labels("enrolled").inc()
    return web.Response(status=201, body=encode(result), content_type="application/json")


async def _enroll(request: web.Request) -> EnrollResult:
    body = await read_body(request)
    try:
        req = _decoder.decode(body)
    except msgspec.ValidationError as e:
        raise BadRequest(str(e), code="invalid") from None
    except msgspec.DecodeError as e:
        raise BadRequest(f"not valid JSON: {e}", code="malformed_json") from None
    timeout = request.app[SETTINGS].db_timeout_s
    token = new_token()
    async with request.app[POOL].acquire(timeout=timeout) as conn, conn.transaction():
        secret = await conn.fetchrow(q("secret_lookup"), digest(req.secret), timeout=timeout)
        if secret is None:
            raise Unauthorized("unknown or revoked enrol secret", code="invalid_secret")
        school = secret["school"]
        device = await conn.fetchrow(q("device_for_enroll"), req.serial, req.kind, timeout=timeout)
        if device is None:
            try:
                device_id = await conn.fetchval(q("device_insert"), req.serial, req.kind, school)
            except asyncpg.UniqueViolationError:
                raise Conflict("the same device is enrolling twice at once; retry",
                               code="enroll_race") from None
        else:
            if device["school"] != school:
                raise Forbidden(f"serial {req.serial!r} belongs to another school; move it in the "
                                "inventory first", code="other_school")
            if device["status"] != "active":
                raise Forbidden("this device is retired", code="device_retired")
            device_id = device["id"]
            # Re-enrolment rotates the token: the old one stops working now.
            await conn.execute(q("device_tokens_revoke"), device_id, timeout=timeout)
            await conn.execute(q("device_mark_enrolled"), device_id, timeout=timeout)
        await conn.execute(q("device_token_insert"), digest(token), device_id, timeout=timeout)
        await conn.execute(q("secret_touch"), secret["id"], timeout=timeout)
        salt = await conn.fetchval(q("peripheral_salt"), timeout=timeout)
    request.app[TOKENS].evict_device(device_id)
    log.info("device enrolled: school=%s kind=%s device=%s", school, req.kind, device_id)
    return EnrollResult(device_id=device_id, token=token, school=school, peripheral_salt=salt)
