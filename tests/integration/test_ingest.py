"""Enrol, ingest and resend over real HTTP into a real PostgreSQL."""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from tests.helpers import add_school, auth, batch, enroll, usage, usage_batch, wait_until
from tice_collector.app import create_app
from tice_collector.keys import METRICS, WRITER


async def test_enrolled_device_reports_are_stored(client, db):
    secret = await add_school(db)
    dev = await enroll(client, secret)
    body = usage_batch(dev["device_id"], 10)
    resp = await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (10, 0, 0)
    rows = await db.fetch("SELECT seq, active_s, source FROM usage_records WHERE device_id = $1 ORDER BY seq",
                          uuid.UUID(dev["device_id"]))
    assert [r["seq"] for r in rows] == list(range(1, 11))
    assert all(r["active_s"] == 30.0 and r["source"] == "x11" for r in rows)
    seen = await db.fetchval("SELECT last_seen_at FROM devices WHERE id = $1", uuid.UUID(dev["device_id"]))
    assert seen is not None


async def test_resent_batch_is_stored_once(client, db):
    secret = await add_school(db)
    dev = await enroll(client, secret)
    body = usage_batch(dev["device_id"], 25)
    first = await (await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))).json()
    again = await (await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))).json()
    assert (first["accepted"], first["duplicates"]) == (25, 0)
    assert (again["accepted"], again["duplicates"]) == (0, 25)
    assert await db.fetchval("SELECT count(*) FROM usage_records") == 25
    # The writer knew the spool had delivered these seqs: the resend went straight to conflict
    # handling, with no failed plain insert first (which PostgreSQL would log as an error).
    assert client.app[METRICS].flushes_retried._value.get() == 0


async def test_a_batch_partly_stored_already_stores_the_rest_and_counts_both(client, db):
    secret = await add_school(db)
    dev = await enroll(client, secret)
    device = uuid.UUID(dev["device_id"])
    now = datetime.now(UTC)
    first = usage_batch(dev["device_id"], 10, now=now - timedelta(minutes=20))  # one a minute, 30 to 21 min ago
    assert (await (await client.post("/api/v1/reports", json=first, headers=auth(dev["token"]))).json())["accepted"] == 10
    # Seqs 6-10 again (say the answer was lost), then 11-15: one batch, half of it stored already.
    overlap = batch(dev["device_id"], first["records"][5:] + [usage(s, now - timedelta(minutes=31 - s))
                                                              for s in range(11, 16)],
                    spool=first["spool"], dropped=3)
    result = await (await client.post("/api/v1/reports", json=overlap, headers=auth(dev["token"]))).json()
    assert (result["accepted"], result["duplicates"]) == (5, 5), result
    assert [r["seq"] for r in await db.fetch("SELECT seq FROM usage_records WHERE device_id = $1 ORDER BY seq",
                                             device)] == list(range(1, 16))
    # The rest of the flush was written with the records: none of it was lost with the first try.
    spool = await db.fetchrow("SELECT dropped, seqs::text AS seqs FROM device_spools WHERE device_id = $1", device)
    assert (spool["dropped"], spool["seqs"]) == (3, "{[1,16)}")
    assert client.app[METRICS].flushes_retried._value.get() == 0


