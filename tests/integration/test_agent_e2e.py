"""The real agent, with its real probes on this machine, against the real collector and PostgreSQL:
enrol and deliver; survive a collector outage; overflow a small spool and report the drops.

Each test ends with a drain-only run (the same state directory, every probe disabled), so the
spool really empties and the stored seqs can be compared with every seq the spool gave out.
"""

from __future__ import annotations

import configparser
import json
import shlex
import uuid
from pathlib import Path

import pytest

from tests.agent_helpers import (
    PROBE_TABLES,
    Daemon,
    collector_env,
    drained,
    last_seq,
    run_cli,
    spool_depth,
    status,
    stored_rows,
    wait_until,
    write_config,
)
from tests.helpers import CollectorProcess, add_school

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only

ROOT = Path(__file__).resolve().parents[2]


async def enrol(tmp: Path, db, collector: CollectorProcess, *, stdin: bool = False,
                **cfg) -> tuple[Path, Path, uuid.UUID]:
    """Enrol through the CLI; return (probing config, drain-only config, device id)."""
    secret = await add_school(db)
    state = tmp / "state"
    server = None if stdin else collector.url
    config = write_config(tmp / "agent.toml", state, server=server, **cfg)
    drain = write_config(tmp / "drain.toml", state, server=server, probes=False)
    serial = f"E2E-{uuid.uuid4().hex[:8]}"
    if stdin:  # the documented way: the secret never appears on a command line
        r = run_cli("--config", str(config), "enroll", "--server", collector.url, "--secret", "-",
                    "--serial", serial, stdin=secret + "\n")
    else:
        r = run_cli("--config", str(config), "enroll", "--secret", secret, "--serial", serial)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("enrolled: device ") and secret not in r.stdout + r.stderr
    creds_file = state / "credentials.json"
    assert oct(creds_file.stat().st_mode & 0o777) == "0o600"
    device = uuid.UUID(json.loads(creds_file.read_text())["device_id"])
    # Stored in its one spelling, trimmed and in upper case (collector/tice_collector/serials.py).
    assert await db.fetchval("SELECT serial FROM devices WHERE id = $1", device) == serial.upper()
    return config, drain, device


async def drain_all(drain: Path) -> dict:
    """Run the agent without probes until its spool is empty; return the final status."""
    daemon = Daemon(drain)
    try:
        await wait_until(daemon.running, "the drain-only agent to start")
        await wait_until(lambda: drained(status(drain)), "the spool to drain")
        assert status(drain)["daemon_running"] is True
        daemon.stop()
    finally:
        daemon.kill()
    return status(drain)


async def test_real_probes_reach_postgresql(tmp_path, database_url, db):
    collector = CollectorProcess(env=collector_env(database_url))
    proc = None
    try:
        await collector.wait_ready()
        config, drain, device = await enrol(tmp_path, db, collector, stdin=True)

        once = run_cli("--config", str(config), "once")
        assert once.returncode == 0, once.stderr
        lines = [json.loads(line) for line in once.stdout.splitlines()]
        assert {"usage", "health", "link", "display"} <= {r["type"] for r in lines}
        assert all(r["seq"] == 0 for r in lines)  # `once` sends and spools nothing
        assert not (tmp_path / "state" / "spool.sqlite").exists()

        proc = Daemon(config)

        async def every_table_has_rows() -> bool:
            counts = [await db.fetchval(f"SELECT count(*) FROM {t} WHERE device_id = $1", device)
                      for t in PROBE_TABLES.values()]
            return all(counts)

        await wait_until(proc.running, "the agent to start")
        await wait_until(every_table_has_rows, "records in all four tables")
        live = status(config)
        assert live["daemon_running"] is True and live["device_id"] == str(device)
        assert set(PROBE_TABLES) <= set(live["probes"])
        proc.stop()
        final = await drain_all(drain)
    finally:
        if proc is not None:
            proc.kill()
        collector.stop()

    assert final["sender"]["last_success_at"] is not None and final["daemon_running"] is False
    assert final["spool"]["depth"] == 0 and final["spool"]["dropped"] == 0
    text = run_cli("--config", str(config), "status")
    assert text.returncode == 0, text.stderr
    assert "spool:          0 waiting, 0 in flight" in text.stdout
    assert "last success:   never" not in text.stdout

    rows = await stored_rows(db, device)
    seqs = sorted(s for s, _, _ in rows)
    assert seqs == list(range(1, last_seq(tmp_path / "state" / "spool.sqlite") + 1))
    s = final["sender"]
    # Stored once each (above). The counts: a batch in flight when SIGTERM stopped the first
    # daemon may have been committed with its answer never read; the drain resends it and the
    # collector answers those records as duplicates. So the rows lie between the records
    # acknowledged as new and all the records acknowledged.
    new, acknowledged = s["records_sent"] - s["records_duplicate"] - s["records_rejected"], \
        s["records_sent"] - s["records_rejected"]
    assert new <= len(rows) <= acknowledged, (len(rows), s)
    # the real network probe timed the collector it enrolled with
    assert await db.fetchval("SELECT bool_or(collector_reachable) FROM link_records WHERE device_id = $1",
                             device)


