"""Connectivity: the schools' 3G keys, connected or not, their signal and their data this month.

Per-key series (labels school and peripheral, a salted hash) exist when the collector's
per_device_metrics is on (docs/peripherals.md, "Metrics").
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model

from dashboards.grafana.common import (
    DAY_TIME,
    DAYS_IN_RANGE,
    PROMETHEUS,
    bar_panel,
    base,
    fleet,
    history,
    q,
    series_panel,
    stat_panel,
    table_panel,
    table_q,
    timezone,
)

UID = "tice-connectivity"
S = 'school=~"$school"'

# Bytes the 3G keys of the chosen schools carried per day, kept for years in the daily totals.
BYTES_PER_DAY = ("SELECT " + DAY_TIME + """ AS time, d.school AS metric,
       sum(u.modem_bytes) AS value
FROM daily_usage u
JOIN devices d ON d.id = u.device_id
WHERE """ + DAYS_IN_RANGE + """
  AND u.modem_bytes > 0 AND d.school IN (${school:sqlstring})
GROUP BY 1, 2
ORDER BY 1, 2""")


def school_variable() -> db.QueryVariable:
    return (db.QueryVariable("school").label("School (UAI)").datasource(PROMETHEUS)
            .query("label_values(tice_modem_connected, school)").multi(True).include_all(True)
            .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD).sort(model.VariableSort.ALPHABETICAL_ASC))


def keys(metric: str) -> str:
    return fleet(f"{metric}{{{S}}}")


def dashboard() -> db.Dashboard:
    modem = 'kind="modem",'
    fresh = f"time() - max without (instance, kind) (tice_peripheral_reading_timestamp_seconds{{{modem}{S}}})"
    return (
        base(UID, "Tice: connectivity", "The schools' 3G keys: connected or not, signal, network, data carried "
             "this plan month (docs/peripherals.md).", ["peripherals", "3g"])
        .with_variable(school_variable())
        .with_variable(timezone())
        .with_row(db.Row("Now"))
        .with_panel(stat_panel("Keys connected", "Keys whose latest reading, fresh enough, found them connected; "
                               "of all keys seen.", q(f"sum({keys('tice_modem_connected')})", "connected"),
                               q(f"count({keys('tice_modem_connected')})", "keys", ref="B"), span=6))
        .with_panel(stat_panel("Keys read in the last 30 minutes", "Keys whose PC is on and read them lately.",
                               q(f"count(({fresh}) < 1800)"), span=6))
        .with_panel(stat_panel("Keys by network", "Keys per network type at their latest reading.",
                               q(f"count by (technology) ({keys('tice_modem_network_info')})", "{{technology}}"),
                               span=6))
        .with_panel(stat_panel("Data this month", "Bytes carried by the chosen schools' keys since their plan "
                               "month began.", q(f"sum({keys('tice_modem_month_bytes')})"), unit="bytes", span=6))
        .with_row(db.Row("Each key"))
        .with_panel(table_panel(
            "Keys", "One row per key: connected (1) or not, its signal and which measure, data this plan month, "
            "share of the plan (with modem_quota_bytes), seconds since its latest reading.",
            table_q(keys("tice_modem_connected"), "A"),
            table_q(keys("tice_modem_month_bytes"), "B"),
            table_q(keys("tice_modem_quota_used_ratio"), "C"),
            table_q(fresh, "D"),
            rename={"Value #A": "connected", "Value #B": "bytes this month", "Value #C": "plan used",
                    "Value #D": "seconds since reading"}, height=10))
        .with_panel(bar_panel("Plan used", "Bytes this plan month over modem_quota_bytes, per key (absent without "
                              "a quota).", q(keys("tice_modem_quota_used_ratio"), "{{school}} {{peripheral}}",
                                             instant=True)))
        .with_panel(series_panel("Signal", "Each key's signal at its readings: RSRP for 4G (weak under -110 dBm), "
                                 "RSSI for 2G/3G (weak under -95 dBm).",
                                 q(keys("tice_modem_signal_dbm"), "{{school}} {{peripheral}} {{measure}}"),
                                 unit="dBm"))
        .with_row(db.Row("Trend"))
        .with_panel(series_panel("Keys connected", "Connected keys over time, per school.",
                                 q(f"sum by (school) ({keys('tice_modem_connected')})", "{{school}}")))
        .with_panel(series_panel("Data this month", "Bytes carried since the plan month began, per key.",
                                 q(keys("tice_modem_month_bytes"), "{{school}} {{peripheral}}"), unit="bytes"))
        .with_panel(series_panel("Data per day (history)", "From the daily totals in PostgreSQL, kept for years: "
                                 "bytes the 3G keys carried per day, per school.",
                                 history(BYTES_PER_DAY, time_series=True), unit="bytes", span=24))
    )