async def test_a_record_another_collector_stored_fails_the_plain_insert_and_is_answered_a_duplicate(client, db):
    """A flush of seqs this process has not written yet goes as a plain insert; when another
    collector process (workers > 1, a second replica) stored one of them, that insert fails
    whole and the flush is written again with conflict handling: nothing lost or doubled."""
    secret = await add_school(db)
    dev = await enroll(client, secret)
    device = uuid.UUID(dev["device_id"])
    now = datetime.now(UTC)
    first = usage_batch(dev["device_id"], 10, now=now - timedelta(minutes=20))  # seqs 1-10, 30 to 21 min ago
    assert (await (await client.post("/api/v1/reports", json=first, headers=auth(dev["token"]))).json())["accepted"] == 10
    later = [usage(s, now - timedelta(minutes=31 - s)) for s in range(11, 16)]
    # Seq 11 as another collector process would have stored it, behind this one's back.
    await db.execute("INSERT INTO usage_records (device_id, spool, seq, at, at_corrected, received_at, duration_s, "
                     "active_s, idle_s, locked_s, no_session_s, source) VALUES ($1, $2, 11, $3, $3, now(), 60, 30, 30, 0, 0, 'x11')",
                     device, uuid.UUID(first["spool"]), datetime.fromisoformat(later[0]["at"]))
    second = batch(dev["device_id"], later, spool=first["spool"])
    result = await (await client.post("/api/v1/reports", json=second, headers=auth(dev["token"]))).json()
    assert (result["accepted"], result["duplicates"]) == (4, 1), result
    assert await db.fetchval("SELECT count(*) FROM usage_records WHERE device_id = $1", device) == 15
    assert client.app[METRICS].flushes_retried._value.get() == 1
    seqs = await db.fetchval("SELECT seqs::text FROM device_spools WHERE device_id = $1", device)
    assert seqs == "{[1,16)}"


async def test_a_seq_repeated_with_another_time_is_answered_for_its_own_request(client, db):
    """An agent restored from an old disk image sends a seq again with another time: another
    row. Sent at once with a resend of the stored one, each request is answered for its own."""
    secret = await add_school(db)
    dev = await enroll(client, secret)
    now = datetime.now(UTC)
    spool = str(uuid.uuid4())
    stored = batch(dev["device_id"], [usage(5, now - timedelta(minutes=30))], spool=spool)
    assert (await (await client.post("/api/v1/reports", json=stored, headers=auth(dev["token"]))).json())["accepted"] == 1
    repeat = batch(dev["device_id"], [usage(5, now - timedelta(minutes=10))], spool=spool)
    for _ in range(5):  # in one flush or not: each answer must be its own request's
        answers = await asyncio.gather(*(client.post("/api/v1/reports", json=b, headers=auth(dev["token"]))
                                         for b in (stored, repeat)))
        got = [await a.json() for a in answers]
        assert (got[0]["accepted"], got[0]["duplicates"]) == (0, 1), got
        repeat = batch(dev["device_id"], [usage(5, datetime.fromisoformat(repeat["records"][0]["at"])
                                                + timedelta(seconds=1))], spool=spool)
        assert (got[1]["accepted"], got[1]["duplicates"]) == (1, 0), got
    assert await db.fetchval("SELECT count(*) FROM usage_records WHERE seq = 5") == 6


