"""The tests' own PostgreSQL plumbing (tests/pg.py): what killed runs leave behind is swept."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests import pg


def test_stale_scratch_directories_are_swept_and_live_or_young_ones_kept(tmp_path):
    hour_ago = time.time() - 3600

    def scratch(name: str, postmaster_pid: int | None, old: bool) -> Path:
        path = tmp_path / name
        (path / "pgdata").mkdir(parents=True)
        if postmaster_pid is not None:
            (path / "pgdata" / "postmaster.pid").write_text(f"{postmaster_pid}\n/data\n")
        if old:
            os.utime(path, (hour_ago, hour_ago))
        return path

    dead = scratch("tice-test-pg-dead", None, old=True)
    gone = scratch("tice-test-data-gone", 2**22 + 12345, old=True)  # above pid_max: no such process
    live = scratch("tice-test-pg-live", os.getpid(), old=True)
    young = scratch("tice-test-pg-young", None, old=False)
    other = scratch("someone-elses", None, old=True)

    assert pg.sweep_stale(roots=(tmp_path,)) == 2
    assert not dead.exists() and not gone.exists()
    assert live.exists() and young.exists() and other.exists()
