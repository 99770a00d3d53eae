"""The demo's city (collector/tice_collector/demo.py): its schools and faults, use that follows the school day
and the seed, and the command's refusals. The city running end to end is
tests/integration/test_stack_e2e.py."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers import free_port
from tice_agent.probes._identity import peripheral_id
from tice_collector import cli, demo
from tice_collector.calendar import SCHOOL_TZ
from tice_wire import Health, Modem, Projector, Usage


def city() -> tuple[list[demo.School], list[demo.Device]]:
    schools = demo.city()
    return schools, demo.devices(schools, Path("/nonexistent"))


def test_a_dozen_schools_of_zone_a_nursery_and_elementary_one_on_wednesday_mornings():
    schools, devices = city()
    assert len(schools) == 12 and len({s.uai for s in schools}) == 12
    assert sorted(s.kind for s in schools).count("nursery") == 4
    assert [s.timetable for s in schools].count("wednesday_morning") == 1
    for s in schools:
        mine = [d for d in devices if d.school == s]
        assert [d.kind for d in mine].count("desktop") == 1  # the director's PC
        for code in s.classes:
            kinds = [d.kind for d in mine if d.class_code == code]
            assert kinds == (["laptop"] if s.kind == "nursery" else ["chromebook"] * 5), (s.uai, code)


def test_the_faults_an_operator_must_find_are_in_the_city():
    schools, devices = city()
    by_uai = {s.uai: s for s in schools}
    cupboard = [d for d in devices if d.habit == "cupboard"]
    assert [(d.school.uai, d.class_code) for d in cupboard] == [demo.CUPBOARD[:2]] * demo.CUPBOARD[2]
    assert by_uai[demo.BROKEN_KEY_SCHOOL].kind == by_uai[demo.WORN_LAMP_SCHOOL].kind == "nursery"
    assert demo.FORGOTTEN_DISK_SCHOOL in by_uai and demo.OFFLINE_SCHOOL in by_uai
    assert demo.FAILING_DISK_SCHOOL in by_uai and demo.UNKNOWN_BRIDGE_SCHOOL in by_uai
    assert len({demo.CUPBOARD[0], demo.OFFLINE_SCHOOL, demo.BROKEN_KEY_SCHOOL, demo.FORGOTTEN_DISK_SCHOOL,
                demo.FAILING_DISK_SCHOOL}) == 5


def records(dev: demo.Device, day: date, seed: int, until: datetime | None = None) -> list:
    end = until or datetime(day.year, day.month, day.day, 23, 59, tzinfo=SCHOOL_TZ)
    return demo.day_records(dev, day, random.Random(f"{seed}:{dev.serial}:{day}"), end)


def test_use_follows_the_school_day_and_the_seed():
    _, devices = city()
    chromebooks = [d for d in devices if d.kind == "chromebook" and d.habit == "class"]
    monday = date(2026, 11, 16)
    for dev in chromebooks:
        got = records(dev, monday, 1)
        assert got == records(dev, monday, 1)  # the same seed, the same day
        assert isinstance(got[0], Health)
        for r in got[1:]:
            assert isinstance(r, Usage) and r.active_s + r.idle_s == r.duration_s == 1800.0
            local = r.at.astimezone(SCHOOL_TZ)
            assert local.date() == monday and 9 <= local.hour < 17, local
    used = [sum(r.active_s for r in records(d, monday, seed) if isinstance(r, Usage)) > 0
            for seed in (1, 2) for d in chromebooks]
    assert used[:len(chromebooks)] != used[len(chromebooks):]  # another seed, other days used
    assert 0.75 < sum(used) / len(used) < 0.99


def test_cupboard_devices_are_on_but_never_used_and_wednesday_has_no_afternoon():
    _, devices = city()
    [cupboard, *_] = [d for d in devices if d.habit == "cupboard"]
    got = records(cupboard, date(2026, 11, 16), 1)
    assert got and all(r.active_s == 0 for r in got if isinstance(r, Usage))
    wednesday_school = next(d for d in devices if d.school.timetable == "wednesday_morning" and d.habit == "class")
    for r in records(wednesday_school, date(2026, 11, 18), 1):
        assert r.at.astimezone(SCHOOL_TZ).hour < 12


def test_nothing_on_holidays_nor_on_days_without_class():
    schools, _ = city()
    four_day = next(s for s in schools if s.timetable == "four_day")
    days = demo.school_days(four_day, date(2026, 10, 12), date(2026, 11, 13))
    assert not [d for d in days if date(2026, 10, 17) <= d <= date(2026, 11, 1)]  # Toussaint, zone A
    assert date(2026, 11, 11) not in days  # Armistice
    assert {d.weekday() for d in days} == {0, 1, 3, 4}


def test_a_day_is_reported_only_up_to_now():
    _, devices = city()
    dev = next(d for d in devices if d.habit == "director")
    day = date(2026, 11, 16)
    morning = records(dev, day, 1, datetime(2026, 11, 16, 9, 0, tzinfo=SCHOOL_TZ))
    assert [type(r) for r in morning] == [Health, Usage]  # 08:00-08:30 only
    assert records(dev, day, 1, datetime(2026, 11, 16, 7, 0, tzinfo=SCHOOL_TZ)) == []


def test_the_command_refuses_a_history_too_short_to_judge(capsys):
    assert cli.main(["demo", "--backfill-days", "3"]) == 2
    assert "--backfill-days: expected 7 to 120 days" in capsys.readouterr().err
    assert cli.main(["demo", "--tick", "0"]) == 2
    assert "--tick: expected 5 to 3600 seconds" in capsys.readouterr().err


def test_a_database_it_cannot_reach_is_one_line_and_exit_code_1(tmp_path, monkeypatch, capsys):
    # The same start-up as serve's (cli/_runner.py): one line naming the database, no traceback.
    # In the main thread (signal handlers are set there), not through run_collector's worker thread.
    monkeypatch.setenv("TICE_DATABASE_URL", f"postgresql://nobody@/x?host={tmp_path}")
    monkeypatch.setenv("TICE_DB_TIMEOUT_S", "3")
    assert cli.main(["demo", "--listen", f"127.0.0.1:{free_port()}"]) == 1
    err = capsys.readouterr().err
    assert "cannot start: database: " in err and "Traceback" not in err, err


SALT = "5a" * 32


def a_city(root: Path, seed: int) -> demo.Demo:
    return demo.Demo("http://127.0.0.1:9", None, root, seed=seed, backfill_days=28)  # type: ignore[arg-type]


def test_the_backup_disks_follow_the_seed(tmp_path):
    def figures(seed: int) -> dict:
        city = a_city(tmp_path, seed)
        return {s.uai: city.backup_disk(s.uai) for s in city.schools}

    one = figures(1)
    assert one == figures(1) and one != figures(2)
    assert [uai for uai, d in one.items() if not d.passed] == [demo.FAILING_DISK_SCHOOL]
    assert [uai for uai, d in one.items() if d.bridge == "unknown"] == [demo.UNKNOWN_BRIDGE_SCHOOL]
    assert all(0 < d.free_bytes < d.capacity_bytes for d in one.values())


@pytest.mark.slow  # runs the smartctl stand-in as a command for each director's PC
async def test_every_directors_pc_reports_its_disk_with_smart_but_the_forgotten_one(tmp_path):
    city = a_city(tmp_path, 3)
    readings = {}
    for dev in city.devices:
        if dev.kind == "desktop":
            dev.state_dir.mkdir(parents=True)
            await city._peripherals(dev, SALT)  # the real DiskProbe on the director's simulated PC
            [probe] = dev.probes
            readings[dev.school.uai] = await probe.collect()
    assert set(readings) == {s.uai for s in city.schools}
    [forgotten] = readings.pop(demo.FORGOTTEN_DISK_SCHOOL)
    assert not forgotten.present and forgotten.total_bytes is None
    assert abs(forgotten.last_connected_at - (datetime.now(UTC) - timedelta(days=40))) < timedelta(hours=1)
    assert forgotten.disk_id == peripheral_id(SALT, "disk", city.backup_disk(demo.FORGOTTEN_DISK_SCHOOL).serial)
    for uai, [disk] in readings.items():
        want = city.backup_disk(uai)
        assert disk.present and disk.disk_id == peripheral_id(SALT, "disk", want.serial), uai
        assert (disk.total_bytes, disk.free_bytes, disk.smart_ok, disk.power_on_hours, disk.temperature_c) == (
            want.capacity_bytes, want.free_bytes, uai != demo.FAILING_DISK_SCHOOL, want.power_on_hours,
            float(want.temperature_c)), uai


async def test_the_keys_and_projectors_history_varies_the_broken_key_stopped_and_lamps_age(tmp_path):
    """The nursery laptops' past lessons with their 3G key and projector: the use varies from day
    to day, the broken key carried data until BROKEN_KEY_SCHOOL_DAYS school days ago and none
    since (so it is not used regularly), and each lamp's hours grow to the reading's."""
    city = a_city(tmp_path, 5)
    now = datetime.now(SCHOOL_TZ)
    try:
        for dev in city.devices:
            if dev.kind != "laptop":
                continue
            dev.state_dir.mkdir(parents=True)
            await city._peripherals(dev, SALT)  # the real HiLink and PJLink probes on its simulators
            days = demo.school_days(dev.school, now.date() - timedelta(days=60), now.date())
            history = await city._peripheral_history(dev, days, now)
            keys = [r for r in history if isinstance(r, Modem)]
            lamps = [r for r in history if isinstance(r, Projector)]
            recent = {d for d in days[-demo.BROKEN_KEY_SCHOOL_DAYS:]}
            carried = {r.at.astimezone(SCHOOL_TZ).date() for r in keys if r.rx_bytes}
            if (dev.school.uai, dev.class_code) == (demo.BROKEN_KEY_SCHOOL, "PS"):
                assert carried and not carried & recent, (sorted(carried), sorted(recent))
                assert all(r.connected_s == 0 for r in keys if r.at.astimezone(SCHOOL_TZ).date() in recent)
            else:
                assert len(carried & recent) > demo.BROKEN_KEY_SCHOOL_DAYS // 2, dev.school.uai
            assert len({r.duration_s for r in keys}) > 3, sorted({r.duration_s for r in keys})
            per_day = {}
            for r in keys:
                day = r.at.astimezone(SCHOOL_TZ).date()
                per_day[day] = per_day.get(day, 0) + r.duration_s
            assert len(set(per_day.values())) > 3, per_day
            connected = {r.at: r.connected_s for r in keys}
            lit = {r.at: r.duration_s for r in lamps}
            assert any(connected[at] != lit[at] for at in connected), "the key connected exactly while the lamp was lit"
            hours = [r.lamp_hours for r in sorted(lamps, key=lambda r: r.at)]
            assert hours == sorted(hours) and hours[0] < hours[-1], hours
            assert all(r.duration_s <= demo.LESSON.total_seconds() for r in history)
    finally:
        await city.close()
