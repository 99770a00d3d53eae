"""A Grafana PostgreSQL query, typed for grafana-foundation-sdk.

The SDK ships builders for Prometheus and other datasources but none for Grafana's SQL ones, and
documents how to add a query type ("Defining a custom query type" in its README): a
`Dataquery` with `to_json`/`from_json`, a builder, and a variant registered under the
datasource's plugin id, so that dashboards holding it read back into the SDK's types.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

# Grafana's core PostgreSQL datasource (its plugin id since Grafana 10.2).
PLUGIN_ID = "grafana-postgresql-datasource"
Format = Literal["table", "time_series"]


class SqlQuery(cogvariants.Dataquery):
    """One raw SQL query of a panel: `raw_sql` may use Grafana's macros ($__timeFilter(col))
    and dashboard variables (${school:sqlstring}); `format` "time_series" wants a `time` column."""

    def __init__(self, raw_sql: str = "", format_val: Format = "table", ref_id: str | None = None,
                 datasource: DataSourceRef | None = None, hide: bool | None = None) -> None:
        self.raw_sql = raw_sql
        self.format_val = format_val
        self.ref_id = ref_id
        self.datasource = datasource
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {"editorMode": "code", "format": self.format_val, "rawQuery": True,
                                      "rawSql": self.raw_sql}
        if self.ref_id is not None:
            payload["refId"] = self.ref_id
        if self.datasource is not None:
            payload["datasource"] = self.datasource.to_json()
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        ds = data.get("datasource")
        return cls(raw_sql=data.get("rawSql", ""), format_val=data.get("format", "table"), ref_id=data.get("refId"),
                   datasource=DataSourceRef.from_json(ds) if ds is not None else None, hide=data.get("hide"))


def variant_config() -> cogruntime.DataqueryConfig:
    return cogruntime.DataqueryConfig(identifier=PLUGIN_ID, from_json_hook=SqlQuery.from_json)


class Sql(cogbuilder.Builder[SqlQuery]):
    def __init__(self, raw_sql: str) -> None:
        self._internal = SqlQuery(raw_sql=raw_sql)

    def build(self) -> SqlQuery:
        return self._internal

    def format(self, format_val: Format) -> Self:
        self._internal.format_val = format_val
        return self

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def datasource(self, datasource: DataSourceRef) -> Self:
        self._internal.datasource = datasource
        return self