async def test_gzip_body_and_every_record_type(client, db):
    secret = await add_school(db)
    dev = await enroll(client, secret)
    now = datetime.now(UTC).replace(microsecond=0)
    at = now.isoformat()
    records = [
        usage(1, now),
        {"type": "health", "seq": 2, "at": at, "cpu_load_ratio": 0.5, "memory_used_ratio": 0.4,
         "disk_free_bytes": 10**10, "battery_ratio": 0.9, "battery_plugged": True, "boot_at": at},
        {"type": "link", "seq": 3, "at": at, "interface": "wifi", "link_up": True, "rtt_s": 0.02, "dns_ok": True},
        {"type": "modem", "seq": 4, "at": at, "up": True, "state": "connected", "technology": "hspa+",
         "signal_ratio": 0.6, "rx_bytes": 1000, "tx_bytes": 200},
        {"type": "projector", "seq": 5, "at": at, "up": True, "power": "on", "lamp_hours": 1200, "fan": "ok"},
        {"type": "display", "seq": 6, "at": at, "duration_s": 60, "external_s": 45, "external_connected": True,
         "displays": 2},
        {"type": "disk", "seq": 7, "at": at, "present": True, "free_bytes": 5, "total_bytes": 10, "smart_ok": True},
        {"type": "probe", "seq": 8, "at": at, "probe": "usage", "ok": False, "duration_s": 0.1,
         "error": "TimeoutError"},
    ]
    payload = gzip.compress(json.dumps(batch(dev["device_id"], records)).encode())
    resp = await client.post("/api/v1/reports", data=payload, headers={
        **auth(dev["token"]), "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["accepted"] == 8
    for table in ("usage", "health", "link", "modem", "projector", "display", "disk", "probe"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}_records") == 1, table
    assert await db.fetchval("SELECT technology FROM modem_records") == "hspa+"
    assert await db.fetchval("SELECT external_s FROM display_records") == 45


async def test_peripheral_records_are_stored_field_for_field(client, db):
    """Every field of the modem, projector and disk records lands in its own column; bad values
    (an operator code that is not one, a ninth lamp, an identity that is not a hash) are a 400."""
    from tice_wire import Disk, Modem, Projector, encode

    dev = await enroll(client, await add_school(db))
    now = datetime.now(UTC).replace(microsecond=0)
    ident = "0123456789abcdef" * 2
    modem = Modem(seq=1, at=now, up=True, modem_id=ident, state="data_limit", technology="lte", signal_ratio=0.5,
                  bars=3, rssi_dbm=-71.0, rsrp_dbm=-105.0, rsrq_db=-14.0, sinr_db=-7.0, roaming=False, plmn="20801",
                  rx_bytes=100, tx_bytes=10, connected_s=30.0, duration_s=60.0, session_s=3600.0,
                  session_rx_bytes=1000, session_tx_bytes=100, total_connected_s=86400.0 * 40,
                  total_rx_bytes=10**10, total_tx_bytes=10**9)
    projector = Projector(seq=2, at=now, up=True, projector_id=ident, power="cooling", duration_s=90.0,
                          lamp_hours=3021, lamp_on=True, lamps_hours=[3021, 2980], lamps_on=[True, False],
                          fan="ok", lamp="error", temperature="warning", cover="ok", filter="ok", other="ok",
                          input_kind="digital", input_number=1, name="Salle 3", manufacturer="EPSON",
                          model="EB-X41", pjlink_class=2)
    disk = Disk(seq=3, at=now, present=False, disk_id=ident, last_connected_at=now - timedelta(days=40))
    body = msgspec.json.decode(encode([modem, projector, disk]))
    resp = await client.post("/api/v1/reports", json=batch(dev["device_id"], body), headers=auth(dev["token"]))
    assert resp.status == 200, await resp.text()
    for record, table in ((modem, "modem_records"), (projector, "projector_records"), (disk, "disk_records")):
        row = dict(await db.fetchrow(f"SELECT * FROM {table}"))
        for name in record.__struct_fields__:
            assert row[name] == getattr(record, name), (table, name)
    for bad in ({"type": "modem", "seq": 9, "at": now.isoformat(), "up": True, "plmn": "Orange"},
                {"type": "projector", "seq": 9, "at": now.isoformat(), "up": True, "lamps_hours": [1] * 9},
                {"type": "disk", "seq": 9, "at": now.isoformat(), "present": True, "disk_id": "WD-WX21A19ABCDE"}):
        resp = await client.post("/api/v1/reports", json=batch(dev["device_id"], [bad]), headers=auth(dev["token"]))
        assert resp.status == 400, bad


async def test_device_clock_off_is_corrected(client, db):
    """A laptop whose clock is 2 hours behind: its record times are shifted by the offset."""
    secret = await add_school(db)
    dev = await enroll(client, secret)
    real_now = datetime.now(UTC)
    device_now = real_now - timedelta(hours=2)
    taken = device_now - timedelta(minutes=5)
    body = batch(dev["device_id"], [usage(1, taken)], sent_at=device_now)
    result = await (await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))).json()
    assert result["clock_corrected"] is True
    assert abs(result["clock_offset_s"] - 7200) < 30
    row = await db.fetchrow("SELECT at, at_corrected FROM usage_records")
    assert row["at"] == taken  # stored exactly as sent: the delivery key stays stable
    assert abs((row["at_corrected"] - (real_now - timedelta(minutes=5))).total_seconds()) < 30
    # The same batch resent later (another offset) is still a duplicate.
    again = await (await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)


async def test_small_clock_drift_is_left_alone(client, db):
    secret = await add_school(db)
    dev = await enroll(client, secret)
    device_now = datetime.now(UTC) + timedelta(seconds=40)
    body = batch(dev["device_id"], [usage(1, device_now - timedelta(minutes=1))], sent_at=device_now)
    result = await (await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))).json()
    assert result["clock_corrected"] is False
    row = await db.fetchrow("SELECT at, at_corrected FROM usage_records")
    assert row["at"] == row["at_corrected"]


