"""Numbered SQL migrations, applied under a PostgreSQL advisory lock.

Each file `migrations/NNNN_name.sql` runs in one transaction together with its bookkeeping
row (version, name, checksum), so a migration is never half-applied or applied twice. Two
collectors starting on the same empty database serialize on the lock. A file whose content
changed after it was applied stops start-up: the database and the code disagree.

The runner's own statements (its table, its lock, its rows) stay here rather than in
queries.sql: they run before any migration, and belong to the runner alone.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

# pg_advisory_lock key: "tice" in ASCII, so it is recognisable in pg_locks.
LOCK_KEY = 0x74696365

BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover() -> list[Migration]:
    found = []
    for entry in resources.files("tice_collector.db").joinpath("migrations").iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m[1]), m[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if len({m.version for m in found}) != len(found):
        raise MigrationError("two migration files share a version number")
    return found


async def _applied(conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {r["version"]: r for r in rows}


def _verify(known: list[Migration], applied: dict[int, asyncpg.Record]) -> None:
    by_version = {m.version: m for m in known}
    for version, row in sorted(applied.items()):
        m = by_version.get(version)
        if m is None:
            raise MigrationError(
                f"database has migration {version:04d}_{row['name']} that this collector does not "
                "know: it was migrated by a newer version; upgrade the collector")
        if m.checksum != row["checksum"]:
            raise MigrationError(
                f"migration {version:04d}_{m.name}.sql changed after it was applied "
                "(checksum mismatch); restore the original file and add a new migration instead")


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    known = discover()
    done: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(BOOKKEEPING)
        applied = await _applied(conn)
        _verify(known, applied)
        for m in known:
            if m.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version, m.name, m.checksum)
            done.append(f"{m.version:04d}_{m.name}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return done


async def pending(conn: asyncpg.Connection) -> list[str]:
    """Migrations not yet applied (raises MigrationError on a checksum mismatch)."""
    known = discover()
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = await _applied(conn) if exists else {}
    _verify(known, applied)
    return [f"{m.version:04d}_{m.name}" for m in known if m.version not in applied]
