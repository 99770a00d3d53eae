"""One log line per database outage from asyncpg's pool, instead of a traceback every few seconds.

While the database is away, asyncpg's pool keeps trying to restore its `min_size` connections
and logs each failed try (logger "asyncpg.pool") with a full traceback. `PoolOutageLog` keeps
the first of an outage as one line naming the error, drops the others, and says when a new
connection succeeds again (the pool's `init` callback).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("tice.db")

FLOOR_FAILURE = "Failed to restore the pool connection floor"


class PoolOutageLog(logging.Filter):
    """A filter on asyncpg's pool logger; `down` while an outage lasts, `dropped` counts the lines it kept out."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(FLOOR_FAILURE):
            return True
        if self.down:
            self.dropped += 1
            return False
        self.down = True
        error = record.exc_info[1] if record.exc_info else None
        record.name, record.msg = log.name, "database unreachable: the connection pool cannot reconnect (%s: %s); " \
                                             "retrying quietly until it is back"
        record.args = (type(error).__name__, error)
        record.exc_info, record.exc_text = None, None
        return True

    async def connected(self, conn: Any) -> None:
        """The pool's `init` callback: a new connection was made."""
        if self.down:
            self.down = False
            log.info("database reachable again: the connection pool reconnected")


def pool_outage_log() -> PoolOutageLog:
    """The filter on asyncpg's pool logger (installed once per process, shared by its pools)."""
    logger = logging.getLogger("asyncpg.pool")
    for f in logger.filters:
        if isinstance(f, PoolOutageLog):
            return f
    f = PoolOutageLog()
    logger.addFilter(f)
    return f
