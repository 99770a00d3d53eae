"""A small known fleet and its daily totals across the Toussaint break, for the report's tests.

Period: Monday 12 October to Friday 6 November 2026, zone A. The break runs from Saturday 17
October to Sunday 1 November; 11 November is after the period. School days, by hand:
- 0210001A, four-day week: 12, 13, 15, 16 Oct; 2, 3, 5, 6 Nov (8)
- 0210002B, Wednesday mornings too: 12-16 Oct; 2-6 Nov (10); its own Wednesday hours
- 0210003C, four-day week, closed on Friday 6 November (a strike): 7; no device at all
- 0210004D, four-day week: 8; its one laptop stops reporting after 16 October (a silent school)

Each device-day below is a row of `daily_usage` as the rollup leaves it: (total, inside
teaching hours) for active time, lamp-on time and 3G bytes. The figures the report must show
are worked out by hand in tests/integration/test_report.py.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from zoneinfo import ZoneInfo

import asyncpg

PARIS = ZoneInfo("Europe/Paris")
START, END = date(2026, 10, 12), date(2026, 11, 6)
A, B, C, D = "0210001A", "0210002B", "0210003C", "0210004D"
SEPT_1 = datetime(2026, 9, 1, 8, 0, tzinfo=PARIS)

A_DAYS = [date(2026, 10, d) for d in (12, 13, 15, 16)] + [date(2026, 11, d) for d in (2, 3, 5, 6)]
B_DAYS = [date(2026, 10, d) for d in (12, 13, 14, 15, 16)] + [date(2026, 11, d) for d in (2, 3, 4, 5, 6)]


def on(day: int, month: int = 10) -> date:
    return date(2026, month, day)


# name: (serial, kind, school, class code, status, created, enrolled)
DEVICES = {
    "A1": ("A-CB-01", "chromebook", A, "CP-A", "active", SEPT_1, SEPT_1),
    "A2": ("A-CB-02", "chromebook", A, "CP-A", "active", SEPT_1, SEPT_1),
    "A3": ("A-CB-03", "chromebook", A, "CP-A", "active", SEPT_1, datetime(2026, 11, 3, 9, 0, tzinfo=PARIS)),
    "A4": ("A-LP-04", "laptop", A, None, "active", SEPT_1, None),
    "A5": ("A-LP-05", "laptop", A, None, "active", SEPT_1, SEPT_1),
    "A6": ("A-LP-06", "laptop", A, "CE1", "active", SEPT_1, SEPT_1),
    "A7": ("A-HD-07", "disk", A, None, "active", SEPT_1, SEPT_1),
    "A8": ("A-LP-08", "laptop", A, None, "retired", SEPT_1, SEPT_1),
    "A9": ("A-PC-09", "desktop", A, "CE1", "active", SEPT_1, datetime(2026, 10, 20, 10, 0, tzinfo=PARIS)),
    "A10": ("A-CB-10", "chromebook", A, None, "active", SEPT_1, datetime(2026, 11, 10, 10, 0, tzinfo=PARIS)),
    "A11": ("A-LP-11", "laptop", A, None, "active", datetime(2026, 11, 20, 10, 0, tzinfo=PARIS), None),
    "A12": ("A-VP-12", "projector", A, "CE1", "active", SEPT_1, SEPT_1),
    "B1": ("B-CB-01", "chromebook", B, None, "active", SEPT_1, SEPT_1),
    "B2": ("B-CB-02", "chromebook", B, None, "active", SEPT_1, SEPT_1),
    "D1": ("D-LP-01", "laptop", D, None, "active", SEPT_1, SEPT_1),
}

Pair = tuple[float, float]


def rows() -> list[tuple[str, date, dict[str, Pair]]]:
    """(device, day, {figure: (total, in hours)}), figure one of active, projector, modem."""
    out: list[tuple[str, date, dict[str, Pair]]] = []

    def add(name: str, day: date, **figures: Pair) -> None:
        out.append((name, day, figures))

    for d in (on(12), on(13), on(15), on(16), on(2, 11), on(3, 11)):
        add("A1", d, active=(1500, 1200))
    for d in (on(5, 11), on(6, 11)):
        add("A1", d, active=(100, 100))
    add("A1", on(14), active=(2000, 2000))  # a Wednesday: no class at a four-day school
    add("A1", on(20), active=(5000, 5000))  # the holidays
    for d in (on(12), on(13), on(2, 11)):
        add("A2", d, active=(900, 900))
    add("A2", on(15), active=(420, 420))
    add("A2", on(6, 11), active=(30, 30))
    add("A3", on(3, 11), active=(700, 700))
    for d in A_DAYS:
        add("A5", d, active=(50, 50))
    add("A5", on(12), active=(50, 50), modem=(1_000_000, 500_000))  # replaces its plain 12 Oct row
    add("A5", on(13), active=(50, 50), modem=(100_000, 70_000))
    add("A5", on(24), modem=(2_000_000, 0))  # a Saturday of the break
    for d in (on(12), on(13), on(15), on(16), on(2, 11)):
        add("A6", d, active=(800, 800))
    add("A6", on(12), active=(800, 800), projector=(3600, 3000))
    add("A6", on(13), active=(800, 800), projector=(1800, 1800))
    for d in (on(12), on(15), on(2, 11), on(3, 11)):
        add("A12", d, projector=(1500, 1200))
    add("B1", on(12), active=(700, 700))
    add("B1", on(13), active=(700, 700))
    add("B1", on(14), active=(5000, 1000))  # Wednesday: the morning counts, the afternoon does not
    add("B1", on(4, 11), active=(1000, 1000))
    for d in B_DAYS:
        add("B2", d, active=(660, 660))
    for d in (on(12), on(13), on(15), on(16)):
        add("D1", d, active=(700, 700))
    # The last row given for a (device, day) wins, as a recomputed rollup row replaces the old one.
    return list({(name, day): (name, day, figures) for name, day, figures in out}.values())


async def seed(conn: asyncpg.Connection) -> dict[str, uuid.UUID]:
    """Schools, classes, devices and their daily totals; returns each device's id by name."""
    for uai, timetable in ((A, "four_day"), (B, "wednesday_morning"), (C, "four_day"), (D, "four_day")):
        await conn.execute("INSERT INTO schools (uai, name, zone, kind, timetable) VALUES ($1, $2, 'A', 'elementary', $3)",
                           uai, f"École {uai[-1]}", timetable)
    await conn.execute("INSERT INTO school_hours (school, weekday, periods) VALUES ($1, 2, '08:30-12:00')", B)
    await conn.execute("INSERT INTO calendar_overrides (school, day, kind, label) VALUES ($1, '2026-11-06', 'closed', "
                       "'grève')", C)
    classes = {}
    for code in ("CP-A", "CE1"):
        classes[code] = await conn.fetchval("INSERT INTO classes (school, code) VALUES ($1, $2) RETURNING id", A, code)
    ids = {}
    for name, (serial, kind, school, klass, status, created, enrolled) in DEVICES.items():
        ids[name] = await conn.fetchval(
            "INSERT INTO devices (serial, kind, school, class_id, status, created_at, enrolled_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            serial, kind, school, classes.get(klass) if klass else None, status, created, enrolled)
    records = []
    for name, day, f in rows():
        active, projector, modem = f.get("active", (0, 0)), f.get("projector", (0, 0)), f.get("modem", (0, 0))
        records.append((ids[name], day, float(active[0]), float(active[1]), float(projector[0]), float(projector[1]),
                        int(modem[0]), int(modem[1]), 1))
    await conn.copy_records_to_table("daily_usage", records=records, columns=[
        "device_id", "day", "active_s", "active_in_hours_s", "projector_on_s", "projector_on_in_hours_s",
        "modem_bytes", "modem_in_hours_bytes", "records"])
    return ids
