"""Admin HTTP endpoints, behind the admin token from the settings.

Answers are the msgspec types below, from which collector/tice_collector/openapi.yaml describes them.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Any, Literal

from aiohttp import web
from msgspec import Struct, field

from tice_collector.auth import admin_ok
from tice_collector.db.queries import q
from tice_collector.errors import BadRequest, Forbidden, NotFound, Unauthorized
from tice_collector.keys import POOL, SETTINGS, TOKENS
from tice_collector.uai import EXPECTED, parse_uai
from tice_collector.usage import explain
from tice_wire import DEVICE_KINDS, encode

routes = web.RouteTableDef()

_DIGITS = re.compile(r"[0-9]{1,12}")  # ASCII digits only: "²".isdigit() is True
MAX_LIMIT = 10_000
MAX_OFFSET = 10**9


class DeviceRow(Struct, kw_only=True):
    """One device of the inventory. `enrolled_at` is its first enrolment (null: known from the
    inventory, never enrolled); `last_seen_at` its last committed report (collector clock)."""

    id: uuid.UUID
    serial: str
    kind: str
    school: str
    class_: str | None = field(name="class")
    status: str
    enrolled_at: datetime | None
    last_seen_at: datetime | None
    agent_version: str | None
    has_token: bool
    # The latest verdict of the detect job (null until it has judged the device): `regular`,
    # `irregular` (low use) or `too_new`, over `judged_days` school days from `judged_from`, `used_days` of
    # them used in class; `verdict_note` says it in a sentence, and why a device is not judged yet.
    verdict: Literal["regular", "irregular", "too_new"] | None
    used_days: int | None
    judged_days: int | None
    judged_from: date | None
    out_of_hours_days: int | None
    silent: bool | None
    # Where the judged days' active time came from: `device_days` from the device's own records
    # (agent, Chrome extension), `google_days` from Google Admin's daily total alone (no time of
    # day; docs/usage-policy.md), the rest of `judged_days` from neither (not used). `google_listed`:
    # Google Admin lists this device (tice-collector google sync).
    device_days: int | None
    google_days: int | None
    google_listed: bool
    verdict_note: str


class DeviceList(Struct, kw_only=True):
    """A page of the inventory, ordered by school, kind and serial."""

    devices: list[DeviceRow]
    limit: int
    offset: int


class VerdictList(Struct, kw_only=True):
    """Every device of the filter with its verdict, ordered by school, kind and serial: the
    cupboard and the low-use devices by name (asset tag), where the metrics only count them."""

    devices: list[DeviceRow]


class Revoked(Struct, kw_only=True):
    """How many live tokens the device had; every collector refuses them from now on."""

    device_id: uuid.UUID
    revoked_tokens: int


class Retired(Struct, kw_only=True):
    """The device is retired: its tokens are revoked and it cannot enrol again."""

    device_id: uuid.UUID
    status: str


def json(obj: object) -> web.Response:
    return web.Response(body=encode(obj), content_type="application/json")


def require_admin(request: web.Request) -> None:
    admin_token = request.app[SETTINGS].admin_token
    if not admin_token:
        raise Forbidden("the admin API is disabled: set admin_token (TICE_ADMIN_TOKEN)",
                        code="admin_disabled")
    if not admin_ok(request.headers.get("Authorization"), admin_token):
        raise Unauthorized("admin endpoints need 'Authorization: Bearer <admin_token>'",
                           token_given="Authorization" in request.headers)


def _int(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or int(raw) > high:
        raise BadRequest(f"query parameter {name}: expected an integer 0..{high}, got {raw[:40]!r}")
    return int(raw)


def _school(request: web.Request) -> str | None:
    raw = request.query.get("school")
    if raw is None:
        return None
    uai = parse_uai(raw)
    if uai is None:
        raise BadRequest(f"query parameter school: expected {EXPECTED}, got {raw[:40]!r}")
    return uai


def _device_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["device_id"])
    except ValueError:
        raise BadRequest("device id: expected a UUID") from None


LIST_PARAMETERS = ("school", "limit", "offset")


@routes.get("/api/v1/admin/devices")
async def list_devices(request: web.Request) -> web.Response:
    require_admin(request)
    unknown = sorted(set(request.query) - set(LIST_PARAMETERS))
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0][:40]!r}; known: {', '.join(LIST_PARAMETERS)}")
    school = _school(request)
    limit = _int(request, "limit", 1000, MAX_LIMIT)
    offset = _int(request, "offset", 0, MAX_OFFSET)
    rows = await request.app[POOL].fetch(q("devices_list"), school, limit, offset,
                                         timeout=request.app[SETTINGS].db_timeout_s)
    devices = [_row(r) for r in rows]
    return json(DeviceList(devices=devices, limit=limit, offset=offset))


VERDICT_PARAMETERS = ("school", "kind", "never_seen")
_BOOL = {"true": True, "1": True, "false": False, "0": False}


def _row(r: Any) -> DeviceRow:
    return DeviceRow(id=r["id"], serial=r["serial"], kind=r["kind"], school=r["school"], class_=r["class"],
                     status=r["status"], enrolled_at=r["enrolled_at"], last_seen_at=r["last_seen_at"],
                     agent_version=r["agent_version"], has_token=r["has_token"], verdict=r["verdict"],
                     used_days=r["used_days"], judged_days=r["judged_days"], judged_from=r["judged_from"],
                     out_of_hours_days=r["out_of_hours_days"], silent=r["silent"], device_days=r["device_days"],
                     google_days=r["google_days"], google_listed=r["google_listed"], verdict_note=explain(r))


@routes.get("/api/v1/admin/verdicts")
async def list_verdicts(request: web.Request) -> web.Response:
    """Each device's verdict; `never_seen=true` keeps the active devices that never reported."""
    require_admin(request)
    unknown = sorted(set(request.query) - set(VERDICT_PARAMETERS))
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0][:40]!r}; known: {', '.join(VERDICT_PARAMETERS)}")
    school = _school(request)
    kind = request.query.get("kind")
    if kind is not None and kind not in DEVICE_KINDS:
        raise BadRequest(f"query parameter kind: expected one of {', '.join(DEVICE_KINDS)}, got {kind[:40]!r}")
    raw = request.query.get("never_seen", "false")
    if raw not in _BOOL:
        raise BadRequest(f"query parameter never_seen: expected true or false, got {raw[:40]!r}")
    settings = request.app[SETTINGS]
    async with request.app[POOL].acquire(timeout=settings.db_timeout_s) as conn:
        if school is not None and not await conn.fetchval(q("school_exists"), school, timeout=settings.db_timeout_s):
            raise NotFound(f"no school {school}", code="unknown_school")
        rows = await conn.fetch(q("devices_verdicts"), school, kind, _BOOL[raw], timeout=settings.db_timeout_s)
    return json(VerdictList(devices=[_row(r) for r in rows]))


