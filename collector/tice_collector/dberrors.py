"""What a database error raised while answering a request means for the client.

A data exception or an integrity violation (SQLSTATE classes 22 and 23: a NUL character in a
text value, a number out of range, a value a CHECK refuses) comes from the request's own values:
that is the client's input, a 400 (409 for a duplicate), and no outage. Anything else (no
connection, a timeout, a shutdown) is the database's trouble: a 503 with Retry-After, so a
device keeps its data and retries.
"""

from __future__ import annotations

import asyncpg

from tice_collector.db.errors import is_data_error
from tice_collector.errors import ApiError, BadRequest, Conflict, Unavailable


def as_api_error(e: BaseException, retry_after: int) -> ApiError:
    """The answer for a database error met while serving a request."""
    if is_data_error(e):
        message = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        if isinstance(e, asyncpg.UniqueViolationError):
            return Conflict(f"already exists: {message}")
        return BadRequest(f"a value of the request cannot be stored: {message}", code="invalid")
    return Unavailable("the database is unavailable", retry_after=retry_after)
