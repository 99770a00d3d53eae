"""The generated Grafana dashboards (dashboards/grafana/): fresh, typed, and reading only
declared metrics through datasource variables. Their queries are evaluated against a real
Prometheus and PostgreSQL in tests/integration/test_stack_e2e.py and test_dashboard_days.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.cog.runtime import UnknownDataquery, register_dataquery_variant
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel

from dashboards.grafana import build, sql
from tests import grafana
from tests.promql import allowed_names, metric_names

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "dashboards" / "grafana" / "provisioning"
BOARDS = grafana.load_all()


def test_every_dashboard_is_committed_and_fresh(capsys):
    assert set(BOARDS) == set(build.DASHBOARDS)
    for name in build.DASHBOARDS:
        assert (grafana.DASHBOARDS / f"{name}.json").read_text(encoding="utf-8") == build.render(name), (
            f"dashboards/grafana/dashboards/{name}.json is stale: run python -m dashboards.grafana.build")
    assert build.main(["--check"]) == 0, capsys.readouterr().err


def test_the_check_fails_on_a_stale_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build, "OUT", tmp_path)
    (tmp_path / "school.json").write_text("{}\n", encoding="utf-8")
    assert build.main(["--check"]) == 1
    assert "school.json" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_each_dashboard_reads_back_into_the_sdk_types_unchanged(name):
    register_default_plugins()
    register_dataquery_variant(sql.variant_config())
    text = (grafana.DASHBOARDS / f"{name}.json").read_text(encoding="utf-8")
    board = Dashboard.from_json(json.loads(text))
    assert JSONEncoder(sort_keys=True, indent=2).encode(board) + "\n" == text
    targets = [t for p in board.panels or [] if isinstance(p, Panel) for t in p.targets or []]
    assert targets
    assert not [t for t in targets if isinstance(t, UnknownDataquery)], "a query the SDK's types do not know"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_each_dashboard_reads_through_its_datasource_variables(name):
    board = BOARDS[name]
    variables = grafana.variables(board)
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["history"]["type"] == "datasource" and variables["history"]["query"] == sql.PLUGIN_ID
    queries = grafana.panel_queries(name, board)  # raises on a target with a fixed datasource
    assert {q.kind for q in queries} == {"promql", "sql"}
    for panel in grafana.panels(board):
        assert panel.get("targets"), f"{name} / {panel['title']}: no query"
        assert panel["datasource"]["uid"] in (grafana.PROMETHEUS_UID, grafana.HISTORY_UID), panel["title"]
    for variable in variables.values():
        if "datasource" in variable:
            assert variable["datasource"]["uid"] == grafana.PROMETHEUS_UID, variable["name"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_each_dashboard_names_only_declared_metrics(name):
    board = BOARDS[name]
    exprs = [q.text for q in grafana.panel_queries(name, board) if q.kind == "promql"]
    for variable in grafana.variables(board).values():
        if variable["type"] == "query":
            m = grafana.LABEL_VALUES.match(variable["query"])
            assert m, f"{name}: variable {variable['name']} is not label_values(metric, label)"
            exprs.append(m.group(1))
    assert exprs
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= allowed_names(), f"{name}: {expr!r} reads undeclared {sorted(names - allowed_names())}"


def test_dashboard_uids_are_unique_and_stable():
    uids = [board["uid"] for board in BOARDS.values()]
    assert len(uids) == len(set(uids))
    assert all(uid.startswith("tice-") for uid in uids), uids


def test_provisioning_defines_the_datasources_the_variables_ask_for():
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "tice.yml").read_text(encoding="utf-8"))
    types = {d["type"] for d in datasources["datasources"]}
    assert types == {"prometheus", sql.PLUGIN_ID}
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "tice.yml").read_text(encoding="utf-8"))
    path = providers["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert f"./dashboards/grafana/dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]
