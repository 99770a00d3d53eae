"""Projectors and disks: are the projectors used and healthy, and are the backup disks plugged in?

Per-peripheral series (labels school and peripheral, a salted hash) exist when the collector's
per_device_metrics is on (docs/peripherals.md, "Metrics").
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model

from dashboards.grafana.common import (
    DAY_TIME,
    DAYS_IN_RANGE,
    PROMETHEUS,
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

UID = "tice-projectors-disks"
S = 'school=~"$school"'

# Hours the projectors of the chosen schools were on per day, inside teaching hours and in all.
PROJECTOR_HOURS_PER_DAY = ("SELECT " + DAY_TIME + """ AS time,
       sum(u.projector_on_in_hours_s) / 3600 AS "in teaching hours",
       sum(u.projector_on_s) / 3600 AS "all day"
FROM daily_usage u
JOIN devices d ON d.id = u.device_id
WHERE """ + DAYS_IN_RANGE + """
  AND u.projector_on_s > 0 AND d.school IN (${school:sqlstring})
GROUP BY 1
ORDER BY 1""")


def school_variable() -> db.QueryVariable:
    return (db.QueryVariable("school").label("School (UAI)").datasource(PROMETHEUS)
            .query("label_values(tice_peripheral_host_info, school)").multi(True).include_all(True)
            .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD).sort(model.VariableSort.ALPHABETICAL_ASC))


def of(metric: str, extra: str = "") -> str:
    return fleet(f"{metric}{{{S}{extra}}}")


def dashboard() -> db.Dashboard:
    days_since = f"(time() - {of('tice_disk_last_connected_timestamp_seconds')}) / 86400"
    power = "tice_projector_power_state"
    lit, on, unreachable = ',state=~"on|warming"', ',state="on"', ',state="unreachable"'
    return (
        base(UID, "Tice: projectors and disks", "Projectors: on or off, lamp hours left, faults; directors' backup "
             "disks: days since each was plugged in, SMART health, free space (docs/peripherals.md).",
             ["peripherals", "projectors", "disks"])
        .with_variable(school_variable())
        .with_variable(timezone())
        .with_row(db.Row("Projectors"))
        .with_panel(stat_panel("Projectors on", "Projectors on (or warming up) at their latest reading; of all "
                               "projectors seen.",
                               q(f"sum({of(power, lit)})", "on"),
                               q(f"count({of(power, on)})", "projectors",
                                 ref="B"), span=6))
        .with_panel(stat_panel("Projectors unreachable", "Projectors that did not answer on the network at their "
                               "latest reading.", q(f"sum({of(power, unreachable)})"),
                               span=6))
        .with_panel(stat_panel("Faults", "Components reporting an error (2) on the projectors.",
                               q(f"count({of('tice_projector_error_level')} == 2) or vector(0)"), span=6))
        .with_panel(stat_panel("Lamps under 100 hours", "Lamps with less than 100 hours left of "
                               "projector_lamp_life_hours.",
                               q(f"count({of('tice_projector_lamp_remaining_seconds')} < 100 * 3600) or vector(0)"),
                               span=6))
        .with_panel(table_panel(
            "Each projector", "One row per projector: lamp hours, hours left, the worst component status "
            "(0 ok, 1 warning, 2 error).",
            table_q(f"{of('tice_projector_lamp_seconds')} / 3600", "A"),
            table_q(f"{of('tice_projector_lamp_remaining_seconds')} / 3600", "B"),
            table_q(f"max without (component) ({of('tice_projector_error_level')})", "C"),
            rename={"Value #A": "lamp hours", "Value #B": "lamp hours left", "Value #C": "worst status"},
            height=9))
        .with_panel(series_panel("Lamp hours left", "Each lamp's hours left of its rated life.",
                                 q(f"{of('tice_projector_lamp_remaining_seconds')} / 3600",
                                   "{{school}} {{peripheral}}"), unit="h"))
        .with_panel(series_panel("Faults", "Each projector component's status: 0 ok, 1 warning, 2 error.",
                                 q(of("tice_projector_error_level"), "{{school}} {{peripheral}} {{component}}")))
        .with_panel(series_panel("Projectors on (history)", "From the daily totals in PostgreSQL: hours the "
                                 "projectors were on per day, in teaching hours and in all.",
                                 history(PROJECTOR_HOURS_PER_DAY, time_series=True), unit="h", span=24))
        .with_row(db.Row("Backup disks"))
        .with_panel(stat_panel("Disks not plugged in for 14 days", "Backup disks last connected more than 14 days "
                               "ago: no backup since.", q(f"count({days_since} > 14) or vector(0)"), span=8))
        .with_panel(stat_panel("Disks failing SMART", "Backup disks whose SMART health check failed at their last "
                               "connection.", q(f"count({of('tice_disk_smart_healthy')} == 0) or vector(0)"), span=8))
        .with_panel(stat_panel("Disks seen", "Backup disks the agents remember.",
                               q(f"count({of('tice_disk_last_connected_timestamp_seconds')})"), span=8))
        .with_panel(table_panel(
            "Backup disks", "One row per disk: days since it was last plugged in, SMART health (1 passed, 0 "
            "failed), free space and capacity at its last connection.",
            table_q(days_since, "A"),
            table_q(of("tice_disk_smart_healthy"), "B"),
            table_q(of("tice_disk_free_bytes"), "C"),
            table_q(of("tice_disk_size_bytes"), "D"),
            rename={"Value #A": "days since connected", "Value #B": "SMART passed", "Value #C": "free bytes",
                    "Value #D": "size bytes"}, height=9))
    )
