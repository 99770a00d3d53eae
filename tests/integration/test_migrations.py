"""Migrations: concurrent runners, bookkeeping, checksums, partitions."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import date

import asyncpg
import pytest

from tice_collector.db import migrate as migrate_module
from tice_collector.db.migrate import MigrationError, discover, migrate, pending
from tice_collector.db.records import TABLES


@pytest.mark.slow  # starts two collector processes
async def test_two_collectors_migrating_one_empty_database_at_once(empty_database_url):
    env = {**os.environ, "TICE_DATABASE_URL": empty_database_url}
    procs = [subprocess.Popen([sys.executable, "-m", "tice_collector.cli", "migrate"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    said = sorted(out.strip() for out, _ in outputs)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in discover())
    assert said[0] == f"applied: {names}" and said[1] == "database is up to date", said
    conn = await asyncpg.connect(empty_database_url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        assert [r["version"] for r in rows] == [m.version for m in discover()]
        assert await pending(conn) == []
    finally:
        await conn.close()


async def test_concurrent_in_process_runners_apply_once(empty_database_url):
    conns = [await asyncpg.connect(empty_database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(discover())]
    finally:
        for c in conns:
            await c.close()


async def test_changed_migration_file_stops_startup(database_url, monkeypatch):
    original = discover()
    tampered = [migrate_module.Migration(m.version, m.name, m.sql + "\n-- edited") for m in original]
    monkeypatch.setattr(migrate_module, "discover", lambda: tampered)
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(MigrationError, match="checksum mismatch"):
            await migrate_module.migrate(conn)
    finally:
        await conn.close()


async def test_unknown_applied_migration_is_reported(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
        with pytest.raises(MigrationError, match="newer version"):
            await pending(conn)
    finally:
        await conn.close()


async def test_record_from_a_far_clock_lands_in_default_partition_and_moves_later(db):
    # A device whose clock says 2031 goes to the DEFAULT partition; creating that month's
    # partition later moves it there instead of failing.
    await db.execute("INSERT INTO schools (uai, name, zone, kind) VALUES ('0210001A', 'x', 'A', 'nursery')")
    device = await db.fetchval("INSERT INTO devices (serial, kind, school) VALUES ('S', 'laptop', '0210001A') "
                               "RETURNING id")
    await db.execute(
        "INSERT INTO usage_records (device_id, spool, seq, at, at_corrected, received_at, duration_s, active_s, "
        "idle_s, locked_s, no_session_s, source) VALUES ($1, gen_random_uuid(), 1, '2031-05-03T10:00:00Z', now(), "
        "now(), 60, 60, 0, 0, 0, 'x11')", device)
    assert await db.fetchval("SELECT count(*) FROM usage_records_default") == 1
    await db.fetchval("SELECT tice_ensure_partitions($1, $2)", date(2031, 5, 1), date(2031, 5, 1))
    assert await db.fetchval("SELECT count(*) FROM usage_records_default") == 0
    assert await db.fetchval("SELECT count(*) FROM usage_records_203105") == 1


async def test_0005_restores_first_enrolment_dates_and_one_spelling_per_serial(empty_database_url):
    conn = await asyncpg.connect(empty_database_url)
    try:
        earlier = [m for m in discover() if m.version < 5]
        for m in earlier:
            await conn.execute(m.sql)
        await conn.execute("INSERT INTO schools (uai, name, zone, kind) VALUES ('0210001A', 'A', 'A', 'elementary')")
        ids = {}
        for serial in (" cb-001", "CB-002", "cb-002", "LP-003"):
            ids[serial] = await conn.fetchval(
                "INSERT INTO devices (serial, kind, school, enrolled_at) VALUES ($1, 'laptop', '0210001A', "
                "now()) RETURNING id", serial)
        # cb-001 enrolled 40 days ago, then re-enrolled today (which reset enrolled_at).
        await conn.execute("INSERT INTO device_tokens (digest, device_id, created_at, revoked_at) VALUES "
                           "('\\x01', $1, now() - interval '40 days', now()), ('\\x02', $1, now(), NULL)",
                           ids[" cb-001"])
        (latest,) = [m for m in discover() if m.version == 5]
        async with conn.transaction():
            await conn.execute(latest.sql)
        rows = {r["id"]: r for r in await conn.fetch(
            "SELECT id, serial, enrolled_at, now() - enrolled_at AS age FROM devices")}
        assert rows[ids[" cb-001"]]["serial"] == "CB-001"
        assert rows[ids[" cb-001"]]["age"].days == 40
        assert rows[ids["LP-003"]]["age"].days == 0  # no older token: kept
        # Two rows that would share a spelling keep theirs: an admin merges them.
        assert {rows[ids["CB-002"]]["serial"], rows[ids["cb-002"]]["serial"]} == {"CB-002", "cb-002"}
        assert await conn.fetchval("SELECT count(*) FROM information_schema.columns WHERE "
                                   "table_name = 'enroll_secrets' AND column_name = 'devices_created'") == 1
    finally:
        await conn.close()


async def test_the_partitioned_raw_tables_are_those_of_the_record_types(db):
    """tice_ensure_partitions() names the raw tables it partitions by hand: each record type's table,
    and every table partitioned by month, must be on its list."""
    source = await db.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'tice_ensure_partitions'")
    array = re.search(r"ARRAY\[([^\]]*)\]", source)
    assert array is not None, source
    listed = set(re.findall(r"'([a-z_]+)'", array.group(1)))
    record_tables = {t.name for t in TABLES.values()}
    partitioned = {r["name"] for r in await db.fetch(
        "SELECT c.relname AS name FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid")}
    assert listed == record_tables, (sorted(listed - record_tables), sorted(record_tables - listed))
    assert partitioned == record_tables, sorted(partitioned ^ record_tables)
