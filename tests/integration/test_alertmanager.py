"""The Alertmanager configuration (dashboards/alertmanager/alertmanager.yml): amtool accepts it,
alerts go to the receiver their severity and school call for, and a real Alertmanager holds back
what a silent school or a collector down explains."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.helpers import free_port, required_tool, wait_until
from tests.stack import ALERTMANAGER_CONFIG, Alertmanager

pytestmark = pytest.mark.slow  # starts Alertmanager and amtool as processes

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "dashboards" / "prometheus" / "rules"
A, B = "0210001A", "0210002B"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = required_tool("amtool", "prometheus-alertmanager")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def test_amtool_check_config_passes():
    result = amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_check_config_refuses_a_route_to_an_unknown_receiver(tmp_path):
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    config["route"]["routes"][0]["receiver"] = "nobody"
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = amtool("check-config", str(broken))
    assert result.returncode != 0
    assert "nobody" in result.stdout + result.stderr


ROUTES = [
    ({"alertname": "TiceCollectorDown", "severity": "critical", "job": "tice-collector"}, "server-admins-oncall"),
    ({"alertname": "TiceSchoolSilent", "severity": "warning", "school": A}, "school-technicians"),
    ({"alertname": "TiceDevicesSilent", "severity": "warning", "school": A, "kind": "laptop"}, "school-technicians"),
    ({"alertname": "TiceAgentSpoolDrops", "severity": "warning", "school": B, "kind": "laptop"},
     "school-technicians"),
    ({"alertname": "TiceDevicesLowUse", "severity": "info", "school": A, "kind": "chromebook"},
     "school-technicians-digest"),
    ({"alertname": "TiceJobFailing", "severity": "warning", "exported_job": "detect"}, "server-admins"),
    ({"alertname": "TiceCalendarNotCovered", "severity": "warning", "zone": "A"}, "server-admins"),
]


@pytest.mark.parametrize(("labels", "receiver"), ROUTES, ids=[r[0]["alertname"] for r in ROUTES])
def test_routing_by_severity_and_school(labels, receiver):
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                    *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [receiver]


def test_every_receiver_and_every_alert_is_routed_by_a_case_above():
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    assert {r["name"] for r in config["receivers"]} == {receiver for _, receiver in ROUTES}
    kinds = {r["name"]: {k for k in r if k.endswith("_configs")} for r in config["receivers"]}
    assert any("email_configs" in k for k in kinds.values()) and any("webhook_configs" in k for k in kinds.values())
    severities = {rule["alert"]: rule["labels"]["severity"] for path in RULES.glob("*.yml")
                  for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]}
    assert {labels["severity"] for labels, _ in ROUTES} == set(severities.values())


def test_school_routes_are_muted_outside_school_hours_in_paris():
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    [school_route] = [r for r in config["route"]["routes"] if r["matchers"] == ['school=~".+"']]
    assert school_route["mute_time_intervals"] == ["outside-school-hours"]
    assert all(r["mute_time_intervals"] == ["outside-school-hours"] for r in school_route["routes"])
    [interval] = config["time_intervals"]
    assert {i["location"] for i in interval["time_intervals"]} == {"Europe/Paris"}
    [critical] = [r for r in config["route"]["routes"] if r["matchers"] == ['severity="critical"']]
    assert "mute_time_intervals" not in critical


def alert(name: str, **labels: str) -> dict:
    now = datetime.now(UTC)
    return {"labels": {"alertname": name, **labels}, "annotations": {"summary": name},
            "startsAt": (now - timedelta(minutes=5)).isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}


async def states(http: aiohttp.ClientSession, am: Alertmanager) -> dict[tuple[str, str], str]:
    async with http.get(f"{am.url}/api/v2/alerts") as resp:
        assert resp.status == 200
        body = await resp.json()
    return {(a["labels"]["alertname"], a["labels"].get("school", "")): a["status"]["state"] for a in body}


class _NotYet(dict[tuple[str, str], str]):
    """States read that are not yet the awaited ones: falsy, shown whole."""

    def __bool__(self) -> bool:
        return False


async def test_a_silent_school_holds_back_its_devices_alerts_and_a_collector_down_holds_back_everything():
    am = Alertmanager(webhook_url=f"http://127.0.0.1:{free_port()}/")  # nothing listens: deliveries fail, quietly
    try:
        await am.wait_ready()
        async with aiohttp.ClientSession() as http:
            sent = [alert("TiceSchoolSilent", severity="warning", school=A),
                    alert("TiceDevicesSilent", severity="warning", school=A, kind="laptop"),
                    alert("TiceDevicesSilent", severity="warning", school=B, kind="laptop"),
                    alert("TiceBackupDiskNotConnected", severity="warning", school=A, peripheral="d1"),
                    alert("TiceSchoolLowUse", severity="warning", school=B),
                    alert("TiceClassesLowUse", severity="warning", school=B),
                    alert("TiceJobFailing", severity="warning", exported_job="detect")]
            async with http.post(f"{am.url}/api/v2/alerts", json=sent) as resp:
                assert resp.status == 200, await resp.text()
            # Alertmanager applies inhibitions as its inhibitor takes the alerts in, a moment after
            # the POST is answered: wait for the states rather than read them once.
            want = {
                ("TiceSchoolSilent", A): "active",
                ("TiceDevicesSilent", A): "suppressed",     # explained by its school's silence
                ("TiceDevicesSilent", B): "active",         # another school: not held back
                ("TiceBackupDiskNotConnected", A): "suppressed",  # its PC is as silent as the school
                ("TiceSchoolLowUse", B): "active",
                ("TiceClassesLowUse", B): "suppressed",     # the school as a whole is under 50 %
                ("TiceJobFailing", ""): "active",
            }

            async def states_are(expected: Callable[[dict[tuple[str, str], str]], bool]) -> dict[tuple[str, str], str]:
                now = await states(http, am)
                return now if expected(now) else _NotYet(now)  # a timeout then shows the last states
            await wait_until(lambda: states_are(lambda now: now == want), "the inhibitions applied", timeout=60)
            async with http.post(f"{am.url}/api/v2/alerts",
                                 json=[alert("TiceCollectorDown", severity="critical", job="tice-collector",
                                             instance="c1:8080")]) as resp:
                assert resp.status == 200, await resp.text()

            def all_held_back(now: dict[tuple[str, str], str]) -> bool:
                rest = {k: v for k, v in now.items() if k != ("TiceCollectorDown", "")}
                return now.get(("TiceCollectorDown", "")) == "active" and set(rest.values()) == {"suppressed"}
            await wait_until(lambda: states_are(all_held_back), "everything but TiceCollectorDown suppressed",
                             timeout=60)
    finally:
        am.stop()
