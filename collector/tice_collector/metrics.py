"""The collector's private Prometheus registry and its self-metrics.

Every metric here is declared in collector/tice_collector/metrics.csv (name, type, unit, help); a test
fails on an undeclared or missing one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tice_collector import __version__
from tice_collector.peripherals import POWER_STATES
from tice_collector.snapshot import (
    FleetSnapshot,
    GoogleFigures,
    ModemFigures,
    PeripheralFigures,
    ProjectorFigures,
    peripheral_kind,
)
from tice_wire import IMPLAUSIBLE_REASONS

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
        self.implausible = Counter("tice_ingest_implausible_records_total",
                                   "Records refused at the door because they cannot be true, by reason.",
                                   ["reason"], registry=r)
        self.clock_corrected = Counter("tice_ingest_clock_corrected_total",
                                       "Report requests whose device clock was corrected.", registry=r)
        self.queue_depth = Gauge("tice_writer_queue_depth",
                                 "Requests waiting for the group-commit writer.", registry=r)
        self.flushes = Counter("tice_writer_flushes_total",
                               "Writer transactions, by outcome (ok, error; retried = a plain insert met a record "
                               "already stored and the flush was written again with conflict handling, then "
                               "counted as ok or error too).",
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
        # Label children resolved once: `labels()` costs several times an `inc()`, and the
        # ingest path updates these on every request.
        self.request_outcome = {o: self.requests.labels(o) for o in ("accepted", "rejected", "throttled",
                                                                     "unavailable")}
        self.records_stored = self.records.labels("stored")
        self.records_duplicate = self.records.labels("duplicate")
        self.records_rejected = self.records.labels("rejected")
        self.flushes_ok = self.flushes.labels("ok")
        self.flushes_error = self.flushes.labels("error")
        self.flushes_retried = self.flushes.labels("retried")
        for reason in IMPLAUSIBLE_REASONS:
            self.implausible.labels(reason)
        self._rejection_reasons: dict[str, Any] = {}

        self.fleet = FleetCollector()
        r.register(self.fleet)

    def rejected(self, reason: str, n: int = 1) -> None:
        """Count `n` rejections for `reason` (a request's error code or a record's reason)."""
        child = self._rejection_reasons.get(reason)
        if child is None:
            child = self._rejection_reasons[reason] = self.rejections.labels(reason)
        child.inc(n)

    def watch_writer(self, depth: Callable[[], int]) -> None:
        """Read the writer's queue depth at scrape time (nothing to update per request)."""
        self.queue_depth.set_function(depth)

    def watch_pool(self, read: Callable[[], tuple[int, int, int] | None]) -> None:
        self.registry.register(PoolCollector(read))


