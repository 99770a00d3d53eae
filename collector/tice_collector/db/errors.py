"""What "the database failed" means, in one place.

CONNECTION_ERRORS: the database is not there right now (no connection, a timeout, a shutdown,
too many clients), as opposed to bad data. DB_ERRORS: any failure of a database call, these and
every error PostgreSQL answers. A data exception or an integrity violation (SQLSTATE classes 22
and 23) comes from the values sent, not from the database: `is_data_error` tells them apart.
"""

from __future__ import annotations

import asyncpg

# InternalClientError: a pooled connection whose server process was terminated (a restart, a
# failover) can fail its next query with it instead of a connection error.
# TimeoutError is asyncio.TimeoutError since Python 3.11.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError, asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.TooManyConnectionsError)

DB_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)


def is_data_error(e: BaseException) -> bool:
    """SQLSTATE classes 22 (data exception) and 23 (integrity): the values sent, not the database."""
    state = getattr(e, "sqlstate", None) or ""
    return isinstance(e, asyncpg.PostgresError) and state[:2] in ("22", "23")
