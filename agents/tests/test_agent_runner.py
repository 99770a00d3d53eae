"""The runner: timeouts and failures become data, never stop the other probes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tice_agent import state as st
from tice_agent.config import AgentConfig, ConfigError
from tice_agent.runner import Runner, Slot, build_slots, describe_error
from tice_agent.spool import Spool
from tice_wire import ProbeStatus, Record, Usage

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Good:
    name = "good"

    def __init__(self, active: float = 30.0) -> None:
        self.active = active

    async def collect(self) -> list[Record]:
        return [Usage(seq=0, at=AT, duration_s=60, active_s=self.active)]


class Broken:
    name = "broken"

    async def collect(self) -> list[Record]:
        raise OSError("cannot open /home/alice/.config/thing: " + "x" * 500)


class Slow:
    name = "slow"

    async def collect(self) -> list[Record]:
        await asyncio.sleep(30)
        return []


class Wrong:
    name = "wrong"

    async def collect(self) -> Any:
        return {"not": "a list"}


def statuses(records: list[Record]) -> list[ProbeStatus]:
    return [r for r in records if isinstance(r, ProbeStatus)]


async def test_failure_timeout_and_bad_output_are_reported_and_do_not_stop_others() -> None:
    slots = [Slot("good", Good(), 60, 5), Slot("broken", Broken(), 60, 5), Slot("slow", Slow(), 60, 0.05),
             Slot("wrong", Wrong(), 60, 5)]
    records = await Runner(slots).collect_all()
    assert any(isinstance(r, Usage) for r in records)
    by = {s.probe: s for s in statuses(records)}
    assert by["good"].ok and by["good"].error is None
    assert not by["broken"].ok and by["broken"].error is not None
    assert by["broken"].error.startswith("OSError: cannot open /home/*/")  # no user name leaks
    assert len(by["broken"].error) <= 200
    assert not by["slow"].ok and by["slow"].error == "TimeoutError: no result within 0.05 s"
    assert not by["wrong"].ok and by["wrong"].error is not None and by["wrong"].error.startswith("TypeError")
    assert [s.failures for s in slots] == [0, 1, 1, 1]


async def test_status_policy_change_failures_and_heartbeat() -> None:
    class Flaky:
        name = "flaky"
        fail = False

        async def collect(self) -> list[Record]:
            if self.fail:
                raise RuntimeError("boom")
            return []

    probe = Flaky()
    slot = Slot("flaky", probe, 60, 5)
    runner = Runner([slot], status_every=5)
    seen = []
    plan = [False, False, False, True, True, False, False, False, False, False, False]
    for fail in plan:
        probe.fail = fail
        recs = await runner.run_probe(slot)
        seen.append([(s.ok) for s in statuses(recs)])
    # run 1 first (ok), runs 4-5 failures (always), run 6 recovery (ok), run 10 heartbeat (every 5th)
    assert seen == [[True], [], [], [False], [False], [True], [], [], [], [True], []]


async def test_status_store_records_per_probe_results(tmp_path: Path) -> None:
    store = st.StatusStore(tmp_path)
    runner = Runner([Slot("good", Good(), 60, 5), Slot("broken", Broken(), 60, 5)], store=store)
    await runner.collect_all()
    store.save()
    loaded = st.load_status(tmp_path)
    assert loaded.probes["good"].ok and loaded.probes["good"].records == 1
    assert not loaded.probes["broken"].ok and loaded.probes["broken"].failures == 1
    assert loaded.probes["good"].note is None


async def test_a_probe_note_reaches_the_status_file(tmp_path: Path) -> None:
    noted = Good()
    noted.note = "idle source: logind, cannot classify"  # type: ignore[attr-defined]
    store = st.StatusStore(tmp_path)
    await Runner([Slot("usage", noted, 60, 5)], store=store).collect_all()
    store.save()
    assert st.load_status(tmp_path).probes["usage"].note == "idle source: logind, cannot classify"


class Stop(Exception):
    pass


async def test_loop_spools_records_and_keeps_going_after_failures(tmp_path: Path) -> None:
    sleeps: list[float] = []

    async def fake_sleep(d: float) -> None:
        sleeps.append(d)
        if len(sleeps) > 8:
            raise Stop
        await asyncio.sleep(0)

    spool = Spool(tmp_path / "s.sqlite")
    runner = Runner([Slot("good", Good(), 60, 5), Slot("broken", Broken(), 60, 5)], spool=spool, sleep=fake_sleep)
    with pytest.raises(ExceptionGroup) as info:
        await runner.run_forever()
    assert info.group_contains(Stop)
    assert spool.depth() >= 4  # usage records plus failure statuses from both loops
    waits = sleeps[2:]  # the first two are the start offsets
    assert all(54 <= d <= 66 for d in waits)  # interval ±10 %


def test_build_slots_passes_options_and_names_bad_ones() -> None:
    from tice_agent import config

    registry = {"usage": Good}
    cfg = config.parse({"probes": {"usage": {"active": 12.0}}})
    slots = build_slots(cfg, registry)
    assert [s.name for s in slots] == ["usage"] and slots[0].probe.active == 12.0  # type: ignore[attr-defined]
    bad = config.parse({"probes": {"usage": {"colour": "red"}}})
    with pytest.raises(ConfigError, match=r"^probes\.usage: .*colour"):
        build_slots(bad, registry)
    with pytest.raises(ConfigError, match=r"probes\.nosuch: unknown probe"):
        build_slots(config.parse({"probes": {"nosuch": {}}}), registry)
    assert build_slots(AgentConfig(), {}) == []  # default probes missing from a build: skipped


def test_describe_error_masks_home_dirs_and_bounds_length() -> None:
    assert describe_error(PermissionError("C:\\Users\\bob\\x")) == "PermissionError: C:\\Users\\*\\x"
    assert describe_error(ValueError()) == "ValueError"
    assert len(describe_error(ValueError("y" * 1000))) == 200


def test_describe_error_masks_sim_and_hardware_identifiers() -> None:
    """Whatever a probe's exception says, the error text that is sent holds no IMSI, ICCID,
    phone number, IMEI or MAC address."""
    e = ValueError("got '<response><Imsi>208011234567890</Imsi><Iccid>893301123456789' from +33 6 12 34 56 78, "
                   "Msisdn=0612345678 mac 0c:5b:8f:27:9a:64")
    assert describe_error(e) == ("ValueError: got '<response><Imsi>***</Imsi><Iccid>***' from [11 digits], "
                                 "Msisdn=*** mac [MAC]")
    assert describe_error(TimeoutError(), 30.0) == "TimeoutError: no result within 30 s"


async def test_a_cancellation_as_the_probe_finishes_is_not_lost():
    """SIGTERM cancels the probe loops; a cancel landing as collect() returns must still stop
    the run (asyncio.wait_for on 3.11 could drop it and keep the daemon alive)."""
    import asyncio

    from tice_agent.runner import Runner, Slot

    class Quick:
        name = "quick"

        async def collect(self):
            await asyncio.sleep(0)
            return []

    runner = Runner([Slot("quick", Quick(), 1.0, 5.0)])
    for steps in range(8):  # cancel at every point of the run, including as collect() returns
        task = asyncio.create_task(runner.run_probe(runner.slots[0]))
        for _ in range(steps):
            await asyncio.sleep(0)
        if task.done():
            break
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            continue
        raise AssertionError("run_probe swallowed a cancellation")


async def test_stopping_the_runner_closes_the_probes_background_work():
    """Samplers are stopped by the runner while the loop runs normally, not left to asyncio.run's
    final cancellation (which on 3.11 could hang on a command being started)."""
    import asyncio

    closed = []

    class Sampling(Good):
        async def aclose(self) -> None:
            await asyncio.sleep(0)
            closed.append(self.name)

    runner = Runner([Slot("usage", Sampling(), 60, 5), Slot("health", Good(), 60, 5)], sleep=lambda s: asyncio.sleep(0))
    task = asyncio.create_task(runner.run_forever())
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == ["good"]


@pytest.mark.parametrize(("probe", "section", "message"), [
    ("pjlink", {"host": "10.0.0.5"},
     "probes.pjlink: unknown option 'host' (known: enabled, interval_s, password, projectors, send_name, timeout_s)"),
    ("hilink", {"url": "http://192.168.8.1", "retries": 3},
     "probes.hilink: unknown option 'retries' (known: enabled, interval_s, password, timeout_s, url, username)"),
    ("usage", {"colour": "red"},
     "probes.usage: unknown option 'colour' (known: enabled, interval_s, sample_every_s, sources, timeout_s)"),
    ("hilink", {"timeout_s": float("inf")}, "probes.hilink.timeout_s: expected a number > 0 and <= 3600, got inf"),
    ("pjlink", {"projectors": [{"host": "10.0.0.5", "timeout_s": float("-inf")}]},
     "probes.pjlink.projectors: expected finite numbers, got -inf"),
    ("display", {"sample_every_s": float("nan")}, "probes.display.sample_every_s: expected a finite number, got nan"),
    ("network", {"connect_timeout_s": float("inf")},
     "probes.network.connect_timeout_s: expected a finite number, got inf"),
])
def test_a_probe_option_it_does_not_take_or_not_finite_is_named(probe, section, message) -> None:
    """The real probes: an unknown option names the ones the probe takes (never its test hooks:
    clocks, command runners), instead of Python's "unexpected keyword argument"."""
    from tice_agent import config
    from tice_agent.probes import load

    with pytest.raises(ConfigError) as info:
        build_slots(config.parse({"probes": {probe: section}}), {probe: load({probe})[probe]}, {probe: {"id_salt": ""}} if probe in ("pjlink", "hilink") else {})
    assert str(info.value) == message
