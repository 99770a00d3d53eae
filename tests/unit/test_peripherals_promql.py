"""The PromQL that docs/peripherals.md gives for the city's questions names only metrics of the
contract (collector/tice_collector/metrics.csv) and, run by Prometheus's own engine (`promtool test rules`) on
series shaped as /metrics exports them, picks out exactly the keys, projectors and disks it says.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_contracts import contract, promtool

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "peripherals.md"

S = "0210001A"
DAY = 86400


def documented() -> list[str]:
    """The expressions of the PromQL block that follows "in PromQL:" (comments left out)."""
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"in PromQL:\n\n```text\n(.*?)```", text, re.S)
    assert found, "docs/peripherals.md: no PromQL block after 'in PromQL:'"
    return [line for line in found.group(1).splitlines() if line.strip() and not line.startswith("#")]


def series(name: str, value: str, **labels: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted({"school": S, **labels}.items()))
    return {"series": f"{name}{{{inner}}}", "values": value}


# Per documented expression: series as /metrics exports them (one sample a day for 30 days),
# and the label sets the expression must return at day 30, no more, no fewer.
CASES: dict[str, tuple[list[dict[str, str]], list[dict[str, str]]]] = {
    "tice_modem_quota_used_ratio > 0.8": (
        [series("tice_modem_quota_used_ratio", "0.9x30", peripheral="k1"),
         series("tice_modem_quota_used_ratio", "0.5x30", peripheral="k2")],
        [{"peripheral": "k1"}]),
    "tice_modem_connected == 0": (
        [series("tice_modem_connected", "0x30", peripheral="k1"),
         series("tice_modem_connected", "1x30", peripheral="k2")],
        [{"peripheral": "k1"}]),
    "tice_modem_connected_today_seconds < 600": (
        [series("tice_modem_connected_today_seconds", "120x30", peripheral="k1"),
         series("tice_modem_connected_today_seconds", "3600x30", peripheral="k2")],
        [{"peripheral": "k1"}]),
    'tice_modem_signal_dbm{measure="rsrp"} < -110': (
        [series("tice_modem_signal_dbm", "-115x30", peripheral="k1", measure="rsrp"),
         series("tice_modem_signal_dbm", "-98x30", peripheral="k2", measure="rsrp"),
         series("tice_modem_signal_dbm", "-120x30", peripheral="k3", measure="rssi")],  # 3G: another scale
        [{"peripheral": "k1", "measure": "rsrp"}]),
    "tice_projector_lamp_remaining_seconds < 200 * 3600": (
        [series("tice_projector_lamp_remaining_seconds", f"{150 * 3600}x30", peripheral="p1"),
         series("tice_projector_lamp_remaining_seconds", f"{588 * 3600}x30", peripheral="p2")],
        [{"peripheral": "p1"}]),
    "tice_projector_error_level == 2": (
        [series("tice_projector_error_level", "2x30", peripheral="p1", component="lamp"),
         series("tice_projector_error_level", "1x30", peripheral="p1", component="filter"),
         series("tice_projector_error_level", "0x30", peripheral="p2", component="fan")],
        [{"peripheral": "p1", "component": "lamp"}]),
    "(time() - tice_disk_last_connected_timestamp_seconds) / 86400 > 14": (
        # Evaluated at day 30: d1 last plugged in on day 10 (20 days ago), d2 on day 29.
        [series("tice_disk_last_connected_timestamp_seconds", f"{10 * DAY}x30", peripheral="d1"),
         series("tice_disk_last_connected_timestamp_seconds", f"{29 * DAY}x30", peripheral="d2")],
        [{"peripheral": "d1"}]),
    "tice_disk_smart_healthy == 0": (
        [series("tice_disk_smart_healthy", "0x30", peripheral="d1"),
         series("tice_disk_smart_healthy", "1x30", peripheral="d2")],
        [{"peripheral": "d1"}]),
    'tice_peripheral_host_info{kind="modem"}': (
        [series("tice_peripheral_host_info", "1x30", peripheral="k1", kind="modem", host="h1"),
         series("tice_peripheral_host_info", "1x30", peripheral="p1", kind="projector", host="h1")],
        [{"peripheral": "k1", "kind": "modem", "host": "h1"}]),
}


def test_every_documented_expression_is_tested_and_names_only_declared_metrics():
    exprs = documented()
    assert sorted(exprs) == sorted(CASES), "update CASES with docs/peripherals.md's PromQL"
    declared = set(contract())
    for expr in exprs:
        names = set(re.findall(r"\btice_[a-z0-9_]+", expr))
        assert names and names <= declared, (expr, names - declared)


def test_each_documented_expression_picks_out_what_it_says(tmp_path):
    tool = promtool()
    if tool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    exprs = documented()
    rules: list[dict[str, Any]] = []
    inputs: list[dict[str, str]] = []
    expected: list[dict[str, Any]] = []
    for i, expr in enumerate(exprs):
        name = f"documented_{i}"
        rules.append({"alert": name, "expr": expr})
        given, fires = CASES[expr]
        inputs += given
        expected.append({"eval_time": "30d", "alertname": name,
                         "exp_alerts": [{"exp_labels": {"school": S, **labels}} for labels in fires]})
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "documented", "rules": rules}]}))
    (tmp_path / "test.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "1d",
        "tests": [{"interval": "1d", "input_series": inputs, "alert_rule_test": expected}]}))
    ran = subprocess.run([tool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