async def test_outage_then_everything_arrives_once_oldest_first(tmp_path, database_url, db):
    env = collector_env(database_url)
    collector = CollectorProcess(env=env)
    port = collector.port
    spool_path = tmp_path / "state" / "spool.sqlite"
    proc = None
    try:
        await collector.wait_ready()
        config, drain, device = await enrol(tmp_path, db, collector)
        proc = Daemon(config)
        await wait_until(lambda: status(config)["sender"]["last_success_at"], "a first delivery")

        code, err = collector.stop()  # the school's link goes down
        assert code == 0, err
        before = {s for s, _, _ in await stored_rows(db, device)}
        first = spool_depth(status(config))
        down = await wait_until(lambda: (v := status(config)) and spool_depth(v) > first + 40 and v,
                                "records to pile up in the spool")
        assert down["daemon_running"] is True and down["sender"]["last_error"]
        assert down["sender"]["attempt"] >= 1 and down["spool"]["dropped"] == 0

        collector = CollectorProcess(env=env, port=port)  # back, same database
        await collector.wait_ready()
        backlog = last_seq(spool_path)

        async def backlog_stored() -> bool:
            seqs = {s for s, _, _ in await stored_rows(db, device)}
            return seqs >= set(range(1, backlog + 1))

        # The running agent drains the backlog by itself.
        await wait_until(backlog_stored, "the backlog to arrive")
        proc.stop()
        final = await drain_all(drain)
    finally:
        if proc is not None:
            proc.kill()
        collector.stop()

    assert final["spool"]["dropped"] == 0 and final["spool"]["dead_letter"] == 0
    rows = await stored_rows(db, device)
    assert len({spool for _, _, spool in rows}) == 1
    seqs = sorted(s for s, _, _ in rows)
    assert seqs == list(range(1, last_seq(spool_path) + 1))  # every record once: no gap, no duplicate
    assert backlog - len(before) > 40  # the outage really left a backlog
    # Oldest first: the first record stored after the outage is the oldest one that waited,
    # and ordered by arrival the seqs never go back.
    after = sorted((r for r in rows if r[0] not in before), key=lambda r: (r[1], r[0]))
    assert after[0][0] == min(set(seqs) - before)
    by_arrival = [s for s, _, _ in sorted(rows, key=lambda r: (r[1], r[0]))]
    assert by_arrival == seqs
    assert await db.fetchval("SELECT sum(dropped) FROM device_spools WHERE device_id = $1", device) == 0


