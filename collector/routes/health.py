"""Liveness, readiness, metrics and the API description."""

from __future__ import annotations

from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collector.db.migrate import MigrationError, pending
from collector.keys import METRICS, POOL, SETTINGS, WRITER
from collector.writer import CONNECTION_ERRORS

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
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/api/v1/openapi.yaml")
async def openapi(request: web.Request) -> web.Response:
    text = resources.files("collector").joinpath("openapi.yaml").read_text(encoding="utf-8")
    return web.Response(text=text, content_type="application/yaml")
