"""Teaching hours: periods, per-weekday defaults and a school's own hours, DST days."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from tice_collector.hours import TeachingHours, format_periods, hours_from, intervals, parse_periods, parse_weekdays

PARIS = ZoneInfo("Europe/Paris")


def test_periods_parse_and_print_back():
    assert parse_periods("08:30-11:30 13:30-16:30") == ((time(8, 30), time(11, 30)), (time(13, 30), time(16, 30)))
    assert parse_periods(" 08:30-11:30,13:30-16:30 ") == parse_periods("08:30-11:30 13:30-16:30")
    assert parse_periods("-") == parse_periods("") == ()
    assert format_periods(parse_periods("08:05-11:30 13:30-16:30")) == "08:05-11:30 13:30-16:30"
    assert format_periods(()) == "-"


@pytest.mark.parametrize(("text", "message"), [
    ("8:30-11:30", "'8:30-11:30' is not a period like 08:30-11:30"),
    ("08:30-24:00", "'08:30-24:00' is not a period"),
    ("11:30-08:30", "'11:30-08:30' ends before it starts"),
    ("08:30-08:30", "'08:30-08:30' ends before it starts"),
    ("13:30-16:30 08:30-11:30", "'08:30-11:30' starts before the previous period ends"),
    ("08:30-12:00 11:30-16:30", "'11:30-16:30' starts before the previous period ends"),
    ("08:00-09:00 09:00-10:00 10:00-11:00 11:00-12:00 13:00-14:00", "at most 4 periods a day, got 5"),
])
def test_bad_periods_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_periods(text)


def test_weekdays():
    assert parse_weekdays("mon,tue,thu,fri") == (0, 1, 3, 4)
    assert parse_weekdays("WED") == (2,) and parse_weekdays("all") == tuple(range(7))
    with pytest.raises(ValueError, match="'wednesday' is not a weekday"):
        parse_weekdays("mon,wednesday")


def test_defaults_wednesday_and_a_schools_own_day():
    default = TeachingHours()
    assert default.periods(0) == parse_periods("08:30-11:30 13:30-16:30")
    assert default.periods(2) == parse_periods("08:30-11:30")  # Wednesday: mornings only
    assert default.periods(5) == default.periods(0)  # a make-up Saturday gets a school day's hours
    own = hours_from("08:30-11:30 13:30-16:30", "08:30-11:30", [(0, "08:20-11:35 13:35-16:20"), (3, "-")],
                     "wednesday_morning")
    assert own.periods(0) == parse_periods("08:20-11:35 13:35-16:20") and own.is_own(0)
    assert own.periods(3) == () and not own.is_own(1) and own.periods(1) == default.periods(1)
    assert own.periods(2) == parse_periods("08:30-11:30")
    # A four-day school's Wednesday is taught only as a make-up day: a full school day's hours.
    four = hours_from("08:30-11:30 13:30-16:30", "08:30-11:30", timetable="four_day")
    assert four.periods(2) == parse_periods("08:30-11:30 13:30-16:30")


def test_intervals_are_local_time_on_dst_days():
    hours = TeachingHours()
    # 29 Mar 2027 (Monday after the spring change): 08:30 Paris is 06:30 UTC, the week before 07:30.
    after = intervals(hours, date(2027, 3, 29), PARIS)
    before = intervals(hours, date(2027, 3, 22), PARIS)
    assert after[0][0] == datetime(2027, 3, 29, 8, 30, tzinfo=PARIS)
    assert after[0][0].utcoffset().total_seconds() == 7200 and before[0][0].utcoffset().total_seconds() == 3600
    assert [(b - a).total_seconds() for a, b in after] == [10800.0, 10800.0]
    assert intervals(hours, date(2026, 11, 4), PARIS) == [(datetime(2026, 11, 4, 8, 30, tzinfo=PARIS),
                                                           datetime(2026, 11, 4, 11, 30, tzinfo=PARIS))]
