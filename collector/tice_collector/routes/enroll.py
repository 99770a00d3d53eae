"""POST /api/v1/enroll: a device trades its school's enrol secret for its own bearer token.

A serial names one device for its whole life: enrolling again (the agent after a 401, an
admin rotating a token) gives a new token to the same device and keeps its first enrolment
date; enrolling under another school's secret, or as another kind, never moves or copies it
(`tice-collector devices move` does that). Attempts are limited per client address and per
secret, and a secret creates at most `enroll_secret_max_devices` devices.
"""

from __future__ import annotations

import logging
import math

import asyncpg
import msgspec
from aiohttp import web

from tice_collector import jsonkeys, serials
from tice_collector.auth import digest, new_token
from tice_collector.bodies import read_body
from tice_collector.db.errors import DB_ERRORS
from tice_collector.db.queries import q
from tice_collector.dberrors import as_api_error
from tice_collector.errors import ApiError, BadRequest, Conflict, Forbidden, TooManyRequests, Unauthorized
from tice_collector.keys import ENROLL_BY_ADDRESS, ENROLL_BY_SECRET, METRICS, POOL, SETTINGS, TOKENS
from tice_wire import EnrollRequest, EnrollResult, encode

log = logging.getLogger("tice.enroll")
routes = web.RouteTableDef()
_decoder = msgspec.json.Decoder(EnrollRequest)


def client_address(request: web.Request) -> str:
    """The client's address: the peer's, or behind a proxy the one it passes (client_ip_header).

    With X-Forwarded-For the last entry is the one our proxy appended; earlier ones are the
    client's word.
    """
    header = request.app[SETTINGS].client_ip_header
    if header:
        value = request.headers.get(header, "").split(",")[-1].strip()
        if value:
            return value
    return request.remote or "unknown"


@routes.post("/api/v1/enroll")
async def post_enroll(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    try:
        try:
            result = await _enroll(request)
        except DB_ERRORS as e:
            raise as_api_error(e, request.app[SETTINGS].retry_after_s) from None
    except ApiError as e:
        metrics.enrollments.labels(e.code).inc()
        raise
    metrics.enrollments.labels("enrolled").inc()
    return web.Response(status=201, body=encode(result), content_type="application/json")


def _throttled(wait: float, what: str) -> TooManyRequests:
    return TooManyRequests(f"too many enrolment attempts {what}; retry after the delay",
                           retry_after=math.ceil(wait))


async def _enroll(request: web.Request) -> EnrollResult:
    app = request.app
    settings = app[SETTINGS]
    # Before anything costs a database transaction.
    wait = app[ENROLL_BY_ADDRESS].take(client_address(request))
    if wait:
        raise _throttled(wait, "from this address")
    body = await read_body(request)
    try:
        req = _decoder.decode(body)
    except msgspec.ValidationError as e:
        raise BadRequest(str(e), code="invalid") from None
    except msgspec.DecodeError as e:
        raise BadRequest(f"not valid JSON: {e}", code="malformed_json") from None
    try:
        jsonkeys.check(body, encode(req))
    except jsonkeys.RepeatedKey as e:
        raise BadRequest(f"key {e.key!r} appears twice; send each key once - at `$.{e.key}`",
                         code="repeated_key") from None
    try:
        serial = serials.normalise(req.serial)
    except serials.SerialError as e:
        raise BadRequest(f"{e} - at `$.serial`", code="invalid") from None
    wait = app[ENROLL_BY_SECRET].take(digest(req.secret))
    if wait:
        raise _throttled(wait, "with this enrol secret")
    timeout = settings.db_timeout_s
    token = new_token()
    async with app[POOL].acquire(timeout=timeout) as conn, conn.transaction():
        secret = await conn.fetchrow(q("secret_lookup"), digest(req.secret), timeout=timeout)
        if secret is None:
            raise Unauthorized("unknown or revoked enrol secret", code="invalid_secret")
        school = secret["school"]
        known = await conn.fetch(q("devices_for_enroll"), serial, timeout=timeout)
        device = next((d for d in known if d["kind"] == req.kind), None)
        if any(d["school"] != school for d in ([device] if device else known)):
            raise Forbidden(f"serial {serial!r} belongs to another school; moving a device is an admin's "
                            f"decision: tice-collector devices move {serial} --school {school}",
                            code="other_school")
        if device is None and known:
            kinds = ", ".join(d["kind"] for d in known)
            raise Conflict(f"serial {serial!r} is enrolled as {kinds}, not {req.kind}; enrol it with that kind, "
                           "or correct the inventory", code="kind_mismatch")
        if device is None:
            if await conn.fetchval(q("secret_count_device"), secret["id"], settings.enroll_secret_max_devices,
                                   timeout=timeout) is None:
                raise Forbidden(f"enrol secret {secret['id']} has created its {settings.enroll_secret_max_devices} "
                                "devices (enroll_secret_max_devices); create another: tice-collector "
                                f"enroll-secret create --school {school}", code="secret_exhausted")
            try:
                device_id = await conn.fetchval(q("device_insert"), serial, req.kind, school, timeout=timeout)
            except asyncpg.UniqueViolationError:
                raise Conflict("the same device is enrolling twice at once; retry", code="enroll_race") from None
        else:
            if device["status"] != "active":
                raise Forbidden("this device is retired", code="device_retired")
            device_id = device["id"]
            # Re-enrolment rotates the token: the old one stops working now, on every replica.
            if await conn.fetch(q("device_token_revoke_all"), device_id, timeout=timeout):
                await conn.execute(q("tokens_revoked_notify"), str(device_id), timeout=timeout)
            await conn.execute(q("device_mark_enrolled"), device_id, timeout=timeout)
        await conn.execute(q("device_token_insert"), digest(token), device_id, timeout=timeout)
        await conn.execute(q("secret_touch"), secret["id"], timeout=timeout)
        salt = await conn.fetchval(q("peripheral_salt"), timeout=timeout)
    app[TOKENS].evict_device(device_id)
    log.info("device enrolled: school=%s kind=%s device=%s", school, req.kind, device_id)
    return EnrollResult(device_id=device_id, token=token, school=school, peripheral_salt=salt)