async def test_spool_drop_count_is_kept(client, db):
    secret = await add_school(db)
    dev = await enroll(client, secret)
    spool = str(uuid.uuid4())
    for dropped in (3, 7, 5):  # a late retry carrying an older count must not lower it
        body = batch(dev["device_id"], [], spool=spool, dropped=dropped)
        assert (await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))).status == 200
    assert await db.fetchval("SELECT dropped FROM device_spools WHERE spool = $1", uuid.UUID(spool)) == 7


async def test_concurrent_requests_share_transactions_and_all_commit(client, db):
    import asyncio

    secret = await add_school(db)
    devices = [await enroll(client, secret, serial=f"SN-{i}") for i in range(20)]

    async def send(dev):
        body = usage_batch(dev["device_id"], 10)
        resp = await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))
        return resp.status, await resp.json()

    results = await asyncio.gather(*(send(d) for d in devices))
    assert all(status == 200 and r["accepted"] == 10 for status, r in results)
    assert await db.fetchval("SELECT count(*) FROM usage_records") == 200
    flushes = client.server.app[METRICS].flushes
    # 20 requests arrived together: the writer must have grouped some of them.
    assert flushes.labels("ok")._value.get() < 20


def test_wire_schema_decodes_what_the_tests_send():
    from tice_wire import Batch

    now = datetime.now(UTC)
    raw = json.dumps(usage_batch(str(uuid.uuid4()), 3, now=now)).encode()
    decoded = msgspec.json.decode(raw, type=Batch)
    assert [r.seq for r in decoded.records] == [1, 2, 3]


async def test_a_second_send_while_the_first_is_in_flight_goes_with_conflict_handling(aiohttp_client, make_settings,
                                                                                      db, database_url):
    """An agent whose first send was answered 503 (a slow commit) sends again while that flush is
    still in flight: the second send is not taken for new, so it goes with conflict handling
    and no plain insert fails (which PostgreSQL would log as an error). A second flush runs
    beside the first only past `writer_parallel_records` queued (a backlog): one record here."""
    client = await aiohttp_client(create_app(make_settings(writer_parallel_records=1)))
    secret = await add_school(db)
    dev = await enroll(client, secret)
    device = uuid.UUID(dev["device_id"])
    now = datetime.now(UTC)
    first = usage_batch(dev["device_id"], 10, now=now - timedelta(minutes=30))
    assert (await (await client.post("/api/v1/reports", json=first, headers=auth(dev["token"]))).json())["accepted"] == 10
    again = usage_batch(dev["device_id"], 10, start_seq=11, spool=first["spool"], now=now - timedelta(minutes=19))
    holder = await asyncpg.connect(database_url)
    try:
        # The device's row held: the first send's flush waits for it, in flight.
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", device)
        sends = [asyncio.ensure_future(client.post("/api/v1/reports", json=again, headers=auth(dev["token"])))]

        async def waiting(n: int) -> bool:
            return await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                     "AND left(query, 5) = 'WITH '") >= n
        await wait_until(lambda: waiting(1), "the first send's flush waiting for the device row", timeout=60)
        sends.append(asyncio.ensure_future(client.post("/api/v1/reports", json=again, headers=auth(dev["token"]))))
        await wait_until(lambda: waiting(2), "the second send's flush waiting too", timeout=60)
        await held.rollback()
        got = sorted([(r["accepted"], r["duplicates"]) for r in [await (await s).json() for s in sends]])
    finally:
        await holder.close()
    assert got == [(0, 10), (10, 0)], got
    assert await db.fetchval("SELECT count(*) FROM usage_records WHERE device_id = $1", device) == 20
    assert client.app[METRICS].flushes_retried._value.get() == 0


async def _held_device(database_url: str, device: uuid.UUID) -> asyncpg.Connection:
    """A connection holding the device's row: a flush of that device's records waits for it."""
    holder = await asyncpg.connect(database_url)
    await holder.execute("BEGIN")
    await holder.execute("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", device)
    return holder


