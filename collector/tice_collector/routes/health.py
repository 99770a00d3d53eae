"""Liveness, readiness, metrics and the API description."""

from __future__ import annotations

import logging
import time
from importlib import resources

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tice_collector import snapshot
from tice_collector.db.errors import CONNECTION_ERRORS, DB_ERRORS
from tice_collector.db.migrate import MigrationError, pending
from tice_collector.db.queries import q
from tice_collector.keys import METRICS, POOL, SETTINGS, WRITER

log = logging.getLogger("tice.metrics")
routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    timeout = request.app[SETTINGS].db_timeout_s
    try:
        async with request.app[POOL].acquire(timeout=timeout) as conn:
            todo = await pending(conn)
    except CONNECTION_ERRORS as e:
        return web.json_response({"status": "not ready", "reason": f"database unreachable ({type(e).__name__})"},
                                 status=503)
    except MigrationError as e:
        return web.json_response({"status": "not ready", "reason": str(e)}, status=503)
    if todo:
        return web.json_response({"status": "not ready", "reason": f"migrations pending: {', '.join(todo)}"},
                                 status=503)
    return web.json_response({"status": "ready"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    m.queue_depth.set(request.app[WRITER].depth())
    await refresh_fleet(request.app)
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def refresh_fleet(app: web.Application) -> None:
    """Reload the fleet snapshot from the database when the copy in memory is old.

    Every replica reads the same row, so every replica exports the same fleet figures. If the
    database is away, the last copy is served (its timestamp metric shows its age).
    """
    fleet, settings = app[METRICS].fleet, app[SETTINGS]
    if time.monotonic() - fleet.loaded_at < settings.snapshot_cache_s and fleet.snapshot is not None:
        return
    try:
        row = await app[POOL].fetchrow(q("fleet_snapshot_get"), timeout=settings.db_timeout_s)
    except DB_ERRORS as e:
        log.warning("fleet snapshot not refreshed: %s", type(e).__name__)
        return
    fleet.loaded_at = time.monotonic()
    if row is not None:
        try:
            fleet.snapshot = snapshot.decode(row["body"])
        except msgspec.ValidationError as e:
            # A row no version of this collector could write: say so, keep the last copy (its
            # timestamp metric ages and alerts); the next snapshot job run replaces the row.
            log.error("fleet snapshot in the database does not decode, not exported: %s", e)
            return
        fleet.computed_at = float(row["computed_at"])


@routes.get("/api/v1/openapi.yaml")
async def openapi(request: web.Request) -> web.Response:
    text = resources.files("tice_collector").joinpath("openapi.yaml").read_text(encoding="utf-8")
    return web.Response(text=text, content_type="application/yaml")
