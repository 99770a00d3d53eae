"""What every Tice dashboard shares: its datasource variables, query and panel shorthands.

Every panel reads through a datasource *variable*, never a fixed datasource: `${datasource}`
(Prometheus: today's figures and their trend) or `${history}` (the collector's PostgreSQL,
read-only: the multi-year daily history Prometheus does not keep). The provisioning under
dashboards/grafana/provisioning/ defines one of each; another Grafana picks its own.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from dashboards.grafana import sql

PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
HISTORY = model.DataSourceRef(type_val=sql.PLUGIN_ID, uid="${history}")
# The collector's default used_threshold_s: history panels count a computer as used on a day
# from this many active seconds in teaching hours (a dashboard constant: change both together).
USED_THRESHOLD_S = 600
TIMEZONE = "Europe/Paris"  # the collector's default timezone


def fleet(metric: str) -> str:
    """A fleet figure counted once: every collector replica exports the same (from the database)."""
    return f"max without (instance) ({metric})"


def base(uid: str, title: str, description: str, tags: list[str]) -> db.Dashboard:
    return (db.Dashboard(title).uid(uid).description(description).tags(["tice", *tags])
            .timezone("browser").time("now-7d", "now").refresh("1m").editable()
            .tooltip(model.DashboardCursorSync.CROSSHAIR)
            .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
            .with_variable(db.DatasourceVariable("history").label("History (PostgreSQL)").type(sql.PLUGIN_ID)))


# A daily_usage day (`u`) as the instant its local day starts, and the days whose local dates the
# time range covers: a plain range on the column, so its index serves it (timezone() below).
DAY_TIME = "u.day::timestamp AT TIME ZONE '${timezone}'"
DAYS_IN_RANGE = ("u.day BETWEEN ($__timeFrom()::timestamptz AT TIME ZONE '${timezone}')::date\n"
                 "                AND ($__timeTo()::timestamptz AT TIME ZONE '${timezone}')::date")


def timezone() -> db.ConstantVariable:
    """The collector's `timezone` setting: a `daily_usage` day is a local day there, so a panel
    places it at its local midnight (DAY_TIME) and keeps the days whose local dates the time
    range covers (DAYS_IN_RANGE: a plain range on the column, so its index serves it). Read as UTC midnight, today's
    bar appeared only 1 hour (winter) or 2 (summer) after midnight in Paris."""
    return (db.ConstantVariable("timezone").value(TIMEZONE)
            .description("The collector's timezone setting: the days of the history are local days there"))


def used_threshold() -> db.ConstantVariable:
    return (db.ConstantVariable("used_threshold_s").value(str(USED_THRESHOLD_S))
            .description("The collector's used_threshold_s: active seconds in teaching hours that make a day used"))


def q(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A") -> prom.Dataquery:
    query = prom.Dataquery().expr(expr).ref_id(ref).datasource(PROMETHEUS)
    if legend:
        query = query.legend_format(legend)
    if instant:
        query = query.instant()
    return query


def table_q(expr: str, ref: str) -> prom.Dataquery:
    """An instant query as a table (one row per series, its labels as columns)."""
    return prom.Dataquery().expr(expr).ref_id(ref).datasource(PROMETHEUS).instant().format(PromQueryFormat.TABLE)


def history(raw_sql: str, *, time_series: bool = False, ref: str = "A") -> sql.Sql:
    return sql.Sql(raw_sql).ref_id(ref).datasource(HISTORY).format("time_series" if time_series else "table")


def stat_panel(title: str, description: str, *targets: prom.Dataquery, unit: str = "none", span: int = 4,
               mappings: list[model.ValueMapping] | None = None) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).unit(unit).span(span).height(4)
             .graph_mode(common.BigValueGraphMode.NONE)
             .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    for t in targets:
        panel = panel.with_target(t)
    if mappings:
        panel = panel.mappings(mappings)
    return panel


def value_text(**texts: str) -> list[model.ValueMapping]:
    """Value mappings such as value_text(**{"1": "school day", "0": "no school"})."""
    return [model.ValueMap(options={k: model.ValueMappingResult(text=v, index=i)
                                    for i, (k, v) in enumerate(texts.items())})]


def series_panel(title: str, description: str, *targets: prom.Dataquery | sql.Sql, unit: str = "none",
                 span: int = 12, height: int = 8) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit).span(span).height(height)
             .line_width(1).fill_opacity(10)
             .legend(VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True)))
    for t in targets:
        panel = panel.with_target(t)
    return panel


def table_panel(title: str, description: str, *targets: prom.Dataquery | sql.Sql, span: int = 24,
                height: int = 8, hide: list[str] | None = None, rename: dict[str, str] | None = None) -> table.Panel:
    """A table; several instant queries are merged on their common labels (one row per school,
    say) and their `Value #REF` columns renamed."""
    panel = table.Panel().title(title).description(description).span(span).height(height)
    for t in targets:
        panel = panel.with_target(t)
    if len(targets) > 1:
        panel = panel.with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
    excluded = {name: True for name in ["Time", "__name__", "job", *(hide or [])]}
    panel = panel.with_transformation(model.DataTransformerConfig(
        id_val="organize", options={"excludeByName": excluded, "renameByName": rename or {}}))
    return panel


def bar_panel(title: str, description: str, target: prom.Dataquery, *, unit: str = "percentunit",
              span: int = 12, height: int = 8) -> bargauge.Panel:
    return (bargauge.Panel().title(title).description(description).unit(unit).min(0).max(1).span(span)
            .height(height).with_target(target).display_mode(common.BarGaugeDisplayMode.GRADIENT)
            .orientation(common.VizOrientation.HORIZONTAL)
            .thresholds(db.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps([
                model.Threshold(value=None, color="red"),
                model.Threshold(value=0.5, color="orange"),
                model.Threshold(value=0.8, color="green")])))