async def _flushes_waiting(db: asyncpg.Pool) -> int:
    return await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                             "AND left(query, 5) = 'WITH '")


async def test_requests_that_come_during_a_flush_go_together_in_the_next(aiohttp_client, make_settings, db,
                                                                         database_url):
    """While one flush is in flight and few records are queued, the requests that arrive wait
    for it and then go in one flush: one commit for them all, not one each. (The flush in
    flight is held here far past `writer_turn_wait_s`'s default, so the wait is lengthened.)"""
    client = await aiohttp_client(create_app(make_settings(writer_turn_wait_s=60)))
    secret = await add_school(db)
    devs = [await enroll(client, secret, serial=f"SN-{i}") for i in range(6)]
    metrics = client.app[METRICS]
    holder = await _held_device(database_url, uuid.UUID(devs[0]["device_id"]))
    try:
        sends = [asyncio.ensure_future(client.post("/api/v1/reports", json=usage_batch(devs[0]["device_id"], 10),
                                                   headers=auth(devs[0]["token"])))]
        await wait_until(lambda: _flushes_waiting(db), "the first flush waiting for the device row", timeout=60)
        sends += [asyncio.ensure_future(client.post("/api/v1/reports", json=usage_batch(d["device_id"], 10),
                                                    headers=auth(d["token"]))) for d in devs[1:]]
        # All five handed to the writer (the handler observes the batch size right before).
        await wait_until(lambda: metrics.batch_size._sum.get() == 60, "the five other requests queued",
                         timeout=60)
        assert not any(s.done() for s in sends), [s.done() for s in sends]
        assert await _flushes_waiting(db) == 1
        assert client.app[WRITER].depth() == 5  # the metric tice_writer_queue_depth
        await holder.execute("ROLLBACK")
        answers = [await (await s).json() for s in sends]
    finally:
        await holder.close()
    assert [a["accepted"] for a in answers] == [10] * 6, answers
    assert metrics.flushes_ok._value.get() == 2
    assert metrics.flush_records._sum.get() == 60


async def _beside_a_held_flush(client, db, database_url: str, held: dict, records: int,
                               beside: Callable[[], Awaitable[Any]]) -> Any:
    """Run `beside()` while a flush of `records` records of device `held` is in flight (its row
    held from another connection); check that flush is still waiting once `beside()` returned,
    then let it go and check it stored its records. Returns what `beside()` returned."""
    holder = await _held_device(database_url, uuid.UUID(held["device_id"]))
    try:
        first = asyncio.ensure_future(client.post("/api/v1/reports", json=usage_batch(held["device_id"], records),
                                                  headers=auth(held["token"])))
        await wait_until(lambda: _flushes_waiting(db), "the first flush waiting for the device row", timeout=60)
        result = await beside()
        assert not first.done()
        await holder.execute("ROLLBACK")
        assert (await (await first).json())["accepted"] == records
    finally:
        await holder.close()
    return result


async def test_a_backlog_starts_a_second_flush_beside_the_one_in_flight(aiohttp_client, make_settings, db,
                                                                         database_url):
    """Past `writer_parallel_records` queued records (a backlog drain), a second flush starts
    while the first is in flight, on its own connection: here it commits while the first still
    waits."""
    client = await aiohttp_client(create_app(make_settings(writer_parallel_records=20)))
    secret = await add_school(db)
    held, other = await enroll(client, secret, serial="SN-1"), await enroll(client, secret, serial="SN-2")

    async def beside() -> None:
        resp = await client.post("/api/v1/reports", json=usage_batch(other["device_id"], 30),
                                 headers=auth(other["token"]))
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["accepted"] == 30
    await _beside_a_held_flush(client, db, database_url, held, 10, beside)


