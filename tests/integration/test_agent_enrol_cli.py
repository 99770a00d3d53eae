"""`tice-agent enroll` against the real collector, where the newcomer tripped: a --server with
the route's path in it (404), and a state directory enrolled again under another serial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.agent_helpers import run_cli, write_config
from tests.helpers import CollectorProcess, add_school

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only


async def test_a_server_address_with_a_path_gets_a_hint(tmp_path, database_url, db):
    collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url})
    try:
        await collector.wait_ready()
        config = write_config(tmp_path / "agent.toml", tmp_path / "state")
        r = run_cli("--config", str(config), "enroll", "--server", f"{collector.url}/api/v1/enroll", "--secret", "-",
                    "--serial", "LP-404", stdin=await add_school(db))
    finally:
        collector.stop()
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("enrolment failed: HTTP 404 not_found")
    assert r.stderr.rstrip().endswith("; is --server the collector's base address (e.g. http://host:8080), "
                                      "without a path?"), r.stderr
    assert not (tmp_path / "state" / "credentials.json").exists()


async def test_enrolling_again_under_another_serial_warns_that_the_old_device_stays(tmp_path, database_url, db):
    collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url})
    old, new = f"OLD-{uuid.uuid4().hex[:6]}", f"NEW-{uuid.uuid4().hex[:6]}"
    config = write_config(tmp_path / "agent.toml", tmp_path / "state", server=None)
    creds = tmp_path / "state" / "credentials.json"

    def enrol(serial: str):
        return run_cli("--config", str(config), "enroll", "--server", collector.url, "--secret", "-",
                       "--serial", serial, stdin=secret)

    try:
        await collector.wait_ready()
        secret = await add_school(db)
        first = enrol(old)
        assert first.returncode == 0 and first.stderr == "", first.stderr
        old_device = json.loads(creds.read_text())["device_id"]
        again = enrol(old.lower())  # the same serial, as the collector spells it: no warning
        assert again.returncode == 0 and "warning" not in again.stderr, again.stderr
        moved = enrol(new)
    finally:
        collector.stop()
    assert moved.returncode == 0, moved.stderr
    assert moved.stderr == (f"warning: this state directory was enrolled as serial {old.lower()} (device {old_device}); "
                            "that device stays in the collector's inventory, and will look silent: retire it with "
                            f"`tice-collector devices revoke {old.lower()}`\n")
    assert await db.fetchval("SELECT count(*) FROM devices WHERE serial = ANY($1)", [old.upper(), new.upper()]) == 2
    # The command the warning gives works as written.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")} | {"TICE_DATABASE_URL": database_url}
    revoke = subprocess.run([sys.executable, "-m", "tice_collector.cli", "devices", "revoke", old.lower()], env=env,
                            capture_output=True, text=True, timeout=120)
    assert revoke.returncode == 0, revoke.stderr
    assert await db.fetchval("SELECT count(*) FROM device_tokens t JOIN devices d ON d.id = t.device_id "
                             "WHERE d.serial = $1 AND t.revoked_at IS NULL", old.upper()) == 0
