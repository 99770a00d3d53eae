"""The real agent and the real collector on a disk that fills up and is freed again.

The state directory sits on a 2 MiB tmpfs mounted by the test (it runs as root where it can), or,
where no tmpfs can be mounted, the agent runs under a file-size limit (RLIMIT_FSIZE) that is
raised later. A test probe makes 400 records a second while a flag file exists, so the test
decides when records are made. The collector is stopped, the spool fills the disk, the
collector comes back while the disk is still full, then the disk is freed.

Pass: the agent keeps sending on the full disk; it drops what it cannot store, counts it and
says "disk full" with the free bytes; it logs the trouble once, not once per record; and in the
end every record the agent made is either stored by the collector or counted as dropped on both
sides: generated = stored + dropped, exactly, and the collector counts no gap beyond the drops.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.agent_helpers import SmallFilesystem, collector_env, wait_until
from tests.helpers import CollectorProcess, add_school
from tice_agent.config import DEFAULT_PROBES
from tice_collector.db.records import TABLES
from tice_collector.jobs import JobContext, all_jobs, run_job
from tice_collector.metrics import Metrics
from tice_collector.settings import load_settings

pytestmark = pytest.mark.slow

MiB = 1024 * 1024

LAUNCHER = '''
import os
import sys
from datetime import UTC, datetime

from tice_agent.probes import register
from tice_wire import Usage


@register("ticker")
class Ticker:
    """Records, fast, while the flag file exists."""

    name = "ticker"

    def __init__(self, per_run: int = 20, flag: str = "") -> None:
        self.per_run, self.flag = per_run, flag

    async def collect(self):
        if not os.path.exists(self.flag):
            return []
        now = datetime.now(UTC)
        return [Usage(seq=0, at=now, duration_s=1.0, active_s=0.5, source="none") for _ in range(self.per_run)]


from tice_agent.cli import main

sys.exit(main(sys.argv[1:]))
'''


def write_config(tmp: Path, state: Path, server: str, flag: Path, *, ticker: bool = True) -> Path:
    """The agent's config; without the ticker, a drain-only agent (no probe at all)."""
    path = tmp / ("agent.toml" if ticker else "drain.toml")
    defaults_off = "".join(f"[probes.{name}]\nenabled = false\n" for name in DEFAULT_PROBES)
    path.write_text(f"""
server = "{server}"
state_dir = "{state}"
[send]
interval_s = 0.2
timeout_s = 10.0
backoff_base_s = 0.2
backoff_cap_s = 1.0
initial_delay_max_s = 0.0
drain_batches_per_s = 50.0
[batch]
max_records = 200
[probes.ticker]
enabled = {"true" if ticker else "false"}
interval_s = 0.05
timeout_s = 5.0
per_run = 20
flag = "{flag}"
{defaults_off}""")
    return path


class Agent:
    """The launcher in a child process, its log in a file outside the small disk."""

    def __init__(self, tmp: Path, *args: str, fsize: int | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
        n = len(list(tmp.glob("agent-*.log")))
        self.log_path = tmp / f"agent-{n}.log"

        def limit() -> None:  # in the child, before exec: a file may not grow past `fsize`
            if fsize is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))

        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, str(tmp / "launch.py"), *args], env=env, text=True,
                                         stdout=subprocess.PIPE, stderr=log, preexec_fn=limit)

    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the agent exited with {self.proc.returncode}: {self.log()[-2000:]}")
        return True

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, self.log()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


