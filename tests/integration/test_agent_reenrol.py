"""A running `tice-agent run` and new credentials, against the real collector: after its token
is revoked the daemon backs off for a long time; `tice-agent enroll` run meanwhile makes it send
at once, with the new token. A daemon started on damaged credentials keeps collecting, says so
once, and sends as soon as the device is enrolled again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.agent_helpers import enrol, run_cli, status, wait_until, write_config
from tests.helpers import add_school

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only

# Far longer than the test's waits: without noticing the new credentials the daemon would sit
# out a backoff of up to an hour (jittered: at least a minute, but for a 2 % chance).
BACKOFF = "backoff_base_s = 3600.0\nbackoff_cap_s = 3600.0\n"


def slow_backoff_config(tmp: Path, server: str) -> Path:
    config = write_config(tmp / "agent.toml", tmp / "state", server=server)
    text = config.read_text().replace("backoff_base_s = 0.2\nbackoff_cap_s = 1.0\n", BACKOFF)
    assert BACKOFF in text
    config.write_text(text)
    return config


def revoke(database_url: str, serial: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")} | {"TICE_DATABASE_URL": database_url}
    r = subprocess.run([sys.executable, "-m", "tice_collector.cli", "devices", "revoke", serial], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


async def test_a_running_daemon_sends_at_once_after_a_re_enrolment(tmp_path, database_url, db, agent_collector,
                                                                  start_daemon):
    serial = f"R-{uuid.uuid4().hex[:8]}"
    config = slow_backoff_config(tmp_path, agent_collector.url)
    first = enrol(config, await add_school(db), serial)
    daemon = start_daemon(config)
    await wait_until(lambda: status(config)["sender"]["last_success_at"], "a first delivery")

    revoke(database_url, serial)
    rejected = await wait_until(lambda: (v := status(config)) and v["sender"]["auth_failed"] and v,
                                "the daemon to see its token rejected")
    waiting_until = datetime.fromisoformat(rejected["sender"]["next_attempt_at"])
    text = run_cli("--config", str(config), "status").stdout
    assert "ACTION NEEDED:  the collector rejects this device's token" in text

    enrolled_at = datetime.now(UTC)
    second = enrol(config, await add_school(db), serial)

    async def stored_with_new_token() -> int:  # (the same serial may give back the same device)
        return int(await db.fetchval("SELECT count(*) FROM usage_records WHERE device_id = $1 AND "
                                     "received_at > $2", second, enrolled_at))

    await wait_until(stored_with_new_token, "records sent with the new credentials", timeout=90)
    sent_at = datetime.now(UTC)
    after = status(config)
    log = daemon.stop()

    assert sent_at < waiting_until, (sent_at, waiting_until)  # it did not sit out its backoff
    assert (sent_at - enrolled_at).total_seconds() < 90
    assert after["sender"]["auth_failed"] is False and after["device_id"] == str(second)
    assert after["sender"]["attempt"] == 0
    assert "new credentials in" in log and "sending now" in log
    assert first != second or await db.fetchval("SELECT count(*) FROM device_tokens WHERE device_id = $1", first) >= 2


@pytest.mark.parametrize("damage", ['{"token":1}', "\n"], ids=["wrong-type", "empty-line"])
async def test_a_daemon_on_damaged_credentials_keeps_collecting_then_sends_after_enrol(tmp_path, db, agent_collector,
                                                                                       start_daemon, damage):
    serial = f"D-{uuid.uuid4().hex[:8]}"
    creds = tmp_path / "state" / "credentials.json"
    config = slow_backoff_config(tmp_path, agent_collector.url)
    creds.parent.mkdir(mode=0o700)
    creds.write_text(damage)
    daemon = start_daemon(config)
    await wait_until(daemon.running, "the daemon to start on damaged credentials")
    await wait_until(lambda: "damaged credentials" in daemon.log(), "the daemon to say the credentials are damaged")

    # Commands that need the credentials stop with one line naming the file: exit 2.
    for command in ("status", "once"):
        r = run_cli("--config", str(config), command)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (command, r.stderr)
        assert r.stderr.splitlines() == [r.stderr.strip()]
        assert r.stderr.startswith(f"error: {creds}: damaged credentials (")
        assert "re-enrol this device with `tice-agent enroll" in r.stderr

    await wait_until(lambda: "usage" in json.loads(
        (tmp_path / "state" / "status.json").read_text())["probes"], "the probes to keep running")
    device = enrol(config, await add_school(db), serial)
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM usage_records WHERE device_id = $1", device),
                     "records kept meanwhile, sent once enrolled", timeout=90)
    log = daemon.stop()

    assert log.count("damaged credentials") == 2  # said once at start, once by the sender: not at every round
    assert "Traceback" not in log
    assert status(config)["sender"]["last_success_at"] is not None
