"""kill -9 the real agent again and again while it sends to the real collector.

Pass: the spool opens every time, and every record the agent ever generated is stored
exactly once: the stored seqs are exactly 1..N (N = the spool's last seq), none missing, none
twice, with nothing dropped or dead-lettered. This is the accounting identity
`generated = stored + dropped + rejected` with the last two at zero.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agents.spool import read_stats
from collector.db.records import TABLES
from tests.helpers import CollectorProcess, add_school

pytestmark = pytest.mark.slow

LAUNCHER = '''
import sys
from datetime import UTC, datetime

from agents.probes import register
from collector.wire import Usage


@register("ticker")
class Ticker:
    """A probe that makes records fast, so kills land mid-add and mid-send."""

    name = "ticker"

    def __init__(self, per_run: int = 20) -> None:
        self.per_run = per_run

    async def collect(self):
        now = datetime.now(UTC)
        return [Usage(seq=0, at=now, duration_s=1.0, active_s=0.5, source="none") for _ in range(self.per_run)]


from agents.cli import main

sys.exit(main(sys.argv[1:]))
'''


def config(tmp: Path, url: str, *, ticker: bool) -> Path:
    path = tmp / f"agent-{'on' if ticker else 'off'}.toml"
    path.write_text(f'''
server = "{url}"
state_dir = "{tmp / 'state'}"
[send]
interval_s = 0.2
timeout_s = 10.0
backoff_base_s = 0.2
backoff_cap_s = 1.0
initial_delay_max_s = 0.0
drain_batches_per_s = 50.0
[batch]
max_records = 50
[probes.ticker]
enabled = {"true" if ticker else "false"}
interval_s = 0.1
timeout_s = 5.0
per_run = 20
''')
    return path


def agent(tmp: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
    return subprocess.Popen([sys.executable, str(tmp / "launch.py"), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def stored_seqs(db, device_id: uuid.UUID, spool: uuid.UUID) -> list[int]:
    seqs: list[int] = []
    for table in {t.name for t in TABLES.values()}:
        rows = await db.fetch(f"SELECT seq FROM {table} WHERE device_id = $1 AND spool = $2", device_id, spool)
        seqs.extend(r["seq"] for r in rows)
    return sorted(seqs)


async def test_kill_9_during_sends_loses_and_duplicates_nothing(tmp_path, database_url, db) -> None:
    secret = await add_school(db)
    collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url, "TICE_RATE_LIMIT_PER_MINUTE": "100000",
                                      "TICE_RATE_LIMIT_BURST": "100000"})
    (tmp_path / "launch.py").write_text(LAUNCHER)
    on, off = config(tmp_path, collector.url, ticker=True), config(tmp_path, collector.url, ticker=False)
    rng = random.Random(7)
    try:
        await collector.wait_ready()
        enrol = agent(tmp_path, "--config", str(on), "enroll", "--secret", secret, "--serial", "KILL-1")
        out, err = enrol.communicate(timeout=60)
        assert enrol.returncode == 0, err
        assert "enrolled: device" in out and secret not in out + err

        for _ in range(20):
            proc = agent(tmp_path, "--config", str(on), "run")
            await asyncio.sleep(rng.uniform(0.5, 1.2))
            assert proc.poll() is None, proc.communicate()[1]
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)

        spool_path = tmp_path / "state" / "spool.sqlite"
        before = read_stats(spool_path)
        assert before is not None

        # Restart without the fast probe and let it drain everything. Wait until it holds the
        # state directory first: the spool may already be empty if the last run sent it all.
        proc = agent(tmp_path, "--config", str(off), "run")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            probe_status = agent(tmp_path, "--config", str(off), "status", "--json")
            if json.loads(probe_status.communicate(timeout=30)[0])["daemon_running"]:
                break
            await asyncio.sleep(0.2)
        while time.monotonic() < deadline:
            stats = read_stats(spool_path)
            if stats is not None and stats.depth == 0 and stats.in_flight == 0:
                break
            await asyncio.sleep(0.2)
        # `status` reads the state while the daemon runs.
        st = agent(tmp_path, "--config", str(off), "status", "--json")
        sout, serr = st.communicate(timeout=30)
        assert st.returncode == 0, serr
        view = json.loads(sout)
        assert view["daemon_running"] is True and view["sender"]["last_success_at"] is not None
        assert view["spool"]["spool"] == str(before.spool) and "ticker" in view["probes"]
        assert "token" not in sout
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        code, cerr = collector.stop()
    assert code == 0, cerr

    stats = read_stats(spool_path)
    assert stats is not None
    assert stats.depth == 0 and stats.in_flight == 0
    assert stats.corrupt_files == 0 and stats.dropped == 0 and stats.dead_letter == 0
    con = sqlite3.connect(spool_path)
    (last_seq,) = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
    con.close()
    assert last_seq > 200  # the kills really interrupted a busy agent

    device_id = await db.fetchval("SELECT id FROM devices WHERE serial = 'KILL-1'")
    seqs = await stored_seqs(db, device_id, stats.spool)
    assert seqs == list(range(1, last_seq + 1))
