"""The simulators run from the command line for a demo: `python -m tice_agent.simulators.hilink` and
`python -m tice_agent.simulators.pjlink`, read by the real probes over loopback."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.helpers import free_port, wait_until
from tice_agent.probes.hilink import HiLinkProbe
from tice_agent.probes.pjlink import PjlinkProbe
from tice_agent.probes.pjlink import query as pjlink_query

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only


class Child:
    def __init__(self, *argv: str) -> None:
        # SIGINT as a terminal gives it, whatever this test runner inherited (a job started in the
        # background by a shell without job control ignores SIGINT, and so would its children).
        self.proc = subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.banner = ""

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"exited {self.proc.returncode}: {self.proc.stdout.read()}")  # type: ignore[union-attr]
        self.banner = self.proc.stdout.readline()  # type: ignore[union-attr]  # the banner is one line
        return bool(self.banner)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, out
        assert "Traceback" not in out, out
        return out


async def test_hilink_simulator_from_the_command_line():
    port = free_port()
    child = Child("tice_agent.simulators.hilink", "--port", str(port), "--rsrp", "-112", "--rx-rate", "1000")
    try:
        await wait_until(child.ready, "the simulator's banner")
        assert child.banner.startswith(f"HiLink simulator on http://127.0.0.1:{port}")
        [reading] = await HiLinkProbe(url=f"http://127.0.0.1:{port}").collect()
        assert reading.up and reading.rsrp_dbm == -112 and reading.state == "connected"
    finally:
        child.stop()


async def test_pjlink_simulator_from_the_command_line_with_a_power_cycle():
    port = free_port()
    child = Child("tice_agent.simulators.pjlink", "--port", str(port), "--password", "JBMIAProjectorLink",
                  "--cycle", "0.5", "60")
    try:
        await wait_until(child.ready, "the simulator's banner")
        assert child.banner.startswith(f"PJLink simulator on 127.0.0.1:{port}")
        [reading] = await PjlinkProbe(projectors=[f"127.0.0.1:{port}"], password="JBMIAProjectorLink").collect()
        assert reading.up and reading.power in ("on", "cooling")

        async def cooling_or_standby() -> bool:
            session = await pjlink_query("127.0.0.1", port, password="JBMIAProjectorLink", commands=["POWR"])
            return session.answers.get("POWR") in ("2", "0")

        await wait_until(cooling_or_standby, "the scripted power-off")
    finally:
        child.stop()
