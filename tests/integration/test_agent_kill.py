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
import uuid
from pathlib import Path

import pytest

from tests.agent_helpers import wait_until
from tests.helpers import CollectorProcess, add_school
from tice_agent.config import DEFAULT_PROBES
from tice_agent.spool import read_stats
from tice_collector.db.records import TABLES

pytestmark = pytest.mark.slow

LAUNCHER = '''
import sys
from datetime import UTC, datetime

from tice_agent.probes import register
from tice_wire import Usage


@register("ticker")
class Ticker:
    """A probe that makes records fast, so kills land mid-add and mid-send."""

    name = "ticker"

    def __init__(self, per_run: int = 20) -> None:
        self.per_run = per_run

    async def collect(self):
        now = datetime.now(UTC)
        return [Usage(seq=0, at=now, duration_s=1.0, active_s=0.5, source="none") for _ in range(self.per_run)]


from tice_agent.cli import main

sys.exit(main(sys.argv[1:]))
'''


def config(tmp: Path, url: str, *, ticker: bool) -> Path:
    """The test decides every probe that runs: the ticker or nothing, never the default probes.

    A default probe left on would write its first record at a random moment, possibly after the
    drain has been seen empty, and leave it spooled at SIGTERM.
    """
    path = tmp / f"agent-{'on' if ticker else 'off'}.toml"
    defaults_off = "".join(f"[probes.{name}]\nenabled = false\n" for name in DEFAULT_PROBES)
    path.write_text(f"""
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
{defaults_off}""")
    return path


class Agent:
    """The launcher in a child process, its stderr in a file (a pipe nobody reads could fill)."""

    def __init__(self, tmp: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
        n = len(list(tmp.glob("agent-*.log")))
        self.log_path = tmp / f"agent-{n}.log"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, str(tmp / "launch.py"), *args], env=env, text=True,
                                         stdout=subprocess.PIPE, stderr=log)

    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        """True while the child runs; a child that exited fails the test with its log."""
        if self.proc.poll() is not None:
            raise AssertionError(f"the agent exited with {self.proc.returncode}: {self.log()[-2000:]}")
        return True

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Wait for the child; (exit code, stdout, log)."""
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, self.log()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


def spool_last_seq(path: Path) -> int:
    """The highest seq the spool gave out, or 0 before the spool exists."""
    if not path.exists():
        return 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        row = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
    except sqlite3.OperationalError:  # created, its schema not written yet
        return 0
    finally:
        con.close()
    return int(row[0]) if row else 0


async def stored_seqs(db, device_id: uuid.UUID, spool: uuid.UUID) -> list[int]:
    seqs: list[int] = []
    for table in {t.name for t in TABLES.values()}:
        rows = await db.fetch(f"SELECT seq FROM {table} WHERE device_id = $1 AND spool = $2", device_id, spool)
        seqs.extend(r["seq"] for r in rows)
    return sorted(seqs)


KILLS = 20


async def test_kill_9_during_sends_loses_and_duplicates_nothing(tmp_path, database_url, db) -> None:
    secret = await add_school(db)
    collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url, "TICE_RATE_LIMIT_PER_MINUTE": "100000",
                                      "TICE_RATE_LIMIT_BURST": "100000"})
    (tmp_path / "launch.py").write_text(LAUNCHER)
    on, off = config(tmp_path, collector.url, ticker=True), config(tmp_path, collector.url, ticker=False)
    spool_path = tmp_path / "state" / "spool.sqlite"
    rng = random.Random(7)
    running: list[Agent] = []
    try:
        await collector.wait_ready()
        enrol = Agent(tmp_path, "--config", str(on), "enroll", "--secret", secret, "--serial", "KILL-1")
        code, out, err = enrol.finish()
        assert code == 0, err
        assert "enrolled: device" in out and secret not in out + err

        for cycle in range(KILLS):
            # Kill at a random moment after this run has started generating, so kills land mid-add
            # and mid-send. The moment is counted from the run's first new record, not from its
            # start: a loaded machine can take seconds just to start Python.
            seq_before = spool_last_seq(spool_path)
            proc = Agent(tmp_path, "--config", str(on), "run")
            running.append(proc)
            await wait_until(lambda proc=proc, seq_before=seq_before: proc.alive()
                             and spool_last_seq(spool_path) > seq_before,
                             f"kill cycle {cycle}: the agent to spool new records (last seq was {seq_before})",
                             timeout=90)
            await asyncio.sleep(rng.uniform(0.0, 0.8))
            proc.alive()
            proc.proc.send_signal(signal.SIGKILL)
            proc.finish(timeout=30)

        before = read_stats(spool_path)
        assert before is not None

        # Restart with no probe at all, so nothing new is made, and let it drain everything.
        # Wait until it holds the state directory first: the spool may already be empty if the
        # last run sent it all.
        drain = Agent(tmp_path, "--config", str(off), "run")
        running.append(drain)

        def daemon_running() -> bool:
            drain.alive()
            code, out, err = Agent(tmp_path, "--config", str(off), "status", "--json").finish()
            assert code == 0, err
            return bool(json.loads(out)["daemon_running"])

        await wait_until(daemon_running, "the drain daemon to hold the state directory", timeout=90)

        def spool_empty() -> bool:
            drain.alive()
            stats = read_stats(spool_path)
            return stats is not None and stats.depth == 0 and stats.in_flight == 0

        await wait_until(spool_empty, f"the drain daemon to empty the spool (it held {before})", timeout=180)
        # `status` reads the state while the daemon runs.
        code, sout, serr = Agent(tmp_path, "--config", str(off), "status", "--json").finish()
        assert code == 0, serr
        view = json.loads(sout)
        assert view["daemon_running"] is True and view["sender"]["last_success_at"] is not None
        assert view["spool"]["spool"] == str(before.spool) and "ticker" in view["probes"]
        assert "token" not in sout
        drain.proc.send_signal(signal.SIGTERM)
        code, _, log = drain.finish(timeout=30)
        assert code == 0, log
        assert "Traceback" not in log
    finally:
        for proc in running:
            proc.kill()
        code, cerr = collector.stop()
    assert code == 0, cerr

    stats = read_stats(spool_path)
    assert stats is not None
    assert stats.depth == 0 and stats.in_flight == 0
    assert stats.corrupt_files == 0 and stats.dropped == 0 and stats.dead_letter == 0
    last_seq = spool_last_seq(spool_path)
    # Every run spooled before its kill (waited for above): the kills interrupted a busy agent.
    assert last_seq >= KILLS, last_seq

    device_id = await db.fetchval("SELECT id FROM devices WHERE serial = 'KILL-1'")
    seqs = await stored_seqs(db, device_id, stats.spool)
    assert seqs == list(range(1, last_seq + 1))