async def test_a_flush_held_up_does_not_hold_up_the_other_devices(client, db, database_url):
    """A flush that waits on a row lock (an operator's transaction, a sync) is left behind after
    `writer_turn_wait_s` (0.1 s): the other devices' requests go in a flush beside it."""
    secret = await add_school(db)
    held, other = await enroll(client, secret, serial="SN-1"), await enroll(client, secret, serial="SN-2")

    async def beside() -> None:
        resp = await client.post("/api/v1/reports", json=usage_batch(other["device_id"], 10),
                                 headers=auth(other["token"]))
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["accepted"] == 10
    await _beside_a_held_flush(client, db, database_url, held, 10, beside)


async def test_a_burst_of_small_requests_starts_a_second_flush_before_the_queue_is_full(aiohttp_client, make_settings,
                                                                                       db, database_url):
    """Half of `writer_queue_max` requests queued behind a flush in flight start a second flush,
    however few records they carry: else one-record requests would fill the queue (503) before
    `writer_parallel_records` records were queued."""
    client = await aiohttp_client(create_app(make_settings(writer_queue_max=10, writer_turn_wait_s=60)))
    secret = await add_school(db)
    devs = [await enroll(client, secret, serial=f"SN-{i}") for i in range(6)]

    async def beside() -> None:
        answers = await asyncio.gather(*[client.post("/api/v1/reports", json=usage_batch(d["device_id"], 1),
                                                     headers=auth(d["token"])) for d in devs[1:]])
        assert [r.status for r in answers] == [200] * 5, [await r.text() for r in answers]
    await _beside_a_held_flush(client, db, database_url, devs[0], 1, beside)


async def test_a_device_row_held_elsewhere_holds_up_that_device_alone(aiohttp_client, make_settings, db,
                                                                       database_url, caplog):
    """A flush that has waited writer_lock_timeout_s for device rows other transactions hold
    (PostgreSQL's lock_timeout) answers the held devices' requests 503, storing nothing of
    them, and writes the others in one flush, without waiting for the held rows again. A held
    device's resend is then answered 503 at once, and stored once its row is released."""
    client = await aiohttp_client(create_app(make_settings(
        writer_lock_timeout_s=0.5, writer_linger_s=0.5, writer_tasks=1, db_timeout_s=60.0)))
    secret = await add_school(db)
    devices = [await enroll(client, secret, serial=f"SN-{i}") for i in range(6)]
    held = devices[:3]
    holders = [await _held_device(database_url, uuid.UUID(d["device_id"])) for d in held]
    metrics = client.app[METRICS]

    async def send(dev: dict, seq: int = 1) -> tuple[int, dict]:
        resp = await client.post("/api/v1/reports", json=usage_batch(dev["device_id"], 10, start_seq=seq),
                                 headers=auth(dev["token"]))
        return resp.status, await resp.json()
    try:
        # One flush for the six (writer_linger_s), held up by three devices' rows.
        answers = await asyncio.gather(*(send(d) for d in devices))
        assert [status for status, _ in answers] == [503] * 3 + [200] * 3, answers
        assert all("another operation" in body["detail"] for _, body in answers[:3]), answers
        assert [body["accepted"] for _, body in answers[3:]] == [10] * 3, answers
        # One lock wait, then the three others in one flush: before, each request was written
        # alone and each held one waited for its row again (a flush error each).
        assert (metrics.flushes_error._value.get(), metrics.flushes_ok._value.get()) == (1, 1)
        # The held device's resend, with an unheld device's report in the same flush: the held
        # one answered 503 without a lock wait (no flush error), the other stored.
        again = await asyncio.gather(send(held[0]), send(devices[3], seq=11))
        assert [status for status, _ in again] == [503, 200], again
        assert (metrics.flushes_error._value.get(), metrics.flushes_ok._value.get()) == (1, 2)
    finally:
        for holder in holders:
            await holder.execute("ROLLBACK")
            await holder.close()
    stored = [await db.fetchval("SELECT count(*) FROM usage_records WHERE device_id = $1", uuid.UUID(d["device_id"]))
              for d in devices]
    assert stored == [0, 0, 0, 20, 10, 10], stored
    assert caplog.text.count("held by another transaction") == 1, caplog.text
    # Released: the resend is stored, and the device is no longer checked first.
    status, body = await send(held[0])
    assert (status, body.get("accepted")) == (200, 10), body
    assert uuid.UUID(held[0]["device_id"]) not in client.app[WRITER]._held


