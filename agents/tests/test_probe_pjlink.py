"""The pjlink probe: parsers on captured replies, the client replaying captured sessions byte for
byte (the specification's authentication example included), then the real probe against the
PJLink simulator over loopback: standby, refusals, wrong passwords, power cycles and faults."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from agent_testing import Clock, roundtrip, wait_until
from tice_agent.probes._identity import peripheral_id
from tice_agent.probes._run import DeviceErrors, ParseError
from tice_agent.probes.pjlink import (
    MIN_CONTACT_S,
    AuthError,
    PjlinkProbe,
    auth_digest,
    parse_class,
    parse_errors,
    parse_greeting,
    parse_input,
    parse_lamps,
    parse_power,
    parse_reply,
    query,
    readings,
)
from tice_agent.simulators.pjlink import PjlinkSimulator, State
from tice_wire import Projector

FIX = Path(__file__).resolve().parent / "fixtures" / "pjlink"
SALT = "c3" * 32
SCHOOL = "0210001A"
NOW = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)


# ---------------------------------------------------------------- parsers

def test_greetings():
    assert parse_greeting("PJLINK 0\r") is None
    assert parse_greeting("PJLINK 1 498e4a67\r") == "498e4a67"
    with pytest.raises(AuthError):
        parse_greeting("PJLINK ERRA")
    for bad in ("SSH-2.0-OpenSSH_9.2p1", "PJLINK 1", "PJLINK 2 12345678", "", "PJLINK 1 498e4a67 x"):
        with pytest.raises(ParseError, match="greeting: expected 'PJLINK 0' or 'PJLINK 1 <8 characters>'"):
            parse_greeting(bad)


def test_the_specification_auth_example():
    # The spec's text shows a space in the digest; the digest of "498e4a67JBMIAProjectorLink" is this.
    assert auth_digest("498e4a67", "JBMIAProjectorLink") == "5d8409bc1c3fa39749434aa3a5c38682"


def test_replies_and_every_command_error():
    assert parse_reply("%1POWR=1\r", "POWR") == ("1", None)
    assert parse_reply("%1NAME=\r", "NAME") == ("", None)
    for code in ("ERR1", "ERR2", "ERR3", "ERR4"):
        assert parse_reply(f"%1LAMP={code}", "LAMP") == (None, code)
    with pytest.raises(AuthError, match="refused the password"):
        parse_reply("PJLINK ERRA\r", "POWR")
    with pytest.raises(ParseError, match=re.escape("NAME: expected '%1NAME=...', got '%1POWR=1'")):
        parse_reply("%1POWR=1", "NAME")


def test_values():
    assert [parse_power(v) for v in "0123"] == ["standby", "on", "cooling", "warming"]
    assert parse_lamps("1200 1") == [(1200, True)]
    assert parse_lamps("3021 1 2980 0") == [(3021, True), (2980, False)]
    assert parse_lamps("99999 0") == [(99999, False)]
    assert parse_errors("021000") == {"fan": "ok", "lamp": "error", "temperature": "warning", "cover": "ok",
                                      "filter": "ok", "other": "ok"}
    assert parse_input("31") == ("digital", 1) and parse_input("11") == ("rgb", 1)
    assert parse_input("5Z") == ("network", 35) and parse_input("29") == ("video", 9)
    assert parse_class("1") == 1 and parse_class("2") == 2
    for parse, bad in ((parse_power, "7"), (parse_lamps, "1200"), (parse_lamps, "x 1"), (parse_lamps, "100000 1"),
                       (parse_lamps, "1 2"), (parse_lamps, ""), (parse_lamps, " ".join(["1 1"] * 9)),
                       (parse_errors, "0000"), (parse_errors, "003000"), (parse_input, "70"), (parse_input, "30"),
                       (parse_input, "3"), (parse_class, "0"), (parse_class, "x")):
        with pytest.raises(ParseError):
            parse(bad)  # type: ignore[operator]


def test_readings_fill_the_record_and_name_the_garbled_answers():
    fields, problems = readings({"POWR": "1", "LAMP": "3021 1 2980 0", "ERST": "000000", "INPT": "31",
                                 "NAME": "Salle 3", "INF1": "EPSON", "INF2": "EB-X41", "CLSS": "1"})
    assert problems == []
    assert fields == {"power": "on", "lamps_hours": [3021, 2980], "lamps_on": [True, False], "lamp_hours": 3021,
                      "lamp_on": True, "fan": "ok", "lamp": "ok", "temperature": "ok", "cover": "ok", "filter": "ok",
                      "other": "ok", "input_kind": "digital", "input_number": 1, "name": "Salle 3",
                      "manufacturer": "EPSON", "model": "EB-X41", "pjlink_class": 1}
    assert "name" not in readings({"NAME": "Mme Martin"}, send_name=False)[0]
    fields, problems = readings({"POWR": "9", "NAME": "x" * 100})
    assert fields == {"name": "x" * 64} and problems == ["POWR: expected 0-3, got '9'"]


# ---------------------------------------------------------------- the client, replaying captured sessions

def transcript(name: str) -> list[tuple[str, bytes]]:
    steps = []
    for raw in (FIX / name).read_bytes().split(b"\n"):
        if raw[:2] in (b"> ", b"< "):
            steps.append((raw[:1].decode(), raw[2:]))
    return steps


class Replay:
    """A projector that plays a captured session and checks every byte the agent sends."""

    def __init__(self, name: str) -> None:
        self.steps = transcript(name)
        self.mismatches: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> Replay:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        await asyncio.gather(*self.tasks)  # 3.11's wait_closed does not wait for the handlers

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            for direction, data in self.steps:
                if direction == ">":
                    writer.write(data + b"\r")
                    await writer.drain()
                else:
                    got = (await reader.readuntil(b"\r"))[:-1]
                    if got != data:
                        self.mismatches.append((got, data))
                        return
            await reader.read()  # until the agent closes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def replay(name: str, password: str = "") -> tuple:
    async with Replay(name) as projector:
        session = await query("127.0.0.1", projector.port, password=password, timeout_s=5)
    assert projector.mismatches == [] and projector.connections == 1
    return session, readings(session.answers)


async def test_the_specification_session_with_authentication():
    session, (fields, problems) = await replay("spec-auth-on.txt", password="JBMIAProjectorLink")
    assert session.problems == [] and problems == []
    assert fields["power"] == "on" and fields["lamps_hours"] == [1200] and fields["lamp_on"] is True
    assert fields["name"] == "Salle 3 - EB-X41" and fields["pjlink_class"] == 1


async def test_standby_unavailable_input_is_not_a_problem():
    session, (fields, problems) = await replay("standby-no-auth.txt")
    assert session.problems == [] and problems == []
    assert fields["power"] == "standby" and fields["lamp_on"] is False and "input_kind" not in fields
    assert (fields["manufacturer"], fields["model"]) == ("SONY", "VPL-EX455")


async def test_two_lamps_and_component_faults():
    _, (fields, problems) = await replay("cooling-two-lamps-faults.txt")
    assert problems == [] and fields["power"] == "cooling"
    assert (fields["lamps_hours"], fields["lamps_on"], fields["lamp_hours"]) == ([3021, 2980], [True, False], 3021)
    assert (fields["lamp"], fields["temperature"], fields["cover"]) == ("error", "warning", "ok")
    assert fields["pjlink_class"] == 2 and fields["name"] is None  # an empty NAME is no name


async def test_a_laser_projector_has_no_lamp():
    session, (fields, _) = await replay("laser-warming.txt")
    assert session.problems == [] and fields["power"] == "warming" and "lamp_hours" not in fields


async def test_every_command_error_is_named():
    session, (fields, _) = await replay("command-errors.txt")
    assert session.problems == [
        "POWR: ERR4 (projector failure)", "LAMP: ERR4 (projector failure)", "ERST: ERR2 (out of parameter)",
        "INPT: ERR2 (out of parameter)", "NAME: ERR1 (undefined command)", "INF2: ERR1 (undefined command)",
        "CLSS: ERR1 (undefined command)"]
    assert fields == {}


async def test_a_refused_password():
    with pytest.raises(AuthError, match="refused the password"):
        await replay("wrong-password.txt", password="JBMIAProjectorLink")


async def test_garbage_answers_leave_their_fields_empty():
    session, (fields, problems) = await replay("garbage.txt")
    assert session.problems == ["NAME: expected '%1NAME=...', got '%1POWR=1'", "INF1: expected '%1INF1=...', got '@#!? 42'"]
    assert [p.split(":")[0] for p in problems] == ["POWR", "LAMP", "ERST", "INPT", "CLSS"]
    assert fields == {"model": "X"}


async def test_not_a_projector():
    async with Replay("bad-greeting.txt") as other:
        with pytest.raises(ParseError, match=r"greeting: expected 'PJLINK 0'.*SSH-2\.0"):
            await query("127.0.0.1", other.port, timeout_s=5)


async def test_text_is_decoded_with_replacement():
    _, (fields, _) = await replay("latin1-name.txt")
    assert fields["name"] == "Salle d\ufffdcouverte" and fields["input_kind"] == "video"


# ---------------------------------------------------------------- the probe against the simulator

@contextlib.asynccontextmanager
async def projectors(*states: State):
    sims = [await PjlinkSimulator(s).start() for s in states]
    try:
        yield sims
    finally:
        for sim in sims:
            await sim.stop()


def probe_for(sims, clock: Clock, **options) -> PjlinkProbe:
    wall = iter(NOW + timedelta(seconds=60 * i) for i in range(1000))
    options.setdefault("projectors", [f"127.0.0.1:{s.port}" for s in sims])
    options.setdefault("timeout_s", 3)
    return PjlinkProbe(school=SCHOOL, id_salt=SALT, clock=clock, now=lambda: next(wall), **options)


async def test_a_reading_with_authentication_one_connection_per_poll():
    password = "JBMIAProjectorLink-7"
    async with projectors(State(password=password, lamps=[[1500.0, 1]])) as [sim]:
        clock = Clock()
        probe = probe_for([sim], clock, password=password)
        [reading] = roundtrip(await probe.collect())
        assert isinstance(reading, Projector)
        assert reading.up and reading.power == "on" and reading.lamp_hours == 1500 and reading.lamps_on == [True]
        assert (reading.fan, reading.filter, reading.input_kind, reading.input_number) == ("ok", "ok", "digital", 1)
        assert (reading.manufacturer, reading.model, reading.pjlink_class) == ("EPSON", "EB-X41", 1)
        assert reading.projector_id == peripheral_id(SALT, "projector", f"{SCHOOL}|127.0.0.1:{sim.port}")
        assert reading.duration_s is None and sim.connections == 1 and sim.auth_failures == 0
        # Eight queries on the one connection; the first carries the 32-hex-digit digest, not the password.
        assert len(sim.received) == 8 and sim.received[0][32:] == "%1POWR ?"
        assert all(c in "0123456789abcdef" for c in sim.received[0][:32])
        assert password.encode() not in msgspec.json.encode(reading) and not any(password in r for r in sim.received)
        # Never faster than once a minute: a run 30 s later leaves the projector alone.
        clock.t += 30
        assert await probe.collect() == [] and sim.connections == 1
        clock.t += MIN_CONTACT_S - 30
        [second] = roundtrip(await probe.collect())
        assert sim.connections == 2 and second.duration_s == MIN_CONTACT_S and second.at == reading.at


async def test_a_wrong_password_is_data_and_a_problem_never_the_password(caplog):
    caplog.set_level(logging.DEBUG)
    async with projectors(State(password="right-one"), State()) as [locked, open_]:
        probe = probe_for([locked, open_], Clock(), password="wrong-one")
        with pytest.raises(DeviceErrors) as info:
            await probe.collect()
        bad, good = info.value.records
        roundtrip([bad, good])
        assert bad.up and bad.power == "unknown" and bad.lamp_hours is None and bad.projector_id
        assert good.up and good.power == "on"  # the other projector is unaffected
        assert str(info.value) == f"127.0.0.1:{locked.port}: the projector refused the password (PJLINK ERRA)"
        assert locked.auth_failures == 1
        assert "wrong-one" not in caplog.text + str(info.value)


async def test_a_projector_wanting_a_password_we_lack():
    async with projectors(State(password="x")) as [sim]:
        with pytest.raises(DeviceErrors, match=re.escape("wants a PJLink password: set password in [probes.pjlink]")) as info:
            await probe_for([sim], Clock()).collect()
        assert info.value.records[0].up and sim.received == []  # nothing sent without the password


async def test_standby_answering_refusing_and_unplugged():
    async with projectors(State(power=0, lamps=[[800.0, 0]]), State(power=0, refuse_in_standby=True)) as [
            answering, refusing]:
        probe = probe_for([answering, refusing], Clock())
        on_standby, refused = roundtrip(await probe.collect())  # no problem: standby is data
        assert on_standby.up and on_standby.power == "standby" and on_standby.lamp_on is False
        assert on_standby.input_kind is None  # ERR3 in standby
        assert refused.up and refused.power == "standby" and refused.lamp_hours is None
        assert refusing.connections == 0



@pytest.mark.parametrize("failure", [OSError(errno.EHOSTUNREACH, "No route to host"), "silence"])
async def test_off_the_network_is_down(failure):
    """Switched off at the mains: no host answers, not even with a refusal (loopback always
    answers, so the connection attempt is what a LAN gives: no route, or no answer at all)."""
    async def open_connection(host, port, **kw):
        if failure == "silence":
            await asyncio.sleep(10)
        raise failure

    probe = PjlinkProbe(projectors=["10.0.0.50"], timeout_s=0.2, open_connection=open_connection)
    [down] = roundtrip(await probe.collect())
    assert not down.up and down.power == "unknown"


async def test_a_power_cycle_across_polls():
    # Transitions an hour long, ended by the script: a slow machine never skips a state.
    state = State(power=0, refuse_in_standby=True, warmup_s=3600, cooldown_s=3600, lamps=[[100.0, 0]],
                  lamp_hours_per_s=3.6e9)  # an hour of lamp per microsecond lit
    async with projectors(state) as [sim]:
        clock = Clock()
        probe = probe_for([sim], clock)
        seen = []

        async def poll() -> Projector:
            clock.t += MIN_CONTACT_S
            [r] = await probe.collect()
            seen.append(r.power)
            return r

        assert (await poll()).power == "standby"
        await sim.power_on()
        assert (await poll()).power == "warming"
        sim.finish_transition()
        assert state.power == 1
        on = await poll()
        assert on.power == "on" and on.lamp_on and on.lamp_hours > 100
        await sim.power_off()
        assert (await poll()).power == "cooling"
        sim.finish_transition()
        await wait_until(lambda: sim._server is None, "the network to close in standby")
        off = await poll()
        assert off.power == "standby" and off.up
        assert seen == ["standby", "warming", "on", "cooling", "standby"]


async def test_error_bits_and_per_command_errors():
    async with projectors(State(errors="200110", command_errors={"NAME": "ERR4"})) as [sim]:
        with pytest.raises(DeviceErrors, match=r"NAME: ERR4 \(projector failure\)") as info:
            await probe_for([sim], Clock()).collect()
        [r] = info.value.records
        assert (r.fan, r.lamp, r.temperature, r.cover, r.filter, r.other) == (
            "error", "ok", "ok", "warning", "warning", "ok")
        assert r.name is None and r.power == "on"


@pytest.mark.slow  # waits out the probe's timeouts
async def test_garbage_slow_and_dropped_answers():
    async with projectors(State(garbage={"LAMP"}), State(slow_s=10.0), State(drop_after_greeting=True)) as [
            noisy, slow, dropping]:
        probe = probe_for([noisy, slow, dropping], Clock(), timeout_s=2.0)
        with pytest.raises(DeviceErrors) as info:
            await probe.collect()
        a, b, c = roundtrip(info.value.records)
        assert a.up and a.power == "on" and a.lamp_hours is None
        assert b.up and b.power == "unknown"  # nothing answered in time
        assert c.up and c.power == "unknown"
        text = str(info.value)
        assert f"{noisy.port}: LAMP: expected '%1LAMP=...', got '@#!? 42'" in text
        assert f"{slow.port}: POWR: no answer within 2 s" in text
        assert f"{dropping.port}: POWR: the projector closed the connection" in text


def test_options_are_checked():
    assert [t.port for t in PjlinkProbe(projectors=["10.0.0.5", "10.0.0.6:4353",
                                                    {"host": "10.0.0.7", "password": "p"}]).targets] == [
        4352, 4353, 4352]
    for bad, message in (([{"address": "x"}], "projectors\\[0\\]: expected"), (["h:99999"], "port must be"),
                         ([{"host": "h", "colour": 1}], "unknown key 'colour'"), ([3], "projectors\\[0\\]")):
        with pytest.raises(ValueError, match=message):
            PjlinkProbe(projectors=bad)
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        PjlinkProbe(timeout_s=0)
    # Without a school or a salt (not enrolled yet) there is no identity, never an unsalted one.
    assert PjlinkProbe(projectors=["10.0.0.5"]).targets[0].projector_id is None
