"""The metric names a PromQL expression reads, for the contract checks of rules and dashboards.

A small lexer, not a full parser: it removes what cannot be a metric name (strings, label
matchers in braces, label lists after by/without/on/ignoring/group_left/group_right, range and
subquery brackets, numbers and durations), then sorts the identifiers left: one followed by
`(` must be a known function or aggregation, a keyword is a keyword, anything else is a metric
name. An unknown function is an error, so a typo never passes as a name.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

FUNCTIONS = frozenset("""
abs absent absent_over_time avg_over_time ceil changes clamp clamp_max clamp_min count_over_time
day_of_month day_of_week day_of_year days_in_month delta deriv exp floor histogram_quantile holt_winters
hour idelta increase irate label_join label_replace last_over_time ln log10 log2 max_over_time
min_over_time minute month predict_linear present_over_time quantile_over_time rate resets round
scalar sgn sort sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time time timestamp vector
year
sum min max avg group stddev stdvar count count_values bottomk topk quantile
""".split())
KEYWORDS = frozenset("and or unless bool offset inf nan".split())
LABEL_LISTS = frozenset("by without on ignoring group_left group_right".split())

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_TOKEN = re.compile(r"\s*(?:([A-Za-z_:][A-Za-z0-9_:]*)|(\d+(?:\.\d+)?(?:e[+-]?\d+)?[smhdwy]*)|(.))", re.S)


class PromQLError(ValueError):
    """The expression uses something this reader does not know (say a misspelt function)."""


def metric_names(expr: str) -> set[str]:
    """Every metric name `expr` selects, e.g. {"tice_devices_judged"} for
    `sum by (school) (tice_devices_judged{kind="laptop"})`."""
    text = _STRING.sub('""', expr)
    text = _drop_between(text, "{", "}")
    text = _drop_between(text, "[", "]")
    names: set[str] = set()
    tokens = [(m.group(1), m.group(3)) for m in _TOKEN.finditer(text) if m.group(0).strip()]
    i = 0
    while i < len(tokens):
        ident = tokens[i][0]
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if ident is None:
            i += 1
            continue
        if ident in LABEL_LISTS:
            i += 1
            if i < len(tokens) and tokens[i][1] == "(":  # skip the label list
                while i < len(tokens) and tokens[i][1] != ")":
                    i += 1
            i += 1
            continue
        after = tokens[i + 1][0] if i + 1 < len(tokens) else None
        if ident in FUNCTIONS and after in ("by", "without"):  # sum by (school) (...)
            i += 1
            continue
        if nxt == "(":
            if ident not in FUNCTIONS:
                raise PromQLError(f"unknown function {ident!r} in {expr!r}")
        elif ident.lower() not in KEYWORDS:
            names.add(ident)
        i += 1
    return names


def _drop_between(text: str, open_: str, close: str) -> str:
    out: list[str] = []
    depth = 0
    for ch in text:
        if ch == open_:
            depth += 1
        elif ch == close and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


CONTRACT = Path(__file__).resolve().parents[1] / "collector" / "tice_collector" / "metrics.csv"
# Prometheus' own series a rule or a panel may read besides the contract.
PROMETHEUS_OWN = frozenset({"up"})


def allowed_names() -> set[str]:
    """The series names a Prometheus holds for the metrics declared in collector/tice_collector/metrics.csv (a
    histogram is read as NAME_bucket, NAME_sum and NAME_count), and Prometheus' own `up`."""
    with open(CONTRACT, newline="", encoding="utf-8") as f:
        declared = {row["name"]: row["type"] for row in csv.DictReader(f)}
    names = set(PROMETHEUS_OWN)
    for name, kind in declared.items():
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names
