"""The alert rules (dashboards/prometheus/rules/*.yml) and their promtool tests.

promtool checks and runs them; these tests add what promtool does not check: every alert has
its annotations, a severity, a runbook section, a silent and a firing case, the school label
when it is about a school, reads only declared metrics, and low use and silence wait for a
school day, with a holiday case proving it.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import required_tool
from tests.promql import allowed_names, metric_names

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "dashboards" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*_test.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"
SEVERITIES = {"critical", "warning", "info"}
# Judged on school days only: these must read tice_school_day and have a holiday case.
SCHOOL_DAY_FILES = {"usage.yml", "silence.yml"}
_SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$")


@functools.cache
def load(path: Path) -> Any:
    """A rule or rule-test file, parsed once per run (the test files are large: libyaml's loader)."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def alerts() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, rule) for path in RULE_FILES for group in load(path)["groups"]
            for rule in group["rules"] if "alert" in rule]


def cases() -> list[dict[str, Any]]:
    return [case for path in TEST_FILES for case in load(path)["tests"]]


def series(case: dict[str, Any]) -> list[tuple[str, set[str], str]]:
    """(metric, label names, values) of a test case's input series."""
    out = []
    for s in case["input_series"]:
        m = _SERIES.match(s["series"])
        assert m, s["series"]
        out.append((m.group(1), {kv.split("=")[0].strip() for kv in m.group(2).split(",") if kv}, s["values"]))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))


ALERTS = alerts()
EXPRS = {rule["alert"]: rule["expr"] for _, rule in ALERTS}


def test_there_are_alerts_and_each_name_is_unique():
    names = [rule["alert"] for _, rule in ALERTS]
    assert len(names) >= 14, names
    assert len(names) == len(set(names)), names


def test_promtool_check_rules():
    tool = required_tool("promtool", "prometheus")
    result = subprocess.run([tool, "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow  # promtool evaluates every rule test: seconds
def test_promtool_test_rules():
    tool = required_tool("promtool", "prometheus")
    result = subprocess.run([tool, "test", "rules", *map(str, TEST_FILES)], capture_output=True, text=True,
                            timeout=300, cwd=PROM / "tests")
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prometheus_config_is_valid_and_loads_every_rules_file():
    tool = required_tool("promtool", "prometheus")
    result = subprocess.run([tool, "check", "config", str(PROM / "prometheus.yml")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout, result.stdout


def test_each_rules_file_has_its_test_file():
    for path in RULE_FILES:
        test = PROM / "tests" / f"{path.stem}_test.yml"
        assert test.exists(), f"{path.name} has no {test.name}"
        assert load(test)["rule_files"] == [f"../rules/{path.name}"], test.name


@pytest.mark.parametrize(("file", "rule"), ALERTS, ids=[r["alert"] for _, r in ALERTS])
def test_each_alert_says_what_it_means_how_bad_and_where_the_runbook_is(file, rule):
    annotations = rule.get("annotations", {})
    assert set(annotations) == {"summary", "description", "runbook_url"}, annotations
    assert rule.get("labels", {}).get("severity") in SEVERITIES, rule.get("labels")
    headings = {slug(line[3:]) for line in RUNBOOKS.read_text(encoding="utf-8").splitlines()
                if line.startswith("## ")}
    anchor = rule["alert"].lower()
    assert annotations["runbook_url"] == f"docs/runbooks.md#{anchor}"
    assert anchor in headings, f"docs/runbooks.md has no section '## {rule['alert']}'"


@pytest.mark.parametrize(("file", "rule"), ALERTS, ids=[r["alert"] for _, r in ALERTS])
def test_each_alert_reads_only_declared_metrics(file, rule):
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    assert names <= allowed_names(), f"{rule['alert']} reads undeclared {sorted(names - allowed_names())}"


@pytest.mark.parametrize("name", sorted(EXPRS))
def test_each_alert_has_a_silent_and_a_firing_case(name):
    checks = [check for case in cases() for check in case.get("alert_rule_test", []) if check["alertname"] == name]
    assert any(check.get("exp_alerts") for check in checks), f"{name}: no case where it fires"
    assert any(not check.get("exp_alerts") for check in checks), f"{name}: no case where it stays silent"


def test_an_alert_about_a_school_carries_the_school_label_and_others_do_not():
    seen = 0
    for case in cases():
        labelled = {metric for metric, labels, _ in series(case) if "school" in labels}
        for check in case.get("alert_rule_test", []):
            about_school = bool(metric_names(EXPRS[check["alertname"]]) & labelled)
            for alert in check.get("exp_alerts") or []:
                seen += 1
                assert ("school" in alert["exp_labels"]) == about_school, (check["alertname"], alert["exp_labels"])
    assert seen >= len(EXPRS)


def test_low_use_and_silence_wait_for_a_school_day_and_a_holiday_case_proves_it():
    gated = [rule["alert"] for file, rule in ALERTS if file in SCHOOL_DAY_FILES]
    assert len(gated) >= 5, gated
    for name in gated:
        assert "tice_school_day" in metric_names(EXPRS[name]), name
        holiday_silent = [
            check for case in cases()
            if (days := [v for m, _, v in series(case) if m == "tice_school_day"]) and all(
                set(v.replace("x", " ").split()[::2]) == {"0"} for v in days)
            for check in case["alert_rule_test"] if check["alertname"] == name and not check.get("exp_alerts")]
        assert holiday_silent, f"{name}: no case with tice_school_day 0 throughout where it stays silent"