async def test_small_spool_overflows_oldest_dropped_and_collector_sees_the_count(tmp_path, database_url, db):
    env = collector_env(database_url)
    collector = CollectorProcess(env=env)
    port = collector.port
    spool_path = tmp_path / "state" / "spool.sqlite"
    max_records = 40  # write_config's batch.max_records
    proc = None
    try:
        await collector.wait_ready()
        config, drain, device = await enrol(tmp_path, db, collector, spool_max_bytes=64 * 1024, every=0.05)
        code, err = collector.stop()  # down from the start: nothing can leave
        assert code == 0, err
        proc = Daemon(config)
        full = await wait_until(lambda: (v := status(config)) and v["spool"] and v["spool"]["dropped"] > 50 and v,
                                "the spool to overflow")
        # The bound covers every file the spool writes, its journal included (no write-ahead log).
        assert full["spool"]["nbytes"] <= full["spool"]["file_bytes"] <= 64 * 1024
        assert sorted(p.name for p in spool_path.parent.glob("spool.sqlite*")) == ["spool.sqlite",
                                                                                   "spool.sqlite-journal"]

        collector = CollectorProcess(env=env, port=port)
        await collector.wait_ready()

        async def collector_has_the_count() -> bool:
            seen = await db.fetchval("SELECT dropped FROM device_spools WHERE device_id = $1", device)
            return seen is not None and seen == status(config)["spool"]["dropped"]

        await wait_until(collector_has_the_count, "the drop count to reach the collector")
        proc.stop()
        final = await drain_all(drain)
    finally:
        if proc is not None:
            proc.kill()
        collector.stop()

    dropped = final["spool"]["dropped"]
    assert dropped > 50 and final["spool"]["dead_letter"] == 0
    assert await db.fetchval("SELECT dropped FROM device_spools WHERE device_id = $1 AND spool = $2",
                             device, uuid.UUID(final["spool"]["spool"])) == dropped
    seqs = sorted(s for s, _, _ in await stored_rows(db, device))
    last = last_seq(spool_path)
    assert len(seqs) == len(set(seqs)) == last - dropped  # generated = stored + dropped, exactly
    assert 1 not in seqs and seqs[-1] == last  # the oldest went, the newest are there
    missing = set(range(1, last + 1)) - set(seqs)
    # Drops take the oldest records that are not in flight; only the one batch being sent at
    # that moment can outlive newer ones.
    assert sum(1 for s in seqs if s < max(missing)) <= max_records


# -- how the agent is installed as a service --------------------------------------------------

def test_systemd_user_unit_runs_the_agent():
    unit = ROOT / "agents" / "systemd" / "tice-agent.service"
    ini = configparser.ConfigParser(strict=False, interpolation=None)
    ini.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    ini.read_string(unit.read_text())
    assert {"Unit", "Service", "Install"} <= set(ini.sections())
    argv = shlex.split(ini["Service"]["ExecStart"])
    assert Path(argv[0]).name == "tice-agent" and argv[-1] == "run"
    assert ini["Service"]["Restart"] in ("on-failure", "always")
    assert ini["Install"]["WantedBy"] == "default.target"  # a user unit: the user's session
    settings = [ln.lower() for ln in unit.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert not [ln for ln in settings if "secret" in ln or "token" in ln or "tice_enr_" in ln]


def test_windows_logon_task_runs_the_agent_in_the_users_session():
    import xml.etree.ElementTree as ET

    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    root = ET.parse(ROOT / "agents" / "windows" / "tice-agent-task.xml").getroot()
    assert root.find("t:Triggers/t:LogonTrigger", ns) is not None
    principal = root.find("t:Principals/t:Principal", ns)
    assert principal is not None and principal.findtext("t:LogonType", namespaces=ns) == "InteractiveToken"
    exec_ = root.find("t:Actions/t:Exec", ns)
    assert exec_ is not None
    assert exec_.findtext("t:Command", namespaces=ns).endswith(r"\venv\Scripts\pythonw.exe")
    assert exec_.findtext("t:Arguments", namespaces=ns) == "-m tice_agent.cli run"
    assert root.findtext("t:Settings/t:RestartOnFailure/t:Count", namespaces=ns)


def test_agent_doc_names_the_real_commands():
    text = (ROOT / "docs" / "agent.md").read_text()
    for needle in ("tice-agent enroll", "--secret -", "systemctl --user enable --now tice-agent",
                   "Register-ScheduledTask", "tice-agent status", "agents/tice_agent/agent.example.toml"):
        assert needle in text, needle
