"""The real agent, with its real probes on this machine, against the real collector:
enrol and deliver; survive a collector outage; overflow a small spool and report the drops."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from agents.spool import read_stats
from collector.db.records import TABLES
from tests.helpers import CollectorProcess, add_school


def write_config(tmp: Path, url: str, *, spool_max_bytes: int = 50 * 1024 * 1024, every: float = 0.3) -> Path:
    """Every real probe, fast: runs every `every` seconds and samples every 0.5 s."""
    path = tmp / "agent.toml"
    path.write_text(f'''
server = "{url}"
state_dir = "{tmp / 'state'}"
[spool]
max_bytes = {spool_max_bytes}
[send]
interval_s = 0.3
timeout_s = 10.0
backoff_base_s = 0.2
backoff_cap_s = 1.0
initial_delay_max_s = 0.0
drain_batches_per_s = 20.0
[batch]
max_records = 40
[probes.usage]
interval_s = {every}
sample_every_s = 0.5
[probes.health]
interval_s = {every}
[probes.network]
interval_s = {every}
[probes.display]
interval_s = {every}
sample_every_s = 0.5
''')
    return path


def agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
    return subprocess.run([sys.executable, "-m", "agents.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def start_agent(config: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
    return subprocess.Popen([sys.executable, "-m", "agents.cli", "--config", str(config), "run"], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def status(config: Path) -> dict:
    r = agent("--config", str(config), "status", "--json")
    assert r.returncode == 0, r.stderr
    view: dict = json.loads(r.stdout)
    return view


async def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def stored(db, device_id: uuid.UUID) -> list[tuple[int, object]]:
    rows: list[tuple[int, object]] = []
    for table in {t.name for t in TABLES.values()}:
        rows += [(r["seq"], r["received_at"]) for r in
                 await db.fetch(f"SELECT seq, received_at FROM {table} WHERE device_id = $1", device_id)]
    return rows


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return err


async def enrolled_agent(tmp_path: Path, db, collector: CollectorProcess, **cfg) -> tuple[Path, uuid.UUID]:
    secret = await add_school(db)
    config = write_config(tmp_path, collector.url, **cfg)
    r = agent("--config", str(config), "enroll", "--secret", secret, "--serial", f"E2E-{tmp_path.name[-6:]}")
    assert r.returncode == 0, r.stderr
    assert secret not in r.stdout + r.stderr
    creds = json.loads((tmp_path / "state" / "credentials.json").read_text())
    assert oct((tmp_path / "state" / "credentials.json").stat().st_mode & 0o777) == "0o600"
    return config, uuid.UUID(creds["device_id"])


async def test_real_probes_reach_postgresql(tmp_path, database_url, db):
    collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url})
    try:
        await collector.wait_ready()
        config, device = await enrolled_agent(tmp_path, db, collector)
        once = agent("--config", str(config), "once")
        assert once.returncode == 0, once.stderr
        kinds = {json.loads(line)["type"] for line in once.stdout.splitlines()}
        assert {"usage", "health", "link", "display"} <= kinds
        proc = start_agent(config)
        try:
            async def delivered() -> bool:
                counts = [await db.fetchval(f"SELECT count(*) FROM {t}_records WHERE device_id = $1", device)
                          for t in ("usage", "health", "link", "display")]
                return all(counts)

            deadline = time.monotonic() + 60
            while not await delivered():
                assert time.monotonic() < deadline, "records never reached the database"
                await asyncio.sleep(0.3)
        finally:
            stop(proc)
        view = status(config)
        # The last round collected while stopping may still wait in the spool for the next run.
        assert view["sender"]["last_success_at"] is not None and view["spool"]["depth"] < 20
        # The network probe timed the collector it enrolled with.
        assert await db.fetchval("SELECT bool_or(collector_reachable) FROM link_records WHERE device_id = $1", device)
    finally:
        collector.stop()


async def test_outage_then_everything_arrives_once_oldest_first(tmp_path, database_url, db):
    collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url})
    port = collector.port
    try:
        await collector.wait_ready()
        config, device = await enrolled_agent(tmp_path, db, collector)
        proc = start_agent(config)
        spool_path = tmp_path / "state" / "spool.sqlite"
        try:
            await wait_for(lambda: bool(status(config)["sender"]["last_success_at"]), "a first delivery")
            collector.stop()  # the 3G link drops
            before = len(await stored(db, device))
            await wait_for(lambda: (read_stats(spool_path) or read_stats(spool_path)).depth > 60,
                           "records to pile up in the spool")
            collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url}, port=port)
            await collector.wait_ready()
            await wait_for(lambda: read_stats(spool_path).depth == 0 and read_stats(spool_path).in_flight == 0,
                           "the backlog to drain")
        finally:
            stop(proc)
    finally:
        collector.stop()
    stats = read_stats(spool_path)
    assert stats.dropped == 0 and stats.dead_letter == 0
    rows = await stored(db, device)
    seqs = sorted(s for s, _ in rows)
    import sqlite3

    con = sqlite3.connect(spool_path)
    (last_seq,) = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
    con.close()
    assert seqs == list(range(1, last_seq + 1))  # every record once: no gap, no duplicate
    assert len(rows) - before > 60
    # Oldest first: ordered by arrival, the seqs never go back.
    by_arrival = [s for s, _ in sorted(rows, key=lambda r: (r[1], r[0]))]
    assert by_arrival == sorted(by_arrival)
    assert await db.fetchval("SELECT coalesce(sum(dropped), 0) FROM device_spools WHERE device_id = $1", device) == 0


async def test_small_spool_overflows_oldest_dropped_and_collector_sees_the_count(tmp_path, database_url, db):
    collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url})
    port = collector.port
    try:
        await collector.wait_ready()
        collector.stop()  # down from the start: nothing can leave
        collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url}, port=port)
        await collector.wait_ready()
        config, device = await enrolled_agent(tmp_path, db, collector, spool_max_bytes=64 * 1024, every=0.05)
        collector.stop()
        proc = start_agent(config)
        spool_path = tmp_path / "state" / "spool.sqlite"
        try:
            await wait_for(lambda: (read_stats(spool_path) is not None and read_stats(spool_path).dropped > 20),
                           "the spool to overflow")
            collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url}, port=port)
            await collector.wait_ready()
            await wait_for(lambda: read_stats(spool_path).depth == 0 and read_stats(spool_path).in_flight == 0,
                           "the backlog to drain")
            # Let one more batch carry the final drop count.
            await wait_for(lambda: bool(status(config)["sender"]["last_success_at"]), "a delivery")
        finally:
            stop(proc)
    finally:
        collector.stop()
    stats = read_stats(spool_path)
    assert stats.dropped > 20
    seqs = sorted(s for s, _ in await stored(db, device))
    assert seqs[0] > 1  # the oldest records were the ones dropped
    assert seqs[-1] == max(seqs) and len(seqs) <= seqs[-1] - stats.dropped  # what is missing was dropped
    seen = await db.fetchval("SELECT max(dropped) FROM device_spools WHERE device_id = $1 AND spool = $2",
                             device, stats.spool)
    assert 0 < seen <= stats.dropped