async def test_a_device_referenced_by_an_open_insert_is_not_held(aiohttp_client, make_settings, db, database_url):
    """An insert that references a device (the rollup's daily_usage row, left waiting on another
    device's row) holds only a KEY SHARE lock on it: the flush, which takes the device's row FOR
    NO KEY UPDATE, does not wait for it. Before, one rollup waiting on one held device made the
    flushes of every device it had written wait, then answered them 503."""
    client = await aiohttp_client(create_app(make_settings(writer_lock_timeout_s=0.5, db_timeout_s=60.0)))
    secret = await add_school(db)
    dev = await enroll(client, secret)
    rollup = await asyncpg.connect(database_url)
    try:
        await rollup.execute("BEGIN")
        await rollup.execute("INSERT INTO daily_usage (device_id, day, active_s) VALUES ($1, current_date, 60)",
                             uuid.UUID(dev["device_id"]))
        resp = await client.post("/api/v1/reports", json=usage_batch(dev["device_id"], 10), headers=auth(dev["token"]))
        assert (resp.status, (await resp.json()).get("accepted")) == (200, 10)
        assert client.app[METRICS].flushes_error._value.get() == 0
    finally:
        await rollup.execute("ROLLBACK")
        await rollup.close()


async def test_a_spool_row_held_elsewhere_holds_up_that_device_alone(aiohttp_client, make_settings, db,
                                                                      database_url):
    """A device's spool row held by another transaction counts as the device held: its request
    is answered 503, the others in its flush are written together."""
    client = await aiohttp_client(create_app(make_settings(
        writer_lock_timeout_s=0.5, writer_linger_s=0.5, writer_tasks=1, db_timeout_s=60.0)))
    secret = await add_school(db)
    devices = [await enroll(client, secret, serial=f"SN-{i}") for i in range(4)]
    spool = str(uuid.uuid4())
    first = await client.post("/api/v1/reports", json=usage_batch(devices[0]["device_id"], 5, spool=spool),
                               headers=auth(devices[0]["token"]))
    assert first.status == 200, await first.text()
    metrics = client.app[METRICS]
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1 FROM device_spools WHERE device_id = $1 FOR UPDATE",
                             uuid.UUID(devices[0]["device_id"]))
        answers = await asyncio.gather(*(
            client.post("/api/v1/reports", json=usage_batch(d["device_id"], 10, start_seq=6, spool=spool),
                        headers=auth(d["token"])) for d in devices))
        assert [r.status for r in answers] == [503, 200, 200, 200], [await r.text() for r in answers]
        assert "another operation" in (await answers[0].json())["detail"]
        # The first report's flush, then one lock wait, then the three others in one flush.
        assert (metrics.flushes_error._value.get(), metrics.flushes_ok._value.get()) == (1, 2)
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()


async def test_a_locked_table_answers_503_after_one_lock_wait(aiohttp_client, make_settings, db, database_url):
    """A lock on no device's rows (here a whole table, locked by an operator) is waited for once:
    the flush's requests are then answered 503 (waiting again would hold up the requests queued
    behind them too), and nothing of them is stored until they are sent again."""
    client = await aiohttp_client(create_app(make_settings(writer_lock_timeout_s=0.3, db_timeout_s=60.0)))
    secret = await add_school(db)
    dev = await enroll(client, secret)
    body = usage_batch(dev["device_id"], 10)
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("BEGIN")
        await holder.execute("LOCK TABLE usage_records IN SHARE MODE")
        resp = await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))
        assert resp.status == 503, await resp.text()
        assert "busy with another operation" in (await resp.json())["detail"]
        assert client.app[METRICS].flushes_error._value.get() == 1
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()
    again = await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))
    assert (await again.json())["accepted"] == 10
    assert not client.app[WRITER]._held