async def _revoke(request: web.Request, device_id: uuid.UUID) -> int:
    """Revoke every live token of the device; every collector's cache forgets it."""
    pool, timeout = request.app[POOL], request.app[SETTINGS].db_timeout_s
    async with pool.acquire(timeout=timeout) as c, c.transaction():
        revoked = await c.fetch(q("device_token_revoke_all"), device_id, timeout=timeout)
        if revoked:
            await c.execute(q("tokens_revoked_notify"), str(device_id), timeout=timeout)
    request.app[TOKENS].evict_device(device_id)
    return len(revoked)


@routes.post("/api/v1/admin/devices/{device_id}/revoke")
async def revoke_device(request: web.Request) -> web.Response:
    require_admin(request)
    device_id = _device_id(request)
    revoked = await _revoke(request, device_id)
    if not revoked:
        raise NotFound("this device has no live token")
    return json(Revoked(device_id=device_id, revoked_tokens=revoked))


@routes.post("/api/v1/admin/devices/{device_id}/retire")
async def retire_device(request: web.Request) -> web.Response:
    require_admin(request)
    device_id = _device_id(request)
    pool, timeout = request.app[POOL], request.app[SETTINGS].db_timeout_s
    async with pool.acquire(timeout=timeout) as conn, conn.transaction():
        if await conn.fetchval(q("device_retire"), device_id, timeout=timeout) is None:
            raise NotFound("no such device")
        await conn.execute(q("device_token_revoke_all"), device_id, timeout=timeout)
        await conn.execute(q("tokens_revoked_notify"), str(device_id), timeout=timeout)
    request.app[TOKENS].evict_device(device_id)
    return json(Retired(device_id=device_id, status="retired"))
