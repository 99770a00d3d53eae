"""Writer transactions take device rows in one order, so two of them never deadlock (40P01).

A flush records last-seen times for every device it carries. Two writer transactions run side
by side; when each took its devices in the order its requests came, one could hold device A
and wait for B while the other held B and waited for A: PostgreSQL then aborts one with a
deadlock and its requests get a 503 (found by the ingest benchmark). The writer now locks a
flush's devices in id order first. Shown here with the real writer code on real PostgreSQL:
while another transaction holds the higher id, a flush that lists the higher id first has
already locked the lower one when it starts waiting.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from tests.helpers import add_school, enroll, wait_until
from tice_collector.db.queries import q
from tice_collector.metrics import Metrics
from tice_collector.writer import Job, Writer


def _job(device_id: uuid.UUID) -> Job:
    return Job(device_id=device_id, spool=uuid.uuid4(), dropped=0, received_at=datetime.now(UTC),
               agent_version="test", records={}, size=0, seqs=[1])


async def _waiting_for_a_lock(db: asyncpg.Connection, pid: int) -> bool:
    return bool(await db.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid))


async def _lower_was_free(database_url: str, db: asyncpg.Connection, table: str, key: str, low: uuid.UUID,
                          high: uuid.UUID, work: Callable[[asyncpg.Connection], Awaitable[object]],
                          who: str, what: str) -> bool:
    """Run `work(conn)` (one transaction, on a connection of its own) while another transaction holds
    the row of `table` whose `key` is `high`. Once `work` waits for that row, tell whether the row
    whose `key` is `low` was still free (another transaction could lock it NOWAIT); then let `work`
    through and wait for it to end. `who` and `what` name the connection and the row it waits for."""
    other = await asyncpg.connect(database_url)
    working = await asyncpg.connect(database_url)
    try:
        holding = other.transaction()
        await holding.start()
        await other.execute(f"SELECT 1 FROM {table} WHERE {key} = $1 FOR UPDATE", high)
        task = asyncio.create_task(work(working))
        pid = working.get_server_pid()
        await wait_until(lambda: _waiting_for_a_lock(db, pid), timeout=60,
                         what=f"{who} (pid {pid}) waiting for {what}")
        try:
            await other.execute(f"SELECT 1 FROM {table} WHERE {key} = $1 FOR UPDATE NOWAIT", low)
            low_was_free = True
        except asyncpg.LockNotAvailableError:
            low_was_free = False
        await holding.rollback()
        await asyncio.wait_for(task, 60)
        return low_was_free
    finally:
        await other.close()
        await working.close()


async def test_a_flush_locks_its_devices_in_id_order(client: Any, db: asyncpg.Connection, database_url: str) -> None:
    secret = await add_school(db)
    ids = sorted([uuid.UUID((await enroll(client, secret, serial=s))["device_id"]) for s in ("SN-LO-1", "SN-HI-2")])
    low, high = ids
    # A new row version of the lower id puts it after the higher one on disk, so a plan that
    # scans the table meets the higher id first too: the order a deadlock needs, either way.
    await db.execute("UPDATE devices SET agent_version = 'before' WHERE id = $1", low)
    writer = Writer(database_url, Metrics(), tasks=1, queue_max=10, batch_records=10, linger_s=0,
                    commit_timeout_s=30, db_timeout_s=60, retry_after_s=1)

    async def flush(flushing: asyncpg.Connection) -> None:
        async with flushing.transaction():
            # The requests came high first: the order a deadlock needs.
            await writer._write(flushing, [_job(high), _job(low)], ())

    # The lower id is already the flush's: another transaction cannot take it now.
    low_was_free = await _lower_was_free(database_url, db, "devices", "id", low, high, flush,
                                         "the flush's connection", "the row the other holds")
    assert not low_was_free, ("the flush waited for the higher id without holding the lower one: "
                              "its devices are not locked in id order")
    seen = await db.fetch("SELECT id, agent_version FROM devices WHERE id = ANY($1::uuid[])", ids)
    assert {r["id"]: r["agent_version"] for r in seen} == {low: "test", high: "test"}


async def test_the_gap_check_skips_a_spool_another_transaction_holds(client: Any, db: asyncpg.Connection,
                                                                      database_url: str) -> None:
    """The snapshot job's gap check (queries.sql spool_gaps_update) never waits for a spool row
    another transaction holds: it checks the others and leaves that one to its next run. Waiting,
    it held every spool row before it (taken in key order, as flushes take them, so no deadlock),
    and the flushes of all those devices waited behind it and were answered 503 as held (a
    newcomer trial: 387 of 477 requests while an operator held 5 devices' spool rows)."""
    device = uuid.UUID((await enroll(client, await add_school(db), serial="SN-GAPS-1"))["device_id"])
    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    for spool in (low, high):
        await db.execute("INSERT INTO device_spools (device_id, spool, last_seen_at) VALUES ($1, $2, now())",
                         device, spool)
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1 FROM device_spools WHERE spool = $1 FOR UPDATE", high)
        await db.execute(q("spool_gaps_update"), 0.0, timeout=60)  # returns at once, not when the holder ends
        checked = await db.fetch("SELECT spool FROM device_spools WHERE device_id = $1 AND gap_check_at IS NOT NULL",
                                 device)
        assert [r["spool"] for r in checked] == [low]
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()
    await db.execute(q("spool_gaps_update"), 0.0)
    assert await db.fetchval("SELECT count(*) FROM device_spools WHERE device_id = $1 AND gap_check_at IS NOT NULL",
                             device) == 2
