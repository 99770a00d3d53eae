"""The queries of the generated Grafana dashboards, and Grafana's substitutions done by hand.

Grafana's server is not installable here, so the tests read each panel's queries from the
committed JSON and evaluate them themselves: PromQL through a real Prometheus, SQL on the real
PostgreSQL. Only the variables and macros the dashboards use are replaced; any other `$...` is
an error, so a new macro cannot slip through untested.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards" / "grafana" / "dashboards"
PROMETHEUS_UID = "${datasource}"
HISTORY_UID = "${history}"


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str      # file name without .json
    panel: str          # panel title
    ref: str            # refId
    kind: str           # "promql" or "sql"
    text: str           # as in the dashboard, variables unexpanded
    instant: bool = False

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} [{self.ref}] {self.kind}: {' '.join(self.text.split())}"


def load_all() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, rows' collapsed panels included."""
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(name: str, board: Mapping[str, Any]) -> list[PanelQuery]:
    found = []
    for panel in panels(board):
        for target in panel.get("targets", []):
            uid = target.get("datasource", {}).get("uid")
            if uid == PROMETHEUS_UID:
                found.append(PanelQuery(name, panel["title"], target["refId"], "promql", target["expr"],
                                        bool(target.get("instant"))))
            elif uid == HISTORY_UID:
                found.append(PanelQuery(name, panel["title"], target["refId"], "sql", target["rawSql"]))
            else:
                raise AssertionError(f"{name} / {panel['title']}: target {target.get('refId')} reads datasource "
                                     f"{uid!r}, not a datasource variable")
    return found


def variables(board: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board.get("templating", {}).get("list", [])}


def constants(board: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(v["query"]) for name, v in variables(board).items() if v["type"] == "constant"}


LABEL_VALUES = re.compile(r"^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$")
_VAR = re.compile(r"\$(?:\{(\w+)(?::(\w+))?\}|(\w+))")


def expand_promql(expr: str, values: Mapping[str, str], rate_interval: str) -> str:
    """Grafana's substitutions in a PromQL target: $__rate_interval and plain variables."""
    def sub(m: re.Match[str]) -> str:
        name, fmt = m.group(1) or m.group(3), m.group(2)
        if name == "__rate_interval" and fmt is None:
            return rate_interval
        if name in values and fmt is None:
            return values[name]
        raise AssertionError(f"unexpected Grafana variable or macro {m.group(0)!r} in {expr!r}")

    return _VAR.sub(sub, expr)


_TIME_FILTER = re.compile(r"\$__timeFilter\(([^()]+)\)")


def expand_sql(raw: str, values: Mapping[str, str], start: datetime, end: datetime) -> str:
    """Grafana's substitutions in a PostgreSQL target: $__timeFilter(col), $__timeFrom() and
    $__timeTo() (quoted RFC 3339 instants, as Grafana's PostgreSQL macros give them), ${name:sqlstring}
    (a quoted literal) and plain variables (constants, inserted as they are)."""
    raw = _TIME_FILTER.sub(lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'", raw)
    raw = raw.replace("$__timeFrom()", f"'{start.isoformat()}'").replace("$__timeTo()", f"'{end.isoformat()}'")

    def sub(m: re.Match[str]) -> str:
        name, fmt = m.group(1) or m.group(3), m.group(2)
        if name in values and fmt == "sqlstring":
            return "'" + values[name].replace("'", "''") + "'"
        if name in values and fmt is None:
            return values[name]
        raise AssertionError(f"unexpected Grafana variable or macro {m.group(0)!r} in {raw!r}")

    return _VAR.sub(sub, raw)
