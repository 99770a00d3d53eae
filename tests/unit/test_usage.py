"""The regular-use policy on hand-made calendars."""

from __future__ import annotations

from datetime import date, timedelta

from collector.calendar import FOUR_DAY, WEDNESDAY_MORNING, SchoolCalendar
from collector.usage import (
    Policy,
    class_regular,
    device_verdict,
    modem_used,
    projector_seconds,
    school_ratio,
    used_days,
)

POLICY = Policy()


def weekdays(start: date, n: int) -> list[date]:
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += timedelta(days=1)
    return out


def test_threshold_is_inclusive():
    days = weekdays(date(2026, 11, 2), 3)
    daily = {days[0]: 600.0, days[1]: 599.9, days[2]: 3600.0}
    assert used_days(daily, days, POLICY) == [days[0], days[2]]


def test_regular_at_exactly_half_of_the_window():
    days = weekdays(date(2026, 9, 7), 20)
    daily = {d: 900.0 for d in days[:10]}
    v = device_verdict(daily, days, POLICY)
    assert (v.verdict, v.used_days, v.judged_days) == ("regular", 10, 20)
    daily.pop(days[0])
    assert device_verdict(daily, days, POLICY).verdict == "irregular"


def test_only_the_last_window_days_count():
    days = weekdays(date(2026, 9, 1), 30)
    daily = {d: 900.0 for d in days[:10]}  # used a lot, but long ago
    v = device_verdict(daily, days, POLICY)
    assert (v.verdict, v.used_days, v.judged_days) == ("irregular", 0, 20)


def test_holidays_do_not_count_against_a_device():
    # Window across the 2026 Toussaint break: a device used every school day but never in the
    # holidays is regular, because the holidays are not school days at all.
    calendar = SchoolCalendar("A", FOUR_DAY)
    days = calendar.school_days(date(2026, 9, 28), date(2026, 11, 20))[-20:]
    assert date(2026, 10, 20) not in days
    daily = {d: 1200.0 for d in days}
    assert device_verdict(daily, days, POLICY).verdict == "regular"


def test_wednesday_use_only_counts_where_wednesday_is_taught():
    start, end = date(2026, 11, 2), date(2026, 12, 18)
    wednesdays = [d for d in SchoolCalendar("A").school_days(start, end) if d.weekday() == 2]
    assert wednesdays == []  # the four-day week has no Wednesday class
    taught = SchoolCalendar("A", WEDNESDAY_MORNING).school_days(start, end)
    wednesday_use = {d: 1800.0 for d in taught if d.weekday() == 2}
    assert len(used_days(wednesday_use, taught, POLICY)) == 6  # 11 Nov is a public holiday
    four = SchoolCalendar("A", FOUR_DAY).school_days(start, end)
    assert used_days(wednesday_use, four, POLICY) == []


def test_device_enrolled_mid_window():
    days = weekdays(date(2026, 11, 2), 20)
    enrolled = days[16]
    since = [d for d in days if d >= enrolled]
    assert device_verdict({d: 900.0 for d in since}, since, POLICY).verdict == "too_new"
    enrolled = days[12]
    since = [d for d in days if d >= enrolled]  # 8 days observable: judged on those 8
    v = device_verdict({d: 900.0 for d in since[:4]}, since, POLICY)
    assert (v.verdict, v.judged_days, v.used_days) == ("regular", 8, 4)


def test_class_rule_at_exactly_k():
    assert class_regular([True, True, True, False, False], POLICY)
    assert not class_regular([True, True, False, False, False], POLICY)
    assert school_ratio(2, 4) == 0.5 and school_ratio(0, 0) is None


def test_projector_takes_the_longer_signal_not_the_sum():
    assert projector_seconds(400, 300) == 400
    assert projector_seconds(0, 700) == 700


def test_modem_needs_real_traffic():
    assert not modem_used(20_000, POLICY)   # keep-alives
    assert modem_used(65_536, POLICY)
