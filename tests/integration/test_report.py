"""The evidence report against a hand computation: the known fleet of tests/report_fleet.py,
across the Toussaint break, with a Wednesday-morning school, a school without devices and a
silent school; the command and the API; the three formats; French and English; refusals."""

from __future__ import annotations

import csv
import functools
import io
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from tests import report_fleet
from tests.helpers import add_school, auth, batch, enroll
from tice_collector.calendar import SchoolCalendar
from tice_collector.jobs import JobContext, all_jobs, run_job
from tice_collector.keys import METRICS
from tice_collector.report.make import make_report
from tice_collector.report.model import CSV_COLUMNS
from tice_collector.report.request import check

ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"Authorization": "Bearer admin-secret-token"}
PERIOD = {"from": "2026-10-12", "to": "2026-11-06"}
A, B, C, D = report_fleet.A, report_fleet.B, report_fleet.C, report_fleet.D

# Each period row by hand (tests/report_fleet.py has the daily totals), fields in CSV order from
# school_days on: school_days, devices, enrolled, used, used_share, judged, too_new, regular,
# regular_share, classes, classes_regular, active_minutes_median, device_days, device_days_used,
# device_days_no_data, cupboard, silent, modem_bytes, modem_in_class_bytes, projector_on_hours,
# projector_on_in_class_hours.
#
# Per device (school days it could be used on / with data / used; minutes = in-class seconds
# over its school days / 60):
#   A1 chromebook CP-A  8/8/6   (6x1200 + 2x100) / 8 / 60 = 15.42   regular (6 of 8)
#   A2 chromebook CP-A  8/5/3   (3x900 + 420 + 30) / 480 = 6.5625   irregular (3 of 8)
#   A3 chromebook CP-A  3/1/1   enrolled 3 Nov: 3, 5, 6 Nov; 700 / 180 = 3.89   too new
#   A4 laptop           never enrolled: cupboard
#   A5 laptop           8/8/0   8x50 / 480 = 0.83   irregular; hosts the 3G key; cupboard
#   A6 laptop CE1       8/5/5   5x800 / 480 = 8.33  regular (5 of 8); hosts a projector; silent
#                               (no data on 3, 5, 6 Nov)
#   A7 disk, A8 retired, A11 created after the period: left out
#   A9 desktop CE1      4/0/0   enrolled in the break: 2, 3, 5, 6 Nov; 0.0; too new; cupboard;
#                               silent (4 school days without data)
#   A10 chromebook      enrolled after the period: never enrolled in it; cupboard
#   A12 projector CE1   8/4/4   lamp 1200 s in hours on 4 days: 4800 / 480 = 10.0; regular (4 of 8)
#   B1 chromebook       10/4/4  (700 + 700 + 1000 + 1000) / 600 = 5.67; irregular (4 of 10);
#                               Wednesday 14 Oct: 1,000 s in the morning count, the afternoon not
#   B2 chromebook       10/10/10  660 / 60 = 11.0; regular
#   D1 laptop           8/4/4   4x700 / 480 = 5.83; regular (4 of 8); its school is silent
# Classes of A: CP-A judges A1 (regular) and A2 (not): 1 of 2 < 60 %; CE1 judges A6 and A12,
# both regular: regular. So 2 classes, 1 regular.
NO_MODEM = (0, 0)
ROWS: dict[tuple[str, str], tuple[Any, ...]] = {
    ("", "all"): (10, 12, 10, 8, 0.6667, 8, 2, 5, 0.625, 2, 1, 6.2, 75, 37, 26, 4, 2,
                  3_100_000, 570_000, 3.17, 2.67),
    ("", "chromebook"): (10, 6, 5, 5, 0.8333, 4, 1, 2, 0.5, None, None, 6.6, 39, 24, 11, 1, 0, *NO_MODEM, 0.0, 0.0),
    ("", "laptop"): (10, 4, 3, 2, 0.5, 3, 0, 2, 0.6667, None, None, 5.8, 24, 9, 7, 2, 1,
                     3_100_000, 570_000, 1.5, 1.33),
    ("", "desktop"): (10, 1, 1, 0, 0.0, 0, 1, 0, None, None, None, 0.0, 4, 0, 4, 1, 1, *NO_MODEM, 0.0, 0.0),
    ("", "projector"): (10, 1, 1, 1, 1.0, 1, 0, 1, 1.0, None, None, 10.0, 8, 4, 4, 0, 0, *NO_MODEM, 1.67, 1.33),
    (A, "all"): (8, 9, 7, 5, 0.5556, 5, 2, 3, 0.6, 2, 1, 6.6, 47, 19, 16, 4, 2, 3_100_000, 570_000, 3.17, 2.67),
    (A, "chromebook"): (8, 4, 3, 3, 0.75, 2, 1, 1, 0.5, None, None, 6.6, 19, 10, 5, 1, 0, *NO_MODEM, 0.0, 0.0),
    (A, "laptop"): (8, 3, 2, 1, 0.3333, 2, 0, 1, 0.5, None, None, 4.6, 16, 5, 3, 2, 1, 3_100_000, 570_000, 1.5, 1.33),
    (A, "desktop"): (8, 1, 1, 0, 0.0, 0, 1, 0, None, None, None, 0.0, 4, 0, 4, 1, 1, *NO_MODEM, 0.0, 0.0),
    (A, "projector"): (8, 1, 1, 1, 1.0, 1, 0, 1, 1.0, None, None, 10.0, 8, 4, 4, 0, 0, *NO_MODEM, 1.67, 1.33),
    (B, "all"): (10, 2, 2, 2, 1.0, 2, 0, 1, 0.5, 0, 0, 8.3, 20, 14, 6, 0, 0, *NO_MODEM, 0.0, 0.0),
    (B, "chromebook"): (10, 2, 2, 2, 1.0, 2, 0, 1, 0.5, None, None, 8.3, 20, 14, 6, 0, 0, *NO_MODEM, 0.0, 0.0),
    # C: no device; closed on 6 November, so 7 school days.
    (C, "all"): (7, 0, 0, 0, None, 0, 0, 0, None, 0, 0, None, 0, 0, 0, 0, 0, *NO_MODEM, 0.0, 0.0),
    # D: its laptop is not counted silent: the whole school is (no device reported since 16 Oct).
    (D, "all"): (8, 1, 1, 1, 1.0, 1, 0, 1, 1.0, 0, 0, 5.8, 8, 4, 4, 0, 0, *NO_MODEM, 0.0, 0.0),
    (D, "laptop"): (8, 1, 1, 1, 1.0, 1, 0, 1, 1.0, None, None, 5.8, 8, 4, 4, 0, 0, *NO_MODEM, 0.0, 0.0),
}
FIGURES = CSV_COLUMNS[CSV_COLUMNS.index("school_days"):]

