"""The real agent (`tice-agent run`, a child process) reads a HiLink 3G key and three PJLink
projectors, simulated on loopback, and the real collector stores its records in PostgreSQL.

Between the agent and the collector sits a recording pass-through, so the test reads the very
JSON the agent sent: nothing personal may be in it (IMSI, ICCID, phone number, raw IMEI, cell
ids, passwords). A session the key forgets, a projector whose password is wrong and a projector
in standby that refuses connections each give the right data, and the agent keeps running.
Then the collector's jobs run (`tice-collector jobs run rollup|detect|snapshot`) and its /metrics
shows the key's signal and bytes against its plan quota and each projector's state and lamp.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.agent_helpers import Daemon, collector_env, run_cli, status, wait_until
from tests.helpers import SCHOOL, CollectorProcess, add_school, run_collector
from tice_agent.simulators.hilink import HiLinkSimulator, Key
from tice_agent.simulators.pjlink import PjlinkSimulator, State

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only

PROJECTOR_PASSWORD = "Proj-pw-8841"
QUOTA = 2_000_000_000  # the key's plan: 2 GB a month
KEY_PASSWORD = "Key-pw-5512"


class Recorder:
    """A pass-through to the collector that keeps every request body (decompressed)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.bodies: list[bytes] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.forward)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        self.session = aiohttp.ClientSession(auto_decompress=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()

    async def forward(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp has already undone the agent's gzip
        self.bodies.append(body)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "content-encoding")}
        assert self.session is not None
        async with self.session.request(request.method, self.upstream + request.path_qs, data=body,
                                        headers=headers) as resp:
            return web.Response(status=resp.status, body=await resp.read(),
                                headers={k: v for k, v in resp.headers.items()
                                         if k.lower() in ("content-type", "retry-after")})

    def sent_records(self) -> list[dict[str, Any]]:
        return [r for b in self.bodies if b.startswith(b'{"device_id"') for r in json.loads(b)["records"]]


def agent_config(path: Path, state: Path, server: str, hilink: str, projectors: list[str]) -> Path:
    quiet = "".join(f"[probes.{n}]\nenabled = false\n" for n in ("usage", "health", "network", "display"))
    path.write_text(f'''server = "{server}"
state_dir = "{state}"
[send]
interval_s = 0.3
timeout_s = 10.0
backoff_base_s = 0.2
backoff_cap_s = 1.0
initial_delay_max_s = 0.0
drain_batches_per_s = 20.0
[runner]
status_every = 1
{quiet}
[probes.hilink]
interval_s = 1.0
url = "{hilink}"
password = "{KEY_PASSWORD}"
timeout_s = 5.0
[probes.pjlink]
projectors = {json.dumps(projectors)}
password = "{PROJECTOR_PASSWORD}"
timeout_s = 5.0
''')
    return path


