"""Typed domain errors. Handlers raise them; one middleware turns them into JSON problems."""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    code = "internal"
    # True: the connection is closed once the answer is sent (its request cannot be trusted
    # to end, say a body that stopped arriving).
    close_connection = False

    def __init__(self, detail: str, *, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.headers = headers or {}


class BadRequest(ApiError):
    status, code = 400, "invalid"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, detail: str, *, code: str | None = None, token_given: bool = True) -> None:
        # RFC 6750 §3.1: a bad, expired or revoked token gets error="invalid_token"; a request
        # with no token at all gets the bare challenge.
        challenge = 'Bearer realm="tice"' + (', error="invalid_token"' if token_given else "")
        super().__init__(detail, code=code, headers={"WWW-Authenticate": challenge})


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class RequestTimeout(ApiError):
    status, code = 408, "body_timeout"
    close_connection = True


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "body_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class TooManyRequests(ApiError):
    status, code = 429, "rate_limited"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class Unavailable(ApiError):
    """The database or the writer cannot take the request now; the client should retry."""

    status, code = 503, "unavailable"

    def __init__(self, detail: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(detail, code=code, headers={"Retry-After": str(max(1, retry_after))})