async def _answered_503_while_held(aiohttp_client, make_settings, db, database_url,
                                   while_held: Callable[[], Awaitable[Any]], **settings: Any) -> tuple[Any, dict, dict]:
    """A device's report of 10 records sent while another session holds its row, so that one of
    the writer's timeouts answers it 503; `while_held()` runs before the row is released.
    Returns the client, the enrolled device (`device_id`, `token`) and the report."""
    client = await aiohttp_client(create_app(make_settings(**settings)))
    secret = await add_school(db)
    dev = await enroll(client, secret)
    body = usage_batch(dev["device_id"], 10)
    holder = await _held_device(database_url, uuid.UUID(dev["device_id"]))
    try:
        resp = await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))
        assert resp.status == 503, await resp.text()
        await while_held()
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()
    return client, dev, body


async def test_a_flush_past_the_database_timeout_is_rolled_back_not_left_waiting(aiohttp_client, make_settings, db):
    """A flush that takes longer than `db_timeout_s` (a slow disk: here, an insert trigger that
    sleeps) is answered 503 and given up by PostgreSQL itself (statement_timeout): no backend
    stays running it to commit later, nothing of it is stored, and its resend is stored and
    counted as stored."""
    client = await aiohttp_client(create_app(make_settings(db_timeout_s=1.0, writer_lock_timeout_s=0.5)))
    secret = await add_school(db)
    dev = await enroll(client, secret)
    body = usage_batch(dev["device_id"], 10)
    await db.execute("CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN PERFORM pg_sleep(600); RETURN NULL; END $$; "
                     "CREATE TRIGGER slow_insert AFTER INSERT ON usage_records "
                     "FOR EACH STATEMENT EXECUTE FUNCTION slow_insert()")
    try:
        resp = await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))
        assert resp.status == 503, await resp.text()
        assert "database is unavailable" in (await resp.json())["detail"]

        async def no_flush_left() -> bool:
            return not await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                         "AND left(query, 5) = 'WITH '")
        await wait_until(no_flush_left, "no backend left running the flush", timeout=60)
    finally:
        await db.execute("DROP TRIGGER slow_insert ON usage_records")
    device = uuid.UUID(dev["device_id"])
    assert await db.fetchval("SELECT count(*) FROM usage_records WHERE device_id = $1", device) == 0
    again = await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))
    assert (await again.json())["accepted"] == 10
    assert client.app[METRICS].records_stored._value.get() == 10


async def test_requests_answered_503_before_their_flush_committed_are_logged_when_it_does(
        aiohttp_client, make_settings, db, database_url, caplog):
    """Past writer_commit_timeout_s a request is answered 503 while its flush may still commit (a
    row lock held, db_timeout_s longer): once it does, one line says how many were answered
    early, and the resend is counted as duplicates."""
    async def nothing_logged_yet() -> None:
        assert "writer_commit_timeout_s" not in caplog.text

    client, dev, body = await _answered_503_while_held(aiohttp_client, make_settings, db, database_url,
                                                       nothing_logged_yet, writer_commit_timeout_s=0.5,
                                                       db_timeout_s=60.0)
    device = uuid.UUID(dev["device_id"])

    async def stored() -> bool:
        return await db.fetchval("SELECT count(*) FROM usage_records WHERE device_id = $1", device) == 10
    await wait_until(stored, "the held flush committed once the row was released", timeout=60)
    line = "1 of this flush's 1 requests had been answered 503 after writer_commit_timeout_s (0.5 s)"
    await wait_until(lambda: line in caplog.text, "the line about the request answered before its commit",
                     timeout=30)
    again = await client.post("/api/v1/reports", json=body, headers=auth(dev["token"]))
    assert (await again.json())["duplicates"] == 10


async def test_the_writer_plans_its_flush_statement_once(client, db):
    """Its connections use a generic plan: left to choose, PostgreSQL planned the statement again
    at every small flush (bench/flush_statement.py)."""
    secret = await add_school(db)
    dev = await enroll(client, secret)
    resp = await client.post("/api/v1/reports", json=usage_batch(dev["device_id"], 3), headers=auth(dev["token"]))
    assert resp.status == 200, await resp.text()
    connections = [link.conn for link in client.app[WRITER]._links if link.conn is not None]
    assert connections, "no writer connection after a flush"
    assert [await c.fetchval("SHOW plan_cache_mode") for c in connections] == ["force_generic_plan"] * len(connections)
