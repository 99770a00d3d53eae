"""Two real agents that share one device identity, against the real collector: laptops enrolled
with the same serial (an image whose serial came from the machine-id), and laptops cloned with
their credentials. The collector must tell, log a warning naming the device, and count it in
tice_devices_shared_identity."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.agent_helpers import Daemon, collector_env, run_cli, status, wait_until, write_config
from tests.helpers import SCHOOL, CollectorProcess, add_school

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only


def env(database_url: str) -> dict[str, str]:
    # No grace (a test cannot wait 10 minutes) and the jobs every second.
    return {**collector_env(database_url), "TICE_SHARED_IDENTITY_GRACE_S": "0", "TICE_SNAPSHOT_INTERVAL_S": "1",
            "TICE_SNAPSHOT_CACHE_S": "0"}


def enrol(config: Path, server: str, secret: str, serial: str) -> uuid.UUID:
    r = run_cli("--config", str(config), "enroll", "--server", server, "--secret", "-", "--serial", serial,
                stdin=secret + "\n")
    assert r.returncode == 0, r.stderr
    return uuid.UUID(json.loads((config.parent / config.stem / "credentials.json").read_text())["device_id"])


def agent(tmp: Path, name: str) -> Path:
    return write_config(tmp / f"{name}.toml", tmp / name)


async def shared_devices(url: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    return sum(s.value for fam in text_string_to_metric_families(text) if fam.name == "tice_devices_shared_identity"
               for s in fam.samples if s.labels == {"school": SCHOOL, "kind": "laptop"})


async def conflict(db, device: uuid.UUID):
    return await db.fetchrow("SELECT earlier_enrolment_uses, spools_at_once FROM device_identity_conflicts "
                             "WHERE device_id = $1", device)


async def test_two_agents_enrolled_with_one_serial(tmp_path, database_url, db):
    collector = CollectorProcess(env=env(database_url))
    daemons: list[Daemon] = []
    try:
        await collector.wait_ready()
        secret = await add_school(db)
        a, b = agent(tmp_path, "a"), agent(tmp_path, "b")
        device = enrol(a, collector.url, secret, "SN-FROM-ONE-IMAGE")
        daemons.append(Daemon(a))
        await wait_until(lambda: status(a)["sender"]["last_success_at"], "laptop A's first delivery")
        # Laptop B enrols with the same serial: the same device, and A's token is replaced.
        assert enrol(b, collector.url, secret, "SN-FROM-ONE-IMAGE") == device
        daemons.append(Daemon(b))
        await wait_until(lambda: status(b)["sender"]["last_success_at"], "laptop B's first delivery")
        row = await wait_until(lambda: conflict(db, device), "the collector to see A's replaced token in use")
        assert row["earlier_enrolment_uses"] >= 1
        assert await wait_until(lambda: shared_devices(collector.url), "tice_devices_shared_identity") == 1
        assert status(a)["sender"]["auth_failed"] is True  # A is told to re-enrol
        for d in daemons:
            d.stop()
    finally:
        for d in daemons:
            d.kill()
        _, log = collector.stop()
    assert f"device {device} (serial 'SN-FROM-ONE-IMAGE') is used by two agents at once" in log
    assert log.count(f"device {device} (serial") == 1  # one warning, not one per request


async def test_two_agents_cloned_with_their_credentials(tmp_path, database_url, db):
    collector = CollectorProcess(env=env(database_url))
    daemons: list[Daemon] = []
    try:
        await collector.wait_ready()
        secret = await add_school(db)
        a, b = agent(tmp_path, "a"), agent(tmp_path, "b")
        device = enrol(a, collector.url, secret, "SN-MASTER")
        # The disk image was taken after enrolment and before the first run: B has A's
        # credentials (and token) but makes a spool of its own.
        shutil.copytree(tmp_path / "a", tmp_path / "b")
        for config in (a, b):
            daemons.append(Daemon(config))
        for config in (a, b):
            await wait_until(lambda c=config: status(c)["sender"]["last_success_at"], f"{config.stem}'s delivery")
        spools = {status(c)["spool"]["spool"] for c in (a, b)}
        assert len(spools) == 2
        row = await wait_until(lambda: conflict(db, device), "the identity job to see two spools at once")
        assert row["spools_at_once"] == 2 and row["earlier_enrolment_uses"] == 0
        assert await wait_until(lambda: shared_devices(collector.url), "tice_devices_shared_identity") == 1
        for d in daemons:
            d.stop()
    finally:
        for d in daemons:
            d.kill()
        _, log = collector.stop()
    assert f"device {device} (serial 'SN-MASTER') is used by two agents at once: 2 spools" in log
