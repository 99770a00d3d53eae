"""One error middleware: typed domain errors become JSON problems with the right status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from tice_collector.db.errors import DB_ERRORS
from tice_collector.dberrors import as_api_error
from tice_collector.errors import ApiError
from tice_collector.keys import SETTINGS
from tice_wire import Problem, encode

log = logging.getLogger("tice.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's own HTTP errors (no such route, wrong method, body over the limit) keep their
# status but get the same JSON shape and a stable code.
_HTTP_CODES = {400: "invalid", 404: "not_found", 405: "method_not_allowed",
               413: "body_too_large", 415: "unsupported_media_type"}


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=encode(Problem(error=code, detail=detail)),
                        content_type="application/json", headers=headers)


async def answer(request: web.Request, e: ApiError) -> web.StreamResponse:
    response = problem(e.status, e.code, e.detail, e.headers)
    if e.close_connection:
        # Send the answer, then close: the rest of this request may never come, and aiohttp
        # would otherwise wait (lingering_time) for it on an open connection.
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        if request.protocol is not None:
            request.protocol.force_close()
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return await answer(request, e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        detail = e.text or e.reason
        headers = None
        if e.status == 413:
            detail = (f"request body is larger than {request.app[SETTINGS].max_body_bytes} bytes "
                      "(counted after decompression); send smaller batches")
        if e.status == 405:
            allow = e.headers.get("Allow", "")
            headers = {"Allow": allow}
            detail = f"method {request.method} is not allowed on {request.path}; allowed: {allow or 'none'}"
        return problem(e.status, _HTTP_CODES.get(e.status, "http_error"), detail, headers)
    except DB_ERRORS as e:
        error = as_api_error(e, request.app[SETTINGS].retry_after_s)
        if error.status == 503:
            # Whatever the database says while we authenticate or look up is its trouble, not
            # the client's: answer 503 so the agent keeps its data and retries.
            log.warning("database unavailable for %s %s: %s", request.method, request.path, type(e).__name__)
        else:
            log.info("request values refused by the database on %s %s: %s", request.method, request.path,
                     type(e).__name__)
        return await answer(request, error)
    except Exception:
        # A bug, not bad input: log it whole for us, answer without internals.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "internal", "internal error; it has been logged")
