"""The tests' own PostgreSQL plumbing (tests/pg.py): what killed runs leave behind is swept."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests import pg

HOUR_AGO = time.time() - 3600
NO_SUCH_PID = 2**22 + 12345  # above the largest pid_max: no such process


def scratch(parent: Path, name: str, postmaster_pid: int | None, old: bool, owner: str | None = None) -> Path:
    path = parent / name
    (path / "pgdata").mkdir(parents=True)
    if postmaster_pid is not None:
        (path / "pgdata" / "postmaster.pid").write_text(f"{postmaster_pid}\n/data\n")
    if owner is not None:
        (path / pg.OWNER).write_text(owner)
    if old:
        os.utime(path, (HOUR_AGO, HOUR_AGO))
    return path


def test_stale_scratch_directories_are_swept_and_live_or_young_ones_kept(tmp_path):
    dead = scratch(tmp_path, "tice-test-pg-dead", None, old=True)
    gone = scratch(tmp_path, "tice-test-data-gone", NO_SUCH_PID, old=True)
    live = scratch(tmp_path, "tice-test-pg-live", os.getpid(), old=True)
    young = scratch(tmp_path, "tice-test-pg-young", None, old=False)
    other = scratch(tmp_path, "someone-elses", None, old=True)

    assert pg.sweep_stale(roots=(tmp_path,)) == 2
    assert not dead.exists() and not gone.exists()
    assert live.exists() and young.exists() and other.exists()


def test_a_server_orphaned_by_a_killed_run_is_stopped_and_its_directory_swept(tmp_path):
    # A stand-in for the orphaned postmaster: a process that stops on SIGINT, as PostgreSQL does.
    # SIGINT's default action whatever this run inherited (a background job ignores SIGINT).
    orphan = subprocess.Popen(["sleep", "600"], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    mine = subprocess.Popen(["sleep", "600"])
    try:
        left = scratch(tmp_path, "tice-test-pg-left", orphan.pid, old=True, owner=f"{NO_SUCH_PID} 1.0")
        ours = tmp_path / "tice-test-pg-ours"
        ours.mkdir()
        pg.claim(ours)  # a run still going: this one
        (ours / "postmaster.pid").write_text(f"{mine.pid}\n")
        os.utime(ours, (HOUR_AGO, HOUR_AGO))

        assert pg.sweep_stale(roots=(tmp_path,)) == 1
        assert orphan.wait(timeout=30) is not None and not left.exists()
        assert mine.poll() is None and ours.exists()
    finally:
        for proc in (orphan, mine):
            proc.kill()
            proc.wait()