# The city's Chromebooks week by week (week rows): 12 Oct (12-16: 5 days, any school), the two
# weeks of the break (no school day: shares null), 2 Nov (2-6).
#   12 Oct: used A1, A2, B1, B2 (A3 not enrolled yet, A10 never) = 4 of 6; device-days
#           A1 4 + A2 4 + B1 5 + B2 5 = 18, used 4 + 2 + 3 + 5 = 14, no data A2 16 Oct, B1 15, 16 Oct = 3;
#           minutes A1 20.0, A2 (900+900+420)/240 = 9.25, B1 2400/300 = 8.0, B2 11.0: median 10.125 -> 10.1
#   2 Nov:  used A1, A2, A3, B1, B2 = 5 of 6; device-days A1 4 + A2 4 + A3 3 + B1 5 + B2 5 = 21,
#           used 2 + 1 + 1 + 1 + 5 = 10, no data A2 3, 5 Nov + A3 5, 6 Nov + B1 2, 3, 5, 6 Nov = 8;
#           minutes A1 (2400+200)/240 = 10.83, A2 930/240 = 3.875, A3 3.89, B1 1000/300 = 3.33,
#           B2 11.0: median 3.89
# (school_days, used, used_share, active_minutes_median, device_days, device_days_used, device_days_no_data)
CITY_CHROMEBOOK_WEEKS = {
    date(2026, 10, 12): (5, 4, 0.6667, 10.1, 18, 14, 3),
    date(2026, 10, 19): (0, 0, None, None, 0, 0, 0),
    date(2026, 10, 26): (0, 0, None, None, 0, 0, 0),
    date(2026, 11, 2): (5, 5, 0.8333, 3.9, 21, 10, 8),
}


@pytest.fixture
async def fleet(db: asyncpg.Connection) -> dict[str, uuid.UUID]:
    return await report_fleet.seed(db)


