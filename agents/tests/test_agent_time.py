"""Time that jumps, with injected clocks: a laptop suspended overnight, an interval never
collected, a PC whose dead CMOS battery starts it in 2009 until NTP steps the clock
(agents/tests/agent_testing.py `Machine`: a boot clock and a wall clock that follows it until stepped)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from agent_testing import Machine
from tice_agent.probes._run import Sampler
from tice_agent.probes.display import DisplayProbe
from tice_agent.probes.usage import IdleSample, UsageProbe
from tice_agent.spool import Spool
from tice_wire import AnyRecord, Display, Health, Usage

MiB = 1024 * 1024


class Active:
    """An idle source that always sees input in the last second."""

    name = "x11"

    async def idle_state(self) -> IdleSample:
        return IdleSample(idle_s=1.0)


async def looks(probe: UsageProbe | DisplayProbe, m: Machine, n: int, every: float = 5.0) -> None:
    for _ in range(n):
        m.run(every)
        await probe.sampler.sample()


def at(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


# ---------------------------------------------------------------- suspend and the cap

async def test_a_night_in_suspend_is_neither_activity_nor_one_long_interval() -> None:
    m = Machine(at("2026-03-02T15:59:00"))
    probe = UsageProbe(candidates=[Active], clock=m.boot_clock, now=m.now, interval_s=60)
    await looks(probe, m, 12)         # 15:59:00 to 16:00:00, someone typing
    m.suspend(16.5 * 3600)            # the lid is closed at 16:00 and opened at 08:30
    await looks(probe, m, 6)          # 08:30:05 to 08:30:30 (the first look after waking is at 08:30:05)
    m.run(5.0)
    first, second = await probe.collect()
    await probe.sampler.aclose()
    assert isinstance(first, Usage) and isinstance(second, Usage)
    assert (first.at, first.duration_s, first.active_s) == (at("2026-03-02T15:59:00"), 60, 60)
    assert (second.at, second.duration_s, second.active_s) == (at("2026-03-03T08:30:05"), 30, 30)


async def test_a_suspend_on_a_clock_that_counts_it_is_cut_the_same_way_for_display() -> None:
    # Windows before Python 3.13: time.monotonic() counts suspend, like the boot clock here.
    m = Machine(at("2026-03-02T15:59:00"))
    probe = DisplayProbe(sample_every_s=15, drm_root="/nonexistent", run=_no_xrandr, clock=m.boot_clock, now=m.now,
                         platform="linux", interval_s=60)
    await looks(probe, m, 4, every=15)
    m.suspend(16.5 * 3600)
    await looks(probe, m, 2, every=15)
    m.run(15)
    records = await probe.collect()
    await probe.sampler.aclose()
    assert [(r.at, r.duration_s) for r in records if isinstance(r, Display)] == [
        (at("2026-03-02T15:59:00"), 60), (at("2026-03-03T08:30:15"), 30)]


async def _no_xrandr(argv: list[str], timeout: float) -> str:
    from tice_agent.probes._run import CommandError

    raise CommandError("xrandr: not installed")


async def test_an_interval_never_collected_is_capped_at_its_length_plus_the_tolerance() -> None:
    m = Machine(at("2026-03-02T09:00:00"))
    probe = UsageProbe(candidates=[Active], clock=m.boot_clock, now=m.now, interval_s=60)
    await looks(probe, m, 120)  # ten minutes of sampling, no collect (a runner held up)
    m.run(5.0)
    records = [r for r in await probe.collect() if isinstance(r, Usage)]
    await probe.sampler.aclose()
    assert all(r.duration_s <= 60 + 30 for r in records)
    assert sum(r.duration_s for r in records) == 605
    assert all(r.active_s == r.duration_s for r in records)  # the parts never exceed the whole
    starts = [r.at for r in records]
    assert starts[0] == at("2026-03-02T09:00:00")
    assert all(b - a == timedelta(seconds=r.duration_s) for a, b, r in zip(starts, starts[1:], records, strict=False))


async def test_sampler_segments_add_up_and_gaps_count_nowhere() -> None:
    t = [0.0]
    sampler = Sampler(lambda slot: _const("a"), every_s=5, clock=lambda: t[0], now=lambda: at("2026-03-02T09:00:00"),
                      interval_s=60)
    for step in (5, 5, 400, 5, 5):  # a stop of 400 s: a gap
        t[0] += step
        await sampler.sample()
    segments = await sampler.drain()
    assert [(s.elapsed_s, s.totals) for s in segments] == [(10, {"a": 10}), (10, {"a": 10})]


async def _const(value: str) -> str:
    return value


# ---------------------------------------------------------------- a clock step in an interval

async def test_an_interval_during_which_ntp_steps_the_clock_is_dated_from_the_boot_clock() -> None:
    m = Machine(at("2009-01-01T08:00:00"))  # a dead CMOS battery
    probe = UsageProbe(candidates=[Active], clock=m.boot_clock, now=m.now, interval_s=60)
    await looks(probe, m, 6)
    m.step_wall(at("2026-11-30T08:00:30"))  # NTP puts it right half-way through the interval
    await looks(probe, m, 5)
    m.run(5.0)
    [rec] = await probe.collect()
    await probe.sampler.aclose()
    assert isinstance(rec, Usage)
    assert (rec.at, rec.duration_s) == (at("2026-11-30T08:00:00"), 60)


# ---------------------------------------------------------------- the spool re-dates

def spool(tmp_path: Path, m: Machine, boot_id: str = "boot-1") -> Spool:
    return Spool(tmp_path / "s.sqlite", max_bytes=50 * MiB, max_age_s=90 * 86400, clock=m.wall,
                 boot_clock=m.boot_clock, boot_id=boot_id)


def five_minutes_of_use(sp: Spool, m: Machine) -> list[datetime]:
    """Five one-minute usage records, each spooled as its minute ends; their `at`s."""
    starts = []
    for _ in range(5):
        starts.append(m.now())
        m.run(60)
        sp.add([Usage(seq=0, at=starts[-1], duration_s=60, active_s=45, idle_s=15, source="x11")])
    return starts


def test_a_pc_booted_in_2009_has_its_records_redated_when_ntp_steps_the_clock(tmp_path: Path) -> None:
    m = Machine(at("2009-01-01T08:00:00"))
    sp = spool(tmp_path, m)
    five_minutes_of_use(sp, m)
    sp.add([Health(seq=0, at=m.now(), uptime_s=1300, boot_at=at("2009-01-01T07:43:20"))])
    m.step_wall(at("2026-11-30T08:05:00"))  # before the first send
    assert sp.expire() == 0  # not "17 years old": aged by the boot clock
    batch = sp.begin_batch(100, MiB)
    records = [msgspec.json.decode(b, type=AnyRecord) for b in batch.bodies]
    assert [r.at for r in records] == [at("2026-11-30T08:00:00") + timedelta(minutes=i) for i in range(5)] + [
        at("2026-11-30T08:05:00")]
    health = records[-1]
    assert isinstance(health, Health) and health.boot_at == at("2026-11-30T07:43:20")
    assert [r.seq for r in records] == batch.seqs == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(r, Usage) and (r.duration_s, r.active_s) == (60, 45) for r in records[:5])
    # The new times are kept: after a restart they are sent as they were.
    sp.release(batch)
    sp.close()
    sp = spool(tmp_path, m)
    assert sp.begin_batch(100, MiB).bodies == batch.bodies


def test_a_batch_that_may_be_stored_keeps_the_times_it_was_sent_with(tmp_path: Path) -> None:
    m = Machine(at("2009-01-01T08:00:00"))
    sp = spool(tmp_path, m)
    five_minutes_of_use(sp, m)
    first = sp.begin_batch(100, MiB)  # sent with 2009 times; the answer never came (a timeout)
    sp.release(first, maybe_stored=True)
    m.step_wall(at("2026-11-30T08:05:00"))
    again = sp.begin_batch(100, MiB)
    assert again.bodies == first.bodies  # the same delivery keys: stored once by the collector
    sp.release(again, maybe_stored=False)  # this time refused before anything was stored (say a 429)
    assert again.bodies == sp.begin_batch(100, MiB).bodies  # the earlier send may still have been stored


def test_a_send_that_never_reached_the_collector_lets_records_be_redated(tmp_path: Path) -> None:
    m = Machine(at("2009-01-01T08:00:00"))
    sp = spool(tmp_path, m)
    five_minutes_of_use(sp, m)
    first = sp.begin_batch(100, MiB)  # no network yet: connection refused
    sp.release(first, maybe_stored=False)
    m.step_wall(at("2026-11-30T08:05:00"))  # the network comes up, NTP steps the clock
    again = sp.begin_batch(100, MiB)
    assert [msgspec.json.decode(b, type=AnyRecord).at for b in again.bodies] == [
        at("2026-11-30T08:00:00") + timedelta(minutes=i) for i in range(5)]


def test_records_of_an_earlier_boot_are_not_redated(tmp_path: Path) -> None:
    m = Machine(at("2009-01-01T08:00:00"))
    sp = spool(tmp_path, m, boot_id="boot-1")
    five_minutes_of_use(sp, m)
    sp.close()
    m.boot = 30.0  # rebooted (still 2009 after the reboot), then NTP steps the clock
    m.step_wall(at("2026-11-30T08:05:00"))
    sp = spool(tmp_path, m, boot_id="boot-2")
    # Their boot clock readings mean nothing in this boot: they cannot be re-dated, they are
    # as old as they say, and the age bound drops them, counted.
    assert sp.dropped == 5 and sp.depth() == 0


@pytest.mark.parametrize("step_s", [1.0, -1.5])
def test_a_step_below_the_tolerance_changes_nothing(tmp_path: Path, step_s: float) -> None:
    m = Machine(at("2026-11-30T08:00:00"))
    sp = spool(tmp_path, m)
    starts = five_minutes_of_use(sp, m)
    m.offset += step_s
    assert [msgspec.json.decode(b, type=AnyRecord).at for b in sp.begin_batch(100, MiB).bodies] == starts
