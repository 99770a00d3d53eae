"""A corrupt spool is moved aside, what SQLite can still read from it is sent under its own
spool id and seqs, and what it cannot read is counted: every record it held is either read
back or counted, exactly, wherever the file was cut."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from tice_agent.spool import Spool, read_stats
from tice_wire import Batch, Usage

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MiB = 1024 * 1024


def usage(i: int) -> Usage:
    return Usage(seq=0, at=AT, duration_s=60.0, active_s=float(i % 60), idle_s=60.0 - i % 60, source="x11")


def working_spool(path: Path, **kw: int) -> tuple[uuid.UUID, dict[int, bytes], int]:
    """A spool that has lived: records sent and acknowledged (their pages reused by newer ones),
    some dropped by its bound. Returns (its id, the rows it holds by seq, its drop count)."""
    sp = Spool(path, **kw)
    for i in range(6):
        sp.add([usage(i * 100 + k) for k in range(100)])
    sp.ack(sp.begin_batch(250, MiB))
    for i in range(4):
        sp.add([usage(i * 25 + k) for k in range(25)])
    rows = {seq: bytes(body) for seq, body in sp.db.execute("SELECT seq, body FROM records")}
    spool, dropped = sp.spool_id, sp.dropped
    sp.close()
    return spool, rows, dropped


def drain(sp: Spool) -> dict[uuid.UUID, list]:
    """Send everything (acknowledged at once); the batches by spool."""
    out: dict[uuid.UUID, list] = {}
    while (batch := sp.begin_batch(100, MiB)).sendable:
        out.setdefault(batch.spool, []).append(batch)
        sp.ack(batch)
    return out


@pytest.mark.parametrize("percent", [5, 10, 25, 50, 75, 90, 99])
@pytest.mark.parametrize("max_bytes", [50 * MiB, 256 * 1024], ids=["4KiB-pages", "1KiB-pages"])
def test_a_truncated_spool_is_salvaged_and_every_record_is_read_or_counted(tmp_path: Path, percent: int,
                                                                           max_bytes: int) -> None:
    path = tmp_path / "spool.sqlite"
    old, rows, old_dropped = working_spool(path, max_bytes=max_bytes)
    assert len(rows) == 450
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * percent // 100])

    sp = Spool(path, max_bytes=max_bytes)
    assert sp.spool_id != old
    aside = [p for p in tmp_path.glob("spool.sqlite.corrupt-*")]
    assert len(aside) == 1 and aside[0].stat().st_size == len(data) * percent // 100
    sent = drain(sp)
    assert set(sent) == {old}  # nothing is sent under the new spool: it holds nothing yet
    got: dict[int, bytes] = {}
    for batch in sent[old]:
        got.update(zip(batch.seqs, batch.bodies, strict=True))
    assert all(rows[seq] == body for seq, body in got.items())  # read back byte for byte, same seq
    unreadable = len(rows) - len(got)
    assert sent[old][-1].dropped == old_dropped + unreadable  # the count travels with its batches
    stats = sp.stats()
    assert (stats.salvaged, stats.unreadable, stats.corrupt_files) == (len(got), unreadable, 1)
    if percent >= 99:
        assert len(got) > 400  # a cut near the end loses little
    assert sp.depth() == 0 and stats.salvaged_waiting == 0
    assert sp.add([usage(1)]) == [1]  # the new spool starts its own seqs


def test_salvaged_batches_are_valid_wire_batches_and_survive_a_restart(tmp_path: Path) -> None:
    from tice_agent.sender import _OutBatch

    path = tmp_path / "spool.sqlite"
    old, _, _ = working_spool(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    sp = Spool(path)
    waiting = sp.stats().salvaged_waiting
    assert waiting > 0
    sp.close()
    sp = Spool(path)  # not corrupt: the salvaged rows wait in it across restarts
    assert sp.stats().salvaged_waiting == waiting and sp.stats().corrupt_files == 1
    batch = sp.begin_batch(100, MiB)
    body = msgspec.json.encode(_OutBatch(device_id=uuid.uuid4(), spool=batch.spool, sent_at=AT,
                                         records=[msgspec.Raw(b) for b in batch.bodies], dropped=batch.dropped,
                                         agent_version="t"))
    decoded = msgspec.json.decode(body, type=Batch)  # the collector's own strict decoder type
    assert decoded.spool == old and [r.seq for r in decoded.records] == batch.seqs


def test_a_spool_with_nothing_readable_still_reports_its_count(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    old, rows, old_dropped = working_spool(path)
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # every page but the first overwritten
    path.write_bytes(bytes(data))
    sp = Spool(path)
    [batch] = drain(sp)[old]
    assert batch.seqs == [] and batch.dropped == old_dropped + len(rows)  # a count and no record
    assert sp.begin_batch(100, MiB).sendable is False  # reported once acknowledged


@pytest.mark.parametrize("garbage", [b"", b"x" * 50, b"SQLite format 3\x00" + b"\x00" * 80])
def test_status_reads_a_corrupt_spool_without_a_traceback(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "spool.sqlite"
    working_spool(path)
    path.write_bytes(garbage + path.read_bytes()[len(garbage) + 100: len(garbage) + 3000])
    stats = read_stats(path)
    assert stats is not None and stats.error is not None and stats.spool is None


def test_a_damaged_row_is_counted_not_sent(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    old, rows, _ = working_spool(path)
    db = sqlite3.connect(path)
    victim = sorted(rows)[10]
    db.execute("UPDATE records SET body = ? WHERE seq = ?", (b'{"type":"usage","seq":', victim))
    db.commit()
    db.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])
    sp = Spool(path)
    got = {s for b in drain(sp)[old] for s in b.seqs}
    assert victim not in got and sp.stats().unreadable == len(rows) - len(got)
