"""The figures /metrics shows per peripheral (collector/tice_collector/peripherals.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tice_collector import peripherals as p

NOW = datetime(2026, 11, 13, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(("today", "reset_day", "start"), [
    (date(2026, 11, 13), 1, date(2026, 11, 1)),
    (date(2026, 11, 13), 13, date(2026, 11, 13)),  # the renewal day itself begins a new month
    (date(2026, 11, 13), 15, date(2026, 10, 15)),
    (date(2027, 1, 3), 28, date(2026, 12, 28)),  # across the new year
    (date(2027, 3, 1), 28, date(2027, 2, 28)),
])
def test_the_plan_month_begins_on_its_renewal_day(today, reset_day, start):
    assert p.plan_month_start(today, reset_day) == start


def test_a_renewal_day_every_month_has():
    with pytest.raises(ValueError, match=r"1\.\.28"):
        p.plan_month_start(date(2026, 11, 13), 31)


def test_quota_ratio_is_0_to_1_and_absent_without_a_quota():
    assert p.quota_ratio(2_500_000_000, 10_000_000_000) == 0.25
    assert p.quota_ratio(12_000_000_000, 10_000_000_000) == 1.0  # spent: the key is cut off or pays extra
    assert p.quota_ratio(0, 10_000_000_000) == 0.0
    assert p.quota_ratio(5, 0) is None


def test_signal_is_rsrp_when_given_else_rssi_and_says_which():
    assert p.signal(-105.0, -71.0) == ("rsrp", -105.0)
    assert p.signal(None, -71.0) == ("rssi", -71.0)  # a 3G key
    assert p.signal(None, None) is None


def test_a_key_is_connected_only_on_a_fresh_reading_that_says_so():
    reading = {"modem_at": NOW - timedelta(minutes=2), "modem_up": True, "state": "connected"}
    assert p.modem_connected(reading, NOW, 900)
    assert not p.modem_connected({**reading, "modem_at": NOW - timedelta(minutes=16)}, NOW, 900)
    assert not p.modem_connected({**reading, "state": "data_limit"}, NOW, 900)
    assert not p.modem_connected({**reading, "modem_up": False}, NOW, 900)
    assert not p.modem_connected({"modem_at": None}, NOW, 900)


@pytest.mark.parametrize(("reading", "power"), [
    ({"projector_up": True, "power": "on"}, "on"),
    ({"projector_up": True, "power": "standby"}, "standby"),  # refusing TCP in standby: off, not broken
    ({"projector_up": True, "power": "unknown"}, "unknown"),  # a refused password: up, nothing read
    ({"projector_up": False, "power": "unknown"}, "unreachable"),  # off at the mains, unplugged
])
def test_projector_power_state(reading, power):
    assert p.projector_power({**reading, "projector_at": NOW - timedelta(minutes=1)}, NOW, 900) == power


def test_an_old_reading_says_nothing_of_the_power_now():
    old = {"projector_up": True, "power": "on", "projector_at": NOW - timedelta(hours=2)}
    assert p.projector_power(old, NOW, 900) == "unknown"


def test_lamp_life_left_never_negative_and_absent_without_a_lamp():
    assert p.lamp_remaining_s(2412, 3000) == 588 * 3600
    assert p.lamp_remaining_s(3500, 3000) == 0
    assert p.lamp_remaining_s(None, 3000) is None  # laser and LED projectors answer no LAMP


def test_error_levels_by_component_leave_out_what_was_not_reported():
    reading = {"fan": "ok", "lamp": "warning", "temperature": "error", "cover": None, "filter": "ok", "other": "ok"}
    assert p.error_levels(reading) == {"fan": 0, "lamp": 1, "temperature": 2, "filter": 0, "other": 0}
