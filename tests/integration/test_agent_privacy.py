"""The real agent reading a simulated 3G key (HiLink, over loopback) and sending to the real
collector: when the key cuts its `device/information` answer short, the probe's error is sent
and stored, and it holds none of the SIM's identity (IMSI, ICCID, phone number) nor the IMEI."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from tests.agent_helpers import enrol, status, wait_until, write_config
from tests.helpers import add_school
from tice_agent.simulators.hilink import HiLinkSimulator, Key

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only


def assert_no_identity(text: str, key: Key, *, digits: bool = True) -> None:
    """None of the key's identifiers, nor a piece of them; `digits`: no run of 6 digits at all."""
    assert not (digits and re.search(r"\d{6}", text)), text
    for value in (key.imsi, key.iccid, key.msisdn, key.imei, key.serial):
        assert value[-6:] not in text, (value, text)


async def test_a_cut_short_information_answer_sends_no_identity(tmp_path, db, agent_collector, start_daemon):
    key = Key()
    info = '<?xml version="1.0" encoding="UTF-8"?>\n<response>\n<DeviceName>E3372h-320</DeviceName>\n'
    # Cut inside <Iccid>, after the IMSI: what the newcomer saw quoted in the error.
    key.short = {"device/information": len(info) + len(
        f"<SerialNumber>{key.serial}</SerialNumber>\n<Imei>{key.imei}</Imei>\n<Imsi>{key.imsi}</Imsi>\n<Iccid>8933011")}
    sim = await HiLinkSimulator(key).start()
    try:
        config = write_config(tmp_path / "agent.toml", tmp_path / "state", server=agent_collector.url, probes=False)
        with config.open("a") as f:
            f.write(f'[probes.hilink]\ninterval_s = 0.3\nurl = "{sim.url}"\n')
        device = enrol(config, await add_school(db), f"P-{uuid.uuid4().hex[:8]}")
        daemon = start_daemon(config)

        async def stored_errors() -> list[str]:
            return [row["error"] for row in await db.fetch(
                "SELECT error FROM probe_records WHERE device_id = $1 AND probe = 'hilink' AND NOT ok", device)]

        errors = await wait_until(stored_errors, "the hilink probe's failure stored by the collector")
        modems = await wait_until(lambda: db.fetchval(
            "SELECT count(*) FROM modem_records WHERE device_id = $1 AND up", device), "a modem reading stored")
        assert modems >= 1  # the reading is kept: only device/information was lost
        view = status(config)
        log = daemon.stop()
    finally:
        await sim.stop()

    assert any(a[1] == "/api/device/information" for a in sim.requests)
    for error in errors:
        assert error.startswith("DeviceErrors: device/information: expected a HiLink XML answer, got XML cut short"), \
            error
        assert_no_identity(error, key)
    local = view["probes"]["hilink"]
    assert local["ok"] is False and local["error"] == errors[0]
    assert_no_identity(json.dumps(view), key, digits=False)  # (it holds pids, UAIs, byte counts)
    assert_no_identity(log, key, digits=False)  # the daemon's log (the journal) holds none of it either
    spooled = (tmp_path / "state" / "spool.sqlite").read_bytes()
    assert key.imsi.encode() not in spooled and key.iccid[:12].encode() not in spooled
