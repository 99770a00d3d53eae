"""One error middleware: typed domain errors become JSON problems with the right status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from collector.errors import ApiError, Unavailable
from collector.keys import SETTINGS
from collector.wire import Problem, encode
from collector.writer import CONNECTION_ERRORS

log = logging.getLogger("tice.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's own HTTP errors (no such route, wrong method, body over the limit) keep their
# status but get the same JSON shape and a stable code.
_HTTP_CODES = {400: "invalid", 404: "not_found", 405: "method_not_allowed",
               413: "body_too_large", 415: "unsupported_media_type"}


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=encode(Problem(error=code, detail=detail)),
                        content_type="application/json", headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return problem(e.status, e.code, e.detail, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        detail = e.text or e.reason
        if e.status == 413:
            detail = (f"request body is larger than {request.app[SETTINGS].max_body_bytes} bytes "
                      "(counted after decompression); send smaller batches")
        return problem(e.status, _HTTP_CODES.get(e.status, "http_error"), detail)
    except (*CONNECTION_ERRORS, asyncpg.PostgresError) as e:
        # Whatever the database says while we authenticate or look up is its trouble, not the
        # client's: answer 503 so the agent keeps its data and retries.
        log.warning("database unavailable for %s %s: %s", request.method, request.path,
                    type(e).__name__)
        u = Unavailable("the database is unavailable", retry_after=request.app[SETTINGS].retry_after_s)
        return problem(u.status, u.code, u.detail, u.headers)
    except Exception:
        # A bug, not bad input: log it whole for us, answer without internals.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "internal", "internal error; it has been logged")
