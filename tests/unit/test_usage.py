"""The regular-use policy on hand-made and real calendars."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest

from tice_collector.calendar import FOUR_DAY, WEDNESDAY_MORNING, Override, SchoolCalendar
from tice_collector.usage import (
    DeviceVerdict,
    Policy,
    class_regular,
    device_verdict,
    explain,
    judged_from,
    judging_window,
    modem_used,
    projector_seconds,
    school_ratio,
    used_days,
)

POLICY = Policy()
D = date.fromisoformat


def weekdays(start: date, n: int) -> list[date]:
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += timedelta(days=1)
    return out


def test_defaults_are_the_documented_ones():
    assert POLICY == Policy(used_threshold_s=600.0, window_school_days=20, regular_share=0.5,
                            min_judged_days=5, class_regular_share=0.6, modem_used_bytes=64 * 1024)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("used_threshold_s", -1.0, "used_threshold_s must be >= 0"),
    ("used_threshold_s", float("nan"), "used_threshold_s must be >= 0"),
    ("window_school_days", 0, "window_school_days must be >= 1"),
    ("regular_share", 0.0, "regular_share must be in (0, 1]"),
    ("regular_share", 1.5, "regular_share must be in (0, 1]"),
    ("min_judged_days", 0, "min_judged_days must be >= 1"),
    ("class_regular_share", 0.0, "class_regular_share must be in (0, 1]"),
    ("class_regular_share", 1.2, "class_regular_share must be in (0, 1]"),
    ("modem_used_bytes", 0, "modem_used_bytes must be >= 1"),
])
def test_policy_refuses_nonsense(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Policy(**{field: value})


# ---------------------------------------------------------------- used on a day

def test_threshold_is_inclusive():
    days = weekdays(D("2026-11-02"), 3)
    daily = {days[0]: 600.0, days[1]: 599.9, days[2]: 3600.0}
    assert used_days(daily, days, POLICY) == [days[0], days[2]]


def test_a_day_without_figures_is_never_used():
    days = weekdays(D("2026-11-02"), 3)
    anything = Policy(used_threshold_s=0.0)
    assert used_days({days[1]: 0.0}, days, anything) == [days[1]]


def test_only_school_days_are_counted():
    days = weekdays(D("2026-11-02"), 5)
    saturday = D("2026-11-07")
    assert used_days({saturday: 7200.0, days[0]: 700.0}, days, POLICY) == [days[0]]


# ---------------------------------------------------------------- a device's verdict

def test_regular_at_exactly_half_of_the_window():
    days = weekdays(D("2026-09-07"), 20)
    daily = {d: 900.0 for d in days[:10]}
    v = device_verdict(daily, days, POLICY)
    assert v == DeviceVerdict("regular", 10, 20) and v.share == 0.5
    daily.pop(days[0])
    assert device_verdict(daily, days, POLICY) == DeviceVerdict("irregular", 9, 20)


def test_share_comparison_is_exact():
    # 0.28 * 25 is 7.000000000000001 in floats: 7 used days of 25 must still be regular.
    days = weekdays(D("2026-09-07"), 25)
    policy = Policy(regular_share=0.28, window_school_days=25)
    assert device_verdict({d: 900.0 for d in days[:7]}, days, policy).verdict == "regular"
    assert device_verdict({d: 900.0 for d in days[:6]}, days, policy).verdict == "irregular"


def test_only_the_last_window_days_count():
    days = weekdays(D("2026-09-01"), 30)
    daily = {d: 900.0 for d in days[:10]}  # used a lot, but long ago
    assert device_verdict(daily, days, POLICY) == DeviceVerdict("irregular", 0, 20)


def test_judging_window_ends_on_the_day_judged():
    calendar = SchoolCalendar("A", FOUR_DAY)
    school_days = calendar.school_days(D("2026-09-01"), D("2026-12-18"))
    window = judging_window(school_days, D("2026-11-20"), POLICY)
    assert len(window) == 20 and window[-1] == D("2026-11-20")
    assert window[0] == D("2026-10-05")  # 20 school days back, across the Toussaint break and 11 Nov
    assert judging_window(school_days, D("2026-11-21"), POLICY) == window  # a Saturday adds nothing
    # Order and duplicates in the input do not matter.
    assert judging_window(list(reversed(school_days)) + school_days, D("2026-11-20"), POLICY) == window


def test_holidays_do_not_count_against_a_device():
    # Window across the 2026 Toussaint break: a device used every school day but never in the
    # holidays is regular, because the holidays are not school days at all.
    calendar = SchoolCalendar("A", FOUR_DAY)
    window = judging_window(calendar.school_days(D("2026-09-01"), D("2026-11-20")), D("2026-11-20"), POLICY)
    assert D("2026-10-20") not in window and D("2026-11-11") not in window
    daily = {d: 1200.0 for d in window}
    assert device_verdict(daily, window, POLICY) == DeviceVerdict("regular", 20, 20)
    # Use during the holidays (a teacher preparing lessons) does not make up for class days.
    holidays_only = {d: 3600.0 for d in (D("2026-10-19"), D("2026-10-20"), D("2026-10-22"), D("2026-10-23"))}
    assert device_verdict(holidays_only, window, POLICY) == DeviceVerdict("irregular", 0, 20)


def test_a_closed_day_leaves_the_window():
    strike = Override(D("2026-11-19"), "closed", "0210001A", "grève")
    calendar = SchoolCalendar("A", FOUR_DAY, (strike,), school="0210001A")
    window = judging_window(calendar.school_days(D("2026-09-01"), D("2026-11-20")), D("2026-11-20"), POLICY)
    assert D("2026-11-19") not in window and len(window) == 20


def test_wednesday_use_only_counts_where_wednesday_is_taught():
    start, end = D("2026-11-02"), D("2026-12-18")
    wednesdays = [d for d in SchoolCalendar("A").school_days(start, end) if d.weekday() == 2]
    assert wednesdays == []  # the four-day week has no Wednesday class
    taught = SchoolCalendar("A", WEDNESDAY_MORNING).school_days(start, end)
    wednesday_use = {d: 1800.0 for d in taught if d.weekday() == 2}
    assert len(used_days(wednesday_use, taught, POLICY)) == 6  # 11 Nov is a public holiday
    four = SchoolCalendar("A", FOUR_DAY).school_days(start, end)
    assert used_days(wednesday_use, four, POLICY) == []


def test_wednesday_morning_window_is_shorter_in_weeks():
    wed = judging_window(SchoolCalendar("A", WEDNESDAY_MORNING).school_days(D("2026-09-01"), D("2026-12-18")),
                         D("2026-12-18"), POLICY)
    four = judging_window(SchoolCalendar("A", FOUR_DAY).school_days(D("2026-09-01"), D("2026-12-18")),
                          D("2026-12-18"), POLICY)
    assert len(wed) == len(four) == 20 and wed[0] > four[0]
    # A device used Mon, Tue, Thu, Fri only: regular on either timetable (16/20 on Wednesdays' one).
    daily = {d: 900.0 for d in wed + four if d.weekday() != 2}
    assert device_verdict(daily, wed, POLICY) == DeviceVerdict("regular", 16, 20)
    assert device_verdict(daily, four, POLICY) == DeviceVerdict("regular", 20, 20)


def test_device_enrolled_mid_window():
    days = weekdays(D("2026-11-02"), 20)
    # Enrolled 4 school days before the end: too new, neither regular nor irregular.
    v = device_verdict({d: 900.0 for d in days}, days, POLICY, enrolled=days[16])
    assert v == DeviceVerdict("too_new", 4, 4)
    assert device_verdict({}, days, POLICY, enrolled=days[16]).verdict == "too_new"
    # Exactly min_judged_days (5) observable days: judged.
    assert device_verdict({}, days, POLICY, enrolled=days[15]) == DeviceVerdict("irregular", 0, 5)
    # Enrolled 8 school days ago: judged on those 8, the enrolment day included; 4 used is half.
    v = device_verdict({d: 900.0 for d in days[12:16]}, days, POLICY, enrolled=days[12])
    assert v == DeviceVerdict("regular", 4, 8)
    # Use before enrolment (another school, a test bench) is not counted.
    assert device_verdict({d: 900.0 for d in days[:12]}, days, POLICY, enrolled=days[12]).used_days == 0
    # The same through the window helper.
    assert judging_window(days, days[-1], POLICY, enrolled=days[12]) == days[12:]


def test_enrolled_during_the_holidays_counts_from_the_return():
    calendar = SchoolCalendar("A", FOUR_DAY)
    school_days = calendar.school_days(D("2026-09-01"), D("2026-11-10"))
    window = judging_window(school_days, D("2026-11-10"), POLICY, enrolled=D("2026-10-25"))
    assert window == [D("2026-11-02"), D("2026-11-03"), D("2026-11-05"), D("2026-11-06"), D("2026-11-09"),
                      D("2026-11-10")]
    assert device_verdict({d: 900.0 for d in window[:3]}, window, POLICY) == DeviceVerdict("regular", 3, 6)


def test_no_school_day_at_all_is_too_new():
    v = device_verdict({}, [], POLICY)
    assert v == DeviceVerdict("too_new", 0, 0) and v.share is None


# ---------------------------------------------------------------- classes and schools

def test_class_rule_is_a_share_of_its_judged_devices():
    # 60 %: 3 of 5 Chromebooks, as the old "3 devices" rule for the usual class of 5.
    assert class_regular([True, True, True, False, False], POLICY)
    assert not class_regular([True, True, False, False, False], POLICY)
    assert class_regular([True] * 5, POLICY)
    # A class of 2 could never be regular under "3 devices": now 2 of 2 is, 1 of 2 is not.
    assert class_regular([True, True], POLICY)
    assert not class_regular([True, False], POLICY)
    assert class_regular([True], POLICY) and not class_regular([False], POLICY)
    assert not class_regular([], POLICY)  # no judged device: nothing to call regular
    assert class_regular([True, False], Policy(class_regular_share=0.5))
    # Exact fractions: 0.6 of 10 is 6, and 6 regular of 10 passes.
    assert class_regular([True] * 6 + [False] * 4, POLICY)
    assert not class_regular([True] * 5 + [False] * 5, POLICY)
    assert class_regular(iter([True, True, True]), POLICY)  # any iterable


def test_school_ratio_counts_judged_devices():
    assert school_ratio(2, 4) == 0.5
    assert school_ratio(0, 3) == 0.0 and school_ratio(3, 3) == 1.0
    assert school_ratio(0, 0) is None
    with pytest.raises(ValueError, match="between 0 and judged devices"):
        school_ratio(5, 4)


def test_a_school_is_judged_on_every_device_not_only_its_classes():
    # The school: 7 judged devices, 3 of them low-use (one of those outside any class).
    # Counting classes only, its one class (4 regular of 5) made it 1.0; on its devices it is 4/7.
    days = weekdays(D("2026-11-02"), 20)
    used, unused = {d: 900.0 for d in days}, {}
    in_class = [device_verdict(d, days, POLICY).verdict == "regular" for d in (used, used, used, used, unused)]
    no_class = [device_verdict(d, days, POLICY).verdict == "regular" for d in (unused, unused)]
    assert class_regular(in_class, POLICY)
    judged = in_class + no_class
    assert school_ratio(sum(judged), len(judged)) == 4 / 7


def test_a_nursery_school_without_classes_is_judged():
    # One laptop used, one projector never on, one 3G key used: 2 of 3, no class needed.
    days = weekdays(D("2026-11-02"), 20)
    laptop = device_verdict({d: 1200.0 for d in days}, days, POLICY)
    projector = device_verdict({d: projector_seconds(0, 0) for d in days}, days, POLICY)
    modem = device_verdict({d: 600.0 if modem_used(200_000, POLICY) else 0.0 for d in days}, days, POLICY)
    verdicts = [v.verdict for v in (laptop, projector, modem)]
    assert verdicts == ["regular", "irregular", "regular"]
    assert school_ratio(verdicts.count("regular"), 3) == 2 / 3


# ---------------------------------------------------------------- too new: from when

def test_judged_from_is_the_day_after_the_fifth_school_day():
    calendar = SchoolCalendar("A", FOUR_DAY)
    ahead = calendar.school_days(D("2026-11-10"), D("2027-01-31"))
    # Enrolled Tuesday 10 Nov 2026: 10, 12 (11 Nov is a holiday), 13, 16, 17 Nov: judged from the 18th.
    assert judged_from(ahead, D("2026-11-10"), POLICY) == D("2026-11-18")
    # Enrolled on the last Friday before the Christmas break (18 Dec): 18 Dec, then 4, 5, 7 and 8 Jan
    # after the break: judged from Saturday 9 Jan, the day after its fifth school day.
    assert judged_from(calendar.school_days(D("2026-12-18"), D("2027-02-28")), D("2026-12-18"), POLICY) == \
        D("2027-01-09")
    # A calendar that does not reach far enough: no day known.
    assert judged_from(ahead[:3], D("2026-11-10"), POLICY) is None
    # The verdict agrees: on the 17th the device is still too new (4 completed days), not on the 18th.
    window_17 = judging_window(ahead, D("2026-11-16"), POLICY, enrolled=D("2026-11-10"))
    window_18 = judging_window(ahead, D("2026-11-17"), POLICY, enrolled=D("2026-11-10"))
    assert device_verdict({}, window_17, POLICY).verdict == "too_new"
    assert device_verdict({}, window_18, POLICY).verdict == "irregular"


def test_every_verdict_says_why():
    base = {"kind": "chromebook", "status": "active", "enrolled_at": D("2026-11-10"), "verdict": "too_new",
            "used_days": 2, "judged_days": 3, "judged_from": D("2026-11-18"), "out_of_hours_days": 0}
    assert explain(base) == "not judged yet: 3 school days since enrolment; judged from 2026-11-18"
    assert explain({**base, "judged_from": None}) == \
        "not judged yet: 3 school days since enrolment; no judging day known yet in the calendar"
    assert explain({**base, "verdict": "regular", "used_days": 12, "judged_days": 20, "out_of_hours_days": 1}) == \
        "used regularly: used in class on 12 of its last 20 school days; used out of hours on 1 day (not counted)"
    assert explain({**base, "verdict": "irregular", "used_days": 3, "judged_days": 20}) == \
        "low use: used in class on 3 of its last 20 school days"
    assert explain({**base, "verdict": None}).startswith("not judged yet: the detect job has not run")
    assert explain({**base, "enrolled_at": None, "verdict": None}) == \
        "not judged: never enrolled (known from the inventory only)"
    assert explain({**base, "status": "retired"}) == "not judged: retired"
    assert explain({**base, "kind": "disk", "verdict": None}) == \
        "not judged: backup disks are watched for health, not use"


# ---------------------------------------------------------------- projectors and 3G keys

def test_projector_takes_the_longer_signal_not_the_sum():
    assert projector_seconds(400, 300) == 400
    assert projector_seconds(0, 700) == 700
    # 400 s of lamp and 300 s of display is one short use, not a used day (their sum would be).
    day = D("2026-11-02")
    assert used_days({day: projector_seconds(400, 300)}, [day], POLICY) == []
    assert used_days({day: projector_seconds(600, 599)}, [day], POLICY) == [day]


def test_modem_needs_real_traffic():
    assert not modem_used(0, POLICY)
    assert not modem_used(20_000, POLICY)   # a day of keep-alives
    assert not modem_used(65_535, POLICY)
    assert modem_used(65_536, POLICY)       # the threshold itself counts
    assert modem_used(1, Policy(modem_used_bytes=1))
