"""The school calendar on real 2026-27 zone A dates, public holidays, timetables, overrides, ICS.

Every date asserted here was checked against the bundled vacances-scolaires-france 0.12.0 data
and holidays 0.109 first; the tests that compare with the packages keep that true.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import holidays
import pytest
import vacances_scolaires_france as vsf

from tice_collector import calendar as cal
from tice_collector import calendar_ics as ics
from tice_collector import holiday_data as hd
from tice_collector.calendar import (
    FOUR_DAY,
    TIMETABLES,
    WEDNESDAY_MORNING,
    Override,
    SchoolCalendar,
    Timetable,
)
from tice_collector.calendar_ics import CalendarImportError, parse_ics
from tice_collector.holiday_data import coverage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "calendar"
D = date.fromisoformat
VOLTAIRE, HUGO = "0210001A", "0210002B"


def days(start: str, end: str) -> list[date]:
    return [D(start) + timedelta(days=n) for n in range((D(end) - D(start)).days + 1)]


# ---------------------------------------------------------------- zone A 2026-27

@pytest.mark.parametrize(("day", "school_day"), [
    ("2026-09-01", True),    # Tuesday: rentrée des élèves
    ("2026-10-16", True),    # Friday before the Toussaint break
    ("2026-10-19", False),   # Toussaint break, zone A
    ("2026-10-30", False),
    ("2026-11-02", True),    # Monday: classes resume
    ("2026-11-11", False),   # Armistice, a public holiday (and a Wednesday)
    ("2026-12-18", True),    # last Friday before Christmas
    ("2026-12-21", False),
    ("2027-01-04", True),    # back after Christmas
    ("2027-02-12", True),    # Friday before the zone A winter break
    ("2027-02-15", False),   # winter break, zone A
    ("2027-02-26", False),
    ("2027-03-01", True),
    ("2027-03-29", False),   # Easter Monday
    ("2027-04-09", True),
    ("2027-04-12", False),   # spring break, zone A
    ("2027-04-26", True),
    ("2027-05-06", False),   # Ascension Thursday
    ("2027-05-07", False),   # the Ascension bridge Friday (in the data for 2027)
    ("2027-05-17", False),   # Whit Monday
    ("2027-07-02", True),    # last day before the summer break
    ("2027-07-05", False),
    ("2026-11-07", False),   # a Saturday
])
def test_zone_a_2026_27_on_the_four_day_week(day, school_day):
    assert SchoolCalendar("A", FOUR_DAY).is_school_day(D(day)) is school_day


def test_the_packages_agree_with_the_dates_we_assert():
    data = vsf.SchoolHolidayDates()
    assert not data.is_holiday_for_zone(D("2026-10-16"), "A")
    assert data.is_holiday_for_zone(D("2026-10-17"), "A") and data.is_holiday_for_zone(D("2026-11-01"), "A")
    assert not data.is_holiday_for_zone(D("2026-11-02"), "A")
    assert data.is_holiday_for_zone(D("2027-07-03"), "A") and not data.is_holiday_for_zone(D("2027-07-02"), "A")
    public = holidays.France(years=2027, language="fr")
    assert {D("2027-03-29"), D("2027-05-06"), D("2027-05-17")} <= set(public)
    assert D("2026-11-11") in holidays.France(years=2026)


def test_zone_holidays_match_the_package_where_it_is_right():
    # Our own UTF-8 reading of the CSV gives the package's days, minus the corrected ones.
    data = vsf.SchoolHolidayDates()
    for zone in "ABC":
        theirs = {d for y in range(2019, 2029) for d in data.holidays_for_year_and_zone(y, zone)}
        ours = {d for y in range(2019, 2029) for d in days(f"{y}-01-01", f"{y}-12-31") if hd.is_zone_holiday(zone, d)}
        fin_des_cours = {D("2021-07-06"), D("2022-07-07"), D("2028-07-04")}
        bridges = {D("2023-05-19"), D("2024-05-10"), D("2025-05-30"), D("2026-05-15")}
        assert theirs - ours == fin_des_cours, zone
        assert ours - theirs == bridges, zone


def test_zones_differ_in_winter():
    # Winter 2027: zone A is off the weeks of 15 and 22 Feb, zone B of 22 Feb and 1 Mar,
    # zone C of 8 and 15 Feb.
    off = {z: [d for d in (D("2027-02-08"), D("2027-02-15"), D("2027-02-22"), D("2027-03-01"))
               if not SchoolCalendar(z).is_school_day(d)] for z in "ABC"}
    assert off == {"A": [D("2027-02-15"), D("2027-02-22")], "B": [D("2027-02-22"), D("2027-03-01")],
                   "C": [D("2027-02-08"), D("2027-02-15")]}


# ---------------------------------------------------------------- timetables

def test_timetable_presets():
    assert FOUR_DAY.weekdays == frozenset({0, 1, 3, 4}) and FOUR_DAY.name == "four_day"
    assert WEDNESDAY_MORNING.weekdays == frozenset(range(5)) and WEDNESDAY_MORNING.name == "wednesday_morning"
    assert TIMETABLES == {"four_day": FOUR_DAY, "wednesday_morning": WEDNESDAY_MORNING}
    with pytest.raises(ValueError, match="weekdays must be 0"):
        Timetable("bad", frozenset({7}))


def test_wednesday_depends_on_the_timetable():
    wednesday = D("2026-11-04")
    assert not SchoolCalendar("A", FOUR_DAY).is_school_day(wednesday)
    assert SchoolCalendar("A", WEDNESDAY_MORNING).is_school_day(wednesday)
    # ...but a Wednesday in the holidays or a public holiday is off either way.
    assert not SchoolCalendar("A", WEDNESDAY_MORNING).is_school_day(D("2026-10-21"))
    assert not SchoolCalendar("A", WEDNESDAY_MORNING).is_school_day(D("2026-11-11"))
    week = ("2026-11-09", "2026-11-15")  # Monday to Sunday, Wednesday 11 November is a holiday
    assert SchoolCalendar("A", WEDNESDAY_MORNING).school_days(D(week[0]), D(week[1])) == [
        D("2026-11-09"), D("2026-11-10"), D("2026-11-12"), D("2026-11-13")]
    assert len(SchoolCalendar("A", WEDNESDAY_MORNING).school_days(D("2026-11-16"), D("2026-11-22"))) == 5
    assert len(SchoolCalendar("A", FOUR_DAY).school_days(D("2026-11-16"), D("2026-11-22"))) == 4


# ---------------------------------------------------------------- flaws of the data

def test_last_teaching_day_before_summer_is_a_school_day():
    # The data lists these weekdays as the first day of the summer break; they are the
    # "fin des cours": classes end that evening.
    for day in ("2021-07-06", "2022-07-07", "2028-07-04"):
        assert vsf.SchoolHolidayDates().is_holiday_for_zone(D(day), "A"), day  # the flaw is there
        assert SchoolCalendar("A", WEDNESDAY_MORNING).is_school_day(D(day)), day
    assert SchoolCalendar("A").is_school_day(D("2028-07-03"))
    assert not SchoolCalendar("A").is_school_day(D("2028-07-05"))  # the break itself
    assert not SchoolCalendar("A").is_school_day(D("2028-07-06"))


def test_a_weekday_fin_des_cours_is_a_school_day_for_every_break():
    # Toussaint 2016 ended "mercredi 19 octobre après la classe": taught on a Wednesday-morning
    # timetable, off the next day.
    assert SchoolCalendar("A", WEDNESDAY_MORNING).is_school_day(D("2016-10-19"))
    assert not SchoolCalendar("A", WEDNESDAY_MORNING).is_school_day(D("2016-10-20"))


def test_a_bridge_starting_on_a_weekday_keeps_its_first_day():
    # The 2028 bridge rows start on the Friday itself (Ascension is Thursday 25 May 2028).
    assert hd.ascension_bridge(2028) == D("2028-05-26")  # Ascension: Thursday 25 May 2028
    assert not SchoolCalendar("A").is_school_day(D("2028-05-26"))


def test_ascension_bridge_follows_the_data_and_fills_its_gaps():
    data = vsf.SchoolHolidayDates()
    for day in ("2019-05-31", "2022-05-27", "2027-05-07", "2028-05-26"):  # listed in the data
        assert data.is_holiday_for_zone(D(day), "B") and not SchoolCalendar("B").is_school_day(D(day)), day
    for day in ("2023-05-19", "2024-05-10", "2025-05-30", "2026-05-15"):  # missing from the data
        assert not data.is_holiday_for_zone(D(day), "B")
        assert not SchoolCalendar("B").is_school_day(D(day)), day
    # Before the data first lists a bridge, none is invented.
    assert SchoolCalendar("A").is_school_day(D("2018-05-11"))
    # Nor after the data ends: the bridge is a fact of the official calendars we hold.
    assert SchoolCalendar("A").is_school_day(hd.ascension_bridge(2029))


def test_the_bridge_is_the_day_after_the_holidays_packages_ascension():
    for year in range(1990, 2041):
        ascension = next(d for d, name in holidays.France(years=year, language="fr").items()
                         if "Ascension" in name)  # 1997 and 2008: shared with another holiday
        assert hd.ascension_bridge(year) == ascension + timedelta(days=1), year


@pytest.mark.slow  # runs the CLI or Python in a child process
def test_names_do_not_depend_on_the_os_encoding(tmp_path):
    # In an ASCII locale the package cannot even load its own data; our calendar still reads it.
    script = tmp_path / "probe.py"
    script.write_text(
        "from datetime import date\n"
        "import vacances_scolaires_france as vsf\n"
        "from tice_collector.calendar import SchoolCalendar\n"
        "try:\n"
        "    vsf.SchoolHolidayDates()\n"
        "    print('package ok')\n"
        "except UnicodeDecodeError:\n"
        "    print('package broken')\n"
        "print(SchoolCalendar('A').is_school_day(date(2028, 7, 4)), SchoolCalendar('A').is_school_day(date(2028, 7, 5)))\n",
        encoding="ascii")
    out = subprocess.run([sys.executable, "-X", "utf8=0", str(script)], capture_output=True, text=True,
                         env={"LC_ALL": "C", "PYTHONIOENCODING": "ascii", "PATH": "/usr/bin:/bin"},
                         cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["package broken", "True False"]


# ---------------------------------------------------------------- coverage

def test_coverage_ends_with_the_data():
    assert coverage("A", D("2026-11-28"))
    assert coverage("A", D("2028-08-31"))
    assert not coverage("A", D("2028-09-01"))
    assert not coverage("A", D("2028-10-02"))
    assert not coverage("C", D("2029-01-08"))
    assert not coverage("A", D("1990-01-15"))  # before the data's first break
    # Beyond the data the timetable and public holidays still apply, but it is a guess.
    assert SchoolCalendar("A").is_school_day(D("2028-10-02"))
    assert not SchoolCalendar("A").is_covered(D("2029-01-08"))


def test_years_the_package_refuses_are_no_coverage_not_an_error():
    with pytest.raises(vsf.UnsupportedYearException):
        vsf.SchoolHolidayDates().is_holiday_for_zone(D("2029-01-08"), "A")
    calendar = SchoolCalendar("A")
    assert not calendar.is_covered(D("2029-01-08")) and not calendar.is_covered(D("1989-06-01"))
    assert calendar.is_school_day(D("2029-01-08"))
    assert not calendar.is_school_day(D("2029-01-01"))  # public holidays are still known
    assert len(calendar.school_days(D("2029-01-01"), D("2029-12-31"))) > 150


@pytest.fixture
def unreadable_data(monkeypatch):
    def missing(_package: str):
        raise FileNotFoundError("data/data.csv")

    caches = (hd._read_rows, hd.zone_data, hd._zone_closed, hd.closed_days, cal._timetable_days)
    for f in caches:
        f.cache_clear()
    monkeypatch.setattr(hd.resources, "files", missing)
    yield
    monkeypatch.undo()
    for f in caches:
        f.cache_clear()


def test_missing_holiday_data_is_no_coverage_and_logged(unreadable_data, caplog):
    with caplog.at_level(logging.ERROR, logger="tice.calendar"):
        assert not coverage("A", D("2026-11-02"))
        assert SchoolCalendar("A").is_school_day(D("2026-10-19"))  # a guess, and said so
    assert "school holiday data unreadable" in caplog.text


def test_unknown_zone_is_refused():
    with pytest.raises(ValueError, match="unknown zone 'D'"):
        SchoolCalendar("D")
    with pytest.raises(ValueError, match="unknown zone 'a'"):
        coverage("a", D("2026-11-02"))


# ---------------------------------------------------------------- ranges and speed

def test_school_days_range_is_inclusive_and_ordered():
    got = SchoolCalendar("A").school_days(D("2026-11-02"), D("2026-11-06"))
    assert got == [D("2026-11-02"), D("2026-11-03"), D("2026-11-05"), D("2026-11-06")]
    assert SchoolCalendar("A").school_days(D("2026-11-06"), D("2026-11-02")) == []
    year = SchoolCalendar("A").school_days(D("2026-09-01"), D("2027-07-10"))
    assert year == sorted(year) and year[0] == D("2026-09-01") and year[-1] == D("2027-07-02")
    assert len(year) == 139
    assert all(d.weekday() in FOUR_DAY.weekdays for d in year)
    assert year == [d for d in days("2026-09-01", "2027-07-10") if SchoolCalendar("A").is_school_day(d)]


def test_school_days_is_fast_after_the_first_call():
    overrides = tuple(Override(d, "closed", VOLTAIRE, "grève") for d in (D("2026-12-03"), D("2027-03-15")))
    calendar = SchoolCalendar("A", WEDNESDAY_MORNING, overrides, school=VOLTAIRE)
    start, end = D("2026-09-01"), D("2027-07-10")
    calendar.school_days(start, end)  # warms the per-(zone, timetable, year) caches
    runs = 200
    t0 = time.perf_counter()
    for _ in range(runs):
        calendar.school_days(start, end)
    per_call = (time.perf_counter() - t0) / runs
    assert per_call < 0.001, f"{per_call * 1e6:.0f} µs per school-year range"


# ---------------------------------------------------------------- overrides

def test_overrides_school_beats_city_and_open_beats_holiday():
    city_closed = Override(D("2026-11-05"), "closed", None, "grève")
    school_open = Override(D("2026-11-05"), "open", VOLTAIRE, "service minimum")
    makeup = Override(D("2026-10-21"), "open", VOLTAIRE, "rattrapage")
    other = Override(D("2026-11-06"), "closed", "0219999Z", "autre école")
    everything = (school_open, city_closed, makeup, other)  # the school's own override first, still wins
    voltaire = SchoolCalendar("A", overrides=everything, school=VOLTAIRE)
    hugo = SchoolCalendar("A", overrides=everything, school=HUGO)
    assert voltaire.is_school_day(D("2026-11-05"))      # its own override wins
    assert not hugo.is_school_day(D("2026-11-05"))      # city-wide closure applies
    assert voltaire.is_school_day(D("2026-10-21"))      # opened during the holidays
    assert not hugo.is_school_day(D("2026-10-21"))
    assert voltaire.is_school_day(D("2026-11-06"))      # another school's closure is not ours
    assert voltaire.school_days(D("2026-10-19"), D("2026-11-06")) == [
        D("2026-10-21"), D("2026-11-02"), D("2026-11-03"), D("2026-11-05"), D("2026-11-06")]
    assert hugo.school_days(D("2026-11-02"), D("2026-11-06")) == [D("2026-11-02"), D("2026-11-03"), D("2026-11-06")]


def test_open_on_a_weekend_and_public_holiday_closed_on_a_school_day():
    saturday = Override(D("2026-11-14"), "open", None, "samedi rattrapé")
    armistice = Override(D("2026-11-11"), "open", VOLTAIRE, "cérémonie")
    strike = Override(D("2026-11-12"), "closed", VOLTAIRE, "grève")
    calendar = SchoolCalendar("A", FOUR_DAY, (saturday, armistice, strike), school=VOLTAIRE)
    assert calendar.is_school_day(D("2026-11-14")) and calendar.is_school_day(D("2026-11-11"))
    assert not calendar.is_school_day(D("2026-11-12"))
    assert calendar.school_days(D("2026-11-09"), D("2026-11-15")) == [
        D("2026-11-09"), D("2026-11-10"), D("2026-11-11"), D("2026-11-13"), D("2026-11-14")]
    # A zone calendar (no school) takes only city-wide overrides.
    zone = SchoolCalendar("A", FOUR_DAY, (saturday, armistice, strike))
    assert zone.is_school_day(D("2026-11-14")) and not zone.is_school_day(D("2026-11-11"))
    assert zone.is_school_day(D("2026-11-12"))


def test_same_level_overrides_last_one_wins():
    first = Override(D("2026-11-05"), "closed", None, "grève")
    second = Override(D("2026-11-05"), "open", None, "grève annulée")
    assert SchoolCalendar("A", overrides=(first, second)).is_school_day(D("2026-11-05"))
    assert not SchoolCalendar("A", overrides=(second, first)).is_school_day(D("2026-11-05"))
    assert cal.unique_days([first, second]) == [second]


def test_override_kind_is_checked():
    with pytest.raises(ValueError, match="'closed' or 'open'"):
        Override(D("2026-11-05"), "shut", None, "")  # type: ignore[arg-type]


# ---------------------------------------------------------------- ICS import

def test_official_ics_import():
    overrides = parse_ics((FIXTURES / "zone-a-2026-2027.ics").read_bytes(), school=None)
    closed = {o.day for o in overrides}
    assert len(overrides) == 66
    assert D("2026-10-17") in closed and D("2026-11-01") in closed and D("2026-11-02") not in closed  # DTEND exclusive
    assert D("2026-10-16") not in closed
    assert D("2027-05-07") in closed and D("2027-05-08") not in closed  # no DTEND: one day
    assert D("2027-03-15") in closed  # timed event covers its day
    assert all(o.kind == "closed" and o.school is None for o in overrides)
    assert any(o.label == "Vacances de Noël - Zone A" for o in overrides)
    # An imported closure removes a day the timetable would teach.
    assert not SchoolCalendar("A", overrides=tuple(overrides)).is_school_day(D("2027-03-15"))
    # The breaks in the file are the bundled data's breaks.
    calendar = SchoolCalendar("A", WEDNESDAY_MORNING)
    for o in overrides:
        if o.label.startswith("Vacances"):
            assert not calendar.is_school_day(o.day), o


def test_official_all_zones_file_imported_for_one_zone():
    data = (FIXTURES / "official-zones-abc-2026-2027.ics").read_bytes()
    zone_a = parse_ics(data, school=VOLTAIRE, zone="A")
    closed = {o.day for o in zone_a}
    assert len(zone_a) == 128 and all(o.school == VOLTAIRE for o in zone_a)
    assert D("2026-09-01") not in closed and D("2026-08-31") not in closed  # rentrée events are not closures
    assert D("2027-02-15") in closed and D("2027-03-01") not in closed  # zone A winter only
    assert D("2027-02-08") not in closed and D("2027-03-02") not in closed  # zones C and B skipped
    assert {D("2027-05-06"), D("2027-05-07"), D("2027-05-09")} <= closed and D("2027-05-10") not in closed
    assert D("2027-07-02") not in closed and D("2027-07-03") in closed and D("2027-08-31") in closed
    # It agrees with the bundled data on every weekday of the year.
    bundled = SchoolCalendar("A", WEDNESDAY_MORNING)
    imported = SchoolCalendar("A", WEDNESDAY_MORNING, tuple(zone_a), school=VOLTAIRE)
    span = (D("2026-09-01"), D("2027-08-31"))
    assert imported.school_days(*span) == bundled.school_days(*span)
    # Without a zone every event is taken, other zones' breaks included.
    assert len(parse_ics(data, school=None)) == 192


ALL_ZONES = FIXTURES / "official-all-zones-2024-2026.ics"  # the national export's layout, 2024-25 and 2025-26


@pytest.mark.parametrize("zone", hd.ZONES)
def test_all_zones_file_in_the_official_layout_is_exact_for_each_zone(zone):
    closed = {o.day for o in parse_ics(ALL_ZONES.read_bytes(), school=VOLTAIRE, zone=zone)}
    # On every teaching weekday of two school years the import and the bundled data agree
    # (public holidays aside: the file does not list them).
    wrong = [d for d in days("2024-10-19", "2026-08-31")
             if d.weekday() < 5 and d not in hd.public_holidays(d.year)
             and (d in closed) != hd.is_zone_holiday(zone, d)]
    assert wrong == []
    assert D("2026-07-06") in closed and D("2026-08-31") in closed  # the zero-length summer start runs on
    assert D("2026-07-03") not in closed and D("2026-09-01") not in closed  # until the rentrée


def test_zone_lists_are_parsed_not_searched():
    closed_a = {o.day for o in parse_ics(ALL_ZONES.read_bytes(), school=None, zone="A")}
    # "Vacances de Printemps - Zones B/C - Corse" (12-18 April 2025) is not zone A's.
    assert not set(days("2025-04-14", "2025-04-18")) & closed_a
    assert set(days("2025-04-22", "2025-05-04")) <= closed_a  # zone A's own spring break


@pytest.mark.parametrize("zone", ["B", "C"])
def test_a_break_split_in_pieces_keeps_every_day(zone):
    closed = {o.day for o in parse_ics(ALL_ZONES.read_bytes(), school=None, zone=zone)}
    # The "Zones B/C" piece from Monday 2026-02-23 continues the break: its Monday is closed.
    assert D("2026-02-23") in closed and D("2026-02-27") in closed


@pytest.mark.parametrize(("summary", "name", "zones"), [
    ("Vacances d'Hiver - Zones B/C - Corse", "vacances d'hiver", {"B", "C", "CORSE"}),
    ("Vacances de Printemps - Zones A/B/C - Corse", "vacances de printemps", {"A", "B", "C", "CORSE"}),
    ("Vacances d'Hiver - Zone A", "vacances d'hiver", {"A"}),
    ("Prérentrée des enseignants - Zones A B C", "prerentree des enseignants", {"A", "B", "C"}),
    ("Lundi de Pentecôte - Corse", "lundi de pentecote", {"CORSE"}),
    ("Vacances de Noël - Zones A, B et C", "vacances de noel", {"A", "B", "C"}),
    ("Fermeture - Zone A - école Voltaire", "fermeture - zone a - ecole voltaire", set()),
    ("Vacances anticipées école Voltaire", "vacances anticipees ecole voltaire", set()),
])
def test_split_zones(summary, name, zones):
    assert ics.split_zones(ics._fold(summary)) == (name, frozenset(zones))


def test_summer_start_without_a_next_year_ends_on_31_august_and_says_so(caplog):
    text = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20280704\r\n"
            "DTEND;VALUE=DATE:20280704\r\nSUMMARY:Début des Vacances d'Été - Zones A/B/C\r\nEND:VEVENT\r\n"
            "END:VCALENDAR\r\n")
    with caplog.at_level(logging.WARNING, logger="tice.calendar"):
        closed = sorted(o.day for o in parse_ics(text.encode(), school=None, zone="A"))
    # 2028-07-04 is a Tuesday: class that day, the break from the 5th.
    assert (closed[0], closed[-1], len(closed)) == (D("2028-07-05"), D("2028-08-31"), 58)
    assert "no school year start after 2028-07-04" in caplog.text


def test_official_break_starting_on_a_weekday_keeps_its_last_teaching_day():
    overrides = parse_ics((FIXTURES / "summer-2028-weekday-start.ics").read_bytes(), school=None)
    closed = {o.day for o in overrides}
    assert D("2028-07-04") not in closed and D("2028-07-05") in closed and D("2028-08-31") in closed
    assert D("2028-07-03") in closed  # the city's own "Vacances" label (no zone) is taken as written


def test_timed_events_and_durations():
    overrides = parse_ics((FIXTURES / "timed-and-duration.ics").read_bytes(), school=None)
    assert sorted((o.day.isoformat(), o.label) for o in overrides) == [
        ("2027-01-12", "Coupure réseau"),   # 23:30 UTC on the 11th is the 12th in Dijon
        ("2027-01-18", "Travaux"),          # DURATION P2D: two days
        ("2027-01-19", "Travaux"),
        ("2027-01-25", "Grève"),            # ends at midnight: the next day is not included
        ("2027-02-01", "Formation"),        # PT4H within one day
    ]


def test_labels_are_bounded_and_single_line():
    long = "Fermeture " + "très " * 100
    text = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20270110\r\n"
            f"SUMMARY:{long}\\nsuite\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    (override,) = parse_ics(text.encode(), school=None)
    assert len(override.label) == ics.MAX_LABEL and "\n" not in override.label


@pytest.mark.parametrize(("name", "message"), [
    ("not-ical.ics", "not an iCalendar file: no BEGIN:VCALENDAR line"),
    ("vevent-only.ics", "no BEGIN:VCALENDAR line"),
    ("truncated.ics", "no END:VCALENDAR line"),
    ("empty.ics", "no VEVENT"),
    ("no-dtstart.ics", "event 1 ('Sans date') UID x: no DTSTART"),
    ("ends-before-start.ics", "event 1 ('Backwards') UID y: ends (2027-01-05) before it starts (2027-01-10)"),
    ("negative-duration.ics", "ends (2027-01-07) before it starts (2027-01-10)"),
    ("absurd-span.ics", "event 1 ('Forever') UID z: spans 1461 days (2026-01-01 to 2029-12-31)"),
    ("bad-date.ics", "event 1 ('Bad date') UID w: unreadable DTSTART"),
    ("bad-dtend.ics", "unreadable DTEND"),
    ("recurring.ics", "recurring events (RRULE/RDATE) are not supported"),
    ("latin1.ics", "not UTF-8 text (byte 93)"),
])
def test_malformed_ics_is_refused_clearly(name, message):
    with pytest.raises(CalendarImportError) as e:
        parse_ics((FIXTURES / name).read_bytes(), school=VOLTAIRE)
    assert message in str(e.value)
    assert e.value.__cause__ is None and "Traceback" not in str(e.value)


def test_too_large_and_unknown_zone_are_refused():
    with pytest.raises(CalendarImportError, match="file too large"):
        parse_ics(b"BEGIN:VCALENDAR\r\n" + b"X" * ics.MAX_ICS_BYTES, school=None)
    with pytest.raises(ValueError, match="unknown zone"):
        parse_ics((FIXTURES / "zone-a-2026-2027.ics").read_bytes(), school=None, zone="Z")
