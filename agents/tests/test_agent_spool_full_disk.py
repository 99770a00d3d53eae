"""The spool when writing is impossible: it keeps sending what it has, counts what it cannot
store, never leaves a batch in flight, and writes its counts when the disk has room again.

A real full disk: a 1 MiB tmpfs mounted for the test (root only; elsewhere these tests skip and
the end-to-end disk-full test runs under a file-size limit instead). A refused write that is not
a full disk: another connection holding the database's write lock.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent_testing import Clock, SmallFilesystem
from tice_agent.spool import Spool, read_stats
from tice_wire import Usage

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MiB = 1024 * 1024


def usage(active: float = 30.0) -> Usage:
    return Usage(seq=0, at=AT, duration_s=60.0, active_s=active, idle_s=60.0 - active, source="x11")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[SmallFilesystem]:
    fs = SmallFilesystem(tmp_path / "fs", MiB)
    if not fs.mount():
        pytest.skip("cannot mount a tmpfs here (root only); tests/integration/test_agent_disk_full.py covers "
                    "this machine with a file-size limit")
    yield fs
    fs.umount()


def test_a_full_disk_keeps_sending_and_counts_every_record_it_cannot_store(small_fs: SmallFilesystem,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    path = small_fs.where / "s.sqlite"
    sp = Spool(path, max_bytes=50 * MiB)  # not the bound: the disk stops it
    stored: list[int] = []
    for _ in range(100):
        stored += sp.add([usage(), usage()])
    first = sp.begin_batch(100, MiB)
    sp.ack(first)
    sent = list(first.seqs)
    small_fs.fill()
    assert small_fs.free_bytes() < 4096
    # The pages the acknowledgement freed are used again: storing goes on until they are spent.
    reused = 0
    while sp.trouble is None:
        got = sp.add([usage()])
        stored += got
        reused += len(got)
    assert reused > 10
    assert sp.trouble.reason == "disk full" and sp.trouble.free_bytes is not None and sp.trouble.free_bytes < 4096
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tice.agent.spool"):
        for _ in range(50):
            assert sp.add([usage()]) == []  # dropped, and counted
        # Every record already stored still goes out, and its acknowledgement is written.
        while (batch := sp.begin_batch(40, MiB)).seqs:
            sent += batch.seqs
            assert sp.ack(batch) == len(batch)
    assert sorted(sent) == stored and sp.depth() == 0 and sp.stats().in_flight == 0
    assert [r.levelname for r in caplog.records] == []  # 50 failures, not one new line about them
    assert sp.dropped == sp.generated - len(stored)

    small_fs.free()
    with caplog.at_level(logging.INFO, logger="tice.agent.spool"):
        assert sp.add([usage()])  # writing works again
    assert sp.trouble is None
    assert "recovered after" in caplog.text
    generated, dropped = sp.generated, sp.dropped
    sp.close()
    sp = Spool(path, max_bytes=50 * MiB)
    assert sp.dropped == dropped  # the count kept in memory reached the file
    # The seqs of the dropped records are used up: the collector sees holes the count explains.
    assert sp.add([usage()]) == [generated + 1]
    assert dropped == generated - len(stored) - 1


def test_a_restart_on_a_full_disk_opens_the_spool_and_sends(small_fs: SmallFilesystem) -> None:
    path = small_fs.where / "s.sqlite"
    sp = Spool(path)
    sp.add([usage() for _ in range(300)])
    sp.close()
    small_fs.fill()
    sp = Spool(path)  # WAL would need a new -shm file here, and could not even read
    seqs: list[int] = []
    while (batch := sp.begin_batch(100, MiB)).seqs:
        seqs += batch.seqs
        sp.ack(batch)
    assert seqs == list(range(1, 301))
    sp.close()
    stats = read_stats(path)
    assert stats is not None and stats.depth == 0 and stats.error is None


def test_a_refused_acknowledgement_is_kept_in_memory_and_written_later(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    clock = Clock(1_800_000_000.0)
    sp = Spool(path, clock=clock)
    sp.add([usage() for _ in range(6)])
    batch = sp.begin_batch(4, MiB)
    sp.db.execute("PRAGMA busy_timeout = 20")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # every write of the spool is refused from now on
    try:
        assert sp.ack(batch) == 4
        assert sp.trouble is not None and "locked" in sp.trouble.reason
        assert sp.depth() == 2
        again = sp.begin_batch(10, MiB)
        assert again.seqs == [5, 6]  # acknowledged records are never sent twice by this process
        sp.release(again)  # writes nothing: cannot fail
        assert sp.begin_batch(10, MiB).seqs == [5, 6]
    finally:
        other.execute("ROLLBACK")
        other.close()
    sp.maintain()
    assert [r[0] for r in sp.db.execute("SELECT seq FROM records ORDER BY seq")] == [5, 6]
    assert sp.trouble is not None  # writes work again, but only just: not over yet
    clock.t += 31
    sp.maintain()
    assert sp.trouble is None


def test_nothing_stays_in_flight_when_writes_fail(tmp_path: Path) -> None:
    # The case seen: a release failed, 50 records stayed "in flight" and three sends later the
    # sender still believed the spool empty. Taking and releasing now write nothing.
    path = tmp_path / "s.sqlite"
    sp = Spool(path)
    sp.add([usage() for _ in range(50)])
    sp.db.execute("PRAGMA busy_timeout = 20")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        batch = sp.begin_batch(50, MiB)
        assert len(batch) == 50
        sp.release(batch)
        assert sp.depth() == 50 and sp.stats().in_flight == 0
        for _ in range(3):
            again = sp.begin_batch(50, MiB)
            assert again.seqs == batch.seqs
            sp.release(again)
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_the_status_file_is_overwritten_in_place_when_the_disk_is_full(small_fs: SmallFilesystem) -> None:
    from tice_agent import state as st

    state = small_fs.where
    st.save_status(state, st.Status(spool=st.SpoolStatus(generated=1)))
    small_fs.fill()
    # It grew by most of a KiB (a trouble to tell): it still fits where the old one was.
    st.save_status(state, st.Status(spool=st.SpoolStatus(trouble="disk full " + "x" * 900, generated=2,
                                                         unsaved_dropped=3)))
    now = st.load_status(state).spool
    assert (now.trouble, now.generated, now.unsaved_dropped) == ("disk full " + "x" * 900, 2, 3)
