"""Admin HTTP endpoints, behind the admin token from the settings."""

from __future__ import annotations

import uuid

from aiohttp import web

from collector.auth import admin_ok
from collector.db.queries import q
from collector.errors import BadRequest, Forbidden, NotFound, Unauthorized
from collector.keys import POOL, SETTINGS, TOKENS
from collector.usage import explain

routes = web.RouteTableDef()


def require_admin(request: web.Request) -> None:
    admin_token = request.app[SETTINGS].admin_token
    if not admin_token:
        raise Forbidden("the admin API is disabled: set admin_token (TICE_ADMIN_TOKEN)",
                        code="admin_disabled")
    if not admin_ok(request.headers.get("Authorization"), admin_token):
        raise Unauthorized("admin endpoints need 'Authorization: Bearer <admin_token>'")


def _int(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 <= int(raw) <= high:
        raise BadRequest(f"query parameter {name}: expected an integer 0..{high}, got {raw!r}")
    return int(raw)


def _device_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["device_id"])
    except ValueError:
        raise BadRequest("device id: expected a UUID") from None


@routes.get("/api/v1/admin/devices")
async def list_devices(request: web.Request) -> web.Response:
    require_admin(request)
    school = request.query.get("school")
    limit = _int(request, "limit", 1000, 10000)
    offset = _int(request, "offset", 0, 10**9)
    rows = await request.app[POOL].fetch(q("devices_list"), school, limit, offset,
                                         timeout=request.app[SETTINGS].db_timeout_s)
    # Each device with its verdict and a sentence on it (why it is not judged yet, and from when).
    devices = [{**{k: (str(v) if isinstance(v, uuid.UUID) else v.isoformat() if hasattr(v, "isoformat")
                       else v) for k, v in dict(r).items()}, "verdict_note": explain(r)} for r in rows]
    return web.json_response({"devices": devices, "limit": limit, "offset": offset})


@routes.post("/api/v1/admin/devices/{device_id}/revoke")
async def revoke_device(request: web.Request) -> web.Response:
    require_admin(request)
    device_id = _device_id(request)
    revoked = await request.app[POOL].fetch(q("device_token_revoke_all"), device_id,
                                            timeout=request.app[SETTINGS].db_timeout_s)
    request.app[TOKENS].evict_device(device_id)
    if not revoked:
        raise NotFound("this device has no live token")
    return web.json_response({"device_id": str(device_id), "revoked_tokens": len(revoked)})


@routes.post("/api/v1/admin/devices/{device_id}/retire")
async def retire_device(request: web.Request) -> web.Response:
    require_admin(request)
    device_id = _device_id(request)
    pool, timeout = request.app[POOL], request.app[SETTINGS].db_timeout_s
    async with pool.acquire(timeout=timeout) as conn, conn.transaction():
        if await conn.fetchval(q("device_retire"), device_id, timeout=timeout) is None:
            raise NotFound("no such device")
        await conn.execute(q("device_token_revoke_all"), device_id, timeout=timeout)
    request.app[TOKENS].evict_device(device_id)
    return web.json_response({"device_id": str(device_id), "status": "retired"})