class FleetCollector(Collector):
    """Fleet figures from the latest database snapshot (the same on every replica).

    `collect()` is synchronous, so the /metrics handler refreshes `self.snapshot` from the
    database first (at most every `snapshot_cache_s`); this only renders it.
    """

    def __init__(self) -> None:
        self.snapshot: FleetSnapshot | None = None
        self.computed_at: float | None = None
        self.loaded_at = 0.0

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        def g(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        sk = ["school", "kind"]
        devices = g("tice_devices", "Devices in the inventory, by school, kind and status.",
                    ["school", "kind", "status"])
        enrolled = g("tice_devices_enrolled", "Active devices that enrolled, by school and kind.", sk)
        never_seen = g("tice_devices_never_seen", "Active devices that never reported since their enrolment or "
                       "import (in the cupboard, or never enrolled).", sk)
        seen = g("tice_devices_seen_last_day", "Active devices that reported in the last 24 hours.", sk)
        used_today = g("tice_devices_used_today",
                       "Active devices used today in teaching hours (figure at or above the threshold).", sk)
        used_late = g("tice_devices_used_outside_class_today",
                      "Active devices used today outside teaching hours (not evidence of use in class).", sk)
        judged = g("tice_devices_judged", "Devices with enough school days since enrolment to be judged.", sk)
        too_new = g("tice_devices_too_new", "Enrolled devices not judged yet: too few school days since enrolment.",
                    sk)
        regular = g("tice_devices_used_regularly", "Devices used on enough of the last school days.", sk)
        ratio = g("tice_devices_regular_ratio", "Devices used regularly over devices judged (0-1).", sk)
        silent = g("tice_devices_silent", "Devices silent for N school days while others in the school report.", sk)
        low = g("tice_devices_low_use", "Judged devices not used regularly.", sk)
        dropped = g("tice_agent_spool_dropped_records",
                    "Records the devices' agents dropped (spool full, too old, disk full, unreadable after "
                    "corruption; cumulative).", sk)
        gaps = g("tice_agent_spool_gap_records",
                 "Records missing from the devices' spool sequences that their agents did not report as "
                 "dropped (lost on the way; cumulative).", sk)
        shared = g("tice_devices_shared_identity",
                   "Devices used by two agents at once in the last 7 days (cloned disks, shared serials).", sk)
        classes = g("tice_classes", "Classes with at least one judged device, by school.", ["school"])
        classes_regular = g("tice_classes_regular", "Classes where at least class_regular_share of the judged "
                            "devices are used regularly.", ["school"])
        school_ratio = g("tice_school_regular_ratio", "Judged devices used regularly over judged devices, every kind, "
                         "with or without a class, by school (0-1).", ["school"])
        school_day = g("tice_school_day", "1 when today is a school day for the school.", ["school"])
        school_silent = g("tice_school_silent", "1 when none of the school's devices reported for N school days.",
                          ["school"])
        covered = g("tice_calendar_covered", "1 when the holiday calendar has data for today in the zone.", ["zone"])
        stamp = g("tice_fleet_snapshot_timestamp_seconds", "When the fleet snapshot was computed (Unix time).", [])
        last_seen = g("tice_device_last_seen_timestamp_seconds", "When the device last reported (Unix time).",
                      ["device", "school", "kind"])
        active = g("tice_device_active_today_seconds", "Active seconds of the device today (local day).",
                   ["device", "school", "kind"])
        days = g("tice_judged_figures", "School days in the judged windows of active devices, by where their active "
                 "time came from (device: its own records; google: Google's daily total alone; none).",
                 ["school", "kind", "source"])
        body = self.snapshot
        if body is not None and self.computed_at is not None:
            stamp.add_metric([], self.computed_at)
            for count in body.devices:
                devices.add_metric([count.school, count.kind, count.status], count.n)
            for row in body.kinds:
                labels = [row.school, row.kind]
                enrolled.add_metric(labels, row.enrolled)
                seen.add_metric(labels, row.seen_day)
                never_seen.add_metric(labels, row.never_seen)
                used_today.add_metric(labels, row.used_today)
                used_late.add_metric(labels, row.used_out_of_hours_today)
                judged.add_metric(labels, row.judged)
                too_new.add_metric(labels, row.too_new)
                regular.add_metric(labels, row.regular)
                silent.add_metric(labels, row.silent)
                low.add_metric(labels, row.low_use)
                dropped.add_metric(labels, row.spool_dropped)
                gaps.add_metric(labels, row.spool_gaps)
                shared.add_metric(labels, row.shared_identity)
                if row.judged:
                    ratio.add_metric(labels, row.regular / row.judged)
                days.add_metric([*labels, "device"], row.days_device)
                days.add_metric([*labels, "google"], row.days_google)
                days.add_metric([*labels, "none"], row.days_none)
            for school in body.schools:
                classes.add_metric([school.school], school.classes)
                classes_regular.add_metric([school.school], school.classes_regular)
                if school.regular_ratio is not None:
                    school_ratio.add_metric([school.school], school.regular_ratio)
                school_day.add_metric([school.school], 1 if school.school_day else 0)
                school_silent.add_metric([school.school], 1 if school.silent else 0)
            for zone, ok in body.coverage.items():
                covered.add_metric([zone], 1 if ok else 0)
            for device in body.per_device:
                labels = [device.device, device.school, device.kind]
                if device.last_seen is not None:
                    last_seen.add_metric(labels, device.last_seen)
                if device.active_today_s is not None:
                    active.add_metric(labels, device.active_today_s)
        yield from (devices, enrolled, never_seen, seen, used_today, used_late, judged, too_new, regular, ratio,
                    silent, low, dropped, gaps, shared, classes, classes_regular, school_ratio, school_day,
                    school_silent, covered, stamp, last_seen, active, days)
        yield from google_families(body.google if body is not None else None)
        yield from peripheral_families(body.peripherals if body is not None else [])


def google_families(google: GoogleFigures | None) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
    """The Google Admin connector's health and the Chromebooks' auto-update expiry, from the
    snapshot (collector/tice_collector/fleet.py google_figures)."""
    last_success = GaugeMetricFamily("tice_google_sync_last_success_timestamp_seconds",
                                     "When the Google Admin sync last succeeded (Unix time).")
    last_attempt = GaugeMetricFamily("tice_google_sync_last_attempt_timestamp_seconds",
                                     "When the Google Admin sync was last tried (Unix time).")
    ok = GaugeMetricFamily("tice_google_sync_ok", "1 when the latest Google Admin sync succeeded.")
    seen = GaugeMetricFamily("tice_google_devices_seen", "Chromebooks Google Admin listed at the latest sync.")
    matched = GaugeMetricFamily("tice_google_devices_matched",
                                "Inventory devices matched by serial to Google's Chromebooks at the latest sync.")
    unknown = GaugeMetricFamily("tice_google_unknown_serials", "Serials Google listed at the latest sync that "
                                "the inventory does not know (tice-collector google unknown).")
    retries = CounterMetricFamily("tice_google_quota_retries_total", "Google API requests retried after a quota "
                                  "or server error, a timeout or a dropped connection.")
    implausible = CounterMetricFamily("tice_google_implausible_figures_total", "Daily active times from Google "
                                      "refused as impossible (negative, longer than the day, in the future).")
    expiry = GaugeMetricFamily("tice_chromebook_model_update_expiry_timestamp_seconds",
                               "When a Chromebook model stops receiving ChromeOS updates (Unix time; the earliest "
                               "of its devices), from Google Admin.", labels=["model"])
    counts = GaugeMetricFamily("tice_chromebooks_update_expiry", "Chromebooks by school, model and auto-update "
                               "state: expired, soon (within auto_update_soon_days), later, unknown.",
                               labels=["school", "model", "state"])
    if google is not None:
        sync = google.sync
        if sync.last_success is not None:
            last_success.add_metric([], sync.last_success)
        if sync.last_attempt is not None:
            last_attempt.add_metric([], sync.last_attempt)
            ok.add_metric([], 0 if sync.last_error else 1)
        seen.add_metric([], sync.devices_seen)
        matched.add_metric([], sync.devices_matched)
        unknown.add_metric([], sync.unknown_serials)
        retries.add_metric([], sync.quota_retries)
        implausible.add_metric([], sync.implausible_days)
        for model, at in sorted(google.models.items()):
            expiry.add_metric([model], at)
        for count in google.expiry:
            counts.add_metric([count.school, count.model, count.state], count.n)
    yield from (last_success, last_attempt, ok, seen, matched, unknown, retries, implausible, expiry, counts)


def peripheral_families(rows: Iterable[PeripheralFigures]) -> Iterable[GaugeMetricFamily]:
    """Each peripheral's series, from the snapshot's `peripherals` rows (collector/tice_collector/fleet.py
    peripheral_figures). Labels: school and peripheral (its identity, a salted hash: never a
    serial number nor an IMEI); the host only on tice_peripheral_host_info, so a key moved to
    another PC keeps its other series."""
    def g(name: str, doc: str, *extra: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=["school", "peripheral", *extra])

    host = g("tice_peripheral_host_info", "The device whose agent reported the peripheral last (always 1).",
             "kind", "host")
    reading = g("tice_peripheral_reading_timestamp_seconds",
                "When the 3G key's or projector's latest reading was taken (Unix time).", "kind")
    connected = g("tice_modem_connected", "1 when the 3G key's latest reading, fresh enough, found it connected.")
    sig = g("tice_modem_signal_dbm", "The 3G key's signal at its latest reading: RSRP when it gives it (4G), "
            "else RSSI (label measure).", "measure")
    network = g("tice_modem_network_info", "The 3G key's network type at its latest reading (always 1).",
                "technology")
    connected_today = g("tice_modem_connected_today_seconds", "Seconds the 3G key was connected today (local day).")
    month = g("tice_modem_month_bytes", "Bytes the 3G key carried (received + sent) since its plan month began.")
    quota = g("tice_modem_quota_used_ratio", "The 3G key's bytes this plan month over modem_quota_bytes (0-1).")
    power = g("tice_projector_power_state", "1 for the projector's power state now, 0 for the others.", "state")
    on_today = g("tice_projector_on_today_seconds", "Seconds the projector was on today (local day): its power "
                 "state or lamp counter, else its host's external display.")
    lamp = g("tice_projector_lamp_seconds", "Time the projector's lamp has been lit, as the projector counts it "
             "(PJLink lamp hours x 3600; the most worn lamp).")
    lamp_left = g("tice_projector_lamp_remaining_seconds",
                  "projector_lamp_life_hours less the lamp's hours, at least 0, in seconds.")
    errors = g("tice_projector_error_level", "The projector's own error status by component: 0 ok, 1 warning, "
               "2 error.", "component")
    last_connected = g("tice_disk_last_connected_timestamp_seconds",
                       "When the backup disk was last plugged in (Unix time).")
    smart = g("tice_disk_smart_healthy", "1 when SMART's overall health check passed at the disk's last "
              "connection, 0 when it failed.")
    free = g("tice_disk_free_bytes", "Free space on the backup disk at its last connection.")
    size = g("tice_disk_size_bytes", "Capacity of the backup disk.")
    for row in rows:
        ident = [row.school, row.peripheral]
        kind = peripheral_kind(row)
        host.add_metric([*ident, kind, row.host], 1)
        if row.reading_at is not None:
            reading.add_metric([*ident, kind], row.reading_at)
        if isinstance(row, ModemFigures):
            connected.add_metric(ident, 1 if row.connected else 0)
            if row.signal is not None:
                sig.add_metric([*ident, row.signal[0]], row.signal[1])
            if row.technology is not None:
                network.add_metric([*ident, row.technology], 1)
            connected_today.add_metric(ident, row.connected_today_s)
            month.add_metric(ident, row.month_bytes)
            if row.quota_ratio is not None:
                quota.add_metric(ident, row.quota_ratio)
        elif isinstance(row, ProjectorFigures):
            for state in POWER_STATES:
                power.add_metric([*ident, state], 1 if row.power == state else 0)
            on_today.add_metric(ident, row.on_today_s)
            if row.lamp_s is not None:
                lamp.add_metric(ident, row.lamp_s)
            if row.lamp_left_s is not None:
                lamp_left.add_metric(ident, row.lamp_left_s)
            for component, level in row.errors.items():
                errors.add_metric([*ident, component], level)
        else:
            if row.last_connected is not None:
                last_connected.add_metric(ident, row.last_connected)
            if row.smart_ok is not None:
                smart.add_metric(ident, 1 if row.smart_ok else 0)
            if row.free_bytes is not None:
                free.add_metric(ident, row.free_bytes)
            if row.size_bytes is not None:
                size.add_metric(ident, row.size_bytes)
    yield from (host, reading, connected, sig, network, connected_today, month, quota, power, on_today, lamp,
                lamp_left, errors, last_connected, smart, free, size)
