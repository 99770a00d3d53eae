"""A school PC with a dead CMOS battery boots at 2009-01-01, records five minutes of use, and NTP
steps its clock to today before the first send: the real spool and sender deliver those
records to the real collector at the right time, none refused as too old."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent_testing import Machine
from tests.helpers import add_school, enroll
from tice_agent import config
from tice_agent import state as st
from tice_agent.sender import Outcome, Sender
from tice_agent.spool import Spool
from tice_wire import Usage


async def test_records_of_a_pc_booted_in_2009_are_stored_at_the_right_time(client: Any, db: Any,
                                                                              tmp_path: Path) -> None:
    device = await enroll(client, await add_school(db), serial="CMOS-1")
    today = datetime.now(UTC).replace(microsecond=0)
    m = Machine(datetime(2009, 1, 1, 8, 0, tzinfo=UTC))
    spool = Spool(tmp_path / st.SPOOL, clock=m.wall, boot_clock=m.boot_clock, boot_id="boot-1")
    for _ in range(5):
        start = m.now()
        m.run(60)
        spool.add([Usage(seq=0, at=start, duration_s=60, active_s=50, idle_s=10, source="x11")])
    m.step_wall(today)  # NTP, before the first send

    url = str(client.make_url("")).rstrip("/")
    st.save_credentials(tmp_path, st.Credentials(server=url, device_id=uuid.UUID(device["device_id"]),
                                                 token=device["token"], school="0210001A", serial="CMOS-1",
                                                 kind="laptop", enrolled_at=today))
    store = st.StatusStore(tmp_path)
    sender = Sender(config.parse({"state_dir": str(tmp_path)}), spool, store, now=m.now)
    result = await sender.send_once()
    spool.close()

    assert result.outcome is Outcome.SENT and result.records == 5
    assert store.status.sender.records_rejected == 0
    rows = await db.fetch("SELECT seq, at, at_corrected FROM usage_records WHERE device_id = $1 ORDER BY seq",
                          uuid.UUID(device["device_id"]))
    expected = [today - timedelta(minutes=5 - i) for i in range(5)]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["at"] for r in rows] == expected  # re-dated on the device, exactly
    assert [r["at_corrected"] for r in rows] == expected  # and no correction was needed
