"""City overview: is the equipment used, school by school, and is it getting better?"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards.grafana.common import (
    DAY_TIME,
    DAYS_IN_RANGE,
    USED_THRESHOLD_S,
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
    used_threshold,
)

UID = "tice-city-overview"

REGULAR_RATIO = f"sum({fleet('tice_devices_used_regularly')}) / sum({fleet('tice_devices_judged')})"
REGULAR_RATIO_BY_KIND = (f"sum by (kind) ({fleet('tice_devices_used_regularly')}) "
                         f"/ sum by (kind) ({fleet('tice_devices_judged')})")

# Computers (not projectors, 3G keys or disks, measured otherwise) used in class per day.
COMPUTERS_USED_PER_DAY = ("SELECT " + DAY_TIME + """ AS time, d.kind AS metric,
       count(*) FILTER (WHERE u.active_in_hours_s >= $used_threshold_s) AS value
FROM daily_usage u
JOIN devices d ON d.id = u.device_id
WHERE """ + DAYS_IN_RANGE + """
  AND d.kind IN ('chromebook', 'laptop', 'desktop', 'other')
GROUP BY 1, 2
ORDER BY 1, 2""")


def dashboard() -> db.Dashboard:
    return (
        base(UID, "Tice: city overview", "Are the schools' devices used in class? Verdicts on the last school days "
             "(docs/usage-policy.md), today's use and the trend.", ["usage"])
        .with_variable(used_threshold())
        .with_variable(timezone())
        .with_row(db.Row("Today"))
        .with_panel(stat_panel("Devices used regularly", "Judged devices used on enough of the last school days, "
                               "over all judged devices.", q(REGULAR_RATIO), unit="percentunit"))
        .with_panel(stat_panel("Classes regular", "Classes where enough of the judged devices are used regularly "
                               "(class_regular_share), of the classes with judged devices.",
                               q(f"sum({fleet('tice_classes_regular')})", "regular"),
                               q(f"sum({fleet('tice_classes')})", "with judged devices", ref="B")))
        .with_panel(stat_panel("Used today in class", "Devices used today inside teaching hours (0 on a day "
                               "that is not a school day).", q(f"sum({fleet('tice_devices_used_today')})")))
        .with_panel(stat_panel("Devices silent", "Devices silent for silent_school_days school days while their "
                               "school reports.", q(f"sum({fleet('tice_devices_silent')})")))
        .with_panel(stat_panel("Schools silent", "Schools none of whose devices reported for silent_school_days "
                               "school days.", q(f"sum({fleet('tice_school_silent')})")))
        .with_panel(stat_panel("Enrolled / not judged yet", "Active devices enrolled; of them, not judged yet "
                               "(fewer than min_judged_days school days since enrolment).",
                               q(f"sum({fleet('tice_devices_enrolled')})", "enrolled"),
                               q(f"sum({fleet('tice_devices_too_new')})", "not judged yet", ref="B")))
        .with_row(db.Row("By school"))
        .with_panel(table_panel(
            "Schools", "One row per school: the regular-use ratio (every kind, in a class or not), its classes, "
            "its silent devices, and whether today is a school day.",
            table_q(fleet("tice_school_regular_ratio"), "A"),
            table_q(fleet("tice_classes_regular"), "B"),
            table_q(fleet("tice_classes"), "C"),
            table_q(f"sum by (school) ({fleet('tice_devices_silent')})", "D"),
            table_q(fleet("tice_school_day"), "E"),
            rename={"Value #A": "regular-use ratio", "Value #B": "classes regular", "Value #C": "classes",
                    "Value #D": "devices silent", "Value #E": "school day"}, height=10))
        .with_panel(bar_panel("Regular-use ratio by school and kind", "Devices used regularly over devices judged, "
                              "per school and kind.",
                              q(fleet("tice_devices_regular_ratio"), "{{school}} {{kind}}", instant=True)))
        .with_panel(bar_panel("Regular-use ratio by kind", "Devices used regularly over devices judged, "
                              "city-wide, per kind.", q(REGULAR_RATIO_BY_KIND, "{{kind}}", instant=True)))
        .with_row(db.Row("Trend"))
        .with_panel(series_panel("Regular-use ratio", "The city's ratio, and per kind, over time.",
                                 q(REGULAR_RATIO, "city"), q(REGULAR_RATIO_BY_KIND, "{{kind}}", ref="B"),
                                 unit="percentunit"))
        .with_panel(series_panel("Devices used today", "Devices used so far today, in class and outside "
                                 "teaching hours (not evidence of use in class), per kind.",
                                 q(f"sum by (kind) ({fleet('tice_devices_used_today')})", "{{kind}} in class"),
                                 q(f"sum by (kind) ({fleet('tice_devices_used_outside_class_today')})",
                                   "{{kind}} outside class", ref="B")))
        .with_panel(series_panel(
            "Computers used in class per day (history)", "From the daily totals in PostgreSQL, kept for years: "
            f"computers with at least $used_threshold_s active seconds (default {USED_THRESHOLD_S}) inside "
            "teaching hours, per day and kind.", history(COMPUTERS_USED_PER_DAY, time_series=True), span=24))
    )
