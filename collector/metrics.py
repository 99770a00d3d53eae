"""The collector's private Prometheus registry and its self-metrics.

Every metric here is declared in collector/metrics.csv (name, type, unit, help); a test
fails on an undeclared or missing one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from collector import __version__

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZE_BUCKETS = (1, 5, 10, 50, 100, 500, 1000, 5000, 20000)


class PoolCollector(Collector):
    """Connection pool usage, read at scrape time from the live pool."""

    def __init__(self, read: Callable[[], tuple[int, int, int] | None]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        stats = self._read()
        conns = GaugeMetricFamily("tice_db_pool_connections", "Database pool connections by state.",
                                  labels=["state"])
        size = GaugeMetricFamily("tice_db_pool_max_connections", "Largest size of the pool.")
        if stats is not None:
            in_use, idle, max_size = stats
            conns.add_metric(["in_use"], in_use)
            conns.add_metric(["idle"], idle)
            size.add_metric([], max_size)
        yield conns
        yield size


class Metrics:
    def __init__(self) -> None:
        # The *_created series double the scrape for no use in our dashboards.
        disable_created_metrics()
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.build_info = Gauge("tice_build_info", "Version of the running collector.", ["version"],
                                registry=r)
        self.build_info.labels(__version__).set(1)
        self.requests = Counter("tice_ingest_requests_total",
                                "Report requests answered, by outcome.", ["outcome"], registry=r)
        self.rejections = Counter("tice_ingest_rejections_total",
                                  "Report requests or records rejected, by reason.", ["reason"],
                                  registry=r)
        self.records = Counter("tice_ingest_records_total",
                               "Records received, by outcome (stored, duplicate, rejected).",
                               ["outcome"], registry=r)
        self.duration = Histogram("tice_ingest_request_duration_seconds",
                                  "Time to answer a report request.", buckets=LATENCY_BUCKETS,
                                  registry=r)
        self.batch_size = Histogram("tice_ingest_batch_records", "Records per report request.",
                                    buckets=SIZE_BUCKETS, registry=r)
        self.clock_corrected = Counter("tice_ingest_clock_corrected_total",
                                       "Report requests whose device clock was corrected.", registry=r)
        self.queue_depth = Gauge("tice_writer_queue_depth",
                                 "Requests waiting for the group-commit writer.", registry=r)
        self.flushes = Counter("tice_writer_flushes_total", "Writer transactions, by outcome.",
                               ["outcome"], registry=r)
        self.flush_duration = Histogram("tice_writer_flush_duration_seconds",
                                        "Time of one writer transaction.", buckets=LATENCY_BUCKETS,
                                        registry=r)
        self.flush_records = Histogram("tice_writer_flush_records", "Records per writer transaction.",
                                       buckets=SIZE_BUCKETS, registry=r)
        self.enrollments = Counter("tice_enroll_total", "Enrolment attempts, by outcome.", ["outcome"],
                                   registry=r)
        self.job_runs = Counter("tice_job_runs_total", "Scheduled job runs in this process, by job and outcome "
                                "(ok, error, skipped = another replica had it).", ["job", "outcome"], registry=r)
        self.job_duration = Histogram("tice_job_duration_seconds", "Time of one job run in this process.", ["job"],
                                      buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300), registry=r)
        self.job_last_success = Gauge("tice_job_last_success_timestamp_seconds",
                                      "When the job last succeeded in this process (Unix time).", ["job"],
                                      registry=r)
        for outcome in ("accepted", "rejected", "throttled", "unavailable"):
            self.requests.labels(outcome)
        for outcome in ("stored", "duplicate", "rejected"):
            self.records.labels(outcome)
        for outcome in ("ok", "error"):
            self.flushes.labels(outcome)

    def watch_pool(self, read: Callable[[], tuple[int, int, int] | None]) -> None:
        self.registry.register(PoolCollector(read))
