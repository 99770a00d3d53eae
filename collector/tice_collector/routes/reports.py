"""The evidence report over HTTP: GET /api/v1/reports/usage (admin token, JSON by default)
and GET /report (the admin token or the read-only report token, HTML by default), the page IT
ops open in a browser: a 401 there asks the browser for a password (Basic), the token.

The same report as `tice-collector report` (collector/tice_collector/report/make.py), in JSON, CSV or HTML.
Computing and rendering run in a thread, so ingestion keeps being answered meanwhile.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

from aiohttp import web

from tice_collector.auth import report_ok
from tice_collector.errors import ApiError, BadRequest, Forbidden
from tice_collector.keys import POOL, SETTINGS
from tice_collector.report.make import file_name, make_report, render_bytes
from tice_collector.report.request import ReportArgError, check
from tice_collector.routes.admin import require_admin

routes = web.RouteTableDef()

PARAMETERS = ("from", "to", "school", "format", "lang")
CONTENT_TYPES = {"json": "application/json", "csv": "text/csv", "html": "text/html"}
# Reading a city's school year of daily totals takes a few seconds; a loaded database longer.
QUERY_TIMEOUT_S = 120.0


class ReportUnauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, detail: str) -> None:
        # RFC 7617: a browser shows its login prompt for a Basic challenge.
        super().__init__(detail, headers={"WWW-Authenticate": 'Basic realm="tice report", charset="UTF-8"'})


@routes.get("/api/v1/reports/usage")
async def usage_report(request: web.Request) -> web.Response:
    require_admin(request)
    return await _report(request, "json")


@routes.get("/report")
async def report_page(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.admin_token and not settings.report_token:
        raise Forbidden("the report page is disabled: set report_token (TICE_REPORT_TOKEN) or admin_token",
                        code="report_disabled")
    if not report_ok(request.headers.get("Authorization"), settings.admin_token, settings.report_token):
        raise ReportUnauthorized("the report needs the report token or the admin token: "
                                 "'Authorization: Bearer <token>', or any user name and the token as password")
    return await _report(request, "html")


async def _report(request: web.Request, default_format: str) -> web.Response:
    query = request.query
    unknown = sorted(set(query) - set(PARAMETERS))
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0][:40]!r}; known: {', '.join(PARAMETERS)}")
    repeated = [name for name in PARAMETERS if len(query.getall(name, [])) > 1]
    if repeated:
        raise BadRequest(f"query parameter {repeated[0]} given more than once")
    settings = request.app[SETTINGS]
    now = datetime.now(ZoneInfo(settings.timezone))
    try:
        wanted = check(query.get("from"), query.get("to"), query.get("school"), query.get("format", default_format),
                       query.get("lang", "fr"), today=now.date(), names=PARAMETERS)
        async with request.app[POOL].acquire(timeout=settings.db_timeout_s) as conn:
            report = await make_report(conn, settings, wanted, today=now.date(), now=now,
                                       query_timeout_s=max(settings.db_timeout_s, QUERY_TIMEOUT_S))
    except ReportArgError as e:
        raise BadRequest(str(e), code=e.code) from None
    body = await asyncio.to_thread(render_bytes, report, wanted.format, wanted.lang)
    return web.Response(body=body, content_type=CONTENT_TYPES[wanted.format], charset="utf-8",
                        headers={"Content-Disposition": f'inline; filename="{file_name(report, wanted.format)}"'})
