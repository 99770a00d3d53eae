"""The school calendar on real 2026-27 zone A dates, public holidays, timetables, overrides, ICS."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from collector import calendar as cal
from collector.calendar import FOUR_DAY, WEDNESDAY_MORNING, CalendarImportError, Override, SchoolCalendar

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "calendar"
D = date.fromisoformat


@pytest.mark.parametrize(("day", "school_day"), [
    ("2026-10-16", True),    # Friday before the Toussaint break
    ("2026-10-19", False),   # Toussaint break, zone A
    ("2026-10-30", False),
    ("2026-11-02", True),    # Monday: classes resume
    ("2026-11-11", False),   # Armistice, a public holiday (and a Wednesday)
    ("2026-12-18", True),    # last Friday before Christmas
    ("2026-12-21", False),
    ("2027-01-04", True),    # back after Christmas
    ("2027-02-15", False),   # winter break, zone A
    ("2027-03-29", False),   # Easter Monday
    ("2027-04-12", False),   # spring break, zone A
    ("2027-05-06", False),   # Ascension Thursday
    ("2027-05-07", False),   # the Ascension bridge Friday
    ("2027-05-17", False),   # Whit Monday
    ("2027-07-02", True),    # last day before the summer break
    ("2027-07-05", False),
    ("2026-11-07", False),   # a Saturday
])
def test_zone_a_2026_27_on_the_four_day_week(day, school_day):
    assert SchoolCalendar("A", FOUR_DAY).is_school_day(D(day)) is school_day


def test_zones_differ_in_winter():
    # Winter 2027: zone A is off the weeks of 15 and 22 Feb, zone B of 22 Feb and 1 Mar,
    # zone C of 8 and 15 Feb.
    off = {z: [d for d in (D("2027-02-08"), D("2027-02-15"), D("2027-02-22"), D("2027-03-01"))
               if not SchoolCalendar(z).is_school_day(d)] for z in "ABC"}
    assert off == {"A": [D("2027-02-15"), D("2027-02-22")], "B": [D("2027-02-22"), D("2027-03-01")],
                   "C": [D("2027-02-08"), D("2027-02-15")]}


def test_wednesday_depends_on_the_timetable():
    wednesday = D("2026-11-04")
    assert not SchoolCalendar("A", FOUR_DAY).is_school_day(wednesday)
    assert SchoolCalendar("A", WEDNESDAY_MORNING).is_school_day(wednesday)
    # ...but a Wednesday in the holidays or a public holiday is off either way.
    assert not SchoolCalendar("A", WEDNESDAY_MORNING).is_school_day(D("2026-10-21"))
    assert not SchoolCalendar("A", WEDNESDAY_MORNING).is_school_day(D("2026-11-11"))


def test_last_teaching_day_before_summer_is_a_school_day():
    # The data lists these weekdays as the first day of the summer break; they are the
    # "fin des cours": classes end that evening.
    for day in ("2021-07-06", "2022-07-07", "2028-07-04"):
        assert SchoolCalendar("A", WEDNESDAY_MORNING).is_school_day(D(day)), day
    assert not SchoolCalendar("A").is_school_day(D("2028-07-06"))


def test_ascension_bridge_is_off_even_where_the_data_forgot_it():
    for day in ("2024-05-10", "2025-05-30", "2026-05-15"):
        assert not SchoolCalendar("B").is_school_day(D(day)), day


def test_coverage_ends_with_the_data():
    assert cal.is_covered("A", D("2026-11-28"))
    assert cal.is_covered("A", D("2028-08-31"))
    assert not cal.is_covered("A", D("2028-10-02"))
    # Beyond the data the timetable and public holidays still apply, but it is a guess.
    assert SchoolCalendar("A").is_school_day(D("2028-10-02"))
    assert not SchoolCalendar("A").is_covered(D("2029-01-08"))


def test_school_days_range_is_inclusive_and_fast_enough():
    days = SchoolCalendar("A").school_days(D("2026-11-02"), D("2026-11-06"))
    assert days == [D("2026-11-02"), D("2026-11-03"), D("2026-11-05"), D("2026-11-06")]
    year = SchoolCalendar("A").school_days(D("2026-09-01"), D("2027-07-10"))
    assert 130 < len(year) < 150
    assert all(d.weekday() in FOUR_DAY.weekdays for d in year)


def test_overrides_school_beats_city_and_open_beats_holiday():
    city_closed = Override(D("2026-11-05"), "closed", None, "grève")
    school_open = Override(D("2026-11-05"), "open", "0210001A", "service minimum")
    makeup = Override(D("2026-10-21"), "open", "0210001A", "rattrapage")
    other = Override(D("2026-11-06"), "closed", "0219999Z", "autre école")
    voltaire = SchoolCalendar("A", overrides=(city_closed, school_open, makeup, other), school="0210001A")
    hugo = SchoolCalendar("A", overrides=(city_closed, school_open, makeup, other), school="0210002B")
    assert voltaire.is_school_day(D("2026-11-05"))      # its own override wins
    assert not hugo.is_school_day(D("2026-11-05"))      # city-wide closure applies
    assert voltaire.is_school_day(D("2026-10-21"))      # opened during the holidays
    assert voltaire.is_school_day(D("2026-11-06"))      # another school's closure is not ours


def test_unknown_zone_is_refused():
    with pytest.raises(ValueError, match="unknown zone 'D'"):
        SchoolCalendar("D")


def test_names_do_not_depend_on_the_os_encoding():
    # Reading the package data must work the same when Python's default encoding is not UTF-8.
    code = ("from datetime import date; from collector.calendar import SchoolCalendar;"
            "print(SchoolCalendar('A').is_school_day(date(2028, 7, 4)))")
    out = subprocess.run([sys.executable, "-X", "utf8=0", "-c", code], capture_output=True, text=True,
                         env={"LC_ALL": "C", "PYTHONIOENCODING": "ascii", "PATH": "/usr/bin:/bin"},
                         cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_official_ics_import():
    overrides = cal.parse_ics((FIXTURES / "zone-a-2026-2027.ics").read_bytes(), school=None)
    days = {o.day for o in overrides}
    assert D("2026-10-17") in days and D("2026-11-01") in days and D("2026-11-02") not in days  # DTEND exclusive
    assert D("2027-05-07") in days and D("2027-05-08") not in days  # no DTEND: one day
    assert D("2027-03-15") in days  # timed event covers its day
    assert all(o.kind == "closed" and o.school is None for o in overrides)
    assert any(o.label == "Vacances de Noël - Zone A" for o in overrides)
    # An imported closure removes a day the timetable would teach.
    assert not SchoolCalendar("A", overrides=tuple(overrides)).is_school_day(D("2027-03-15"))


@pytest.mark.parametrize(("name", "message"), [
    ("not-ical.ics", "no BEGIN:VCALENDAR"),
    ("no-dtstart.ics", "event 1 ('Sans date') UID x: no DTSTART"),
    ("ends-before-start.ics", "ends (2027-01-05) before it starts (2027-01-10)"),
    ("absurd-span.ics", "spans 1461 days"),
    ("bad-date.ics", "unreadable date"),
    ("empty.ics", "no VEVENT"),
    ("latin1.ics", "not UTF-8"),
])
def test_malformed_ics_is_refused_clearly(name, message):
    with pytest.raises(CalendarImportError) as e:
        cal.parse_ics((FIXTURES / name).read_bytes(), school="0210001A")
    assert message in str(e.value)
