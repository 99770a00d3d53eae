"""tice-collector calendar and jobs commands, as ops run them."""

from __future__ import annotations

from pathlib import Path

# `cli` (tests/conftest.py) runs tice-collector in this process, on the test's database.

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "calendar"


def test_days_import_and_overrides(cli):
    assert cli("school", "add", "0210001A", "--name", "Voltaire", "--zone", "A", "--kind", "elementary",
               "--timetable", "wednesday_morning").returncode == 0
    r = cli("calendar", "days", "--zone", "A", "--from", "2026-10-12", "--to", "2026-11-06")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2026-10-12", "2026-10-13", "2026-10-15", "2026-10-16",
                                "2026-11-02", "2026-11-03", "2026-11-05", "2026-11-06"]
    school = cli("calendar", "days", "--school", "0210001A", "--from", "2026-11-02", "--to", "2026-11-06")
    assert school.stdout.split() == ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05", "2026-11-06"]
    imported = cli("calendar", "import", str(FIXTURES / "zone-a-2026-2027.ics"))
    assert imported.returncode == 0 and "66 closed days imported" in imported.stdout
    after = cli("calendar", "days", "--school", "0210001A", "--from", "2027-03-15", "--to", "2027-03-16")
    assert after.stdout.split() == ["2027-03-16"]  # the imported closure on 15 March
    r = cli("calendar", "override", "--day", "2027-03-15", "--open", "--school", "0210001A", "--label", "rattrapage")
    assert r.returncode == 0
    again = cli("calendar", "days", "--school", "0210001A", "--from", "2027-03-15", "--to", "2027-03-16")
    assert again.stdout.split() == ["2027-03-15", "2027-03-16"]  # the school's own override wins


def test_bad_calendar_input_is_refused_with_a_clear_line(cli):
    bad = cli("calendar", "import", str(FIXTURES / "no-dtstart.ics"))
    assert bad.returncode == 2 and "no DTSTART" in bad.stderr and "Traceback" not in bad.stderr
    r = cli("calendar", "days", "--zone", "A", "--from", "2026-13-01", "--to", "2026-11-06")
    assert r.returncode == 2 and "expected a date as YYYY-MM-DD" in r.stderr
    r = cli("calendar", "days", "--zone", "A", "--from", "2026-11-06", "--to", "2026-11-01")
    assert r.returncode == 2 and "before --from" in r.stderr
    r = cli("calendar", "days", "--school", "0219999Z", "--from", "2026-11-01", "--to", "2026-11-06")
    assert r.returncode == 2 and "no school" in r.stderr


def test_days_beyond_the_data_warn_loudly(cli):
    r = cli("calendar", "days", "--zone", "A", "--from", "2028-09-01", "--to", "2028-09-08")
    assert r.returncode == 0
    assert "no school-holiday data for zone A" in r.stderr
    assert r.stdout.split()[0] == "2028-09-01"


def test_jobs_run_by_hand(cli):
    r = cli("jobs", "run", "snapshot")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("snapshot: ok in")
    bad = cli("jobs", "run", "nope")
    assert bad.returncode == 2 and "jobs are: rollup, detect, snapshot, retention" in bad.stderr


def test_import_of_the_all_zones_file_keeps_the_schools_zone(cli):
    cli("school", "add", "0210001A", "--name", "Voltaire", "--zone", "A", "--kind", "elementary")
    r = cli("calendar", "import", str(FIXTURES / "official-zones-abc-2026-2027.ics"), "--school", "0210001A")
    assert r.returncode == 0, r.stderr
    # Zone C's winter break (from 6 Feb 2027) must not close a zone A school.
    days = cli("calendar", "days", "--school", "0210001A", "--from", "2027-02-08", "--to", "2027-02-12")
    assert days.stdout.split() == ["2027-02-08", "2027-02-09", "2027-02-11", "2027-02-12"]


def test_import_of_the_official_all_zones_layout_for_each_school_zone(cli):
    cli("school", "add", "0210001A", "--name", "Voltaire", "--zone", "A", "--kind", "elementary")
    cli("school", "add", "0750002B", "--name", "Hugo", "--zone", "C", "--kind", "elementary")
    for uai in ("0210001A", "0750002B"):
        r = cli("calendar", "import", str(FIXTURES / "official-all-zones-2024-2026.ics"), "--school", uai)
        assert r.returncode == 0, r.stderr
    # 14-18 April 2025 is zones B/C's spring break, not zone A's: Voltaire teaches.
    a = cli("calendar", "days", "--school", "0210001A", "--from", "2025-04-14", "--to", "2025-04-18")
    assert a.stdout.split() == ["2025-04-14", "2025-04-15", "2025-04-17", "2025-04-18"]
    # Monday 23 February 2026 starts the "Zones B/C" piece of zone C's winter break: closed.
    c = cli("calendar", "days", "--school", "0750002B", "--from", "2026-02-20", "--to", "2026-03-10")
    assert c.stdout.split() == ["2026-02-20", "2026-03-09", "2026-03-10"]
    # The zero-length summer start closes the summer up to the rentrée.
    summer = cli("calendar", "days", "--school", "0210001A", "--from", "2026-07-02", "--to", "2026-09-01")
    assert summer.stdout.split() == ["2026-07-02", "2026-07-03", "2026-09-01"]
