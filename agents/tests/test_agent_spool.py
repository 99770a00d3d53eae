"""The spool: delivery keys, states, bounds (drop oldest, counted), corruption, JSON only."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from agent_testing import Clock
from tice_agent.spool import Spool, read_stats
from tice_wire import Batch, ProbeStatus, Usage

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def usage(active: float = 30.0) -> Usage:
    return Usage(seq=0, at=AT, duration_s=60.0, active_s=active, idle_s=60.0 - active, source="x11")



def test_add_assigns_increasing_seqs_stored_in_the_json(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.sqlite")
    assert sp.add([usage(), usage()]) == [1, 2]
    assert sp.add([usage()]) == [3]
    batch = sp.begin_batch(10, 1 << 20)
    assert batch.seqs == [1, 2, 3]
    decoded = [msgspec.json.decode(b, type=Usage) for b in batch.bodies]
    assert [r.seq for r in decoded] == [1, 2, 3]


def test_rows_are_wire_json_not_pickle(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.sqlite")
    sp.add([usage(12.5)])
    sp.close()
    db = sqlite3.connect(tmp_path / "s.sqlite")
    (body,) = db.execute("SELECT body FROM records").fetchone()
    db.close()
    assert bytes(body).startswith(b"{") and b'"type":"usage"' in bytes(body) and b'"active_s":12.5' in bytes(body)


def test_batch_embeds_as_valid_wire_batch(tmp_path: Path) -> None:
    from tice_agent.sender import _OutBatch

    sp = Spool(tmp_path / "s.sqlite")
    sp.add([usage(), ProbeStatus(seq=0, at=AT, probe="usage", ok=False, duration_s=0.1, error="X: y")])
    b = sp.begin_batch(10, 1 << 20)
    body = msgspec.json.encode(_OutBatch(device_id=uuid.uuid4(), spool=sp.spool_id, sent_at=AT,
                                         records=[msgspec.Raw(x) for x in b.bodies], dropped=sp.dropped,
                                         agent_version="t"))
    batch = msgspec.json.decode(body, type=Batch)  # the collector's own strict decoder type
    assert [r.seq for r in batch.records] == [1, 2] and batch.spool == sp.spool_id


def test_seq_unique_after_reopen_and_after_deleting_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    sp = Spool(path)
    spool_id = sp.spool_id
    sp.add([usage() for _ in range(5)])
    b = sp.begin_batch(10, 1 << 20)
    sp.ack(b)  # every row deleted, including the newest
    assert sp.depth() == 0
    sp.close()
    sp = Spool(path)
    assert sp.spool_id == spool_id
    assert sp.add([usage()]) == [6]  # never 1 again: AUTOINCREMENT
    sp.dead_letter(sp.begin_batch(10, 1 << 20), "test")
    sp.close()
    assert Spool(path).add([usage()]) == [7]


def test_new_file_gets_a_new_spool_id(tmp_path: Path) -> None:
    a = Spool(tmp_path / "a.sqlite")
    b = Spool(tmp_path / "b.sqlite")
    assert a.spool_id != b.spool_id


def test_begin_batch_by_count_and_bytes_and_states(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.sqlite")
    sp.add([usage() for _ in range(10)])
    first = sp.begin_batch(1, 1 << 20)
    size = len(first.bodies[0])
    sp.release(first)
    b = sp.begin_batch(4, 1 << 20)
    assert b.seqs == [1, 2, 3, 4]
    assert sp.depth() == 6  # in flight rows are not ready
    b2 = sp.begin_batch(100, size * 2 + 1)  # bytes bound: two fit
    assert b2.seqs == [5, 6]
    b3 = sp.begin_batch(100, 1)  # at least one record even when it alone is over the bound
    assert b3.seqs == [7]
    sp.release(b)
    assert sp.begin_batch(2, 1 << 20).seqs == [1, 2]  # released rows are ready again, oldest first
    st = sp.stats()
    assert st.in_flight == 5 and st.depth == 5


def test_in_flight_rows_are_ready_again_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    sp = Spool(path)
    sp.add([usage() for _ in range(3)])
    assert sp.begin_batch(2, 1 << 20).seqs == [1, 2]
    sp.db.close()  # as if killed: nothing acknowledged, nothing released
    sp = Spool(path)
    assert sp.stats().in_flight == 0 and sp.depth() == 3
    assert sp.begin_batch(10, 1 << 20).seqs == [1, 2, 3]


def test_ack_deletes_only_the_acknowledged(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.sqlite")
    sp.add([usage() for _ in range(3)])
    b = sp.begin_batch(2, 1 << 20)
    assert sp.ack(b) == 2
    assert sp.depth() == 1 and sp.stats().in_flight == 0


def spool_files(path: Path) -> dict[str, int]:
    """Every file the spool has on disk, by name, with its size."""
    return {p.name: p.stat().st_size for p in path.parent.glob(path.name + "*")}


def test_size_bound_drops_oldest_and_counts_persistently(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    sp = Spool(path, max_bytes=64 * 1024)
    added: list[int] = []
    while sp.dropped < 30:
        added += sp.add([usage(), usage(), usage()])
        assert sum(spool_files(path).values()) <= 64 * 1024, spool_files(path)  # the journal included
    st = sp.stats()
    kept = sp.begin_batch(1000, 1 << 30).seqs
    assert st.dropped == len(added) - len(kept) and st.depth == len(kept)
    assert kept == added[-len(kept):]  # the oldest went first
    sp.close()
    sp = Spool(path, max_bytes=64 * 1024)
    assert sp.dropped == st.dropped  # the counter survives restarts
    stats = read_stats(path)
    assert stats is not None and stats.dropped == st.dropped and stats.file_bytes <= 64 * 1024


@pytest.mark.slow  # fills spools up to their bound, a file write at a time
@pytest.mark.parametrize("max_bytes", [64 * 1024, 1024 * 1024])
def test_the_bound_covers_every_file_the_spool_writes(tmp_path: Path, max_bytes: int) -> None:
    # The case seen: at 64 KiB the write-ahead log alone grew to 2 MiB in 5 s. Now the journal is
    # part of the bound, whatever mix of adds, sends, failed sends and refusals the spool sees.
    import random

    rng = random.Random(5)
    path = tmp_path / "s.sqlite"
    sp = Spool(path, max_bytes=max_bytes)
    biggest = 0
    for i in range(150):
        sp.add([usage(i % 60) for _ in range(rng.randint(20, 120))])
        batch = sp.begin_batch(rng.randint(1, 200), 1 << 20)
        choice = rng.random()
        if choice < 0.2:
            sp.ack(batch)
        elif choice < 0.9:
            sp.release(batch, maybe_stored=rng.random() < 0.5)
        else:
            sp.dead_letter(batch, "HTTP 400 invalid: test")
        files = spool_files(path)
        assert set(files) <= {"s.sqlite", "s.sqlite-journal"}, files  # no -wal, no -shm
        biggest = max(biggest, sum(files.values()))
        assert biggest <= max_bytes, (i, files)
    assert sp.dropped > 0  # it really was full


def test_in_flight_rows_are_not_dropped_by_the_size_bound(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.sqlite", max_bytes=64 * 1024)
    sp.add([usage() for _ in range(3)])
    b = sp.begin_batch(2, 1 << 20)
    while sp.dropped < 5:
        sp.add([usage()])
    assert sp.ack(b) == 2  # seq 1 and 2 were in flight: never dropped, acknowledged now
    rest = sp.begin_batch(1000, 1 << 30).seqs
    # The oldest ready ones went instead (a page's worth at a time): seq 3 onwards.
    assert rest[0] == 3 + sp.dropped and rest == list(range(rest[0], rest[-1] + 1))


def test_age_bound_drops_old_records_and_counts(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    # A machine that stays up: its boot clock runs with the wall clock.
    sp = Spool(tmp_path / "s.sqlite", max_age_s=90 * 86400, clock=clock, boot_clock=lambda: clock.t - 999_000.0)
    sp.add([usage(), usage()])
    clock.t += 60 * 86400  # a summer holiday asleep: still kept
    sp.add([usage()])
    assert sp.expire() == 0 and sp.depth() == 3
    clock.t += 31 * 86400  # the first two are now 91 days old
    assert sp.expire() == 2
    assert sp.dropped == 2 and sp.begin_batch(10, 1 << 20).seqs == [3]


def test_dead_letter_removes_and_counts_with_reason(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.sqlite")
    sp.add([usage() for _ in range(4)])
    b = sp.begin_batch(3, 1 << 20)
    assert sp.dead_letter(b, "HTTP 400 invalid: bad") == 3
    st = sp.stats()
    assert st.dead_letter == 3 and st.last_dead_letter == "HTTP 400 invalid: bad" and st.depth == 1
    assert st.dropped == 0  # dead letters and drops are different counts


@pytest.mark.parametrize("garbage", [b"this is not a database" * 100, b"SQLite format 3\x00" + b"\xff" * 5000])
def test_corrupt_file_is_moved_aside_and_a_new_spool_starts(tmp_path: Path, garbage: bytes,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.sqlite"
    old = Spool(path)
    old_id = old.spool_id
    old.close()
    path.write_bytes(garbage)
    sp = Spool(path)
    assert sp.spool_id != old_id
    aside = list(tmp_path.glob("s.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert sp.stats().corrupt_files == 1
    assert "SPOOL CORRUPT" in caplog.text
    assert sp.add([usage()]) == [1]
    sp.close()
    path.write_bytes(garbage)  # corrupt again: counted again, both files kept
    assert Spool(path).stats().corrupt_files == 2


def test_truncated_spool_after_a_crash_is_handled(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    sp = Spool(path)
    sp.add([usage() for _ in range(500)])
    sp.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    sp = Spool(path)  # either still readable or moved aside; never an exception
    assert sp.add([usage()])


def test_seqs_of_records_lost_by_a_power_cut_are_never_given_again(tmp_path: Path) -> None:
    # A disk that ignores flushes loses the last commits in a power cut: the spool no longer
    # knows seqs 6 to 9, which the daemon's status file saw given out. They are skipped, so
    # the collector sees the hole (a gap) instead of new records under old seqs.
    sp = Spool(tmp_path / "s.sqlite")
    sp.add([usage() for _ in range(5)])
    assert sp.never_reuse(3) == 0 and sp.last_seq == 5
    assert sp.never_reuse(9) == 4
    assert sp.add([usage()]) == [10]
    sp.close()
    assert Spool(tmp_path / "s.sqlite").add([usage()]) == [11]
