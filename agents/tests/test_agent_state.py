"""State directory: private modes, atomic files, no secrets in reprs."""

from __future__ import annotations

import os
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tice_agent import state as st


def creds(secret: str | None = None) -> st.Credentials:
    return st.Credentials(server="https://c.example", device_id=uuid.uuid4(), token="very-secret-token",
                          school="0210001A", serial="SN", kind="laptop", enrolled_at=datetime.now(UTC),
                          secret=secret)


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_credentials_are_private(tmp_path: Path) -> None:
    sdir = tmp_path / "state"
    st.save_credentials(sdir, creds())
    assert stat.S_IMODE(sdir.stat().st_mode) == 0o700
    assert stat.S_IMODE((sdir / st.CREDENTIALS).stat().st_mode) == 0o600
    loaded = st.load_credentials(sdir)
    assert loaded is not None and loaded.token == "very-secret-token"
    assert not list(sdir.glob(".*.tmp"))


def test_repr_never_shows_token_or_secret() -> None:
    text = repr(creds("school-secret"))
    assert "very-secret-token" not in text and "school-secret" not in text


def test_missing_or_corrupt_status_is_empty(tmp_path: Path) -> None:
    assert st.load_status(tmp_path).sender.attempt == 0
    (tmp_path / st.STATUS).write_text("{garbage")
    assert st.load_status(tmp_path).probes == {}


def test_instance_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    a, b = st.InstanceLock(tmp_path), st.InstanceLock(tmp_path)
    assert a.acquire()
    assert not b.acquire()
    a.release()
    assert b.acquire()
    b.release()


@pytest.mark.slow  # runs the CLI or Python in a child process
def test_the_agent_does_not_load_aiohttp():
    """The agent's HTTP is the standard library: aiohttp would add ~14 MiB to every laptop."""
    import subprocess
    import sys

    code = ("import sys, tice_agent.cli, tice_agent.sender, tice_agent.runner, tice_agent.probes; tice_agent.probes.load_all(); "
            "print('aiohttp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_daemon_starting_while_status_peeks_still_gets_the_lock(tmp_path):
    """`status` holds the lock for an instant; the daemon must wait for it, not give up."""
    import threading

    from tice_agent.state import InstanceLock

    peek = InstanceLock(tmp_path)
    assert peek.acquire()
    threading.Timer(0.3, peek.release).start()
    daemon = InstanceLock(tmp_path)
    assert daemon.acquire(wait_s=3.0)
    assert not InstanceLock(tmp_path).acquire()  # and then it really holds it
    daemon.release()
