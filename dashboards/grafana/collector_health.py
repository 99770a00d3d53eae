"""Collector health: the door, the writer, the database pool, the jobs, the agents' losses."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards.grafana.common import (
    base,
    fleet,
    history,
    q,
    series_panel,
    stat_panel,
    table_panel,
    table_q,
    value_text,
)

UID = "tice-collector-health"
R = "[$__rate_interval]"

# Runs of each job in the time range, from job_runs (every replica's).
JOB_RUNS = """SELECT job,
       count(*) FILTER (WHERE ok) AS ok,
       count(*) FILTER (WHERE NOT ok) AS failed,
       count(*) FILTER (WHERE ok IS NULL) AS running,
       max(started_at) AS last_started,
       (array_agg(detail ORDER BY started_at DESC))[1] AS last_detail
FROM job_runs
WHERE $__timeFilter(started_at)
GROUP BY job
ORDER BY job"""


def quantile(q_: float, metric: str, by: str = "le") -> str:
    return f"histogram_quantile({q_}, sum by ({by}) (rate({metric}_bucket{R})))"


def dashboard() -> db.Dashboard:
    return (
        base(UID, "Tice: collector health", "The collector itself: what comes in and what is refused, the "
             "group-commit writer, the database pool, the scheduled jobs, the calendar, and the agents' losses.",
             ["collector"])
        .time("now-6h", "now")
        .with_row(db.Row("Ingest"))
        .with_panel(series_panel("Report requests", "Requests answered per second, by outcome.",
                                 q(f"sum by (outcome) (rate(tice_ingest_requests_total{R}))", "{{outcome}}"),
                                 unit="reqps", span=8))
        .with_panel(series_panel("Records", "Records received per second, by outcome.",
                                 q(f"sum by (outcome) (rate(tice_ingest_records_total{R}))", "{{outcome}}"),
                                 unit="short", span=8))
        .with_panel(series_panel("Rejections by reason", "Requests or records refused per second, by reason "
                                 "(the answer's error code, or future_timestamp/too_old for single records); "
                                 "a reason appears with its first rejection, 0 until there is one.",
                                 # `or on () vector(0)`: a flat 0 while nothing was ever rejected.
                                 q(f"sum by (reason) (rate(tice_ingest_rejections_total{R})) or on () vector(0)",
                                   "{{reason}}"),
                                 unit="short", span=8))
        .with_panel(series_panel("Implausible records", "Records refused because they cannot be true, per "
                                 "second, by reason (their batches are answered 400).",
                                 q(f"sum by (reason) (rate(tice_ingest_implausible_records_total{R}))",
                                   "{{reason}}"), unit="short", span=8))
        .with_panel(series_panel("Request latency", "Time to answer a report request (it waits for the commit).",
                                 q(quantile(0.5, "tice_ingest_request_duration_seconds"), "p50"),
                                 q(quantile(0.99, "tice_ingest_request_duration_seconds"), "p99", ref="B"),
                                 unit="s", span=8))
        .with_panel(series_panel("Records per request, clock corrections", "Median records per report "
                                 "request; requests whose device clock was corrected, per second.",
                                 q(quantile(0.5, "tice_ingest_batch_records"), "records per request (p50)"),
                                 q(f"sum(rate(tice_ingest_clock_corrected_total{R}))", "clock corrections/s",
                                   ref="B"), span=8))
        .with_row(db.Row("Writer and database"))
        .with_panel(series_panel("Writer queue", "Requests waiting for the group-commit writer, per collector "
                                 "(503 past writer_queue_max).",
                                 q("sum by (instance) (tice_writer_queue_depth)", "{{instance}}"), span=6))
        .with_panel(series_panel("Writer transactions", "Transactions per second, by outcome: ok, error (503s), "
                                 "retried (a plain insert met a record already stored, by another process: "
                                 "written again).",
                                 q(f"sum by (outcome) (rate(tice_writer_flushes_total{R}))", "{{outcome}}"),
                                 unit="short", span=6))
        .with_panel(series_panel("Transaction time and size", "p99 time of one writer transaction; median "
                                 "records per transaction.",
                                 q(quantile(0.99, "tice_writer_flush_duration_seconds"), "p99 seconds"),
                                 q(quantile(0.5, "tice_writer_flush_records"), "records (p50)", ref="B"), span=6))
        .with_panel(series_panel("Database pool", "Pool connections in use and idle, and the pool's size.",
                                 q("sum by (state) (tice_db_pool_connections)", "{{state}}"),
                                 q("sum(tice_db_pool_max_connections)", "max", ref="B"), span=6))
        .with_row(db.Row("Jobs"))
        .with_panel(series_panel("Job runs", "Runs per job and outcome (skipped: another replica had the slot).",
                                 q(f"sum by (exported_job, outcome) (increase(tice_job_runs_total{R}))",
                                   "{{exported_job}} {{outcome}}"), span=8))
        .with_panel(series_panel("Job duration", "p99 time of one run, per job.",
                                 q(quantile(0.99, "tice_job_duration_seconds", "le, exported_job"),
                                   "{{exported_job}}"), unit="s", span=8))
        .with_panel(table_panel("Since the last success", "Seconds since each job last succeeded, on the "
                                "replica that ran it last.",
                                table_q("time() - max by (exported_job) (tice_job_last_success_timestamp_seconds)",
                                        "A"), rename={"exported_job": "job", "Value": "seconds"}, span=8))
        .with_panel(table_panel("Job runs in the time range", "From job_runs in PostgreSQL, every replica's runs.",
                                history(JOB_RUNS), height=7))
        .with_row(db.Row("Collectors, figures and calendar"))
        .with_panel(stat_panel("Collectors up", "Collector targets Prometheus scrapes successfully.",
                               q('sum(up{job=~"tice-collector|tice-demo"})'), span=4))
        .with_panel(stat_panel("Versions", "Collectors running each version.",
                               q("count by (version) (tice_build_info)", "{{version}}"), span=4))
        .with_panel(stat_panel("Fleet figures age", "Since the fleet snapshot behind the tice_devices_*, "
                               "tice_school_* and tice_classes_* figures was computed.",
                               q(f"time() - max({fleet('tice_fleet_snapshot_timestamp_seconds')})"), unit="s",
                               span=8))
        .with_panel(stat_panel("Holiday calendar for today", "Per zone: whether the school calendar has holiday "
                               "data for today (else school days are guessed from the timetable).",
                               q(fleet("tice_calendar_covered"), "zone {{zone}}"),
                               mappings=value_text(**{"1": "covered", "0": "missing"}), span=8))
        .with_row(db.Row("Agents' losses"))
        .with_panel(series_panel("Records dropped by agents", "Cumulative records the agents dropped (spool full "
                                 "or too old, disk full, unreadable after corruption), per school.",
                                 q(f"sum by (school) ({fleet('tice_agent_spool_dropped_records')})", "{{school}}")))
        .with_panel(series_panel("Records lost on the way", "Cumulative records missing from the agents' "
                                 "sequences beyond their own drop counts, per school (should stay 0).",
                                 q(f"sum by (school) ({fleet('tice_agent_spool_gap_records')})", "{{school}}")))
    )