@pytest.fixture(params=["tmpfs", "file-size-limit"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallFilesystem | None]:
    """A 2 MiB tmpfs for the state directory, or None: the agent then runs under RLIMIT_FSIZE."""
    if request.param == "file-size-limit":
        yield None
        return
    fs = SmallFilesystem(tmp_path / "fs", 2 * MiB)
    if not fs.mount():
        pytest.skip("no tmpfs can be mounted here; the file-size-limit case covers this machine")
    yield fs
    fs.umount()


def last_seq(path: Path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        row = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


async def stored_seqs(db: Any, device: uuid.UUID) -> list[int]:
    seqs: list[int] = []
    for table in sorted({t.name for t in TABLES.values()}):
        seqs += [r["seq"] for r in await db.fetch(f"SELECT seq FROM {table} WHERE device_id = $1", device)]
    return seqs


def spooled_seqs(path: Path) -> set[int]:
    """The seqs of the records waiting in the spool file (sent at the next start)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        return {int(r[0]) for r in con.execute("SELECT seq FROM records")}
    finally:
        con.close()


def missing_seqs(stored: set[int], last: int, dropped: int, log: str) -> str:
    """Why generated != stored + dropped: the seqs up to `last` not stored, as runs (the drops
    among them, and any record lost without a count), with the agent's spool and sender log lines."""
    runs: list[str] = []
    start = prev = None
    for seq in (s for s in range(1, last + 1) if s not in stored):
        if prev is not None and seq == prev + 1:
            prev = seq
            continue
        if start is not None:
            runs.append(f"{start}-{prev}" if prev != start else f"{start}")
        start = prev = seq
    if start is not None:
        runs.append(f"{start}-{prev}" if prev != start else f"{start}")
    lines = [ln for ln in log.splitlines() if "spool" in ln or "sender" in ln][-40:]
    return (f"{last} generated, {len(stored)} stored, {dropped} counted as dropped; the seqs not stored "
            f"({last - len(stored)}): {', '.join(runs)}\nagent log:\n" + "\n".join(lines))


async def test_a_full_disk_never_stops_delivery_and_every_record_is_stored_or_counted(
        tmp_path: Path, database_url: str, db: Any, disk: SmallFilesystem | None) -> None:
    secret = await add_school(db)
    env = collector_env(database_url)
    collector = CollectorProcess(env=env)
    port = collector.port
    (tmp_path / "launch.py").write_text(LAUNCHER)
    state = (disk.where if disk else tmp_path) / "state"
    flag = tmp_path / "making-records"
    config = write_config(tmp_path, state, collector.url, flag)
    drain = write_config(tmp_path, state, collector.url, flag, ticker=False)
    spool_path = state / "spool.sqlite"
    fsize = None if disk else MiB
    running: list[Agent] = []

    def status() -> dict[str, Any]:
        code, out, err = Agent(tmp_path, "--config", str(config), "status", "--json").finish()
        assert code == 0 and "Traceback" not in err, err
        view: dict[str, Any] = json.loads(out)
        return view

    try:
        await collector.wait_ready()
        code, _, err = Agent(tmp_path, "--config", str(config), "enroll", "--secret", secret,
                             "--serial", "FULL-1").finish()
        assert code == 0, err
        device = uuid.UUID(json.loads((state / "credentials.json").read_text())["device_id"])

        flag.touch()
        agent = Agent(tmp_path, "--config", str(config), "run", fsize=fsize)
        running.append(agent)
        await wait_until(lambda: agent.alive() and status()["sender"]["last_success_at"], "a first delivery")

        code, err = collector.stop()  # the school's link goes down; records pile up
        assert code == 0, err
        if disk is not None:
            disk.fill()
            disk.free()  # the filler took everything; now leave the spool some 600 KiB to fill
            filler = disk.where / "filler"
            filler.write_bytes(b"\0" * max(0, disk.free_bytes() - 600 * 1024))

        full = await wait_until(lambda: agent.alive() and (v := status())["spool"] and v["spool"]["dropped"] > 200
                                and v, "the disk to fill and records to be dropped", timeout=120)
        assert full["disk"]["trouble"] is not None and full["disk"]["failures"] > 0
        if disk is not None:
            assert full["disk"]["full"] is True and full["disk"]["free_bytes"] < 64 * 1024
            text = Agent(tmp_path, "--config", str(config), "status").finish()[1]
            assert "disk:           DISK FULL: " in text and " bytes free in " in text

        # The collector comes back while the disk is still full: delivery goes on.
        collector = CollectorProcess(env=env, port=port)
        await collector.wait_ready()
        before = len(await stored_seqs(db, device))

        async def delivering() -> bool:
            agent.alive()
            return len(await stored_seqs(db, device)) > before + 1000

        await wait_until(delivering, "1000 more records delivered from the full disk", timeout=120)
        if disk is not None:
            assert disk.free_bytes() < 64 * 1024  # still full: what was sent made room in the spool itself

        # The disk is freed.
        if disk is not None:
            disk.free()
        else:
            resource.prlimit(agent.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        await wait_until(lambda: agent.alive() and (v := status())["disk"]["trouble"] is None and not v["disk"]["full"],
                         "the agent to write again")

        flag.unlink()  # no more records: let it send everything, then stop it
        await wait_until(lambda: agent.alive() and (v := status())["spool"]["depth"] == 0
                         and v["spool"]["in_flight"] == 0 and v["disk"]["unsaved_dropped"] == 0,
                         "the spool to drain", timeout=120)
        # The probe still makes its heartbeat (a ProbeStatus every runner.status_every runs) after
        # the drain, so a stop may always find a record not sent yet: it waits in the spool for the
        # next start. Make that case certain: the link goes down and the agent stops with records
        # waiting; then a drain-only agent (no probe) must deliver them.
        code, err = collector.stop()
        assert code == 0, err
        drained = last_seq(spool_path)
        await wait_until(lambda: agent.alive() and status()["spool"]["depth"] > 0 and last_seq(spool_path) > drained,
                         "a heartbeat record to wait in the spool")
        agent.proc.send_signal(signal.SIGTERM)
        code, _, log = agent.finish()
        assert code == 0 and "Traceback" not in log, log[-3000:]
        made = json.loads((state / "status.json").read_text())["spool"]["generated"]  # its last status, at exit
        waiting = spooled_seqs(spool_path)
        assert waiting, "no record waits in the spool at the stop"

        collector = CollectorProcess(env=env, port=port)
        await collector.wait_ready()
        drainer = Agent(tmp_path, "--config", str(drain), "run")
        running.append(drainer)
        await wait_until(lambda: drainer.alive() and (v := status())["spool"]["depth"] == 0
                         and v["spool"]["in_flight"] == 0, "the drain-only agent to send what waited", timeout=120)
        drainer.proc.send_signal(signal.SIGTERM)
        code, _, drain_log = drainer.finish()
        assert code == 0 and "Traceback" not in drain_log, drain_log[-3000:]
        final = status()
    finally:
        for proc in running:
            proc.kill()
        collector.stop()

    # One line when writing started to fail (and one per change of reason), one when it worked
    # again: not one per dropped record.
    trouble_lines = [ln for ln in log.splitlines() if "spool cannot write" in ln]
    assert 2 <= len(trouble_lines) <= 6, trouble_lines

    seqs = await stored_seqs(db, device)
    last = last_seq(spool_path)
    dropped = final["spool"]["dropped"]
    collector_dropped = await db.fetchval("SELECT sum(dropped) FROM device_spools WHERE device_id = $1", device)
    assert dropped > 200 and collector_dropped == dropped  # counted on both sides, the same
    assert len(seqs) == len(set(seqs))  # nothing stored twice
    # generated = stored + dropped, exactly; else name the seqs neither stored nor dropped, and
    # the agent's log lines, to see when in the run they were made.
    assert last == len(seqs) + dropped, missing_seqs(set(seqs), last, dropped, log)
    assert set(seqs) <= set(range(1, last + 1))
    assert waiting <= set(seqs)  # what waited at the stop was delivered after the restart
    # The agent's own count of the records it made (its last status, written at exit).
    assert made == last

    # The collector sees holes in the spool's sequence, all of them explained by the drop count.
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        settings = load_settings(environ={}, database_url=database_url, jobs_enabled=False, spool_gap_grace_s=0.0)
        ctx = JobContext(pool=pool, settings=settings, metrics=Metrics())
        for _ in range(2):
            assert await run_job(all_jobs()["snapshot"], ctx, force=True) == "ok"
    finally:
        await pool.close()
    assert await db.fetchval("SELECT sum(gaps) FROM device_spools WHERE device_id = $1", device) == 0
    assert await db.fetchval("SELECT max(settled_high) FROM device_spools WHERE device_id = $1", device) == last
