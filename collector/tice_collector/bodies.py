"""Reading a request body at the door: its type, its encoding, its size once decoded, its time.

aiohttp's own decompression is turned off (app.py): it answered `br` and `zstd` with a
text/plain error, took an unknown encoding as plain, and accepted a gzip stream cut short.
Here every encoding other than gzip, deflate and identity is a 415 that names them, and a
compressed stream must be complete and end where the body ends, or it is `bad_encoding`.
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from tice_collector.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from tice_collector.keys import SETTINGS

# zlib window bits: gzip (RFC 1952) and the zlib format that HTTP calls "deflate" (RFC 9110 §8.4.1.2).
ENCODINGS = {"gzip": 31, "x-gzip": 31, "deflate": 15}
SUPPORTED = "gzip, deflate, identity"


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than {limit} bytes (counted after decompression); "
                           "send smaller batches")


def inflate(data: bytes, encoding: str, limit: int) -> bytes:
    """The decoded body, at most `limit` bytes; PayloadTooLarge past it, BadRequest
    (`bad_encoding`) for a corrupt stream, one cut short, or bytes after its end."""
    decoder = zlib.decompressobj(ENCODINGS[encoding])
    try:
        out = decoder.decompress(data, limit + 1)
    except zlib.error as e:
        raise BadRequest(f"corrupt {encoding} body: {e}", code="bad_encoding") from None
    if len(out) > limit:
        raise _too_large(limit)
    if not decoder.eof:
        raise BadRequest(f"the {encoding} body is cut short (no end of stream or trailer)", code="bad_encoding")
    if decoder.unused_data:
        raise BadRequest(f"{len(decoder.unused_data)} bytes follow the end of the {encoding} stream",
                         code="bad_encoding")
    return out


async def read_body(request: web.Request) -> bytes:
    """The request's JSON body, decoded, or the ApiError that says why not."""
    settings = request.app[SETTINGS]
    if request.content_type != "application/json":
        raise UnsupportedMediaType(f"expected Content-Type: application/json, got {request.content_type!r}")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
    if encoding != "identity" and encoding not in ENCODINGS:
        raise UnsupportedMediaType(f"Content-Encoding {encoding[:40]!r} is not supported; use one of {SUPPORTED}",
                                   code="unsupported_encoding", headers={"Accept-Encoding": "gzip, deflate"})
    try:
        # Counted against client_max_size (= max_body_bytes) as it arrives, still compressed.
        if request.content.is_eof():
            data = await request.read()  # all of it has arrived (a small body): nothing to wait for
        else:
            async with asyncio.timeout(settings.body_timeout_s):
                data = await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {settings.body_timeout_s:g} s "
                             "(body_timeout_s); the connection is closed") from None
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(settings.max_body_bytes) from None
    except web.HTTPException:
        raise
    except Exception as e:  # a broken chunked encoding, a connection reset mid-body
        raise BadRequest(f"cannot read the request body: {type(e).__name__}: {e}", code="bad_encoding") from None
    if encoding == "identity":
        return data
    return inflate(data, encoding, settings.max_body_bytes)