@pytest.fixture
def run(cli: Any) -> Any:
    """`tice-collector report ARGS`, in this process (tests/conftest.py `cli`)."""
    return functools.partial(cli, "report")


def period_rows(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["school"], r["kind"]): r for r in report["rows"] if r["week"] is None}


async def test_every_figure_matches_a_hand_computation(client: Any, fleet: dict[str, uuid.UUID]) -> None:
    resp = await client.get("/api/v1/reports/usage", params=PERIOD, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    report = await resp.json()
    assert report["scope"] == "city"
    assert report["period"] == {"from": "2026-10-12", "to": "2026-11-06", "default_term": False}

    rows = period_rows(report)
    assert set(rows) == set(ROWS), sorted(set(rows) ^ set(ROWS))
    for key, expected in ROWS.items():
        got = tuple(rows[key][c] for c in FIGURES)
        assert got == expected, (key, {c: (g, e) for c, g, e in zip(FIGURES, got, expected, strict=True) if g != e})
    assert rows[(A, "all")]["school_name"] == "École A" and rows[("", "all")]["scope"] == "city"

    weeks = {r["week"]: r for r in report["rows"] if r["school"] == "" and r["kind"] == "chromebook" and r["week"]}
    assert list(weeks) == [str(w) for w in CITY_CHROMEBOOK_WEEKS]
    for week, expected in CITY_CHROMEBOOK_WEEKS.items():
        r = weeks[str(week)]
        got = (r["school_days"], r["used"], r["used_share"], r["active_minutes_median"], r["device_days"],
               r["device_days_used"], r["device_days_no_data"])
        assert got == expected, week
        # Devices are the inventory; verdicts, classes and lists are over the whole period only.
        assert (r["devices"], r["judged"], r["regular_share"], r["classes"], r["cupboard"]) == (6, None, None, None, None)
    # The week rows add up to the period: the 3G key's 2 MB of Saturday 24 October (the break)
    # are in the week of 19 October, out of class.
    laptop = {r["week"]: (r["modem_bytes"], r["modem_in_class_bytes"])
              for r in report["rows"] if r["school"] == A and r["kind"] == "laptop" and r["week"]}
    assert laptop == {"2026-10-12": (1_100_000, 570_000), "2026-10-19": (2_000_000, 0), "2026-10-26": (0, 0),
                      "2026-11-02": (0, 0)}

    # 75 school device-days could have data (A1 8 + A2 8 + A3 3 + A5 8 + A6 8 + A9 4 + A12 8 +
    # B1 10 + B2 10 + D1 8); A2 3 + A3 2 + A6 3 + A9 4 + A12 4 + B1 6 + D1 4 = 26 had none.
    assert report["coverage"] == {"device_days": 75, "with_data": 49, "no_data": 26, "no_data_share": 0.3467,
                                  "never_enrolled": 2}
    assert report["cupboard"] == [
        {"school": A, "kind": "chromebook", "asset_tag": "A-CB-10", "class": None, "reason": "never_enrolled",
         "school_days": 0, "days_with_data": 0, "last_data_day": None},
        {"school": A, "kind": "laptop", "asset_tag": "A-LP-04", "class": None, "reason": "never_enrolled",
         "school_days": 0, "days_with_data": 0, "last_data_day": None},
        {"school": A, "kind": "laptop", "asset_tag": "A-LP-05", "class": None, "reason": "not_used_in_class",
         "school_days": 8, "days_with_data": 8, "last_data_day": "2026-11-06"},
        {"school": A, "kind": "desktop", "asset_tag": "A-PC-09", "class": "CE1", "reason": "no_data",
         "school_days": 4, "days_with_data": 0, "last_data_day": None},
    ]
    assert report["silent_devices"] == [
        {"school": A, "kind": "laptop", "asset_tag": "A-LP-06", "class": "CE1", "last_data_day": "2026-11-02",
         "missed_school_days": 3},
        {"school": A, "kind": "desktop", "asset_tag": "A-PC-09", "class": "CE1", "last_data_day": None,
         "missed_school_days": 4},
    ]
    assert report["silent_schools"] == [{"school": D, "school_name": "École D", "devices": 1}]
    # 1,000,000 + 100,000 + 2,000,000 bytes; 500,000 + 70,000 in class, both days over 64 KiB.
    assert report["modems"] == [
        {"school": A, "kind": "laptop", "asset_tag": "A-LP-05", "class": None, "counted_on": "host",
         "bytes": 3_100_000, "in_class_bytes": 570_000, "used_days": 2, "school_days": 8}]
    # A6 hosts a projector: 3,600 + 1,800 s on (1.5 h), 3,000 + 1,800 in class (1.33 h), both
    # days over 10 min; A12 is a projector with daily totals of its own: 4 x 1,500 s (1.67 h).
    assert report["projectors"] == [
        {"school": A, "kind": "laptop", "asset_tag": "A-LP-06", "class": "CE1", "counted_on": "host",
         "on_hours": 1.5, "on_in_class_hours": 1.33, "used_days": 2, "school_days": 8},
        {"school": A, "kind": "projector", "asset_tag": "A-VP-12", "class": "CE1", "counted_on": "projector",
         "on_hours": 1.67, "on_in_class_hours": 1.33, "used_days": 4, "school_days": 8}]
    assert [(s["uai"], s["timetable"], s["school_days"], s["own_hours"], s["overrides"], s["holiday_data"],
             s["devices"]) for s in report["schools"]] == [
        (A, "four_day", 8, False, 0, True, 9), (B, "wednesday_morning", 10, True, 0, True, 2),
        (C, "four_day", 7, False, 1, True, 0), (D, "four_day", 8, False, 0, True, 1)]
    assert report["method"] == {
        "used_threshold_s": 600.0, "modem_used_bytes": 65536, "regular_share": 0.5, "min_judged_days": 5,
        "class_regular_share": 0.6, "silent_school_days": 3, "alert_window_school_days": 20,
        "teaching_hours": "08:30-11:30 13:30-16:30", "wednesday_hours": "08:30-11:30", "timezone": "Europe/Paris",
        "break_days": 7}


class Cells(HTMLParser):
    """Every table cell with a data-value, by (school, kind) of its row and its column."""

    def __init__(self) -> None:
        super().__init__()
        self.row: tuple[str, str] | None = None
        self.cells: dict[tuple[str, str, str], str] = {}
        self.weeks: dict[tuple[str, str], str] = {}
        self.week: str | None = None
        self.network: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in ("src", "href", "data", "poster", "srcset", "action", "background"):
            if a.get(name):
                self.network.append(f"<{tag} {name}={a[name]}>")
        if tag == "tr":
            self.row = (a["data-school"] or "", a["data-kind"] or "") if "data-kind" in a else None
            self.week = a.get("data-week")
        if tag == "td" and "data-col" in a:
            if self.week is not None and "data-kind" in a:
                self.weeks[(self.week, a["data-kind"] or "")] = a["data-value"] or ""
            elif self.row is not None:
                key = (*self.row, a["data-col"] or "")
                assert self.cells.get(key, a["data-value"]) == a["data-value"], key  # a figure shown twice agrees
                self.cells[key] = a["data-value"] or ""


def test_csv_json_and_html_carry_the_same_figures(run: Any, fleet: Any, tmp_path: Path) -> None:
    for fmt in ("json", "csv", "html"):
        r = run("--from", "2026-10-12", "--to", "2026-11-06", "--format", fmt, "--out", str(tmp_path / f"r.{fmt}"))
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"wrote {tmp_path / f'r.{fmt}'} ({fmt}{', fr' if fmt == 'html' else ''}): city, " \
                           "2026-10-12 to 2026-11-06, 4 schools, 12 devices\n"
    report = json.loads((tmp_path / "r.json").read_text())
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert tuple(table[0]) == CSV_COLUMNS
    assert len(table) - 1 == len(report["rows"])

    def as_csv(value: Any) -> str:
        return "" if value is None else str(value)

    for line, row in zip(table[1:], report["rows"], strict=True):
        assert line == [as_csv(row[c]) for c in CSV_COLUMNS], line
    cells = Cells()
    cells.feed((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert cells.network == []
    period = period_rows(report)
    shown = 0
    for (school, kind, col), value in cells.cells.items():
        assert value == as_csv(period[(school, kind)][col]), (school, kind, col)
        shown += 1
    # Every period row of the city and the schools is in the page, with its main figures.
    for key in ROWS:
        for col in ("devices", "used_share", "active_minutes_median", "cupboard", "silent", "device_days_no_data"):
            assert (*key, col) in cells.cells, (key, col)
    assert all((s, "all", "regular_share") in cells.cells for s in ("", A, B, C, D))
    week_shares = {(w, k): v for (w, k), v in cells.weeks.items()}
    for row in report["rows"]:
        if row["school"] == "" and row["week"] and row["kind"] != "all":
            assert week_shares[(row["week"], row["kind"])] == as_csv(row["used_share"])
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'data-value="26"' in html and "26 n'ont aucune donnée" in unescape(html)  # the coverage line
    assert "http://" not in html and "https://" not in html and "<script" not in html and "url(" not in html


def test_french_by_default_and_english_on_request(run: Any, fleet: Any, tmp_path: Path) -> None:
    assert run("--from", "2026-10-12", "--to", "2026-11-06", "--out", str(tmp_path / "fr.html")).returncode == 0
    r = run("--from", "2026-10-12", "--to", "2026-11-06", "--lang", "en", "--out", str(tmp_path / "en.html"))
    assert r.returncode == 0, r.stderr
    fr = unescape((tmp_path / "fr.html").read_text(encoding="utf-8"))
    en = unescape((tmp_path / "en.html").read_text(encoding="utf-8"))
    assert '<html lang="fr">' in fr and '<html lang="en">' in en
    assert "Période du 12 octobre 2026 au 6 novembre 2026" in fr
    assert "Period from 12 October 2026 to 6 November 2026" in en
    # 8 of 12 devices used: 67 % with a narrow no-break space in French, 67% in English.
    assert "67\u202f%" in fr and "67%" not in fr and "67%" in en
    assert "Couverture des données : sur 75 journées-équipement de classe, 26 n'ont aucune donnée (35\u202f%)" in fr
    assert "Data coverage: of 75 school device-days, 26 have no data (35%)" in en
    assert "Au placard" in fr and "In the cupboard" in en
    assert "Méthode" in fr and "Method" in en
    assert "3,1\u202fMo" in fr and "3.1 MB" in en  # the key's 3,100,000 bytes
    assert "6,2" in fr and "6.2" in en  # the city's median minutes per school day
    # The English page says nothing in French, and the other way round.
    assert "utilisés" not in en and "used regularly" not in fr


async def test_one_school_sheet_and_a_school_without_devices(client: Any, fleet: Any) -> None:
    resp = await client.get("/api/v1/reports/usage", params={**PERIOD, "school": "0210001a"}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    assert report["scope"] == A and [s["uai"] for s in report["schools"]] == [A]
    rows = period_rows(report)
    assert set(rows) == {k for k in ROWS if k[0] == A}
    assert all(tuple(rows[k][c] for c in FIGURES) == ROWS[k] for k in rows)
    # The coverage line is the school's own: A1 8 + A2 8 + A3 3 + A5 8 + A6 8 + A9 4 + A12 8 = 47.
    assert report["coverage"] == {"device_days": 47, "with_data": 31, "no_data": 16, "no_data_share": 0.3404,
                                  "never_enrolled": 2}
    assert [d["asset_tag"] for d in report["cupboard"]] == ["A-CB-10", "A-LP-04", "A-LP-05", "A-PC-09"]

    empty = await client.get("/api/v1/reports/usage", params={**PERIOD, "school": C, "format": "html"}, headers=ADMIN)
    assert empty.status == 200, await empty.text()
    assert empty.content_type == "text/html"
    page = await empty.text()
    assert "École C (0210003C)" in page and "7 jours de classe" in page
    assert 'data-col="used_share" data-value=""' in page  # no device: no share, shown as a dash
    csv_answer = await client.get("/api/v1/reports/usage", params={**PERIOD, "school": C, "format": "csv"},
                                  headers=ADMIN)
    assert csv_answer.content_type == "text/csv"
    assert 'filename="tice-usage-0210003C-2026-10-12-2026-11-06.csv"' in csv_answer.headers["Content-Disposition"]
    lines = list(csv.DictReader(io.StringIO(await csv_answer.text())))
    assert [(r["kind"], r["week"], r["devices"], r["used_share"]) for r in lines] == [
        ("all", "", "0", ""), ("all", "2026-10-12", "0", ""), ("all", "2026-10-19", "0", ""),
        ("all", "2026-10-26", "0", ""), ("all", "2026-11-02", "0", "")]


async def test_the_default_period_is_the_current_term(db: asyncpg.Connection, make_settings: Any, fleet: Any) -> None:
    settings = make_settings()
    paris = ZoneInfo("Europe/Paris")
    for today, period in (
            (date(2026, 11, 10), (date(2026, 11, 2), date(2026, 11, 9))),   # inside the term: up to yesterday
            (date(2026, 10, 25), (date(2026, 9, 1), date(2026, 10, 16))),   # the break: the whole last term
            (date(2026, 11, 2), (date(2026, 9, 1), date(2026, 10, 16)))):   # first day of a term: the last one
        request = check(None, None, None, "json", "fr", today=today)
        report = await make_report(db, settings, request, today=today, now=datetime.now(paris), query_timeout_s=60)
        assert (report.period.from_, report.period.to, report.period.default_term) == (*period, True), today


@pytest.mark.parametrize(("args", "message"), [
    (("--from", "2026-11-06", "--to", "2026-10-12"), "the period ends (2026-10-12) before it starts (2026-11-06)"),
    (("--from", "2026-13-01", "--to", "2026-11-06"), "--from: '2026-13-01' is not a day of the calendar"),
    (("--from", "12/10/2026", "--to", "2026-11-06"), "--from: expected a date as YYYY-MM-DD, got '12/10/2026'"),
    (("--from", "2026-10-12",), "give both --from and --to, or neither for the current school term"),
    (("--from", "2025-01-01", "--to", "2026-11-06"), "the period spans 675 days; at most 400"),
    (("--from", "2026-10-12", "--to", "2999-01-01"), "--to: 2999-01-01 is not over yet"),
    (("--school", "0219999Z", "--from", "2026-10-12", "--to", "2026-11-06"), "no school 0219999Z"),
    (("--school", "Voltaire", "--from", "2026-10-12", "--to", "2026-11-06"), "--school: expected a UAI code"),
    (("--from", "2026-10-19", "--to", "2026-10-30"),
     "no school day from 2026-10-19 to 2026-10-30 at any school: the period falls in the holidays"),
    (("--school", C, "--from", "2026-11-06", "--to", "2026-11-08"),
     "no school day from 2026-11-06 to 2026-11-08 at school 0210003C"),
    (("--format", "pdf"), "argument --format: invalid choice: 'pdf'"),
    (("--lang", "de"), "argument --lang: invalid choice: 'de'"),
])
def test_bad_arguments_exit_2_with_a_clear_message(run: Any, fleet: Any, tmp_path: Path, args: tuple[str, ...],
                                                   message: str) -> None:
    out = tmp_path / "r.html"
    r = run(*args, "--out", str(out))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_out_to_a_missing_directory_or_standard_output(run: Any, fleet: Any, tmp_path: Path) -> None:
    r = run("--from", "2026-10-12", "--to", "2026-11-06", "--out", str(tmp_path / "no" / "r.html"))
    assert r.returncode == 2 and f"no directory {tmp_path / 'no'}; create it first" in r.stderr
    r = run("--from", "2026-10-12", "--to", "2026-11-06", "--school", D, "--format", "csv", "--out", "-")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(",".join(CSV_COLUMNS) + "\n") or r.stdout.startswith(",".join(CSV_COLUMNS) + "\r\n")
    assert "0210004D,École D,all,,8,1,1,1,1.0,1,0,1,1.0,0,0,5.8,8,4,4,0,0,0,0,0.0,0.0" in r.stdout


@pytest.mark.parametrize(("query", "code", "detail"), [
    ({"from": "2026-11-06", "to": "2026-10-12"}, "invalid", "the period ends (2026-10-12) before it starts"),
    ({"from": "2026-10-12"}, "invalid", "give both from and to, or neither"),
    ({"from": "yesterday", "to": "2026-11-06"}, "invalid", "from: expected a date as YYYY-MM-DD"),
    ({**PERIOD, "school": "0219999Z"}, "unknown_school", "no school 0219999Z"),
    ({"from": "2026-10-19", "to": "2026-10-30"}, "empty_period", "no school day from 2026-10-19 to 2026-10-30"),
    ({**PERIOD, "format": "pdf"}, "invalid", "format: expected one of html, csv, json"),
    ({**PERIOD, "lang": "de"}, "invalid", "lang: expected one of fr, en"),
    ({**PERIOD, "since": "2026-10-12"}, "invalid", "unknown query parameter 'since'"),
])
async def test_bad_parameters_get_a_400(client: Any, fleet: Any, query: dict[str, str], code: str,
                                        detail: str) -> None:
    resp = await client.get("/api/v1/reports/usage", params=query, headers=ADMIN)
    assert resp.status == 400
    problem = await resp.json()
    assert problem["error"] == code and detail in problem["detail"], problem


async def test_admin_token_required(client: Any, fleet: Any) -> None:
    resp = await client.get("/api/v1/reports/usage", params=PERIOD)
    assert resp.status == 401
    resp = await client.get("/api/v1/reports/usage", params=PERIOD, headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401


def last_full_week() -> date:
    """The Monday of the latest week, over by yesterday, whose school days at a four-day school of
    zone A are its Monday, Tuesday, Thursday and Friday (no holiday), at most ten weeks back (the
    door refuses records older than 100 days)."""
    calendar = SchoolCalendar(zone="A")
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    monday = today - timedelta(days=today.weekday() + 7)
    for _ in range(10):
        week = [monday + timedelta(days=i) for i in range(5)]
        if calendar.school_days(week[0], week[-1]) == [week[0], week[1], week[3], week[4]]:
            return monday
        monday -= timedelta(days=7)
    pytest.skip("no week without a holiday in the last ten weeks")


async def test_report_from_records_through_the_rollup(client: Any, db: asyncpg.Connection, make_settings: Any,
                                                      database_url: str) -> None:
    """Records sent by a device, rolled up by the real job: only what falls inside teaching hours
    on a school day counts."""
    monday = last_full_week()
    paris = ZoneInfo("Europe/Paris")
    secret = await add_school(db, A)
    dev = await enroll(client, secret, serial="CB-1", kind="chromebook")
    await db.execute("UPDATE devices SET enrolled_at = $2 WHERE id = $1", uuid.UUID(dev["device_id"]),
                     datetime(monday.year, monday.month, monday.day, 8, 0, tzinfo=paris))

    def record(seq: int, day: date, hour: int) -> dict[str, Any]:
        at = datetime(day.year, day.month, day.day, hour, 0, tzinfo=paris)
        return {"type": "usage", "seq": seq, "at": at.isoformat(), "duration_s": 900, "active_s": 900,
                "idle_s": 0, "source": "chrome"}

    # 15 fully active minutes at 09:00 on Monday, Tuesday, Wednesday (no class at a four-day
    # school) and Thursday, and at 22:00 on Thursday (out of hours); nothing on Friday.
    records = [record(seq, monday + timedelta(days=offset), hour)
               for seq, (offset, hour) in enumerate(((0, 9), (1, 9), (2, 9), (3, 9), (3, 22)), 1)]
    resp = await client.post("/api/v1/reports", json=batch(dev["device_id"], records, sent_at=datetime.now(UTC)),
                             headers=auth(dev["token"]))
    assert resp.status == 200 and (await resp.json())["accepted"] == 5, await resp.text()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        ctx = JobContext(pool=pool, settings=make_settings(), metrics=client.server.app[METRICS])
        assert await run_job(all_jobs()["rollup"], ctx, force=True) == "ok"
    finally:
        await pool.close()
    friday = monday + timedelta(days=4)
    resp = await client.get("/api/v1/reports/usage", params={"from": str(monday), "to": str(friday)}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    row = period_rows(await resp.json())[(A, "chromebook")]
    # School days Monday, Tuesday, Thursday, Friday: used on 3 (900 s each in hours), no data on
    # Friday; 2,700 s over 4 days = 11.25 min. Fewer than 5 school days since enrolment: too new.
    assert (row["school_days"], row["used"], row["device_days"], row["device_days_used"], row["device_days_no_data"],
            row["active_minutes_median"], row["too_new"], row["judged"]) == (4, 1, 4, 3, 1, 11.2, 1, 0)


def test_docs_list_exactly_the_columns_the_code_writes() -> None:
    text = (ROOT / "docs" / "report.md").read_text(encoding="utf-8")
    section = text.split("## CSV columns", 1)[1].split("\n## ", 1)[0]
    documented = [line.split("|")[1].strip().strip("`") for line in section.splitlines()
                  if line.startswith("| `")]
    assert documented == list(CSV_COLUMNS)

