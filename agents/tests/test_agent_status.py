"""`tice-agent status` when things are wrong: a corrupt spool, a full disk."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tice_agent import state as st
from tice_agent.cli import main
from tice_agent.spool import Spool
from tice_wire import Usage

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def setup(tmp_path: Path) -> tuple[Path, Path]:
    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{state}"\n')
    sp = Spool(state / st.SPOOL)
    sp.add([Usage(seq=0, at=AT, duration_s=60, active_s=30) for _ in range(300)])
    sp.close()
    return config, state


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.99])
def test_status_on_a_corrupt_spool_never_ends_in_a_traceback(tmp_path: Path, keep: float,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    config, state = setup(tmp_path)
    path = state / st.SPOOL
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    assert main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    assert main(["--config", str(config), "status", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    if keep < 0.9:  # what it reads is damaged: it says so
        assert "spool:          UNREADABLE (" in out and "moves it aside" in out
        assert view["spool"]["error"] and view["spool"]["spool"] is None
    else:  # the lost tail is not in what `status` reads: it shows the spool (the daemon checks it all)
        assert "spool:          " in out and view["spool"]["spool"] is not None


def test_status_says_disk_full_with_the_free_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, state = setup(tmp_path)
    since = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    st.save_status(state, st.Status(spool=st.SpoolStatus(trouble="disk full", trouble_since=since, failures=12,
                                                         free_bytes=0, unsaved_dropped=37, generated=337)))
    daemon = st.InstanceLock(state)
    assert daemon.acquire()  # as a running daemon holds it
    try:
        assert main(["--config", str(config), "status"]) == 0
        out = capsys.readouterr().out
        assert main(["--config", str(config), "status", "--json"]) == 0
        view = json.loads(capsys.readouterr().out)
    finally:
        daemon.release()
    line = next(ln for ln in out.splitlines() if ln.startswith("disk:"))
    assert line.startswith("disk:           DISK FULL: ") and f" bytes free in {state} since 2026-03-02T09:30:00" in line
    assert "dropped:        37 (" in out and "37 of them counted in memory only" in out
    assert view["disk"]["full"] is True and view["disk"]["free_bytes"] > 0 and view["spool"]["dropped"] == 37


def test_a_stopped_daemons_trouble_is_not_shown_as_current(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, state = setup(tmp_path)
    st.save_status(state, st.Status(spool=st.SpoolStatus(trouble="disk full", failures=3, unsaved_dropped=5)))
    assert main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    assert "DISK FULL" not in out and "disk:           " in out and "dropped:        0 (" in out
