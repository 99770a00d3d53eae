"""The PromQL reader behind the rules' and dashboards' contract checks."""

from __future__ import annotations

import pytest

from tests.promql import PromQLError, metric_names


@pytest.mark.parametrize(("expr", "names"), [
    ('up{job="tice-collector"} == 0', {"up"}),
    ("sum by (school) (max without (instance) (tice_devices_judged))", {"tice_devices_judged"}),
    ("max without (instance) (tice_classes) - max without (instance) (tice_classes_regular) > 0\n"
     "and on (school) max without (instance) (tice_school_day) == 1",
     {"tice_classes", "tice_classes_regular", "tice_school_day"}),
    ('histogram_quantile(0.99, sum by (le) (rate(tice_ingest_request_duration_seconds_bucket[$__rate_interval])))',
     {"tice_ingest_request_duration_seconds_bucket"}),
    ("sum by (reason) (rate(tice_ingest_rejections_total[15m])) > on () group_left () "
     "0.05 * sum(rate(tice_ingest_requests_total[15m]))",
     {"tice_ingest_rejections_total", "tice_ingest_requests_total"}),
    ("tice_agent_spool_gap_records - tice_agent_spool_gap_records offset 1h > 0", {"tice_agent_spool_gap_records"}),
    ('time() - max by (exported_job) (tice_job_last_success_timestamp_seconds{exported_job!="retention"}) > 2 * 86400',
     {"tice_job_last_success_timestamp_seconds"}),
    ('sum(tice_devices{school=~"$school", kind="a{b}"}) by (kind)', {"tice_devices"}),
    ("tice_devices_regular_ratio or vector(0)", {"tice_devices_regular_ratio"}),
])
def test_metric_names_are_the_selected_series_only(expr, names):
    assert metric_names(expr) == names


def test_a_misspelt_metric_is_reported_as_a_name():
    assert metric_names("rate(tice_ingest_request_total[5m])") == {"tice_ingest_request_total"}


def test_an_unknown_function_is_an_error():
    with pytest.raises(PromQLError, match="unknown function 'rates'"):
        metric_names("rates(tice_ingest_requests_total[5m])")