async def test_the_agent_reads_a_3g_key_and_projectors_into_postgresql(tmp_path, database_url, db):
    key = Key(password=KEY_PASSWORD, rx_rate=25_000.0, tx_rate=3_000.0, live=True)
    hilink = await HiLinkSimulator(key).start()
    good = await PjlinkSimulator(State(password=PROJECTOR_PASSWORD, lamps=[[2412.0, 1]], errors="000100")).start()
    locked = await PjlinkSimulator(State(password="another-password")).start()
    asleep = await PjlinkSimulator(State(power=0, refuse_in_standby=True)).start()
    # The collector's figures come from the jobs, run by hand below (`tice-collector jobs run`),
    # as the scheduler of any replica runs them; each scrape reads the latest snapshot.
    env = {**collector_env(database_url), "TICE_JOBS_ENABLED": "false", "TICE_SNAPSHOT_CACHE_S": "0",
           "TICE_MODEM_QUOTA_BYTES": str(QUOTA)}
    collector = CollectorProcess(env=env)
    recorder = Recorder(collector.url)
    daemon = None
    try:
        await collector.wait_ready()
        proxy = await recorder.start()
        secret = await add_school(db)
        state = tmp_path / "state"
        config = agent_config(tmp_path / "agent.toml", state, proxy, hilink.url,
                              [f"127.0.0.1:{s.port}" for s in (good, locked, asleep)])
        # In a thread: the pass-through and the simulators answer from this test's event loop.
        enrolled = await asyncio.to_thread(run_cli, "--config", str(config), "enroll", "--secret", secret,
                                           "--serial", "DIR-PC-01", "--kind", "desktop")
        assert enrolled.returncode == 0, enrolled.stderr
        device = uuid.UUID(json.loads((state / "credentials.json").read_text())["device_id"])
        daemon = Daemon(config)

        async def rows(sql: str) -> list[Any]:
            return list(await db.fetch(sql, device))

        async def modem_rows(n: int) -> list[Any]:
            got = await rows("SELECT * FROM modem_records WHERE device_id = $1 AND up ORDER BY seq")
            return got if len(got) >= n else []

        await wait_until(daemon.running, "the agent to start", timeout=120)
        before = await wait_until(lambda: modem_rows(3), "three 3G key readings stored", timeout=120)
        # The key forgets every session (its idle timeout, a reboot): the agent opens a new one.
        handshakes = hilink.handshakes
        hilink.expire_sessions()
        after = await wait_until(lambda: modem_rows(len(before) + 3), "three more readings after the expiry",
                                 timeout=120)
        assert hilink.handshakes > handshakes

        async def projector_rows() -> list[Any]:
            got = await rows("SELECT * FROM projector_records WHERE device_id = $1")
            return got if len(got) == 3 else []

        projectors = await wait_until(projector_rows, "a reading of each of the three projectors", timeout=120)
        failures = await wait_until(
            lambda: rows("SELECT error FROM probe_records WHERE device_id = $1 AND probe = 'pjlink' AND NOT ok"),
            "the refused projector password reported", timeout=120)
        live = status(config)
        assert live["daemon_running"] and live["probes"]["hilink"]["ok"]
        await asyncio.to_thread(daemon.stop)
        daemon = None
        for job in ("rollup", "detect", "snapshot"):
            ran = await asyncio.to_thread(run_collector, "jobs", "run", job, env=env)
            assert ran.returncode == 0 and ": ok in " in ran.stdout, ran.stdout + ran.stderr
        async with aiohttp.ClientSession() as http, http.get(collector.url + "/metrics") as resp:
            scrape = await resp.text()
    finally:
        if daemon is not None:
            daemon.kill()
        collector.stop()
        await recorder.stop()
        for sim in (good, locked, asleep):
            await sim.stop()
        await hilink.stop()

    salt = await db.fetchval("SELECT salt FROM peripheral_identity")

    def hashed(kind: str, ident: str) -> str:
        return hmac.new(bytes.fromhex(salt), f"{kind}:{ident}".encode(), hashlib.sha256).hexdigest()[:32]

    # The 3G key: its identity, signal, operator and traffic, intervals that add up.
    assert {r["modem_id"] for r in after} == {hashed("modem", key.imei)}  # the login gave the IMEI
    last = after[-1]
    assert (last["state"], last["technology"], last["bars"], last["plmn"]) == ("connected", "lte", 4, "20801")
    assert (last["rssi_dbm"], last["rsrp_dbm"], last["rsrq_db"], last["sinr_db"]) == (-71, -105, -14, -7)
    assert last["total_rx_bytes"] > 0 and last["session_s"] > 0
    intervals = [r for r in after if r["duration_s"] is not None]
    assert len(intervals) >= len(after) - 1 and sum(r["rx_bytes"] for r in intervals) > 0
    assert all(0 <= r["connected_s"] <= r["duration_s"] for r in intervals)  # parts never exceed the interval
    # The readings right after the expiry are as complete as before it.
    assert all(r["rsrp_dbm"] == -105 and r["modem_id"] for r in after[len(before):])

    # The projectors: read, refused password, standby refusing TCP. All three are up.
    by_power = {r["power"]: r for r in projectors}
    assert set(by_power) == {"on", "unknown", "standby"} and all(r["up"] for r in projectors)
    on = by_power["on"]
    assert (on["lamp_hours"], on["lamps_hours"], on["lamps_on"], on["cover"]) == (2412, [2412], [True], "warning")
    assert (on["input_kind"], on["input_number"], on["manufacturer"], on["pjlink_class"]) == ("digital", 1, "EPSON", 1)
    assert on["projector_id"] == hashed("projector", f"{SCHOOL}|127.0.0.1:{good.port}")
    assert by_power["unknown"]["lamp_hours"] is None and by_power["standby"]["lamp_hours"] is None
    assert len({r["projector_id"] for r in projectors}) == 3
    assert f"127.0.0.1:{locked.port}: the projector refused the password (PJLINK ERRA)" in failures[0]["error"]
    assert locked.auth_failures == 1 and good.connections == 1 and asleep.connections == 0

    # Nothing personal left the agent: the JSON it sent, byte for byte.
    sent = b"\n".join(recorder.bodies)
    assert recorder.sent_records() and b'"type":"modem"' in sent and b'"type":"projector"' in sent
    for personal in (key.imsi, key.iccid, key.msisdn, key.msisdn.lstrip("+"), key.imei, key.serial, key.cell_id,
                     KEY_PASSWORD, PROJECTOR_PASSWORD, "another-password", salt):
        assert personal.encode() not in sent, personal
    assert all(set(r) & {"imsi", "iccid", "msisdn", "imei", "cell_id"} == set() for r in recorder.sent_records())

    # /metrics, after the jobs ran: the key's signal and bytes, against its quota; each
    # projector's state: lamp hours and a cover warning, a refused password, standby.
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for f in text_string_to_metric_families(scrape) for s in f.samples}

    def m(name: str, peripheral: str, **labels: str) -> float:
        return got[(name, tuple(sorted({"school": SCHOOL, "peripheral": peripheral, **labels}.items())))]

    key_id = hashed("modem", key.imei)
    assert m("tice_modem_signal_dbm", key_id, measure="rsrp") == -105
    assert m("tice_modem_network_info", key_id, technology="lte") == 1
    assert m("tice_modem_connected", key_id) == 1
    carried = await db.fetchval("SELECT sum(coalesce(rx_bytes, 0) + coalesce(tx_bytes, 0))::bigint FROM modem_records "
                                "WHERE modem_id = $1", key_id)
    month = m("tice_modem_month_bytes", key_id)
    # The intervals follow one another; merging them only trims where two meet: the agent rounds
    # each duration to the millisecond, at most 0.5 ms of these 1-second intervals (5e-4).
    assert carried > 0 and month == pytest.approx(carried, rel=1e-3)
    assert m("tice_modem_quota_used_ratio", key_id) == month / QUOTA
    assert m("tice_peripheral_host_info", key_id, kind="modem", host=str(device)) == 1
    ids = {name: hashed("projector", f"{SCHOOL}|127.0.0.1:{s.port}")
           for name, s in (("good", good), ("locked", locked), ("asleep", asleep))}
    assert m("tice_projector_power_state", ids["good"], state="on") == 1
    assert m("tice_projector_lamp_seconds", ids["good"]) == 2412 * 3600
    assert m("tice_projector_lamp_remaining_seconds", ids["good"]) == (3000 - 2412) * 3600  # default lamp life
    assert m("tice_projector_error_level", ids["good"], component="cover") == 1
    assert m("tice_projector_error_level", ids["good"], component="fan") == 0
    assert m("tice_projector_power_state", ids["locked"], state="unknown") == 1  # wrong password: nothing read
    assert m("tice_projector_power_state", ids["asleep"], state="standby") == 1  # off, not broken
    for quiet in ("locked", "asleep"):
        assert ("tice_projector_lamp_seconds", (("peripheral", ids[quiet]), ("school", SCHOOL))) not in got
    tool = shutil.which("promtool")
    if tool is not None:
        lint = subprocess.run([tool, "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60)
        assert lint.returncode == 0, lint.stdout + lint.stderr
