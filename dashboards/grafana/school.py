"""One school (chosen with the `school` variable): its verdicts, each class, each device."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model

from dashboards.grafana.common import (
    DAY_TIME,
    DAYS_IN_RANGE,
    PROMETHEUS,
    USED_THRESHOLD_S,
    base,
    fleet,
    history,
    q,
    series_panel,
    stat_panel,
    table_panel,
    table_q,
    timezone,
    used_threshold,
    value_text,
)

UID = "tice-school"
S = 'school="$school"'

# Each class of the school: its active devices' verdicts (device_flags, written by the detect job).
CLASSES = """SELECT c.code AS class,
       count(d.id) AS devices,
       count(f.device_id) FILTER (WHERE f.verdict <> 'too_new') AS judged,
       count(f.device_id) FILTER (WHERE f.verdict = 'regular') AS regular,
       round(count(f.device_id) FILTER (WHERE f.verdict = 'regular')::numeric
             / nullif(count(f.device_id) FILTER (WHERE f.verdict <> 'too_new'), 0), 2) AS regular_share,
       count(f.device_id) FILTER (WHERE f.verdict = 'too_new') AS not_judged_yet,
       count(f.device_id) FILTER (WHERE f.silent) AS silent
FROM classes c
LEFT JOIN devices d ON d.class_id = c.id AND d.status = 'active'
LEFT JOIN device_flags f ON f.device_id = d.id
WHERE c.school = ${school:sqlstring}
GROUP BY c.code
ORDER BY c.code"""

# Each active device of the school: its verdict, days used of the days judged, last report.
DEVICES = """SELECT d.serial, d.kind, coalesce(c.code, '') AS class,
       coalesce(f.verdict, CASE WHEN d.enrolled_at IS NULL THEN 'never enrolled' ELSE 'not judged yet' END)
           AS verdict,
       f.used_days, f.judged_days, f.missed_days AS school_days_silent, f.out_of_hours_days,
       d.last_seen_at AS last_seen, d.id AS device
FROM devices d
LEFT JOIN classes c ON c.id = d.class_id
LEFT JOIN device_flags f ON f.device_id = d.id
WHERE d.school = ${school:sqlstring} AND d.status = 'active'
ORDER BY c.code NULLS LAST, d.kind, d.serial"""

COMPUTERS_USED_PER_DAY = ("SELECT " + DAY_TIME + """ AS time, d.kind AS metric,
       count(*) FILTER (WHERE u.active_in_hours_s >= $used_threshold_s) AS value
FROM daily_usage u
JOIN devices d ON d.id = u.device_id
WHERE """ + DAYS_IN_RANGE + """
  AND d.school = ${school:sqlstring}
  AND d.kind IN ('chromebook', 'laptop', 'desktop', 'other')
GROUP BY 1, 2
ORDER BY 1, 2""")


def school_variable() -> db.QueryVariable:
    return (db.QueryVariable("school").label("School (UAI)").datasource(PROMETHEUS)
            .query("label_values(tice_school_day, school)")
            .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD).sort(model.VariableSort.ALPHABETICAL_ASC))


def by_kind(metric: str) -> str:
    return f"sum by (kind) ({fleet(f'{metric}{{{S}}}')})"


def dashboard() -> db.Dashboard:
    return (
        base(UID, "Tice: school", "One school: its verdicts, each class, each device's days used and last "
             "report.", ["usage", "school"])
        .with_variable(school_variable())
        .with_variable(used_threshold())
        .with_variable(timezone())
        .with_row(db.Row("Today"))
        .with_panel(stat_panel("Devices used regularly", "Judged devices of the school used regularly, every kind, "
                               "in a class or not.", q(fleet(f"tice_school_regular_ratio{{{S}}}")),
                               unit="percentunit", span=5))
        .with_panel(stat_panel("Classes regular", "Regular classes, of the classes with judged devices.",
                               q(fleet(f"tice_classes_regular{{{S}}}"), "regular"),
                               q(fleet(f"tice_classes{{{S}}}"), "with judged devices", ref="B"), span=5))
        .with_panel(stat_panel("Used today in class", "Devices used today inside teaching hours.",
                               q(f"sum({fleet(f'tice_devices_used_today{{{S}}}')})"), span=5))
        .with_panel(stat_panel("Today", "Whether today is a school day for this school (its timetable, the "
                               "zone's holidays, public holidays).", q(fleet(f"tice_school_day{{{S}}}")),
                               mappings=value_text(**{"1": "school day", "0": "no school"}), span=5))
        .with_panel(stat_panel("Reporting", "Silent when none of the school's devices reported for "
                               "silent_school_days school days.", q(fleet(f"tice_school_silent{{{S}}}")),
                               mappings=value_text(**{"0": "reporting", "1": "silent"}), span=4))
        .with_row(db.Row("By kind"))
        .with_panel(table_panel(
            "Verdicts by kind", "Per kind of device: enrolled, reported in the last 24 hours, judged, used "
            "regularly, rarely used, silent, not judged yet.",
            table_q(by_kind("tice_devices_enrolled"), "A"),
            table_q(by_kind("tice_devices_seen_last_day"), "B"),
            table_q(by_kind("tice_devices_judged"), "C"),
            table_q(by_kind("tice_devices_used_regularly"), "D"),
            table_q(by_kind("tice_devices_low_use"), "E"),
            table_q(by_kind("tice_devices_silent"), "F"),
            table_q(by_kind("tice_devices_too_new"), "G"),
            rename={"Value #A": "enrolled", "Value #B": "seen in 24 h", "Value #C": "judged",
                    "Value #D": "used regularly", "Value #E": "rarely used", "Value #F": "silent",
                    "Value #G": "not judged yet"}, height=7))
        .with_row(db.Row("Classes"))
        .with_panel(table_panel("Each class", "The verdicts of each class's active devices (regular_share: "
                                "regular over judged; the class is regular from class_regular_share, 0.6 by "
                                "default).", history(CLASSES), height=8))
        .with_row(db.Row("Devices"))
        .with_panel(table_panel("Each device", "Each active device: its verdict, the school days it was used "
                                "of those judged, school days without a report, days used outside teaching "
                                "hours, and its last report.", history(DEVICES), height=12))
        .with_panel(table_panel(
            "Last report and use today", "Per device (per_device_metrics): seconds since its last report, and "
            "its active seconds today.",
            table_q(f"time() - {fleet(f'tice_device_last_seen_timestamp_seconds{{{S}}}')}", "A"),
            table_q(fleet(f"tice_device_active_today_seconds{{{S}}}"), "B"),
            rename={"Value #A": "seconds since last report", "Value #B": "active seconds today"},
            hide=["school"], height=10))
        .with_row(db.Row("History"))
        .with_panel(series_panel("Devices used today, by kind", "Devices used so far today inside teaching hours.",
                                 q(by_kind("tice_devices_used_today"), "{{kind}}")))
        .with_panel(series_panel(
            "Computers used in class per day (history)", "From the daily totals in PostgreSQL: computers with at "
            f"least $used_threshold_s active seconds (default {USED_THRESHOLD_S}) inside teaching hours.",
            history(COMPUTERS_USED_PER_DAY, time_series=True)))
    )
